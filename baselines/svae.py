"""SVAE: Sequential Variational Autoencoders for Collaborative Filtering.

Sachdeva, Manco, Ritacco & Pudi, WSDM 2019, https://arxiv.org/abs/1811.09975
Authors' code: https://github.com/noveens/svae_cf (code/main_svae.py).

Model (Sec. 3 of the paper), for the history x_1..x_t of a user:
  h_t = GRU(E[x_1], ..., E[x_t])                            recurrent encoder, E = item embedding
  [mu_t, log sigma_t^2] = W_2 tanh(W_1 h_t + b_1) + b_2     q(z_t | x_1..x_t) = N(mu_t, diag sigma_t^2)
  z_t = mu_t + sigma_t * eps,  eps ~ N(0, I)                reparameterisation trick
  pi_t = softmax(W_4 tanh(W_3 z_t + b_3) + b_4)             multinomial decoder over all items
Loss: the negative ELBO per real position t, averaged over the real positions of a batch,
  -log pi_t[x_{t+1}] + beta(epoch) * KL(N(mu_t, sigma_t^2) || N(0, I)),
  KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_k (sigma_k^2 + mu_k^2 - 1 - log sigma_k^2)     (`gaussian_kl`)
KL annealing (`kl_weight`): beta(epoch) = beta_max * min(1, (epoch - 1) / anneal_epochs), a linear
warm-up from 0 at the first epoch to beta_max (the authors' cap is 0.2; here 0.02, see below).
Scores: the decoder's logits after the last position with z = mu (the posterior mean, no sampling):
evaluation is then deterministic, and a sample would only add noise to the ranking.

Diagnostics per evaluation (`latent_diagnostics`): the mean KL of the last-position posterior over
the validation histories, and the number of active latent units (Burda et al., ICLR 2016): unit k
is active when the variance across users of its posterior mean exceeds 0.01. A collapsed posterior
shows as few active units and a KL near 0.

Deviations and choices:
- Next item only (the paper's "next-k" loss with k = 1): the protocol's target is one next item.
- Mini-batches of left-padded sequences (the authors use batch size 1). Each row is rotated so
  its items start at column 0 before the GRU and rotated back after it, so padding never enters
  the recurrent state and the score does not depend on how much padding a batch has.
- The annealing weight grows per epoch, not per update (authors: +1/200000 per update up to 0.2),
  so the schedule does not depend on the dataset's size.
- The authors' code uses the second half of the encoder output as log sigma when sampling but as
  log sigma^2 in the KL; here it is log sigma^2 in both.
- Dropout on the input embeddings (authors: none; set dropout=0 for that): the sparse Amazon data
  overfits without it.
- KL weight cap beta_max = 0.02 (the authors: 0.2), chosen on validation: with 0.2 the sampled latent
  is mostly noise and the model barely beats popularity. ml-100k, seed 0, quick settings: validation
  NDCG@10 0.0274 with 0.2, 0.0633 with 0.02 (33 -> 20-27 active units, so no collapse either way);
  beauty study (8 trials of 60 s, `results/tuning/`): best trial beta 0.022, 0.0288 against 0.0175
  for the 0.2 default (2 active units of 64 with 0.2, 8 with 0.022).
- Sizes: one width `hidden` for embedding, GRU and both MLPs (authors on ML-1M: 256, 200, 150)
  and latent size 64 (as the authors); Adam with the suite's settings (authors: weight decay 5e-3).
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import nn

from benchmark.model import Batch, SeqRecModel
from benchmark.output import item_scores, softmax_cross_entropy

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) over the last dim: (..., K) -> (...)."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)


def kl_weight(epoch: int, beta_max: float, anneal_epochs: int) -> float:
    """Linear KL annealing: 0 at epoch 1, beta_max from epoch anneal_epochs + 1 on (epochs count from 1)."""
    if anneal_epochs == 0:
        return beta_max
    return beta_max * min(1.0, (epoch - 1) / anneal_epochs)


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """mu: (U, K) posterior means of U users -> number of units whose variance across users exceeds
    `threshold` (population variance)."""
    return int((mu.var(0, correction=0) > threshold).sum())


@torch.inference_mode()
def latent_diagnostics(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Over every history in `inputs` (U, max_len): the mean KL of the last-position posterior and the
    number of active units. `model.posterior(seqs (B, L))` -> (mu, logvar), each (B, L, K); it runs
    in eval mode (no dropout) and the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    lengths = (inputs > 0).sum(1)
    order = torch.argsort(lengths, stable=True)  # similar lengths together: less padding
    mus, kls = [], []
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        width = max(1, int(lengths[idx].max()))
        mu, logvar = model.posterior(inputs[idx, -width:])
        mus.append(mu[:, -1])
        kls.append(gaussian_kl(mu[:, -1], logvar[:, -1]))
    model.train(was_training)
    return {"valid_kl": float(torch.cat(kls).mean()), "active_units": active_units(torch.cat(mus))}


def roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """x: (B, L, ...); out[b, j] = x[b, (j + shifts[b]) % L]. With shifts = L - lengths a left-padded
    batch becomes right-padded; shifts = lengths turns it back."""
    B, L = x.shape[:2]
    idx = (torch.arange(L, device=x.device) + shifts[:, None]) % L  # (B, L)
    return x.gather(1, idx.view(B, L, *[1] * (x.dim() - 2)).expand_as(x))


@dataclass(frozen=True)
class SVAEConfig:
    hidden: int = 64  # item embedding, GRU state and the MLPs of encoder and decoder
    latent: int = 64
    dropout: float = 0.2  # on the input embeddings
    beta_max: float = 0.02  # KL weight after annealing (the authors' cap: 0.2; see "Deviations")
    anneal_epochs: int = 10  # epochs of linear warm-up from 0 to beta_max (0 = constant beta_max)

    def __post_init__(self):
        if self.hidden <= 0 or self.latent <= 0:
            raise ValueError("hidden and latent must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.beta_max < 0 or self.anneal_epochs < 0:
            raise ValueError("beta_max and anneal_epochs must be >= 0")


# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = SVAEConfig keys.
# The KL weight and its warm-up are in it because they decide whether the latent collapses.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space
    "latent": ("choice", [32, 64, 128]),
    "dropout": ("float", 0.0, 0.5),
    "beta_max": ("log", 0.01, 1.0),
    "anneal_epochs": ("int", 0, 20, 5),
}


class SVAE(SeqRecModel):
    def __init__(self, cfg: SVAEConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        d, k = cfg.hidden, cfg.latent
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.encoder = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 2 * k))
        self.decoder = nn.Sequential(nn.Linear(k, d), nn.Tanh(), nn.Linear(d, n_items + 1))
        self.beta = kl_weight(1, cfg.beta_max, cfg.anneal_epochs)

    def posterior(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """seqs: (B, L) left-padded -> mu, logvar: (B, L, latent) of q(z_t | x_1..x_t)."""
        L = seqs.shape[1]
        lengths = (seqs > 0).sum(1)
        x = self.drop(self.item_emb(roll_rows(seqs, L - lengths)))  # (B, L, d), items first
        h, _ = self.gru(x)  # padding comes after the items, so it never reaches a real state
        mu, logvar = self.encoder(roll_rows(h, lengths)).chunk(2, dim=-1)
        return mu, logvar

    def loss(self, batch: Batch):
        mu, logvar = self.posterior(batch.inputs)
        real = batch.targets > 0
        mu, logvar, target = mu[real], logvar[real], batch.targets[real]  # (M, K), (M, K), (M,)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        out = self.decoder[-1]  # the decoder's output layer over items, (n_items + 1, d)
        nll, _ = softmax_cross_entropy(self.decoder[:-1](z), out.weight, target, bias=out.bias)
        kl = gaussian_kl(mu, logvar).mean()
        return nll + self.beta * kl, {"nll": float(nll.detach()), "kl": float(kl.detach()), "beta": self.beta}

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, _ = self.posterior(seqs)
        out = self.decoder[-1]
        return item_scores(self.decoder[:-1](mu[:, -1]), out.weight, out.bias)  # (B, n_items + 1)

    def on_epoch_start(self, epoch: int) -> None:
        self.beta = kl_weight(epoch, self.cfg.beta_max, self.cfg.anneal_epochs)

    def epoch_diagnostics(self, valid_inputs: torch.Tensor) -> dict[str, float]:
        return latent_diagnostics(self, valid_inputs)
