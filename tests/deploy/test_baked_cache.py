"""A model cache baked into an image stays valid in the container (docker/Dockerfile.cpu).

Image layers are tar archives and keep whole-second mtimes only; the cache's verification
stamp must still match then, or every new container would re-assemble and re-hash the
491 MB default model (and fail outright on a read-only filesystem)."""

from __future__ import annotations

import os

from service.weights import DEFAULT, embedded_gguf


def test_assembled_model_survives_losing_sub_second_mtimes(tmp_path):
    gguf = embedded_gguf(DEFAULT, tmp_path)  # assembled and sha256-verified once
    st = gguf.stat()
    whole = st.st_mtime_ns - st.st_mtime_ns % 1_000_000_000
    os.utime(gguf, ns=(st.st_atime_ns, whole))  # what an image layer keeps
    assert embedded_gguf(DEFAULT, tmp_path) == gguf
    after = gguf.stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, whole), "re-assembled: the stamp did not match"


def test_a_changed_model_file_is_verified_again(tmp_path):
    gguf = embedded_gguf(DEFAULT, tmp_path)
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched later
    assert embedded_gguf(DEFAULT, tmp_path) == gguf
    assert gguf.stat().st_ino != st.st_ino  # re-assembled from the parts and re-verified
