"""Inference throughput: users scored per second by DiffRec's samplers, SASRec and DiffuRec.

N is the number of denoiser calls per user for the loop samplers: `ancestral` runs a chain of
N steps, `strided` runs N of the 1000 steps of a 1000-step chain (DDIM), DiffuRec runs its N-step
chain. DiffRec encodes each user's history once and then runs only the slot per step (its
defaults); `average` makes one call with m (default) slots at step N whatever N is, so its line is
flat in N.
Every case scores the same fixed random sample of test users (cut to their longest history) under
`torch.inference_mode()`, as the protocol's evaluator does; the models are freshly initialised
(throughput does not depend on the weights).
"""
from __future__ import annotations

import pytest
import torch

from benchmark.registry import build_model
from benchmark.speed import diffrec_denoiser_call, user_batch
from tests.benchmarks.settings import DEVICE, MAX_ROWS

NS = (10, 50, 200, 1000)
BATCHES = (256, 1024)
CHAIN = 1000  # chain length the strided sampler strides over


def scorer(name: str, cfg: dict, split, seqs):
    model, _ = build_model(name, cfg, n_items=split.n_items, max_len=split.max_len)
    model.to(DEVICE).eval()
    generator = torch.Generator(device=DEVICE).manual_seed(0)

    def score():
        with torch.inference_mode():
            return model.score(seqs, generator=generator)

    return score


def skip_if_too_long(enabled: bool, n: int, batch: int) -> None:
    if enabled and n * batch > MAX_ROWS:
        pytest.skip(f"N x batch = {n * batch} > BENCH_MAX_ROWS = {MAX_ROWS}")


def rounds_for(n: int, batch: int) -> int:
    return 3 if n * batch <= 12800 else 1


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def test_sasrec_scoring(bench, split, size, batch):
    seqs = user_batch(split.test, size.batch(batch), device=DEVICE)
    scores = bench(scorer("sasrec-ce", size.model({}), split, seqs), rounds=5, model="sasrec-ce", users=len(seqs), n=1)
    assert scores.shape == (len(seqs), split.n_items + 1)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("n", NS, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("sampler", ("ancestral", "strided", "average"))
def test_diffrec_sampling(bench, split, size, enabled, sampler, n, batch):
    if sampler != "average":
        skip_if_too_long(enabled, n, batch)
    cfg = {"sampler": sampler, "steps": size.steps(n)}
    if sampler == "strided":
        cfg = {"sampler": sampler, "steps": size.steps(CHAIN), "sampler_steps": size.steps(n)}
    seqs = user_batch(split.test, size.batch(batch), device=DEVICE)
    score = scorer("diffrec", size.model(cfg), split, seqs)
    scores = bench(score, rounds=rounds_for(n, batch), model="diffrec", sampler=sampler, users=len(seqs), n=n)
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def test_diffrec_denoiser_call(bench, split, size, batch):
    """One denoiser call as the samplers make it per step, the unit of the target time(N=1000) <= 1.1 x 1000 x one call."""
    model, _ = build_model("diffrec", size.model({}), n_items=split.n_items, max_len=split.max_len)
    model.to(DEVICE).eval()
    seqs = user_batch(split.test, size.batch(batch), device=DEVICE)
    with torch.inference_mode():
        call = diffrec_denoiser_call(model, seqs)
        out = bench(call, rounds=10, model="diffrec", sampler="denoiser-call", users=len(seqs), n=1)
    assert out.shape == (len(seqs), 1, model.cfg.hidden)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("n", NS, ids=lambda n: f"N{n}")
def test_diffurec_sampling(bench, split, size, enabled, n, batch):
    skip_if_too_long(enabled, n, batch)
    seqs = user_batch(split.test, size.batch(batch), device=DEVICE)
    score = scorer("diffurec", size.model({"steps": size.steps(n)}), split, seqs)
    scores = bench(score, rounds=rounds_for(n, batch), model="diffurec", sampler="diffurec", users=len(seqs), n=n)
    assert torch.isfinite(scores[:, 1:]).all()
