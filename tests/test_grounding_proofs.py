"""No false proofs (issue 12): a number, date, amount, id or duration in an answer must be
printed on the page as the same value, or there is no box. On the sample contract, on
generated PDFs (PyMuPDF) and on a real scanned receipt of the dev set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DEV_DATA, ROOT, SAMPLES, write_invoice_pdf
from docvqa_cli import grounding
from docvqa_cli.reading import documents


@pytest.fixture(scope="module")
def contract():
    return documents.load(str(SAMPLES / "contract.pdf"))


def _texts(found):
    return [" ".join(w.text for w in m.words) for m in found]


def test_contract_durations_and_page_numbers(contract):
    assert grounding.find_all("60 days", contract) == []  # the contract says thirty (30) days
    assert grounding.find_all("thirty (60) days", contract) == []
    assert grounding.find_all("Page 9 of 5", contract) == []  # it prints "Page 1 of 5"
    assert grounding.find_all("Page 1 of 6", contract) == []
    # the true ones are still found, however they are written
    assert "thirty (30) days" in _texts(grounding.find_all("thirty (30) days", contract))
    assert grounding.find_all("30 days", contract)
    assert grounding.find_all("Page 1 of 5", contract)[0].page == 1
    assert grounding.find_all("2024-06-03", contract)  # printed "3 June 2024"


NDA = [
    ((72, 72), "MUTUAL NON-DISCLOSURE AGREEMENT", 14),
    ((72, 110), "The obligations of confidentiality shall survive for a period of", 10),
    ((72, 124), "five (5) years from the date of disclosure.", 10),
    ((72, 160), "Term in years", 10),
    ((72, 174), "years", 10),
    ((72, 210), "Invoice No: INV-20417   Room 12B   TEL 03-1234 5678", 10),
    ((72, 240), "Refund: -11.80   Fee: EUR 1,250.00   Rate 7.5%", 10),
]


@pytest.fixture(scope="module")
def nda(tmp_path_factory):
    return documents.load(str(write_invoice_pdf(tmp_path_factory.mktemp("nda") / "nda.pdf", NDA)))


@pytest.mark.parametrize("answer", ["2 years", "3 years", "two (2) years", "5 months", "6 years"])
def test_another_term_is_not_found_on_the_lone_word_years(nda, answer):
    assert grounding.find_all(answer, nda) == []


@pytest.mark.parametrize("answer", ["5 years", "five (5) years", "five years"])
def test_the_printed_term_is_found(nda, answer):
    found = grounding.find_all(answer, nda)
    assert found and "(5) years" in " ".join(_texts(found)), answer


@pytest.mark.parametrize("answer", [
    "INV-20418", "Invoice No: INV-20418", "INV-2041", "Room 13B", "TEL 03-1234 5679", "TEL 03-1235 5678",
    "11.80", "-11.81", "EUR 1,250.01", "USD 1,250.00", "1,250.00 GBP", "7.6%", "75%",
])
def test_digit_slips_sign_and_currency_get_no_box(nda, answer):
    assert grounding.find_all(answer, nda) == [], answer


@pytest.mark.parametrize("answer", [
    "INV-20417", "Invoice No: INV-20417", "Room 12B", "TEL 03-1234 5678", "-11.80", "(11.80)",
    "EUR 1,250.00", "1.250,00 €", "1250", "7.5%", "7,5 %",
])
def test_the_printed_values_are_found(nda, answer):
    assert grounding.find_all(answer, nda), answer


def test_words_around_a_value_may_be_fuzzy_the_value_not(tmp_path):
    lines = [((72, 72), "Totai amount due RM 9.00", 10)]  # an OCR slip in a word
    page = documents.load(str(write_invoice_pdf(tmp_path / "f.pdf", lines)))[0]
    page.source = "ocr:rapidocr"  # the slip tolerance is for OCR'd pages
    assert grounding.find_all("Total amount due RM 9.00", [page])
    assert grounding.find_all("Total amount due RM 8.00", [page]) == []
    assert grounding.find_all("Total amount due RM 9.01", [page]) == []


@pytest.mark.slow
@pytest.mark.skipif(not (DEV_DATA / "sroie" / "img" / "000.jpg").exists(), reason="dev data not here")
def test_real_receipt_true_values_found_wrong_ones_not():
    pages = documents.load(str(DEV_DATA / "sroie" / "img" / "000.jpg"))  # RapidOCR
    key = json.loads((DEV_DATA / "sroie" / "key" / "000.json").read_text())
    assert grounding.find_all(key["total"], pages) and grounding.find_all(key["date"], pages)
    for wrong in ("9.01", "19.00", "90.00", "26/12/2018", "25/12/2019", "2018-12-26", "RM 9.10"):
        assert grounding.find_all(wrong, pages) == [], wrong


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_ground_empty_text_is_a_usage_error(text):
    proc = _docq("ground", str(SAMPLES / "contract.pdf"), text)
    assert proc.returncode == 2 and "TEXT" in proc.stderr and not proc.stdout


def test_ground_text_longer_than_an_answer_is_a_usage_error():
    proc = _docq("ground", str(SAMPLES / "contract.pdf"), "thirty (30) days " * 600)
    assert proc.returncode == 2 and "10200 characters" in proc.stderr and not proc.stdout


@pytest.mark.parametrize("text", ["x" * 10_000, "١٢٣٫٤٥", "𝟙𝟚𝟛 days", "\u200b", "\u0301\u0301", "（３０）　days",
                                  "thirty (30) days" * 200, "€€€", "-(-)-", "Page ½ of 5"])
def test_ground_any_text_gives_a_result_never_a_crash(text):
    proc = _docq("ground", str(SAMPLES / "contract.pdf"), text)
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode != 2:
        assert json.loads(proc.stdout)["text"] == text


def test_ground_finds_fullwidth_text_as_printed(contract):
    assert grounding.find_all("（３０）　days", contract)  # NFKC: "(30) days"


def _docq(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "docvqa_cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_record_of_an_unproved_answer_has_no_boxes(contract):
    from docvqa_cli import records

    assert records.boxes_of(grounding.locate("60 days", contract)) == []
    boxes = records.boxes_of(grounding.locate("thirty (30) days", contract))
    assert boxes and set(boxes[0]) == {"page", "x0", "y0", "x1", "y1"}


def test_text_flows_to_the_next_line_only_never_past_it(tmp_path):
    lines = [((72, 100), "Acme shall pay within seven (7)", 10), ((72, 112), "days of the invoice; the term is", 10),
             ((72, 124), "years, renewable.", 10)]
    pages = documents.load(str(write_invoice_pdf(tmp_path / "flow.pdf", lines)))
    assert grounding.find_all("seven (7) days", pages)  # on to the next line
    assert grounding.find_all("7 years", pages) == []  # not past it to the one below
