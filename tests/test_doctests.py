"""The runnable examples in the contract modules' docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["agentsd.types", "agentsd.tools", "agentsd.trajectory",
                                    "agentsd.distill.flags"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
