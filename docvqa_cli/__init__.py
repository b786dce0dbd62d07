"""docq: question answering over PDFs and scans with a text-guided, tile-selecting VLM."""

__version__ = "0.1.0"
