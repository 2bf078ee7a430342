"""The one retry policy of the sandbox's remote calls (the sandbox server, a client's verifier)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


def call_with_retries(
    call: Callable[[], T],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    tries: int,
    backoff_s: float,
) -> T:
    """`call()`, tried at most `tries` times while it raises one of `retry_on`.

    Between tries it waits backoff_s, then twice that, doubling. Any other exception
    propagates at once; when the tries are spent the last one propagates as raised."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(tries),
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=tenacity.wait_exponential(multiplier=backoff_s, exp_base=2),
        reraise=True,
    )
    return retrying(call)
