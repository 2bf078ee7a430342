"""Fixtures of the reliability suite: real processes on loopback (see live.py).

`api_server`: `tta serve --no-worker` on its own Redis (no model: the bad-input table and
the fuzzer need only the HTTP layer and the store). `stack`: the deployed shape, `tta serve
--workers 2` on the tiny model, verifying through `tta sandbox serve`, on a Redis with a
password; one per session, because each worker loads the model."""

from __future__ import annotations

import pytest

from tests.reliability.live import Stack


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    # short waits: a generated request that is valid must not hold the fuzzer for minutes
    st = Stack(logs=tmp_path_factory.mktemp("api-only-logs"), workers=0,
               extra_env={"TTA_MAX_WAIT_S": "0.5", "TTA_MAX_ACTIVE_JOBS_PER_KEY": "100000"}).start(timeout=90)
    yield st
    st.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    st = Stack(logs=tmp_path_factory.mktemp("stack-logs"), workers=2).start()
    yield st
    st.close()
