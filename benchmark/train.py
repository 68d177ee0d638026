"""The one training loop and the one evaluator every model goes through.

- Adam (or the model's own optimizers), length-bucketed batches cut to their longest sequence.
- Validation every `eval_every` epochs; early stopping on validation NDCG@10 (unmasked) with a
  patience counted in evaluations; the best checkpoint is written with `torch.save` and restored
  with `torch.load(weights_only=True)` before the single test evaluation.
- Seeds for Python, numpy and torch; evaluation of stochastic models draws from a generator
  seeded from the run seed, so a record is reproducible.
"""
from __future__ import annotations

import dataclasses
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.metrics import KS, SELECTION_METRIC, metrics_from_ranks, ranks_unmasked_and_masked
from benchmark.model import Batch, SeqRecModel
from benchmark.records import atomic_path
from benchmark.splits import EvalSet, Split


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # upper bound; early stopping usually ends sooner
    patience: int = 5  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = 2  # epochs between validation evaluations
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 1024
    bucket: bool = True  # batch sequences of similar length together (same data, less padding)
    time_budget_s: float = 0.0  # stop training after this many seconds (0 = no limit)

    def __post_init__(self):
        for name in ("epochs", "patience", "eval_every", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.time_budget_s < 0:
            raise ValueError("lr must be > 0; weight_decay and time_budget_s >= 0")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_batches(split: Split, batch_size: int, rng: np.random.Generator, bucket: bool = True):
    """Yields `Batch`es over every training user with at least one target, in random order.

    With `bucket`, users are shuffled, then sorted by length inside chunks of 50 batches, so each
    batch holds sequences of similar length and is cut to its longest one."""
    lengths = split.train_lengths.numpy()
    users = np.flatnonzero(lengths > 0)
    users = users[rng.permutation(len(users))]
    if bucket:
        chunk = batch_size * 50
        users = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(users, max(1, math.ceil(len(users) / chunk)))])
    batches = [users[i : i + batch_size] for i in range(0, len(users), batch_size)]
    for b in rng.permutation(len(batches)):
        idx = torch.from_numpy(batches[b])
        width = int(lengths[batches[b]].max())
        yield Batch(split.train_inputs[idx, -width:], split.train_targets[idx, -width:], idx)


@torch.inference_mode()
def evaluate(model: SeqRecModel, evalset: EvalSet, *, batch_size: int = 1024, seed: int = 0, device="cpu") -> dict:
    """Scores every user once and ranks the target against all items, unmasked and masked.

    Returns {"metrics": {...}, "metrics_masked": {...}, "ranks": array, "ranks_masked": array, "seconds": s}."""
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(seed)
    lengths = evalset.lengths.numpy()
    order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
    ranks = torch.empty(len(order), dtype=torch.long)
    ranks_masked = torch.empty(len(order), dtype=torch.long)
    for i in range(0, len(order), batch_size):
        idx = torch.from_numpy(order[i : i + batch_size])
        width = max(1, int(lengths[idx].max()))
        scores = model.score(evalset.inputs[idx, -width:].to(device), generator=generator)
        targets = evalset.targets[idx].to(device)
        hist = evalset.history[idx]
        hist = hist[:, (hist > 0).any(0)] if hist.shape[1] else hist  # drop all-padding columns
        unmasked, masked = ranks_unmasked_and_masked(scores, targets, hist.to(device))
        ranks[idx], ranks_masked[idx] = unmasked.cpu(), masked.cpu()
    model.train(was_training)
    return {
        "metrics": metrics_from_ranks(ranks, KS),
        "metrics_masked": metrics_from_ranks(ranks_masked, KS),
        "ranks": ranks.numpy(),
        "ranks_masked": ranks_masked.numpy(),
        "seconds": time.perf_counter() - start,
    }


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    curve: list[dict] = field(default_factory=list)  # one entry per evaluation
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    stopped: str = ""


def save_trained(model: SeqRecModel, fitted: FitResult, path: str | Path, about: dict | None = None) -> Path:
    """Writes a trained model, its training history and `about` (plain data: where it trained)
    atomically (a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "fit": dataclasses.asdict(fitted), "about": about or {}}, tmp)
    return Path(path)


def load_trained(model: SeqRecModel, path: str | Path, device="cpu") -> tuple[FitResult, dict]:
    """Loads what `save_trained` wrote into `model` (tensors and plain data only: weights_only);
    -> (training history, about)."""
    state = torch.load(path, weights_only=True, map_location=device)
    model.to(device)
    model.load_state_dict(state["model"])
    return FitResult(**state["fit"]), state["about"]


def fit(model: SeqRecModel, split: Split, cfg: TrainConfig, *, seed: int, device="cpu", progress: bool = True, on_eval=None) -> FitResult:
    """Trains `model` with early stopping and leaves the best validation checkpoint loaded.

    `on_eval(epoch, valid_ndcg10)` is called after each evaluation (tuning prunes through it; it
    may raise to stop the run)."""
    seed_everything(seed)
    model.to(device)
    model.fit_statistics(list(split.train_sequences))
    result = FitResult(best_epoch=0, epochs_run=0)
    if not model.trainable:
        result.stopped = "no trainable parameters"
        return result
    optimizers = model.configure_optimizers(cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng(seed)
    best, evals_without_gain = -1.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "best.pt"
        bar = tqdm(range(1, cfg.epochs + 1), desc="epochs", leave=False, disable=not progress)
        start = time.perf_counter()
        for epoch in bar:
            model.train()
            model.on_epoch_start(epoch)
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            n = 0
            for batch in train_batches(split, cfg.batch_size, rng, cfg.bucket):
                logs = model.training_step(batch.to(device), optimizers)
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                n += 1
            if not math.isfinite(sums.get("loss", 0.0)):
                raise FloatingPointError(f"training loss became {sums['loss']} at epoch {epoch}")
            result.epoch_seconds.append(time.perf_counter() - t0)
            result.epochs_run = epoch
            out_of_time = cfg.time_budget_s and time.perf_counter() - start > cfg.time_budget_s
            if epoch % cfg.eval_every and epoch != cfg.epochs and not out_of_time:
                continue
            ev = evaluate(model, split.valid, batch_size=cfg.eval_batch_size, seed=seed, device=device)
            score = ev["metrics"][SELECTION_METRIC]
            point = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}, "valid": ev["metrics"], "eval_seconds": ev["seconds"]}
            point.update(model.epoch_diagnostics(split.valid.inputs.to(device)))
            result.curve.append(point)
            bar.set_postfix(loss=f"{point.get('loss', 0):.4f}", ndcg10=f"{score:.4f}")
            if score > best:
                best, evals_without_gain, result.best_epoch = score, 0, epoch
                torch.save(model.state_dict(), ckpt)
            else:
                evals_without_gain += 1
            if on_eval is not None:
                on_eval(epoch, score)
            if evals_without_gain >= cfg.patience:
                result.stopped = f"patience ({cfg.patience} evaluations without gain)"
                break
            if out_of_time:
                result.stopped = f"time budget {cfg.time_budget_s:g}s"
                break
        else:
            result.stopped = "epoch budget"
        result.train_seconds = time.perf_counter() - start
        if ckpt.exists():
            model.load_state_dict(torch.load(ckpt, weights_only=True, map_location=device))
    return result
