"""The Transformer pieces shared by the sequence models (SASRec, DiffRec's denoiser, ...).

Sequences are left-padded with item id 0, so the most recent item sits in the last column. Padding
must stay inert: a padded query row whose every key is masked would produce NaN (softmax over
nothing), and NaN then leaks into real rows through the values. `attention_mask` therefore always
lets a position attend to itself, and real positions never attend to padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(module: nn.Module, std: float) -> None:
    """SASRec-style initialisation, for `model.apply(partial(init_weights, std=...))`: normal(0, std)
    weights of linear and embedding layers, zero biases, a zero padding row."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        module.weight.data[module.padding_idx].zero_()


def attention_mask(keep: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Boolean mask, True = may attend. keep: (B, L) True at real positions -> (B, 1, L, L)."""
    L = keep.shape[1]
    allowed = keep[:, None, None, :].expand(-1, 1, L, L)  # keys must be real
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=keep.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=keep.device)  # every row attends to itself


def position_ids(length: int, max_len: int, device=None) -> torch.Tensor:
    """Positions of a left-padded window cut to its last `length` columns: the last item always
    has position max_len - 1, exactly as in the full `max_len` window."""
    if length > max_len:
        raise ValueError(f"sequence window {length} exceeds max_len {max_len}")
    return torch.arange(max_len - length, max_len, device=device)


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden size {d} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, d) -> queries, keys, values, each (B, h, L, d/h)."""
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv_out: list | None = None, tail: int = 0, context: torch.Tensor | None = None) -> torch.Tensor:
        """kv_out: if given, this call's keys and values are appended to it (contiguous, for reuse).
        tail > 0: the outputs of the last `tail` positions only, (B, tail, d) (queries of those,
        keys and values of all). context (B, L, d): the keys' and values' input, where it is not x
        (the SASRec authors' block reads its queries from a normalised x)."""
        B, L, d = x.shape
        if context is None:
            q, k, v = self.project(x)
        else:  # the same projection, split: queries from x, keys and values from context
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:d], b[:d]).view(B, L, self.heads, d // self.heads).transpose(1, 2)
            k, v = F.linear(context, w[d:], b[d:]).view(B, L, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if kv_out is not None:
            kv_out.append((k.contiguous(), v.contiguous()))  # permuted views would be copied at every reuse
        if tail:
            q, mask = q[:, :, -tail:], mask[:, :, -tail:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], d))

    def attend_queries(self, x: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Query tokens x (B, K, d) that attend to cached context keys and values (B, h, L, d/h)
        where `allowed` (B, 1, K, L) is True, and to themselves, never to each other (inference only)."""
        B, K, d = x.shape
        q, k, v = self.project(x)  # (B, h, K, d/h)
        scale = (d // self.heads) ** -0.5
        ctx = (q @ k_ctx.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))  # (B, h, K, L)
        own = (q * k).sum(-1, keepdim=True) * scale  # (B, h, K, 1)
        w = torch.softmax(torch.cat([ctx, own], dim=-1), dim=-1)
        y = w[..., :-1] @ v_ctx + w[..., -1:] * v  # (B, h, K, d/h)
        return self.out(y.transpose(1, 2).reshape(B, K, d))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, d: int, heads: int, dropout: float, ffn_mult: int = 4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv_out: list | None = None, tail: int = 0) -> torch.Tensor:
        """tail > 0: the outputs of the last `tail` positions only (see `SelfAttention.forward`)."""
        y = self.drop(self.attn(self.ln1(x), mask, kv_out, tail))
        x = (x[:, -tail:] if tail else x) + y
        return x + self.drop(self.ffn(self.ln2(x)))

    def forward_queries(self, x: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The block for query tokens over cached context keys and values (see `SelfAttention.attend_queries`)."""
        x = x + self.attn.attend_queries(self.ln1(x), k_ctx, v_ctx, allowed)
        return x + self.ffn(self.ln2(x))


class SASRecBlock(nn.Module):
    """The SASRec authors' block (Kang & McAuley's code; RecTools' SASRecTransformerLayer): LayerNorm
    on the attention query only and the residual from that normalised query, x = LN(x) + Attn(LN(x),
    keys and values from x); then x = LN'(x) + Dropout(FFN(LN'(x))), a ReLU feed-forward of width d
    (dropout after the ReLU too). `forward` only (no key/value cache: DiffRec uses TransformerBlock)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln_q, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, tail: int = 0) -> torch.Tensor:
        q = self.ln_q(x)
        x = (q[:, -tail:] if tail else q) + self.attn(q, mask, tail=tail, context=x)
        f = self.ln_ff(x)
        return f + self.drop(self.ffn(f))


BLOCKS = {"pre_ln": TransformerBlock, "sasrec": SASRecBlock}


class TransformerEncoder(nn.Module):
    """A stack of blocks (`BLOCKS[block]`) and a final LayerNorm; padded positions are zeroed before
    and after every block. The key/value cache (`context`, `forward_queries`) needs pre-LN blocks."""

    def __init__(self, d: int, layers: int, heads: int, dropout: float, block: str = "pre_ln"):
        super().__init__()
        self.blocks = nn.ModuleList(BLOCKS[block](d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor, tail: int = 0) -> torch.Tensor:
        # x: (B, L, d); keep: (B, L) bool; mask: (B, 1, L, L) from attention_mask -> (B, L, d), or
        # with tail > 0 the outputs of the last `tail` positions only, (B, tail, d): the other
        # positions still give the last block its keys and values but skip the rest of it.
        keep = keep[..., None].to(x.dtype)
        x = x * keep
        for block in self.blocks[:-1]:
            x = block(x, mask) * keep
        x = self.blocks[-1](x, mask, tail=tail) * (keep[:, -tail:] if tail else keep)
        return self.ln(x)

    def forward_last(self, x: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward(x, keep, mask)[:, -1]`, (B, d): scoring ranks after the last position alone."""
        return self.forward(x, keep, mask, tail=1)[:, 0]

    @torch.inference_mode()
    def context(self, x: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Runs context tokens that never attend to later queries, once, and returns every block's
        keys and values of them, (B, h, L, d/h) each, for `forward_queries` (inference only)."""
        keep = keep[..., None].to(x.dtype)
        x = x * keep
        cache = []
        for block in self.blocks[:-1]:
            x = block(x, mask, cache) * keep
        _, k, v = self.blocks[-1].attn.project(self.blocks[-1].ln1(x))  # the last block's outputs are never read
        cache.append((k.contiguous(), v.contiguous()))
        return cache

    @torch.inference_mode()
    def forward_queries(self, x: torch.Tensor, keep: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]], allowed: torch.Tensor) -> torch.Tensor:
        """Query tokens (B, K, d), each attending to the cached context where `allowed`
        (B, 1, K, L) and to itself: the same outputs as running them beside the context through
        `forward` with that mask, at the cost of K tokens instead of L + K."""
        keep = keep[..., None].to(x.dtype)
        x = x * keep
        for block, (k, v) in zip(self.blocks, cache):
            x = block.forward_queries(x, k, v, allowed) * keep
        return self.ln(x)
