"""The one retry policy of agentsd, on tenacity: ``attempts`` tries, exponential backoff.

    >>> from agentsd.retrying import retrying
    >>> answers = iter([503, 429, 200])
    >>> retrying(3, on_result=lambda code: code >= 429)(lambda: next(answers))
    200
    >>> retrying(2, on_result=lambda code: code >= 429)(lambda: 503)  # tries run out: the last one
    503

Used by every retry loop (the ``http`` sandbox client, the OpenAI-compatible policy backend,
the skill summarizer), so they wait alike: ``backoff_s · 2**(n-1)`` after the n-th failed try,
or what ``wait`` says for that try. When the tries run out the caller sees the last outcome
(``reraise``: the last exception, or the last result) and words it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["retrying"]


def retrying(attempts: int, *, backoff_s: float = 0.0, on_exception: type | tuple = (),
             on_result: Callable[[Any], bool] | None = None,
             wait: Callable[[Any], float | None] | None = None):
    """A :class:`tenacity.Retrying` of ``attempts`` tries that retries exceptions of the types
    ``on_exception`` and results for which ``on_result(result)`` is true. ``wait(retry_state)``
    may return seconds to wait instead of the backoff (``None``: the backoff). The last outcome
    is returned or raised when tries run out (no ``RetryError``)."""
    import tenacity

    backoff = tenacity.wait_exponential(multiplier=backoff_s, min=0, max=3600) if backoff_s > 0 \
        else tenacity.wait_none()

    def wait_for(state: Any) -> float:
        chosen = wait(state) if wait is not None else None
        return backoff(state) if chosen is None else chosen

    retry = tenacity.retry_if_exception_type(on_exception) if on_exception else tenacity.retry_never
    if on_result is not None:
        retry = retry | tenacity.retry_if_result(on_result)
    return tenacity.Retrying(stop=tenacity.stop_after_attempt(attempts), wait=wait_for, retry=retry,
                             reraise=True, retry_error_callback=lambda state: state.outcome.result())
