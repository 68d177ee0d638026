"""Evaluation throughput: users per second of the protocol's full-ranking evaluation
(`benchmark.train.evaluate`: score every test user, rank the target among all items, unmasked and
history-masked) of all beauty test users. RecBole 1.2.1's full-sort evaluation of the same data took
17 s on this machine; the target is at least 3x faster."""
from __future__ import annotations

import pytest

from benchmark.registry import build_model
from benchmark.train import evaluate
from tests.benchmarks.settings import DEVICE


@pytest.mark.parametrize("name", ("sasrec-ce", "diffrec"))
def test_full_ranking_evaluation(bench, split, size, enabled, name):
    model, _ = build_model(name, size.model({}), n_items=split.n_items, max_len=split.max_len)
    model.to(DEVICE)
    users = len(split.test.targets)
    result = bench(lambda: evaluate(model, split.test, device=DEVICE), rounds=3 if name == "sasrec-ce" else 1, model=name, users=users)
    assert len(result["ranks"]) == users
