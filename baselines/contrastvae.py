"""ContrastVAE: Contrastive Variational AutoEncoder for Sequential Recommendation.

Wang, Zhang, Liu, Yang & Yu, CIKM 2022, https://arxiv.org/abs/2209.00456
Authors' code: https://github.com/YuWang-1024/ContrastVAE (models.py, trainers.py, modules.py).

Model, for a left-padded history x_1..x_t (d = hidden = latent size):
  H = TransformerEncoder(E[x] * sqrt(d) + P)          causal self-attention encoder, P = positions
  mu_t = W_mu H_t + b_mu,  log sigma_t^2 = W_s H_t + b_s      q(z_t | x_1..x_t) = N(mu_t, diag sigma_t^2)
  z_t = mu_t + sigma_t * eps,  eps ~ N(0, I)          reparameterisation
  G = TransformerDecoder(z)                           causal self-attention over the latents
  p(x_{t+1} | z_1..z_t) = softmax_v <G_t, E_v>        item table shared with the encoder
ELBO loss of one view, averaged over its real positions t:
  -log p(x_{t+1} | z_1..z_t) + beta(epoch) * KL(q(z_t | x_1..x_t) || N(0, I))
with KL annealing beta(epoch) = beta_max * min(1, (epoch - 1) / anneal_epochs).
Two views x', x'' of every training sequence (`augmentation`):
- "model": the same sequence encoded twice; the passes differ by their dropout masks and their
  reparameterisation noise (the authors' --latent_contrastive_learning; their setting for Beauty).
- "variational" (the paper's variational augmentation, the authors' --variational_dropout): as
  "model", but the second view's noise is scaled by a learnable alpha in (0, 1),
  z''_t = mu''_t + alpha * sigma''_t * eps, and the variational-dropout term of Kingma, Salimans &
  Welling (NeurIPS 2015, eq. 14), KL(alpha) ~ -(0.5 log alpha + c1 alpha + c2 alpha^2 + c3 alpha^3),
  is added to the loss (`variational_dropout_kl`).
- "data": the second view is a random crop, mask or reorder of the training sequence (the operators
  of CL4SRec, Xie et al., ICDE 2022; `augment`), scored against its own next items (the authors'
  --latent_data_augmentation).
ContrastELBO (Sec. 4 of the paper), minimised:
  L = ELBO-loss(x') + ELBO-loss(x'') + lambda * InfoNCE(u', u'')   [+ KL(alpha) for "variational"]
where u is the sum over the real positions of a view's latents z (the authors' sequence latent) and
InfoNCE is SimCLR's two-sided NT-Xent: cosine similarity / tau, the positive of each latent is its
other view, the other 2B - 2 latents of the batch are the negatives (`info_nce`).
Scores: the decoder's output after the last position with z = mu (the posterior mean, no sampling),
so evaluation is deterministic (the authors decode mu + sigma, a fixed offset of one std).
Diagnostics per evaluation: the last-position KL over the validation histories and the number of
active latent units (`baselines.svae.latent_diagnostics`).

Deviations and choices:
- One Transformer encoder with two linear heads for mu and log sigma^2 (the authors run two whole
  encoders, one per statistic): half the encoder cost, the same posterior family.
- Full softmax over all items as the reconstruction likelihood (the authors: binary cross-entropy
  with one sampled negative per position); it matches the multinomial likelihood of the ELBO and
  the suite's `sasrec-ce`.
- View one samples its noise (the authors' view one decodes mu + sigma with no noise).
- Pre-LayerNorm blocks and embeddings scaled by sqrt(d) as in this suite's SASRec (the authors:
  post-LN BERT blocks, LayerNorm on the input embeddings); no position embedding on the latents,
  as in the authors' code.
- The sequence latent u sums real positions only (the authors also sum the padded ones).
- The KL annealing weight grows per epoch, not per update (authors: per update, cap 0.2-0.4), and
  its cap is 0.02, chosen on validation as for SVAE: ml-100k, seed 0, quick settings, validation
  NDCG@10 at epoch 12 0.0273 with 0.2 against 0.0436 with 0.02 (best 0.0370 over 34 epochs with 0.2);
  with 0.2 beauty's posterior collapsed to 2 active units of 64.
- "data" draws one operator per sequence with one `aug_ratio` for all three; the second view is
  scored against its own next items (mask keeps the original ones), so both views are proper ELBOs.
  The mask token is an extra embedding row that is never scored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from baselines.svae import gaussian_kl, kl_weight, latent_diagnostics
from benchmark.layers import TransformerEncoder, attention_mask, init_weights, position_ids
from benchmark.model import Batch, SeqRecModel
from benchmark.output import item_scores, softmax_cross_entropy

Augmentation = Literal["model", "variational", "data"]
AugmentOp = Literal["crop", "mask", "reorder"]
AUGMENT_OPS: tuple[AugmentOp, ...] = ("crop", "mask", "reorder")

# Kingma, Salimans & Welling 2015, eq. 14: polynomial fit of -KL for Gaussian dropout with rate alpha.
_VD_C1, _VD_C2, _VD_C3 = 1.16145124, -1.50204118, 0.58629921


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Two-sided NT-Xent (Chen et al., ICML 2020). a, b: (B, D), row i of both is the same sequence.
    Each of the 2B rows is classified among the other 2B - 1 by cosine similarity / temperature,
    with its other view as the positive; the loss is the mean cross-entropy."""
    B = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=-1)  # (2B, D)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(z.device)  # (2B,)
    return F.cross_entropy(sim, positive)


def variational_dropout_kl(alpha: torch.Tensor) -> torch.Tensor:
    """Approximate KL of Gaussian dropout with rate alpha from the log-uniform prior (Kingma et al. 2015)."""
    return -(0.5 * torch.log(alpha) + _VD_C1 * alpha + _VD_C2 * alpha**2 + _VD_C3 * alpha**3)


def augment(seq: torch.Tensor, op: AugmentOp, ratio: float, mask_id: int, generator: torch.Generator | None = None):
    """seq: (n,) the items of one training sequence, n >= 2 -> (inputs, targets), each (m,), the
    augmented view's inputs and next-item targets.
    - crop: a random window of max(2, ceil((1 - ratio) n)) items, its own next items as targets;
    - mask: round(ratio (n - 1)) random inputs become `mask_id`, the targets stay the original ones;
    - reorder: a random window of round(ratio n) items is shuffled, the new order's next items as targets."""
    n = len(seq)
    if op == "mask":
        inputs = seq[:-1].clone()
        inputs[torch.randperm(n - 1, generator=generator)[: round(ratio * (n - 1))]] = mask_id
        return inputs, seq[1:]
    m = max(2, math.ceil((1 - ratio) * n)) if op == "crop" else round(ratio * n)
    start = int(torch.randint(n - m + 1, (1,), generator=generator))
    if op == "crop":
        seq = seq[start : start + m]
    else:
        seq = seq.clone()
        seq[start : start + m] = seq[start : start + m][torch.randperm(m, generator=generator)]
    return seq[:-1], seq[1:]


@dataclass(frozen=True)
class ContrastVAEConfig:
    augmentation: Augmentation = "model"
    hidden: int = 64  # also the latent size
    layers: int = 1  # blocks in the encoder and again in the decoder (the authors: 1)
    heads: int = 2
    dropout: float = 0.3
    init_std: float = 0.02
    beta_max: float = 0.02  # KL weight after annealing (the authors' cap on Beauty: 0.2; see "Deviations")
    anneal_epochs: int = 10  # epochs of linear warm-up from 0 to beta_max (0 = constant)
    contrast_weight: float = 0.3  # lambda (the authors' default latent_clr_weight)
    temperature: float = 0.5  # tau (the authors' default)
    va_dropout: float = 0.2  # "variational": initial alpha = sqrt(p / (1 - p)) (the authors' init)
    aug_ratio: float = 0.3  # "data": share of the sequence cropped away, masked or reordered

    def __post_init__(self):
        if self.hidden <= 0 or self.layers <= 0 or self.heads <= 0:
            raise ValueError("hidden, layers and heads must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.beta_max < 0 or self.anneal_epochs < 0 or self.contrast_weight < 0:
            raise ValueError("beta_max, anneal_epochs and contrast_weight must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not 0.0 < self.va_dropout < 0.5:
            raise ValueError(f"va_dropout {self.va_dropout} must be in (0, 0.5)")
        if not 0.0 <= self.aug_ratio < 1.0:
            raise ValueError(f"aug_ratio {self.aug_ratio} must be in [0, 1)")


# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = ContrastVAEConfig keys.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space (all divisible by the 2 heads)
    "dropout": ("float", 0.1, 0.6),
    "beta_max": ("log", 0.01, 1.0),
    "contrast_weight": ("float", 0.0, 1.0),
    "anneal_epochs": ("int", 0, 20, 5),
}


class ContrastVAE(SeqRecModel):
    def __init__(self, cfg: ContrastVAEConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        d = cfg.hidden
        self.mask_id = n_items + 1  # only embedded with augmentation "data"
        self.item_emb = nn.Embedding(n_items + 2 if cfg.augmentation == "data" else n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(d, cfg.layers, cfg.heads, cfg.dropout)
        self.to_mu, self.to_logvar = nn.Linear(d, d), nn.Linear(d, d)
        self.decoder = TransformerEncoder(d, cfg.layers, cfg.heads, cfg.dropout)
        self.apply(partial(init_weights, std=cfg.init_std))
        if cfg.augmentation == "variational":
            alpha = math.sqrt(cfg.va_dropout / (1 - cfg.va_dropout))
            self.alpha_logit = nn.Parameter(torch.tensor(math.log(alpha / (1 - alpha))))
        self.beta = kl_weight(1, cfg.beta_max, cfg.anneal_epochs)

    def posterior(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """seqs: (B, L) left-padded -> mu, logvar: (B, L, d) of q(z_t | x_1..x_t)."""
        keep = seqs > 0
        x = self.item_emb(seqs) * self.cfg.hidden**0.5 + self.pos_emb(position_ids(seqs.shape[1], self.max_len, seqs.device))
        h = self.encoder(self.drop(x), keep, attention_mask(keep, causal=True))
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """z: (B, L, d) latents, keep: (B, L) real positions -> (B, L, d) next-item states."""
        return self.decoder(z, keep, attention_mask(keep, causal=True))

    def item_table(self) -> torch.Tensor:
        """The output layer (n_items + 1, d): the item table without the mask token's row, never scored."""
        return self.item_emb.weight[: self.n_items + 1]

    def view_loss(self, inputs: torch.Tensor, targets: torch.Tensor, noise_scale: torch.Tensor | float = 1.0):
        """One view's reconstruction loss, KL and sequence latent u: (B, d)."""
        keep = inputs > 0
        mu, logvar = self.posterior(inputs)
        z = mu + noise_scale * (0.5 * logvar).exp() * torch.randn_like(mu)  # (B, L, d)
        real = targets > 0
        rec, _ = softmax_cross_entropy(self.decode(z, keep)[real], self.item_table(), targets[real])
        kl = gaussian_kl(mu[real], logvar[real]).mean()
        return rec, kl, (z * keep[..., None]).sum(1)

    def augmented_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A "data" view of each training sequence, left-padded: (B, L') inputs and targets."""
        full = torch.cat([inputs, targets[:, -1:]], dim=1)  # (B, L + 1): each row's training items
        ops = torch.randint(len(AUGMENT_OPS), (len(full),)).tolist()
        rows = [augment(row[row > 0], AUGMENT_OPS[op], self.cfg.aug_ratio, self.mask_id) for row, op in zip(full, ops)]
        width = max(len(x) for x, _ in rows)
        aug_inputs = inputs.new_zeros(len(rows), width)
        aug_targets = inputs.new_zeros(len(rows), width)
        for b, (x, y) in enumerate(rows):
            aug_inputs[b, width - len(x) :], aug_targets[b, width - len(y) :] = x, y
        return aug_inputs, aug_targets

    def loss(self, batch: Batch):
        cfg = self.cfg
        rec1, kl1, u1 = self.view_loss(batch.inputs, batch.targets)
        logs = {}
        extra = 0.0
        if cfg.augmentation == "data":
            rec2, kl2, u2 = self.view_loss(*self.augmented_batch(batch.inputs, batch.targets))
        elif cfg.augmentation == "variational":
            alpha = torch.sigmoid(self.alpha_logit)
            rec2, kl2, u2 = self.view_loss(batch.inputs, batch.targets, noise_scale=alpha)
            extra = variational_dropout_kl(alpha)
            logs["alpha"] = float(alpha.detach())
        else:
            rec2, kl2, u2 = self.view_loss(batch.inputs, batch.targets)
        nce = info_nce(u1, u2, cfg.temperature)
        loss = rec1 + rec2 + self.beta * (kl1 + kl2) + cfg.contrast_weight * nce + extra
        logs.update(rec=float(rec1.detach() + rec2.detach()) / 2, kl=float(kl1.detach() + kl2.detach()) / 2, infonce=float(nce.detach()), beta=self.beta)
        return loss, logs

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, _ = self.posterior(seqs)
        return item_scores(self.decode(mu, seqs > 0)[:, -1], self.item_table())  # (B, n_items + 1)

    def on_epoch_start(self, epoch: int) -> None:
        self.beta = kl_weight(epoch, self.cfg.beta_max, self.cfg.anneal_epochs)

    def epoch_diagnostics(self, valid_inputs: torch.Tensor) -> dict[str, float]:
        return latent_diagnostics(self, valid_inputs)
