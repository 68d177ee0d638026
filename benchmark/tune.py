"""Hyperparameter tuning: `python -m benchmark.tune --suite paper [--workers N] [--storage URL]`.

One Optuna study per (dataset, model) of a suite's [tune] section, persisted in RDB storage
(SQLite `OUT/tuning/optuna.db` by default; any SQLAlchemy URL with --storage) and reopened with
`load_if_exists=True`, so an interrupted study continues. Every study gets:
- the same trial budget ([tune] trials); trials beyond it (possible when processes on several
  machines race at the end) are ignored by the export, so every model is judged on its first
  `trials` trials;
- a TPE sampler seeded with [tune] seed (+ the worker index, so workers do not propose the same
  points);
- the model's default configuration (as the suite resolves it) enqueued as trial 0;
- a median pruner fed by each validation evaluation (NDCG@10) of the trial's training run;
- optionally the same wall-clock training time per trial ([tune] trial_time_budget_s); the trial's
  run stops there and keeps its best evaluation. Equal seconds are not equal epochs: a model with
  slower epochs is judged earlier in its training (on the H200, 60 s gave DiffRec and ContrastVAE
  4-6 beauty epochs, SASRec 10-11), which favours fast-converging configurations;
- objective: the best validation NDCG@10 (unmasked) of the run. Tuning never reads the test set.

Search spaces live beside each model's config: a `SEARCH_SPACE` dict in the model's module (or,
for a variant with a space of its own such as `diffrec-paper`, the registry entry's `search_space`),
{key: ("float"|"log", low, high) | ("int", low, high[, step]) | ("choice", [values])}, with
`train.KEY` for TrainConfig keys and plain keys for the model's config. A model without one gets
the generic lr/dropout/hidden space (the tool says so). Keys the suite sets explicitly are fixed.

The export (`OUT/tuning/<study>/trials.csv` and `best.json`) is what suites with
params = "tuned" read, and what results/ commits; the storage itself is git-ignored (a binary file
every run rewrites).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import multiprocessing
import os
import re
import sys
import warnings
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from benchmark import data as data_mod
from benchmark.config import ConfigError, build_config
from benchmark.metrics import SELECTION_METRIC
from benchmark.records import environment, write_json_atomic
from benchmark.registry import build_model, model_spec
from benchmark.run import add_suite_arguments, check_arguments, check_committed_code, load_data, print_listing, suite_from_args
from benchmark.suite import Cell, Suite, split_setting, best_params_path, tuning_study
from benchmark.train import TrainConfig, fit

GENERIC_SPACE = {"train.lr": ("log", 1e-4, 1e-2), "dropout": ("float", 0.0, 0.5), "hidden": ("choice", [32, 64, 128])}
SPACE_KINDS = {"float": 3, "log": 3, "int": (3, 4), "choice": 2}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
CAUGHT = (ConfigError, FloatingPointError)  # a configuration that cannot train is a failed trial, not a crash

optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module prints one line per trial itself


# ---------------------------------------------------------------------------------------------
# Search spaces


def search_space(model: str, fixed: tuple[str, ...] = ()) -> tuple[dict, str]:
    """-> (space, where it came from) for a registered model; `fixed` keys are left out."""
    spec = model_spec(model)
    module = sys.modules[spec.cls.__module__]
    if spec.search_space is not None:
        space, origin = spec.search_space, f"the registry entry of {model}"
    elif hasattr(module, "SEARCH_SPACE"):
        space, origin = module.SEARCH_SPACE, f"{module.__name__}.SEARCH_SPACE"
    else:
        fields = {f.name for f in dataclasses.fields(spec.config)}
        space = {k: v for k, v in GENERIC_SPACE.items() if k.startswith("train.") or k in fields}
        origin = f"generic space (no SEARCH_SPACE in {module.__name__})"
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
# Storage and studies


def default_storage(out: str | Path) -> str:
    path = Path(out) / "tuning" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


class LockedSQLiteStorage(optuna.storages.RDBStorage):
    """SQLite has no SELECT ... FOR UPDATE, so two workers can both move the same waiting trial (the
    enqueued default) to RUNNING, or both number a new trial alike; the second worker then dies with
    "Cannot tell a COMPLETE trial". An exclusive file lock beside the database makes those
    read-check-write steps atomic across processes. Server databases lock rows themselves."""

    def __init__(self, url: str, **kwargs):
        super().__init__(url, **kwargs)
        self.lock_path = url.removeprefix("sqlite:///") + ".lock"

    @contextlib.contextmanager
    def _locked(self):
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create_new_trial(self, study_id, template_trial=None):
        with self._locked():
            return super().create_new_trial(study_id, template_trial)

    def set_trial_state_values(self, trial_id, state, values=None):
        with self._locked():
            return super().set_trial_state_values(trial_id, state, values)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB storage with a heartbeat, so trials of a killed worker are marked failed, not left running."""
    sqlite = url.startswith("sqlite:///") and url != "sqlite:///:memory:"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental" since optuna 2.9
        if sqlite:
            return LockedSQLiteStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}, heartbeat_interval=30, grace_period=120)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def open_study(name: str, storage, *, seed: int, pruner: str) -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if pruner == "median" else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def counted_trials(study: optuna.Study, budget: int) -> list[optuna.trial.FrozenTrial]:
    """The trials that use the budget: finished ones (failures of a broken configuration
    included, failures of a killed worker excluded), first `budget` by number."""
    used = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.state != TrialState.FAIL or "error" in t.user_attrs]
    return sorted(used, key=lambda t: t.number)[:budget]


# ---------------------------------------------------------------------------------------------
# Objective


class Objective:
    """Trains one configuration of a cell; returns its best validation NDCG@10."""

    def __init__(self, cell: Cell, space: dict, *, data_dir=None, device="cpu", time_budget_s: float = 0.0):
        self.cell, self.space, self.device = cell, space, device
        self.train_config = dict(cell.train_config)
        if time_budget_s:  # the trial cap, or the cell's own budget where that is smaller
            self.train_config["time_budget_s"] = min(time_budget_s, cell.train_config["time_budget_s"] or time_budget_s)
        _, self.split, self.max_len = load_data(cell, data_dir)  # the split's test part is never read

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        try:
            m_part, t_part = split_setting(params, self.cell.model, f"trial {trial.number}")
            tcfg = build_config(TrainConfig, {**self.train_config, **t_part}, where=f"trial {trial.number} train")
            model, _ = build_model(self.cell.model, {**self.cell.model_config, **m_part}, n_items=self.split.n_items, max_len=self.max_len, seed=self.cell.seed)

            def on_eval(epoch: int, score: float) -> None:
                trial.report(score, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation {SELECTION_METRIC} {score:.4f} at epoch {epoch}")

            fitted = fit(model, self.split, tcfg, seed=self.cell.seed, device=self.device, progress=False, on_eval=on_eval)
        except CAUGHT as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        scores = [point["valid"][SELECTION_METRIC] for point in fitted.curve]
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("best_epoch", fitted.best_epoch)
        trial.set_user_attr("train_seconds", round(fitted.train_seconds, 3))
        trial.set_user_attr("epochs_run", fitted.epochs_run)
        trial.set_user_attr("stopped", fitted.stopped)
        trial.set_user_attr("params_count", sum(p.numel() for p in model.parameters()))
        return max(scores)


def _stop_at_budget(budget: int):
    def callback(study: optuna.Study, trial) -> None:
        if len(counted_trials(study, budget)) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) >= budget:
            study.stop()

    return callback


def _log_trial(name: str):
    def callback(study: optuna.Study, trial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("error", "-")
        tqdm.write(f"  {name} trial {trial.number:3d} {trial.state.name:8s} {value}  {trial.params}")

    return callback


def optimize(
    cell: Cell, space: dict, storage_url: str, study_name: str, *, trials: int, budget: int, seed: int, pruner: str, time_budget_s: float = 0.0, data_dir=None, device="cpu", threads=0, quiet=False
) -> None:
    """Runs up to `trials` trials of a study in this process (one worker)."""
    if threads:
        torch.set_num_threads(threads)
    study = open_study(study_name, make_storage(storage_url), seed=seed, pruner=pruner)
    callbacks = [_stop_at_budget(budget)] + ([] if quiet else [_log_trial(study_name)])
    objective = Objective(cell, space, data_dir=data_dir, device=device, time_budget_s=time_budget_s)
    study.optimize(objective, n_trials=trials, catch=CAUGHT, callbacks=callbacks, gc_after_trial=True)


def _worker(kwargs: dict) -> None:
    optimize(**kwargs)


def tune_cell(
    cell: Cell, *, out, budget: int, seed: int = 0, pruner: str = "median", time_budget_s: float = 0.0, storage: str | None = None, workers: int = 1, fixed=(), data_dir=None, device="cpu", threads=0,
    quiet=False,
) -> dict | None:
    """Brings the study of one base cell to `budget` trials with `workers` local processes and
    exports it; returns the exported summary (None when the model has nothing to tune)."""
    name = tuning_study(cell.dataset, cell.model, cell.key)
    space, origin = search_space(cell.model, tuple(fixed))
    _, split, max_len = load_data(cell, data_dir)
    probe, _ = build_model(cell.model, cell.model_config, n_items=split.n_items, max_len=max_len)
    if not space or not probe.trainable:
        print(f"study {name}: nothing to tune ({'no trainable parameters' if space else 'empty search space'}); skipped", flush=True)
        return None
    if origin.startswith("generic"):
        print(f"study {name}: model {cell.model} uses the {origin}", flush=True)
    url = storage or default_storage(out)
    study = open_study(name, make_storage(url), seed=seed, pruner=pruner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if not study.get_trials(deepcopy=False):
        params, outside = default_params(cell, space)
        if outside:
            print(f"study {name}: defaults of {', '.join(outside)} lie outside the search space; trial 0 samples them", flush=True)
        study.enqueue_trial(params, user_attrs={"default": True})
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    remaining = budget - len(counted_trials(study, budget)) - running
    print(f"study {name}: {budget - remaining - running} of {budget} trials done, {running} running elsewhere, {max(remaining, 0)} to run ({workers} worker(s); {redact(url)})", flush=True)
    if remaining > 0:
        jobs = [
            dict(cell=cell, space=space, storage_url=url, study_name=name, trials=remaining // workers + (i < remaining % workers), budget=budget, seed=seed + i, pruner=pruner, time_budget_s=time_budget_s, data_dir=data_dir, device=device, threads=threads, quiet=quiet)
            for i in range(min(workers, remaining))
        ]
        if len(jobs) == 1:
            _worker(jobs[0])
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker, args=(job,)) for job in jobs]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            failed = [p.exitcode for p in procs if p.exitcode]
            if failed:
                raise RuntimeError(f"study {name}: {len(failed)} tuning worker(s) failed (exit codes {failed})")
    study = open_study(name, make_storage(url), seed=seed, pruner=pruner)
    return export_study(study, out=out, budget=budget, cell=cell, space=space, origin=origin, storage=url, seed=seed, pruner=pruner, time_budget_s=time_budget_s, device=device)


def export_study(
    study: optuna.Study, *, out, budget: int, cell: Cell, space: dict, origin: str, storage: str, seed: int, pruner: str, time_budget_s: float = 0.0, device="cpu"
) -> dict | None:
    """Writes OUT/tuning/<study>/trials.csv (every trial) and best.json (best of the budget)."""
    folder = best_params_path(Path(out) / "tuning", study.study_name).parent
    folder.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe()
    tmp = folder / ".trials.csv.tmp"
    frame.to_csv(tmp, index=False)
    tmp.replace(folder / "trials.csv")
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
        "objective": f"best validation {SELECTION_METRIC} (unmasked) of the training run; the test set is not evaluated",
        "budget": budget,
        "trials": len(counted),
        "states": {s.name: sum(t.state == s for t in counted) for s in FINISHED},
        "best_trial": best.number,
        "best_value": best.value,
        "params": best.params,
        "default_value": default.value if default else None,
        "space": {k: list(v) for k, v in space.items()},
        "space_origin": origin,
        "sampler": f"TPE, seed {seed} (+ worker index)",
        "pruner": f"{pruner} on validation {SELECTION_METRIC} per evaluation",
        "trial_time_budget_s": time_budget_s,
        "cell": cell.identity(),
        "environment": environment(device),
    }
    write_json_atomic(folder / "best.json", summary)
    return summary


def tune_suite(suite: Suite, *, out, storage: str | None = None, workers: int = 1, data_dir=None, device="cpu", threads=0, progress=True) -> list[dict]:
    t = suite.tune
    summaries = []
    for cell in tqdm(suite.tune_cells, desc=f"{suite.name} studies", unit="study", disable=not progress):
        summary = tune_cell(
            cell, out=out, budget=t["trials"], seed=t["seed"], pruner=t["pruner"], time_budget_s=t["trial_time_budget_s"], storage=storage, workers=workers,
            fixed=suite.fixed.get(cell.model, ()), data_dir=data_dir, device=device, threads=threads, quiet=not progress,
        )
        if summary:
            print(f"study {summary['study']}: best validation {SELECTION_METRIC} {summary['best_value']:.4f} (trial {summary['best_trial']} of {summary['trials']}; default {summary['default_value']}) {summary['params']}", flush=True)
            summaries.append(summary)
    return summaries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tune", description=__doc__.splitlines()[0])
    add_suite_arguments(p)
    p.add_argument("--trials", type=int, help="trial budget per study (default: the suite's [tune] trials)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study storage (default: sqlite:///OUT/tuning/optuna.db)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing each study")
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
        if args.threads:
            torch.set_num_threads(args.threads)
        suite = suite_from_args(args, p)
        if not args.allow_dirty:
            check_committed_code(Path(args.out), "benchmark.tune")
        tune_suite(suite, out=args.out, storage=args.storage, workers=max(1, args.workers), data_dir=args.data_dir, device=args.device, threads=args.threads, progress=not args.no_progress)
    except (ConfigError, data_mod.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
