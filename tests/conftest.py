"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

import agentsd


@pytest.fixture
def scratch_registry():
    """Let a test register throwaway ids without leaking them into other tests."""
    import sys

    reg = sys.modules["agentsd.registry"]

    import gymnasium

    agentsd.list_envs()  # built-ins and plugins loaded first
    saved = dict(reg._REGISTRY)
    gym_saved = dict(gymnasium.envs.registration.registry)  # agentsd.register mirrors ids there
    yield reg
    reg._REGISTRY.clear()
    reg._REGISTRY.update(saved)
    gymnasium.envs.registration.registry.clear()
    gymnasium.envs.registration.registry.update(gym_saved)


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    the CI box is shared, and oversubscribed OpenMP threads make tiny models 50x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tok():
    """The embedded model's real tokenizer (SmolLM2's chat template), loaded once per session."""
    from agentsd.policy.models import ModelNotFoundError, load_tokenizer

    try:
        return load_tokenizer("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"embedded tokenizer unavailable: {e}")


def _full_forward_logprobs(model, prompt, action, temperature=1.0):
    """Log-probs of ``action`` after ``prompt`` from one full forward pass (no cache)."""
    import torch

    ids = torch.tensor([prompt + action])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(action)[:, None])[:, 0].tolist()


@pytest.fixture(scope="session")
def score():
    """``score(model, prompt, action, temperature=1.0)``: the reference log-probs that a
    sampler's reported ``logprobs`` must match (one full forward pass, no cache)."""
    return _full_forward_logprobs
