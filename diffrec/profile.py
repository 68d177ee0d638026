"""How much a trained DiffRec uses its noisy target: the loss of each validation target when its
slot holds h^n of that target, for every diffusion step n.

    python -m diffrec.profile results/runs/<record>.json [--users 2000] [--data-dir D]

The record names the cell; its trained model must be in OUT/checkpoints/ (`benchmark.run` keeps the
checkpoints of trainings that several cells share). At n near 0 the slot nearly holds the answer,
at n = N it holds noise, which is what the `average` sampler ranks from; a small gap between the two
means the denoiser predicts from the history and hardly reads the slot. Validation targets only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from benchmark.data import DataError
from benchmark.model import Batch
from benchmark.registry import build_model
from benchmark.run import load_data
from benchmark.splits import EvalSet
from benchmark.suite import Cell
from benchmark.train import load_trained
from diffrec.model import DiffRec


@torch.no_grad()
def step_profile(model: DiffRec, evalset: EvalSet, *, batch_size: int = 512, seed: int = 0) -> list[dict]:
    """-> one row per step n = 1..N: {"n", "abar", "ce", "mse"}, means over the users of `evalset`,
    whose target follows the whole history (the slot after its last item)."""
    model.eval()
    torch.manual_seed(seed)
    targets = torch.zeros_like(evalset.inputs)
    targets[:, -1] = evalset.targets  # the slot after the last history item predicts the held-out item
    rows = []
    for n in range(1, model.cfg.steps + 1):
        ce = mse = 0.0
        for i in range(0, len(targets), batch_size):
            batch = Batch(evalset.inputs[i : i + batch_size], targets[i : i + batch_size], torch.arange(i, min(i + batch_size, len(targets))))
            terms = model.target_terms(batch, torch.full((len(batch.users),), n))
            ce, mse = ce + float(terms["ce"].sum()), mse + float(terms["mse"].sum())
        rows.append({"n": n, "abar": float(model.schedule.abar[n]), "ce": ce / len(targets), "mse": mse / len(targets)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrec.profile", description=__doc__.splitlines()[0])
    p.add_argument("record", help="a DiffRec run record (results/runs/<key>.json)")
    p.add_argument("--users", type=int, default=0, help="the first N validation users only (0 = all)")
    p.add_argument("--data-dir", help="data folder (default: $DIFFREC_BENCH_DATA, else ./data)")
    args = p.parse_args(argv)
    try:
        record = json.loads(Path(args.record).read_text())
        if record.get("model") != "diffrec" or "training" not in record:
            raise DataError(f"{args.record}: not a DiffRec record with a training key")
        cell = Cell(**record["cell"])
        saved = Path(args.record).resolve().parent.parent / "checkpoints" / f"{cell.checkpoint_key}.pt"
        if not saved.exists():
            raise DataError(f"{saved}: no checkpoint for this record's training (only trainings shared by several cells keep one)")
        _, split, max_len = load_data(cell, args.data_dir)
        model, _ = build_model("diffrec", cell.model_config, n_items=split.n_items, max_len=max_len)
        load_trained(model, saved)
        valid = split.valid
        if args.users:
            valid = EvalSet(valid.inputs[: args.users], valid.targets[: args.users], valid.history[: args.users])
    except (OSError, json.JSONDecodeError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.record}: {len(valid.targets)} validation users, N = {model.cfg.steps}; uniform guess CE = ln({split.n_items}) = {math.log(split.n_items):.3f}")
    print("    n   abar_n   CE     MSE")
    for row in step_profile(model, valid):
        print(f"{row['n']:5d}  {row['abar']:.4f}  {row['ce']:.3f}  {row['mse']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
