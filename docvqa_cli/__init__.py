"""docq: question answering over PDFs and scans with a text-guided, tile-selecting VLM."""

from docvqa_cli import privacy as _privacy

_privacy.apply()  # before onnxruntime, Ray or PyMuPDF load (privacy.py)

__version__ = "0.1.0"
