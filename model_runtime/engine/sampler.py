"""The sampler: next tokens from the last-position logits of each sampled sequence.

Greedy rows take the argmax. The others go through temperature, top-k and top-p,
then an exponential race (argmax of p / Exp(1) noise), which samples from p without
a cumulative search. A request with a seed draws its noise from its own generator,
so its output does not depend on what else is in the batch.

Shapes: M sampled sequences, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model_runtime import cpu_kernels
from model_runtime.engine.sampling_params import SamplingParams


class Sampler:
    def __init__(self, device: torch.device | str = "cpu", seed: int | None = None) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()
        self._seeded: dict[int, torch.Generator] = {}  # request id -> its own generator
        self._argmax = cpu_kernels.argmax() if self.device.type == "cpu" else None  # one C call; torch's CPU argmax is slow

    def forget(self, request_id: int) -> None:
        self._seeded.pop(request_id, None)

    def __call__(self, logits: torch.Tensor, request_ids: Sequence[int], params: Sequence[SamplingParams]) -> list[int]:
        logits = logits.float()  # [M, V]
        tokens = self._argmax(logits) if self._argmax is not None and logits.device.type == "cpu" else logits.argmax(dim=-1)  # [M]
        random_rows = [i for i, p in enumerate(params) if not p.is_greedy]
        if random_rows:
            rows = torch.tensor(random_rows, device=logits.device)
            probs = self._probs(logits[rows], [params[i] for i in random_rows])  # [m, V]
            noise = torch.empty_like(probs)  # [m, V]
            for j, i in enumerate(random_rows):
                noise[j].exponential_(generator=self._generator(request_ids[i], params[i]))
            tokens[rows] = (probs / noise).argmax(dim=-1)
        return tokens.tolist()

    def _probs(self, logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
        temperature = torch.tensor([p.temperature for p in params], device=logits.device)  # [m]
        logits = logits / temperature[:, None]  # [m, V]
        top_k = torch.tensor([p.top_k or logits.shape[-1] for p in params], device=logits.device)  # [m]
        top_p = torch.tensor([p.top_p for p in params], device=logits.device)  # [m]
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [m, V]
        ranks = torch.arange(logits.shape[-1], device=logits.device)[None, :]  # [1, V]
        sorted_logits = sorted_logits.masked_fill(ranks >= top_k[:, None], float("-inf"))
        sorted_probs = sorted_logits.softmax(dim=-1)  # [m, V]
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # [m, V]
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p[:, None], float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)  # [m, V]
        return logits.softmax(dim=-1)  # [m, V]

    def _generator(self, request_id: int, params: SamplingParams) -> torch.Generator:
        if params.seed is None:
            return self.generator
        if request_id not in self._seeded:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(params.seed)
            self._seeded[request_id] = gen
        return self._seeded[request_id]
