"""MFGAN-style adversarial sequential recommender.

Ren, Liu, Li, Zhao, Wang, Ding & Wen, "Sequential Recommendation with Self-Attentive
Multi-Adversarial Network", SIGIR 2020, https://arxiv.org/abs/2005.10602.

Players:
- Generator G: a SASRec-style causal Transformer (this suite's `SASRec` with the "ce" loss, used as
  a module); G(v | i_1..i_t) = softmax_v <F_t, E_v> over all items.
- Discriminators D_m, one per factor m: D_m(i_1..i_t, v) = P(v really followed i_1..i_t), judged in
  factor m's vocabulary. These datasets carry no side information, so two factors are kept:
  * "item": the item ids themselves;
  * "popularity": each item's popularity bucket (equal-size buckets of items ranked by training
    count; `popularity_buckets` = 0 drops it). It judges whether the generator's choices have the
    popularity profile of real next items, a factor derived from training data only.
  MFGAN's discriminators for side-information factors have no counterpart here.
- Reward of a generated item v after a real prefix: Q = mean_m D_m(prefix, v) (equal weights).

Training (teacher forcing: every position t conditions on the real prefix, so a generated item's
reward is immediate and no Monte-Carlo roll-out is needed):
1. Epochs 1..pretrain_epochs: G maximises the likelihood of the real next item (softmax CE at every
   position); the discriminators train alongside, on G's samples, so they are ready when (2) starts.
2. Later epochs, each batch: D_m minimises BCE(real next item -> 1, K items sampled from G -> 0);
   then G follows the policy gradient (REINFORCE) of E_{v~G}[Q], with a leave-one-out baseline over
   the K samples of the same position (`policy_gradient_loss`), plus `mle_weight` x the MLE loss.

Deviations and choices:
- Late fusion in the discriminators: a causal Transformer reads the real prefix once and an MLP
  judges [h_t, e_v, h_t * e_v] for the candidate v. The paper's discriminators read the sequence
  with the candidate appended; late fusion judges every position of a batch in one pass.
- Factors as above (no side information); rewards averaged with equal weights.
- `mle_weight` keeps an MLE anchor in the adversarial phase; 0 is the paper's pure policy
  gradient. Default 1, chosen on ml-100k validation NDCG@10 (4 pre-training epochs, then
  adversarial ones; one seed, 7-min CPU budgets): pure policy gradient went 0.0244 (epoch 4) ->
  0.0270 (6) -> 0.0247 (7), it stalls (the discriminators stay near chance, so the reward carries
  little signal); the anchored run went 0.0215 (4) -> 0.0333 (6) -> 0.0391 (8) -> 0.0421 (9), the
  pace of maximum likelihood alone (0.0277 -> 0.0307 -> 0.0367 at epochs 4, 6, 8). So with the
  default the adversarial term is at best neutral here. `pretrain_epochs` = 5 so that short CPU
  budgets still reach the adversarial phase.
- Both players use Adam with the run's learning rate; one discriminator step per generator step.
  The K samples of a step serve both players: the discriminators learn from them, and their
  judgement of them (before that update) is the generator's reward. A sample equal to the real
  next item still counts as generated, as in the usual GAN recipe.
- Per-epoch diagnostics (`epoch_diagnostics`): discriminator accuracy (mean of accuracy on real and
  on generated pairs, 0.5 threshold, averaged over discriminators and the epoch's steps), each
  discriminator's accuracy, and the generator's mean reward Q of its samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.sasrec import SASRec, SASRecConfig
from benchmark.layers import TransformerEncoder, attention_mask, position_ids
from benchmark.model import Batch, SeqRecModel
from benchmark.output import softmax_cross_entropy_and_samples


def policy_gradient_loss(log_probs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline. log_probs, rewards: (M, K), K >= 2 actions sampled
    in the same state. Advantage of a sample = its reward - mean reward of the other K - 1 samples
    (the baseline does not depend on the sample, so the estimator stays unbiased). A row's
    advantages sum to zero, so `log_probs` may be shifted by any per-row constant (the logits of a
    softmax policy will do): the loss and its gradient stay the same."""
    K = rewards.shape[1]
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (K - 1)
    return -((rewards - baseline).detach() * log_probs).mean()


def popularity_buckets(counts: np.ndarray, n_buckets: int) -> np.ndarray:
    """counts: (n_items + 1,) training counts (index 0 = padding) -> bucket ids 1..n_buckets per
    item (equal numbers of items, least popular first; ties broken by item id), 0 for padding."""
    n = len(counts) - 1
    order = np.argsort(counts[1:], kind="stable")
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return np.concatenate([[0], 1 + ranks * n_buckets // n])


@dataclass(frozen=True)
class MFGANConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3  # generator dropout (SASRec's default here)
    d_layers: int = 1  # Transformer blocks per discriminator
    d_dropout: float = 0.2
    pretrain_epochs: int = 5  # maximum-likelihood epochs before the adversarial phase
    samples: int = 4  # items sampled from G per position (K of the leave-one-out baseline)
    popularity_buckets: int = 10  # 0 = item-id discriminator only
    mle_weight: float = 1.0  # MLE loss kept in the adversarial phase (0 = the paper's pure policy gradient)
    init_std: float = 0.02

    def __post_init__(self):
        if min(self.hidden, self.layers, self.heads, self.d_layers) <= 0:
            raise ValueError("hidden, layers, heads and d_layers must be positive")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.d_dropout < 1.0):
            raise ValueError("dropouts must be in [0, 1)")
        if self.samples < 2:
            raise ValueError("samples must be >= 2 (the baseline leaves one sample out)")
        if self.pretrain_epochs < 0 or self.popularity_buckets < 0 or self.mle_weight < 0:
            raise ValueError("pretrain_epochs, popularity_buckets and mle_weight must be >= 0")


class Discriminator(nn.Module):
    """Logit of "v really followed the prefix", in one factor's vocabulary (ids 1..vocab-1, 0 = pad)."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, dropout: float, max_len: int, init_std: float):
        super().__init__()
        self.max_len = max_len
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(d, layers, heads, dropout)
        self.head = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        for emb in (self.emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=init_std)
        self.emb.weight.data[0].zero_()

    def forward(self, seqs: torch.Tensor, real: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """seqs: (B, L) prefixes in this factor's ids; real: (B, L) positions to judge (M of them);
        cands: (M, C) candidates for those positions -> logits (M, C)."""
        keep = seqs > 0
        x = self.emb(seqs) + self.pos_emb(position_ids(seqs.shape[1], self.max_len, seqs.device))
        h = self.encoder(self.drop(x), keep, attention_mask(keep, causal=True))[real]  # (M, d)
        c = self.emb(cands)  # (M, C, d)
        h = h[:, None].expand_as(c)
        return self.head(torch.cat([h, c, h * c], -1)).squeeze(-1)


# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = MFGANConfig keys.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space (all divisible by the 2 heads)
    "layers": ("int", 1, 3),
    "dropout": ("float", 0.1, 0.6),
    "mle_weight": ("choice", [0.0, 0.5, 1.0]),
    "pretrain_epochs": ("int", 0, 10, 5),
}


class MFGAN(SeqRecModel):
    def __init__(self, cfg: MFGANConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        self.cfg = cfg
        gen_cfg = SASRecConfig(loss="ce", hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout, init_std=cfg.init_std)
        self.generator = SASRec(gen_cfg, n_items=n_items, max_len=max_len)
        vocab = {"item": n_items + 1}
        if cfg.popularity_buckets:
            vocab["popularity"] = cfg.popularity_buckets + 1
        self.discriminators = nn.ModuleDict(
            {name: Discriminator(v, cfg.hidden, cfg.d_layers, cfg.heads, cfg.d_dropout, max_len, cfg.init_std) for name, v in vocab.items()}
        )
        self.register_buffer("bucket", torch.zeros(n_items + 1, dtype=torch.long))  # item -> popularity bucket
        self.adversarial = False
        self._stats: dict[str, float] = {}

    def fit_statistics(self, train_sequences: list) -> None:
        counts = np.bincount(np.concatenate(train_sequences), minlength=self.n_items + 1)
        if self.cfg.popularity_buckets:
            self.bucket.copy_(torch.from_numpy(popularity_buckets(counts, self.cfg.popularity_buckets)))

    def configure_optimizers(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.generator.parameters(), lr=lr, weight_decay=weight_decay, betas=betas),
            torch.optim.Adam(self.discriminators.parameters(), lr=lr, weight_decay=weight_decay, betas=betas),
        ]

    def on_epoch_start(self, epoch: int) -> None:
        self.adversarial = epoch > self.cfg.pretrain_epochs
        self._stats = {}

    def judge(self, seqs: torch.Tensor, real: torch.Tensor, cands: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every discriminator's logits (M, C) for candidates `cands` (M, C) after the real prefixes."""
        return {
            name: d(seqs if name == "item" else self.bucket[seqs], real, cands if name == "item" else self.bucket[cands])
            for name, d in self.discriminators.items()
        }

    def loss(self, batch: Batch):
        """The generator's maximum-likelihood loss (pre-training, and the MLE anchor)."""
        return self.generator.loss(batch)

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        g_opt, d_opt = optimizers
        real = batch.targets > 0
        pos = batch.targets[real]  # (M,)
        h, table = self.generator.hidden_states(batch.inputs)[real], self.generator.item_emb.weight  # (M, d), (n_items + 1, d)
        # The generator's maximum-likelihood loss and K items drawn from it per position, in one
        # chunked pass over the catalogue: no (M, n_items) logits or log-probabilities are kept.
        mle, _, fake = softmax_cross_entropy_and_samples(h, table, pos, self.cfg.samples)  # fake: (M, K) item ids

        # Discriminators: real next items -> 1, generated ones -> 0.
        judged = self.judge(batch.inputs, real, torch.cat([pos[:, None], fake], 1))  # name -> (M, 1 + K)
        d_loss = sum(
            F.binary_cross_entropy_with_logits(z[:, 0], torch.ones_like(z[:, 0])) + F.binary_cross_entropy_with_logits(z[:, 1:], torch.zeros_like(z[:, 1:]))
            for z in judged.values()
        )
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        # Generator: policy gradient on the discriminators' reward, or maximum likelihood.
        rewards = torch.stack([torch.sigmoid(z[:, 1:].detach()) for z in judged.values()]).mean(0)  # (M, K)
        if self.adversarial:
            # The samples' logits stand for their log-probabilities: the two differ by the row's
            # log-normaliser, which the leave-one-out advantages (zero-sum per row) cancel.
            fake_logits = (h[:, None] * table[fake]).sum(-1)  # (M, K)
            g_loss = policy_gradient_loss(fake_logits, rewards) + self.cfg.mle_weight * mle
        else:
            g_loss = mle
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()

        stats = {"gen_reward": float(rewards.mean())}
        for name, z in judged.items():
            acc = 0.5 * float((z[:, 0] > 0).float().mean() + (z[:, 1:] < 0).float().mean())
            stats[f"disc_accuracy_{name}"] = acc
        stats["disc_accuracy"] = float(np.mean([stats[f"disc_accuracy_{name}"] for name in judged]))
        for key, value in stats.items():
            self._stats[key] = self._stats.get(key, 0.0) + value
        self._stats["steps"] = self._stats.get("steps", 0.0) + 1
        return {"loss": float(g_loss.detach()), "mle": float(mle.detach()), "d_loss": float(d_loss.detach())}

    def epoch_diagnostics(self, valid_inputs: torch.Tensor) -> dict[str, float]:
        steps = self._stats.get("steps", 0.0)
        if not steps:
            return {}
        return {"adversarial": float(self.adversarial), **{key: value / steps for key, value in self._stats.items() if key != "steps"}}

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generator.score(seqs)
