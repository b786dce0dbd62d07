"""Every user-facing default, written once, and the small frozen option objects the commands
build once from their flags and hand down (reading, model, answering, output).

This module imports nothing heavy (no PyMuPDF, torch or transformers): the CLI reads it to
declare its options, and ``docq --help`` must stay fast. The step modules take their
defaults from here (``documents.DEFAULT_DPI`` is ``options.DEFAULT_DPI``); a default never
appears as a literal anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- reading a document (documents, ocr) ------------------------------------------------------
DEFAULT_DPI = 150  # PDF render resolution
DEFAULT_OCR = "rapidocr"  # OCR engine for pages without a text layer
DEFAULT_OCR_LANG = "eng"  # tesseract's language code(s), e.g. eng+deu
# --doc-timeout: seconds a document's reading may go without finishing a page (reading/reader.py);
# generous: OCR of a dense A4 page takes about 3 s on one core.
DEFAULT_DOC_TIMEOUT = 300.0

# --- the model (vlm.load, models) -------------------------------------------------------------
# Best document model that fits an 8-12 GB GPU at 4-bit under a business-friendly licence
# (README, "Choosing the model"); its family is the Qwen module's.
DEFAULT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
# Small enough for a laptop CPU, unquantised (Apache-2.0, 256M parameters, Idefics3).
DEFAULT_CPU_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEVICES = ("auto", "cuda", "cpu")  # plus cuda:N for the N-th GPU
QUANTS = ("auto", "4bit", "int4", "8bit", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")  # --dtype: auto picks per device (vlm.load.resolve_dtype)
DECODES = ("auto", "plain", "static")

# --- answering (relevance, pipeline, batch, tune, explain) ------------------------------------
DEFAULT_KEEP = 0.5  # fraction of each document's tiles the model sees
DEFAULT_PROMPT = "default"  # a prompt name from prompts/ or a template file
# Images (page overviews plus kept tiles) in one question's prompt: its memory budget (relevance/prompt_cap.py).
# 48 leaves documents of up to ~5 A4 pages untouched at keep 0.5 (the sample contract shows 35) and
# bounds a long one at ~10k image tokens for Qwen3-VL (210 a tile), ~3k for SmolVLM.
DEFAULT_MAX_IMAGES = 48
MIN_MAX_IMAGES = 2  # the least --max-images: one page shown costs its overview plus one tile
TYPES = ("amount", "date", "number", "percent", "id", "duration", "time", "text")  # a question's type (typed)
DATE_ORDERS = ("dmy", "mdy", "ymd")  # --date-order: how 02/03/2024 reads when the document does not say

# --- output: the formats and their names are docvqa_cli.formats' -----------------------------


@dataclass(frozen=True)
class ReadOptions:
    """How a document becomes pages: which pages, its password, render resolution, OCR."""

    pages: str | None = None  # 1-based spec such as "1-3,7"; None = all
    password: str | None = None
    dpi: int = DEFAULT_DPI
    ocr: str = DEFAULT_OCR
    ocr_lang: str = DEFAULT_OCR_LANG
    doc_timeout: float = DEFAULT_DOC_TIMEOUT  # 0: read in this process, no limit


@dataclass(frozen=True)
class ModelOptions:
    """Which model, where and how it is loaded."""

    model: str | None = None  # hub id or folder; None = the default for the device
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    quant: str = "auto"
    trust_remote_code: bool = False
    tie: str | None = None  # folder of TIE adapters from docq tune
    decode: str = "auto"
    dtype: str = "auto"  # auto: bf16 where the GPU / CPU computes it natively, else fp16 / float32


@dataclass(frozen=True)
class AnswerOptions:
    """How each question is answered."""

    keep: float = DEFAULT_KEEP
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int | None = None  # None: the prompt's own, else prompts.DEFAULT_MAX_NEW_TOKENS
    visual: bool | None = None  # None: on with --tie, off otherwise
    batch_size: int | None = None  # None: what the device affords
    date_order: str | None = None  # None: an ambiguous date the document does not settle stays null
    max_images: int = DEFAULT_MAX_IMAGES  # images (overviews + tiles) in one question's prompt: its memory budget


@dataclass(frozen=True)
class TuneOptions:
    """How ``docq tune`` trains TIE adapters."""

    steps: int | None = None  # total optimizer steps (default: epochs over the training split)
    epochs: int = 1
    lr: float = 2e-4
    every: int = 1  # adapter after every ``every``-th encoder layer
    relevance_weight: float = 0.5
    heldout: float = 0.1
    checkpoint_every: int = 50
    resume: bool = True
    seed: int = 0
    keep: float = DEFAULT_KEEP
    dpi: int = DEFAULT_DPI
    ocr: str | None = DEFAULT_OCR
    gradient_checkpointing: bool = True
    prompt: str | None = None  # template text; None = the default prompt


@dataclass(frozen=True)
class ShowOptions:
    """What a command shows on stderr while it works (never on stdout)."""

    progress: bool = False  # also when stderr is not a terminal
    quiet: bool = False  # nothing but errors


@dataclass(frozen=True)
class OutputOptions:
    """Where and how records are written."""

    format: str | None = None  # None: csv for an -o ending in .csv, else jsonl
    output: str | None = None  # None: stdout
    csv_raw: bool = False  # no spreadsheet formula guard
    bom: bool = False  # CSV starts with a UTF-8 byte-order mark (Excel on Windows)
