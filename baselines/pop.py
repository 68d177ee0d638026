"""Pop: recommend the most popular training items to everybody.

The non-personalised floor of every sequential-recommendation paper (e.g. Kang & McAuley, ICDM 2018,
https://arxiv.org/abs/1808.09781, Table III "PopRec"). Every learned model must clear it.

Model: score(u, v) = c_v, the number of times item v occurs in the training sequences (each user's
s_1..s_{n-2}); the same vector for every user. No parameters, so the trainer skips training.

Deviations and choices:
- Counts come from the training part of the leave-one-out split only, never from validation or
  test items; papers that count the whole log leak those two items per user into the floor.
- Repeated occurrences of an item in one sequence all count (interactions, not distinct users);
  only Yelp has repeats.
- Items never seen in training score 0 and tie with each other; the protocol's pessimistic ties
  rank a target among them below all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.model import SeqRecModel


@dataclass(frozen=True)
class PopConfig:
    """Pop has no settings; the empty config keeps the registry uniform."""


class Pop(SeqRecModel):
    def __init__(self, cfg: PopConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        self.register_buffer("counts", torch.zeros(n_items + 1))  # (n_items + 1,), column 0 = padding

    def fit_statistics(self, train_sequences: list) -> None:
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_sequences]) if train_sequences else np.zeros(0, np.int64)
        counts = np.bincount(items, minlength=self.n_items + 1)  # an id > n_items fails in copy_ below
        self.counts.copy_(torch.from_numpy(counts.astype(np.float32)))

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.counts.expand(seqs.shape[0], -1)  # (B, n_items + 1)
