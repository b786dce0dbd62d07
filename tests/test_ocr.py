"""Both OCR engines, really run, on a rendered scan whose words we know the place of, and
on the sample receipt (rotated, noisy). Each OCR call takes seconds: one per engine and file."""

from __future__ import annotations

import pytest
from PIL import Image

from conftest import SAMPLES, write_invoice_pdf, write_scan
from docvqa_cli import documents, ocr
from docvqa_cli.ocr import rapidocr, tesseract
from docvqa_cli.errors import EnvironmentProblem, UsageError

SCAN_DPI = 100

needs_tesseract = pytest.mark.skipif(tesseract.path() is None, reason="tesseract is not installed")


@pytest.fixture(scope="module")
def scan_and_truth(tmp_path_factory):
    """A scan of the conftest invoice (no text layer) and the true word boxes in its pixels."""
    folder = tmp_path_factory.mktemp("ocr")
    scan = write_scan(folder / "scan.png", dpi=SCAN_DPI)
    truth = documents.load(str(write_invoice_pdf(folder / "truth.pdf")), ocr=None)[0].words
    s = SCAN_DPI / 72
    return scan, [documents.Word(w.text, w.x0 * s, w.y0 * s, w.x1 * s, w.y1 * s, w.line) for w in truth]


@pytest.fixture(scope="module", params=["rapidocr", pytest.param("tesseract", marks=needs_tesseract)])
def ocr_page(request, scan_and_truth):
    scan, truth = scan_and_truth
    return request.param, documents.load(str(scan), ocr=request.param)[0], truth


def test_engine_reads_words_with_boxes_where_they_are(ocr_page):
    engine, page, truth = ocr_page
    assert page.source == f"ocr:{engine}"
    assert page.scale == 1.0  # an image: words are in its pixels
    found = {w.text: w for w in page.words}
    matched = [t for t in truth if t.text in found]
    assert len(matched) >= 0.9 * len(truth), sorted(set(t.text for t in truth) - set(found))
    for t in matched:
        w = found[t.text]
        # Centre within a few pixels, and the OCR box inside the true box with a small margin.
        assert abs(w.cx - t.cx) < 6 and abs(w.cy - t.cy) < 6, (t, w)
        assert w.x0 > t.x0 - 8 and w.x1 < t.x1 + 8 and w.y0 > t.y0 - 8 and w.y1 < t.y1 + 8, (t, w)
    # Word boxes, not line boxes: a many-word line gives separate, ordered, disjoint words.
    line = [found[x] for x in ("Printer", "paper,", "10", "boxes")]
    assert len({w.line for w in line}) == 1
    assert all(a.x1 <= b.x0 + 1 for a, b in zip(line, line[1:]))


def test_engine_reads_the_sample_receipt(ocr_page):
    engine, _, _ = ocr_page
    page = documents.load(str(SAMPLES / "receipt.png"), ocr=engine)[0]
    assert page.image.size == (531, 683) and (page.width, page.height) == (531, 683)
    texts = [w.text for w in page.words]
    for known in ("GREENLEAF", "GROCERY", "02/05/2024", "7.95", "22.10"):
        assert known in texts, (engine, known, texts)
    # The total sits on the TOTAL line, right of the word TOTAL (the scan is rotated 2 degrees).
    total = next(w for w in page.words if w.text == "TOTAL")
    amount = [w for w in page.words if w.text == "22.10" and abs(w.cy - total.cy) < 20]
    assert amount and amount[0].x0 > total.x1
    assert all(0 <= w.x0 < w.x1 <= 531 and 0 <= w.y0 < w.y1 <= 683 for w in page.words)


def test_split_line_divides_a_line_box_by_characters():
    quad = [(100, 10), (220, 10), (220, 30), (100, 30)]
    words = rapidocr._split_line("Total  12.50", quad, 4)
    assert [w.text for w in words] == ["Total", "12.50"]
    assert words[0].x0 == 100 and words[1].x1 == pytest.approx(220)
    assert words[0].x1 < words[1].x0 and all(w.line == 4 and (w.y0, w.y1) == (10, 30) for w in words)


def test_each_module_of_the_ocr_package_is_one_registered_engine():
    import importlib
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(ocr.__path__) if not m.name.startswith("_")}
    assert set(ocr.ENGINES) == modules and ocr.ENGINES[0] == ocr.DEFAULT_ENGINE
    for name in modules:
        assert ocr.get(name) is importlib.import_module(f"docvqa_cli.ocr.{name}").ENGINE


def test_the_ocr_option_offers_every_registered_engine():
    """--ocr completes to every registered engine (the help stays import-free, so the choice
    list lives in completion and in the unknown-engine error)."""
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    for command in ("ask", "batch", "explain"):
        env = {"_DOCQ_COMPLETE": "bash_complete", "COMP_WORDS": f"docq {command} --ocr ", "COMP_CWORD": "3"}
        shown = [line.split(",", 1)[1] for line in CliRunner().invoke(main, [], env=env, prog_name="docq").output.split()]
        assert [word for word in shown if word in ocr.ENGINES] == list(ocr.ENGINES), (command, shown)


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="--ocr"):
        ocr.read_words(Image.new("RGB", (10, 10)), engine="abbyy")
    with pytest.raises(UsageError, match="rapidocr, tesseract"):
        ocr.check("abbyy")


@needs_tesseract
def test_missing_tesseract_language_says_what_to_install():
    with pytest.raises(EnvironmentProblem, match="tesseract-ocr-qqq"):
        ocr.read_words(Image.new("RGB", (60, 30), "white"), engine="tesseract", lang="qqq")


@needs_tesseract
def test_a_missing_tesseract_language_is_an_environment_problem_before_any_work():
    import pytest

    from docvqa_cli import ocr
    from docvqa_cli.errors import EnvironmentProblem

    ocr.check("tesseract", "eng")  # installed: no error
    with pytest.raises(EnvironmentProblem) as info:
        ocr.check("tesseract", "eng+xyz")
    assert "xyz" in str(info.value) and "tesseract-ocr-xyz" in str(info.value)
