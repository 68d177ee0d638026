"""Where the time of the timed work goes, per operator: `python -m benchmark.hotspots`.

Profiles (torch.profiler, CPU, one torch thread) the work the peer benchmark times
(`benchmark.peer`): `--steps` training steps of SASRec-CE and of DiffRec (defaults) and the
full-ranking evaluation of every test user for each, and writes, per phase, the operators with the
largest share of self CPU time to results/bench/hotspots.json and .md. It is the evidence behind a
speed target that is missed: which kernels an epoch or an evaluation spends its time in.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from benchmark.data import DataError, load_dataset
from benchmark.peer import BATCH, EVAL_BATCH, MODELS, ProjectModel, write_outputs
from benchmark.records import PROJECT_ROOT, environment
from benchmark.splits import leave_one_out
from benchmark.train import evaluate, train_batches

OUT = PROJECT_ROOT / "results" / "bench" / "hotspots.json"
TOP = 10  # operators listed per phase


def op_shares(events, top: int = TOP) -> dict:
    """-> {"total_ms", "ops": [{"op", "calls", "self_ms", "share"}]}: the `top` operators by self CPU
    time out of a profiler's `key_averages()`, each with its share of the phase's total."""
    rows = sorted(((e.key, e.count, e.self_cpu_time_total / 1e3) for e in events), key=lambda r: -r[2])
    total = sum(ms for _, _, ms in rows)
    return {"total_ms": total, "ops": [{"op": op, "calls": calls, "self_ms": ms, "share": ms / total if total else 0.0} for op, calls, ms in rows[:top]]}


def profiled(fn) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return op_shares(prof.key_averages())


def measure(dataset: str, data_dir, steps: int) -> dict:
    torch.set_num_threads(1)
    split = leave_one_out(load_dataset(dataset, data_dir=data_dir))
    phases = {}
    for name in MODELS:
        project = ProjectModel(name, split)
        batches = list(train_batches(split, BATCH, np.random.default_rng(0)))[:steps]
        project.model.train()
        project.model.on_epoch_start(1)

        def train():
            for batch in batches:
                project.model.training_step(batch, project.optimizers)

        phases[f"{name}: {len(batches)} training steps"] = profiled(train)
        phases[f"{name}: evaluation of {len(split.test.targets):,} test users"] = profiled(lambda: evaluate(project.model, split.test, batch_size=EVAL_BATCH))
    return {
        "kind": "hotspots",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "batch": BATCH,
        "eval_batch": EVAL_BATCH,
        "environment": environment("cpu"),
        "phases": phases,
    }


def markdown(m: dict) -> str:
    env = m["environment"]
    lines = [
        f"# Where the time goes ({m['dataset']}, per operator)",
        "",
        f"Measured {m['date']} by `python -m benchmark.hotspots`; commit `{env['git_commit']}`; {env['device']}; one torch thread; torch.profiler,"
        f" self CPU time of each operator (its children excluded), training batch {m['batch']}, evaluation batch {m['eval_batch']}, default models.",
    ]
    for phase, p in m["phases"].items():
        lines += ["", f"## {phase}: {p['total_ms'] / 1e3:.2f} s", "", "| operator | calls | self s | share |", "|---|---|---|---|"]
        lines += [f"| `{r['op']}` | {r['calls']:,} | {r['self_ms'] / 1e3:.2f} | {r['share']:.0%} |" for r in p["ops"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.hotspots", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None, help="data folder (default $DIFFREC_BENCH_DATA)")
    p.add_argument("--steps", type=int, default=30, help="training steps profiled per model")
    p.add_argument("--out", type=Path, default=OUT, help="JSON to write; the Markdown goes beside it (default results/bench/hotspots.json)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    try:
        m = measure(args.dataset, args.data_dir, args.steps)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_outputs(args.out, m, markdown(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
