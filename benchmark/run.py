"""Runs a suite: `python -m benchmark.run --suite smoke|quick|paper|full [options]`.

Each cell (dataset x model x seed x setting) trains with early stopping on validation NDCG@10,
is tested once, and writes one JSON record `OUT/runs/<cell key>.json` atomically. Cells whose
record already exists for the same resolved cell are skipped, so an interrupted suite (kill -9
included) resumes where it stopped; the training in progress continues from its last evaluation,
whose full state is kept in OUT/snapshots/ (git-ignored) until the cell's record is written, and
ends exactly as an uninterrupted run would (same device and training code: `records.code_digest`). Cells that differ only
in how the trained model scores (an ablation over DiffRec's sampler, say) train once: the first
keeps the model in OUT/checkpoints/ (git-ignored), the others load it. `--shard K/N` runs every N-th
training still to run (its cells together), so N processes started together (or machines sharing
OUT) split what is left evenly; `--claims DIR` lets processes with the same options take the
trainings first come, first served instead (no process idles while another has a queue); a cell
that another process finished meanwhile is skipped. `--only main|ablations` runs one part of it
(the main table first, say). A suite with
`[tune] auto = true` first tunes its studies (`benchmark.tune`); every run ends with the report
(`benchmark.report`).

OUT is `--out`, else results/ for a committed suite (`commit = true`) run as defined, else the
git-ignored runs-local/<suite>/ (smoke, user files, overrides). A run into results/ refuses to start
while the code it loads has uncommitted changes, unless `--allow-dirty`.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmark import data as data_mod
from benchmark.config import ConfigError, build_config, parse_assignments
from benchmark.metrics import PROTOCOL
from benchmark.records import RESULTS_DIR, RecordError, check_writable, code_digest, default_out, environment, git_commit, tuning_dirs, uncommitted_code, write_json_atomic
from benchmark.registry import MODELS, build_model, model_spec
from benchmark.splits import Split, leave_one_out
from benchmark.suite import MAIN_TAGS, Cell, Suite, load_suite_file, resolve_suite, suite_names
from benchmark.train import TrainConfig, evaluate, fit, load_state, load_trained, save_trained


def load_data(cell: Cell, data_dir=None) -> tuple[data_mod.SequenceData, Split, int]:
    """-> (dataset, leave-one-out split, max_len) of a cell (registered name or user file)."""
    if cell.source:
        ds = data_mod.load_dataset(file=cell.source["file"], fmt=cell.source["format"], min_core=cell.source.get("core"))
        if ds.sha256 != cell.source["sha256"]:
            raise data_mod.DataError(f"{cell.source['file']}: content changed since the suite was resolved (sha256 {ds.sha256[:12]})")
    else:
        ds = data_mod.load_dataset(cell.dataset, data_dir=data_dir)
    max_len = cell.data_options.get("max_len", ds.max_len)
    return ds, leave_one_out(ds, max_len, users=cell.data_options.get("users")), max_len


def snapshot_path(out: Path, cell: Cell) -> Path:
    return Path(out) / "snapshots" / f"{cell.training_key}.pt"


def run_cell(
    cell: Cell, *, data_dir=None, device: str = "cpu", progress: bool = True, on_eval=None, suite: str = "", checkpoints: Path | None = None, snapshot: Path | None = None
) -> dict:
    """Trains and tests one cell; returns its run record (not yet written).

    With a `checkpoints` folder the trained model is kept there under the cell's training key, or
    loaded from there when another cell of the same training made it first; then only the scoring
    (with the cell's inference keys) runs. With a `snapshot` path the training writes its state
    there after every evaluation and resumes from it (`benchmark.train.fit`)."""
    ds, split, max_len = load_data(cell, data_dir)
    tcfg = build_config(TrainConfig, cell.train_config, where="train")
    model, mcfg = build_model(cell.model, cell.model_config, n_items=split.n_items, max_len=max_len, seed=cell.seed)
    env = environment(device)
    saved = Path(checkpoints) / f"{cell.training_key}.pt" if checkpoints is not None else None
    reused = saved is not None and saved.exists()
    if reused:
        try:
            fitted, trained_on = load_trained(model, saved, device)
        except (KeyError, TypeError, RuntimeError) as exc:  # loads, but holds another model or version
            raise RecordError(f"{saved}: cannot load this checkpoint into {cell.model} ({type(exc).__name__}: another version's); delete it to train again") from None
    else:
        found = snapshot is not None and snapshot.exists()
        tag = {"training_key": cell.training_key, "code": code_digest(), "device": env["device"]}
        fitted = fit(model, split, tcfg, seed=cell.seed, device=device, progress=progress, on_eval=on_eval, snapshot=snapshot, snapshot_tag=tag)
        if found and not fitted.resumed_at:
            print(f"{snapshot}: made by other code or on another device; trained from the start", flush=True)
        trained_on = {
            "device": env["device"],
            "git_commit": env["git_commit"],
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resumed_at_epochs": fitted.resumed_at,  # an interrupted training continued from its snapshot
        }
        if saved is not None:
            save_trained(model, fitted, saved, trained_on)
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
            "early_stopping": f"patience {tcfg.patience} evaluations, every {tcfg.eval_every} epochs, max {tcfg.epochs} epochs",
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


def claim(claims: Path, training_key: str) -> bool:
    """Takes a training for this process: creates CLAIMS/<training key> unless it exists (atomic
    O_EXCL create, so of processes sharing CLAIMS exactly one gets it)."""
    claims.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(claims / training_key, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{socket.gethostname()} pid {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    return True


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
    for cell in {c.training_key: c for c in todo}.values():
        saved = [(snapshot_path(out, cell), "training snapshot")]
        if shared[cell.training_key] > 1:
            saved.append((out / "checkpoints" / f"{cell.training_key}.pt", "checkpoint"))
        for path, what in saved:
            try:
                if path.exists():
                    load_state(path, what)
            except RecordError:
                if path.exists():
                    raise


def run_suite(
    suite: Suite, *, out: Path, data_dir=None, device="cpu", progress=True, shard: tuple[int, int] = (0, 1), only: str | None = None, claims: Path | None = None
) -> list[Path]:
    """Runs the suite's cells that have no record yet (`only`: "main" or "ablations" cells).

    A training that several cells share (the same training key: a main cell and the inference
    points of an ablation) is kept in OUT/checkpoints/, so it runs once, whichever cell comes first.
    With `claims` (a folder), processes sharing it take the trainings first come, first served:
    each claims a training before its first cell and skips those another process claimed."""
    out = Path(out)
    git_commit(), code_digest()  # read now: the records and snapshots name the code this process started with
    shared = Counter(c.training_key for c in suite.cells)  # before `only`: `--only main` keeps for the ablations
    cells = [c for c in suite.cells if only is None or (c.tag in MAIN_TAGS) == (only == "main")]
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
    print(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run{where} -> {out / 'runs'}", flush=True)
    for name in suite.untuned:
        print(f"  no tuning study for {name}: default hyperparameters", flush=True)
    check_saved_states(out, todo, shared)
    written, claimed = [], {}  # claimed: training key -> whether this process holds it
    bar = tqdm(todo, desc=f"{suite.name} cells", unit="cell", disable=not progress, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(f"{cell.dataset}/{cell.model}/{cell.tag}/s{cell.seed}")
        if is_done(out, cell):  # another process sharing OUT finished it meanwhile
            tqdm.write(f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} [{cell.tag}] done meanwhile by another process")
            continue
        if claims is not None:
            if cell.training_key not in claimed:
                claimed[cell.training_key] = claim(claims, cell.training_key)
                if not claimed[cell.training_key]:
                    tqdm.write(f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} training {cell.training_key} claimed by another process")
            if not claimed[cell.training_key]:
                continue
        t0 = time.perf_counter()
        checkpoints = out / "checkpoints" if shared[cell.training_key] > 1 else None
        snapshot = snapshot_path(out, cell)
        record = run_cell(cell, data_dir=data_dir, device=device, progress=progress, suite=suite.name, checkpoints=checkpoints, snapshot=snapshot)
        written.append(write_json_atomic(record_path(out, cell), record))
        snapshot.unlink(missing_ok=True)
        m = record["metrics"]
        tqdm.write(
            f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} [{cell.tag}] test NDCG@10 {m['test']['NDCG@10']:.4f} "
            f"(masked {m['test_masked']['NDCG@10']:.4f}) HR@10 {m['test']['HR@10']:.4f}  {time.perf_counter() - t0:.0f}s"
        )
    return written


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `benchmark.run` and `benchmark.tune`."""
    p.add_argument("--suite", help=f"suite name ({', '.join(suite_names())}) or a .toml path")
    p.add_argument("--list", action="store_true", help="list suites, models and datasets, then exit")
    p.add_argument("--data-dir", help="data folder (default: $DIFFREC_BENCH_DATA, else ./data)")
    p.add_argument("--out", help="results folder (default: results/ for a committed suite without overrides, else runs-local/SUITE/)")
    p.add_argument("--datasets", nargs="+", help="override the suite's datasets")
    p.add_argument("--file", action="append", metavar="PATH", help="a dataset file of your own (with --format); replaces the suite's datasets unless --datasets is given")
    p.add_argument("--format", choices=data_mod.FORMATS, help="format of --file")
    p.add_argument("--core", type=int, metavar="K", help=f"k of the iterative k-core filter of an interactions --file (default {data_mod.DEFAULT_CORE}, as the registered interaction datasets; 1 keeps everything)")
    p.add_argument("--models", nargs="+", help="override the suite's models")
    p.add_argument("--seeds", nargs="+", type=int, help="override the suite's seeds (0 to 2**32 - 1)")
    p.add_argument("--set", action="append", metavar="SCOPE.KEY=VALUE", help="override a setting (train.lr=0.01, data.users=100, sasrec-ce.hidden=32, all.hidden=16, tune.trials=5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--allow-dirty", action="store_true", help="write into results/ even though the code has uncommitted changes")


def check_device(device: str) -> None:
    """A ConfigError unless `device` names a device this torch build can use (cpu, cuda[:N], mps)."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: not a device (cpu, cuda, cuda:N, mps)") from None
    if kind.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ConfigError(
                f"--device {device}: this PyTorch ({torch.__version__}) is built without CUDA; for a CUDA build relax the torch pin "
                "in pyproject.toml (a CPU wheel) and install a CUDA wheel of torch (https://pytorch.org/get-started/locally/)"
            )
        if not torch.cuda.is_available() or (kind.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    elif kind.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: MPS is not available here")
    elif kind.type != "cpu":
        raise ConfigError(f"--device {device!r}: not supported (cpu, cuda, cuda:N, mps)")


def check_arguments(args) -> None:
    """Options checked before anything is read or written (a ConfigError naming the option)."""
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be >= 0 (0 = torch's default)")
    if args.core is not None and (args.core < 1 or args.format != "interactions"):
        raise ConfigError(f"--core {args.core}: needs K >= 1 and an interactions --file")
    check_device(args.device)


def suite_from_args(args, p: argparse.ArgumentParser) -> Suite:
    if args.file and not args.format:
        p.error("--file needs --format")
    if args.format and not args.file:
        p.error("--format applies to --file only")
    name, raw = load_suite_file(args.suite)
    args.out = str(out_folder(args, name, raw))
    files = [(f, args.format) for f in args.file or []]
    suite = resolve_suite(
        name, raw, datasets=args.datasets, models=args.models, seeds=args.seeds, sets=parse_assignments(args.set), files=files, core=args.core, tuning_dir=tuning_dirs(args.out)
    )
    for cell in {(c.dataset, json.dumps(c.source)): c for c in suite.cells + suite.tune_cells}.values():  # missing data fails before training
        ds, _, _ = load_data(cell, args.data_dir)
        if cell.source and ds.unfiltered:
            (users, items), k = ds.unfiltered, cell.source["core"]
            print(f"{ds.path}: {k}-core filtering removed {users - ds.n_users} of {users} users and {items - ds.n_items} of {items} items", flush=True)
    return suite


def out_folder(args, name: str, raw: dict) -> Path:
    """--out, else results/ for a committed suite (`commit = true`) run as defined, else
    runs-local/<suite>/: smoke, and any run with --datasets, --models, --seeds, --set or --file."""
    if args.out:
        return Path(args.out)
    as_defined = not (args.datasets or args.models or args.seeds or args.set or args.file)
    return default_out(name, raw.get("commit") is True and as_defined)


def check_committed_code(out: Path, entry: str) -> None:
    """A run that writes into results/ refuses to start (ConfigError naming the files) while the
    code it loads (`records.module_closure(entry)`) has uncommitted changes, so every committed
    record names a commit that holds its code. A copy of the tree without git names its commit in
    $DIFFREC_BENCH_GIT_COMMIT, which is taken at its word unless it ends in +dirty."""
    if Path(out).resolve() != RESULTS_DIR.resolve():
        return
    named = os.environ.get("DIFFREC_BENCH_GIT_COMMIT")
    if named:
        if named.endswith("+dirty"):
            raise ConfigError(f"this run writes into {RESULTS_DIR}, but DIFFREC_BENCH_GIT_COMMIT={named} names uncommitted code; copy a clean checkout, or pass --allow-dirty")
        return
    changed = uncommitted_code(entry)
    if changed is None:
        raise ConfigError(f"this run writes into {RESULTS_DIR}, but git cannot tell whether its code is committed; set DIFFREC_BENCH_GIT_COMMIT to the commit the files come from, or pass --allow-dirty")
    if changed:
        raise ConfigError(
            f"this run writes into {RESULTS_DIR}, but the code it loads has uncommitted changes: {', '.join(changed)}; "
            "commit them (a committed record must name a commit that holds its code), or pass --allow-dirty"
        )


def print_listing() -> None:
    print("suites:")
    for name in suite_names():
        try:
            suite = resolve_suite(*load_suite_file(name))
            print(f"  {name:8s} {len(suite.cells):5d} cells  {suite.description}")
        except ConfigError as exc:
            print(f"  {name:8s} INVALID: {exc}")
    print("models:")
    for name, spec in MODELS.items():
        print(f"  {name:12s} {spec.about}")
    print("datasets:")
    for name, spec in data_mod.DATASETS.items():
        print(f"  {name:8s} {spec.format:12s} {spec.notes}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.splitlines()[0])
    add_suite_arguments(p)
    p.add_argument("--shard", metavar="K/N", help="run only trainings K, K+N, K+2N, ... of those still to run (0-based; cells sharing a training stay together), for splitting a suite across processes started together")
    p.add_argument(
        "--claims",
        metavar="DIR",
        help="processes given the same DIR (and the same suite options) take the trainings first come, first served; use a fresh DIR per batch of processes (a killed process's claim stays)",
    )
    p.add_argument("--only", choices=("main", "ablations"), help="run only the main table's cells, or only the ablation cells")
    p.add_argument("--no-tune", action="store_true", help="skip the suite's automatic tuning ([tune] auto = true)")
    p.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    args = p.parse_args(argv)
    if args.list:
        print_listing()
        return 0
    if not args.suite:
        p.error("--suite is required (or --list)")
    try:
        check_arguments(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        shard = parse_shard(args.shard)
        suite = suite_from_args(args, p)
        out = Path(args.out)
        if not args.allow_dirty:
            check_committed_code(out, "benchmark.run")
        check_writable(out / "runs")
        if suite.tune["auto"] and not args.no_tune:
            from benchmark.tune import tune_suite

            tune_suite(suite, out=out, data_dir=args.data_dir, device=args.device, threads=args.threads, progress=not args.no_progress)
            suite = suite_from_args(args, p)  # again, now with the tuned parameters
        run_suite(suite, out=out, data_dir=args.data_dir, device=args.device, progress=not args.no_progress, shard=shard, only=args.only, claims=Path(args.claims) if args.claims else None)
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
