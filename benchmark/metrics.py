"""Full-ranking metrics of the protocol: one place, used by every model.

Conventions (written into every run record by `PROTOCOL` below):
- `scores` has shape (users, n_items + 1); column 0 is the padding item and is never ranked.
- Full ranking over items 1..n_items, no sampled negatives.
- Pessimistic ties: a target tied with k other items is ranked below all of them, so a model that
  scores every item equally ranks every target last and gets 0 (for k < n_items).
- NaN or inf scores among the ranked items raise `ValueError`; a model that produces them is broken.
- Ranks are 0-based: rank 0 means the target is the top item.
- HR@k = [rank < k];  NDCG@k = [rank < k] / log2(rank + 2);  MRR@k = [rank < k] / (rank + 1).
  For k >= n_items every target is within the top k, so HR@k = 1 whatever the scores.
- History masking: with `history`, the user's earlier items (except the target itself) are removed
  from the ranking before the target's rank is counted (the S3-Rec / ICLRec / DuoRec convention).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

KS: tuple[int, ...] = (5, 10, 20)
METRICS: tuple[str, ...] = ("HR", "NDCG", "MRR")
SELECTION_METRIC = "NDCG@10"

PROTOCOL = {
    "ranking": "full (all items, padding excluded)",
    "ties": "pessimistic (target ranked below every item with an equal score)",
    "metrics": [f"{m}@{k}" for m in METRICS for k in KS],
    "selection": f"validation {SELECTION_METRIC}, unmasked",
    "masking": "metrics.* unmasked; metrics.*_masked with the user's history items removed from the ranking",
}


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if dtype is None else t.to(dtype)


def ranks_of(scores, targets, history: torch.Tensor | Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """0-based pessimistic rank of each target among items 1..n_items.

    scores: (B, n_items + 1) float; targets: (B,) ints in 1..n_items.
    history: optional (B, H) padded item ids (0 = padding), or a list of per-user id lists, whose
    items are left out of the ranking (the target never is).
    Returns a (B,) int64 tensor on the scores' device.
    """
    ranks, masked = ranks_unmasked_and_masked(scores, targets, history)
    return ranks if history is None else masked


def ranks_unmasked_and_masked(scores, targets, history=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Both ranks from one pass over the scores: the masked rank is the unmasked rank minus the
    distinct history items (other than the target) that score at least as high as the target."""
    scores = _as_tensor(scores)
    if not torch.is_floating_point(scores):
        scores = scores.float()
    targets = _as_tensor(targets, torch.long).to(scores.device)
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (users, n_items + 1) and targets (users,); got {tuple(scores.shape)} and {tuple(targets.shape)}")
    n_items = scores.shape[1] - 1
    if n_items < 1:
        raise ValueError("scores need at least one real item column besides padding column 0")
    if targets.numel() and (targets.min() < 1 or targets.max() > n_items):
        raise ValueError(f"targets must be item ids in 1..{n_items}")
    ranked = scores[:, 1:]
    if not torch.isfinite(ranked.sum()) and not torch.isfinite(ranked).all():  # cheap check first
        raise ValueError("scores contain NaN or inf among the ranked items")
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    # int32 counts (n_items < 2^31): summing the (B, n_items) boolean as int64 was 2.5x slower
    ranks = (ranked >= target_scores).sum(dim=1, dtype=torch.int32).long() - 1  # the target itself is counted once
    if history is None:
        return ranks, None
    hist, _ = _history_tensor(history, scores.shape[0]).to(scores.device).sort(dim=1)  # (B, H)
    first = torch.ones_like(hist, dtype=torch.bool)
    first[:, 1:] = hist[:, 1:] != hist[:, :-1]  # count a repeated history item once
    counted = first & (hist > 0) & (hist != targets[:, None])
    ahead = scores.gather(1, hist) >= target_scores  # (B, H)
    return ranks, ranks - (ahead & counted).sum(dim=1)


def _history_tensor(history, n_users: int) -> torch.Tensor:
    if isinstance(history, torch.Tensor):
        hist = history.long()
    else:
        width = max((len(h) for h in history), default=0)
        hist = torch.zeros((len(history), max(width, 1)), dtype=torch.long)
        for i, h in enumerate(history):
            hist[i, : len(h)] = torch.as_tensor(list(h), dtype=torch.long)
    if hist.shape[0] != n_users:
        raise ValueError(f"history has {hist.shape[0]} rows for {n_users} users")
    return hist


def metrics_from_ranks(ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean HR@k, NDCG@k and MRR@k over users, keyed like "NDCG@10"."""
    per_user = per_user_metrics(ranks, ks)
    return {key: float(values.mean()) if values.size else 0.0 for key, values in per_user.items()}


def per_user_metrics(ranks, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k and MRR@k arrays (what paired significance tests need)."""
    r = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for metric in METRICS:
        for k in ks:
            hit = r < k
            if metric == "HR":
                v = hit.astype(np.float64)
            elif metric == "NDCG":
                v = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
            else:
                v = np.where(hit, 1.0 / (r + 1.0), 0.0)
            out[f"{metric}@{k}"] = v
    return out


def rank_metrics(scores, targets, ks: Sequence[int] = KS, history=None) -> dict:
    """Mean metrics of one batch of scores; `result["ranks"]` holds the per-user ranks (numpy)."""
    ranks = ranks_of(scores, targets, history)
    result: dict = metrics_from_ranks(ranks, ks)
    result["ranks"] = ranks.cpu().numpy()
    return result
