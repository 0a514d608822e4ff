"""The thread-count rule of :mod:`agentsd.threads`, with injected core counts and loads."""

from __future__ import annotations

import doctest

import pytest

from agentsd import threads
from agentsd.threads import MAX_AUTO_THREADS, apply_threads, choose_threads, pick_threads


def test_docstring_examples():
    result = doctest.testmod(threads)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("cores,load,want", [
    (2, 0.0, 2), (2, 0.25, 2),            # idle two-core box: both cores
    (2, 0.8, 1), (2, 1.0, 1), (2, 3.5, 1),  # another job on it: one thread, never zero
    (1, 0.0, 1), (1, 5.0, 1),
    (8, 0.0, MAX_AUTO_THREADS),           # capped on a big idle machine
    (8, 5.0, 3), (8, 7.9, 1),
    (4, None, 4),                         # no load average: assume idle
])
def test_choose_threads(cores, load, want):
    assert choose_threads(cores, load) == want


def test_choose_threads_never_exceeds_cores_or_cap():
    for cores in range(1, 33):
        for tenth in range(0, 400, 7):
            n = choose_threads(cores, tenth / 10)
            assert 1 <= n <= min(cores, MAX_AUTO_THREADS)
    assert choose_threads(64, 0.0, max_threads=16) == 16


def test_choose_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="cores"):
        choose_threads(0, 0.0)
    with pytest.raises(ValueError, match="max_threads"):
        choose_threads(2, 0.0, max_threads=0)


def test_pick_threads_uses_the_request_or_the_machine(monkeypatch):
    assert pick_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be >= 1"):
        pick_threads(0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_load_1m", lambda: 1.2)
    assert pick_threads() == 1
    monkeypatch.setattr(threads, "_load_1m", lambda: 0.05)
    assert pick_threads() == 2
    monkeypatch.setattr(threads, "_load_1m", lambda: None)
    assert pick_threads() == 2


def test_apply_threads_sets_torch_and_the_env(monkeypatch):
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # restored after the test
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
        with pytest.raises(ValueError):
            apply_threads(0)
    finally:
        torch.set_num_threads(before)
