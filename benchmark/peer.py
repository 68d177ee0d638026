"""Side-by-side speed benchmark against a peer library, run rather than remembered.

    python -m benchmark.peer recbole [--dataset beauty] [--rounds 2] [--data-dir D] [--cache-dir C]
    # -> results/bench/peer-recbole.json and .md

`recbole` builds (once, cached) a venv with RecBole 1.2.1 outside the repository
(`--cache-dir`, else $DIFFREC_BENCH_CACHE, else ~/.cache/diffrec-bench; the venv is
`<cache>/recbole-venv`, or `--venv`), converts the dataset to a RecBole atomic file there, and
starts `benchmark/recbole_worker.py` under the venv's python. Then, in alternating rounds
(RecBole epoch, project SASRec-CE epoch, project DiffRec epoch, RecBole evaluation, project
SASRec-CE evaluation, project DiffRec evaluation), it times one training epoch and one
full-ranking evaluation of every test user on each side, as CPU seconds of each process
(`time.process_time`) with one torch thread, so other work on a shared machine does not count.
The best round of each is compared with the speed targets of issue 18.

Both sides train on the same targets: RecBole's SequentialDataset turns each user's time-ordered
sequence into one (prefix of at most max_len items -> next item) example per position and splits
the last example of each user off as test and the one before it as validation (`eval_args`:
split LS valid_and_test, order TO, group_by user, mode full), which is the project's leave-one-out.
The work differs: RecBole runs one max_len-wide sequence per target, the project one sequence per
user with a target at every position (`gemm_gflop` counts both). RecBole's full sort ranks the test
item among all items without masking the history (sequential models have no history mask there);
the project's evaluator ranks unmasked and history-masked.

Also measured: the single-thread GEMM rate (a 1024 x 1024 `torch.mm`), so the report states what
fraction of it the project's epoch reaches, and the SASRec-CE epoch with 1 and 2 torch threads
(wall time, since CPU time sums the threads).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmark.data import DataError, load_dataset
from benchmark.records import PROJECT_ROOT, atomic_path, environment, write_json_atomic
from benchmark.registry import build_model
from benchmark.splits import Split, leave_one_out
from benchmark.train import evaluate, seed_everything, train_batches

CACHE_ENV = "DIFFREC_BENCH_CACHE"
# RecBole 1.2.1 predates numpy 2, pandas 2.3 and scipy 1.14 (it uses np.float_ and friends);
# torch is the project's version, from PyPI's CPU wheel here.
RECBOLE_PINS = ("recbole==1.2.1", "torch==2.13.0", "numpy<2", "pandas<2.3", "scipy<1.14")
WORKER = Path(__file__).with_name("recbole_worker.py")
OUT = PROJECT_ROOT / "results" / "bench" / "peer-recbole.json"
BATCH = 256  # the comparison's training batch (the RecBole run)
EVAL_BATCH = 1024  # users per evaluation batch, both sides (the project evaluator's default)
GEMM_N = 1024
MODELS = ("sasrec-ce", "diffrec")

# (label, numerator, denominator, "ge"/"le", bound): a ratio of two best-round CPU times and the
# issue's target for it.
TARGETS = (
    ("SASRec-CE epoch: RecBole / project", "recbole_epoch", "sasrec-ce_epoch", "ge", 30.0),
    ("SASRec-CE evaluation: RecBole / project", "recbole_eval", "sasrec-ce_eval", "ge", 8.0),
    ("DiffRec evaluation: RecBole / DiffRec", "recbole_eval", "diffrec_eval", "ge", 3.0),
    ("DiffRec evaluation / SASRec-CE evaluation", "diffrec_eval", "sasrec-ce_eval", "le", 2.0),
    ("DiffRec epoch / SASRec-CE epoch", "diffrec_epoch", "sasrec-ce_epoch", "le", 1.2),
)


class PeerError(Exception):
    """The peer cannot be set up or run; the message is one line."""


# --- data ------------------------------------------------------------------------------------------


def write_atomic_inter(sequences: Iterable[np.ndarray], folder: str | Path, name: str) -> Path:
    """Each user's chronological items -> RecBole atomic file `folder/name/name.inter` (tab separated
    user_id:token, item_id:token, timestamp:float; user u is the u-th sequence from 1, the timestamp
    is the item's position 1..n in its sequence, so RecBole's time order is the sequence order).
    Written atomically."""
    path = Path(folder) / name / f"{name}.inter"
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, seq in enumerate(sequences, start=1):
            f.writelines(f"{user}\t{int(item)}\t{t}\n" for t, item in enumerate(seq, start=1))
    return path


# --- work and machine -----------------------------------------------------------------------------


def gemm_gflop(tokens: int, attention_pairs: int, targets: int, *, hidden: int, layers: int, n_items: int) -> float:
    """GFLOP of one training pass (forward + backward = 3 x forward; a multiply-add is 2 FLOP) of a
    SASRec-CE whose feed-forward is 4 x hidden wide, counting matrix products only: per layer and
    token 12 d^2 multiply-adds (QKV, output, two feed-forward products), per layer and pair of
    positions in one sequence's attention 2 d (scores and weighted sum), per target d (n_items + 1)
    for the full-softmax output."""
    d = hidden
    forward = layers * (12 * d * d * tokens + 2 * d * attention_pairs) + d * (n_items + 1) * targets
    return 3 * 2 * forward / 1e9


def project_epoch_work(split: Split, batch_size: int, rng: np.random.Generator) -> dict:
    """Token, attention-pair and target counts of one project epoch (batches cut to their widest)."""
    tokens = pairs = targets = 0
    for b in train_batches(split, batch_size, rng):
        n, w = b.inputs.shape
        tokens, pairs, targets = tokens + n * w, pairs + n * w * w, targets + int((b.targets > 0).sum())
    return {"tokens": tokens, "attention_pairs": pairs, "targets": targets}


def recbole_epoch_work(targets: int, width: int) -> dict:
    """RecBole runs one `width`-wide (padded) sequence per target and scores only its last position."""
    return {"tokens": targets * width, "attention_pairs": targets * width * width, "targets": targets}


def gemm_rate(n: int = GEMM_N, repeats: int = 20) -> float:
    """GFLOP/s of an n x n float32 `torch.mm` with the current torch threads, the best of `repeats`
    CPU-timed calls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best / 1e9


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the RecBole side ------------------------------------------------------------------------------


def cache_dir(option: str | Path | None = None) -> Path:
    return Path(option or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "diffrec-bench")


def ensure_venv(venv: Path, pins: Sequence[str] = RECBOLE_PINS) -> Path:
    """The python of a venv at `venv` holding `pins`, built on first use; a venv whose recorded pins
    differ is rebuilt. -> path of its python."""
    python, marker = venv / "bin" / "python", venv / "diffrec-bench-pins.txt"
    wanted = "\n".join(pins) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    print(f"building the RecBole venv at {venv} (once; several minutes)", file=sys.stderr)
    for cmd in ([sys.executable, "-m", "venv", "--clear", str(venv)], [str(python), "-m", "pip", "install", "-q", *pins]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise PeerError(f"{' '.join(cmd[:4])} ... failed (exit {done.returncode}): {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    marker.write_text(wanted)
    return python


class RecBoleWorker:
    """`recbole_worker.py` under the venv's python, one JSON command per line."""

    def __init__(self, python: Path, data_path: Path, dataset: str, run_dir: Path, threads: int, log: Path):
        run_dir.mkdir(parents=True, exist_ok=True)  # RecBole writes saved/ and log_tensorboard/ here
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        cmd = [str(python), str(WORKER), "--data-path", str(data_path), "--dataset", dataset, "--threads", str(threads), "--eval-batch-size", str(EVAL_BATCH), "--batch-size", str(BATCH)]
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)

    def __call__(self, command: str) -> dict:
        self.proc.stdin.write(json.dumps({"command": command}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text().strip().splitlines()[-1:] if self.log.is_file() else []
            raise PeerError(f"the RecBole worker ended (exit {self.proc.wait()}) on {command!r}: {tail} (log: {self.log})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"command": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# --- the project side ------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> dict:
    """CPU seconds of this process and wall seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


class ProjectModel:
    """A model of the project trained and evaluated through the project's own loop pieces: the
    epoch is `benchmark.train.fit`'s inner loop (length-bucketed batches, `training_step`), the
    evaluation is `benchmark.train.evaluate` of every test user."""

    def __init__(self, name: str, split: Split, seed: int = 0):
        seed_everything(seed)
        self.split, self.epochs = split, 0
        self.model, _ = build_model(name, {}, n_items=split.n_items, max_len=split.max_len, seed=seed)
        self.model.fit_statistics(list(split.train_sequences))
        self.optimizers = self.model.configure_optimizers(1e-3, 0.0)
        self.rng = np.random.default_rng(seed)

    def epoch(self) -> None:
        self.epochs += 1
        self.model.train()
        self.model.on_epoch_start(self.epochs)
        for batch in train_batches(self.split, BATCH, self.rng):
            self.model.training_step(batch, self.optimizers)

    def evaluate(self) -> None:
        evaluate(self.model, self.split.test, batch_size=EVAL_BATCH)


# --- measurement and report ------------------------------------------------------------------------


def best(timings: dict, key: str) -> float:
    return min(r["cpu_s"] for r in timings[key])


def verdicts(timings: dict) -> list[dict]:
    """The issue's targets as ratios of best-round CPU times, each with met / MISSED."""
    rows = []
    for label, num, den, op, bound in TARGETS:
        if num not in timings or den not in timings:
            continue
        ratio = best(timings, num) / best(timings, den)
        met = ratio >= bound if op == "ge" else ratio <= bound
        rows.append({"target": label, "ratio": ratio, "bound": f"{'>=' if op == 'ge' else '<='} {bound:g}", "verdict": "met" if met else "MISSED"})
    return rows


def markdown(m: dict) -> str:
    t, env, rb = m["timings"], m["environment"], m["recbole"]
    rounds = max(len(v) for v in t.values())

    def cells(key: str) -> str:
        return " | ".join(f"{r['cpu_s']:.2f}" for r in t[key]) + " | " * (rounds - len(t[key]))

    head = " | ".join(f"round {i + 1}" for i in range(rounds))
    lines = [
        f"# Peer benchmark: the project against RecBole {rb['recbole']} ({m['dataset']})",
        "",
        f"Measured {m['date']} by `python -m benchmark.peer recbole`; project commit `{env['git_commit']}`"
        + (" (working tree dirty: uncommitted changes were measured)" if env["git_commit"].endswith("+dirty") else "")
        + f"; CPU {env['device']}, {env['host_cpus']} cores; torch {env['packages']['torch']} (project) and {rb['torch']} (RecBole venv);"
        f" {m['threads']} torch thread each side (RecBole worker reports {rb['threads']}). Clock: CPU seconds of each process"
        f" (`time.process_time`), so a shared machine's other work does not count; load average (1, 5, 15 min) {m['load_before']} before,"
        f" {m['load_after']} after. {rounds} alternating rounds; ratios use each row's best round.",
        "",
        f"| CPU seconds | {head} | best |",
        "|---|" + "---|" * (rounds + 1),
    ]
    names = {"recbole_epoch": f"RecBole {rb['recbole']} SASRec-CE, one training epoch", "sasrec-ce_epoch": "project SASRec-CE, one training epoch", "diffrec_epoch": "project DiffRec (defaults), one training epoch",
             "recbole_eval": f"RecBole full-sort evaluation, {rb['test_users']} users", "sasrec-ce_eval": f"project SASRec-CE evaluation, {m['test_users']} users", "diffrec_eval": f"project DiffRec (`average`) evaluation, {m['test_users']} users"}
    lines += [f"| {names[k]} | {cells(k)} | {best(t, k):.2f} |" for k in names if k in t]
    lines += ["", "## Targets (issue 18)", "", "| ratio | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {v['target']} | {v['ratio']:.2f}x | {v['bound']} | {v['verdict']} |" for v in m["verdicts"]]
    w = m["work"]
    lines += [
        "",
        f"The epoch compares equal targets ({w['recbole']['targets']:,} on each side) but not equal work: RecBole runs one"
        f" {rb['sequence_width']}-wide sequence per target ({w['recbole']['tokens']:,} positions), the project one sequence per user with a target at"
        f" every position, batches cut to their longest ({w['project']['tokens']:,} positions). Matrix products of one epoch:"
        f" RecBole {w['recbole']['gflop']:,.0f} GFLOP, project {w['project']['gflop']:,.0f} GFLOP ({w['recbole']['gflop'] / w['project']['gflop']:.1f}x;"
        f" the output layer is {w['project']['output_gflop']:,.0f} GFLOP of each). RecBole's evaluation ranks unmasked only; the project's ranks unmasked and history-masked.",
        "",
        f"Single-thread GEMM rate ({GEMM_N} x {GEMM_N} `torch.mm`, best of 20): {m['gemm_gflop_s']:.1f} GFLOP/s. The project's SASRec-CE epoch"
        f" ({w['project']['gflop']:,.0f} GFLOP in {best(t, 'sasrec-ce_epoch'):.1f} s) runs at {w['project']['gflop'] / best(t, 'sasrec-ce_epoch'):.1f} GFLOP/s,"
        f" {w['project']['gflop'] / best(t, 'sasrec-ce_epoch') / m['gemm_gflop_s']:.0%} of it (the issue's target: 40%); RecBole's at"
        f" {w['recbole']['gflop'] / best(t, 'recbole_epoch'):.1f} GFLOP/s. At 40% of this GEMM rate the project's epoch would take"
        f" {w['project']['gflop'] / (0.4 * m['gemm_gflop_s']):.1f} s, {best(t, 'recbole_epoch') * 0.4 * m['gemm_gflop_s'] / w['project']['gflop']:.1f}x RecBole's"
        " (the issue's \"40% of the GEMM rate, i.e. >= 30x RecBole\" was worked out on an Intel Xeon: 171 GFLOP/s, RecBole 362 s).",
    ]
    if m.get("thread_scaling"):
        lines += ["", "## Thread scaling (project SASRec-CE, one epoch)", "", "| torch threads | wall s | CPU s | load before |", "|---|---|---|---|"]
        lines += [f"| {r['threads']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load_before']} |" for r in m["thread_scaling"]]
        lines += ["", f"{m['host_cpus_note']}"]
    s = rb["settings"]
    lines += [
        "",
        "## Settings",
        "",
        f"- RecBole: `eval_args` {json.dumps(s['eval_args'])}, MAX_ITEM_LIST_LENGTH {s['MAX_ITEM_LIST_LENGTH']}, train_batch_size {s['train_batch_size']},"
        f" eval_batch_size {s['eval_batch_size']} (users per full-sort batch), hidden {s['hidden_size']}, inner {s['inner_size']}, {s['n_layers']} layers,"
        f" {s['n_heads']} heads, dropout {s['hidden_dropout_prob']}/{s['attn_dropout_prob']}, loss {s['loss_type']}, Adam lr {s['learning_rate']}.",
        f"- Project: `build_model` defaults of sasrec-ce and diffrec (DiffRec sampler `average`), batch {BATCH}, evaluation batch {EVAL_BATCH}, Adam lr 1e-3.",
        f"- Data: {m['dataset']} from {m['data_file']}, {m['users']:,} users, {m['items']:,} items (RecBole read {rb['users']:,} users, {rb['items']:,} items).",
        "",
    ]
    return "\n".join(lines)


def load_recbole_reference(path: str | Path = OUT) -> dict | None:
    """RecBole's best epoch and evaluation CPU seconds from a committed peer output, with where they
    come from; None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    rel = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    return {"epoch_s": best(m["timings"], "recbole_epoch"), "eval_s": best(m["timings"], "recbole_eval"), "source": f"{rel}, {m['date'][:10]}, {m['environment']['device']}"}


def measure(args) -> dict:
    env = environment("cpu")  # now: the commit (and whether the tree is dirty) as the run starts
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    split = leave_one_out(data, users=args.users)  # --users: a quick check on the first users
    cache = cache_dir(args.cache_dir)
    python = ensure_venv(Path(args.venv) if args.venv else cache / "recbole-venv")
    write_atomic_inter(data.sequences[: args.users], cache / "recbole-data", args.dataset)
    worker = RecBoleWorker(python, cache / "recbole-data", args.dataset, cache / "recbole-run", args.threads, cache / "recbole-worker.log")
    load_before = load_average()
    try:
        info = worker("info")
        models = {name: ProjectModel(name, split) for name in MODELS}
        timings: dict[str, list] = {}

        def record(key: str, result: dict) -> None:
            timings.setdefault(key, []).append({"cpu_s": result["cpu_s"], "wall_s": result["wall_s"], "load": load_average()})
            print(f"{key}: {result['cpu_s']:.2f} s CPU, {result['wall_s']:.2f} s wall", file=sys.stderr, flush=True)

        for _ in range(args.rounds):
            record("recbole_epoch", worker("epoch"))
            for name, model in models.items():
                record(f"{name}_epoch", timed(model.epoch))
            record("recbole_eval", worker("evaluate"))
            for name, model in models.items():
                record(f"{name}_eval", timed(model.evaluate))
    finally:
        worker.close()
    scaling = []
    if args.scaling:
        sasrec = models["sasrec-ce"]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            before = load_average()
            scaling.append({"threads": threads, **timed(sasrec.epoch), "load_before": before})
            print(f"sasrec-ce epoch, {threads} threads: {scaling[-1]['wall_s']:.2f} s wall", file=sys.stderr, flush=True)
        torch.set_num_threads(args.threads)
    torch.set_num_threads(1)
    gflops = gemm_rate()
    torch.set_num_threads(args.threads)
    d, layers = models["sasrec-ce"].model.cfg.hidden, models["sasrec-ce"].model.cfg.layers
    work = {"project": project_epoch_work(split, BATCH, np.random.default_rng(0)), "recbole": recbole_epoch_work(info["train_targets"], info["sequence_width"])}
    for side, w in work.items():
        n_items = info["items"] if side == "recbole" else split.n_items  # differ only with --users
        w["gflop"] = gemm_gflop(w["tokens"], w["attention_pairs"], w["targets"], hidden=d, layers=layers, n_items=n_items)
        w["output_gflop"] = gemm_gflop(0, 0, w["targets"], hidden=d, layers=layers, n_items=n_items)
    m = {
        "kind": "peer-recbole",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmark.peer " + " ".join(sys.argv[1:]),
        "dataset": args.dataset,
        "data_file": str(data.path),
        "users": split.n_users,
        "items": split.n_items,
        "test_users": len(split.test.targets),
        "rounds": args.rounds,
        "threads": args.threads,
        "clock": "time.process_time: CPU seconds of each process",
        "environment": env,
        "platform": platform.platform(),
        "recbole": info,
        "load_before": load_before,
        "load_after": load_average(),
        "timings": timings,
        "gemm_gflop_s": gflops,
        "work": work,
        "thread_scaling": scaling,
        "host_cpus_note": f"Wall times: the machine has {os.cpu_count()} cores shared with other work, so the 2-thread time depends on the load.",
    }
    m["verdicts"] = verdicts(timings)
    return m


def write_outputs(out: Path, measured: dict, text: str) -> None:
    """The measurement as JSON at `out` and its Markdown beside it (.md), each written atomically."""
    write_json_atomic(out, measured)
    md = out.with_suffix(".md")
    with atomic_path(md) as tmp:
        tmp.write_text(text)
    print(f"wrote {out} and {md}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.peer", description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=["recbole"], help="the library to compare with")
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None, help="data folder (default $DIFFREC_BENCH_DATA)")
    p.add_argument("--cache-dir", default=None, help=f"venv, atomic files and RecBole's run folder (default ${CACHE_ENV} or ~/.cache/diffrec-bench)")
    p.add_argument("--venv", default=None, help="the RecBole venv (default <cache>/recbole-venv)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both sides during the rounds")
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the 1- and 2-thread epochs")
    p.add_argument("--users", type=int, default=None, help="only the first N users (a quick check; output goes to --out)")
    p.add_argument("--out", type=Path, default=OUT, help="JSON to write; the Markdown table goes beside it (default results/bench/peer-recbole.json)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be >= 1")
    try:
        m = measure(args)
    except (PeerError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_outputs(args.out, m, markdown(m))
    for v in m["verdicts"]:
        print(f"{v['target']}: {v['ratio']:.2f}x (target {v['bound']}: {v['verdict']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
