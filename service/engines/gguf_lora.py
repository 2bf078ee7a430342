"""PEFT LoRA weights -> a llama.cpp GGUF adapter file.

The file is what `llama_adapter_lora_init` loads: KV `general.type = adapter`,
`adapter.type = lora`, `adapter.lora.alpha`, and for each adapted linear layer a pair
`blk.{i}.<tensor>.weight.lora_a` / `.lora_b`. llama.cpp scales the product by
alpha / rank itself (rank read from the tensors), so the adapter is applied with scale
1.0 and means exactly what PEFT's `scaling = alpha / r` means (no rsLoRA, no DoRA).

Rotary layout: llama.cpp's converter permutes the rows of `attn_q`/`attn_k` for the
`llama` architecture (HF's rotate-half layout -> GGUF's interleaved one), so lora_B of
q/k (whose rows are those output rows) gets the same permutation there; `qwen2` keeps
HF's layout. Other architectures are refused rather than served a silently wrong adapter.

Shapes: PEFT holds A as [r, in] and B as [out, r] (PyTorch order); `GGUFWriter` reverses
numpy shapes into ggml's ne order, so they are written as they are, which gives what
llama.cpp checks: a.ne = [in, r], b.ne = [r, out] against the base tensor's [in, out].
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

# PEFT/HF module name -> llama.cpp tensor name (llama/qwen2/mistral-style decoders).
GGUF_TENSOR = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}

# architecture -> whether q/k output rows are permuted in its GGUF (see module docstring)
ROPE_PERMUTED = {"llama": True, "qwen2": False}

_KEY = re.compile(r"\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.[^.]+\.weight$")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # Same as convert_hf_to_gguf.LlamaModel.permute, on the output rows.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(
    weights: dict[str, torch.Tensor], arch: str, n_head: int = 0, n_head_kv: int = 0
) -> dict[str, np.ndarray]:
    """`AdapterPool.weights(adapter)` -> {gguf tensor name: fp32 array}.

    Refuses keys it cannot place (another target module, another layer layout) and
    architectures whose layout we have not checked, rather than silently serving a
    partial or wrong adapter."""
    if arch not in ROPE_PERMUTED:
        raise ValueError(f"LoRA conversion to GGUF is not verified for architecture {arch!r} (supported: {sorted(ROPE_PERMUTED)})")
    out: dict[str, np.ndarray] = {}
    for key, t in weights.items():
        m = _KEY.search(key)
        if m is None or m.group(2) not in GGUF_TENSOR:
            raise ValueError(f"LoRA weight {key!r} has no llama.cpp counterpart (supported: {sorted(GGUF_TENSOR)})")
        layer, module, ab = m.groups()
        name = f"blk.{layer}.{GGUF_TENSOR[module]}.weight.lora_{ab.lower()}"
        w = t.detach().to("cpu", torch.float32).contiguous().numpy()
        if ROPE_PERMUTED[arch] and ab == "B" and module in ("q_proj", "k_proj"):
            w = np.ascontiguousarray(_permute(w, n_head if module == "q_proj" else n_head_kv))
        out[name] = w
    return out


def write_gguf_lora(
    path: Path, arch: str, alpha: float, weights: dict[str, torch.Tensor], n_head: int = 0, n_head_kv: int = 0
) -> Path:
    """Write `weights` (PEFT keys) as a GGUF LoRA adapter for a base model of `arch`
    (its `general.architecture`, e.g. `qwen2`, `llama`) with `n_head` query and
    `n_head_kv` key/value heads (needed where q/k rows are permuted)."""
    import gguf

    tensors = gguf_tensors(weights, arch, n_head, n_head_kv)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(tensors):
        writer.add_tensor(name, tensors[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
