"""Runs a suite: `python -m benchmark.run --suite smoke|quick|paper|breadth|full [options]`.

Each cell (dataset x model x seed x setting) trains with early stopping on validation NDCG@10,
is tested once, and writes one JSON record `OUT/runs/<cell key>.json` atomically. Cells whose
record already exists for the same resolved cell are skipped, so an interrupted suite (kill -9
included) resumes where it stopped; the training in progress continues from its last evaluation,
whose full state is kept in OUT/snapshots/ (git-ignored) until the cell's record is written, and
ends exactly as an uninterrupted run would (same device and training code: `records.code_digest`).
Cells that differ only in how the trained model scores (an ablation over DiffRec's sampler, say)
or in the rule that selects its checkpoint (`train.selection`) train once: the training keeps the
best model under each rule in OUT/checkpoints/ (git-ignored), the cells load theirs.

The unit of work is one training group (the cells sharing a training key). `--executor local` (the
default) runs the groups one after another in this process; `--executor ray` runs each as a Ray
task, on this machine or on a cluster (`--address`), and writes the records the tasks return
(`benchmark.executors`). `--shard K/N` runs every N-th training still to run (its cells together),
so N processes of a job array (or machines sharing OUT) started together split what is left
evenly. `--only main|ablations` runs one part of it (the main table first, say), `--tags` the cells
whose setting tag matches a pattern (`--tags 'train.adam_beta2=*'`: one ablation). A suite with `[tune] auto = true` first tunes its studies
(`benchmark.tune`, on the same executor); a suite with params = "tuned" refuses to train a tuned
model whose study is not exported (its cells would train at the defaults and be no cell of the
suite once it is) unless `--allow-untuned` (or `--no-tune` on a suite that tunes by itself); every
run ends with the report (`benchmark.report`).
`--plan` only prints the cells (of those `--only` and `--tags` keep) and trials still to run and their estimated CPU/GPU hours from
the existing records (`benchmark.plan`), and runs nothing.

OUT is `--out`, else results/ for a committed suite (`commit = true`) run as defined, else the
git-ignored runs-local/<suite>/ (smoke, user files, overrides). A run into results/ refuses to start
while the code it loads has uncommitted changes, unless `--allow-dirty`.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmark import data as data_mod
from benchmark.cli import add_suite_arguments, check_arguments, check_committed_code, load_data, print_listing, suite_from_args
from benchmark.config import ConfigError, build_config
from benchmark.executors import LocalExecutor, add_executor_arguments, check_executor_arguments, make_executor, node_name
from benchmark.metrics import PROTOCOL, SELECTION_METRIC
from benchmark.records import RecordError, check_writable, code_digest, environment, git_commit, remove_with_temps, write_json_atomic
from benchmark.registry import build_model, model_spec
from benchmark.suite import MAIN_TAGS, Cell, Suite, checkpoint_key
from benchmark.train import TrainConfig, evaluate, fit_rules, load_state, load_trained, save_trained


def snapshot_path(out: Path, cell: Cell) -> Path:
    return Path(out) / "snapshots" / f"{cell.training_key}.pt"


def run_cell(
    cell: Cell, *, data_dir=None, device: str = "cpu", progress: bool = True, on_eval=None, suite: str = "", checkpoints: Path | None = None, snapshot: Path | None = None,
    selections: tuple[str, ...] = (),
) -> dict:
    """Trains and tests one cell; returns its run record (not yet written).

    The training also follows the selection rules in `selections` (the cell's own always). With a
    `checkpoints` folder the model selected under each rule is kept there (`Cell.checkpoint_key`),
    or the cell's is loaded from there when another cell of the same training made it first; then
    only the scoring (with the cell's inference keys) runs. With a `snapshot` path the training
    writes its state there after every evaluation and resumes from it (`benchmark.train.fit_rules`)."""
    ds, split, max_len = load_data(cell, data_dir)
    tcfg = build_config(TrainConfig, cell.train_config, where="train")
    model, mcfg = build_model(cell.model, cell.model_config, n_items=split.n_items, max_len=max_len, seed=cell.seed)
    env = environment(device)
    saved = Path(checkpoints) / f"{cell.checkpoint_key}.pt" if checkpoints is not None else None
    reused = saved is not None and saved.exists()
    if reused:
        try:
            fitted, trained_on = load_trained(model, saved, device)
        except (KeyError, TypeError, RuntimeError) as exc:  # loads, but holds another model or version
            raise RecordError(f"{saved}: cannot load this checkpoint into {cell.model} ({type(exc).__name__}: another version's); delete it to train again") from None
    else:
        found = snapshot is not None and snapshot.exists()
        rules = tuple(sorted({cell.selection, *selections}))
        tag = {"training_key": cell.training_key, "code": code_digest(), "device": env["device"]}
        by_rule = fit_rules(model, split, tcfg, rules, seed=cell.seed, device=device, progress=progress, on_eval=on_eval, snapshot=snapshot, snapshot_tag=tag)
        fitted, best_state = by_rule[cell.selection]
        if found and not fitted.resumed_at:
            print(f"{snapshot}: made by other code, on another device or for other selection rules; trained from the start", flush=True)
        trained_on = {
            "device": env["device"],
            "git_commit": env["git_commit"],
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resumed_at_epochs": fitted.resumed_at,  # an interrupted training continued from its snapshot
            "selections": list(rules),  # the training went on until each of these rules had stopped
        }
        if saved is not None:
            for rule, (rule_fitted, state) in by_rule.items():  # state None: nothing to train, never evaluated
                path = saved.parent / f"{checkpoint_key(cell.training_key, rule)}.pt"
                save_trained(model.state_dict() if state is None else state, rule_fitted, path, {**trained_on, "resumed_at_epochs": rule_fitted.resumed_at})
        if best_state is not None:
            model.load_state_dict(best_state)
    if cell.inference:  # the same parameters, scored with the cell's sampler settings
        trained = model
        model, mcfg = build_model(cell.model, cell.scoring_config, n_items=split.n_items, max_len=max_len)
        model.load_state_dict(trained.state_dict())
        model.to(device)
    valid = evaluate(model, split.valid, batch_size=tcfg.eval_batch_size, seed=cell.seed, device=device)
    test = evaluate(model, split.test, batch_size=tcfg.eval_batch_size, seed=cell.seed + 1, device=device)
    epochs = fitted.epoch_seconds
    return {
        "key": cell.key,
        "suite": suite,
        "tag": cell.tag,
        "dataset": {**ds.stats(), "name": cell.dataset, "format": ds.format, "users_used": split.n_users},
        "model": cell.model,
        "model_about": model_spec(cell.model).about,
        "seed": cell.seed,
        "config": {"model": mcfg, "train": cell.train_config, "data": cell.data_options},
        "cell": cell.identity(),
        "tuning": cell.tuning,
        "protocol": {
            "split": "leave-one-out (last item test, second-to-last validation, rest training)",
            "max_len": max_len,
            "train_targets": "every next-item position of the training prefix (within max_len)",
            **PROTOCOL,
            "selection": f"validation {SELECTION_METRIC}, {tcfg.selection}",
            "early_stopping": f"patience {tcfg.patience} evaluations, every {tcfg.eval_every} epochs, " + (f"min {tcfg.min_epochs}, " if tcfg.min_epochs else "") + f"max {tcfg.epochs} epochs",
            **({"inference": {"scored_with": cell.inference, "trained_and_selected_with": {k: cell.model_config[k] for k in cell.inference}}} if cell.inference else {}),
        },
        "training": {"key": cell.training_key, "reused": reused, **trained_on},  # reused: curve and train timings are the checkpoint's
        "environment": env,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": sum(p.numel() for p in model.parameters()),
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "stopped": fitted.stopped,
        "timings": {
            "train_seconds": fitted.train_seconds,
            "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else 0.0,
            "epoch_seconds": epochs,
            "eval_seconds_valid": valid["seconds"],
            "eval_seconds_test": test["seconds"],
        },
        "curve": fitted.curve,
        "metrics": {
            "valid": valid["metrics"],
            "test": test["metrics"],
            "valid_masked": valid["metrics_masked"],
            "test_masked": test["metrics_masked"],
        },
        "per_user": {"test_ranks": test["ranks"].tolist(), "test_ranks_masked": test["ranks_masked"].tolist()},
    }


def record_path(out: Path, cell: Cell) -> Path:
    return Path(out) / "runs" / f"{cell.key}.json"


def is_done(out: Path, cell: Cell) -> bool:
    """A record exists for this key and was made by the same resolved cell. A file there that is
    not a JSON object (truncated, say) is replaced by running the cell; one this process may not
    read is a RecordError (another user's record is not run again and overwritten)."""
    path = record_path(out, cell)
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc}); make it readable, or delete it to run the cell again") from None
    if not isinstance(stored, dict):
        return False
    stored = stored.get("cell")
    if stored is None:
        return True  # records from before cells were stored: the key is the check
    mine, theirs = cell.identity(), dict(stored)
    for d in (mine, theirs):
        d.pop("tuning", None)
        d.get("source", {}).pop("file", None)
    return mine == theirs


def remove_stale_temps(out: Path, min_age_s: float = 600.0) -> list[Path]:
    """Temporary files of writes that a killed run never finished (`.NAME.json.XXXX.tmp`); a write
    takes milliseconds, so one younger than `min_age_s` may be another live process's and stays."""
    now = time.time()
    stale = sorted(p for p in (Path(out) / "runs").glob(".*.json.*.tmp") if now - p.stat().st_mtime >= min_age_s)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def check_saved_states(out: Path, todo: list[Cell], shared: Counter) -> None:
    """Loads the snapshots and checkpoints that the cells to run will load, so that a damaged one
    stops the run before any training (a RecordError naming it), not after the trainings before it.
    One that disappears meanwhile was finished by another process sharing OUT."""
    saved = {snapshot_path(out, c): "training snapshot" for c in todo}
    saved.update({out / "checkpoints" / f"{c.checkpoint_key}.pt": "checkpoint" for c in todo if shared[c.training_key] > 1})
    for path, what in saved.items():
        try:
            if path.exists():
                load_state(path, what)
        except RecordError:
            if path.exists():
                raise


def chosen(cell: Cell, only: str | None = None, tags: list[str] | None = None) -> bool:
    """Whether `--only` ("main" or "ablations") and `--tags` (shell-style patterns, one of which
    the whole tag must match) keep the cell."""
    return (only is None or (cell.tag in MAIN_TAGS) == (only == "main")) and (not tags or any(fnmatch.fnmatchcase(cell.tag, t) for t in tags))


def check_studies(suite: Suite, out: Path, args) -> None:
    """Refuses (ConfigError) to train the cells of `Suite.awaiting_studies` unless --allow-untuned, or
    --no-tune on a suite that tunes by itself."""
    if args.allow_untuned or (suite.tune["auto"] and args.no_tune):
        return
    pending = [c for c in suite.cells if chosen(c, args.only, args.tags) and not is_done(out, c)]
    if waiting := suite.awaiting_studies(pending):
        where = f"run python -m benchmark.tune --suite {suite.name} first" if suite.tune_cells else "this suite tunes none itself: export them first with python -m benchmark.tune on the suite that tunes the dataset it borrows from (params_from)"
        raise ConfigError(
            f"suite {suite.name}: no exported study yet for {len(waiting)} dataset/model pair(s) ({', '.join(waiting[:4])}{', ...' if len(waiting) > 4 else ''}), "
            f"whose cells would train at default hyperparameters; {where}, leave them out with --models, or pass --allow-untuned"
        )


def run_group(
    cells: list[Cell], *, out: Path, data_dir=None, device: str = "cpu", threads: int = 0, progress: bool = False, suite: str = "", keep_checkpoint: bool = False, executor: str = "local"
) -> dict[str, dict]:
    """Runs the cells of one training (one training key), the unit of work of an executor, except
    those another process sharing OUT finished meanwhile. -> {cell key: record}, each record naming
    the executor and the node that made it; the driver writes them, so a worker needs no shared
    filesystem for records. The training's snapshot and, when several cells share it, its
    checkpoint go under OUT on the worker's filesystem."""
    if threads:
        torch.set_num_threads(threads)
    checkpoints = Path(out) / "checkpoints" if keep_checkpoint else None
    # one training selects a model under each rule that a cell still to score needs
    selections = tuple(c.selection for c in cells if not is_done(out, c) and (checkpoints is None or not (checkpoints / f"{c.checkpoint_key}.pt").exists()))
    records = {}
    for cell in cells:
        if is_done(out, cell):
            continue
        record = run_cell(cell, data_dir=data_dir, device=device, progress=progress, suite=suite, checkpoints=checkpoints, snapshot=snapshot_path(out, cell), selections=selections)
        records[cell.key] = {**record, "executor": {"name": executor, "node": node_name()}}
    return records


def run_suite(
    suite: Suite, *, out: Path, data_dir=None, device="cpu", threads: int = 0, progress=True, shard: tuple[int, int] = (0, 1), only: str | None = None, tags: list[str] | None = None, executor=None
) -> list[Path]:
    """Runs the suite's cells that have no record yet (those that `only` and `tags` keep: `chosen`), one
    training group per task of `executor` (default: in this process), and writes each record as
    its group returns.

    A training that several cells share (the same training key: a main cell and the inference
    points of an ablation) runs once, in one task, and is kept in OUT/checkpoints/ for the cells of
    it that a later run (`--only`) scores."""
    out = Path(out)
    executor = executor or LocalExecutor()
    git_commit(), code_digest()  # read now: the records and snapshots name the code this process started with
    shared = Counter(c.training_key for c in suite.cells)  # before `only`/`tags`: `--only main` keeps for the ablations
    cells = [c for c in suite.cells if chosen(c, only, tags)]
    for path in remove_stale_temps(out):
        print(f"removed unfinished write {path.name}", flush=True)
    pending = [c for c in cells if not is_done(out, c)]
    # Shards split the trainings still to run (in suite order), so N processes started together get
    # even shares; the cells of one training stay in one shard.
    trainings = list(dict.fromkeys(c.training_key for c in pending))
    k, n = shard
    mine = {t: i for i, t in enumerate(trainings) if i % n == k}
    todo = sorted((c for c in pending if c.training_key in mine), key=lambda c: mine[c.training_key])
    where = f", {len(todo)} of them in shard {k}/{n}" if n > 1 else ""
    print(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run{where} -> {out / 'runs'} ({executor.describe()})", flush=True)
    for name in dict.fromkeys(f"{c.dataset}/{c.model}" for c in todo if c.key not in suite.study_free):
        if name in suite.untuned:  # of the cells this run trains
            print(f"  no tuning study for {name}: default hyperparameters", flush=True)
    check_saved_states(out, todo, shared)
    groups = {}
    for cell in todo:
        groups.setdefault(cell.training_key, []).append(cell)
    jobs = [  # absolute paths: a Ray worker's working folder is not this one
        dict(cells=group, out=out.resolve(), data_dir=data_dir and Path(data_dir).resolve(), device=device, threads=threads, progress=progress and executor.name == "local", suite=suite.name, keep_checkpoint=shared[key] > 1, executor=executor.name)
        for key, group in groups.items()
    ]
    written, t0 = [], time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"{suite.name} cells", unit="cell", disable=not progress, dynamic_ncols=True)
    for job, records in executor.map(run_group, jobs):
        for cell in job["cells"]:
            record = records.get(cell.key)
            if record is None:
                tqdm.write(f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} [{cell.tag}] done meanwhile by another process")
                bar.update()
                continue
            written.append(write_json_atomic(record_path(out, cell), record))
            m = record["metrics"]
            tqdm.write(
                f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} [{cell.tag}] test NDCG@10 {m['test']['NDCG@10']:.4f} "
                f"(masked {m['test_masked']['NDCG@10']:.4f}) HR@10 {m['test']['HR@10']:.4f}  ({record['executor']['node']})"
            )
            bar.update()
        remove_with_temps(snapshot_path(out, job["cells"][0]))  # OUT shared with the workers: the finished training's snapshot
    bar.close()
    print(f"suite {suite.name}: {len(written)} records written in {time.perf_counter() - t0:.1f}s", flush=True)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.splitlines()[0])
    add_suite_arguments(p)
    add_executor_arguments(p)
    p.add_argument(
        "--shard", metavar="K/N", help="run only trainings K, K+N, K+2N, ... of those still to run (0-based; cells sharing a training stay together), for a job array (Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
    )
    p.add_argument("--only", choices=("main", "ablations"), help="run only the main table's cells, or only the ablation cells")
    p.add_argument("--tags", nargs="+", metavar="PATTERN", help="run only the cells whose setting tag matches one of these shell-style patterns ('default' is the main table's; quote them)")
    p.add_argument("--no-tune", action="store_true", help="skip the suite's automatic tuning ([tune] auto = true); its models train at their defaults")
    p.add_argument("--allow-untuned", action="store_true", help="train the cells of a tuned suite whose study is not exported yet at default hyperparameters (refused otherwise)")
    p.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    p.add_argument("--plan", action="store_true", help="print the cells and tuning trials still to run and an estimate of their CPU/GPU hours from OUT's records, then exit (nothing runs or is written)")
    p.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    args = p.parse_args(argv)
    if args.list:
        print_listing()
        return 0
    if not args.suite:
        p.error("--suite is required (or --list)")
    if args.json and not args.plan:
        p.error("--json applies to --plan only")
    try:
        check_arguments(args)
        check_executor_arguments(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        shard = parse_shard(args.shard)
        suite = suite_from_args(args, p)
        for pattern in args.tags or ():  # a mistyped pattern would run nothing, silently
            if not any(chosen(c, tags=[pattern]) for c in suite.cells):
                raise ConfigError(f"--tags {pattern!r} matches no cell of suite {suite.name} (a pattern matches the whole tag: 'steps=*', '*adam_beta2=0.98')")
        out = Path(args.out)
        if args.plan:
            from benchmark.plan import as_json, render, suite_plan

            rows = suite_plan(suite, out, keep=lambda c: chosen(c, args.only, args.tags))
            print(as_json(suite, rows) if args.json else render(suite, rows, out))
            return 0
        tunes_first = suite.tune["auto"] and not args.no_tune
        if not tunes_first:
            check_studies(suite, out, args)  # before anything is written
        if not args.allow_dirty:
            check_committed_code(out, "benchmark.run")
        check_writable(out / "runs")
        executor = make_executor(args)
        if tunes_first:
            from benchmark.tune import tune_suite

            tune_suite(suite, out=out, data_dir=args.data_dir, device=args.device, threads=args.threads, progress=not args.no_progress, executor=executor)
            suite = suite_from_args(args, p)  # again, now with the tuned parameters
            check_studies(suite, out, args)
        run_suite(suite, out=out, data_dir=args.data_dir, device=args.device, threads=args.threads, progress=not args.no_progress, shard=shard, only=args.only, tags=args.tags, executor=executor)
        if not args.no_report:
            from benchmark.report import write_report

            for path in write_report(out, suites=[suite.name]):
                print(f"wrote {path}")
    except (ConfigError, data_mod.DataError, RecordError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
