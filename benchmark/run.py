"""Runs a suite: `python -m benchmark.run --suite smoke|quick|paper|full [options]`.

Each cell (dataset x model x seed x setting) trains with early stopping on validation NDCG@10,
is tested once, and writes one JSON record `OUT/runs/<cell key>.json` atomically. Cells whose
record already exists are skipped, so an interrupted suite resumes where it stopped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from benchmark import data as data_mod
from benchmark.config import ConfigError, build_config, parse_assignments
from benchmark.metrics import PROTOCOL
from benchmark.records import PROJECT_ROOT, environment, write_json_atomic
from benchmark.registry import MODELS, build_model
from benchmark.splits import leave_one_out
from benchmark.suite import Cell, load_suite_file, resolve_suite, suite_names
from benchmark.table import write_tables
from benchmark.train import TrainConfig, evaluate, fit, seed_everything

DEFAULT_OUT = PROJECT_ROOT / "results"


def run_cell(cell: Cell, *, data_dir=None, device: str = "cpu", progress: bool = True, on_eval=None, suite: str = "") -> dict:
    """Trains and tests one cell; returns its run record (not yet written)."""
    ds = data_mod.load_dataset(cell.dataset, data_dir=data_dir)
    max_len = cell.data_options.get("max_len", ds.max_len)
    split = leave_one_out(ds, max_len, users=cell.data_options.get("users"))
    tcfg = build_config(TrainConfig, cell.train_config, where="train")
    seed_everything(cell.seed)  # the initialisation is part of the seeded run
    model, mcfg = build_model(cell.model, cell.model_config, n_items=split.n_items, max_len=max_len)
    fitted = fit(model, split, tcfg, seed=cell.seed, device=device, progress=progress, on_eval=on_eval)
    valid = evaluate(model, split.valid, batch_size=tcfg.eval_batch_size, seed=cell.seed, device=device)
    test = evaluate(model, split.test, batch_size=tcfg.eval_batch_size, seed=cell.seed + 1, device=device)
    epochs = fitted.epoch_seconds
    return {
        "key": cell.key,
        "suite": suite,
        "tag": cell.tag,
        "dataset": {**ds.stats(), "format": ds.format, "users_used": split.n_users},
        "model": cell.model,
        "seed": cell.seed,
        "config": {"model": mcfg, "train": cell.train_config, "data": cell.data_options},
        "protocol": {
            "split": "leave-one-out (last item test, second-to-last validation, rest training)",
            "max_len": max_len,
            "train_targets": "every next-item position of the training prefix (within max_len)",
            **PROTOCOL,
            "early_stopping": f"patience {tcfg.patience} evaluations, every {tcfg.eval_every} epochs, max {tcfg.epochs} epochs",
        },
        "environment": environment(device),
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


def run_suite(suite, *, out: Path, data_dir=None, device="cpu", progress=True) -> list[Path]:
    runs = out / "runs"
    done = [c for c in suite.cells if (runs / f"{c.key}.json").exists()]
    todo = [c for c in suite.cells if c not in done]
    print(f"suite {suite.name}: {len(suite.cells)} cells, {len(done)} already done, {len(todo)} to run -> {runs}", flush=True)
    written = []
    bar = tqdm(todo, desc=f"{suite.name} cells", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell.dataset}/{cell.model}/s{cell.seed}")
        t0 = time.perf_counter()
        record = run_cell(cell, data_dir=data_dir, device=device, progress=progress, suite=suite.name)
        written.append(write_json_atomic(runs / f"{cell.key}.json", record))
        m = record["metrics"]
        tqdm.write(
            f"{cell.dataset:8s} {cell.model:12s} s{cell.seed} [{cell.tag}] test NDCG@10 {m['test']['NDCG@10']:.4f} "
            f"(masked {m['test_masked']['NDCG@10']:.4f}) HR@10 {m['test']['HR@10']:.4f}  {time.perf_counter() - t0:.0f}s"
        )
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.splitlines()[0])
    p.add_argument("--suite", help=f"suite name ({', '.join(suite_names())}) or a .toml path")
    p.add_argument("--list", action="store_true", help="list suites, models and datasets, then exit")
    p.add_argument("--data-dir", help="data folder (default: $DIFFREC_BENCH_DATA, else ./data)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default: results/)")
    p.add_argument("--datasets", nargs="+", help="override the suite's datasets")
    p.add_argument("--models", nargs="+", help="override the suite's models")
    p.add_argument("--seeds", nargs="+", type=int, help="override the suite's seeds")
    p.add_argument("--set", action="append", metavar="SCOPE.KEY=VALUE", help="override a setting (train.lr=0.01, data.users=100, sasrec-ce.hidden=32, all.hidden=16)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.list:
        print("suites:  ", ", ".join(suite_names()))
        print("models:  ", ", ".join(MODELS))
        print("datasets:", ", ".join(data_mod.DATASETS))
        return 0
    if not args.suite:
        p.error("--suite is required (or --list)")
    try:
        name, raw = load_suite_file(args.suite)
        suite = resolve_suite(name, raw, datasets=args.datasets, models=args.models, seeds=args.seeds, sets=parse_assignments(args.set))
        for dataset in sorted({c.dataset for c in suite.cells}):  # fail on missing data before training
            data_mod.load_dataset(dataset, data_dir=args.data_dir)
        out = Path(args.out)
        run_suite(suite, out=out, data_dir=args.data_dir, device=args.device, progress=not args.no_progress)
        for path in write_tables(out, suite.name):
            print(f"wrote {path}")
    except (ConfigError, data_mod.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
