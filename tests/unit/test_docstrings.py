"""The examples in the docstrings run, and every public name is documented."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import herdcache

MODULES = ["herdcache.sizes", "herdcache.counter", "herdcache.serializers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    failed, attempted = doctest.testmod(importlib.import_module(name))
    assert attempted > 0 and failed == 0


@pytest.mark.parametrize("name", herdcache.__all__)
def test_public_names_have_docstrings(name: str) -> None:
    obj = getattr(herdcache, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"herdcache.{name} has no docstring"
        for attr, member in vars(obj).items() if inspect.isclass(obj) else []:
            if not attr.startswith("_") and callable(member):
                assert inspect.getdoc(member), f"herdcache.{name}.{attr} has no docstring"
