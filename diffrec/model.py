"""DiffRec: Sequential Recommendation with Diffusion Models.

Hanwen Du, Huanhuan Yuan, Zhen Huang, Pengpeng Zhao & Xiaofang Zhou, 2023,
https://arxiv.org/abs/2304.04541 (no public code). Not RecBole's DiffRec ("Diffusion Recommender
Model", Wang et al., SIGIR 2023) and not DiffuRec (Li, Sun & Li, TOIS 2023). This file is the
improved form (registry name `diffrec`); the paper's literal form is the same model with other
config values, `diffrec-paper` (`diffrec.paper`).

Model (Sec. 4 of the paper):
- Embedding transition: the target v gets h^0 ~ N(E(v), beta_0 I) (`transition="all"`: every
  history token too, as the paper writes it; inference uses the mean E(v)).
- Forward process on the target only: h^n = sqrt(abar_n) h^0 + sqrt(1 - abar_n) eps; the history
  stays clean (`noise="sequence"` noises every history vector with the same step instead).
- DSR denoiser (`diffrec.denoiser`): a Transformer over [h_i + y_i + z_n for the history, then the
  noisy target slot], whose output at the slot is f(h^n, n), an estimate of h^0.
- Rounding: p(v | h^0) = softmax(W h^0 + b) over all items; the protocol ranks its log.
- Objective: mse_weight * ||f(h^n, n) - h^0||^2 (x0-parameterised simplified bound)
  + ce_weight * CE(rounding(f(h^n, n)), v) (the rounding applied to the denoiser's estimate, the
  term that ranks at inference; not Diffusion-LM's rounding term)
  + h0_ce_weight * CE(rounding(h^0), v) (Diffusion-LM's rounding term -log p(w | x_0) of its
  end-to-end objective, Li et al. 2022), one diffusion step per sequence, drawn uniformly or by
  the loss-aware importance sampler (`diffrec.step_sampler`).
- Inference (`diffrec.samplers`): [last items, slot]; the slot starts from N(0, I) at step N and is
  denoised by the `ancestral`, `strided` (DDIM, deterministic) or `average` (m one-call samples,
  averaged probabilities) sampler. With the defaults the history is encoded once per user and each
  step runs only the slot (about 20x cheaper than a full pass on beauty).

Deviations and choices:
- Every training target is used every epoch (as SASRec does), not one target per user: one encoder
  call holds the history stream and one noisy slot per target ("two streams", see
  `diffrec.denoiser`); each slot attends to its own history prefix and itself only, so its output
  equals the inference computation on that prefix (tested). One diffusion step n is drawn per
  sequence and shared by all its targets (so that `step_tokens="all"` can add z_n at every
  position as the paper says); the importance sampler therefore works per sequence (its loss = the
  mean over the sequence's targets).
- Window: the slot takes the last of the `max_len` positions, so inference keeps the last
  max_len - 1 history items ([v_2, ..., v_T, slot] when the history fills the window); training
  drops the oldest input column of a full window for the same reason (at most one of a long user's
  targets per epoch). Position ids follow benchmark.layers.position_ids like SASRec's.
- Scales: item vectors are E(v) * sqrt(d) (as SASRec's inputs; the paper leaves it open:
  `item_scale="one"` is E(v), "unit" E(v) / init_std, unit variance per coordinate at init) both
  as history tokens and as h^0, embeddings initialised with std `init_std`; the forward noise has
  unit variance per coordinate.
  z_n goes through a DDPM-style MLP (d -> 4d -> d, SiLU; `step_embedding="mlp"`, the paper's raw
  sinusoid is `"raw"`), because the raw sinusoid (norm sqrt(d/2)) drowned the history in a
  prototype.
- The noisy target enters its slot through a learned Linear(d, d) (`slot_input="linear"`; the
  paper adds h^n as is, `"raw"`). Raw, the unit-variance noise (norm sqrt(d), several times the
  item vectors) dominates the slot's residual stream, so its attention queries are random and the
  noise reaches the output. Beauty, seed 0, validation NDCG@10 at epochs 2/4/6: raw 0.0087 /
  0.0087 / 0.0082 (flat, near popularity's 0.0075), linear 0.0086 / 0.0108 / 0.0127.
- Rounding weight W is the item table E (`tie_rounding`, as SASRec's output layer); the output
  bias b is off by default (`rounding_bias`): with a free bias and a heavy MSE weight a prototype
  collapsed to ranking by the bias alone.
- MSE is the mean over the d coordinates (not the sum), so `mse_weight` does not depend on d; the
  MSE target h^0 is the sampled embedding-transition vector and its gradient reaches E (end to end,
  as in Diffusion-LM).
- Losses are averaged over real targets (as SASRec); importance weights 1/(N p_n) multiply each
  target's loss.
- Schedule: `linear-continuous` by default (the quick suite pins `linear`, what its records used).
  It is DDPM's 1000-step linear beta range read as a continuous abar(t) and sampled at t = n / N, so abar falls smoothly to the same 4.3e-5 at step N for every N. The
  older `linear` (betas rescaled by 1000 / N and clamped at 0.999, kept under its name for the
  records that used it) let the clamp do the work at small N: at N = 10 steps 6-10 all have
  abar <= 1.4e-5, so half the uniform training draws were pure noise (about a third at N >= 50), and
  an N sweep changed that share along with N (`linear-continuous`: abar_n < 0.01 from t = n / N =
  0.68 on at every N, as DDPM's own chain). Cosine and sqrt schedules have no range parameters
  (see `diffrec.schedule`).
- `noise="sequence"` at inference noises the history to the current step n with fresh noise at
  every denoiser call (the same joint noise level the model was trained on). It therefore needs a
  sampler that ends near n = 1: `average` (and `strided` with one step) denoise at n = N only, where
  the history is noise as well (abar_N <= 0.01), so the config rejects them. (Measured before the
  check: beauty seed 1, tuned otherwise, selected and scored with `average`: validation NDCG@10
  0.009, test 0.0061, popularity's level.)
- Three changes to the DSR's inputs, each a config field whose other value is the paper's, chosen
  on validation because the paper's form learned far more slowly than SASRec-CE. Measured on
  ml-100k and beauty validation NDCG@10, seed 0 (SASRec-CE: ml-100k 0.0169/0.0233/0.0363/0.0410
  at epochs 2/4/6/8; beauty 0.0192/0.0356/0.0414 at epochs 2/4/6):
  - `step_tokens="slot"`: z_n is added to the slot only, not to every history token. With z_n on
    every token even a model reduced to SASRec (no diffusion, N = 1, loss read from the history
    stream) stayed at 0.019-0.024 on ml-100k for 8 epochs; without it, the same model followed
    SASRec (0.0218/0.0297/0.0382). It also leaves the history stream independent of n, so
    inference encodes the history once and every sampler step runs the slot tokens alone
    (`DSR.encode_history` / `DSR.denoise_slots`, tested equal to the full pass).
  - `slot_context="last"`: the slot also carries the vector of the history item it follows. A SASRec
    position holds its own item in its residual stream; the slot had to find the latest item by
    attention over learned positions. Without diffusion (N = 1) on ml-100k: slot alone 0.0114/
    0.0137/0.0169/0.0193, with the last item 0.0209/0.0251/0.0286/0.0337.
  - `slot_scale="signal"`: the slot gets sqrt(abar_n) h^n rather than h^n, so a slot that carries
    no signal (large n, and always at the start of inference) also carries little noise into the
    prediction that is ranked. Beauty, N = 50: h^n 0.0129/0.0233/0.0335, scaled 0.0161/0.0307/0.0378
    (the same model without diffusion: 0.0149/0.0291/0.0398).
- `mse_weight` 0.1 (the CE weight 1): on ml-100k (with the last item in the slot, epoch 8) MSE
  weight 1 gave 0.0263, 0.1 gave 0.0318, 0 gave 0.0316; the MSE term stays, as the paper has it.
- `average` averages probabilities (the paper: "average the rounded results"); `ancestral` and
  `strided` round their final hhat^0 once. Its m samples are m slots of one DSR call, so the
  history is encoded once per user, not m times.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
from torch import nn

from benchmark.layers import init_weights, position_ids
from benchmark.model import Batch, SeqRecModel
from benchmark.output import item_scores, mixture_log_probs, softmax_cross_entropy
from diffrec.denoiser import DSR, SlotContext, SlotInput, StepEmbedding, StepTokens
from diffrec.samplers import SamplerKind, ancestral, average, strided
from diffrec.schedule import Schedule, ScheduleKind, at_step, make_betas, make_schedule, q_sample
from diffrec.step_sampler import StepSampling, make_step_sampler


ItemScale = Literal["sqrt_d", "one", "unit"]
Transition = Literal["target", "all"]
MAX_FINAL_ABAR = 0.01  # abar_N above this is not "pure noise" (linear betas with N = 1 give 0.9)


@dataclass(frozen=True)
class DiffRecConfig:
    # Fields added after records were made, with the value that behaves as before: a cell leaves
    # them out of its key while they hold it, so those records keep their keys (benchmark.suite).
    ADDED_FIELDS: ClassVar[dict] = {"item_scale": "sqrt_d", "transition": "target"}

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3
    init_std: float = 0.02
    item_scale: ItemScale = "sqrt_d"  # item vectors are E(v) * sqrt(d) (as SASRec's inputs), E(v) ("one") or E(v) / init_std ("unit")
    transition: Transition = "target"  # h ~ N(E(v), beta0 I) for the target only, or for every token ("all", the paper)
    step_embedding: StepEmbedding = "mlp"
    step_tokens: StepTokens = "slot"  # the paper: "all"
    slot_context: SlotContext = "last"  # the paper: "none"
    slot_scale: Literal["none", "signal"] = "signal"  # the slot gets sqrt(abar_n) h^n; the paper: "none" (h^n)
    slot_input: SlotInput = "linear"
    noise: Literal["target", "sequence"] = "target"
    steps: int = 50  # N
    # "linear-continuous": the same abar(t) curve for every N, falling smoothly to ~0 at step N (see
    # `diffrec.schedule`). "linear" (DDPM's betas rescaled by 1000 / N, clamped at 0.999, so at
    # small N the clamp ends the chain early) is what the quick suite's records used and still pins.
    schedule: ScheduleKind = "linear-continuous"
    beta_start: float = 1e-4  # linear schedules only, for a 1000-step chain
    beta_end: float = 0.02
    beta0: float = 1e-4  # variance of the embedding transition h^0 ~ N(E(v), beta0 I)
    mse_weight: float = 0.1
    ce_weight: float = 1.0
    h0_ce_weight: float = 0.0
    tie_rounding: bool = True  # W = item embedding table
    rounding_bias: bool = False
    step_sampling: StepSampling = "uniform"
    sampler: SamplerKind = "average"
    sampler_steps: int = 10  # k of the strided sampler
    samples: int = 4  # m of the average sampler

    def __post_init__(self):
        if self.hidden <= 0 or self.layers <= 0 or self.heads <= 0 or self.hidden % 2:
            raise ValueError("hidden, layers and heads must be positive and hidden even")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.steps < 1 or self.sampler_steps < 1 or self.samples < 1:
            raise ValueError("steps, sampler_steps and samples must be >= 1")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if min(self.beta0, self.mse_weight, self.ce_weight, self.h0_ce_weight) < 0:
            raise ValueError("beta0 and the loss weights must be >= 0")
        if self.mse_weight + self.ce_weight + self.h0_ce_weight == 0:
            raise ValueError("at least one loss weight must be positive")
        final = float(make_schedule(make_betas(self.schedule, self.steps, self.beta_start, self.beta_end)).abar[-1])
        if final > MAX_FINAL_ABAR:  # the samplers start from N(0, I) = the state at step N only when abar_N ~ 0
            raise ValueError(f"the {self.schedule} schedule with steps={self.steps} ends at abar_N = {final:.3g}, not pure noise (needs <= {MAX_FINAL_ABAR}): use more steps or another schedule")
        if self.noise == "sequence" and (self.sampler == "average" or (self.sampler == "strided" and self.sampler_steps == 1)):
            # both denoise once, at step N, where a sequence-noised history is noise too: no signal left
            raise ValueError(f"noise='sequence' needs a sampler whose last step sees the history nearly clean: sampler={self.sampler!r}{' with sampler_steps=1' if self.sampler == 'strided' else ''} denoises at step N only (use 'ancestral', or 'strided' with sampler_steps >= 2)")


# The keys that only choose how a trained model scores (the reverse process); training never reads
# them (tested), so the suite evaluates ablations over them on one trained model.
INFERENCE_KEYS = ("sampler", "sampler_steps", "samples")

# Tuning space of `benchmark.tune`: "train.KEY" = TrainConfig keys, plain keys = DiffRecConfig keys.
# SASRec's five dimensions plus the MSE weight; N, the sampler and the noising are ablations, not tuned.
SEARCH_SPACE = {
    "train.lr": ("log", 1e-4, 1e-2),
    "train.weight_decay": ("choice", [0.0, 1e-6, 1e-4]),
    "hidden": ("choice", [64, 128, 256]),  # the same widths in every space (all divisible by the 2 heads)
    "layers": ("int", 1, 3),
    "dropout": ("float", 0.1, 0.6),
    "mse_weight": ("choice", [0.0, 0.03, 0.1, 0.3, 1.0]),
}


class DiffRec(SeqRecModel):
    def __init__(self, cfg: DiffRecConfig, *, n_items: int, max_len: int):
        super().__init__(n_items, max_len)
        if max_len < 2:
            raise ValueError("DiffRec needs max_len >= 2 (at least one history item and the slot)")
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.dsr = DSR(d, cfg.layers, cfg.heads, cfg.dropout, max_len, cfg.step_embedding, cfg.slot_input, cfg.step_tokens, cfg.slot_context)
        self.out = None if cfg.tie_rounding else nn.Linear(d, n_items + 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(n_items + 1)) if cfg.rounding_bias else None
        self.schedule = make_schedule(make_betas(cfg.schedule, cfg.steps, cfg.beta_start, cfg.beta_end))
        self.step_sampler = make_step_sampler(cfg.step_sampling, cfg.steps)
        self.apply(partial(init_weights, std=cfg.init_std))

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """(...,) item ids -> (..., d) the vectors that are diffused and attended to: E(v) times
        sqrt(d), 1 or 1 / init_std (`item_scale`)."""
        return self.item_emb(items) * self.item_multiplier

    @property
    def item_multiplier(self) -> float:
        """What E(v) is multiplied by. With "unit" the item vectors have unit variance per
        coordinate at initialisation: the forward noise's scale (and Diffusion-LM's embeddings',
        PyTorch's N(0, 1) default)."""
        return {"sqrt_d": self.cfg.hidden**0.5, "one": 1.0, "unit": 1.0 / self.cfg.init_std}[self.cfg.item_scale]

    def rounding_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rounding transition's W (n_items + 1, d), padding row 0 never scored, and b (n_items + 1,) or None."""
        return (self.item_emb.weight if self.out is None else self.out.weight), self.bias

    def loss(self, batch: Batch):
        n, weight = self.step_sampler.sample(batch.inputs.shape[0], batch.inputs.device)  # (B,), (B,)
        terms = self.target_terms(batch, n, weight)
        seq_of = terms["seq"]
        per_seq = torch.zeros_like(n, dtype=terms["per_target"].dtype).index_add_(0, seq_of, terms["per_target"])
        self.step_sampler.update(n, per_seq / torch.bincount(seq_of, minlength=len(n)).clamp(min=1))
        return terms["loss"], {"mse": float(terms["mse"].detach().mean()), "ce": float(terms["ce"].mean())}

    def target_terms(self, batch: Batch, n: torch.Tensor, weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of every real target of `batch` with its sequence at diffusion step n (B,):
        "mse", "ce", "h0_ce" (when weighted) each (M,) over the M real targets (the cross-entropies
        detached), "seq" (M,), the sequence of each target, "per_target" (M,), the weighted sum of
        the terms (detached), and "loss", the mean over targets of weight[seq] x that sum, with
        gradients (weight: (B,) importance weights, default 1). `loss` draws n; `diffrec.profile`
        fixes it."""
        cfg = self.cfg
        inputs, targets = batch.inputs[:, -(self.max_len - 1) :], batch.targets[:, -(self.max_len - 1) :]  # (B, L)
        B, L = inputs.shape
        keep, real = inputs > 0, targets > 0
        sched = self.schedule.to(inputs.device)
        history = self.embed(inputs)  # (B, L, d)
        if cfg.transition == "all":  # the paper's embedding transition on every token; inference uses its mean E(v)
            history = history + cfg.beta0**0.5 * torch.randn_like(history)
        h0 = self.embed(targets)
        h0 = h0 + cfg.beta0**0.5 * torch.randn_like(h0)  # embedding transition
        hn = q_sample(sched, h0, n, torch.randn_like(h0))  # (B, L, d): the target of every prefix, at step n
        if cfg.noise == "sequence":
            history = q_sample(sched, history, n, torch.randn_like(history))
        cols = torch.arange(L, device=inputs.device)
        f = self.dsr(history, keep, self.slot_input(hn, n, sched), cols, n, position_ids(L + 1, self.max_len, inputs.device))  # (B, L, d)
        seq = torch.arange(B, device=inputs.device)[:, None].expand(B, L)[real]  # (M,)
        row = (torch.ones(len(seq), device=inputs.device) if weight is None else weight[seq].detach()) / max(len(seq), 1)  # d loss / d term
        W, b = self.rounding_layer()
        mse = (f - h0).pow(2).mean(-1)[real]
        loss = (cfg.mse_weight * row * mse).sum()
        if cfg.ce_weight:
            ce_loss, ce = softmax_cross_entropy(f[real], W, targets[real], bias=b, row_weights=cfg.ce_weight * row)
            loss = loss + ce_loss
        else:  # unweighted (the paper's objective): its value for the curves and diffrec.profile, and no backward pass of zeros
            with torch.no_grad():
                _, ce = softmax_cross_entropy(f[real], W, targets[real], bias=b)
        terms = {"mse": mse, "ce": ce, "seq": seq}
        per_target = cfg.mse_weight * mse.detach() + cfg.ce_weight * ce
        if cfg.h0_ce_weight:
            h0_loss, terms["h0_ce"] = softmax_cross_entropy(h0[real], W, targets[real], bias=b, row_weights=cfg.h0_ce_weight * row)
            per_target, loss = per_target + cfg.h0_ce_weight * terms["h0_ce"], loss + h0_loss
        return {**terms, "per_target": per_target, "loss": loss}

    def score(self, seqs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.cfg
        seqs = seqs[:, -(self.max_len - 1) :]  # the slot takes the last position
        B, w = seqs.shape
        keep = seqs > 0
        sched = self.schedule.to(seqs.device)
        history = self.embed(seqs)  # (B, w, d)
        last = torch.tensor([w - 1], device=seqs.device)
        positions = position_ids(w + 1, self.max_len, seqs.device)

        cache = self.dsr.encode_history(history, keep, positions) if self.history_is_static else None

        def denoise(h: torch.Tensor, n: int) -> torch.Tensor:  # (B, d) or (B, K, d) h^n -> hhat^0 of the same shape
            steps = torch.full((1,), n, dtype=torch.long, device=seqs.device)  # one step for the batch: z_n computed once, broadcast
            slots = self.slot_input(h if h.dim() == 3 else h[:, None], steps, sched)  # (B, K, d): K slots after the last column
            cols = last.expand(slots.shape[1])
            if cache is not None:
                out = self.dsr.denoise_slots(cache, history, keep, slots, cols, steps, positions)
            else:
                hist = history
                if cfg.noise == "sequence":
                    hist = q_sample(sched, history, steps, torch.randn(history.shape, generator=generator, device=seqs.device))
                out = self.dsr(hist, keep, slots, cols, steps, positions)
            return out if h.dim() == 3 else out[:, 0]

        def rounding(h0: torch.Tensor) -> torch.Tensor:  # (R, d) -> (R, n_items + 1) log p(v | h0)
            return item_scores(h0, *self.rounding_layer(), log_probs=True)

        shape = (B, cfg.hidden)
        if cfg.sampler == "ancestral":
            return ancestral(denoise, rounding, sched, shape, generator, device=seqs.device)
        if cfg.sampler == "strided":
            return strided(denoise, rounding, sched, shape, generator, cfg.sampler_steps, device=seqs.device)
        return average(denoise, rounding, sched, shape, generator, cfg.samples, device=seqs.device, mixture=lambda h0: mixture_log_probs(h0, *self.rounding_layer()))

    def slot_input(self, hn: torch.Tensor, n: torch.Tensor, sched: Schedule) -> torch.Tensor:
        """What enters the slot: h^n (B, K, d) as is, or scaled by sqrt(abar_n) for the steps n, (B,)
        or (1,); `sched` is the schedule already on h^n's device (no copy per sampler step)."""
        if self.cfg.slot_scale == "none":
            return hn
        return at_step(sched.sqrt_abar, n, hn) * hn

    @property
    def history_is_static(self) -> bool:
        """Whether the history stream is the same at every step (target-only noise, z_n in the slot
        alone): then inference encodes it once per user and each step runs the slot tokens only."""
        return self.cfg.noise == "target" and self.cfg.step_tokens == "slot"

    def training_state(self) -> dict:
        return {"step_sampler": self.step_sampler.state_dict()}

    def load_training_state(self, state: dict) -> None:
        self.step_sampler.load_state_dict(state["step_sampler"])

    @torch.no_grad()
    def epoch_diagnostics(self, valid_inputs: torch.Tensor) -> dict[str, float]:
        """Relative scales of the inputs (a step embedding that dwarfs the items drowns the history)."""
        items = self.embed(torch.arange(1, self.n_items + 1, device=valid_inputs.device)).norm(dim=-1).mean()
        n = torch.arange(1, self.cfg.steps + 1, device=valid_inputs.device)
        steps = self.dsr.step_vector(n).norm(dim=-1).mean()
        return {"item_norm": float(items), "step_norm": float(steps)}
