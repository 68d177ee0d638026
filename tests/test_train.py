import numpy as np
import pytest
import torch

from benchmark.config import ConfigError, build_config
from benchmark.records import RecordError
from benchmark.registry import build_model
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, evaluate, fit, fit_rules, train_batches
from tests.synthetic import chain_dataset, untimed


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


def test_no_early_stop_before_min_epochs():
    """A run that gains nothing (lr ~ 0) stops after `patience` evaluations without min_epochs, and
    at min_epochs with it: slow starters are not cut."""
    split = leave_one_out(chain_dataset(users=60))
    runs = {}
    for min_epochs in (0, 7):
        model, _ = build_model("sasrec-ce", {"hidden": 8}, n_items=split.n_items, max_len=split.max_len, seed=0)
        fitted = fit(model, split, TrainConfig(epochs=50, eval_every=1, patience=2, min_epochs=min_epochs, lr=1e-12), seed=0, progress=False)
        assert fitted.stopped.startswith("patience"), fitted.stopped
        runs[min_epochs] = fitted.epochs_run
    assert runs == {0: 3, 7: 7}
    with pytest.raises(ValueError, match="min_epochs must be from 0 to epochs"):
        TrainConfig(epochs=10, min_epochs=11)


def test_selection_masked_stops_and_selects_on_the_history_masked_ndcg():
    """Both validation NDCG@10s go into every curve point; `selection` decides which one early
    stopping, `on_eval` and the restored checkpoint follow."""
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=120))
    runs = {}
    for selection in ("unmasked", "masked"):
        model, _ = build_model("sasrec-ce", {"hidden": 16}, n_items=split.n_items, max_len=split.max_len, seed=3)
        seen = []
        cfg = TrainConfig(epochs=6, eval_every=1, patience=10, batch_size=32, lr=3e-3, selection=selection)
        fitted = fit(model, split, cfg, seed=3, progress=False, on_eval=lambda epoch, score: seen.append(score))
        runs[selection] = fitted, seen, evaluate(model, split.valid)
    curve = runs["unmasked"][0].curve
    same = [untimed(runs[s][0].curve) for s in runs]
    assert same[0] == same[1]  # selection changes no training draw: the two runs train alike
    unmasked = [p["valid"]["NDCG@10"] for p in curve]
    masked = [p["valid_masked"]["NDCG@10"] for p in curve]
    assert masked != unmasked  # the chain's history items rank high, so masking changes the scores
    for selection, scores in (("unmasked", unmasked), ("masked", masked)):
        fitted, seen, ev = runs[selection]
        assert seen == scores
        assert fitted.best_epoch == curve[int(np.argmax(scores))]["epoch"]
        restored = ev["metrics" if selection == "unmasked" else "metrics_masked"]["NDCG@10"]
        assert abs(restored - max(scores)) < 1e-9
    with pytest.raises(ConfigError, match="selection"):
        build_config(TrainConfig, {"selection": "test"}, where="train")


def test_one_training_under_both_rules_gives_each_rule_its_own_run(tmp_path):
    """`fit_rules` trains once until both rules have stopped; each rule's history, stop and best
    parameters are exactly those of a run with that rule alone, an interruption included."""
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=120))
    base = dict(epochs=14, eval_every=1, patience=2, batch_size=32, lr=3e-3)
    alone = {}
    for selection in ("unmasked", "masked"):
        model, _ = build_model("sasrec-ce", {"hidden": 16}, n_items=split.n_items, max_len=split.max_len, seed=3)
        fitted = fit(model, split, TrainConfig(**base, selection=selection), seed=3, progress=False)
        alone[selection] = fitted, model.state_dict()
    assert alone["unmasked"][0].epochs_run != alone["masked"][0].epochs_run  # the rules stop apart: the longer run goes on past the other's stop

    def both(snapshot=None, stop_at=None):
        model, _ = build_model("sasrec-ce", {"hidden": 16}, n_items=split.n_items, max_len=split.max_len, seed=3)

        def on_eval(epoch, _):
            if epoch == stop_at:
                raise Interrupted

        return fit_rules(model, split, TrainConfig(**base), ("masked", "unmasked"), seed=3, progress=False, on_eval=on_eval, snapshot=snapshot, snapshot_tag={"run": "t"})

    snap = tmp_path / "snap.pt"
    with pytest.raises(Interrupted):
        both(snap, stop_at=2)
    for joint, resumed_at in ((both(), []), (both(snap), [2])):
        assert set(joint) == {"unmasked", "masked"} and all(fitted.resumed_at == resumed_at for fitted, _ in joint.values())
        for selection, (fitted, best_state) in joint.items():
            solo, solo_state = alone[selection]
            assert untimed(fitted.curve) == untimed(solo.curve) and len(fitted.epoch_seconds) == solo.epochs_run
            assert (fitted.best_epoch, fitted.epochs_run, fitted.stopped) == (solo.best_epoch, solo.epochs_run, solo.stopped)
            for key, value in solo_state.items():
                torch.testing.assert_close(best_state[key], value, rtol=0, atol=0, msg=key)
    again = both(snap)  # finished: nothing trains again
    assert {s: (f.resumed_at, f.epoch_seconds) for s, (f, _) in again.items()} == {s: ([2, f.epochs_run], f.epoch_seconds) for s, (f, _) in joint.items()}
    with pytest.raises(ValueError, match="cfg.selection"):
        fit_rules(model, split, TrainConfig(**base, selection="masked"), ("unmasked",), seed=3)


@pytest.mark.parametrize("name", ["sasrec-ce", "mfgan"])
def test_adam_beta2_reaches_every_optimizer(tmp_path, name):
    split = leave_one_out(chain_dataset(users=40))
    snap = tmp_path / "snap.pt"
    for beta2 in (0.999, 0.98):
        model, _ = build_model(name, {"hidden": 8}, n_items=split.n_items, max_len=split.max_len, seed=0)
        fit(model, split, TrainConfig(epochs=1, batch_size=16, adam_beta2=beta2), seed=0, progress=False, snapshot=snap, snapshot_tag={"beta2": beta2})
        optimizers = torch.load(snap, weights_only=True)["optimizers"]
        assert len(optimizers) == (2 if name == "mfgan" else 1)
        assert all(group["betas"] == (0.9, beta2) for opt in optimizers for group in opt["param_groups"])
    with pytest.raises(ValueError, match="adam_beta2"):
        TrainConfig(adam_beta2=1.0)


def test_evaluate_reports_masked_and_unmasked_from_the_same_scores():
    split = leave_one_out(chain_dataset(users=50))
    model, _ = build_model("sasrec-ce", {"hidden": 8}, n_items=split.n_items, max_len=split.max_len)
    ev = evaluate(model, split.test, batch_size=7)
    assert (ev["ranks_masked"] <= ev["ranks"]).all()
    assert set(ev["metrics"]) == set(ev["metrics_masked"]) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}


class Interrupted(Exception):
    pass


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("sasrec-ce", {}),
        ("diffrec", {"step_sampling": "importance", "steps": 4}),  # the sampler's loss history must survive
        ("mfgan", {"pretrain_epochs": 2}),  # the interruption falls on the switch to adversarial training
        ("svae", {}),
    ],
)
def test_an_interrupted_training_resumes_from_its_snapshot_and_ends_the_same(tmp_path, name, overrides):
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=80))
    cfg = TrainConfig(epochs=5, eval_every=1, patience=10, batch_size=16, lr=3e-3)

    def trained(snapshot=None, stop_at=None):
        model, _ = build_model(name, {"hidden": 8, **overrides}, n_items=split.n_items, max_len=split.max_len, seed=1)

        def on_eval(epoch, _):
            if epoch == stop_at:
                raise Interrupted

        try:
            fitted = fit(model, split, cfg, seed=1, progress=False, on_eval=on_eval, snapshot=snapshot, snapshot_tag={"run": "t"})
        except Interrupted:
            return None, model
        return fitted, model

    straight, model_a = trained()
    snap = tmp_path / "snap.pt"
    assert trained(snap, stop_at=2)[0] is None and snap.exists()  # killed after epoch 2's evaluation
    resumed, model_b = trained(snap)
    assert resumed.resumed_at == [2] and straight.resumed_at == []
    assert untimed(resumed.curve) == untimed(straight.curve) and len(resumed.epoch_seconds) == 5
    assert (resumed.best_epoch, resumed.epochs_run, resumed.stopped) == (straight.best_epoch, straight.epochs_run, straight.stopped)
    for key, value in model_a.state_dict().items():
        torch.testing.assert_close(model_b.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_snapshot_with_another_tag_is_ignored_and_a_finished_one_trains_no_more(tmp_path):
    split = leave_one_out(chain_dataset(users=60))
    cfg = TrainConfig(epochs=3, eval_every=1, patience=10, batch_size=16)
    snap = tmp_path / "snap.pt"
    model, _ = build_model("sasrec-ce", {"hidden": 8}, n_items=split.n_items, max_len=split.max_len, seed=0)
    first = fit(model, split, cfg, seed=0, progress=False, snapshot=snap, snapshot_tag={"code": "a"})
    assert first.stopped == "epoch budget" and snap.exists()
    again = fit(model, split, cfg, seed=0, progress=False, snapshot=snap, snapshot_tag={"code": "a"})
    assert again.resumed_at == [3] and again.epoch_seconds == first.epoch_seconds  # nothing retrained
    other = fit(model, split, cfg, seed=0, progress=False, snapshot=snap, snapshot_tag={"code": "b"})
    assert other.resumed_at == [] and other.epoch_seconds != first.epoch_seconds  # trained from the start
    snap.write_bytes(b"damaged")
    with pytest.raises(RecordError, match="snap.pt: cannot load this training snapshot"):
        fit(model, split, cfg, seed=0, progress=False, snapshot=snap)
