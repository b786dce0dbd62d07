"""The family registry (``vlm/families/``): a family is one module of the package, found
because it is there, and it carries all docq knows of its models (ARCHITECTURE.md)."""

from __future__ import annotations

import importlib
import pkgutil
from types import SimpleNamespace

import pytest

from docvqa_cli.errors import UsageError
from docvqa_cli.vlm import families as registry
from docvqa_cli.vlm import tie


def test_each_module_of_the_package_is_a_registered_family():
    known = registry.families()
    modules = [m.name for m in pkgutil.iter_modules(registry.__path__) if not m.name.startswith("_")]
    assert sorted(modules) == ["idefics3", "qwen"]
    for name in modules:
        module = importlib.import_module(f"docvqa_cli.vlm.families.{name}")
        mine = [cls for cls in known.values() if cls.__module__ == module.__name__]
        assert mine and all(known[t] is mine[0] for t in mine[0].model_types), name
        # its TIE spec is its own, and TIE finds it through the registry
        assert mine[0].tie_spec is module.TIE_SPEC
        model = SimpleNamespace(config=SimpleNamespace(model_type=mine[0].model_types[0]))
        assert tie.spec_for(model) is module.TIE_SPEC


def test_a_new_family_is_one_new_module(tmp_path, monkeypatch):
    (tmp_path / "toyfam.py").write_text(
        "from docvqa_cli.vlm.base import Backend\n"
        "from docvqa_cli.vlm.families import register\n\n\n"
        "@register\n"
        "class ToyBackend(Backend):\n"
        "    family = 'toy'\n"
        "    model_types = ('toy_vlm',)\n"
    )
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the built-in ones stay
    monkeypatch.setattr(registry, "_broken", {})
    try:
        found = registry.families()
        assert found["toy_vlm"].family == "toy" and found["qwen3_vl"].family == "qwen-vl"
        with pytest.raises(UsageError, match="TIE does not support model type 'toy_vlm'"):
            tie.spec_for(SimpleNamespace(config=SimpleNamespace(model_type="toy_vlm")))
    finally:
        import sys

        sys.modules.pop("docvqa_cli.vlm.families.toyfam", None)
