"""Timing helpers shared by the throughput benchmarks (`tests/benchmarks/`) and the throughput
regression check (`benchmark.regress`).

Absolute wall times on a shared machine are noise; what the project tracks are ratios of times
measured in one process, interleaved, each the best of a few repeats. On a CPU with one torch
thread the clock is the process's CPU time (`time.process_time`): it does not count the time the
process waits for a core that other work holds, so it stays close to the wall time of a quiet
machine (measured here: a beauty evaluation took 47 s wall and 8.0 s CPU under load ~10 on 2
cores, and 7.4 s wall on a lighter load). On a GPU the clock is the wall time and every timed
region ends with `torch.cuda.synchronize()`.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from benchmark.layers import position_ids
from benchmark.splits import EvalSet


def synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def user_batch(evalset: EvalSet, size: int, *, seed: int = 0, device="cpu") -> torch.Tensor:
    """A fixed random sample of `size` users' histories (with replacement only if there are fewer
    users), cut to the longest of them: (size, w) left-padded."""
    g = torch.Generator().manual_seed(seed)
    n = len(evalset.targets)
    users = torch.randperm(n, generator=g)[:size] if size <= n else torch.randint(0, n, (size,), generator=g)
    seqs = evalset.inputs[users]
    width = max(1, int((seqs > 0).sum(1).max()))
    return seqs[:, -width:].to(device)


def clock(device="cpu") -> Callable[[], float]:
    """CPU time of this process on a CPU (use one torch thread), wall time on a GPU."""
    return time.perf_counter if str(device).startswith("cuda") else time.process_time


def diffrec_denoiser_call(model, seqs: torch.Tensor, n: int | None = None) -> Callable[[], torch.Tensor]:
    """One call of DiffRec's denoiser (`model.dsr`) exactly as `DiffRec.score` makes it for one
    step n (default N) of the reverse process: inputs prepared once, outside the timed call."""
    seqs = seqs[:, -(model.max_len - 1) :]
    B, w = seqs.shape
    history, keep = model.embed(seqs), seqs > 0
    cols = torch.tensor([w - 1], device=seqs.device)
    positions = position_ids(w + 1, model.max_len, seqs.device)
    steps = torch.full((B,), n or model.cfg.steps, dtype=torch.long, device=seqs.device)
    noisy = torch.randn(B, 1, model.cfg.hidden, device=seqs.device)
    return lambda: model.dsr(history, keep, noisy, cols, steps, positions)
