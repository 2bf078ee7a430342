"""The fast CPU engine: llama.cpp (`llama-cpp-python`) on the quantized GGUF.

The base GGUF is loaded once. Per-request LoRA adapters live in the trainer's
`AdapterPool` (PEFT, fp32); each adapter *version* is converted into a fresh GGUF
adapter file and a fresh llama.cpp handle, cached by (name, version): a handle never
stands for weights other than those it was loaded from. Replaced versions and adapters
that have left the pool are freed on the next call, so memory does not grow with jobs.

Sampling happens here, in numpy, from the logits llama.cpp returns, so that the recorded
log-probability of each sampled token is the same quantity on every engine:
log_softmax(logits / T) (T = 1 when greedy; with top_p < 1 the tempered, untruncated value,
as the transformers engine records). The tests compare it with the trainer's rescoring,
which is how they check that the adapter version served is the one trained. Each completion draws from its own generator seeded by
(seed, row), so results do not depend on how rows are batched.

The n completions of a prompt decode as parallel sequences of one llama.cpp batch: the
prompt is evaluated once and its KV cells are shared with the other sequences
(`llama_memory_seq_cp` on a unified KV cache). `parallel=False` decodes them one after
another instead (same prompt KV, copied per row); bench/engine_speed.py measures both.

What it does not guarantee: bit-identical results to the transformers engine (Q4 weights;
greedy outputs agree until the first near-tie, see tests), nor identical results across
thread counts or batch shapes (float summation order).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from adapters.lifecycle import Adapter, AdapterPool
from service.engines.base import Completion, SamplingParams, stop_token_ids
from service.engines.gguf_lora import write_gguf_lora
from service.engines.sampling import RowSampler

log = logging.getLogger(__name__)



def _llama():
    import llama_cpp
    from llama_cpp import _logger

    # llama.cpp logs through one process-wide callback; keep it to errors.
    _logger.set_verbose(False)
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C library's stderr for a moment. Loading a LoRA on ffn_down makes
    llama.cpp print one warning per layer (it cannot use repacked weights there) on a path
    that bypasses its log callback; every round would flood the progress display. The
    load takes ~5-25 ms; a failure is still reported by its return value."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _LoadedAdapter:
    def __init__(self, handle: Any, version: int) -> None:
        self.handle = handle
        self.version = version


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(
        self,
        gguf_path: str | os.PathLike,
        pool: AdapterPool,
        tokenizer: Any,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_seq_max: int = 16,
        n_batch: int = 512,
        parallel: bool = True,
    ) -> None:
        """`n_ctx`: KV cells shared by all sequences decoded together (a prompt's n rows
        need len(prompt) + n * max_new_tokens; larger jobs are split into groups, and the
        context grows if a single row needs more). `n_seq_max`: most sequences decoded in
        one batch. `parallel`: decode a prompt's n completions together (True) or one
        after another (False)."""
        self.ll = ll = _llama()
        self.pool = pool
        self.tokenizer = tokenizer
        self.gguf_path = Path(gguf_path)
        self.n_threads = n_threads or _threads()
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        self.parallel = parallel
        ll.llama_backend_init()
        mp = ll.llama_model_default_params()
        self.model = ll.llama_model_load_from_file(str(self.gguf_path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.gguf_path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self.model)
        self.arch = self._meta("general.architecture")
        self.n_head = int(self._meta(f"{self.arch}.attention.head_count"))
        self.n_head_kv = int(self._meta(f"{self.arch}.attention.head_count_kv"))
        self.bos = ll.llama_vocab_bos(self.vocab)
        # llama.cpp's own end-of-generation check is applied on top (`_is_stop`).
        self.stop_ids = stop_token_ids(pool.base, tokenizer)
        self.ctx = None
        self.ctx_size = 0
        self._n_ctx = n_ctx
        self._batch = None
        self._adapters: dict[str, _LoadedAdapter] = {}  # adapter name -> its one live version
        self._applied: Any = ()  # what is set on the context now
        self._wanted: Any = None  # the handle the current call generates with
        self._serial = itertools.count()
        shm = Path("/dev/shm")
        self._dir = Path(tempfile.mkdtemp(prefix="tta-llamacpp-", dir=shm if shm.is_dir() else None))
        self._ensure_ctx(n_ctx)

    # -- setup ---------------------------------------------------------------------------
    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            raise RuntimeError(f"{self.gguf_path}: GGUF has no {key!r}")
        return buf.value.decode()

    def _is_stop(self, tok: int) -> bool:
        return tok in self.stop_ids or bool(self.ll.llama_vocab_is_eog(self.vocab, tok))

    def _ensure_ctx(self, cells: int) -> None:
        """A context with at least `cells` KV cells (recreated, larger, if needed)."""
        if self.ctx is not None and self.ctx_size >= cells:
            return
        ll = self.ll
        size = max(self._n_ctx, 256 * -(-cells // 256))
        self._free_ctx()
        cp = ll.llama_context_default_params()
        cp.n_ctx = size
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_batch
        cp.n_seq_max = self.n_seq_max
        cp.n_threads = self.n_threads
        cp.n_threads_batch = self.n_threads
        cp.kv_unified = True  # one buffer: a prompt's KV cells are shared by its n rows
        cp.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {size} cells")
        self.ctx_size = size
        self.mem = ll.llama_get_memory(self.ctx)
        self._batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._applied = ()
        self._apply(self._wanted)  # a new context starts without adapters

    def _free_ctx(self) -> None:
        if self._batch is not None:
            self.ll.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx is not None:
            self.ll.llama_free(self.ctx)
            self.ctx = None

    def close(self) -> None:
        """Free everything llama.cpp holds (the engine is unusable afterwards)."""
        self._free_ctx()
        for la in self._adapters.values():
            self.ll.llama_adapter_lora_free(la.handle)
        self._adapters.clear()
        if self.model is not None:
            self.ll.llama_model_free(self.model)
            self.model = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- adapters ------------------------------------------------------------------------
    def _apply(self, handle: Any) -> None:
        if self._applied == (handle,) or (handle is None and self._applied == ()):
            return
        ll = self.ll
        if handle is None:
            ll.llama_set_adapters_lora(self.ctx, None, 0, None)
            self._applied = ()
        else:
            arr = (ll.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)  # alpha / rank is applied by llama.cpp
            if ll.llama_set_adapters_lora(self.ctx, arr, 1, scales) != 0:
                raise RuntimeError("llama.cpp refused to apply the LoRA adapter")
            self._applied = (handle,)

    def _drop(self, name: str) -> None:
        la = self._adapters.pop(name)
        if self._applied == (la.handle,):
            self._apply(None)
        if self._wanted is la.handle:
            self._wanted = None
        self.ll.llama_adapter_lora_free(la.handle)

    def _sweep(self) -> None:
        """Free handles of adapters that left the pool (their job ended)."""
        for name in [n for n in self._adapters if n not in self.pool.adapters]:
            self._drop(name)

    def handle(self, adapter: Adapter) -> Any:
        """The llama.cpp handle of this adapter version, converted and loaded on first use.
        Call under `pool.lock` (it reads the pool's live weights)."""
        la = self._adapters.get(adapter.name)
        if la is not None and la.version == adapter.version:
            return la.handle
        if la is not None:
            self._drop(adapter.name)  # an older version: never served again
        path = self._dir / f"{adapter.name}-v{adapter.version}-{next(self._serial)}.gguf"
        try:
            write_gguf_lora(path, self.arch, adapter.spec.alpha, self.pool.weights(adapter), self.n_head, self.n_head_kv)
            with _quiet_stderr():
                h = self.ll.llama_adapter_lora_init(self.model, str(path).encode())
        finally:
            path.unlink(missing_ok=True)  # llama.cpp has copied the tensors
        if not h:
            raise RuntimeError(f"llama.cpp could not load the GGUF LoRA of {adapter.name} v{adapter.version}")
        self._adapters[adapter.name] = _LoadedAdapter(h, adapter.version)
        return h

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """llama.cpp's own tokenisation of `text` (special tokens parsed, no BOS added);
        the engine never uses it for prompts, tests compare it with the HF tokenizer's."""
        raw = text.encode()
        buf = (self.ll.llama_token * (len(raw) + 8))()
        n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, special)
        if n < 0:
            raise RuntimeError("llama_tokenize failed")
        return list(buf[:n])

    def loaded_adapters(self) -> dict[str, int]:
        """{adapter name: version} of the handles held now (for tests and metrics)."""
        return {n: la.version for n, la in self._adapters.items()}

    # -- generation ----------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int]], adapter: Adapter | None, sampling: SamplingParams
    ) -> list[list[Completion]]:
        n = sampling.n
        with self.pool.lock:
            self._sweep()
            self._wanted = None if adapter is None else self.handle(adapter)
            self._apply(self._wanted)
            prompts = [self._check_prompt(p) for p in prompts]
            rows = [(pi, pi * n + j) for pi in range(len(prompts)) for j in range(n)]
            done: dict[int, Completion] = {}
            for group in self._groups(prompts, rows, sampling.max_new_tokens):
                run = self._run_parallel if self.parallel else self._run_sequential
                done.update(run(prompts, group, sampling))
        flat = [done[r] for _, r in rows]
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _check_prompt(self, p: list[int]) -> list[int]:
        if not p:
            raise ValueError("empty prompt")
        # Ids come from the HF tokenizer with the chat template already applied; if both
        # the template and the tokenizer put a BOS, llama.cpp would see two.
        if len(p) > 1 and p[0] == p[1] == self.bos:
            p = p[1:]
        return p

    def _groups(self, prompts, rows, max_new):
        """Rows packed into groups decoded together: at most n_seq_max sequences and the
        context's cells (each prompt once, max_new per row)."""
        if not self.parallel:
            yield rows
            return
        group, cells, seen = [], 0, set()
        for pi, r in rows:
            need = max_new + (0 if pi in seen else len(prompts[pi]))
            if group and (len(group) >= self.n_seq_max or cells + need > self.ctx_size):
                yield group
                group, cells, seen = [], 0, set()
                need = max_new + len(prompts[pi])
            group.append((pi, r))
            cells += need
            seen.add(pi)
        if group:
            yield group

    def _decode(self, tokens, positions, seqs, want_logits) -> None:
        b = self._batch
        k = len(tokens)
        for i in range(k):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seqs[i]
            b.logits[i] = want_logits[i]
        b.n_tokens = k
        rc = self.ll.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (rc={rc}, {k} tokens)")

    def _prefill(self, prompt: list[int], seq: int) -> np.ndarray:
        """Evaluate `prompt` into sequence `seq`; return the last position's logits."""
        for s in range(0, len(prompt), self.n_batch):
            chunk = prompt[s : s + self.n_batch]
            last = s + len(chunk) == len(prompt)
            self._decode(chunk, range(s, s + len(chunk)), [seq] * len(chunk),
                         [0] * (len(chunk) - 1) + [1 if last else 0])
        return self._logits(-1)

    def _logits(self, i: int) -> np.ndarray:
        ptr = self.ll.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise RuntimeError("llama.cpp returned no logits")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _run_parallel(self, prompts, group, s: SamplingParams) -> dict[int, Completion]:
        ll = self.ll
        first: dict[int, int] = {}  # prompt -> first seq id holding its KV
        for k, (pi, _) in enumerate(group):
            first.setdefault(pi, k)
        need = sum(len(prompts[pi]) for pi in first) + len(group) * s.max_new_tokens
        self._ensure_ctx(need)
        ll.llama_memory_clear(self.mem, True)
        logits0 = {pi: self._prefill(prompts[pi], first[pi]) for pi in first}
        for k, (pi, _) in enumerate(group):
            if k != first[pi]:
                ll.llama_memory_seq_cp(self.mem, first[pi], k, -1, -1)
        samplers = {r: RowSampler(s, r) for _, r in group}
        toks: dict[int, list[int]] = {r: [] for _, r in group}
        lps: dict[int, list[float]] = {r: [] for _, r in group}
        finish: dict[int, str] = {}
        active = list(range(len(group)))
        logits = {k: logits0[pi] for k, (pi, _) in enumerate(group)}
        while active:
            nxt = []
            for k in active:
                r = group[k][1]
                t, lp = samplers[r].pick(logits[k])
                toks[r].append(t)
                lps[r].append(lp)
                if self._is_stop(t):
                    finish[r] = "stop"
                elif len(toks[r]) >= s.max_new_tokens:
                    finish[r] = "length"
                else:
                    nxt.append(k)
                    continue
                ll.llama_memory_seq_rm(self.mem, k, -1, -1)
            active = nxt
            if not active:
                break
            self._decode([toks[group[k][1]][-1] for k in active],
                         [len(prompts[group[k][0]]) + len(toks[group[k][1]]) - 1 for k in active],
                         active, [1] * len(active))
            logits = {k: self._logits(i) for i, k in enumerate(active)}
        ll.llama_memory_clear(self.mem, True)
        return {r: self._completion(toks[r], lps[r], finish[r]) for _, r in group}

    def _run_sequential(self, prompts, group, s: SamplingParams) -> dict[int, Completion]:
        ll = self.ll
        out: dict[int, Completion] = {}
        longest = max(len(prompts[pi]) for pi, _ in group)
        self._ensure_ctx(2 * longest + s.max_new_tokens)
        current = None
        for pi, r in group:
            if pi != current:  # the prompt's KV stays in seq 0; each row works in seq 1
                ll.llama_memory_clear(self.mem, True)
                logits0 = self._prefill(prompts[pi], 0)
                current = pi
            ll.llama_memory_seq_cp(self.mem, 0, 1, -1, -1)
            sampler = RowSampler(s, r)
            logits, toks, lps, pos = logits0, [], [], len(prompts[pi])
            while True:
                t, lp = sampler.pick(logits)
                toks.append(t)
                lps.append(lp)
                if self._is_stop(t):
                    finish = "stop"
                    break
                if len(toks) >= s.max_new_tokens:
                    finish = "length"
                    break
                self._decode([t], [pos], [1], [1])
                pos += 1
                logits = self._logits(0)
            ll.llama_memory_seq_rm(self.mem, 1, -1, -1)
            out[r] = self._completion(toks, lps, finish)
        ll.llama_memory_clear(self.mem, True)
        return out

    def _completion(self, toks: list[int], lps: list[float], finish: str) -> Completion:
        return Completion(
            text=self.tokenizer.decode(toks, skip_special_tokens=True),
            token_ids=toks, logprobs=lps, finish_reason=finish,  # type: ignore[arg-type]
        )
