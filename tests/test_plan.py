"""`python -m benchmark.run --suite NAME --plan`: the work left and its estimate from OUT's records."""
import json

import optuna

from benchmark import run
from benchmark.plan import Profile, Row, cost, plan_rows, profiles, trial_epoch_seconds, trials_done
from benchmark.records import device_kind


def fake_record(dataset, model, device, per_epoch, epochs, valid_s, test_s, reused=False):
    return {  # what records.read_record requires, and the timings the plan reads
        "key": f"{dataset}__{model}__{device}__{per_epoch}",
        "seed": 0,
        "config": {},
        "metrics": {"test": {}},
        "dataset": {"name": dataset},
        "model": model,
        "environment": {"device": device},
        "epochs_run": epochs,
        "training": {"reused": reused},
        "timings": {"seconds_per_epoch": per_epoch, "train_seconds": per_epoch * epochs, "eval_seconds_valid": valid_s, "eval_seconds_test": test_s},
    }


RECORDS = [
    fake_record("ml-100k", "sasrec-ce", "cpu (AMD EPYC)", 2.0, 10, 1.0, 2.0),
    fake_record("ml-100k", "sasrec-ce", "cpu (x86_64)", 4.0, 20, 1.0, 2.0),
    fake_record("ml-100k", "sasrec-ce", "cpu (AMD EPYC)", 100.0, 99, 1.0, 2.0, reused=True),  # a checkpoint's timings: not a training
    fake_record("ml-100k", "diffrec", "NVIDIA H200", 0.5, 4, 0.25, 0.25),
]


def test_profiles_take_medians_per_dataset_model_and_device_kind():
    assert (device_kind("cpu (AMD EPYC)"), device_kind("NVIDIA H200")) == ("cpu", "gpu")
    p = profiles(RECORDS)
    assert set(p) == {("ml-100k", "sasrec-ce", "cpu"), ("ml-100k", "diffrec", "gpu")}
    assert p["ml-100k", "sasrec-ce", "cpu"] == Profile(seconds_per_epoch=3.0, epochs=15, eval_seconds=3.0, records=3)


def test_cost_counts_trainings_scoring_and_trials_capped_by_the_budget():
    prof = Profile(seconds_per_epoch=3.0, epochs=15, eval_seconds=3.0, records=2)
    row = Row("d", "m", main=2, ablations=3, trainings=2, trials=4)
    assert cost(row, prof) == 2 * 45 + 5 * 3 + 4 * 45
    assert cost(row, prof, trial_budget_s=10.0) == 2 * 45 + 5 * 3 + 4 * 10
    assert cost(row, None) is None
    assert cost(Row("d", "m", trials=4), None, trial_budget_s=60.0) == 240.0  # trials alone need no record
    # the suite's minimum epochs lengthen a training past the records' median; trials stop at their epoch cap
    slow = Row("d", "m", main=1, trainings=1, trials=2, min_epochs=40)
    assert cost(slow, prof) == 40 * 3 + 3 + 2 * 40 * 3
    assert cost(slow, prof, trial_epochs=20) == 40 * 3 + 3 + 2 * 20 * 3
    # the study's own trials (a 256-wide trial is not a default run) price its remaining trials, with or without records
    assert cost(slow, prof, trial_epochs=20, trial_epoch_s=10.0) == 40 * 3 + 3 + 2 * 20 * 10
    assert cost(Row("d", "m", trials=3), None, trial_epochs=20, trial_epoch_s=10.0) == 600.0
    assert cost(Row("d", "m", trials=3), None, trial_budget_s=60.0, trial_epochs=20, trial_epoch_s=10.0) == 180.0


def test_plan_of_the_smoke_suite_from_fake_records(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    for i, r in enumerate(RECORDS):
        (out / "runs" / f"fake{i}.json").write_text(json.dumps(r))
    (out / "runs" / "broken.json").write_text("{")  # no evidence, no crash
    args = ["--suite", "smoke", "--out", str(out), "--no-progress", "--plan"]

    assert run.main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in plan["rows"]}
    ce, dr = rows["sasrec-ce"], rows["diffrec"]
    assert (ce["main"], ce["ablations"], ce["trainings"], ce["trials"]) == (1, 0, 1, 2)
    assert ce["seconds"] == {"cpu": 45 + 3 + 2 * 45, "gpu": None}
    # diffrec: 9 cells on 5 trainings (the grid's sampler points score the trainings they share; both
    # noising points train their own), 2 trials
    assert (dr["main"], dr["ablations"], dr["trainings"], dr["trials"]) == (1, 8, 5, 2)
    assert dr["seconds"] == {"cpu": None, "gpu": 5 * 2.0 + 9 * 0.5 + 2 * 2.0}
    assert rows["pop"]["seconds"] == {"cpu": None, "gpu": None}
    assert plan["totals"]["cpu_hours"] == (45 + 3 + 90) / 3600
    assert plan["totals"]["gpu_missing"] == [f"ml-100k/{m}" for m in rows if m != "diffrec"]
    assert sorted((out / "runs").iterdir()) == sorted((out / "runs" / n) for n in ["fake0.json", "fake1.json", "fake2.json", "fake3.json", "broken.json"])
    assert not (out / "tuning").exists() and not (out / "checkpoints").exists()  # nothing written

    assert run.main(args) == 0
    text = capsys.readouterr().out
    assert "| ml-100k   | sasrec-ce     | 1      | 0           | 1           | 2        | 0.04      | no record |" in text
    assert f"GPU-h total: 1 of {len(rows)} rows; the others have no record on a GPU to estimate from" in text


def test_a_kept_checkpoint_leaves_only_the_scoring(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    assert run.main(["--suite", "smoke", "--out", str(out), "--no-progress", "--plan", "--json"]) == 0
    before = {r["model"]: r["trainings"] for r in json.loads(capsys.readouterr().out)["rows"]}
    from benchmark.cli import load_suite_file
    from benchmark.suite import resolve_suite

    diffrec = next(c for c in resolve_suite(*load_suite_file("smoke")).cells if c.model == "diffrec" and c.tag != "default")
    (out / "checkpoints" / f"{diffrec.training_key}.pt").write_bytes(b"")
    assert run.main(["--suite", "smoke", "--out", str(out), "--no-progress", "--plan", "--json"]) == 0
    after = {r["model"]: r["trainings"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert after == {**before, "diffrec": before["diffrec"] - 1}


def test_the_plan_counts_only_the_cells_that_only_and_tags_keep(tmp_path, capsys):
    def plan(*extra):
        assert run.main(["--suite", "smoke", "--out", str(tmp_path), "--no-progress", "--plan", "--json", *extra]) == 0
        return {r["model"]: (r["main"], r["ablations"], r["trainings"]) for r in json.loads(capsys.readouterr().out)["rows"]}

    everything = plan()
    assert everything["diffrec"] == (1, 8, 5)
    assert plan("--only", "main")["diffrec"] == (1, 0, 1)
    assert plan("--only", "ablations")["diffrec"] == (0, 8, 4)
    assert plan("--tags", "steps=5,*")["diffrec"] == (0, 3, 1)  # three sampler points on one training
    assert plan("--tags", "steps=5,*", "default") == {**{m: (1, 0, 1) for m in everything}, "diffrec": (1, 3, 2)}


def test_trials_done_reads_the_journal_else_the_export(tmp_path):
    assert trials_done(tmp_path, "s") == 0
    (tmp_path / "tuning" / "s").mkdir(parents=True)
    (tmp_path / "tuning" / "s" / "best.json").write_text(json.dumps({"trials": 3}))
    assert trials_done(tmp_path, "s") == 3
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "tuning" / "optuna.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: 0.0, n_trials=5)
    assert trials_done(tmp_path, "s") == 5
    assert trials_done(tmp_path, "other") == 0


def test_a_studys_finished_trials_price_its_remaining_ones_per_device_kind(tmp_path):
    (tmp_path / "tuning").mkdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "tuning" / "optuna.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    timings = [("cpu (AMD EPYC)", 400.0, 40), ("cpu (AMD EPYC)", 1200.0, 40), ("cpu (x86_64)", 2800.0, 40), ("NVIDIA H200", 80.0, 40), (None, 9999.0, 40)]
    for device, seconds, epochs in timings:  # the last one predates the device attribute: not used
        trial = study.ask()
        trial.set_user_attr("train_seconds", seconds)
        trial.set_user_attr("epochs_run", epochs)
        if device:
            trial.set_user_attr("device", device)
        study.tell(trial, 0.1)
    pruned = study.ask()
    pruned.set_user_attr("device", "cpu (AMD EPYC)")
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)  # no timings: stopped by the pruner
    assert trial_epoch_seconds(tmp_path, "s") == {"cpu": 30.0, "gpu": 2.0}  # median of 10, 30, 70 s per epoch
    assert trial_epoch_seconds(tmp_path, "other") == {} and trial_epoch_seconds(tmp_path / "none", "s") == {}


def test_plan_of_a_committed_suite_neither_refuses_a_dirty_tree_nor_writes(monkeypatch, capsys):
    monkeypatch.delenv("DIFFREC_BENCH_GIT_COMMIT", raising=False)
    monkeypatch.setattr("benchmark.cli.uncommitted_code", lambda entry: ["benchmark/train.py"])  # a run into results/ would refuse
    assert run.main(["--suite", "quick", "--no-progress", "--plan", "--json"]) == 0  # into results/, as defined
    assert json.loads(capsys.readouterr().out)["suite"] == "quick"


def test_a_suite_of_defaults_plans_no_trials(tmp_path, capsys):
    """quick runs every model at its defaults: its plan counts no studies, even though
    `benchmark.tune --suite quick` could run some."""
    assert run.main(["--suite", "quick", "--out", str(tmp_path), "--no-progress", "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["rows"] and plan["totals"]["trials"] == 0 and plan["totals"]["main"] > 0


def test_a_model_with_nothing_to_tune_has_no_trials_to_run(tmp_path, capsys):
    """full tunes every model; popularity has no parameters, so benchmark.tune skips its study and
    the plan must not count its trials (it did: 50 per dataset)."""
    assert run.main(["--suite", "full", "--out", str(tmp_path), "--no-progress", "--plan", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    trials = {(r["dataset"], r["model"]): r["trials"] for r in rows}
    assert {t for (_, m), t in trials.items() if m == "pop"} == {0}
    assert trials["beauty", "sasrec-ce"] == 50


def test_the_plan_says_when_width_control_cells_wait_for_the_studies(tmp_path, capsys):
    """paper's width control adds cells only where the tuned widths differ: before the studies
    there is nothing to count, and the plan says so instead of looking complete."""
    assert run.main(["--suite", "paper", "--out", str(tmp_path), "--no-progress", "--plan"]) == 0
    assert "width control ([width_control]): not counted" in capsys.readouterr().out
    assert run.main(["--suite", "quick", "--out", str(tmp_path), "--no-progress", "--plan"]) == 0
    assert "width control" not in capsys.readouterr().out


def test_selection_rules_count_one_training_until_each_rules_model_is_kept(tmp_path):
    from benchmark.suite import resolve_suite
    from tests.synthetic import chain_dataset, write_sequences

    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=12, users=20))
    raw = {"models": ["sasrec-ce"], "ablation": [{"model": "sasrec-ce", "grid": {"train.selection": ["masked"]}}]}
    suite = resolve_suite("t", raw, files=[(str(tmp_path / "chain.txt"), "sequences")])
    unmasked, masked = sorted(suite.cells, key=lambda c: c.selection, reverse=True)
    trainings = lambda kept: plan_rows(suite, suite.cells, {}, kept, {})[0].trainings  # noqa: E731
    assert trainings(set()) == 1  # both rules from one training
    assert trainings({unmasked.checkpoint_key}) == 1  # the masked rule's model is not kept: train again
    assert trainings({unmasked.checkpoint_key, masked.checkpoint_key}) == 0
