"""Checks a run record: `python -m benchmark.reproduce RECORD.json [--check-only]`.

Without options it re-runs exactly the cell the record describes (its stored resolved cell: model
and training config, data options, seed, tag, inference keys), on the record's dataset (refused
unless its sha256 is the record's), device kind (cpu or cuda) and torch thread count, through the
code path of `benchmark.run` (`run_cell`), into a scratch folder (a temporary one unless --out; never
results/). Then it prints every metric stored and reproduced with their absolute and relative
difference, how many users' test ranks differ, what differs in the environment (commit, package
versions, CPU/GPU, threads, Python) and a verdict:
    identical          every metric and every per-user rank equal, bit for bit    exit 0
    within tolerance   every metric within --atol + --rtol * |stored|             exit 0
    different          otherwise (the metrics outside are named)                  exit 1
A bad record, a missing file, a changed dataset or an unusable device exit 2 with one line.

An inference-only ablation point (a sampler scored on a model another cell trained) trains its base
model and scores it with the point's inference keys, as its first cell in `benchmark.run` does. A
training stopped by its wall-clock time budget depends on the machine's speed, so it is not
expected to reproduce bit for bit: a warning says so, and it runs anyway.

`--check-only` trains nothing: it recomputes the test metrics (unmasked and history-masked) from
the record's stored per-user test ranks with the protocol's own function
(`benchmark.metrics.metrics_from_ranks`) and compares them with the stored ones in the same way.
Validation metrics have no stored ranks, so they are not checked.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from benchmark.config import ConfigError
from benchmark.data import DataError
from benchmark.metrics import metrics_from_ranks
from benchmark import records
from benchmark.records import PROJECT_ROOT, RecordError, code_digest, device_kind, git_commit, module_closure, write_json_atomic
from benchmark.registry import MODELS, model_spec
from benchmark.run import load_data, record_path, run_cell
from benchmark.suite import Cell

EXIT_SAME, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2
RANKS = {"test": "test_ranks", "test_masked": "test_ranks_masked"}  # metric block -> per_user key
RERUN_KEYS = ("cell", "environment")  # beyond records.RECORD_FIELDS


def read_record(path: str | Path) -> dict:
    """`records.read_record`, plus what a rerun needs: the stored cell and environment, and metrics
    that are numbers (a RecordError naming the file otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(f"{path}: is a directory; give one run record (a .json file under runs/)")
    try:
        record = records.read_record(path)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc})") from None
    missing = [k for k in RERUN_KEYS if k not in record]
    if missing:
        raise RecordError(f"{path}: not a run record this can rerun (no {missing[0]!r})")
    for block, values in record["metrics"].items():
        if not isinstance(values, dict):
            raise RecordError(f"{path}: metrics.{block} is not a table of metrics")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"{path}: metrics.{block}.{name} is not a number")
    return record


def record_cell(record: dict, where: str) -> Cell:
    """The cell that made `record`; its key must be the record's (else the cell was edited)."""
    cell = Cell.from_identity(record["cell"], where=f"{where}: cell")
    if cell.model not in MODELS:
        raise RecordError(f"{where}: unknown model {cell.model!r} (known: {', '.join(MODELS)})")
    if cell.key != record["key"]:
        raise RecordError(f"{where}: its stored cell has key {cell.key}, not the record's {record['key']} (the record was edited?)")
    return cell


def within(stored: float, value: float, rtol: float, atol: float) -> bool:
    """numpy.isclose's rule, |value - stored| <= atol + rtol * |stored|; NaN is never within."""
    return bool(abs(value - stored) <= atol + rtol * abs(stored))


def metric_rows(stored: dict, reproduced: dict, rtol: float = 0.0, atol: float = 0.0) -> list[dict]:
    """One row per metric of every block of `stored` ({"test": {"NDCG@10": v, ...}, ...}) that
    `reproduced` has, in the stored order: values, |difference|, relative difference, and status
    "equal" (bit for bit), "within" (tolerance) or "DIFFERENT"."""
    rows = []
    for block, values in stored.items():
        if block not in reproduced:
            continue
        for metric, a in values.items():
            b = reproduced[block].get(metric, float("nan"))
            diff = abs(b - a)
            status = "equal" if a == b else "within" if within(a, b, rtol, atol) else "DIFFERENT"
            rows.append({"block": block, "metric": metric, "stored": a, "reproduced": b, "abs_diff": diff, "rel_diff": diff / abs(a) if a else (0.0 if diff == 0 else float("inf")), "status": status})
    return rows


def rank_differences(stored: dict, reproduced: dict) -> dict[str, int]:
    """per_user key -> number of users whose rank differs (all of them when the counts differ)."""
    out = {}
    for key in RANKS.values():
        a, b = np.asarray(stored.get(key, [])), np.asarray(reproduced.get(key, []))
        out[key] = int((a != b).sum()) if a.shape == b.shape else max(len(a), len(b))
    return out


def verdict(rows: list[dict], rank_diffs: dict[str, int] | None = None) -> str:
    if all(r["status"] == "equal" for r in rows) and not any((rank_diffs or {}).values()):
        return "identical"
    if all(r["status"] != "DIFFERENT" for r in rows):
        return "within tolerance"
    return "different"


def metrics_table(rows: list[dict], label: str = "reproduced") -> str:
    table = [[r["block"], r["metric"], f"{r['stored']:.10f}", f"{r['reproduced']:.10f}", f"{r['abs_diff']:.3g}", f"{r['rel_diff']:.3g}", r["status"]] for r in rows]
    return tabulate(table, headers=["block", "metric", "stored", label, "abs diff", "rel diff", ""], disable_numparse=True)


def environment_rows(stored: dict, here: dict) -> list[tuple[str, str, str, str]]:
    """(item, record, here, "same" / "DIFFERS") for what can change a result: code, packages, hardware."""
    def items(env):
        packages = env.get("packages", {})
        return {
            "git commit": env.get("git_commit"),
            "python": env.get("python"),
            "torch": packages.get("torch"),
            "numpy": packages.get("numpy"),
            "device": env.get("device"),
            "torch threads": env.get("torch_threads"),
            "host CPUs": env.get("host_cpus"),
        }

    a, b = items(stored), items(here)
    return [(name, str(a[name]), str(b[name]), "same" if a[name] == b[name] else "DIFFERS") for name in a]


def changed_code(commit: str, model: str) -> list[str] | None:
    """Files that a run of `model` executes (the model's modules and the benchmark's: protocol,
    training, registry; not the other models') that differ between `commit` and the working tree
    here; None when git cannot tell (no repository, an unknown commit)."""
    files = set(module_closure(model_spec(model).cls.__module__)) | {p for p in module_closure("benchmark.run") if p.parent.name == "benchmark"}
    paths = sorted(p.relative_to(PROJECT_ROOT).as_posix() for p in files)
    try:
        out = subprocess.run(["git", "diff", "--name-only", commit.removesuffix("+dirty"), "--", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() if out.returncode == 0 else None


def print_verdict(rows: list[dict], result: str, rtol: float, atol: float) -> None:
    outside = [f"{r['block']}/{r['metric']}" for r in rows if r["status"] == "DIFFERENT"]
    tolerance = f" (rtol {rtol:g}, atol {atol:g})" if rtol or atol else ""
    print(f"verdict: {result}{tolerance}" + (f"; outside the tolerance: {', '.join(outside)}" if outside else ""))


def check_only(record: dict, rtol: float, atol: float) -> int:
    """Compares the stored test metrics with those recomputed from the stored per-user ranks."""
    per_user = record.get("per_user", {})
    recomputed = {block: metrics_from_ranks(per_user[key]) for block, key in RANKS.items() if key in per_user}
    if not recomputed:
        raise RecordError(f"record {record['key']}: no stored per-user ranks (per_user.test_ranks) to check against")
    rows = metric_rows(record["metrics"], recomputed, rtol, atol)
    print(metrics_table(rows, "recomputed"))
    users = record["dataset"].get("users_used")
    for block, key in RANKS.items():
        if key in per_user and users is not None and len(per_user[key]) != users:
            print(f"warning: per_user.{key} has {len(per_user[key])} ranks for {users} users evaluated")
    print("valid and valid_masked: no per-user ranks are stored for validation, so they are not checked")
    result = verdict(rows)
    print_verdict(rows, result, rtol, atol)
    return EXIT_DIFFERENT if result == "different" else EXIT_SAME


def scratch_folder(out: str | None) -> Path:
    results = (PROJECT_ROOT / "results").resolve()
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="diffrec-reproduce-"))
    if folder.resolve() == results or results in folder.resolve().parents:
        raise RecordError(f"--out {out}: is inside results/; reproduce writes only to a scratch folder")
    if folder.exists() and not folder.is_dir():
        raise RecordError(f"--out {out}: is a file, not a folder")
    return folder


def reproduce(record: dict, cell: Cell, args) -> int:
    """Re-runs `cell` as `benchmark.run` would, writes the new record under the scratch folder and
    prints the comparison; -> exit code."""
    stored_env = record["environment"]
    made_kind = "cuda" if device_kind(str(stored_env.get("device", "cpu"))) == "gpu" else "cpu"  # the torch device type
    device = args.device or made_kind
    if device.startswith("cuda") and not torch.cuda.is_available():
        made_on = f"on the GPU {stored_env.get('device')!r}" if made_kind == "cuda" else "on the CPU"
        raise RecordError(f"the record was made {made_on}, and torch {torch.__version__} sees no CUDA device here; pass --device cpu to rerun it on the CPU (not expected to match bit for bit)")
    if ("cuda" if device.startswith("cuda") else "cpu") != made_kind:
        print(f"warning: the record was made on {stored_env.get('device')}; running on {device} instead, so expect small differences")
    threads = args.threads or stored_env.get("torch_threads") or torch.get_num_threads()
    torch.set_num_threads(threads)
    stopped = str(record.get("stopped", ""))
    if stopped.startswith("time budget"):
        print(f"warning: this training stopped on its wall-clock budget ({stopped}): how many epochs fit depends on the machine's speed, so it is not expected to reproduce bit for bit")
    elif cell.train_config.get("time_budget_s"):
        print(f"note: this training has a wall-clock budget of {cell.train_config['time_budget_s']:g}s that it did not reach; a slower machine may reach it and stop sooner")
    ds, _, _ = load_data(cell, args.data_dir)
    if ds.sha256 != record["dataset"].get("sha256"):
        raise RecordError(f"dataset {cell.dataset}: the file here ({ds.path}) has sha256 {ds.sha256[:12]}, the record was made on {str(record['dataset'].get('sha256'))[:12]}; refusing to compare results on other data")
    if cell.inference:
        print(f"inference-only point: trains the base model, then scores it with {cell.inference}")
    out = scratch_folder(args.out)
    git_commit(), code_digest()  # the code this process starts with, as benchmark.run reads it
    print(f"reproducing {record['key']} on {device} with {threads} torch thread(s) into {out}", flush=True)
    new = run_cell(cell, data_dir=args.data_dir, device=device, progress=not args.no_progress, suite=record.get("suite", ""))
    saved = write_json_atomic(record_path(out, cell), new)
    rows = metric_rows(record["metrics"], new["metrics"], args.rtol, args.atol)
    print(metrics_table(rows))
    diffs = rank_differences(record.get("per_user", {}), new["per_user"])
    users = len(new["per_user"]["test_ranks"])
    print("per-user test ranks: " + ", ".join(f"{key} differ for {n} of {users} users" for key, n in diffs.items()))
    print(f"stopped: stored {record.get('stopped')!r} at epoch {record.get('epochs_run')} (best {record.get('best_epoch')}), reproduced {new['stopped']!r} at epoch {new['epochs_run']} (best {new['best_epoch']})")
    print(tabulate(environment_rows(stored_env, new["environment"]), headers=["environment", "record", "here", ""], disable_numparse=True))
    commit = str(stored_env.get("git_commit", "unknown"))
    if commit.endswith("+dirty"):
        print(f"note: the record's code had uncommitted changes at {commit}: the exact code that made it cannot be checked out")
    changed = changed_code(commit, cell.model) if commit != "unknown" else None
    if changed:
        print(f"code this run executes that differs from the record's commit: {', '.join(changed)}")
    elif changed is not None and commit.removesuffix("+dirty") != new["environment"]["git_commit"]:
        print("the code this run executes is the same as at the record's commit")
    result = verdict(rows, diffs)
    print_verdict(rows, result, args.rtol, args.atol)
    print(f"reproduced record: {saved}")
    return EXIT_DIFFERENT if result == "different" else EXIT_SAME


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("record", help="a run record (results/runs/<key>.json)")
    p.add_argument("--check-only", action="store_true", help="train nothing: recompute the test metrics from the stored per-user ranks")
    p.add_argument("--out", help="scratch folder for the reproduced record (default: a new temporary folder; never results/)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for 'within tolerance' (default 0)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for 'within tolerance' (default 0)")
    p.add_argument("--data-dir", help="data folder (default: $DIFFREC_BENCH_DATA, else ./data)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the record's environment.torch_threads)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the record's device kind)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.rtol < 0 or args.atol < 0 or not np.isfinite([args.rtol, args.atol]).all():
        p.error("--rtol and --atol must be finite and >= 0")
    if args.threads < 0:
        p.error("--threads must be >= 0 (0 = the record's)")
    if args.device is not None and not (args.device == "cpu" or args.device.split(":")[0] == "cuda"):
        p.error(f"--device {args.device!r}: expected cpu, cuda or cuda:N")
    try:
        record = read_record(args.record)
        cell = record_cell(record, args.record)
        return check_only(record, args.rtol, args.atol) if args.check_only else reproduce(record, cell, args)
    except (RecordError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
