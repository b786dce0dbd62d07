"""What every command shares: the error handler, the console, and the option declarations.

Each group of flags is declared once here and turns into one frozen object from
``docvqa_cli.options`` (``ReadOptions``, ``ModelOptions``, ``AnswerOptions``,
``OutputOptions``) before the command runs, so a command takes ``read``, ``model``,
``answer`` or ``out`` instead of a dozen loose arguments. A command may take a subset of a
group's flags (``model_options("model", "device")``) and reword a flag's help; the flag's
name, type and default stay those declared here (defaults come from ``options``).

Nothing here imports PyMuPDF, torch or transformers: ``docq --help``, ``docq --version`` and
shell completion only build the commands (the heavy modules load inside the command bodies).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback

import click

from docvqa_cli import formats
from docvqa_cli import options as opt
from docvqa_cli.errors import DocqError, ExitCode, on_ctrl_c


def console(stderr: bool = True):
    """A rich console: colour only on a terminal and never with NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not stream.isatty()
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=True)


def handle_errors(fn):
    """Turn DocqError into one line on stderr and its exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = bool((ctx.find_root().params or {}).get("debug"))
        previous = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous = signal.signal(signal.SIGINT, on_ctrl_c)  # Ctrl-C exits 130, never dies by SIGINT
        try:
            try:
                code = fn(*args, **kwargs)
            except DocqError as exc:
                if debug:
                    traceback.print_exc()
                click.echo(f"docq: error: {exc}", err=True)
                ctx.exit(int(exc.exit_code))
            except KeyboardInterrupt:
                click.echo("docq: interrupted", err=True)
                ctx.exit(int(ExitCode.ctrl_c))
            except click.exceptions.Exit:
                raise
            except click.ClickException:
                raise
            except Exception as exc:  # an unexpected failure: one line, the rest with --debug
                if debug:
                    traceback.print_exc()
                click.echo(
                    f"docq: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                    err=True,
                )
                ctx.exit(int(ExitCode.partial))
            ctx.exit(int(code or ExitCode.ok))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    return wrapper


# --- parameter types ---------------------------------------------------------------------------

class Device(click.ParamType):
    """auto, cpu, cuda, or cuda:N (the N-th GPU, as torch numbers them)."""

    name = "device"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(opt.DEVICES) + "|cuda:N]"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text in opt.DEVICES:
            return text
        if text.startswith("cuda:") and text[5:].isdigit():
            return f"cuda:{int(text[5:])}"
        self.fail(f"{value!r} is not one of {', '.join(opt.DEVICES)} or cuda:N (N a GPU number, e.g. cuda:1)",
                  param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(d) for d in opt.DEVICES if d.startswith(incomplete)]


class OcrEngine(click.ParamType):
    """An OCR engine's name. ``ocr.check`` refuses an unknown one before any work (the engines
    are the ``ocr`` module's to list, and importing it here would slow every start); only
    completing the value loads the list."""

    name = "engine"

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from docvqa_cli.reading import ocr

        return [CompletionItem(e) for e in ocr.ENGINES if e.startswith(incomplete)]


# --- the option groups -------------------------------------------------------------------------
# field -> (flags, click.option keywords). The field is the option object's attribute and the
# click parameter's name; defaults come from the option object.

_READ = {
    "pages": (("--pages",), dict(default=opt.ReadOptions.pages, help="Pages to read, 1-based, e.g. 1-3,7 (default: all).")),
    "password": (("--password",), dict(default=opt.ReadOptions.password, help="Password of an encrypted PDF.")),
    "dpi": (("--dpi",), dict(type=click.IntRange(36, 1200), default=opt.ReadOptions.dpi, show_default=True,
                             help="Render resolution for PDF pages.")),
    "ocr": (("--ocr",), dict(type=OcrEngine(), default=opt.ReadOptions.ocr, show_default=True, metavar="ENGINE",
                             help="OCR engine for pages without a text layer: rapidocr, or tesseract for its "
                                  "languages (docq doctor shows what is installed).")),
    "ocr_lang": (("--ocr-lang",), dict(default=opt.ReadOptions.ocr_lang, show_default=True,
                                       help="OCR language(s), tesseract codes, e.g. eng+deu (--ocr tesseract).")),
    "doc_timeout": (("--doc-timeout",), dict(type=click.FloatRange(0), default=opt.ReadOptions.doc_timeout,
                                             show_default=True, metavar="SECONDS",
                                             help="Give a document up (an error record) when reading it finishes "
                                                  "no page for this long; 0: no limit.")),
}

_MODEL = {
    "model": (("-m", "--model"), dict(default=opt.ModelOptions.model, metavar="ID|DIR",
                                      help=f"Hub id or local folder (default: {opt.DEFAULT_MODEL} on CUDA, "
                                           f"{opt.DEFAULT_CPU_MODEL} on the CPU).")),
    "device": (("--device",), dict(type=Device(), default=opt.ModelOptions.device, show_default=True,
                                   help="Where the model runs; cuda:N picks the N-th GPU.")),
    "quant": (("--quant",), dict(type=click.Choice(opt.QUANTS), default=opt.ModelOptions.quant, show_default=True,
                                 help="auto: 4bit NF4 (bitsandbytes) on CUDA, none on the CPU. int4: torchao int4 "
                                      "weight-only, whose decode can be compiled (pip install torchao).")),
    "trust_remote_code": (("--trust-remote-code",), dict(is_flag=True, default=opt.ModelOptions.trust_remote_code,
                          help="Allow the model's own code from the hub to run (off: documents and models are "
                               "untrusted).")),
    "tie": (("--tie",), dict(type=click.Path(file_okay=False), default=opt.ModelOptions.tie,
                             help="A folder of trained TIE adapters (docq tune) to condition the vision encoder.")),
    "decode": (("--decode",), dict(type=click.Choice(opt.DECODES), default=opt.ModelOptions.decode, show_default=True,
                                   help="static: transformers' static KV cache, compiled on CUDA; plain: the dynamic "
                                        "cache. auto: static on CUDA (plain for an ask of a few questions), plain on "
                                        "the CPU.")),
    "dtype": (("--dtype",), dict(type=click.Choice(opt.DTYPES), default=opt.ModelOptions.dtype, show_default=True,
                                 help="The model's float type. auto: bfloat16 on a GPU that has it, else float16; "
                                      "on the CPU bfloat16 where the processor computes it natively (AMX, "
                                      "AVX512-BF16), else float32.")),
}

_ANSWER = {
    "keep": (("--keep",), dict(type=click.FloatRange(0, 1, min_open=True), default=opt.AnswerOptions.keep,
                               show_default=True, help="Fraction of each document's tiles the model sees, in (0, 1].")),
    "prompt": (("--prompt",), dict(default=opt.AnswerOptions.prompt, show_default=True,
                                   help="A prompt name from prompts/ (default, grounded) or a template file with "
                                        "{question}.")),
    "max_new_tokens": (("--max-new-tokens",), dict(type=click.IntRange(1, 4096), default=opt.AnswerOptions.max_new_tokens,
                       help="Most tokens an answer may take (default: the prompt's own '# max_new_tokens:' line, "
                            "else 32).")),
    "visual": (("--visual/--no-visual",), dict(default=opt.AnswerOptions.visual,
               help="Add the model's visual relevance score to tile selection (default: on with --tie, off "
                    "otherwise).")),
    "batch_size": (("--batch-size",), dict(type=click.IntRange(1, 256), default=opt.AnswerOptions.batch_size,
                   help="Questions answered in one padded forward (default: by free GPU memory on CUDA, up to 64; "
                        "4 on the CPU).")),
    "date_order": (("--date-order",), dict(type=click.Choice(opt.DATE_ORDERS), default=opt.AnswerOptions.date_order,
                   help="How a date such as 02/03/2024 reads when the document's other dates do not settle "
                        "day/month order (default: its value stays null, noted as ambiguous).")),
    "max_images": (("--max-images",), dict(type=int, default=opt.AnswerOptions.max_images, show_default=True,
                   metavar="N", callback=lambda ctx, param, value: _at_least_two_images(value),
                   help="Most images (page overviews plus kept tiles) in one question's prompt: bounds the "
                        "memory of one question on a long document; the best pages' tiles are kept within it.")),
}


def _at_least_two_images(value: int) -> int:
    if value < opt.MIN_MAX_IMAGES:
        raise click.BadParameter(f"{value}: must be at least {opt.MIN_MAX_IMAGES} (a page shown in the prompt "
                                 "costs its overview plus one tile)")
    return value


_OUTPUT = {
    "format": (("--format",), dict(type=click.Choice(formats.names()), default=opt.OutputOptions.format,
                                   help="Record format (default: csv for an -o ending in .csv, else jsonl).")),
    "output": (("-o", "--output"), dict(type=click.Path(dir_okay=False), default=opt.OutputOptions.output,
                                        help="Write records here, not stdout.")),
    "csv_raw": (("--csv-raw",), dict(is_flag=True, default=opt.OutputOptions.csv_raw,
                                     help="CSV: write cells as they are, without the spreadsheet formula guard.")),
    "bom": (("--bom",), dict(is_flag=True, default=opt.OutputOptions.bom,
                             help="CSV: start with a UTF-8 byte-order mark, so that Excel on Windows reads "
                                  "accents right (other tools may show it as a stray character).")),
}


_SHOW = {
    "progress": (("--progress",), dict(is_flag=True, default=opt.ShowOptions.progress,
                                       help="Show progress on stderr even when it is not a terminal.")),
    "quiet": (("-q", "--quiet"), dict(is_flag=True, default=opt.ShowOptions.quiet,
                                      help="No progress and no summary on stderr (errors still).")),
}


def _group(cls, name: str, declared: dict):
    """A decorator factory for one group: ``factory(*fields, **changes)`` adds the flags of
    ``fields`` (default: all, in declaration order) to a command and passes the command one
    ``cls`` built from them as keyword ``name``; undeclared fields keep their default.
    ``changes`` maps a field to click keywords to change, e.g. ``{"help": ...}`` or a
    narrower ``type``; never a default."""

    def factory(*fields: str, **changes: dict):
        fields = fields or tuple(declared)
        unknown = [f for f in (*fields, *changes) if f not in declared]
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
        if any("default" in c for c in changes.values()):
            raise TypeError("defaults are written once, in docvqa_cli.options")

        def decorator(fn):
            if name in getattr(fn, "__docq_groups__", ()):
                raise TypeError(f"{fn.__name__}: one {cls.__name__} group per command (list all its fields once)")

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                kwargs[name] = cls(**{f: kwargs.pop(f) for f in fields})
                return fn(*args, **kwargs)

            for field in reversed(fields):  # click lists options in the reverse order of decoration
                flags, spec = declared[field]
                wrapper = click.option(*flags, field, **{**spec, **changes.get(field, {})})(wrapper)
            wrapper.__docq_groups__ = {*getattr(fn, "__docq_groups__", ()), name}
            return wrapper

        return decorator

    return factory


read_options = _group(opt.ReadOptions, "read", _READ)
model_options = _group(opt.ModelOptions, "model", _MODEL)
answer_options = _group(opt.AnswerOptions, "answer", _ANSWER)
output_options = _group(opt.OutputOptions, "out", _OUTPUT)
show_options = _group(opt.ShowOptions, "show", _SHOW)


class Progress:
    """What a command is doing, on stderr: on a terminal one status line rewritten in place;
    with --progress and no terminal, one line each; with --quiet, or on a pipe, nothing."""

    def __init__(self, show: opt.ShowOptions, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.on = not show.quiet and (show.progress or self.tty)
        self._pending = False  # a status line waits to be rewritten

    def status(self, text: str) -> None:
        """A passing state ("reading page 3"), replaced by the next one."""
        if not self.on:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + f"docq: {text}")
            self._pending = True
        else:
            self.stream.write(f"docq: {text}\n")
        self.stream.flush()

    def done(self, text: str | None = None) -> None:
        """Clear the status line; ``text`` stays as a line of its own."""
        if not self.on:
            return
        if self._pending:
            self.stream.write("\r\x1b[2K")
            self._pending = False
        if text:
            self.stream.write(f"docq: {text}\n")
        self.stream.flush()


# --- helpers of the commands -------------------------------------------------------------------

def load_pages(doc: str, read: opt.ReadOptions, data: bytes | None = None, progress: Progress | None = None):
    """Read DOC (a path, or - for stdin bytes, or ``data`` already read) into pages, saying
    which page is being read (and OCR'd) on ``progress``."""
    import time

    from docvqa_cli.reading import documents, ocr

    ocr.check(read.ocr, read.ocr_lang)
    if doc == "-":
        data = sys.stdin.buffer.read() if data is None else data
        doc = "<stdin>"
    show = progress or Progress(opt.ShowOptions(quiet=True))
    started = time.perf_counter()
    show.status(f"{doc}: opening")
    def on_page(number: int, source: str) -> None:
        how = "OCR" if source.startswith("ocr") else "text layer" if source == "text" else "no text"
        show.status(f"{doc}: page {number} read ({how}); reading on")

    if data is None:  # a file: read in a worker process under --doc-timeout (reading/reader.py)
        from docvqa_cli.reading.reader import TimedLoader

        loader = TimedLoader(read.doc_timeout, **document_keywords(read))
        ctx = click.get_current_context(silent=True)
        if ctx is not None:  # open while the command runs: the pages' renders go to its worker, under the limit
            ctx.call_on_close(loader.close)
        try:
            pages = loader(doc, on_page=on_page)
        except BaseException:
            loader.close()
            raise
        if ctx is None:
            loader.close()  # no command to outlive: the pages render in this process
    else:
        pages = []
        for page in documents.iter_pages(doc, data=data, **document_keywords(read)):
            pages.append(page)
            on_page(page.number, page.source)
    ocred = sum(p.source.startswith("ocr") for p in pages)
    show.done(f"{doc}: read {len(pages)} page{'s' if len(pages) != 1 else ''}"
              f"{f', {ocred} by OCR' if ocred else ''} in {time.perf_counter() - started:.1f} s")
    return pages


def open_model(model: opt.ModelOptions, visual: bool | None, progress: Progress, **options):
    """``pipeline.open_backend`` (``options`` are its own) with lines on ``progress`` around the load."""
    import time

    from docvqa_cli import pipeline

    started = time.perf_counter()
    progress.done(f"loading the model{f' {model.model}' if model.model else ''} (the first load takes longest)")
    backend, scorer = pipeline.open_backend(model, visual, **options)
    progress.done(f"loaded {backend.name} on {backend.device} in {time.perf_counter() - started:.1f} s")
    return backend, scorer


def document_keywords(read: opt.ReadOptions) -> dict:
    """``documents.load``'s keywords for ``read`` (its page spec parsed)."""
    from docvqa_cli.reading import documents

    return dict(pages=documents.parse_pages(read.pages), dpi=read.dpi, password=read.password, ocr=read.ocr,
                ocr_lang=read.ocr_lang)
