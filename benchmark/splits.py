"""Leave-one-out splits: the last item is the test target, the second-to-last the validation
target, the rest is training data. Inputs are windows of the last `max_len` items, left-padded.

For a user with items s_1..s_n:
- training pairs: inputs s_1..s_{n-3}, next-item targets s_2..s_{n-2} (one per position, so a model
  sees every training target each epoch); the last `max_len` positions are kept;
- validation: input s_1..s_{n-2} (last max_len), target s_{n-1};
- test: input s_1..s_{n-1} (last max_len), target s_n.
No validation or test position ever enters a training input or target (tests assert it).
The history used for the masked protocol is the user's whole input prefix, not just its window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.data import SequenceData


def left_pad(rows: list[np.ndarray], width: int) -> torch.Tensor:
    """Rows of item ids -> (len(rows), width) long tensor, each row's last `width` items right-aligned."""
    out = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[-width:] if width else row[:0]
        if len(row):
            out[i, -len(row):] = row
    return torch.from_numpy(out)


@dataclass(frozen=True)
class EvalSet:
    inputs: torch.Tensor  # (U, max_len) left-padded histories
    targets: torch.Tensor  # (U,) item ids
    history: torch.Tensor  # (U, H) every earlier item of the user, 0-padded (for the masked metrics)

    @property
    def lengths(self) -> torch.Tensor:
        return (self.inputs > 0).sum(1)


@dataclass(frozen=True)
class Split:
    n_items: int
    max_len: int
    train_inputs: torch.Tensor  # (U, max_len) left-padded
    train_targets: torch.Tensor  # (U, max_len) next item per input position, 0 = none
    train_sequences: tuple[np.ndarray, ...]  # each user's training items s_1..s_{n-2}
    valid: EvalSet
    test: EvalSet

    @property
    def n_users(self) -> int:
        return len(self.train_sequences)

    @property
    def train_lengths(self) -> torch.Tensor:
        return (self.train_targets > 0).sum(1)


def leave_one_out(data: SequenceData, max_len: int | None = None, users: int | None = None) -> Split:
    """Split `data` (optionally only its first `users` users; the catalogue stays whole)."""
    max_len = max_len or data.max_len
    seqs = list(data.sequences[:users] if users else data.sequences)
    if any(len(s) < 3 for s in seqs):
        raise ValueError(f"{data.path}: every user needs at least 3 items for leave-one-out")
    train = [s[:-2] for s in seqs]

    def eval_set(prefixes: list[np.ndarray], targets: list[int]) -> EvalSet:
        width = max(len(p) for p in prefixes)
        return EvalSet(left_pad(prefixes, max_len), torch.tensor(targets, dtype=torch.long), left_pad(prefixes, width))

    return Split(
        n_items=data.n_items,
        max_len=max_len,
        train_inputs=left_pad([t[:-1] for t in train], max_len),
        train_targets=left_pad([t[1:] for t in train], max_len),
        train_sequences=tuple(train),
        valid=eval_set(train, [int(s[-2]) for s in seqs]),
        test=eval_set([s[:-1] for s in seqs], [int(s[-1]) for s in seqs]),
    )
