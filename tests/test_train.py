import numpy as np
import torch

from benchmark.registry import build_model
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, evaluate, fit, train_batches
from tests.synthetic import chain_dataset


def test_batches_cover_every_training_user_once_and_are_cut_to_their_longest():
    split = leave_one_out(chain_dataset(users=100))
    seen = []
    for b in train_batches(split, 16, np.random.default_rng(0)):
        assert b.inputs.shape == b.targets.shape
        assert (b.targets[:, 0] > 0).any()  # no all-padding leading column
        torch.testing.assert_close(b.inputs, split.train_inputs[b.users, -b.inputs.shape[1]:])
        seen += b.users.tolist()
    assert sorted(seen) == list(range(100))


def test_best_checkpoint_is_restored_and_runs_are_reproducible():
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=120))
    cfg = TrainConfig(epochs=6, eval_every=1, patience=10, batch_size=32, lr=3e-3)
    results = []
    for _ in range(2):
        model, _ = build_model("sasrec-ce", {"hidden": 16}, n_items=split.n_items, max_len=split.max_len, seed=3)
        fitted = fit(model, split, cfg, seed=3, progress=False)
        score = evaluate(model, split.valid)["metrics"]["NDCG@10"]
        best = max(p["valid"]["NDCG@10"] for p in fitted.curve)
        results.append((fitted.best_epoch, score, best))
    assert results[0] == results[1]  # same seed, same numbers
    best_epoch, score, best = results[0]
    assert abs(score - best) < 1e-9  # the restored model is the best validation checkpoint


def test_early_stopping_uses_patience():
    split = leave_one_out(chain_dataset(users=60))
    model, _ = build_model("sasrec-ce", {"hidden": 8}, n_items=split.n_items, max_len=split.max_len)
    fitted = fit(model, split, TrainConfig(epochs=50, eval_every=1, patience=2, lr=1e-9), seed=0, progress=False)
    assert fitted.epochs_run < 50 and fitted.stopped.startswith("patience")


def test_evaluate_reports_masked_and_unmasked_from_the_same_scores():
    split = leave_one_out(chain_dataset(users=50))
    model, _ = build_model("sasrec-ce", {"hidden": 8}, n_items=split.n_items, max_len=split.max_len)
    ev = evaluate(model, split.test, batch_size=7)
    assert (ev["ranks_masked"] <= ev["ranks"]).all()
    assert set(ev["metrics"]) == set(ev["metrics_masked"]) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
