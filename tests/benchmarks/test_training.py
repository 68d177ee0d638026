"""Training throughput: sequences per second of sasrec-ce, sasrec-ss (256 sampled negatives) and
diffrec on beauty, batch 256.

One round times a fixed sample of the batches of one epoch (every k-th batch of the epoch's
batches sorted by width, so short and long batches are represented as in a whole epoch), each a
full `training_step` (forward, backward, Adam). The seconds of a whole epoch are extrapolated as
time x (batches in the epoch / batches timed); `benchmark.bench_report` prints that estimate.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.registry import build_model
from benchmark.train import train_batches
from tests.benchmarks.settings import DEVICE

BATCH = 256  # RecBole's SASRec comparison run used batch 256, hidden 64, 2 layers, 2 heads, max_len 50
TIMED_BATCHES = 16


def epoch_sample(split, batch_size: int, k: int) -> tuple[list, int]:
    """-> (k batches spread over one epoch's batches ordered by width, batches in the epoch)."""
    batches = sorted(train_batches(split, batch_size, np.random.default_rng(0)), key=lambda b: b.inputs.shape[1])
    picks = np.linspace(0, len(batches) - 1, min(k, len(batches))).round().astype(int)
    return [batches[i].to(DEVICE) for i in picks], len(batches)


@pytest.mark.parametrize("name", ("sasrec-ce", "sasrec-ss", "diffrec"))
def test_training_throughput(bench, split, size, enabled, name):
    model, _ = build_model(name, size.model({}), n_items=split.n_items, max_len=split.max_len)
    model.to(DEVICE).train()
    model.fit_statistics(list(split.train_sequences))
    optimizers = model.configure_optimizers(1e-3, 0.0)
    sample, epoch_batches = epoch_sample(split, size.batch(BATCH), TIMED_BATCHES if enabled else 2)

    def steps():
        return [model.training_step(b, optimizers)["loss"] for b in sample]

    losses = bench(
        steps,
        rounds=2,
        model=name,
        batches=len(sample),
        sequences=sum(len(b.users) for b in sample),
        targets=sum(int((b.targets > 0).sum()) for b in sample),
        epoch_batches=epoch_batches,
        epoch_sequences=int((split.train_lengths > 0).sum()),
        epoch_targets=int((split.train_targets > 0).sum()),
    )
    assert np.isfinite(losses).all()
