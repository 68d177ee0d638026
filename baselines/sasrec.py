"""SASRec: Self-Attentive Sequential Recommendation.

Kang & McAuley, ICDM 2018, https://arxiv.org/abs/1808.09781 (loss "bce").
Full-softmax variant: Klenitskiy & Vasilev, RecSys 2023, "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?", https://arxiv.org/abs/2309.07602 (loss "ce").
Sampled softmax over many uniform negatives (loss "ss"): the loss of the strongest published SASRec
on these Amazon files, Tikhonovich, Zelinskiy, Petrov, Spirina, Semenov, Savchenko & Kuliev,
RecSys 2025, "eSASRec: Enhancing Transformer-based Recommendations in a Modular Fashion",
https://arxiv.org/abs/2508.06450 (code: github.com/blondered/transformer_benchmark; 256 negatives).
Calibration `t` (loss "ss" with `t` set): gBCE of Petrov & Macdonald, RecSys 2023, "gSASRec:
Reducing Overconfidence in Sequential Recommendation Trained with Negative Sampling",
https://arxiv.org/abs/2308.07192.

Model: item embedding E (padding row 0) + learned position embedding, dropout, a causal Transformer
encoder; the score of item v after position t is <F_t, E_v> with the item table shared.
- "bce": at every real position, binary cross-entropy of the true next item against ONE sampled
  negative (eq. 4 of the paper).
- "ce": softmax cross-entropy over all items at every real position.
- "ss": at every real position, the target against `negatives` = k items drawn uniformly (with
  replacement) from all items: with `t` None, softmax cross-entropy over the k + 1 logits; with `t`
  in [0, 1], gSASRec's gBCE over the same logits, -(beta log sigmoid(s+) + sum log sigmoid(-s-)) /
  (k + 1), beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (n - 1), the paper's sampling
  rate (t = 0: plain BCE with k negatives; t = 1: fully calibrated; the gSASRec code's ml-1m
  setting is 0.75). `ss_loss` is the pure function.

Deviations and choices:
- Pre-LayerNorm blocks with a GELU feed-forward of width 4d (the paper: post-attention LN, ReLU,
  width d; `block = "sasrec"` below). Common in maintained reimplementations and more stable; the
  shape of the model is the same.
- The BCE negative is drawn uniformly from all items other than the positive; the authors' code
  also excludes the user's other items. With ~12k items and ~9 history items the difference
  affects about 0.1% of draws.
- Embeddings are scaled by sqrt(d) before adding positions, as in the authors' code.
- "ss" draws k negatives per sequence, shared by that sequence's positions (eSASRec's RecTools
  code and the gSASRec code draw k per position): the scores are then one batched (L x d)(d x k)
  product per sequence, where per-position negatives gather M x k rows (6,400 x 256 x 64 floats =
  420 MB at batch 128 and length 50). Each position still sees k uniform negatives, drawn apart
  from every other sequence's. Measured on beauty (quick suite, defaults, seed 0, one CPU thread,
  three runs sharing two cores): per sequence, validation NDCG@10 0.0397, test 0.0317, masked
  0.0453 at 17.5 s/epoch; per position (an exploratory run of a modified copy, not committed)
  0.0407, 0.0315 and 0.0460 at 43.7 s/epoch. One set shared by the whole batch, this model's first
  form (the quick record made at 1f548a59), gave 0.0375, 0.0294 and 0.0402: it pushes only k items
  down per step, each with the summed gradient of every row (probably also why it loses: Adam then
  moves those rarely-updated embedding rows in outsized steps).
- A negative may equal the target (an accidental hit, probability about k / n per row): it gets a
  -inf logit (softmax) or leaves the sum (gBCE), so the target is never its own negative. A
  negative may equal a history item and stays a negative: evaluation masks the history anyway,
  and with k = 256 of ~12k items and ~9 history items a row has ~0.2 such negatives.
- Losses are computed on real (non-padding) positions only, which gives the same value as the
  authors' masked sum but skips the padded work.

Switches for the RecTools SASRec that eSASRec's SASRec+SS row ran (RecTools 0.13, the pin of
transformer_benchmark's requirements.txt), off by default (the defaults are this file's model):
- `table_dropout`: dropout on the whole item table, drawn once per training step and used both for
  the input lookup and for scoring the targets and negatives (RecTools' item net applies its
  dropout_rate to the table it returns).
- `scale_input = False`: item vectors enter without the sqrt(d) factor (RecTools has none).
- `init = "xavier"`: Xavier-normal on every parameter of two or more dimensions, embeddings and
  positions included (RecTools' lightning module; its biases keep torch's uniform default, ours
  stay zero), the padding row zeroed again.
- `block = "sasrec"`: the SASRec authors' block, as RecTools has it (`benchmark.layers.SASRecBlock`:
  LayerNorm on the attention query only, residual from the normalised query, ReLU feed-forward of
  width d), for our pre-LN GELU one of width 4d.
- `attend_padding`: every sequence is padded to max_len (RecTools' fixed window) and its positions
  attend to the padding before them (RecTools passes no key-padding mask; padded inputs are zeroed,
  so their keys and values are the projections' biases); ours cut batches to their longest
  sequence and never attend to padding.
RecTools' Adam betas (0.9, 0.98) are a training key, `train.adam_beta2`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.layers import TransformerEncoder, attention_mask, init_weights, position_ids
from benchmark.model import Batch, SeqRecModel
from benchmark.output import item_scores, softmax_cross_entropy


@dataclass(frozen=True)
class SASRecConfig:
    loss: Literal["bce", "ce", "ss"] = "ce"
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3  # sparse Amazon data likes heavy dropout (the paper used 0.5 there)
    init_std: float = 0.02
    negatives: int = 256  # k, loss "ss" only: eSASRec's value
    t: float | None = None  # loss "ss" only: None = sampled softmax; [0, 1] = gBCE calibration
    table_dropout: float = 0.0  # dropout on the whole item table per training step (input and scoring)
    scale_input: bool = True  # item vectors times sqrt(hidden) at the input
    init: Literal["normal", "xavier"] = "normal"  # normal(0, init_std), or Xavier-normal (RecTools)
    block: Literal["pre_ln", "sasrec"] = "pre_ln"  # benchmark.layers.BLOCKS: ours, or the SASRec authors' (RecTools)
    attend_padding: bool = False  # pad every sequence to max_len and let positions attend to the padding (RecTools)

    # fields added after the first records, with the value that behaves as before (benchmark.suite)
    ADDED_FIELDS: ClassVar[dict] = {"negatives": 256, "t": None, "table_dropout": 0.0, "scale_input": True, "init": "normal", "block": "pre_ln", "attend_padding": False}

    def __post_init__(self):
        if self.hidden <= 0 or self.layers <= 0 or self.heads <= 0:
            raise ValueError("hidden, layers and heads must be positive")
        for name in ("dropout", "table_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, 1)")
        if self.negatives < 1:
            raise ValueError(f"negatives {self.negatives} must be at least 1 (the sampled loss needs a negative)")
        if self.t is not None and not 0.0 <= self.t <= 1.0:
            raise ValueError(f"t {self.t} must be in [0, 1] or none")


# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = SASRecConfig keys.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "train.weight_decay": ("choice", [0.0, 1e-6, 1e-4]),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space (all divisible by the 2 heads)
    "layers": ("int", 1, 3),
    "dropout": ("float", 0.1, 0.6),
}
# sasrec-ss uses this space too; k and t stay fixed (k = 256 is eSASRec's setting, and the sampled
# softmax has no t).


class SASRec(SeqRecModel):
    def __init__(self, cfg: SASRecConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(d, cfg.layers, cfg.heads, cfg.dropout, cfg.block)
        self.apply(partial(init_weights, std=cfg.init_std))
        if cfg.init == "xavier":
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)
            self.item_emb.weight.data[0].zero_()

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, d): the item table, with `table_dropout` applied while training."""
        return F.dropout(self.item_emb.weight, self.cfg.table_dropout, self.training) if self.cfg.table_dropout else self.item_emb.weight

    def hidden_states(self, seqs: torch.Tensor, last_only: bool = False, table: torch.Tensor | None = None) -> torch.Tensor:
        """seqs: (B, L) left-padded -> (B, L, d) causal states, or (B, d) the last one's with
        `last_only` (inference only); `table` (n_items + 1, d): the item vectors to look up
        (default: the embedding's)."""
        width = seqs.shape[1]
        if self.cfg.attend_padding:  # the full window, so that a state never depends on its batch's width
            seqs = F.pad(seqs, (self.max_len - width, 0))
        keep = seqs > 0
        x = F.embedding(seqs, self.item_emb.weight if table is None else table, padding_idx=0)  # what self.item_emb(seqs) calls
        if self.cfg.scale_input:
            x = x * self.cfg.hidden**0.5
        x = x + self.pos_emb(position_ids(seqs.shape[1], self.max_len, seqs.device))
        mask = attention_mask(torch.ones_like(keep) if self.cfg.attend_padding else keep, causal=True)  # (B, 1, L, L)
        if last_only:
            return self.encoder.forward_last(self.drop(x), keep, mask)
        return self.encoder(self.drop(x), keep, mask)[:, -width:]

    def loss(self, batch: Batch):
        table = self.item_table()  # (n + 1, d): one dropout draw for the input and the scores
        h = self.hidden_states(batch.inputs, table=table)  # (B, L, d)
        if self.cfg.loss == "ss":
            neg = torch.randint(1, self.n_items + 1, (h.shape[0], self.cfg.negatives), device=h.device)  # (B, k): each sequence's own
            return ss_loss(h, table, batch.targets, neg, self.n_items, self.cfg.t), {}
        real = batch.targets > 0
        h, pos = h[real], batch.targets[real]  # (M, d), (M,)
        if self.cfg.loss == "ce":
            return softmax_cross_entropy(h, table, pos)[0], {}
        neg = torch.randint(1, self.n_items, pos.shape, device=pos.device)
        neg = neg + (neg >= pos).long()  # uniform over the items other than the positive
        pos_logit = (h * F.embedding(pos, table, padding_idx=0)).sum(-1)
        neg_logit = (h * F.embedding(neg, table, padding_idx=0)).sum(-1)
        loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + F.binary_cross_entropy_with_logits(
            neg_logit, torch.zeros_like(neg_logit)
        )
        return loss, {}

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return item_scores(self.hidden_states(seqs, last_only=True), self.item_emb.weight)  # (B, n_items + 1)


def ss_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, neg: torch.Tensor, n_items: int, t: float | None = None) -> torch.Tensor:
    """Loss "ss" (see the module docstring): h (B, L, d) states, weight (n + 1, d), targets (B, L)
    with 0 for padding (left out), neg (B, k) each sequence's negatives, shared by its positions;
    `t` None: sampled softmax CE; else gBCE with calibration t. A negative equal to its position's
    target is masked out. -> the mean over the real positions."""
    real = targets > 0
    pos = targets[real]  # (M,)
    pos_logit = (h[real] * weight[pos]).sum(-1, keepdim=True)  # (M, 1)
    neg_logit = torch.bmm(h, weight[neg].transpose(1, 2))[real]  # (B, L, k) -> (M, k)
    hit = neg[:, None, :].expand(-1, targets.shape[1], -1)[real] == pos[:, None]  # (M, k) accidental hits
    if t is None:
        logits = torch.cat([pos_logit, neg_logit.masked_fill(hit, float("-inf"))], 1)  # (M, k + 1)
        return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
    k = neg.shape[1]
    alpha = k / (n_items - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    neg_term = F.logsigmoid(-neg_logit).masked_fill(hit, 0.0).sum(1)  # (M,)
    return (-(beta * F.logsigmoid(pos_logit[:, 0]) + neg_term) / (k + 1)).mean()
