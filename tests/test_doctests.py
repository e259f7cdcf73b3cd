"""The usage examples in the docstrings are true: every module's doctests run here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("actions", "bot", "state", "handlers")


def _modules() -> list[str]:
    """Modules with at least one docstring example that runs (not marked +SKIP: those need a server)."""
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
                  if not info.name.endswith("__main__")]
    finder = doctest.DocTestFinder()
    return [n for n in names if any(not e.options.get(doctest.SKIP) for t in finder.find(importlib.import_module(n))
                                    for e in t.examples)]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} are wrong"
