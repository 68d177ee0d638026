"""Reports from run records: Holm correction, paired tests, the paper-layout tables (bold best,
underlined second, significance mark), the protocol card, figures and the generated README."""
import json
import warnings

import numpy as np
import pytest

from benchmark import report
from benchmark.metrics import metrics_from_ranks, per_user_metrics
from benchmark.records import write_json_atomic

N_USERS = 200


def test_holm_golden_values():
    np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(report.holm([0.5, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(report.holm([0.2]), [0.2])


def test_paired_pvalue():
    a = np.linspace(0, 1, 50)
    assert report.paired_pvalue(a, a) == 1.0
    assert report.paired_pvalue(a + 0.1, a) < 1e-6
    with pytest.raises(ValueError, match="same users"):
        report.paired_pvalue(a, a[:10])


def fake_record(dataset, model, seed, ranks, *, tag="default", config=None, curve=None, suite="demo", eval_seconds=1.0):
    ranks = np.asarray(ranks)
    masked = np.maximum(ranks - 1, 0)
    metrics = metrics_from_ranks(ranks)
    return {
        "key": f"{dataset}__{model}__{tag}__s{seed}__0000000000",
        "suite": suite,
        "tag": tag,
        "dataset": {"name": dataset, "users": 1000, "items": 500, "users_used": len(ranks), "sha256": f"{dataset}-sha"},
        "model": model,
        "model_about": f"{model} about",
        "seed": seed,
        "config": {"model": {"hidden": 16, **(config or {})}, "train": {"epochs": 3, "time_budget_s": 0.0}, "data": {}},
        "tuning": {},
        "protocol": {"split": "leave-one-out", "max_len": 50, "ranking": "full", "ties": "pessimistic", "masking": "both", "selection": "validation NDCG@10", "early_stopping": "patience 2"},
        "environment": {"git_commit": "abc123", "device": "cpu", "packages": {"torch": "2.13"}, "python": "3.11"},
        "finished_at": f"2026-01-01T00:00:0{seed}",
        "params": 12345,
        "timings": {"train_seconds": 10.0 + seed, "eval_seconds_test": eval_seconds},
        "curve": curve or [{"epoch": 1, "loss": 1.0, "valid": {"NDCG@10": 0.1}}, {"epoch": 2, "loss": 0.5, "valid": {"NDCG@10": 0.2}}],
        "metrics": {"valid": metrics, "test": metrics, "valid_masked": metrics_from_ranks(masked), "test_masked": metrics_from_ranks(masked)},
        "per_user": {"test_ranks": ranks.tolist(), "test_ranks_masked": masked.tolist()},
    }


@pytest.fixture
def results(tmp_path):
    """Two datasets, three seeds: on "good" diffrec is clearly best, on "tie" it equals sasrec-ce."""
    rng = np.random.default_rng(0)
    records = []
    for seed in range(3):
        base = rng.integers(0, 60, N_USERS)
        records += [
            fake_record("good", "diffrec", seed, base // 4),
            fake_record("good", "sasrec-ce", seed, base),
            fake_record("good", "pop", seed, base + 30),
            fake_record("tie", "diffrec", seed, base),
            fake_record("tie", "sasrec-ce", seed, base),
            fake_record("tie", "pop", seed, base + 30),
        ]
    records.append(fake_record("good", "svae", 0, base + 5, curve=[{"epoch": 1, "loss": 1.0, "active_units": 3, "valid": {"NDCG@10": 0.1}}]))
    for steps in (5, 50):
        for sampler in ("ancestral", "strided"):
            records.append(fake_record("good", "diffrec", 0, base // (2 if sampler == "strided" else 3), tag=f"steps={steps},sampler={sampler}", config={"steps": steps, "sampler": sampler, "sampler_steps": 5, "samples": 2}, eval_seconds=steps / 10))
    for noise in ("target", "sequence"):
        records.append(fake_record("good", "diffrec", 0, base // 2 + (3 if noise == "sequence" else 0), tag=f"noise={noise},sampler=strided", config={"noise": noise, "sampler": "strided"}))
    records.append(fake_record("good", "sasrec-ce", 0, base, suite="smoke"))
    for r in records:
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    return tmp_path


def test_tables_mark_best_second_and_significance(results):
    paths = report.write_report(results, suites=["demo"])
    md = (results / "tables" / "demo.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Model")}
    diffrec, sasrec, pop = (rows[m].strip("|").split(" | ") for m in ("diffrec", "sasrec-ce", "pop"))
    assert diffrec[5].startswith("**") and diffrec[5].endswith("†**")  # best and significant (good NDCG@10)
    assert sasrec[5].startswith("<u>") and not pop[5].startswith(("**", "<u>"))
    assert " ± " in diffrec[5] and "svae" in rows  # std over 3 seeds; a one-seed model says so
    assert "(n=1)" in rows["svae"]
    tie_columns = diffrec[9:15]
    assert not any("†" in c for c in tie_columns)  # equal per-user ranks: p = 1, no mark
    assert md.index("## Unmasked") < md.index("## History-masked") and md.count("Protocol card") == 2
    for needle in ("good-sha", "tie-sha", "abc123", "seeds**: 0, 1, 2", "pop: defaults (untuned)", "12.3K"):
        assert needle in md, needle
    tex = (results / "tables" / "demo.tex").read_text()
    for needle in (r"\toprule", r"\cmidrule(lr){2-9}", r"\cmidrule(lr){10-17}", r"\multicolumn{8}{c}{good}", r"\textbf{", r"\underline{", r"$^\dagger$", r"\bottomrule", "% datasets:"):
        assert needle in tex, needle
    sig = (results / "tables" / "demo_significance.csv").read_text()
    assert sig.count("\n") == 1 + 2 * 2 * 6  # header + 2 tables x 2 datasets x 6 metrics
    assert results / "README.md" in paths


def test_figures_and_readme(results):
    (results / report.DISCUSSION).write_text("DiffRec wins on good, ties on tie.\n")
    report.write_report(results)
    figures = results / "figures" / "demo"
    for name in ("ndcg_vs_steps", "noise_target_vs_sequence", "quality_vs_cost", "validation_curves", "diagnostics_svae"):
        assert (figures / f"{name}.png").stat().st_size > 1000 and (figures / f"{name}.pdf").exists(), name
    assert not (figures / "diagnostics_pop.png").exists()  # nothing beyond loss and validation to show
    readme = (results / "README.md").read_text()
    assert "## Suite `demo`" in readme and "## Suite `smoke`" in readme
    assert readme.index("DiffRec wins on good, ties on tie.") < readme.index("## Suite `demo`")  # the hand-written part leads
    assert "figures/demo/ndcg_vs_steps.png" in readme and "(figures/demo/ndcg_vs_steps.pdf)" in readme
    assert "Missing cells: unknown" in readme  # "demo" is not a packaged suite
    smoke = readme[readme.index("## Suite `smoke`") :]
    assert "Missing cells (" in smoke and "- ml-100k / diffrec / noise=sequence,sampler=strided: seed 0\n" in smoke
    ablations = (results / "tables" / "demo_ablations.md").read_text()
    assert "steps=50,sampler=strided" in ablations and "noise=sequence,sampler=strided" in ablations
    # each ablation row sits beside its main cell on the same seeds, with a paired test
    (row,) = [line for line in ablations.splitlines() if "noise=sequence,sampler=strided" in line]
    recs = {r["tag"]: r for r in (json.loads(p.read_text()) for p in (results / "runs").glob("good__diffrec__*__s0__*.json"))}
    per_user = {tag: per_user_metrics(recs[tag]["per_user"]["test_ranks"])["NDCG@10"] for tag in ("default", "noise=sequence,sampler=strided")}
    p = report.paired_pvalue(per_user["noise=sequence,sampler=strided"], per_user["default"])
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert f"{recs['default']['metrics']['test']['NDCG@10']:.4f}" in cells and f"{p:.2g}" in cells and p < 0.05
    assert cells[-1] == "cpu"  # where its timing was taken
    # target against sequence noising: the pair side by side, tested against each other
    noise = ablations[ablations.index("## Target-only against whole-sequence noising") :]
    (row,) = [line for line in noise.splitlines() if line.startswith("| good")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    target, sequence = (per_user_metrics(recs[f"noise={n},sampler=strided"]["per_user"]["test_ranks"])["NDCG@10"] for n in ("target", "sequence"))
    p = report.paired_pvalue(sequence, target)
    assert cells[:4] == ["good", "diffrec", "sampler=strided", "1"] and p < 0.05
    assert cells[4:7] == [f"{target.mean():.4f}", f"{sequence.mean():.4f}", f"{p:.2g}"]
    first = {p: p.read_bytes() for p in figures.iterdir()}
    report.write_report(results)
    assert {p: p.read_bytes() for p in figures.iterdir()} == first  # regenerating changes nothing


def test_cli_without_records_fails_clearly(tmp_path, capsys):
    assert report.main(["--out", str(tmp_path)]) == 2
    assert "no run records" in capsys.readouterr().err


def test_a_record_counts_for_every_suite_that_holds_its_cell(tmp_path):
    """Suites share cells (pop's, say): membership is by cell key, not by the suite that wrote it."""
    from benchmark.suite import load_suite_file, resolve_suite

    cell = resolve_suite(*load_suite_file("smoke")).cells[0]
    rng = np.random.default_rng(1)
    shared = {**fake_record(cell.dataset, cell.model, cell.seed, rng.integers(0, 60, N_USERS), suite="quick", tag=cell.tag), "key": cell.key}
    stale = {**fake_record(cell.dataset, cell.model, cell.seed, rng.integers(0, 60, N_USERS), suite="smoke", tag=cell.tag), "key": "old__config__0000000000"}
    stale["finished_at"] = "2027-01-01T00:00:00"  # newer, but no longer a cell of the suite
    for r in (shared, stale):
        write_json_atomic(tmp_path / "runs" / f"{r['key']}.json", r)
    report.write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    smoke = readme[readme.index("## Suite `smoke`") :]
    assert smoke.startswith("## Suite `smoke`\n\n1 run records")
    missing = smoke[smoke.index("Missing cells") :]
    assert f"- {cell.dataset} / {cell.model} / {cell.tag}:" not in missing  # its one seed has a record
    other = resolve_suite(*load_suite_file("smoke")).cells[1]
    assert f"- {other.dataset} / {other.model} / {other.tag}: seed {other.seed}\n" in missing
    quick = readme[readme.index("## Suite `quick`") :]
    assert quick.startswith("## Suite `quick`\n\n0 run records")  # it wrote the record, but holds no such cell


def test_the_protocol_card_names_the_datasets_where_tuning_differs():
    # studies are per dataset: a model tuned on beauty and run with defaults on toys must say both
    assert report.tuning_per_dataset({"beauty": "8 trials (study s)", "toys": "defaults (untuned)"}) == "beauty 8 trials (study s), toys defaults (untuned)"
    assert report.tuning_per_dataset({"beauty": "defaults (untuned)", "toys": "defaults (untuned)"}) == "defaults (untuned)"


def test_natural_order_of_settings():
    tags = ["sampler_steps=10", "sampler_steps=2", "steps=1000", "steps=50", "hidden=128", "steps=2"]
    assert sorted(tags, key=report.natural_key) == ["hidden=128", "sampler_steps=2", "sampler_steps=10", "steps=2", "steps=50", "steps=1000"]


def test_missing_cells_are_grouped_with_their_seeds_in_suite_order():
    from types import SimpleNamespace

    cells = [SimpleNamespace(dataset=d, model=m, tag=t, seed=s, key=f"{d}{m}{t}{s}") for d, m, t, s in
             [("toys", "pop", "default", 0), ("beauty", "diffrec", "steps=2", 0), ("toys", "pop", "default", 1), ("toys", "pop", "default", 2)]]
    done = {"toyspopdefault1"}
    assert report.missing_cells(cells, done) == {"toys / pop / default": [0, 2], "beauty / diffrec / steps=2": [0]}
    assert report.missing_cells(cells, {c.key for c in cells}) == {}
    assert report.missing_cells(None, done) is None


def test_compare_two_sets_of_records_seed_by_seed_and_averaged(results, capsys):
    text = report.compare(results, "good__diffrec__default__s*", "good__sasrec-ce__default__s*")
    recs = [{r["seed"]: r for r in (json.loads(p.read_text()) for p in sorted((results / "runs").glob(f"good__{m}__default__s*")))} for m in ("diffrec", "sasrec-ce")]
    a, b = (np.mean([per_user_metrics(side[s]["per_user"]["test_ranks"])["NDCG@10"] for s in range(3)], axis=0) for side in recs)
    (mean_row,) = [line for line in text.splitlines() if "mean of 3" in line]
    cells = [c.strip() for c in mean_row.strip("|").split("|")]
    assert cells[1:4] == [f"{a.mean():.4f}", f"{b.mean():.4f}", f"{report.paired_pvalue(a, b):.2g}"]
    assert sum(line.startswith("| 0 ") or line.startswith("| 1 ") or line.startswith("| 2 ") for line in text.splitlines()) == 3
    with pytest.raises(ValueError, match="matches no run record"):
        report.compare(results, "nothing__*", "good__sasrec-ce__default__s*")
    with pytest.raises(ValueError, match="two records of seed 0"):
        report.compare(results, "good__diffrec__*", "good__sasrec-ce__default__s*")
    assert report.main(["--out", str(results), "--compare", "good__svae__*", "good__pop__*"]) == 0  # seed 0 only: no mean row
    assert "mean of" not in capsys.readouterr().out
    assert report.main(["--out", str(results), "--compare", "tie__*", "good__pop__*"]) == 2
    assert "two records of seed" in capsys.readouterr().err


def test_cost_points_keep_devices_apart():
    records = [fake_record("good", "diffrec", seed, [0] * N_USERS, eval_seconds=seconds) for seed, seconds in ((0, 2.0), (1, 4.0), (2, 0.02))]
    records[2]["environment"]["device"] = "NVIDIA H200"
    points = report.cost_points(report.records_frame(records)).set_index("device")
    assert points.loc["cpu", "seeds"] == 2 and points.loc["NVIDIA H200", "seeds"] == 1
    assert points.loc["cpu", "cost"] == pytest.approx(3.0 / N_USERS * 1000)  # the mean of the CPU's two, not of all three
    assert points.loc["NVIDIA H200", "cost"] == pytest.approx(0.02 / N_USERS * 1000)


def test_a_dataset_where_no_model_trained_gets_no_curve_panel(tmp_path):
    records = [fake_record("ml", "pop", 0, np.arange(N_USERS)), fake_record("toy", "sasrec-ce", 0, np.arange(N_USERS))]
    records[0]["curve"] = []  # popularity does not train
    frame = report.records_frame(records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty panel's legend warns
        paths = report.figure_curves(frame, records, tmp_path)
    assert paths and report.figure_curves(frame[frame.model == "pop"], records, tmp_path) == []
