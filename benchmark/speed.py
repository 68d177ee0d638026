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
import torch.nn.functional as F

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


def diffrec_denoiser_call(model, seqs: torch.Tensor, n: int | None = None, cached: bool | None = None) -> Callable[[], torch.Tensor]:
    """One call of DiffRec's denoiser for one step n (default N) of the reverse process, with its
    inputs prepared once, outside the timed call. cached=None: the call `DiffRec.score` makes per
    step (the slot alone over the history encoded once, when the model's history is static);
    False: the full two-stream pass over history and slot (the training computation)."""
    seqs = seqs[:, -(model.max_len - 1) :]
    B, w = seqs.shape
    history, keep = model.embed(seqs), seqs > 0
    cols = torch.tensor([w - 1], device=seqs.device)
    positions = position_ids(w + 1, model.max_len, seqs.device)
    steps = torch.full((1,), n or model.cfg.steps, dtype=torch.long, device=seqs.device)  # as `DiffRec.score`: one z_n, broadcast
    noisy = torch.randn(B, 1, model.cfg.hidden, device=seqs.device)
    if model.history_is_static if cached is None else cached:
        cache = model.dsr.encode_history(history, keep, positions)
        return lambda: model.dsr.denoise_slots(cache, history, keep, noisy, cols, steps, positions)
    return lambda: model.dsr(history, keep, noisy, cols, steps, positions)


def yardstick(batch: int, tokens: int, d: int, layers: int, heads: int, n_items: int, roundings: int, *, device="cpu") -> Callable[[], torch.Tensor]:
    """The unit of the throughput ratios: the textbook computation with the shapes of one scoring
    call, written with torch.nn.functional alone and kept fixed. `layers` pre-LayerNorm Transformer
    blocks (fused QKV, 4d GELU feed-forward) over (batch, tokens, d) with a boolean
    (batch, 1, tokens, tokens) mask, then `roundings` log-softmax scorings of the last position over
    n_items + 1 items. A model's time over this one is its overhead over the plain computation;
    how fast the machine runs these kernels (a big scoring GEMM against many small ops) cancels
    out of the ratio, which a ratio of two different models does not do."""
    g = torch.Generator().manual_seed(0)

    def w(*shape):
        return (0.02 * torch.randn(*shape, generator=g)).to(device)

    blocks = [(w(3 * d, d), w(d, d), w(4 * d, d), w(d, 4 * d)) for _ in range(layers)]
    items = w(n_items + 1, d)
    x0 = torch.randn(batch, tokens, d, generator=g).to(device)
    mask = torch.ones(tokens, tokens, dtype=torch.bool, device=device).tril().expand(batch, 1, tokens, tokens)

    def run() -> torch.Tensor:
        x = x0
        for qkv, out, up, down in blocks:
            q, k, v = F.linear(F.layer_norm(x, (d,)), qkv).view(batch, tokens, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(batch, tokens, d), out)
            x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, (d,)), up)), down)
        last = F.layer_norm(x[:, -1], (d,))
        for _ in range(roundings):
            scores = F.log_softmax(last @ items.T, dim=-1)
        return scores if roundings else last

    return run
