"""CI regression checks: the smoke suite's metrics and the throughput ratios against committed references.

    python -m benchmark.regress metrics      # re-run smoke into a temporary folder, compare to results/reference/smoke.json
    python -m benchmark.regress throughput   # measure speed ratios in this process, compare to results/reference/throughput.json
    python -m benchmark.regress metrics --update      # regenerate the reference (smoke as checked, then seeds 1..4)
    python -m benchmark.regress throughput --update

Metrics: every cell of the smoke suite (dataset/model/tag/seed) and every metric of its record
(valid, test, valid_masked, test_masked x HR/NDCG/MRR@5/10/20) must stay within a tolerance of the
reference value. The tolerance is derived per cell group (dataset/model/tag) and metric from
seed-to-seed variation: `--update` runs the suite as the check does (its own seed 0), which gives
the reference values, and once more with seeds 1..4 in a separate process; then
    tol = max(K * std over the five seeds (ddof=1), 1 / users evaluated)
K = 4: if a rerun on another platform lands on an unrelated random trajectory, its difference to
the reference has standard deviation sqrt(2) std, so K = 4 allows 2.8 of those; the floor 1/users is
the smallest change a metric can make (one user's hit), so a model that does not vary over seeds
(pop) may move by one user at most. The values come from a run of exactly the check's command,
so they cannot depend on what else ran in the same process (values taken from a 5-seed run once
disagreed with the 1-seed check for contrastvae seed 0; the cause was not found). The check
prints the largest |deviation| / tolerance seen, so a change inside the tolerance is still visible.

Throughput: ratios of times measured in one process, interleaved, best of `--rounds` (see
`measure_ratios`); a ratio more than 25% above its reference fails. The reference is the median of
three such measurements (this machine's ratios moved by up to 30% between single runs under load). Ratios, not absolute times, so
the check survives a slower or busier machine; and each ratio compares computations made of the
same kernels (a model against a fixed plain-torch computation of its shapes, a loop against its
body), so that it survives another CPU: a ratio of DiffRec to SASRec moved by 21% between this
machine and CI's, with no change to the code.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmark.data import DataError, load_dataset
from benchmark.records import PROJECT_ROOT, environment, load_records, write_json_atomic
from benchmark.registry import build_model
from benchmark.speed import clock, diffrec_denoiser_call, synchronize, user_batch, yardstick
from benchmark.splits import EvalSet, leave_one_out
from benchmark.train import evaluate, train_batches

REFERENCE_DIR = PROJECT_ROOT / "results" / "reference"
SPLITS = ("valid", "test", "valid_masked", "test_masked")
K_STD = 4.0
TOLERANCE_SEEDS = (1, 2, 3, 4)  # beside the suite's own seed 0
MAX_SLOWDOWN = 0.25
TRAIN_STEPS = 5  # optimizer steps timed together (one is ~0.15 s, too short to time alone on a busy machine)
UPDATE_REPEATS = 3  # throughput --update: measurements whose median becomes the reference


# --- metrics -----------------------------------------------------------------------------------
def cell_group(record: dict) -> str:
    """dataset/model/tag: the cell without its seed."""
    return f"{record['dataset']['name']}/{record['model']}/{record.get('tag', 'default')}"


def cell_name(record: dict) -> str:
    return f"{cell_group(record)}/s{record['seed']}"


def flat_metrics(record: dict) -> dict[str, float]:
    """{"test/NDCG@10": value, ...} over the four metric blocks of a run record."""
    return {f"{split}/{k}": float(v) for split in SPLITS for k, v in record["metrics"][split].items()}


def tolerances(by_group: dict[str, list[dict[str, float]]], floors: dict[str, float], k: float = K_STD) -> dict[str, dict[str, float]]:
    """by_group: group -> one flat metrics dict per seed; floors: group -> smallest tolerance.
    -> group -> metric -> max(k * sample std over seeds, floor)."""
    out = {}
    for group, runs in by_group.items():
        out[group] = {}
        for metric in runs[0]:
            values = np.array([r[metric] for r in runs])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[group][metric] = max(k * std, floors[group])
    return out


def build_reference(records: list[dict], seed_records: list[dict] = (), k: float = K_STD) -> dict:
    """The committed reference: `records` (one run of the suite as the check runs it) give the
    values; they and `seed_records` (the same cells under other seeds) give per-group tolerances."""
    by_group: dict[str, list[dict[str, float]]] = {}
    floors = {}
    for r in [*records, *seed_records]:
        by_group.setdefault(cell_group(r), []).append(flat_metrics(r))
        floors[cell_group(r)] = 1.0 / r["dataset"]["users_used"]
    seeds = sorted({r["seed"] for r in [*records, *seed_records]})
    return {
        "suite": "smoke",
        "how": f"tol = max({k:g} x std over seeds {seeds} (ddof=1), 1 / users evaluated); values from the suite's own run",
        "tolerance_seeds": seeds,
        "k_std": k,
        "cells": {cell_name(r): {"key": r["key"], "metrics": flat_metrics(r)} for r in records},
        "tolerance": tolerances(by_group, floors, k),
    }


def compare_metrics(reference: dict, records: list[dict]) -> tuple[list[str], float]:
    """-> (failure messages naming cell and metric, largest |deviation| / tolerance seen)."""
    failures, worst = [], 0.0
    seen = set()
    for r in records:
        name = cell_name(r)
        seen.add(name)
        ref = reference["cells"].get(name)
        if ref is None:
            failures.append(f"{name}: no reference for this cell (new model or setting?); regenerate with `python -m benchmark.regress metrics --update`")
            continue
        if ref["key"] != r["key"]:
            failures.append(f"{name}: resolved settings changed (key {r['key']}, reference {ref['key']}); regenerate the reference if intended")
        tol = reference["tolerance"][cell_group(r)]
        for metric, value in flat_metrics(r).items():
            if metric not in ref["metrics"]:
                failures.append(f"{name}: metric {metric} missing from the reference")
                continue
            diff = abs(value - ref["metrics"][metric])
            worst = max(worst, diff / tol[metric])
            if not diff <= tol[metric]:  # NaN fails too
                failures.append(f"{name}: {metric} = {value:.6f}, reference {ref['metrics'][metric]:.6f}, |diff| {diff:.6f} > tolerance {tol[metric]:.6f}")
    for name in sorted(set(reference["cells"]) - seen):
        failures.append(f"{name}: in the reference but not produced by the suite")
    return failures, worst


def run_smoke(out: Path, seeds=None, data_dir=None) -> list[dict]:
    """Runs `python -m benchmark.run --suite smoke` into `out` on one torch thread; -> its records."""
    cmd = [sys.executable, "-m", "benchmark.run", "--suite", "smoke", "--out", str(out), "--no-progress"]
    if seeds:
        cmd += ["--seeds", *map(str, seeds)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return load_records(out)


def check_metrics(args) -> int:
    path = REFERENCE_DIR / "smoke.json"
    with tempfile.TemporaryDirectory(prefix="regress-smoke-") as tmp:
        if args.update:  # values from exactly the run the check makes; tolerances with extra seeds, run apart
            records = run_smoke(Path(tmp) / "suite", data_dir=args.data_dir)
            others = run_smoke(Path(tmp) / "seeds", seeds=args.seeds, data_dir=args.data_dir)
            reference = {**build_reference(records, others), "environment": environment("cpu")}
            write_json_atomic(path, reference)
            print(f"wrote {path} ({len(reference['cells'])} cells; tolerances from seeds {reference['tolerance_seeds']})")
            return 0
        reference = _load(path, "metrics")
        records = run_smoke(Path(tmp), data_dir=args.data_dir)
    failures, worst = compare_metrics(reference, records)
    exact = sum(flat_metrics(r) == reference["cells"].get(cell_name(r), {}).get("metrics") for r in records)
    print(f"metrics: {len(records)} cells vs {path.relative_to(PROJECT_ROOT)}, {exact} reproduced exactly; largest |diff| / tolerance = {worst:.3f}")
    return _report(failures, "metrics")


# --- throughput --------------------------------------------------------------------------------
def compare_ratios(reference: dict[str, float], measured: dict[str, float], slack: float = MAX_SLOWDOWN) -> list[str]:
    """A ratio (a relative cost: higher = slower) above reference x (1 + slack) fails."""
    failures = []
    for name, ref in reference.items():
        if name not in measured:
            failures.append(f"throughput: ratio {name} was not measured")
        elif not measured[name] <= ref * (1 + slack):
            failures.append(f"throughput: {name} = {measured[name]:.3f}, reference {ref:.3f} (+{100 * (measured[name] / ref - 1):.0f}% > {100 * slack:.0f}%)")
    return failures


def measure_ratios(split, *, batch: int = 256, steps: int = 1000, eval_users: int = 2048, rounds: int = 3, device="cpu") -> tuple[dict, dict, dict]:
    """Relative costs measured in this process, interleaved, each the best of `rounds`
    (CPU time on a CPU, see `benchmark.speed.clock`).

    -> (ratios, targets, seconds). `ratios` are checked against the reference; each compares
    computations made of the same kernels, so that they hold across machines:
    - `*_per_yardstick`: a scoring call relative to `benchmark.speed.yardstick` with its shapes
      (DiffRec's full two-stream pass is reported only: see `targets`);
    - `diffrec_loop_overhead`: an N-step ancestral score / (N x the denoiser call of one step),
      target <= 1.1 (the history's one encoding per user is inside the numerator);
    - `evaluation_per_sasrec_score`, `sasrec_train_step_per_sasrec_score`: per SASRec scoring call.
    `targets` are the issue's user-facing ratios between two models, reported, not checked: how the
    machine runs a big scoring GEMM against many small ops moves them by 20% (seen between this
    machine and CI's), which a 25% check cannot tell from a regression."""
    def model(name, cfg):
        m, _ = build_model(name, cfg, n_items=split.n_items, max_len=split.max_len)
        return m.to(device).eval()

    seqs = user_batch(split.test, batch, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    sasrec, ancestral, average = model("sasrec-ce", {}), model("diffrec", {"sampler": "ancestral", "steps": steps}), model("diffrec", {"sampler": "average"})
    idx = torch.randperm(len(split.test.targets), generator=torch.Generator().manual_seed(0))[:eval_users]
    subset = EvalSet(split.test.inputs[idx], split.test.targets[idx], split.test.history[idx])
    trainee = model("sasrec-ce", {}).train()
    opt = trainee.configure_optimizers(1e-3, 0.0)
    train_batch = next(train_batches(split, batch, np.random.default_rng(0))).to(device)
    with torch.inference_mode():
        full_call = diffrec_denoiser_call(ancestral, seqs, cached=False)
        step_call = diffrec_denoiser_call(ancestral, seqs)
    s, a = sasrec.cfg, average.cfg
    diffrec_tokens = min(seqs.shape[1], split.max_len - 1) + 1  # history window + the slot
    fns = {
        "sasrec_score": lambda: sasrec.score(seqs),
        "yardstick_sasrec": yardstick(batch, seqs.shape[1], s.hidden, s.layers, s.heads, split.n_items, 1, device=device),
        "denoiser_call": full_call,
        "step_call": lambda: [step_call() for _ in range(steps)],  # as many calls as the loop makes: equally long timings
        "yardstick_denoiser": yardstick(batch, diffrec_tokens, a.hidden, a.layers, a.heads, split.n_items, 0, device=device),
        "ancestral": lambda: ancestral.score(seqs, generator=g),
        "average": lambda: average.score(seqs, generator=g),
        "yardstick_average": yardstick(batch, diffrec_tokens + a.samples - 1, a.hidden, a.layers, a.heads, split.n_items, a.samples, device=device),
        "evaluate": lambda: evaluate(sasrec, subset, device=device),
        "sasrec_train_step": lambda: [trainee.training_step(train_batch, opt) for _ in range(TRAIN_STEPS)],
    }
    now = clock(device)
    best = dict.fromkeys(fns, math.inf)
    for r in range(rounds + 1):  # round 0 warms up
        for name, fn in fns.items():
            with torch.inference_mode(name != "sasrec_train_step"):
                start = now()
                fn()
                synchronize(device)
                if r:
                    best[name] = min(best[name], now() - start)
    best["step_call"] /= steps
    best["sasrec_train_step"] /= TRAIN_STEPS
    unit = best["sasrec_score"]
    ratios = {
        "sasrec_score_per_yardstick": unit / best["yardstick_sasrec"],
        "average_per_yardstick": best["average"] / best["yardstick_average"],
        "diffrec_loop_overhead": best["ancestral"] / (steps * best["step_call"]),
        "evaluation_per_sasrec_score": best["evaluate"] / (unit * len(idx) / batch),
        "sasrec_train_step_per_sasrec_score": best["sasrec_train_step"] / unit,
    }
    targets = {
        "average_per_sasrec_score": best["average"] / unit,  # issue target <= 2
        "diffrec_step_per_sasrec_score": best["ancestral"] / steps / unit,
        "full_denoiser_pass_per_step_call": best["denoiser_call"] / best["step_call"],
        # the full two-stream pass against its yardstick: on unchanged code it read 0.60-0.62 in some
        # processes and 0.93-1.05 in others on this machine (0.034 or 0.058 s a call), too bimodal
        # for a 25% check; the per-step call it shares its layers with is checked (loop overhead)
        "denoiser_call_per_yardstick": best["denoiser_call"] / best["yardstick_denoiser"],
    }
    return ratios, targets, best


def check_throughput(args) -> int:
    torch.set_num_threads(1)
    path = REFERENCE_DIR / "throughput.json"
    split = leave_one_out(load_dataset("beauty", data_dir=args.data_dir))
    env = environment("cpu")
    print(f"  machine: {env['device']}, {env['host_cpus']} cpus, 1 torch thread")
    runs = [measure_ratios(split, rounds=args.rounds) for _ in range(UPDATE_REPEATS if args.update else 1)]
    # the reference is the median of a few measurements, so one lucky or unlucky run does not set it
    ratios, targets, seconds = ({k: float(np.median([run[i][k] for run in runs])) for k in runs[0][i]} for i in range(3))
    for name, value in ratios.items():
        print(f"  {name:38s} {value:8.3f}")
    for name, value in targets.items():
        print(f"  {name:38s} {value:8.3f}  (reported, not checked)")
    print("  seconds (best of rounds" + (", median of repeats" if args.update else "") + "): " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()))
    if args.update:
        how = "beauty test users, batch 256, untrained default models, 1 torch thread; ancestral N=1000; evaluation of 2048 users"
        write_json_atomic(path, {"ratios": ratios, "targets": targets, "seconds": seconds, "how": how, "max_slowdown": MAX_SLOWDOWN, "environment": env})
        print(f"wrote {path}")
        return 0
    return _report(compare_ratios(_load(path, "throughput")["ratios"], ratios), "throughput")


# --- command line ------------------------------------------------------------------------------
def _load(path: Path, check: str) -> dict:
    if not path.exists():
        raise SystemExit(f"error: no reference at {path}; create it with `python -m benchmark.regress {check} --update`")
    return json.loads(path.read_text())


def _report(failures: list[str], what: str) -> int:
    for line in failures:
        print(f"REGRESSION {line}")
    print(f"{what}: {'FAILED, ' + str(len(failures)) + ' regression(s)' if failures else 'ok'}")
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.regress", description=__doc__.splitlines()[0])
    p.add_argument("check", choices=("metrics", "throughput"))
    p.add_argument("--update", action="store_true", help="regenerate the committed reference instead of checking")
    p.add_argument("--seeds", nargs="+", type=int, default=list(TOLERANCE_SEEDS), help="metrics --update: extra seeds for the tolerances (default 1 2 3 4)")
    p.add_argument("--rounds", type=int, default=5, help="throughput: interleaved rounds, best of")
    p.add_argument("--data-dir", help="data folder (default: $DIFFREC_BENCH_DATA)")
    args = p.parse_args(argv)
    try:
        return check_metrics(args) if args.check == "metrics" else check_throughput(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
