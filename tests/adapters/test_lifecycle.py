"""Per-job LoRA adapters on one shared base model: create, snapshot, restore, delete."""

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from adapters.lifecycle import adapter_name, peft_config, read_snapshot
from adapters.options import LoraOptions


def test_snapshot_restore_roundtrip_and_memory_is_reclaimed(tiny_deps):
    d = tiny_deps
    n_params = sum(1 for _ in d.pool.base.parameters())
    a = d.pool.create("t-snap", LoraOptions(rank=4, alpha=8, targets=("q_proj", "v_proj")), seed=1)
    with torch.no_grad():
        for p in d.pool.parameters(a).values():
            p.add_(0.01)
    d.pool.update_ema(a, 0.5)
    a.version = 3
    blob = d.pool.snapshot(a)
    meta, tensors = read_snapshot(blob)
    assert meta["lora"]["rank"] == 4 and meta["version"] == "3"
    b = d.pool.restore("t-snap-copy", blob)
    assert b.version == 3
    wa, wb = d.pool.weights(a), d.pool.weights(b)
    for (na, ta), (nb, tb) in zip(sorted(wa.items()), sorted(wb.items())):
        assert torch.equal(ta, tb)
    for n in a.ema:
        assert torch.equal(a.ema[n], b.ema[n.replace(f".{a.name}.", f".{b.name}.")])
    d.pool.delete(a)
    d.pool.delete(b)
    # many jobs later, nothing is left behind
    for i in range(5):
        d.pool.delete(d.pool.create(f"t-churn-{i}", LoraOptions(rank=16), seed=i))
    assert not d.pool.adapters
    assert not any(".job_" in n for n, _ in d.pool.model.named_parameters())
    assert sum(1 for _ in d.pool.base.parameters()) == n_params


def test_snapshot_records_the_request_lora_options_and_restores_them(tiny_deps):
    d = tiny_deps
    spec = LoraOptions(rank=2, alpha=4, targets=["q_proj", "o_proj"], layers=3)
    a = d.pool.create("t-spec", spec, seed=0)
    try:
        meta, _ = read_snapshot(d.pool.snapshot(a))
        assert meta["lora"] == {"rank": 2, "alpha": 4, "targets": ["q_proj", "o_proj"], "layers": 3}
        b = d.pool.restore("t-spec-copy", d.pool.snapshot(a))
        assert b.spec == spec
        assert {n.split(".")[-4] for n in d.pool.weights(b)} == {"q_proj", "o_proj"}
        top = d.pool.num_layers - 3
        assert {int(n.split(".layers.")[1].split(".")[0]) for n in d.pool.weights(b)} == {top, top + 1, top + 2}
        d.pool.delete(b)
    finally:
        d.pool.delete(a)


def test_snapshot_from_before_lora_options_still_restores(tiny_deps):
    """Snapshots written before the LoRA settings became LoraOptions also carry `dropout`
    (always 0.0); a job checkpointed then must still resume."""
    d = tiny_deps
    a = d.pool.create("t-old", LoraOptions(rank=2, alpha=4, targets=["v_proj"]), seed=0)
    try:
        blob = d.pool.snapshot(a)
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(blob[8:8 + n])["__metadata__"]
        lora = json.loads(meta["lora"])
        old_meta = {**meta, "lora": json.dumps({**lora, "dropout": 0.0, "targets": lora["targets"]})}
        old_blob = st_save(st_load(blob), metadata=old_meta)
        b = d.pool.restore("t-old-copy", old_blob)
        assert b.spec == LoraOptions(rank=2, alpha=4, targets=["v_proj"])
        for (_, ta), (_, tb) in zip(sorted(d.pool.weights(a).items()), sorted(d.pool.weights(b).items())):
            assert torch.equal(ta, tb)
        d.pool.delete(b)
    finally:
        d.pool.delete(a)


def test_peft_config_follows_the_options_without_dropout():
    cfg = peft_config(LoraOptions(rank=3, alpha=6, targets=["q_proj"]), num_layers=24)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (3, 6, 0.0)
    assert set(cfg.target_modules) == {"q_proj"}
    assert cfg.layers_to_transform is None


def test_lora_layers_puts_the_adapter_on_the_top_blocks_only():
    cfg = peft_config(LoraOptions(layers=3), num_layers=24)
    assert cfg.layers_to_transform == [21, 22, 23] and cfg.layers_pattern == "layers"
    with pytest.raises(ValueError, match="25, but the model has 24 decoder blocks"):
        peft_config(LoraOptions(layers=25), num_layers=24)


def test_adapter_names_are_identifiers():
    assert adapter_name("job_ab-12.x") == "job_job_ab_12_x"
    assert adapter_name("job_ab-12.x").isidentifier()


def test_a_safetensors_file_that_is_not_a_snapshot_is_refused():
    with pytest.raises(ValueError, match="not a tta LoRA snapshot"):
        read_snapshot(st_save({"w": torch.zeros(2)}, metadata={"format": "pt"}))
