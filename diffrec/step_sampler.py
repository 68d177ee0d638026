"""Which diffusion step each training sequence is noised with.

- "uniform": n ~ U{1..N}, weight 1.
- "importance": the loss-aware sampler of improved DDPM (Nichol & Dhariwal 2021, Sec. 3.3,
  `LossSecondMomentResampler`): p_n proportional to sqrt(E[L_n^2]) over each step's last
  `history` losses, mixed with `uniform_prob` of the uniform distribution; until every step has
  `history` losses recorded it samples uniformly. Each draw gets the weight 1 / (N p_n), so the
  weighted loss is an unbiased estimate of the uniform-step loss. DiffRec (Du et al. 2023) samples
  "important" steps this way.
Draws use torch's global generator (seeded by the trainer).
"""
from __future__ import annotations

from typing import Literal

import torch

StepSampling = Literal["uniform", "importance"]


class UniformStepSampler:
    def __init__(self, steps: int):
        self.steps = steps

    def weights(self) -> torch.Tensor:
        """(N,) probabilities of steps 1..N."""
        return torch.full((self.steps,), 1.0 / self.steps)

    def sample(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> steps n (batch,) in 1..N and importance weights (batch,)."""
        p = self.weights()
        idx = torch.multinomial(p, batch, replacement=True)
        return (idx + 1).to(device), (1.0 / (self.steps * p[idx])).to(device, torch.float32)

    def update(self, n: torch.Tensor, losses: torch.Tensor) -> None:
        """Records the per-sequence losses of the steps n (only loss-aware samplers use them)."""

    def state_dict(self) -> dict:
        """What training has changed (a resumed run restores it); nothing for the uniform sampler."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


class LossAwareStepSampler(UniformStepSampler):
    def __init__(self, steps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(steps)
        self.uniform_prob = uniform_prob
        self.history = torch.zeros(steps, history, dtype=torch.float64)  # last losses per step, a ring
        self.counts = torch.zeros(steps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history.shape[1]).all())

    def weights(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().weights()
        w = self.history.pow(2).mean(1).sqrt()
        w = w / w.sum()
        return ((1 - self.uniform_prob) * w + self.uniform_prob / self.steps).to(torch.float32)

    def state_dict(self) -> dict:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def update(self, n: torch.Tensor, losses: torch.Tensor) -> None:
        size = self.history.shape[1]
        for step, loss in zip((n - 1).tolist(), losses.tolist()):
            self.history[step, self.counts[step] % size] = loss
            self.counts[step] += 1


def make_step_sampler(kind: StepSampling, steps: int) -> UniformStepSampler:
    return LossAwareStepSampler(steps) if kind == "importance" else UniformStepSampler(steps)
