"""Tuning: search spaces beside the models, trial 0 = defaults, pruning through fit's on_eval,
the test set never read, exports, resumed studies, and two local workers sharing one journal study."""
import dataclasses
import json
import socket
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import benchmark.cli
from benchmark import tune
from benchmark.config import ConfigError
from benchmark.executors import LocalExecutor
from benchmark.suite import resolve_suite
from tests.synthetic import chain_dataset, write_sequences

RAW = {"models": ["sasrec-ce"], "train": {"epochs": 2, "eval_every": 1, "batch_size": 32}, "model": {"all": {"hidden": 16}}}
SMALL_SPACE = {"train.lr": ("log", 1e-3, 1e-2), "dropout": ("float", 0.0, 0.5)}
SMALL_SPACE_DISTRIBUTIONS = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True), "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}


@pytest.fixture
def base_cell(tmp_path):
    path = write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=20, users=80))
    (cell,) = resolve_suite("t", RAW, files=[(str(path), "sequences")]).tune_cells
    return cell


class NoTestSet:
    def __getattr__(self, name):
        raise AssertionError(f"tuning read the test set (.{name})")


@pytest.fixture
def poisoned_test_set(monkeypatch):
    """Every split that tuning loads has a test part that fails when touched."""
    real = benchmark.cli.leave_one_out
    monkeypatch.setattr(benchmark.cli, "leave_one_out", lambda *a, **k: dataclasses.replace(real(*a, **k), test=NoTestSet()))


def test_search_space_comes_from_the_model_module_or_the_generic_one(monkeypatch, capsys):
    space, origin = tune.search_space("sasrec-ce")
    assert origin == "baselines.sasrec.SEARCH_SPACE" and "train.lr" in space and "layers" in space
    fixed, _ = tune.search_space("sasrec-ce", fixed=("layers", "train.lr"))
    assert "layers" not in fixed and "train.lr" not in fixed and "dropout" in fixed
    monkeypatch.delattr("baselines.sasrec.SEARCH_SPACE")
    space, origin = tune.search_space("sasrec-ce")
    assert origin.startswith("generic") and set(space) == {"train.lr", "dropout", "hidden"}


@pytest.mark.parametrize(
    "space, message",
    [({"nosuch": ("float", 0, 1)}, "unknown key 'nosuch'"), ({"dropout": ("uniform", 0, 1)}, "is not"), ({"hidden": ("choice",)}, "is not")],
)
def test_bad_search_spaces_are_rejected(space, message):
    with pytest.raises(ConfigError, match=message):
        tune.check_space(space, "sasrec-ce", "test space")


def test_trial_zero_is_the_default_configuration(base_cell):
    params, outside = tune.default_params(base_cell, {**SMALL_SPACE, "hidden": ("choice", [32, 64])})
    assert params == {"train.lr": 1e-3, "dropout": 0.3} and outside == ["hidden"]  # the suite set hidden = 16


def test_study_never_reads_the_test_set_and_exports_its_budget(tmp_path, base_cell, poisoned_test_set, monkeypatch):
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    summary = tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(tmp_path)))
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"train.lr": 1e-3, "dropout": 0.3} and trials[0].user_attrs["default"]
    best = max(trials, key=lambda t: t.value)
    exported = json.loads((tmp_path / "tuning" / summary["study"] / "best.json").read_text())
    assert exported["params"] == best.params and exported["best_value"] == best.value and exported["trials"] == 2
    assert exported["default_value"] == trials[0].value
    assert len((tmp_path / "tuning" / summary["study"] / "trials.csv").read_text().strip().splitlines()) == 1 + 2
    # Re-running finds the budget spent; a bigger budget continues the same study.
    tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True)
    assert len(study.get_trials()) == 2
    tune.tune_cell(base_cell, out=tmp_path, budget=3, seed=0, quiet=True)
    assert [t.number for t in study.get_trials()] == [0, 1, 2]


def test_an_exported_study_is_final_and_one_without_its_journal_is_not_started_again(tmp_path, base_cell, monkeypatch):
    """A fresh machine or clone holds the committed exports; tuning again must neither rerun nor
    re-export a study whose export holds its budget, nor start a study again from trial 0 (to
    overwrite its export later) when its journal is missing."""
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    summary = tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True)
    export = tmp_path / "tuning" / summary["study"]
    before = {f.name: f.read_bytes() for f in export.iterdir()}
    journal = Path(tune.default_storage(tmp_path))
    journal.unlink()  # the machine that ran the study is gone
    assert tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True) == summary
    assert {f.name: f.read_bytes() for f in export.iterdir()} == before and not journal.exists()
    with pytest.raises(ConfigError, match=f"study {summary['study']}: .*best.json holds 2 of 3 trials, but the storage .* does not hold the study"):
        tune.tune_cell(base_cell, out=tmp_path, budget=3, seed=0, quiet=True)
    assert {f.name: f.read_bytes() for f in export.iterdir()} == before
    assert optuna.get_all_study_names(tune.make_storage(str(journal))) == []  # refused before the study was created


def test_a_study_continues_only_with_the_search_space_its_trials_were_drawn_from(tmp_path, base_cell, monkeypatch):
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    summary = tune.tune_cell(base_cell, out=tmp_path, budget=1, seed=0, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(tmp_path)))
    assert study.user_attrs["space"] == summary["space"] == json.loads(json.dumps(tune.space_record(SMALL_SPACE)))
    wider = {**SMALL_SPACE, "hidden": ("choice", [16, 32])}
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (wider, "test space"))
    with pytest.raises(ConfigError, match=f"study {summary['study']}: its trials were drawn from another search space .*'hidden'"):
        tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True)
    assert len(study.get_trials()) == 1


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruner_is_fed_by_each_validation_evaluation(base_cell, poisoned_test_set):
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.optimize(tune.Objective(base_cell, SMALL_SPACE), n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]  # stopped after epoch 1's evaluation


def test_a_configuration_that_cannot_train_is_a_failed_trial_of_the_budget(tmp_path, base_cell, monkeypatch):
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): ({"dropout": ("choice", [1.5])}, "test space"))  # dropout must be < 1
    assert tune.tune_cell(base_cell, out=tmp_path, budget=2, seed=0, quiet=True) is None  # nothing completed, nothing exported as best
    study = optuna.load_study(study_name=tune.tuning_study(base_cell.dataset, base_cell.model, base_cell.key), storage=tune.make_storage(tune.default_storage(tmp_path)))
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL] * 2 and all("error" in t.user_attrs for t in study.get_trials())
    assert len(tune.counted_trials(study, 2)) == 2


def test_two_local_workers_share_one_journal_study_without_losing_or_repeating_trials(tmp_path, base_cell):
    summary = tune.tune_cell(base_cell, out=tmp_path, budget=6, seed=0, executor=LocalExecutor(2), threads=1, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(tmp_path)))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker_pid"] for t in trials if "worker_pid" in t.user_attrs}) == 2
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6  # no configuration ran twice
    assert summary["trials"] == 6


def test_a_trial_time_budget_stops_every_trial_and_is_exported(tmp_path, base_cell):
    cell = dataclasses.replace(base_cell, train_config={**base_cell.train_config, "epochs": 3})
    summary = tune.tune_cell(cell, out=tmp_path, budget=2, seed=0, time_budget_s=1e-6, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(tmp_path)))
    for trial in study.get_trials():
        assert trial.user_attrs["epochs_run"] == 1 and trial.user_attrs["stopped"].startswith("time budget")
        assert list(trial.intermediate_values) == [1]
    assert summary["trial_time_budget_s"] == 1e-6
    unlimited = tune.tune_cell(cell, out=tmp_path / "free", budget=1, seed=0, quiet=True)
    trial = optuna.load_study(study_name=unlimited["study"], storage=tune.make_storage(tune.default_storage(tmp_path / "free"))).get_trials()[0]
    assert trial.user_attrs["epochs_run"] == 3 and unlimited["trial_time_budget_s"] == 0


def test_trials_stop_at_the_epoch_cap_and_the_pruner_waits_for_its_warmup(tmp_path, base_cell):
    cell = dataclasses.replace(base_cell, train_config={**base_cell.train_config, "epochs": 5, "min_epochs": 5})
    summary = tune.tune_cell(cell, out=tmp_path, budget=2, seed=0, trial_epochs=3, warmup=2, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(tmp_path)))
    for trial in study.get_trials():
        assert trial.user_attrs["epochs_run"] == 3 and trial.user_attrs["stopped"] == "epoch budget"
        assert trial.user_attrs["device"].startswith("cpu (")  # what --plan prices the study's remaining trials by
    assert summary["trial_epochs"] == 3 and summary["pruner"].endswith("from epoch 2")
    assert tune.open_study(summary["study"], study._storage, seed=0, pruner="median", warmup=2).pruner._n_warmup_steps == 2


def test_every_trainable_model_has_its_own_search_space_with_its_defaults_inside():
    from benchmark.registry import MODELS

    for name, spec in MODELS.items():
        if name == "pop":
            continue
        space, origin = tune.search_space(name)
        assert origin.endswith((".SEARCH_SPACE", f"entry of {name}")) and "train.lr" in space, name
        (cell,) = resolve_suite("t", {"datasets": ["ml-100k"], "models": [name]}).tune_cells
        assert tune.default_params(cell, space)[1] == [], name  # trial 0 is exactly the registered default


def test_a_queued_retry_is_run_when_the_rest_of_the_budget_is_held(tmp_path, base_cell, monkeypatch):
    """Trial 0 done, trial 1's worker killed: its queued retry is the budget's last place, and a trial task takes it."""
    from benchmark import studies

    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    storage = str(tmp_path / "optuna.journal")
    summary = tune.tune_cell(base_cell, out=tmp_path, budget=1, seed=0, storage=storage, quiet=True)
    study = optuna.load_study(study_name=summary["study"], storage=tune.make_storage(storage))
    dead = study.ask(SMALL_SPACE_DISTRIBUTIONS)
    with studies.alive(study, dead._trial_id):
        pass
    study._storage.set_trial_user_attr(dead._trial_id, "pid", 2**22 + 1)  # above pid_max: its worker is gone
    job = dict(cell=base_cell, space=SMALL_SPACE, storage_url=storage, study_name=summary["study"], budget=2, seed=0, pruner="median")
    trial = tune.run_trial(**job)
    assert trial is not None and trial["number"] == 2 and trial["params"] == dead.params
    assert tune.run_trial(**job) is None  # the budget is full
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


def test_one_worker_repeats_a_study_exactly_and_each_trial_records_its_seed(tmp_path, base_cell, monkeypatch):
    """The per-trial seeds (F5) keep a study run by one worker from scratch reproducible (the smoke regression check relies on it)."""
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        summary = tune.tune_cell(base_cell, out=out, budget=3, seed=0, quiet=True)
        runs.append(optuna.load_study(study_name=summary["study"], storage=tune.make_storage(tune.default_storage(out))).get_trials())
    assert [t.params for t in runs[0]] == [t.params for t in runs[1]]
    assert [t.user_attrs["sampler_seed"] for t in runs[0]] == [tune.sampler_seed(0, n) for n in range(3)]


class Recording(LocalExecutor):
    """One process; records each map's tasks (the study order each task gets) and, per task run,
    the study it took a trial from with the studies exported before it started."""

    def __init__(self, out, after_first=None):
        super().__init__(1)
        self.out, self.after_first, self.queues, self.ran = out, after_first, [], []

    def map(self, fn, jobs):
        jobs = list(jobs)
        self.queues.append([[j["study_name"].split("__")[1] for j in job["studies"]] for job in jobs])

        def traced(**job):
            exported = sorted(p.parent.name.split("__")[1] for p in self.out.glob("tuning/*/best.json"))
            trial = fn(**job)
            self.ran.append((trial["study"].split("__")[1], exported))
            if self.after_first and len(self.ran) == 1:
                self.after_first()
            return trial

        yield from super().map(traced, jobs)


def test_a_suites_studies_share_one_queue_and_each_is_exported_when_its_budget_is_done(tmp_path, monkeypatch):
    """One queue, study after study: a worker whose study has no trial left to start takes the
    next study's (it never waits for its study's last trial), and each study's best.json is written
    as soon as its budget is finished, before the next study's trials run."""
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    path = write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=20, users=80))
    suite = resolve_suite("t", {**RAW, "models": ["sasrec-ce", "sasrec-bce"], "tune": {"trials": 2}}, files=[(str(path), "sequences")])
    out = tmp_path / "out"

    recording = Recording(out)
    summaries = tune.tune_suite(suite, out=out, executor=recording, progress=False)
    assert [s["study"].split("__")[1] for s in summaries] == ["sasrec-ce", "sasrec-bce"] and all(s["trials"] == 2 for s in summaries)
    assert recording.queues == [[["sasrec-ce", "sasrec-bce"]] * 4]  # four tasks, each taking the first study with a place
    assert recording.ran == [("sasrec-ce", []), ("sasrec-ce", []), ("sasrec-bce", ["sasrec-ce"]), ("sasrec-bce", ["sasrec-ce"])]
    assert tune.tune_suite(suite, out=out, executor=recording, progress=False) and len(recording.queues) == 1  # done: nothing queued again


def test_a_trial_lost_after_the_queue_started_is_run_again_before_a_later_studys(tmp_path, monkeypatch):
    """A running trial of the first study, on a live worker elsewhere, holds a place when the queue
    is made, and its worker is gone after the first task: the next free worker runs it again before
    the second study's trials (not after them), so the first study is done and exported first."""
    monkeypatch.setattr(tune, "search_space", lambda model, fixed=(): (SMALL_SPACE, "test space"))
    path = write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=20, users=80))
    suite = resolve_suite("t", {**RAW, "models": ["sasrec-ce", "sasrec-bce"]}, files=[(str(path), "sequences")])
    out, storage = tmp_path / "out", str(tmp_path / "optuna.journal")
    plans = [tune.plan_study(cell, out=out, budget=2, storage=storage) for cell in suite.tune_cells]
    first = plans[0].study()
    elsewhere = first.ask(SMALL_SPACE_DISTRIBUTIONS)
    for key, value in {"host": "elsewhere", "pid": 1, "heartbeat": time.time()}.items():  # a live worker on another machine
        first._storage.set_trial_user_attr(elsewhere._trial_id, key, value)
    assert [p.places() for p in plans] == [1, 2]

    def gone_after_the_first_task():  # as if it had run here, by a process that is gone now
        first._storage.set_trial_user_attr(elsewhere._trial_id, "host", socket.gethostname())
        first._storage.set_trial_user_attr(elsewhere._trial_id, "pid", 2**22 + 1)  # above pid_max

    recording = Recording(out, after_first=gone_after_the_first_task)
    summaries = tune.run_plans(plans, out=out, executor=recording, quiet=True)
    assert [s["trials"] for s in summaries] == [2, 2]
    assert recording.ran == [("sasrec-ce", []), ("sasrec-ce", []), ("sasrec-bce", ["sasrec-ce"]), ("sasrec-bce", ["sasrec-ce"])]
    retry = [t for t in plans[0].study().get_trials() if t.system_attrs.get("failed_trial") == elsewhere.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == elsewhere.params
