"""Both OCR engines, really run, on a rendered scan whose words we know the place of, and
on the sample receipt (rotated, noisy). Each OCR call takes seconds: one per engine and file."""

from __future__ import annotations

import pytest
from PIL import Image

from conftest import DEV_DATA, SAMPLES, write_invoice_pdf, write_scan
from docvqa_cli.errors import EnvironmentProblem, UsageError
from docvqa_cli.reading import documents, ocr
from docvqa_cli.reading.ocr import rapidocr, tesseract

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
        assert ocr.get(name) is importlib.import_module(f"docvqa_cli.reading.ocr.{name}").ENGINE


def test_the_ocr_option_offers_every_registered_engine():
    """--ocr completes to every registered engine (the help stays import-free, so the choice
    list lives in completion and in the unknown-engine error)."""
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    for command in ("ask", "batch", "explain"):
        env = {"_DOCQ_COMPLETE": "bash_complete", "COMP_WORDS": f"docq {command} --ocr ", "COMP_CWORD": "3"}
        shown = [line.split(",", 1)[1] for line in CliRunner().invoke(main, [], env=env, prog_name="docq").output.split()]
        assert [word for word in shown if word in ocr.ENGINES] == list(ocr.ENGINES), (command, shown)


def test_an_unknown_ocr_engine_is_refused_naming_the_registered_ones():
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    result = CliRunner().invoke(main, ["ground", str(SAMPLES / "receipt.png"), "TOTAL", "--ocr", "abbyy"])
    assert result.exit_code == 2 and ", ".join(ocr.ENGINES) in result.output


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="--ocr"):
        ocr.read_words(Image.new("RGB", (10, 10)), engine="abbyy")
    with pytest.raises(UsageError, match=", ".join(ocr.ENGINES)):
        ocr.check("abbyy")


@needs_tesseract
def test_missing_tesseract_language_says_what_to_install():
    with pytest.raises(EnvironmentProblem, match="tesseract-ocr-qqq"):
        ocr.read_words(Image.new("RGB", (60, 30), "white"), engine="tesseract", lang="qqq")


@needs_tesseract
def test_a_missing_tesseract_language_is_an_environment_problem_before_any_work():
    import pytest

    from docvqa_cli.errors import EnvironmentProblem
    from docvqa_cli.reading import ocr

    ocr.check("tesseract", "eng")  # installed: no error
    with pytest.raises(EnvironmentProblem) as info:
        ocr.check("tesseract", "eng+xyz")
    assert "xyz" in str(info.value) and "tesseract-ocr-xyz" in str(info.value)


# --- fullwidth punctuation and lines cut into characters (issue 12) -------------------------

def _quad(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_line_cut_into_characters_is_kept_as_its_words():
    # The shape RapidOCR returns for a Latin receipt line with fullwidth brackets: the line
    # text, and one part (text, score, quad) per character, spaces left out.
    line = "S.H.H.MOTOR（SUNGAI RENGIT）SDN.BHD."
    chars = [(ch, 0.99, _quad(10 + 8 * i, 5, 17 + 8 * i, 20)) for i, ch in enumerate(line) if ch != " "]
    assert len(chars) == 33
    words = rapidocr.line_words([_quad(10, 5, 10 + 8 * len(line), 20)], (line,), (tuple(chars),))
    assert [w.text for w in words] == ["S.H.H.MOTOR(SUNGAI", "RENGIT)SDN.BHD."]
    page = documents.Page("r.jpg", 1, 400, 40, source="ocr:rapidocr",
                          words=[documents.Word(w.text, w.x0, w.y0, w.x1, w.y1, w.line) for w in words])
    from docvqa_cli import grounding

    m = grounding.find_all("S.H.H.MOTOR(SUNGAI RENGIT)SDN.BHD.", [page])
    assert m and m[0].score == 1.0 and len(m[0].words) == 2


def test_cjk_and_word_splits_are_kept():
    # real word parts stay; a CJK line without spaces stays one word, normalised
    parts = (("TOTAL", 0.9, _quad(0, 0, 40, 10)), ("RM", 0.9, _quad(45, 0, 60, 10)), ("12.50", 0.9, _quad(65, 0, 100, 10)))
    cjk = "如有不便，敬请厚谅。"
    cjk_parts = tuple((ch, 0.9, _quad(i * 10, 20, i * 10 + 9, 30)) for i, ch in enumerate(cjk))
    words = rapidocr.line_words([_quad(0, 0, 100, 10), _quad(0, 20, 100, 30)], ("TOTAL RM 12.50", cjk), (parts, cjk_parts))
    assert [w.text for w in words] == ["TOTAL", "RM", "12.50", "如有不便,敬请厚谅。"]


@pytest.mark.slow
@pytest.mark.skipif(not (DEV_DATA / "sroie" / "img" / "475.jpg").exists(), reason="dev data not here")
def test_real_receipt_words_hold_no_fullwidth_punctuation():
    page = documents.load(str(DEV_DATA / "sroie" / "img" / "475.jpg"))[0]  # prints "Date：04/04/2017"
    assert page.words and not any("\uff01" <= ch <= "\uff5e" for w in page.words for ch in w.text)
    from docvqa_cli import grounding

    assert grounding.find_all("04/04/2017", [page])
