"""Noise schedules and the Gaussian closed forms of the forward process, as pure functions.

Steps are numbered n = 1..N as in Ho et al. 2020 (DDPM, https://arxiv.org/abs/2006.11239). Every
per-step tensor of `Schedule` has length N + 1 and is indexed by n directly; index 0 is the clean
state (beta_0 = 0 here, abar_0 = 1), so `abar[n - 1]` is always defined. The embedding transition's
own variance (DiffRec's beta_0, h^0 ~ N(E(v), beta_0 I)) lives in the model config, not here.

Schedules (betas in float64, clipped at `MAX_BETA` so that no step destroys everything at once):
- "linear": DDPM's linear betas from `beta_start` to `beta_end` given for a 1000-step chain and
  rescaled by 1000 / N (Nichol & Dhariwal 2021, improved DDPM, `get_named_beta_schedule`), so that
  abar_N is near 0 for any N. Kept so that records naming it still mean what they say; for small N
  the clamp does the work (N = 10: betas 1.0-2.0 clamped to 0.999 from step 6, so abar_6..abar_10 =
  1.4e-5 ... 1.4e-17 and half the uniform training draws are pure noise; N = 2: abar_2 = 9.5e-4 only
  by the clamp).
- "linear-continuous": the same linear beta range read as the continuous-time schedule it
  discretises (the VP SDE's perturbation kernel, Song et al. 2021, https://arxiv.org/abs/2011.13456, Sec. 3.4):
  abar(t) = exp(-T (beta_start t + (beta_end - beta_start) t^2 / 2)), T = 1000, sampled at
  t = n / N. Every N draws the same abar(t) curve, so abar falls smoothly to the same
  abar_N = exp(-T (beta_start + beta_end) / 2) (4.3e-5 with DDPM's range) and an N sweep varies the
  discretisation only, never the share of pure-noise steps. No clamp: beta_n < 1 always (N = 2: 0.99945, above
  `MAX_BETA`, which is right here: it is the exact step to abar_N). At
  N = 1000 it is DDPM's linear schedule to within 1e-3 in abar (N = 50: 0.02; N = 10: 0.1).
- "cosine": abar(t) = cos^2(((t/N + s) / (1 + s)) pi/2) / abar(0), s = 0.008 (improved DDPM, eq. 17).
- "sqrt": abar(t) = 1 - sqrt(t/N + s), s = 1e-4 (Li et al. 2022, Diffusion-LM, Appendix A).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Literal

import torch

ScheduleKind = Literal["linear", "linear-continuous", "cosine", "sqrt"]
MAX_BETA = 0.999
REFERENCE_STEPS = 1000  # the chain length that the linear schedule's beta range refers to


def linear_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(N,) betas, linear from beta_start to beta_end after rescaling by 1000 / N."""
    scale = REFERENCE_STEPS / steps
    return torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64).clamp(max=MAX_BETA)


def linear_continuous_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(N,) betas with abar_n = exp(-F(n / N)), F(t) = T (beta_start t + (beta_end - beta_start) t^2 / 2):
    beta_n = 1 - exp(-(F(n / N) - F((n - 1) / N))), computed as -expm1 so no clamp is needed."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    F = REFERENCE_STEPS * (beta_start * t + (beta_end - beta_start) * t**2 / 2)  # (N + 1,) -log abar(t)
    return -torch.expm1(-(F[1:] - F[:-1]))


def betas_from_alpha_bar(alpha_bar: Callable[[float], float], steps: int) -> torch.Tensor:
    """(N,) betas with beta_n = 1 - abar(n/N) / abar((n-1)/N) (improved DDPM, eq. 17's discretisation)."""
    betas = [min(1 - alpha_bar(n / steps) / alpha_bar((n - 1) / steps), MAX_BETA) for n in range(1, steps + 1)]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_betas(steps: int, s: float = 0.008) -> torch.Tensor:
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731  (abar up to the f(0) factor, which cancels)
    return betas_from_alpha_bar(f, steps)


def sqrt_betas(steps: int, s: float = 1e-4) -> torch.Tensor:
    return betas_from_alpha_bar(lambda t: 1 - math.sqrt(t + s), steps)


def make_betas(kind: ScheduleKind, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if kind == "linear":
        return linear_betas(steps, beta_start, beta_end)
    if kind == "linear-continuous":
        return linear_continuous_betas(steps, beta_start, beta_end)
    if kind == "cosine":
        return cosine_betas(steps)
    if kind == "sqrt":
        return sqrt_betas(steps)
    raise ValueError(f"unknown schedule {kind!r}")


@dataclass(frozen=True)
class Schedule:
    """Per-step constants, each (N + 1,) float32 and indexed by the step n (index 0 = clean)."""

    betas: torch.Tensor  # beta_n
    alphas: torch.Tensor  # alpha_n = 1 - beta_n
    abar: torch.Tensor  # abar_n = prod_{s <= n} alpha_s
    sqrt_abar: torch.Tensor
    sqrt_one_minus_abar: torch.Tensor
    posterior_coef_h0: torch.Tensor  # beta_n sqrt(abar_{n-1}) / (1 - abar_n)      (DDPM eq. 7)
    posterior_coef_hn: torch.Tensor  # (1 - abar_{n-1}) sqrt(alpha_n) / (1 - abar_n)
    posterior_var: torch.Tensor  # beta_n (1 - abar_{n-1}) / (1 - abar_n)

    @property
    def steps(self) -> int:
        return len(self.betas) - 1

    def to(self, device) -> "Schedule":
        return Schedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def make_schedule(betas: torch.Tensor) -> Schedule:
    """betas: (N,) in (0, 1) -> the `Schedule` of precomputed constants."""
    betas = betas.to(torch.float64)
    if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
        raise ValueError("betas must be a 1-d tensor of values in (0, 1)")
    betas = torch.cat([betas.new_zeros(1), betas])  # index 0: the clean state
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    denom = (1 - abar).clamp(min=1e-12)  # only index 0 has 1 - abar = 0; its coefficients are unused
    consts = dict(
        betas=betas,
        alphas=alphas,
        abar=abar,
        sqrt_abar=abar.sqrt(),
        sqrt_one_minus_abar=(1 - abar).sqrt(),
        posterior_coef_h0=betas * abar_prev.sqrt() / denom,
        posterior_coef_hn=(1 - abar_prev) * alphas.sqrt() / denom,
        posterior_var=betas * (1 - abar_prev) / denom,
    )
    return Schedule(**{k: v.to(torch.float32) for k, v in consts.items()})


def at_step(values: torch.Tensor, n: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[n] shaped to broadcast against `like`: n (B,) -> (B, 1, ..., 1)."""
    return values[n].reshape(n.shape + (1,) * (like.dim() - n.dim()))


def q_sample(sched: Schedule, h0: torch.Tensor, n: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """h^n = sqrt(abar_n) h^0 + sqrt(1 - abar_n) eps   (DDPM eq. 4). n: (B,) or broadcastable prefix of h0."""
    return at_step(sched.sqrt_abar, n, h0) * h0 + at_step(sched.sqrt_one_minus_abar, n, h0) * eps


def q_posterior(sched: Schedule, h0: torch.Tensor, hn: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(h^{n-1} | h^n, h^0)   (DDPM eqs. 6-7)."""
    mean = at_step(sched.posterior_coef_h0, n, h0) * h0 + at_step(sched.posterior_coef_hn, n, hn) * hn
    return mean, at_step(sched.posterior_var, n, h0)
