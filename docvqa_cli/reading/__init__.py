"""Reading a document: from a file to pages of words with boxes, cut into tiles.

The first step of answering, below everything that thinks about a question (see
ARCHITECTURE.md). One room per job:

- ``documents``: open a PDF or image and turn it into ``Page``s (a lazy render, the words
  from the text layer or from OCR, the page size).
- ``ocr/``: the OCR engines behind one small registry (``ocr.get(name)``, ``ocr.ENGINES``);
  one module per engine, registered when imported.
- ``tiles``: a page cut into the overlapping ``Tile``s that relevance scores and the model sees.
- ``reader``: ``TimedLoader``, reading each document in a worker process under
  ``--doc-timeout``.

Nothing here imports a model, a question or a record: this package sits on ``errors`` and
``options`` only.
"""
