"""The one training loop and the one evaluator every model goes through.

- Adam (or the model's own optimizers), length-bucketed batches cut to their longest sequence.
- Validation every `eval_every` epochs; early stopping on validation NDCG@10 (unmasked, the
  protocol's default; `selection = "masked"` reads the history-masked one instead) with a
  patience counted in evaluations, never before `min_epochs`; the best checkpoint is kept and
  restored before the single test evaluation. One training can follow several selection rules at
  once (`fit_rules`): each keeps its own best checkpoint and history, exactly as a run with that
  rule alone. Optionally, a snapshot of the whole training state after each evaluation (loaded
  with `torch.load(weights_only=True)`) lets an interrupted run resume exactly.
- Seeds for Python, numpy and torch; evaluation of stochastic models draws from a generator
  seeded from the run seed, so a record is reproducible.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.metrics import KS, SELECTION_METRIC, metrics_from_ranks, ranks_unmasked_and_masked
from benchmark.model import Batch, SeqRecModel
from benchmark.records import RecordError, atomic_path
from benchmark.splits import EvalSet, Split


@dataclass(frozen=True)
class TrainConfig:
    # Fields added after records were made, with the value that behaves as before: a cell leaves
    # them out of its key while they hold it, so those records keep their keys (benchmark.suite).
    ADDED_FIELDS: ClassVar[dict] = {"min_epochs": 0, "selection": "unmasked", "adam_beta2": 0.999}

    epochs: int = 200  # upper bound; early stopping usually ends sooner
    patience: int = 5  # evaluations without a better validation NDCG@10 before stopping
    min_epochs: int = 0  # early stopping never ends a run before this epoch (slow starters)
    eval_every: int = 2  # epochs between validation evaluations
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # Adam's second-moment decay (torch's default; RecTools' SASRec uses 0.98)
    eval_batch_size: int = 1024
    # batch sequences of similar length together: the same data with less padding, but a batch's loss
    # is the mean over its real positions, so a short sequence's positions weigh more than in random batches
    bucket: bool = True
    time_budget_s: float = 0.0  # stop training after this many seconds (0 = no limit)
    # which validation NDCG@10 early stopping and model selection read: "unmasked" (the protocol's) or
    # "masked" (the user's history left out of the ranking, as eSASRec's code selects)
    selection: Literal["unmasked", "masked"] = "unmasked"

    def __post_init__(self):
        for name in ("epochs", "patience", "eval_every", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.min_epochs <= self.epochs:
            raise ValueError(f"min_epochs must be from 0 to epochs ({self.epochs}), got {self.min_epochs}")
        if self.lr <= 0 or self.weight_decay < 0 or self.time_budget_s < 0:
            raise ValueError("lr must be > 0; weight_decay and time_budget_s >= 0")
        if not 0 <= self.adam_beta2 < 1:
            raise ValueError(f"adam_beta2 must be in [0, 1), got {self.adam_beta2}")


def selected(point: dict, selection: str) -> float:
    """The validation NDCG@10 that `selection` reads from a curve point (or from `evaluate`'s
    metrics put the same way: "valid" and "valid_masked")."""
    return point["valid" if selection == "unmasked" else "valid_masked"][SELECTION_METRIC]


MAX_SEED = 2**32 - 1  # np.random.seed (legacy seeding) takes 0..2**32 - 1; torch takes more


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


NOT_TRAINED = "no trainable parameters"  # FitResult.stopped of a model with nothing to train (popularity)


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    curve: list[dict] = field(default_factory=list)  # one entry per evaluation
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    stopped: str = ""
    resumed_at: list[int] = field(default_factory=list)  # epochs after which an interrupted run was resumed


def save_trained(state: dict, fitted: FitResult, path: str | Path, about: dict | None = None) -> Path:
    """Writes a trained model's parameters (`state`), its training history and `about` (plain data:
    where it trained) atomically (a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        torch.save({"model": state, "fit": dataclasses.asdict(fitted), "about": about or {}}, tmp)
    return Path(path)


def load_state(path: str | Path, what: str, device="cpu") -> dict:
    """`torch.load(path, weights_only=True)`; a file that does not load (damaged, or another
    format) is a RecordError naming it and `what` it should be. Torch's own message is left out: it
    advises `weights_only=False`, which would let the file run code."""
    try:
        state = torch.load(path, weights_only=True, map_location=device)
    except Exception as exc:  # written atomically, so this is another format or a damaged disk
        raise RecordError(f"{path}: cannot load this {what} ({type(exc).__name__}: damaged, or not one); delete it to train again") from None
    if not isinstance(state, dict):
        raise RecordError(f"{path}: cannot load this {what} (it holds a {type(state).__name__}); delete it to train again")
    return state


def load_trained(model: SeqRecModel, path: str | Path, device="cpu") -> tuple[FitResult, dict]:
    """Loads what `save_trained` wrote into `model` (tensors and plain data only: weights_only);
    -> (training history, about)."""
    state = load_state(path, "checkpoint", device)
    model.to(device)
    model.load_state_dict(state["model"])
    return FitResult(**state["fit"]), state["about"]


@dataclass(eq=False)
class _Rule:
    """One selection rule's early stopping within a training: its history (frozen once it stops),
    best validation score so far and that evaluation's parameters."""

    selection: str
    result: FitResult
    best: float = -1.0
    best_state: dict | None = None
    evals_without_gain: int = 0

    def state(self) -> dict:
        return {"best": self.best, "best_state": self.best_state, "evals_without_gain": self.evals_without_gain, "fit": dataclasses.asdict(self.result)}


def _snapshot(model: SeqRecModel, optimizers, rng: np.random.Generator, rules: list[_Rule], tag: dict) -> dict:
    """Everything `fit_rules` needs to continue a run exactly where it evaluated last (training
    draws only from torch's generators and `rng`)."""
    return {
        "tag": tag,
        "model": model.state_dict(),
        "model_training_state": model.training_state(),
        "optimizers": [o.state_dict() for o in optimizers],
        "rules": {r.selection: r.state() for r in rules},
        "rng": {"batches": rng.bit_generator.state, "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }


def _restore(state: dict, model: SeqRecModel, optimizers, rng: np.random.Generator, device) -> list[_Rule]:
    model.load_state_dict(state["model"])
    model.load_training_state(state["model_training_state"])
    for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    rng.bit_generator.state = state["rng"]["batches"]
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if state["rng"]["cuda"] and str(device).startswith("cuda"):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return [_Rule(name, FitResult(**r["fit"]), r["best"], r["best_state"], r["evals_without_gain"]) for name, r in state["rules"].items()]


def fit(
    model: SeqRecModel, split: Split, cfg: TrainConfig, *, seed: int, device="cpu", progress: bool = True, on_eval=None, snapshot: Path | None = None, snapshot_tag: dict | None = None
) -> FitResult:
    """Trains `model` with early stopping on `cfg.selection` and leaves the best validation
    checkpoint loaded (`fit_rules` with that one rule)."""
    fitted, best_state = fit_rules(model, split, cfg, (cfg.selection,), seed=seed, device=device, progress=progress, on_eval=on_eval, snapshot=snapshot, snapshot_tag=snapshot_tag)[cfg.selection]
    if best_state is not None:
        model.load_state_dict(best_state)
    return fitted


def fit_rules(
    model: SeqRecModel, split: Split, cfg: TrainConfig, selections: tuple[str, ...], *, seed: int, device="cpu", progress: bool = True, on_eval=None,
    snapshot: Path | None = None, snapshot_tag: dict | None = None,
) -> dict[str, tuple[FitResult, dict | None]]:
    """Trains `model` once with early stopping under each selection rule in `selections` (values of
    `TrainConfig.selection`, `cfg.selection` among them). -> {rule: (its history, its best
    validation checkpoint's parameters, None if it never evaluated)}; the model is left as the last
    epoch made it.

    A rule draws nothing, so each rule's history is exactly what a run with that rule alone would
    record: training goes on until every rule has stopped, and a rule's history ends where it
    stopped.

    `on_eval(epoch, valid_ndcg10)` is called after each evaluation up to `cfg.selection`'s stop, with
    the score it reads (tuning prunes through it; it may raise to stop the run); a resumed run first
    calls it for each evaluation it restored.

    With `snapshot` (a file path), the whole training state (parameters, optimizers, each rule's
    best checkpoint and early-stopping counters, random generators) is written there atomically
    after every evaluation, and a snapshot found there at the start is resumed from: a run
    interrupted at any point continues from its last evaluation and ends exactly as it would have
    without the interruption. A snapshot whose `snapshot_tag` (plain data naming the run and the
    code) or rules differ is ignored. The caller deletes the file once it has what it needs."""
    selections = tuple(sorted(set(selections)))
    if cfg.selection not in selections or not set(selections) <= {"unmasked", "masked"}:
        raise ValueError(f"selection rules {selections}: expected 'unmasked' and/or 'masked', cfg.selection ({cfg.selection!r}) among them")
    seed_everything(seed)
    model.to(device)
    model.fit_statistics(list(split.train_sequences))
    rules = [_Rule(s, FitResult(best_epoch=0, epochs_run=0)) for s in selections]
    if not model.trainable:
        for rule in rules:
            rule.result.stopped = NOT_TRAINED
        return {r.selection: (r.result, None) for r in rules}
    optimizers = model.configure_optimizers(cfg.lr, cfg.weight_decay, betas=(0.9, cfg.adam_beta2))
    rng = np.random.default_rng(seed)
    tag = {**(snapshot_tag or {}), "selections": list(selections)}
    if snapshot is not None and Path(snapshot).exists():
        state = load_state(snapshot, "training snapshot", device)
        if state.get("tag") == tag:
            rules = _restore(state, model, optimizers, rng, device)
            for rule in rules:
                rule.result.resumed_at.append(rule.result.epochs_run)
    main = next(r for r in rules if r.selection == cfg.selection)
    for point in main.result.curve if on_eval is not None else []:  # the evaluations a resumed run restored
        on_eval(point["epoch"], selected(point, cfg.selection))
    running = [r for r in rules if not r.result.stopped]
    last = max(r.result.epochs_run for r in rules)
    epochs = range(last + 1, cfg.epochs + 1) if running else range(0)  # a resumed run may be over
    bar = tqdm(epochs, desc="epochs", leave=False, disable=not progress)
    start = time.perf_counter() - max(r.result.train_seconds for r in rules)  # a resumed run counts the time already spent
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
        seconds = time.perf_counter() - t0
        for rule in running:
            rule.result.epoch_seconds.append(seconds)
            rule.result.epochs_run = epoch
        out_of_time = cfg.time_budget_s and time.perf_counter() - start > cfg.time_budget_s
        if epoch % cfg.eval_every and epoch != cfg.epochs and not out_of_time:
            continue
        ev = evaluate(model, split.valid, batch_size=cfg.eval_batch_size, seed=seed, device=device)
        point = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}, "valid": ev["metrics"], "valid_masked": ev["metrics_masked"], "eval_seconds": ev["seconds"]}
        point.update(model.epoch_diagnostics(split.valid.inputs.to(device)))
        bar.set_postfix(loss=f"{point.get('loss', 0):.4f}", ndcg10=f"{selected(point, cfg.selection):.4f}")
        train_seconds = time.perf_counter() - start
        for rule in running:
            result, score = rule.result, selected(point, rule.selection)
            result.curve.append(point)
            if score > rule.best:
                rule.best, rule.evals_without_gain, result.best_epoch = score, 0, epoch
                rule.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                rule.evals_without_gain += 1
            if rule.evals_without_gain >= cfg.patience and epoch >= cfg.min_epochs:
                result.stopped = f"patience ({cfg.patience} evaluations without gain)"
            elif out_of_time:
                result.stopped = f"time budget {cfg.time_budget_s:g}s"
            elif epoch == cfg.epochs:
                result.stopped = "epoch budget"
            result.train_seconds = train_seconds
        if snapshot is not None:
            with atomic_path(snapshot) as tmp:
                torch.save(_snapshot(model, optimizers, rng, rules, tag), tmp)
        if on_eval is not None and main in running:
            on_eval(epoch, selected(point, cfg.selection))
        running = [r for r in running if not r.result.stopped]
        if not running:
            break
    return {r.selection: (r.result, r.best_state) for r in rules}
