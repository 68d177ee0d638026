"""Hyperparameter tuning: `python -m benchmark.tune --suite paper [--workers N | --executor ray] [--storage PATH|URL]`.

One Optuna study per (dataset, model) of a suite's [tune] section, persisted in a storage that
many workers share (`benchmark.studies`: a journal file `OUT/tuning/optuna.journal` by default,
PostgreSQL for several machines) and reopened with `load_if_exists=True`, so an interrupted study
continues. Each trial is one task of the executor (`benchmark.executors`: local processes, or Ray
tasks on the same cluster as the suite's trainings). Every study gets:
- the same trial budget ([tune] trials), counting the trials that finished (a configuration that
  cannot train included) and those running on live workers; a trial taken beyond it by workers
  racing at the end is failed at once as surplus, and a killed worker's trial is queued again;
- a TPE sampler seeded per trial from [tune] seed and the trial's number (`sampler_seed`, recorded
  on each trial), so workers and reruns do not replay one sequence, and one worker running a study
  from scratch repeats it exactly;
- the model's default configuration (as the suite resolves it) enqueued as trial 0;
- a median pruner fed by each validation evaluation (NDCG@10) of the trial's training run, judging
  from epoch [tune] prune_after_epochs on;
- the same epoch cap per trial for every model ([tune] trial_epochs: the trial trains at most that
  many epochs under the suite's stopping rule, whose minimum is lowered to the cap if above it);
- optionally the same wall-clock training time per trial ([tune] trial_time_budget_s); the trial's
  run stops there and keeps its best evaluation. Equal seconds are not equal epochs: a model with
  slower epochs is judged earlier in its training (on the H200, 60 s gave DiffRec and ContrastVAE
  4-6 beauty epochs, SASRec 10-11), which favours fast-converging configurations;
- objective: the best validation NDCG@10 (unmasked) of the run. Tuning never reads the test set;
- a snapshot of each running trial's training (`OUT/snapshots/tuning/<study>/trial-<n>.pt`, as
  `benchmark.run` keeps for cells), so a trial whose worker was killed, queued again, resumes from
  its last evaluation (and reports its earlier evaluations to the pruner again) instead of starting
  over; the snapshot is deleted when the trial ends.

Search spaces live beside each model's config: a `SEARCH_SPACE` dict in the model's module (or,
for a variant with a space of its own such as `diffrec-paper`, the registry entry's `search_space`),
{key: ("float"|"log", low, high) | ("int", low, high[, step]) | ("choice", [values])}, with
`train.KEY` for TrainConfig keys and plain keys for the model's config. A model without one gets
the generic lr/dropout/hidden space (the tool says so). Keys the suite sets explicitly are fixed.

A suite's studies share the workers as one queue of trials, study after study (`run_plans`): a
worker whose study has no trial left to start takes the next study's rather than wait for the last
running trial of its own; which study a trial comes from is decided when a worker is free, so a
trial that an earlier study lost to a gone worker is run again before a later study's; each study is
exported as soon as its budget is finished.

The export (`OUT/tuning/<study>/trials.csv` and `best.json`) is what suites with
params = "tuned" read. results/ commits it and the journal too, so that a study outlives the
machine it started on: another machine continues it from the committed journal (the trials that
were running there are failed as a gone worker's and run again).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from benchmark import data as data_mod
from benchmark.cli import add_suite_arguments, check_arguments, check_committed_code, load_data, print_listing, suite_from_args
from benchmark.config import ConfigError, build_config
from benchmark.executors import LocalExecutor, add_executor_arguments, check_executor_arguments, make_executor, node_name
from benchmark.metrics import SELECTION_METRIC
from benchmark.records import atomic_path, code_digest, device_name, environment, remove_with_temps, write_json_atomic
from benchmark.registry import build_model, tuning_space
from benchmark.studies import FINISHED, alive, counted_trials, default_storage, make_storage, open_study, places_to_run, redact, reserved, sweep_stale, within_budget
from benchmark.suite import Cell, Suite, best_params_path, read_best, split_setting, tuning_study
from benchmark.train import NOT_TRAINED, TrainConfig, fit, selected

SPACE_KINDS = {"float": 3, "log": 3, "int": (3, 4), "choice": 2}
CAUGHT = (ConfigError, FloatingPointError)  # a configuration that cannot train is a failed trial, not a crash

optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module prints one line per trial itself


# ---------------------------------------------------------------------------------------------
# Search spaces


def search_space(model: str, fixed: tuple[str, ...] = ()) -> tuple[dict, str]:
    """-> (space, where it came from) for a registered model, keys checked; `fixed` keys are left out."""
    space, origin = tuning_space(model)
    check_space(space, model, origin)
    return {k: v for k, v in space.items() if k not in fixed}, origin


def check_space(space: dict, model: str, origin: str) -> None:
    split_setting(dict.fromkeys(space), model, origin)  # every key names a config or training key
    for key, spec in space.items():
        kind = spec[0] if isinstance(spec, (tuple, list)) and spec else None
        sizes = SPACE_KINDS.get(kind)
        if sizes is None or len(spec) not in (sizes if isinstance(sizes, tuple) else (sizes,)):
            raise ConfigError(f"{origin}: {key} = {spec!r} is not ('float'|'log', low, high), ('int', low, high[, step]) or ('choice', [values])")


def suggest(trial: optuna.Trial, space: dict) -> dict:
    params = {}
    for key, (kind, *args) in space.items():
        if kind in ("float", "log"):
            params[key] = trial.suggest_float(key, args[0], args[1], log=kind == "log")
        elif kind == "int":
            params[key] = trial.suggest_int(key, args[0], args[1], step=args[2] if len(args) > 2 else 1)
        else:
            params[key] = trial.suggest_categorical(key, list(args[0]))
    return params


def default_params(cell: Cell, space: dict) -> tuple[dict, list[str]]:
    """The cell's own values of the searched keys (trial 0), and the keys whose default lies outside the space."""
    params, outside = {}, []
    for key, (kind, *args) in space.items():
        value = cell.train_config[key[6:]] if key.startswith("train.") else cell.model_config[key]
        inside = value in args[0] if kind == "choice" else args[0] <= value <= args[1]
        if inside:
            params[key] = value
        else:
            outside.append(key)
    return params, outside


# ---------------------------------------------------------------------------------------------
# Objective


class Objective:
    """Trains one configuration of a cell; returns its best validation NDCG@10."""

    def __init__(self, cell: Cell, space: dict, *, data_dir=None, device="cpu", time_budget_s: float = 0.0, epochs: int = 0, snapshots: Path | None = None):
        self.cell, self.space, self.device, self.snapshots = cell, space, device, snapshots
        self.train_config = dict(cell.train_config)
        if epochs:  # the trial cap, or the cell's own where that is smaller
            self.train_config["epochs"] = min(epochs, cell.train_config["epochs"])
            self.train_config["min_epochs"] = min(cell.train_config.get("min_epochs", 0), self.train_config["epochs"])
        if time_budget_s:  # the trial cap, or the cell's own budget where that is smaller
            self.train_config["time_budget_s"] = min(time_budget_s, cell.train_config["time_budget_s"] or time_budget_s)
        _, self.split, self.max_len = load_data(cell, data_dir)  # the split's test part is never read

    def snapshot(self, trial: optuna.Trial, params: dict) -> tuple[Path | None, dict]:
        """Where the trial's training keeps its state, and the tag that must match to resume it: a
        retried trial continues the snapshot of the trial it retries (same study, parameters, code)."""
        if self.snapshots is None:
            return None, {}
        first = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)
        tag = {"study": trial.study.study_name, "trial": first, "params": params, "train_config": self.train_config, "code": code_digest(), "device": str(self.device)}
        return Path(self.snapshots) / f"trial-{first}.pt", tag

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        trial.set_user_attr("device", device_name(self.device))  # what --plan estimates a study's remaining trials from
        snapshot, tag = self.snapshot(trial, params)
        try:
            m_part, t_part = split_setting(params, self.cell.model, f"trial {trial.number}")
            tcfg = build_config(TrainConfig, {**self.train_config, **t_part}, where=f"trial {trial.number} train")
            model, _ = build_model(self.cell.model, {**self.cell.model_config, **m_part}, n_items=self.split.n_items, max_len=self.max_len, seed=self.cell.seed)

            def on_eval(epoch: int, score: float) -> None:
                trial.report(score, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation {SELECTION_METRIC} {score:.4f} at epoch {epoch}")

            if snapshot is not None:
                snapshot.parent.mkdir(parents=True, exist_ok=True)
            fitted = fit(model, self.split, tcfg, seed=self.cell.seed, device=self.device, progress=False, on_eval=on_eval, snapshot=snapshot, snapshot_tag=tag)
        except CAUGHT as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:  # ended, pruned or failed (a killed worker leaves it, and any write it had begun, for the retry to remove)
            if snapshot is not None:
                remove_with_temps(snapshot)
        if fitted.resumed_at:
            trial.set_user_attr("resumed_at_epochs", fitted.resumed_at)
        scores = [selected(point, tcfg.selection) for point in fitted.curve]
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("best_epoch", fitted.best_epoch)
        trial.set_user_attr("train_seconds", round(fitted.train_seconds, 3))
        trial.set_user_attr("epochs_run", fitted.epochs_run)
        trial.set_user_attr("stopped", fitted.stopped)
        trial.set_user_attr("params_count", sum(p.numel() for p in model.parameters()))
        return max(scores)


class Surplus(Exception):
    """A trial taken after the budget was full (workers that took trials together)."""


OBJECTIVES: dict[str, Objective] = {}  # per worker process: the data of a study is loaded once


def sampler_seed(seed: int, number: int) -> int:
    """The TPE seed of trial `number`: from [tune] seed and the trial's number, which no two
    workers share, so no two workers (nor a rerun that continues a study) replay one random
    sequence, while one worker running a study from scratch repeats it exactly. Each trial
    records it (user attribute sampler_seed)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def run_trial(
    *, cell: Cell, space: dict, storage_url: str, study_name: str, budget: int, seed: int, pruner: str, time_budget_s: float = 0.0, trial_epochs: int = 0, warmup: int = 0, data_dir=None,
    device="cpu", threads=0, snapshots: str | None = None,
) -> dict | None:
    """Runs one trial of a study, the unit of work of an executor: fails the trials of gone workers
    (queued again), takes the next trial (a queued one first) unless the budget is full, and trains
    it. -> a summary of the trial, None when the budget was already held by other trials."""
    if threads:
        torch.set_num_threads(threads)
    study = open_study(study_name, make_storage(storage_url), seed=seed, pruner=pruner, warmup=warmup)
    sweep_stale(study)
    if places_to_run(study, budget) <= 0:
        return None
    key = repr((cell, space, data_dir, device, time_budget_s, trial_epochs, snapshots))
    if key not in OBJECTIVES:
        OBJECTIVES[key] = Objective(cell, space, data_dir=data_dir, device=device, time_budget_s=time_budget_s, epochs=trial_epochs, snapshots=snapshots and Path(snapshots))
    taken = []

    def objective(trial: optuna.Trial) -> float:
        taken.append(trial._trial_id)
        with alive(study, trial._trial_id):
            study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(seed, trial.number))  # before the first suggestion
            trial.set_user_attr("sampler_seed", sampler_seed(seed, trial.number))
            if not within_budget(study, trial.number, budget):
                trial.set_user_attr("surplus", True)
                raise Surplus(f"trial {trial.number}: the budget of {budget} was full")
            return OBJECTIVES[key](trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=1, catch=CAUGHT + (Surplus,), gc_after_trial=True)
    trial = study._storage.get_trial(taken[0])
    if trial.user_attrs.get("surplus"):
        return None
    return {"study": study_name, "number": trial.number, "state": trial.state.name, "value": trial.value, "error": trial.user_attrs.get("error"), "params": trial.params, "node": node_name()}


def run_next_trial(*, studies: list[dict]) -> dict | None:
    """The unit of work of a suite's trial queue: one trial of the first of `studies` (`run_trial`'s
    keyword arguments, in queue order) that has a place left, chosen when a worker is free, so a
    trial that an earlier study lost to a gone worker is run again before a later study's."""
    for job in studies:
        if (trial := run_trial(**job)) is not None:
            return trial
    return None


@dataclasses.dataclass
class Plan:
    """A study opened for work: the keyword arguments of its trials (`run_trial`) and what its
    export needs."""

    cell: Cell
    space: dict
    origin: str
    job: dict  # run_trial's keyword arguments

    @property
    def name(self) -> str:
        return self.job["study_name"]

    def study(self) -> optuna.Study:
        j = self.job
        return open_study(j["study_name"], make_storage(j["storage_url"]), seed=j["seed"], pruner=j["pruner"], warmup=j["warmup"])

    def places(self) -> int:
        """Trials still to hand to a worker (after failing those of gone workers)."""
        study = self.study()
        sweep_stale(study)
        return places_to_run(study, self.job["budget"])

    def export(self, out) -> dict | None:
        j = self.job
        return export_study(
            self.study(), out=out, budget=j["budget"], cell=self.cell, space=self.space, origin=self.origin, storage=j["storage_url"], seed=j["seed"], pruner=j["pruner"],
            time_budget_s=j["time_budget_s"], trial_epochs=j["trial_epochs"], warmup=j["warmup"], device=j["device"],
        )


def plan_study(
    cell: Cell, *, out, budget: int, seed: int = 0, pruner: str = "median", time_budget_s: float = 0.0, trial_epochs: int = 0, warmup: int = 0, storage: str | None = None,
    fixed=(), data_dir=None, device="cpu", threads=0, describe: str = "",
) -> Plan | None:
    """Opens the study of one base cell (trial 0 = the defaults, queued on a fresh study; the trials
    of gone workers queued again) and says where it stands; None when the model has nothing to tune
    or the study's export already holds its whole budget.

    An export that holds the budget is final: the study is not opened, its export not rewritten
    (best.json names the code and machine of its export). An export without its study in the
    storage (the journal of another machine, or lost) cannot be continued: refused, since a study
    started again would overwrite it."""
    name = tuning_study(cell.dataset, cell.model, cell.key)
    exported, export_path = export_of(cell, out), best_params_path(Path(out) / "tuning", name)
    if exported is not None and exported["trials"] >= budget:
        print(f"study {name}: exported with {exported['trials']} of {budget} trials ({export_path}); nothing to run", flush=True)
        return None
    space, origin = search_space(cell.model, tuple(fixed))
    _, split, max_len = load_data(cell, data_dir)
    probe, _ = build_model(cell.model, cell.model_config, n_items=split.n_items, max_len=max_len)
    if not space or not probe.trainable:
        print(f"study {name}: nothing to tune ({NOT_TRAINED if space else 'empty search space'}); skipped", flush=True)
        return None
    if origin.startswith("generic"):
        print(f"study {name}: model {cell.model} uses the {origin}", flush=True)
    url = storage or default_storage(out)
    if "://" not in url:  # a journal file: the same file for workers in another working folder
        url = str(Path(url).resolve())
    backend = make_storage(url)
    if exported is not None and name not in optuna.get_all_study_names(backend):
        raise ConfigError(
            f"study {name}: {export_path} holds {exported['trials']} of {budget} trials, but the storage {redact(url)} does not hold the study, so it cannot"
            " be continued (check out the committed journal, or move the export away to run the study again from trial 0)"
        )
    study = open_study(name, backend, seed=seed, pruner=pruner, warmup=warmup)
    drawn_from, now = study.user_attrs.get("space"), space_record(space)
    if drawn_from is None:  # a new study, or one begun before studies recorded their space
        study.set_user_attr("space", now)
    elif drawn_from != now:
        raise ConfigError(
            f"study {name}: its trials were drawn from another search space ({drawn_from}) than {origin} gives now ({now}); restore that space, or delete the study"
            f" from {redact(url)} to run it again from trial 0 with this one"
        )
    for number in sweep_stale(study):
        print(f"study {name}: trial {number} lost its worker; failed and queued again", flush=True)
    if not study.get_trials(deepcopy=False):
        params, outside = default_params(cell, space)
        if outside:
            print(f"study {name}: defaults of {', '.join(outside)} lie outside the search space; trial 0 samples them", flush=True)
        study.enqueue_trial(params, user_attrs={"default": True})
    done, running = len(counted_trials(study, budget)), sum(t.state == TrialState.RUNNING for t in reserved(study))
    print(f"study {name}: {done} of {budget} trials done, {running} running elsewhere, {max(budget - done - running, 0)} to run ({describe}; {redact(url)})", flush=True)
    job = dict(
        cell=cell, space=space, storage_url=url, study_name=name, budget=budget, seed=seed, pruner=pruner, time_budget_s=time_budget_s, trial_epochs=trial_epochs, warmup=warmup,
        data_dir=data_dir and Path(data_dir).resolve(), device=device, threads=threads, snapshots=str((Path(out) / "snapshots" / "tuning" / name).resolve()),
    )
    return Plan(cell, space, origin, job)


def run_plans(plans: list[Plan], *, out, executor=None, quiet=False) -> list[dict]:
    """Brings every planned study to its budget and exports it; -> the exported summaries, in the
    plans' order. The trials of all studies go to the executor as one queue, study after study
    (`run_next_trial`), so a worker whose study has no trial left to start takes the next study's
    instead of waiting for the last trial of its own, and a trial lost to a gone worker is run again
    by the next free worker; a study is exported as soon as its budget is finished."""
    executor = executor or LocalExecutor()
    by_name, summaries = {p.name: p for p in plans}, {}

    def export(plan: Plan) -> None:
        summary = summaries[plan.name] = plan.export(out)
        if summary:
            print(f"study {plan.name}: best validation {SELECTION_METRIC} {summary['best_value']:.4f} (trial {summary['best_trial']} of {summary['trials']}; default {summary['default_value']}) {summary['params']}", flush=True)

    while places := sum(p.places() for p in plans):
        bar = tqdm(total=places, desc="trials", unit="trial", disable=quiet)
        for _, trial in executor.map(run_next_trial, [dict(studies=[p.job for p in plans])] * places):
            bar.update()
            if trial is None:  # every place was taken by other processes meanwhile
                continue
            if not quiet:
                value = f"{trial['value']:.4f}" if trial["value"] is not None else trial["error"] or "-"
                tqdm.write(f"  {trial['study']} trial {trial['number']:3d} {trial['state']:8s} {value}  {trial['params']}  ({trial['node']})")
            plan = by_name[trial["study"]]
            if plan.name not in summaries and len(counted_trials(plan.study(), plan.job["budget"])) >= plan.job["budget"]:
                export(plan)
        bar.close()
    for plan in plans:
        if plan.name not in summaries:  # its budget is held by trials of other processes, or fewer trials counted
            export(plan)
    return [summaries[p.name] for p in plans if summaries[p.name]]


def tune_cell(cell: Cell, *, out, budget: int, executor=None, quiet=False, **settings) -> dict | None:
    """Brings the study of one base cell to `budget` trials, one task of `executor` (default: this
    process) per trial, and exports it; returns the exported summary (None when the model has
    nothing to tune). Other processes may work on the same study meanwhile: tasks are submitted
    until the budget is held by finished or live running trials; a study whose export already
    holds the budget returns that export. `settings`: `plan_study`'s."""
    executor = executor or LocalExecutor()
    plan = plan_study(cell, out=out, budget=budget, describe=executor.describe(), **settings)
    return (run_plans([plan], out=out, executor=executor, quiet=quiet) or [None])[0] if plan else export_of(cell, out)


def space_record(space: dict) -> dict:
    """The search space as plain JSON data (as a study's user attribute and its export keep it)."""
    return {key: [v if not isinstance(v, tuple) else list(v) for v in spec] for key, spec in space.items()}


def export_of(cell: Cell, out) -> dict | None:
    """The exported summary (best.json) of the cell's study in OUT, or None."""
    return read_best(Path(out) / "tuning", tuning_study(cell.dataset, cell.model, cell.key))


def export_study(
    study: optuna.Study, *, out, budget: int, cell: Cell, space: dict, origin: str, storage: str, seed: int, pruner: str, time_budget_s: float = 0.0, trial_epochs: int = 0, warmup: int = 0,
    device="cpu",
) -> dict | None:
    """Writes OUT/tuning/<study>/trials.csv (every trial) and best.json (best of the budget)."""
    folder = best_params_path(Path(out) / "tuning", study.study_name).parent
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "trials.csv") as tmp:  # a temporary name of its own: processes sharing a study export at once
        study.trials_dataframe().to_csv(tmp, index=False)
    counted = counted_trials(study, budget)
    complete = [t for t in counted if t.state == TrialState.COMPLETE]
    if not complete:
        print(f"study {study.study_name}: no completed trial yet; nothing exported as best", flush=True)
        return None
    best = max(complete, key=lambda t: (t.value, -t.number))
    default = next((t for t in counted if t.user_attrs.get("default")), None)
    summary = {
        "study": study.study_name,
        "storage": redact(storage),
        "objective": f"best validation {SELECTION_METRIC} ({cell.train_config.get('selection', 'unmasked')}) of the training run; the test set is not evaluated",
        "budget": budget,
        "trials": len(counted),
        "states": {s.name: sum(t.state == s for t in counted) for s in FINISHED},
        "best_trial": best.number,
        "best_value": best.value,
        "params": best.params,
        "default_value": default.value if default else None,
        "space": space_record(space),
        "space_origin": origin,
        "sampler": f"TPE, seeded per trial from [tune] seed {seed} and the trial number (each trial's sampler_seed)",
        "pruner": f"{pruner} on validation {SELECTION_METRIC} per evaluation" + (f", from epoch {warmup}" if pruner == "median" and warmup else ""),
        "trial_time_budget_s": time_budget_s,
        "trial_epochs": trial_epochs or cell.train_config["epochs"],
        "cell": cell.identity(),
        "environment": environment(device),
    }
    write_json_atomic(folder / "best.json", summary)
    return summary


def tune_suite(suite: Suite, *, out, storage: str | None = None, executor=None, data_dir=None, device="cpu", threads=0, progress=True) -> list[dict]:
    """Every study of the suite, in its order, brought to the [tune] budget (`run_plans`); -> the
    exports of its studies, those finished earlier included."""
    t, executor = suite.tune, executor or LocalExecutor()
    plans = [
        plan_study(
            cell, out=out, budget=t["trials"], seed=t["seed"], pruner=t["pruner"], time_budget_s=t["trial_time_budget_s"], trial_epochs=t["trial_epochs"], warmup=t["prune_after_epochs"],
            storage=storage, fixed=suite.fixed.get(cell.model, ()), data_dir=data_dir, device=device, threads=threads, describe=executor.describe(),
        )
        for cell in suite.tune_cells
    ]
    run_plans([p for p in plans if p], out=out, executor=executor, quiet=not progress)
    return [summary for cell in suite.tune_cells if (summary := export_of(cell, out))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tune", description=__doc__.splitlines()[0])
    add_suite_arguments(p)
    p.add_argument("--trials", type=int, help="trial budget per study (default: the suite's [tune] trials)")
    p.add_argument("--storage", metavar="PATH|URL", help="study storage: a journal file, or a database URL such as postgresql://USER:PASS@HOST/DB (default: OUT/tuning/optuna.journal)")
    p.add_argument("--workers", type=int, default=1, help="with --executor local: worker processes sharing each study")
    add_executor_arguments(p)
    args = p.parse_args(argv)
    if args.list:
        print_listing()
        return 0
    if not args.suite:
        p.error("--suite is required (or --list)")
    if args.trials is not None:
        args.set = (args.set or []) + [f"tune.trials={args.trials}"]
    try:
        check_arguments(args)
        check_executor_arguments(args)
        if args.workers < 1 or (args.workers > 1 and args.executor != "local"):
            raise ConfigError(f"--workers {args.workers}: needs >= 1, and applies to --executor local (Ray runs as many trials as the cluster has room for)")
        if args.threads:
            torch.set_num_threads(args.threads)
        suite = suite_from_args(args, p)
        if not args.allow_dirty:
            check_committed_code(Path(args.out), "benchmark.tune")
        if args.storage:
            make_storage(args.storage)  # an unreachable database stops the run before any data is read
        executor = make_executor(args, workers=args.workers)
        tune_suite(suite, out=args.out, storage=args.storage, executor=executor, data_dir=args.data_dir, device=args.device, threads=args.threads, progress=not args.no_progress)
    except (ConfigError, data_mod.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
