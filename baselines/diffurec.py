"""DiffuRec: a diffusion model for sequential recommendation.

Li, Sun & Li, "DiffuRec: A Diffusion Model for Sequential Recommendation", ACM TOIS 42(3), 2023
(published 29 December 2023, https://doi.org/10.1145/3631116),
https://arxiv.org/abs/2304.00686; authors' code https://github.com/WHUIR/DiffuRec (src/).

Only the target item is diffused; the history conditions the approximator. Steps s = 0..T-1.
- Forward process on the target embedding x_0 = e_target (eq. 1-2 of Ho et al. 2020):
  x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps, with the truncated-linear beta schedule, T = 32.
- Approximator: z_i = LN(dropout(e_i)) + lambda_i * (x_s + d_s) at every history position i, where
  lambda_i ~ N(delta, delta^2) is drawn per position and dimension (the "uncertainty" weight) and d_s
  is a sinusoidal step embedding through an MLP; a Transformer over z_1..z_n; x0_hat is its output
  at the last position.
- Rounding: score_v = <x0_hat, e_v> for every item v (one embedding table for history, target and
  rounding). Loss: softmax cross-entropy of those scores with the target as the class (the loss
  the authors' code trains with).
- Inference: x_{T-1} ~ N(0, I); for s = T-1..1: x0_hat = f(history, x_s, s), then
  x_{s-1} = mean of q(x_{s-1} | x_s, x0_hat) (eq. 7 of Ho et al.) + sqrt(beta_s) z; at s = 0 the
  posterior mean is x0_hat itself, which is rounded.

Deviations from the authors' code, and choices:
- Column 0 (padding) never takes part: it is left out of the training softmax, and the protocol
  ignores it when ranking. The code scores the padding row like an item, in training and ranking.
- Checkpoints are selected on validation NDCG@10 only, by `benchmark.train.fit` (the code keeps a
  model whenever any of six validation metrics improves and resets its patience on any of them).
- Attention masks padded keys, as everywhere in this suite. The code masks padded query rows only,
  so real positions there attend to the (learned, non-zero) padding embedding.
- The Transformer is `benchmark.layers.TransformerEncoder` (pre-LN blocks, GELU FFN of width 4d,
  final LayerNorm). The code's blocks are also pre-LN, but end with dropout, then dropout + LN.
  Attention is bidirectional and there are no position embeddings, as in the code (they are
  commented out there); the last position's own embedding tells the model which item is last.
- Training examples (`targets`): 0 = every (prefix, next item) pair of every training sequence,
  as the code's `split_onebyone` does, computed exactly by expanding each batch row into its
  prefixes; k > 0 = only each user's k most recent training targets, every user each epoch (1 =
  the last target only). A prefix cannot share computation with the others (the noised target is
  added at every one of its positions), so the cost grows with the number of prefixes: k bounds it
  on long sequences such as MovieLens. The encoder takes them `PACK` at a time, sorted by length
  and each group cut to its longest, not the batch's (M, L) at once: on beauty 54% of the (M, L)
  positions are real, and 22 training batches took 1.6-2.2x less CPU time so (one thread).
- `window` (default 50, the code's max_len): the approximator reads the last `window` history
  items (0 = the split's whole window).
- The step s is drawn uniformly. The code calls a "lossaware" sampler that is never updated,
  which samples uniformly too; its importance weights are returned and unused.
- Item embeddings start at N(0, 0.02^2) (`init_std`), not PyTorch's N(0, 1) as in the code: on
  beauty (targets=1, 4 epochs) validation NDCG@10 was 0.0068 after 3 epochs with 1.0 and 0.0279
  after 4 with 0.02.
- Default `targets` = 20: on beauty that is nearly every target (5.9 training targets per user on
  average); on MovieLens it bounds the cost of a model that needs one pass per prefix.
- Learning rate 3e-3 (the registry's training default for this model; the code: 1e-3), no decay
  (the code: StepLR x0.1 every 100 epochs). Validation NDCG@10 after 2 epochs on beauty: 0.0220
  with 1e-3, 0.0309 with 3e-3; on ml-100k 0.0203 (epoch 4, 1e-3) vs 0.0466 (epoch 5, 3e-3).
- Default sizes are smaller for CPU budgets (hidden 64, 2 layers, 2 heads; the code: 128, 4, 4).
- Sampling noise and lambda at scoring time come from the `generator` passed to `score`, so a
  ranking is reproducible; the code draws them from the global RNG.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.layers import TransformerEncoder, attention_mask
from benchmark.model import Batch, SeqRecModel
from benchmark.output import item_scores, softmax_cross_entropy


def truncated_linear_betas(steps: int) -> torch.Tensor:
    """The code's "trunc_lin" schedule: Ho et al.'s linear betas rescaled to `steps`, plus 0.01."""
    scale = 1000 / steps
    start, end = scale * 1e-4 + 0.01, scale * 0.02 + 0.01
    if end > 1:
        end = scale * 1e-3 + 0.01
    return torch.linspace(start, end, steps, dtype=torch.float64)


def step_embedding(steps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps: (B,) -> (B, dim), [cos | sin] halves."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=steps.device) / half)
    args = steps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def all_prefixes(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (history, next item) pair of a batch. inputs, targets: (B, L) left-padded, aligned
    (targets[b, i] follows inputs[b, :i+1]) -> histories (M, L) left-padded, targets (M,)."""
    L = inputs.shape[1]
    b, i = (targets > 0).nonzero(as_tuple=True)  # (M,), (M,)
    cols = torch.arange(L, device=inputs.device) + (i[:, None] - (L - 1))  # (M, L) source column
    return inputs[b[:, None], cols.clamp(min=0)] * (cols >= 0), targets[b, i]


def recent_targets(targets: torch.Tensor, k: int) -> torch.Tensor:
    """targets: (B, L) left-padded -> the same with all but each row's k most recent targets zeroed."""
    return F.pad(targets[:, -k:], (targets.shape[1] - min(k, targets.shape[1]), 0))


PACK = 256  # training prefixes per encoder call (see `DiffuRec.loss`)


@dataclass(frozen=True)
class DiffuRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    emb_dropout: float = 0.3  # on history item embeddings, before their LayerNorm (the code's default)
    steps: int = 32
    delta: float = 0.001  # lambda ~ N(delta, delta^2): the code's default "lambda_uncertainty"
    targets: int = 20  # train on each user's `targets` most recent targets (0 = all of them)
    window: int = 50  # history items the approximator reads (0 = all; the code's max_len is 50)
    init_std: float = 0.02  # item embeddings ~ N(0, init_std^2); the code: 1.0 (PyTorch's default)

    def __post_init__(self):
        if self.hidden <= 0 or self.layers <= 0 or self.heads <= 0 or self.steps <= 0:
            raise ValueError("hidden, layers, heads and steps must be positive")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.emb_dropout < 1.0):
            raise ValueError("dropouts must be in [0, 1)")
        if self.delta < 0 or self.init_std <= 0 or self.targets < 0 or self.window < 0:
            raise ValueError("delta, targets and window must be >= 0 and init_std > 0")


# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = DiffuRecConfig keys.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space (all divisible by the 2 heads)
    "layers": ("int", 1, 3),
    "dropout": ("float", 0.0, 0.5),
    "emb_dropout": ("float", 0.0, 0.6),
    "delta": ("log", 1e-4, 1e-2),
}


class DiffuRec(SeqRecModel):
    def __init__(self, cfg: DiffuRecConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)
        self.item_emb.weight.data[0].zero_()
        self.emb_drop = nn.Dropout(cfg.emb_dropout)
        self.emb_ln = nn.LayerNorm(d)
        self.step_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.encoder = TransformerEncoder(d, cfg.layers, cfg.heads, cfg.dropout)
        betas = truncated_linear_betas(cfg.steps)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        for name, value in {
            "betas": betas,
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "post_coef_x0": betas * abar_prev.sqrt() / (1 - abar),  # eq. 7 of Ho et al. 2020
            "post_coef_xs": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def history(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """seqs: (B, L) -> embedded last `window` items (B, W, d) and their mask (B, W)."""
        seqs = seqs[:, -self.cfg.window :] if self.cfg.window else seqs
        return self.emb_ln(self.emb_drop(self.item_emb(seqs))), seqs > 0

    def uncertainty(self, shape: torch.Size, generator=None, device=None) -> torch.Tensor:
        """lambda ~ N(delta, delta^2) per position and dimension: (B, L, d)."""
        return self.cfg.delta + self.cfg.delta * torch.randn(shape, generator=generator, device=device)

    def approximate(self, h: torch.Tensor, keep: torch.Tensor, x_s: torch.Tensor, s: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """f(history, x_s, s) -> x0_hat (B, d). h, lam: (B, L, d), keep: (B, L), x_s: (B, d), s: (B,)."""
        cfg = self.cfg
        cond = x_s + self.step_mlp(step_embedding(s * (1000.0 / cfg.steps), cfg.hidden))  # (B, d)
        z = h + lam * cond[:, None]
        return self.encoder(z, keep, attention_mask(keep, causal=False), tail=1)[:, 0]  # the last position only

    def q_sample(self, x0: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) noise; x0, noise: (B, d), s: (B,)."""
        return self.sqrt_abar[s, None] * x0 + self.sqrt_one_minus_abar[s, None] * noise

    def reverse_step(self, x0_hat: torch.Tensor, x_s: torch.Tensor, s: int, noise: torch.Tensor) -> torch.Tensor:
        """x_{s-1} = posterior mean of q(x_{s-1} | x_s, x0_hat) + sqrt(beta_s) noise (no noise at s = 0)."""
        mean = self.post_coef_x0[s] * x0_hat + self.post_coef_xs[s] * x_s
        return mean + self.betas[s].sqrt() * noise if s > 0 else mean

    def loss(self, batch: Batch):
        targets = recent_targets(batch.targets, self.cfg.targets) if self.cfg.targets else batch.targets
        seqs, target = all_prefixes(batch.inputs, targets)  # (M, L), (M,)
        seqs = seqs[:, -self.cfg.window :] if self.cfg.window else seqs
        lengths, order = (seqs > 0).sum(1).sort()  # shortest prefixes first
        seqs, target = seqs[order], target[order]
        x0 = self.item_emb(target)  # (M, d)
        s = torch.randint(0, self.cfg.steps, target.shape, device=target.device)
        x_s = self.q_sample(x0, s, torch.randn_like(x0))
        lam = self.uncertainty(seqs.shape + (self.cfg.hidden,), device=seqs.device)  # (M, L, d): one draw, whatever PACK is
        # PACK prefixes of similar length at a time, each group cut to its longest: the outputs are
        # those of the whole (M, L) batch (padding is inert), at about half its cost on the Amazon sets.
        x0_hat = []
        for i in range(0, len(target), PACK):
            g, w = slice(i, i + PACK), int(lengths[min(i + PACK, len(target)) - 1])
            x0_hat.append(self.approximate(*self.history(seqs[g, -w:]), x_s[g], s[g], lam[g, -w:]))
        x0_hat = torch.cat(x0_hat)  # (M, d)
        return softmax_cross_entropy(x0_hat, self.item_emb.weight, target)[0], {}  # rounding: dot products with the table

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, keep = self.history(seqs)  # deterministic in eval mode: shared by all steps
        x = torch.randn(seqs.shape[0], self.cfg.hidden, generator=generator, device=seqs.device)
        for s in reversed(range(self.cfg.steps)):
            x0_hat = self.approximate(h, keep, x, torch.full((seqs.shape[0],), s, device=seqs.device), self.uncertainty(h.shape, generator, seqs.device))
            x = self.reverse_step(x0_hat, x, s, torch.randn(x.shape, generator=generator, device=x.device) if s > 0 else None)
        return item_scores(x, self.item_emb.weight)  # (B, n_items + 1)
