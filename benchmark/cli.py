"""What `benchmark.run` and `benchmark.tune` share: their suite options, the checks
run before anything is read or written, and loading a suite and a cell's data. It imports neither
of them, so they do not import each other."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from benchmark import data as data_mod
from benchmark.config import ConfigError, parse_assignments
from benchmark.records import RESULTS_DIR, default_out, tuning_dirs, uncommitted_code
from benchmark.registry import MODELS
from benchmark.splits import Split, leave_one_out
from benchmark.suite import Cell, Suite, load_suite_file, resolve_suite, suite_names


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
