"""The one retry policy: what it retries, how often, and how long it waits between tries."""

from __future__ import annotations

import time

import pytest

from sandbox.retry import call_with_retries


def failing(exc: type[Exception], calls: list[float]):
    def call() -> None:
        calls.append(time.monotonic())
        raise exc(f"try {len(calls)}")

    return call


def test_stops_after_its_tries_and_raises_the_last_error():
    calls: list[float] = []
    with pytest.raises(ConnectionError, match="try 3"):
        call_with_retries(failing(ConnectionError, calls), retry_on=ConnectionError, tries=3, backoff_s=0.0)
    assert len(calls) == 3


def test_other_errors_are_not_retried():
    calls: list[float] = []
    with pytest.raises(ValueError, match="try 1"):
        call_with_retries(failing(ValueError, calls), retry_on=(ConnectionError, OSError), tries=3, backoff_s=0.0)
    assert len(calls) == 1


def test_returns_the_first_success():
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert call_with_retries(flaky, retry_on=ConnectionError, tries=3, backoff_s=0.0) == "ok"
    assert len(calls) == 3


def test_the_wait_doubles():
    calls: list[float] = []
    with pytest.raises(ConnectionError):
        call_with_retries(failing(ConnectionError, calls), retry_on=ConnectionError, tries=3, backoff_s=0.1)
    first, second = calls[1] - calls[0], calls[2] - calls[1]
    assert first >= 0.1 and second >= 0.2, (first, second)
