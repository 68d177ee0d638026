"""The logic of the CI regression checks (benchmark.regress), on hand-made run records."""
import math

import pytest

from benchmark.regress import build_reference, compare_metrics, compare_ratios, tolerances


def record(model: str, seed: int, ndcg10: float, hr10: float = 0.1, users: int = 100, tag: str = "default") -> dict:
    block = {"HR@10": hr10, "NDCG@10": ndcg10}
    return {
        "key": f"ml-100k__{model}__{tag}__s{seed}__abc",
        "dataset": {"name": "ml-100k", "users_used": users},
        "model": model,
        "tag": tag,
        "seed": seed,
        "metrics": {split: dict(block) for split in ("valid", "test", "valid_masked", "test_masked")},
    }


SUITE = [record("sasrec-ce", 0, 0.10), record("pop", 0, 0.05)]
OTHER_SEEDS = [record("sasrec-ce", s, v) for s, v in zip(range(1, 5), [0.12, 0.11, 0.13, 0.09])] + [record("pop", s, 0.05) for s in range(1, 5)]


def test_tolerance_is_k_std_over_seeds_with_a_one_user_floor():
    tol = tolerances({"g": [{"m": 0.10}, {"m": 0.12}, {"m": 0.11}, {"m": 0.13}, {"m": 0.09}], "flat": [{"m": 0.5}] * 3}, {"g": 0.001, "flat": 0.01}, k=4)
    assert tol["g"]["m"] == pytest.approx(4 * 0.015811388, rel=1e-6)  # sample std of the five values
    assert tol["flat"]["m"] == 0.01  # no variation over seeds: the floor


def test_reference_holds_the_suite_run_values_and_per_group_tolerances():
    ref = build_reference(SUITE, OTHER_SEEDS)
    assert set(ref["cells"]) == {"ml-100k/sasrec-ce/default/s0", "ml-100k/pop/default/s0"}
    assert ref["cells"]["ml-100k/sasrec-ce/default/s0"]["metrics"]["test/NDCG@10"] == 0.10
    assert ref["tolerance"]["ml-100k/pop/default"]["test/NDCG@10"] == pytest.approx(1 / 100)
    assert ref["tolerance"]["ml-100k/sasrec-ce/default"]["test/NDCG@10"] == pytest.approx(4 * 0.015811388, rel=1e-6)
    assert ref["tolerance_seeds"] == [0, 1, 2, 3, 4]


def test_rerun_within_tolerance_passes():
    ref = build_reference(SUITE, OTHER_SEEDS)
    rerun = [record("sasrec-ce", 0, 0.10 + 0.05), record("pop", 0, 0.05 + 0.009)]  # tolerances 0.063 and 0.01
    failures, worst = compare_metrics(ref, rerun)
    assert failures == []
    assert 0.5 < worst < 1


def test_drifted_metric_fails_naming_cell_and_metric():
    ref = build_reference(SUITE, OTHER_SEEDS)
    drifted = record("pop", 0, 0.05)
    drifted["metrics"]["test_masked"]["HR@10"] = 0.2  # tolerance 0.01
    failures, _ = compare_metrics(ref, [record("sasrec-ce", 0, 0.10), drifted])
    assert len(failures) == 1
    assert "ml-100k/pop/default/s0" in failures[0] and "test_masked/HR@10" in failures[0]


def test_nan_metric_fails():
    ref = build_reference(SUITE, OTHER_SEEDS)
    failures, _ = compare_metrics(ref, [record("sasrec-ce", 0, math.nan), record("pop", 0, 0.05)])
    assert any("sasrec-ce" in f and "NDCG@10" in f for f in failures)


def test_new_missing_and_changed_cells_fail():
    ref = build_reference(SUITE, OTHER_SEEDS)
    changed = record("pop", 0, 0.05)
    changed["key"] = "ml-100k__pop__default__s0__other"
    failures, _ = compare_metrics(ref, [changed, record("diffrec", 0, 0.1)])
    text = "\n".join(failures)
    assert "ml-100k/pop/default/s0: resolved settings changed" in text
    assert "ml-100k/diffrec/default/s0: no reference" in text
    assert "ml-100k/sasrec-ce/default/s0: in the reference but not produced" in text


def test_throughput_ratio_fails_beyond_25_percent_only():
    ref = {"step": 1.0, "eval": 2.0}
    assert compare_ratios(ref, {"step": 1.24, "eval": 1.0}) == []  # faster is never a regression
    (failure,) = compare_ratios(ref, {"step": 1.0, "eval": 2.6})
    assert failure.startswith("throughput: eval = 2.600, reference 2.000 (+30%")
    assert compare_ratios(ref, {"step": 1.0}) == ["throughput: ratio eval was not measured"]


def test_throughput_ratios_measure_every_checked_ratio_against_the_reference_names():
    """measure_ratios on tiny synthetic data: every ratio the committed reference checks is measured,
    positive and finite, so a renamed or broken measurement fails here rather than in CI's check."""
    import json

    from benchmark.regress import REFERENCE_DIR, measure_ratios
    from benchmark.splits import leave_one_out
    from tests.synthetic import chain_dataset

    ratios, targets, seconds = measure_ratios(leave_one_out(chain_dataset()), batch=8, steps=3, eval_users=16, rounds=1)
    reference = json.loads((REFERENCE_DIR / "throughput.json").read_text())
    assert set(ratios) == set(reference["ratios"])
    assert set(targets) == {"average_per_sasrec_score", "diffrec_step_per_sasrec_score", "full_denoiser_pass_per_step_call", "denoiser_call_per_yardstick"}
    assert all(math.isfinite(v) and v > 0 for v in [*ratios.values(), *targets.values(), *seconds.values()])
