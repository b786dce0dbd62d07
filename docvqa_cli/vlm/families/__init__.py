"""The registry of model families: each module of this package is one family.

A family module subclasses ``vlm.base.Backend`` (the three steps: preprocess, forward,
postprocess), calls ``register(ItsBackend)``, and keeps everything else docq must know of
the family with it: its TIE spec (``Backend.tie_spec``: where the vision encoder's layers
are, how to encode one overview, how packed patches are ordered), its end-of-answer ids
(``eos_ids``) and the tensors its forward takes for training (``Backend.model_inputs``).
Adding a family is one new module here plus its tests (ARCHITECTURE.md, "Adding
things").

Every module of this package is imported the first time a family is looked up (one that
fails to import is named in the error, and does not hide the others); third-party packages
can add theirs under the ``docq.backends`` entry-point group. A model's ``config.json``
``model_type`` picks the family.
"""

from __future__ import annotations

import importlib
import pkgutil

from docvqa_cli.errors import UsageError
from docvqa_cli.vlm.base import Backend

_REGISTRY: dict[str, type[Backend]] = {}
_discovered = False
_broken: dict[str, str] = {}  # family modules that failed to import: name -> cause


def register(backend_cls: type[Backend]) -> type[Backend]:
    """Serve ``backend_cls.model_types`` with ``backend_cls`` (usable as a class decorator)."""
    if not backend_cls.model_types:
        raise ValueError(f"{backend_cls.__name__} names no model_types")
    for model_type in backend_cls.model_types:
        _REGISTRY[model_type] = backend_cls
    return backend_cls


def _discover() -> None:
    """Import the family modules of this package, then entry-point plugins (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # a broken family must not hide the others
            _broken[info.name] = f"{type(exc).__name__}: {exc}"
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="docq.backends"):
            try:
                register(ep.load())
            except Exception as exc:
                _broken[ep.name] = f"{type(exc).__name__}: {exc}"
    except Exception:
        pass


def families() -> dict[str, type[Backend]]:
    """model_type -> backend class, for every family docq knows."""
    _discover()
    return dict(_REGISTRY)


def backend_for(model_type: str, name: str = "") -> type[Backend]:
    known = families()
    if model_type in known:
        return known[model_type]
    listing = ", ".join(f"{cls.family} ({', '.join(cls.model_types)})" for cls in _unique(known.values()))
    broken = f"; failed to import: {', '.join(_broken)}" if _broken else ""
    raise UsageError(
        f"--model {name}: model_type {model_type!r} is not a family docq supports; known: {listing}{broken}"
    )


def _unique(classes):
    seen = []
    for cls in classes:
        if cls not in seen:
            seen.append(cls)
    return seen
