"""DSR, the Denoise Sequential Recommender of DiffRec (Du et al. 2023, Sec. 4): a Transformer over
[history, noisy target slot] with position and diffusion-step embeddings added to every token.

One call denoises several targets of the same sequence at once ("two streams"):
- clean stream, L tokens: history item i, h_i + y_{pos[i]} + z_n, causal among themselves;
- noisy stream, K tokens: noisy token k holds the noised target that follows history column
  cols[k], h^n + y_{pos[cols[k] + 1]} + z_n, and attends to the clean tokens 0..cols[k] and to
  itself only.
No clean token attends to a noisy one, so the output of noisy token k is exactly the output of the
same network on [history prefix 0..cols[k], that one noisy slot] alone (tests check this). Training
passes every column (all prefixes, K = L); inference passes only the last one (K = 1).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from benchmark.layers import TransformerEncoder, attention_mask


def step_embedding(n: torch.Tensor, d: int) -> torch.Tensor:
    """Sinusoidal step embedding, n: (B,) -> (B, d) with z(2j) = sin(n / 10000^(2j/d)), z(2j+1) = cos(...)."""
    if d % 2:
        raise ValueError(f"step embedding size {d} must be even")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32, device=n.device) / d)  # (d/2,) = 10000^(-2j/d)
    angles = n.to(torch.float32)[:, None] * freqs  # (B, d/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleaved: (B, d)


def two_stream_mask(keep: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """keep: (B, L) real history tokens; cols: (K,) history column each noisy token follows.
    -> (B, 1, L + K, L + K) boolean mask, True = may attend (clean tokens first, then noisy ones)."""
    B, L = keep.shape
    K = len(cols)
    mask = torch.zeros(B, 1, L + K, L + K, dtype=torch.bool, device=keep.device)
    mask[:, :, :L, :L] = attention_mask(keep, causal=True)
    mask[:, :, L:, :L] = slot_mask(keep, cols)
    mask[:, :, L:, L:] = torch.eye(K, dtype=torch.bool, device=keep.device)
    return mask


def slot_mask(keep: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """-> (B, 1, K, L): noisy token k may attend to the real history tokens 0..cols[k]."""
    prefix = torch.arange(keep.shape[1], device=keep.device)[None, :] <= cols[:, None]  # (K, L)
    return prefix[None, None] & keep[:, None, None, :]


StepEmbedding = Literal["mlp", "raw", "none"]
StepTokens = Literal["all", "slot"]
SlotInput = Literal["linear", "raw"]
SlotContext = Literal["none", "last"]


class DSR(nn.Module):
    """Returns the denoised estimate f(h^n, n) of h^0 for each noisy token.

    step: how z_n enters: "raw" the sinusoid itself (the paper); "mlp" the sinusoid through
    Linear(d, 4d), SiLU, Linear(4d, d) as DDPM's time embedding, which learns its scale (the raw
    sinusoid has norm sqrt(d/2), tens of times the item vectors at init); "none" no step embedding.
    step_tokens: where z_n is added: "all" tokens (the paper) or the noisy "slot" only, which keeps
    the history stream exactly SASRec's encoder (and independent of n).
    slot_context: "last" adds to the slot the vector of the history item it follows (the paper:
    "none"): a residual path from the latest item to the prediction, which a SASRec position has
    by construction and the slot must otherwise learn through attention by position.
    slot: how h^n enters its slot: "raw" as is (the paper); "linear" through a learned Linear(d, d).
    Raw, the unit-variance noise (norm sqrt(d)) dominates the slot's residual stream, so its
    attention queries are random and the noise reaches the output; the projection lets the model
    set how much of h^n enters."""

    def __init__(self, d: int, layers: int, heads: int, dropout: float, max_len: int, step: StepEmbedding = "mlp", slot: SlotInput = "linear", step_tokens: StepTokens = "all", slot_context: SlotContext = "none"):
        super().__init__()
        self.d, self.step, self.step_tokens, self.slot_context = d, step, step_tokens, slot_context
        self.slot_in = nn.Linear(d, d) if slot == "linear" else nn.Identity()
        self.pos_emb = nn.Embedding(max_len, d)
        self.step_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d)) if step == "mlp" else None
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(d, layers, heads, dropout)

    def forward(self, history: torch.Tensor, keep: torch.Tensor, noisy: torch.Tensor, cols: torch.Tensor, n: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # history: (B, L, d) item vectors; keep: (B, L) bool; noisy: (B, K, d) h^n; cols: (K,) long;
        # n: (B,) step per sequence, or (1,) for the whole batch; positions: (L + 1,) position ids of the L columns and the slot after them
        L = history.shape[1]
        z = self.step_vector(n)[:, None]  # (B or 1, 1, d), the same z_n at every position it is added to
        clean = history + self.pos_emb(positions[:L])
        if self.step_tokens == "all":
            clean = clean + z
        x = torch.cat([clean, self.slot_tokens(history, noisy, cols, z, positions)], dim=1)  # (B, L + K, d)
        keep_all = torch.cat([keep, keep[:, cols]], dim=1)  # a noisy token is real when its history is
        return self.encoder(self.drop(x), keep_all, two_stream_mask(keep, cols), tail=len(cols))  # (B, K, d): the noisy tokens come last

    def slot_tokens(self, history: torch.Tensor, noisy: torch.Tensor, cols: torch.Tensor, z: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The noisy stream's input tokens (B, K, d)."""
        slots = self.slot_in(noisy) + self.pos_emb(positions[cols + 1]) + z
        return slots + history[:, cols] if self.slot_context == "last" else slots

    # Inference with the history encoded once. When z_n is added to the slot only, no clean token
    # depends on n or on the slot, so every sampler step needs the slot's K tokens alone.
    def encode_history(self, history: torch.Tensor, keep: torch.Tensor, positions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """-> per block, keys and values of the clean stream, for `denoise_slots`."""
        if self.step_tokens != "slot":
            raise ValueError("the history can be encoded once only when z_n is added to the slot alone (step_tokens='slot')")
        clean = history + self.pos_emb(positions[: history.shape[1]])
        return self.encoder.context(clean, keep, attention_mask(keep, causal=True))

    def denoise_slots(self, cache: list, history: torch.Tensor, keep: torch.Tensor, noisy: torch.Tensor, cols: torch.Tensor, n: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`forward` with the clean stream taken from `encode_history`: the same (B, K, d) outputs."""
        slots = self.slot_tokens(history, noisy, cols, self.step_vector(n)[:, None], positions)
        return self.encoder.forward_queries(slots, keep[:, cols], cache, slot_mask(keep, cols))

    def step_vector(self, n: torch.Tensor) -> torch.Tensor:
        """(B,) steps -> (B, d) the vector z_n added to the tokens (`step_tokens`)."""
        z = step_embedding(n, self.d)
        if self.step == "none":
            return torch.zeros_like(z)
        return z if self.step_mlp is None else self.step_mlp(z)
