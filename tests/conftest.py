"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

import agentsd


@pytest.fixture
def scratch_registry():
    """Let a test register throwaway ids without leaking them into other tests."""
    import sys

    reg = sys.modules["agentsd.registry"]

    agentsd.registry()  # built-ins and plugins loaded first
    saved = dict(reg._REGISTRY)
    yield reg
    reg._REGISTRY.clear()
    reg._REGISTRY.update(saved)
