"""No network request that docq does not need (documents are confidential).

docq reads documents and answers on this machine; the only network access it may make is a
model download the user asked for (``--model`` naming a hub id). Two libraries it loads would
otherwise reach out on their own:

- onnxruntime (under RapidOCR, and under PyMuPDF 2.0's layout module) starts Microsoft's 1DS
  telemetry on Linux and macOS when its first session is created: a DNS look-up and an upload
  to ``mobile.events.data.microsoft.com``. ``disable_telemetry_events()`` comes too late (the
  process-information event is sent when the environment is created); the environment
  variable ``ORT_DISABLE_TELEMETRY=1``, set before that, creates no uploader at all.
- Ray reports usage statistics unless ``RAY_USAGE_STATS_ENABLED=0``.

``import pymupdf`` (2.0) also imports ``pymupdf.layout`` and ``pymupdf4llm``, and with them
onnxruntime, for layout analysis and Markdown export that docq never uses: 2.6 s and 137 MB
peak against 0.5 s and 47 MB without them (measured here). ``apply`` stops those imports.

``apply`` runs when the package is imported, before any of those libraries starts. The
values are forced, not defaulted: a shell that exported ``ORT_DISABLE_TELEMETRY=0`` does not
turn telemetry back on inside docq. ``tests/test_privacy.py`` runs a real batch under
``strace`` and finds no connection and no DNS query leaving the machine.
"""

from __future__ import annotations

import os
import sys

ENVIRONMENT = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime: no 1DS uploader, no device id file
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray: no usage report
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub: no telemetry with a download
    "PYMUPDF_SUGGEST_LAYOUT_ANALYZER": "0",  # PyMuPDF: no advice printed to stdout
}

# PyMuPDF's optional layout analysis and Markdown export (both load onnxruntime); docq reads words.
SKIPPED_MODULES = ("pymupdf.layout", "pymupdf4llm")


def apply() -> None:
    """Set the switches above; idempotent."""
    os.environ.update(ENVIRONMENT)
    if "pymupdf" not in sys.modules:  # once pymupdf is imported, its import of layout is done
        for name in SKIPPED_MODULES:
            sys.modules.setdefault(name, None)  # `import pymupdf.layout` raises ImportError
