"""What every model offers the protocol: a training loss and next-item scores.

The trainer and the evaluator only talk to models through `SeqRecModel`; no model evaluates
itself. A model file defines a frozen `@dataclass` config and a `SeqRecModel` subclass built as
`Model(cfg, n_items=..., max_len=...)`, and is registered with one line in `benchmark.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Batch:
    """A batch of training sequences, left-padded with 0 and cut to the longest one.

    inputs:  (B, L) item ids, most recent last.
    targets: (B, L) the next item after each input position; 0 where there is none (padding).
    users:   (B,) row indices into the split's training users (models with per-user state use it).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    users: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(self.inputs.to(device), self.targets.to(device), self.users.to(device))


class SeqRecModel(nn.Module):
    """Base class: subclasses implement `loss` and `score`, and may override the hooks."""

    def __init__(self, n_items: int, max_len: int):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss and a dict of floats to average into the epoch's log."""
        raise NotImplementedError

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """seqs: (B, L) left-padded histories -> (B, n_items + 1) scores of the next item.
        Column 0 (padding) is ignored by the protocol. Stochastic models draw from `generator`."""
        raise NotImplementedError

    # Hooks with sensible defaults -------------------------------------------------------------
    def fit_statistics(self, train_sequences: list) -> None:
        """Called once before training with each user's training items (no valid/test items)."""

    def configure_optimizers(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)]

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One update; adversarial models override this to alternate their players."""
        (opt,) = optimizers
        loss, logs = self.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach()), **logs}

    def on_epoch_start(self, epoch: int) -> None:
        """Schedules that depend on the epoch (KL annealing, pre-training phases) hook in here."""

    def training_state(self) -> dict:
        """State that training changes outside the parameters (tensors and plain data), which a
        resumed run must restore to continue exactly (a loss-aware step sampler's history)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restores what `training_state` returned."""

    def epoch_diagnostics(self, valid_inputs: torch.Tensor) -> dict[str, float]:
        """Model-specific numbers recorded per evaluation (active VAE units, discriminator accuracy)."""
        return {}

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())
