"""The reference engine: generation with transformers on the trainer's own PeftModel.

It shares the `AdapterPool` with the trainer, so a freshly trained adapter is used by the
next round with no hand-over at all. Slow on CPUs (see docs/architecture.md §3), simple and exact.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from adapters.lifecycle import Adapter, AdapterPool
from service.engines.base import Completion, SamplingParams, stop_token_ids


class _LogprobRecorder(LogitsProcessor):
    """Records log pi(y_t) of each sampled token without keeping [steps, batch, vocab].

    transformers applies custom processors before its temperature/top-p warpers, so this
    sees raw logits and tempers them itself; the token sampled at step t is only known
    at step t+1 (as the last input id), so each row is kept for one step. With top_p < 1
    the recorded value is the tempered, untruncated probability."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature if temperature > 0 else 1.0
        self.prev: torch.Tensor | None = None
        self.values: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.values.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.prev = (scores.float() / self.temperature).log_softmax(-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        if self.prev is not None and len(self.values) < generated.shape[1]:
            self.values.append(self.prev.gather(-1, generated[:, -1:]).squeeze(-1))
        self.prev = None
        return torch.stack(self.values, dim=1) if self.values else generated.new_zeros(generated.shape, dtype=torch.float)


class TransformersEngine:
    name = "transformers"

    def __init__(self, pool: AdapterPool, tokenizer: Any, device: torch.device, batch_size: int = 8) -> None:
        self.pool = pool
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.stop_ids = sorted(stop_token_ids(pool.base, tokenizer))

    def _config(self, s: SamplingParams) -> GenerationConfig:
        # Explicit, so that a model's generation_config.json (top_k=20, repetition penalty,
        # ...) never changes what "temperature 1.0" means: the benchmark and the recorded
        # log-probabilities assume we sample from the model's own distribution.
        greedy = s.temperature <= 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            top_k=None,
            repetition_penalty=None,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], adapter: Adapter | None, sampling: SamplingParams
    ) -> list[list[Completion]]:
        rows = [p for p in prompts for _ in range(sampling.n)]
        cfg = self._config(sampling)
        out: list[Completion] = []
        with self.pool.lock:
            torch.manual_seed(sampling.seed)
            for b in range(0, len(rows), self.batch_size):
                batch = rows[b : b + self.batch_size]
                if adapter is None:
                    with self.pool.base_only() as model:
                        out += self._run(model, batch, cfg)
                else:
                    out += self._run(self.pool.activate(adapter), batch, cfg)
        return [out[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]

    def _run(self, model: Any, batch: list[list[int]], cfg: GenerationConfig) -> list[Completion]:
        width = max(len(p) for p in batch)
        pad = self.tokenizer.pad_token_id
        # Left padding keeps every prompt's last token at the same position.
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=self.device)
        att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
        recorder = _LogprobRecorder(cfg.temperature if cfg.do_sample else 0.0)
        res = model.generate(
            input_ids=ids, attention_mask=att, generation_config=cfg,
            logits_processor=LogitsProcessorList([recorder]),
        )
        generated = res.sequences[:, width:]
        logprobs = recorder.finish(generated)
        seqs = generated.tolist()
        completions = []
        for i, seq in enumerate(seqs):
            toks: list[int] = []
            finish = "length"
            for t in seq:
                toks.append(t)
                if t in self.stop_ids:
                    finish = "stop"
                    break
            lps = logprobs[i, : len(toks)].tolist()
            completions.append(
                Completion(
                    text=self.tokenizer.decode(toks, skip_special_tokens=True),
                    token_ids=toks,
                    logprobs=lps,
                    finish_reason=finish,
                )
            )
        return completions
