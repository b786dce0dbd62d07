"""How long does grounding take per answer on multi-page contracts? (issue 12)

Runs with no arguments: on ``sample_docs/contract.pdf`` and on generated multi-page text
PDFs of at least 4,000 words (clauses with parties, dates, amounts, durations and
percentages, made with PyMuPDF), it grounds true answers (phrases, values and long clauses
taken from the documents, some written another way) and wrong ones (the same with a digit,
a word or a unit changed), with ``grounding.find_all`` as ``docq ground`` does.

A page's lines and values are read once per document (as ``ask`` and ``batch`` do for the
questions of one document); that first reading is timed separately ("index"). The last line
is ``grounding p95_ms=<n> median_ms=<n>`` over all answers with the document read (wall
clock, best of ``--repeat``); the line before gives the process's CPU time too, which is what
an answer costs on a machine that other jobs are not sharing.

    python benchmarks/grounding_speed.py [--docs 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402

from docvqa_cli import grounding, values  # noqa: E402
from docvqa_cli.reading import documents  # noqa: E402

NAMES = ["Bluefield Analytics GmbH", "Marlow & Finch Retail plc", "Northwind Traders Ltd", "Kestrel Logistics BV",
         "Acme Supplies Ltd", "Harbour View Holdings Inc"]
CITIES = ["Berlin", "London", "Rotterdam", "Leeds", "Dublin", "Madrid"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
NUMBERS = {3: "three", 5: "five", 7: "seven", 10: "ten", 14: "fourteen", 30: "thirty", 45: "forty-five",
           60: "sixty", 90: "ninety"}
FILLER = ("The Parties shall perform their obligations under this Agreement in good faith and with the care "
          "of a diligent business person, and each shall keep the other informed of any matter that may "
          "affect the Services, the Fees or the timetable agreed in the Statement of Work.").split()


def clause(rng: random.Random, n: int) -> tuple[str, list[str]]:
    """One numbered clause and the answers it prints."""
    a, b = rng.sample(NAMES, 2)
    days = rng.choice(list(NUMBERS))
    years = rng.choice([1, 2, 3, 5])
    d, m, y = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(2015, 2030)
    amount = f"{rng.randint(1, 999)},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}"
    pct = f"{rng.randint(1, 20)}.{rng.randint(0, 9)}%"
    ref = f"SOW-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFG')}"
    filler = " ".join(rng.sample(FILLER, 20))
    text = (f"{n}. {a} shall pay {b} the sum of EUR {amount} within {NUMBERS[days]} ({days}) days of the "
            f"invoice date. This clause applies from the {d}th day of {m}, {y} for a term of {years} years, "
            f"with interest at {pct} per year on late payments under reference {ref}. {filler}.")
    answers = [a, f"EUR {amount}", f"{NUMBERS[days]} ({days}) days", f"{years} years", pct, ref,
               f"{d} {m} {y}", f"{y}-{MONTHS.index(m) + 1:02d}-{d:02d}", f"{days} days",
               f"{a} shall pay {b} the sum of EUR {amount}"]
    return text, answers


def wrong(rng: random.Random, answer: str, printed: set) -> str:
    """The answer with one digit or one word changed, into something the document does not
    print (``printed``: the values of every answer it does)."""
    for _ in range(50):
        digits = [i for i, ch in enumerate(answer) if ch.isdigit()]
        if digits:
            i = rng.choice(digits)
            text = answer[:i] + str((int(answer[i]) + rng.randint(1, 8)) % 10) + answer[i + 1:]
        else:
            words = answer.split()
            words[rng.randrange(len(words))] = rng.choice(["Southgate", "Partners", "Limited", "Services"])
            text = " ".join(words)
        v = values.parse(text)
        if text not in printed and not (v and v.keys() & printed):
            return text
    return answer + " Southgate"


def printed_values(answers: list[str]) -> set:
    keys = set(answers)
    for a in answers:
        v = values.parse(a)
        if v:
            keys |= v.keys()
    return keys


def make_pdf(path: Path, rng: random.Random, min_words: int) -> list[str]:
    doc = pymupdf.open()
    answers: list[str] = []
    words, n = 0, 1
    page = None
    y = 800.0
    while words < min_words:
        text, found = clause(rng, n)
        answers += found
        n += 1
        words += len(text.split())
        if page is None or y > 700:
            page = doc.new_page(width=595, height=842)
            y = 72.0
        rect = pymupdf.Rect(72, y, 523, 800)
        left = page.insert_textbox(rect, text, fontsize=10, fontname="helv")
        used = rect.height - left if left >= 0 else rect.height
        y += used + 8
    doc.save(path)
    doc.close()
    return answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3, help="generated contracts (default 3)")
    ap.add_argument("--words", type=int, default=4000, help="words per generated contract (default 4000)")
    ap.add_argument("--answers", type=int, default=60, help="true answers per document (and as many wrong)")
    ap.add_argument("--repeat", type=int, default=3, help="times each answer is grounded (best kept)")
    args = ap.parse_args()
    rng = random.Random(12)
    tmp = Path(tempfile.mkdtemp(prefix="docq-ground-speed-"))
    docs = [(ROOT / "sample_docs" / "contract.pdf",
             ["thirty (30) days", "3 June 2024", "2024-06-03", "Bluefield Analytics GmbH", "Page 1 of 5",
              "Marlow & Finch Retail plc", "EC3M 1BN"])]
    for i in range(args.docs):
        path = tmp / f"contract{i}.pdf"
        docs.append((path, make_pdf(path, rng, args.words)))

    slowest: list = []
    cpu: list[float] = []
    times, index_ms, found_true, found_wrong, n_true, n_wrong = [], [], 0, 0, 0, 0
    for path, answers in docs:
        pages = documents.load(str(path))
        nwords = sum(len(p.words) for p in pages)
        t = time.perf_counter()
        grounding.find_all("1.00", pages)  # reads the pages' lines and values once
        index_ms.append(1000 * (time.perf_counter() - t))
        chosen = rng.sample(answers, min(args.answers, len(answers)))
        printed = printed_values(answers)
        for answer in chosen:
            for text, is_true in ((answer, True), (wrong(rng, answer, printed), False)):
                best = cpu_best = float("inf")
                for _ in range(args.repeat):
                    t, c = time.perf_counter(), time.process_time()
                    found = grounding.find_all(text, pages)
                    best = min(best, time.perf_counter() - t)
                    cpu_best = min(cpu_best, time.process_time() - c)
                times.append(1000 * best)
                cpu.append(1000 * cpu_best)
                slowest.append((1000 * best, text))
                if is_true:
                    n_true += 1
                    found_true += bool(found)
                else:
                    n_wrong += 1
                    found_wrong += bool(found)
                    if found:
                        print(f"  false proof? {text!r} (from {answer!r}) -> "
                              f"{' '.join(w.text for w in found[0].words)!r}", file=sys.stderr)
        print(f"{path.name}: {len(pages)} pages, {nwords} words, first answer (reads the pages) "
              f"{index_ms[-1]:.1f} ms", file=sys.stderr)
    times.sort()
    for ms, text in sorted(slowest, reverse=True)[:5]:
        print(f"  slow: {ms:.2f} ms {text!r}", file=sys.stderr)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"answers: {n_true} true ({found_true} found), {n_wrong} wrong and not printed ({found_wrong} found: "
          f"false proofs); max {times[-1]:.2f} ms")
    print(f"first answer on a document (page lines read): median {statistics.median(index_ms):.1f} ms, "
          f"max {max(index_ms):.1f} ms")
    cpu.sort()
    print(f"CPU time of this process per answer (what the answer costs without other jobs): "
          f"p95 {cpu[min(len(cpu) - 1, int(0.95 * len(cpu)))]:.2f} ms, median {statistics.median(cpu):.2f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"grounding p95_ms={p95:.2f} median_ms={statistics.median(times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
