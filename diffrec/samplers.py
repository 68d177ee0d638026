"""Reverse-process samplers: an explicit loop over a `step` function, no logging inside.

Every sampler takes
- `denoise(h_n, n) -> hhat^0`: the x0-parameterised network for one step n (an int in 1..N),
  h_n and hhat^0 of shape (B, d), or (B, K, d) for K independent slots of each sequence in one
  network call;
- `rounding(hhat^0) -> (B, V)` log-probabilities log p(v | hhat^0) of the rounding transition;
- a `torch.Generator` for every random draw, so the scores are reproducible,
and returns (B, V) scores. The slot starts from h^N ~ N(0, I).

- `ancestral`: all N steps of p(h^{n-1} | h^n) = q(h^{n-1} | h^n, hhat^0) (DDPM eqs. 6-7 with the
  model's hhat^0 in place of h^0); the last step's hhat^0 is rounded.
- `strided`: the deterministic DDIM update (Song et al. 2021, eq. 12 with sigma = 0) over k steps
  evenly spaced from N down to 1.
- `average`: DiffRec's efficient inference (Du et al. 2023): m independent h^N, denoised to m
  hhat^0 at step N by a single network call (m slots after the same history, which the DSR
  computes once); the m rounded distributions are averaged (mean of probabilities, returned as its
  log). The m draws are m separate (B, d) draws, as a loop of m calls would make them.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch

from diffrec.schedule import Schedule

SamplerKind = Literal["ancestral", "strided", "average"]
Denoise = Callable[[torch.Tensor, int], torch.Tensor]
Rounding = Callable[[torch.Tensor], torch.Tensor]
Mixture = Callable[[torch.Tensor], torch.Tensor]


def posterior_coefficients(sched: Schedule) -> list[tuple[float, float, float]]:
    """Per step n (index n): (coef of hhat^0, coef of h^n, std) of q(h^{n-1} | h^n, hhat^0), as
    Python floats read once per sampling call (no device round trip inside the loop)."""
    return list(zip(sched.posterior_coef_h0.tolist(), sched.posterior_coef_hn.tolist(), sched.posterior_var.sqrt().tolist()))


def ancestral_step(h_n: torch.Tensor, h0_hat: torch.Tensor, noise: torch.Tensor, coefs: tuple[float, float, float]) -> torch.Tensor:
    """h^{n-1} = mu~_n(h^n, hhat^0) + sqrt(beta~_n) noise   (DDPM eqs. 6-7), coefs of step n."""
    c_h0, c_hn, std = coefs
    return torch.add(h0_hat * c_h0, h_n, alpha=c_hn).add_(noise, alpha=std)


def ddim_step(sched: Schedule, h_n: torch.Tensor, n: int, n_prev: int, h0_hat: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update from step n to n_prev < n (eta = 0; n_prev = 0 returns hhat^0)."""
    eps_hat = (h_n - sched.sqrt_abar[n] * h0_hat) / sched.sqrt_one_minus_abar[n]
    return sched.sqrt_abar[n_prev] * h0_hat + sched.sqrt_one_minus_abar[n_prev] * eps_hat


def strided_steps(steps: int, k: int) -> list[int]:
    """k steps (at most N) evenly spaced from N down to 1, distinct, descending."""
    if k < 1:
        raise ValueError(f"sampler_steps must be >= 1, got {k}")
    return sorted({round(x) for x in torch.linspace(steps, 1, min(k, steps)).tolist()}, reverse=True)


@torch.inference_mode()
def ancestral(denoise: Denoise, rounding: Rounding, sched: Schedule, shape: tuple[int, int], generator: torch.Generator, device=None) -> torch.Tensor:
    coefs = posterior_coefficients(sched)
    h = torch.randn(shape, generator=generator, device=device)
    for n in range(sched.steps, 1, -1):
        h = ancestral_step(h, denoise(h, n), torch.randn(shape, generator=generator, device=device), coefs[n])
    return rounding(denoise(h, 1))


@torch.inference_mode()
def strided(denoise: Denoise, rounding: Rounding, sched: Schedule, shape: tuple[int, int], generator: torch.Generator, k: int, device=None) -> torch.Tensor:
    steps = strided_steps(sched.steps, k)
    h = torch.randn(shape, generator=generator, device=device)
    for n, n_prev in zip(steps[:-1], steps[1:]):
        h = ddim_step(sched, h, n, n_prev, denoise(h, n))
    return rounding(denoise(h, steps[-1]))


@torch.inference_mode()
def average(
    denoise: Denoise, rounding: Rounding, sched: Schedule, shape: tuple[int, int], generator: torch.Generator, m: int, device=None, mixture: Mixture | None = None
) -> torch.Tensor:
    """`mixture(hhat^0)`, if given: (B, m, d) -> (B, V) the log of the mean of the m rounded
    distributions, computed as the default (one rounding call, one logsumexp over m) but faster."""
    if m < 1:
        raise ValueError(f"samples must be >= 1, got {m}")
    h = torch.stack([torch.randn(shape, generator=generator, device=device) for _ in range(m)], dim=1)  # (B, m, d)
    h0 = denoise(h, sched.steps)  # (B, m, d)
    if mixture is not None:
        return mixture(h0)
    log_probs = rounding(h0.reshape(-1, h0.shape[-1])).view(h0.shape[0], m, -1)  # (B, m, V): one product for all m
    return torch.logsumexp(log_probs, dim=1).sub_(math.log(m))
