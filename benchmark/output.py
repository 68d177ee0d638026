"""The full-softmax output layer over all items, shared by every model that has one: the training
cross-entropy (`softmax_cross_entropy`) and the scores the protocol ranks (`item_scores`).

Item 0 is padding and is never a class. The padding row of the weight is left out of the softmax
(targets shift down by one), rather than scored and overwritten with -inf: an in-place write into
the logits makes autograd keep and copy the whole M x V gradient.

The cross-entropy never materialises the M x V logits. Rows go through in chunks of `CHUNK`; each
chunk's logits are turned in place into the gradient of its loss (softmax minus one-hot, times the
row's weight) and the gradients with respect to the hidden states, the weight and the bias are
accumulated right there, so backward only scales them by the incoming scalar. That is the plain
computation's three GEMMs, one CHUNK x V buffer instead of several fresh M x V matrices (70-380 MB
at batch 256 on beauty, page-faulted in at every step), and no log-softmax backward pass.
`softmax_cross_entropy_and_samples` also draws items from each row's softmax on the way (MFGAN's
generator samples from the distribution it is trained on), from the exponentials the loss computes.
"""
from __future__ import annotations

import math

import torch

CHUNK = 128  # rows per chunk: a 12,102 x 128 float buffer (6 MB) on beauty; 128-512 timed alike


def softmax_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None, row_weights: torch.Tensor | None = None, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of softmax(h W^T + b) over items 1..n against `targets`.

    h: (M, d) hidden states; weight: (n + 1, d) with the padding row 0, which is never scored and
    gets a zero gradient; targets: (M,) item ids in 1..n; bias: (n + 1,) or None; row_weights: (M,)
    or None (no gradient flows into them).
    -> (loss, per_target): the scalar loss with gradients, the mean of the per-target losses or,
    with `row_weights`, their weighted sum; and the (M,) per-target losses, detached."""
    loss, losses, _ = _cross_entropy(h, weight, bias, targets, row_weights, chunk, 0)
    return loss, losses


def softmax_cross_entropy_and_samples(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, samples: int, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`softmax_cross_entropy(h, weight, targets)`, and `samples` items drawn with replacement from
    each row's softmax over items 1..n (the global random generator; they carry no gradient).
    -> (loss, per_target, drawn): drawn (M, samples) item ids in 1..n."""
    if samples <= 0:
        raise ValueError(f"samples must be positive, got {samples}")
    return _cross_entropy(h, weight, None, targets, None, chunk, samples)


def _cross_entropy(h, weight, bias, targets, row_weights, chunk: int, samples: int):
    if h.dim() != 2 or targets.shape != h.shape[:1] or weight.dim() != 2 or weight.shape[1] != h.shape[1]:
        raise ValueError(f"need h (M, d), targets (M,), weight (n + 1, d); got {tuple(h.shape)}, {tuple(targets.shape)}, {tuple(weight.shape)}")
    if row_weights is not None:
        row_weights = row_weights.detach()
    if not torch.is_grad_enabled():
        _, _, _, losses, drawn = _chunked(h, weight, bias, targets, row_weights, chunk, (False, False, False), samples)
        return _reduce(losses, row_weights), losses, drawn
    return _SoftmaxCrossEntropy.apply(h, weight, bias, targets, row_weights, chunk, samples)


def _reduce(losses: torch.Tensor, row_weights: torch.Tensor | None) -> torch.Tensor:
    return losses.mean() if row_weights is None else (row_weights * losses).sum()


def _chunked(h, weight, bias, targets, row_weights, chunk: int, need: tuple[bool, bool, bool], samples: int):
    """-> (grad_h, grad_weight, grad_bias) of `_reduce(losses)` (None where not needed), losses (M,),
    and (M, samples) item ids drawn from each row's softmax.
    Each chunk's logits are held transposed, (V, c): with MKL on this CPU, W h^T is 1.7x faster than
    h W^T, and the weight's gradient z h_c is then a product of two contiguous matrices."""
    W, t = weight[1:], targets - 1  # (V, d), (M,): real items only
    b = None if bias is None else bias[1:, None]  # (V, 1)
    M = h.shape[0]
    losses = h.new_empty(M)
    drawn = torch.empty(M, samples, dtype=torch.long, device=h.device)
    grad_h = torch.empty_like(h) if need[0] else None
    grad_w = torch.zeros_like(weight) if need[1] else None  # the padding row stays zero
    grad_b = torch.zeros_like(bias) if need[2] and bias is not None else None
    buf = h.new_empty(W.shape[0] * min(chunk, M))
    for s in range(0, M, chunk):
        hc, tc = h[s : s + chunk], t[s : s + chunk]
        c = len(hc)
        cols = torch.arange(c, device=h.device)
        z = buf[: W.shape[0] * c].view(-1, c)  # (V, c)
        if b is None:
            torch.mm(W, hc.T, out=z)
        else:
            torch.addmm(b, W, hc.T, out=z)
        picked = z[tc, cols]  # (c,) target logits
        top = z.amax(0)
        total = z.sub_(top).exp_().sum(0)  # z now holds exp(logits - top)
        losses[s : s + c] = top + total.log() - picked
        if samples:
            drawn[s : s + c] = torch.multinomial(z.T, samples, replacement=True) + 1  # unnormalised weights suffice
        if not any(need):
            continue
        g = h.new_full((c,), 1.0 / M) if row_weights is None else row_weights[s : s + c]  # d loss / d loss_i
        z.mul_(g / total).index_put_((tc, cols), -g, accumulate=True)  # g (softmax - one-hot)
        if grad_h is not None:
            torch.mm(z.T, W, out=grad_h[s : s + c])
        if grad_w is not None:
            grad_w[1:].addmm_(z, hc)
        if grad_b is not None:
            grad_b[1:] += z.sum(1)
    return grad_h, grad_w, grad_b, losses, drawn


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """The gradients are computed in forward (see the module docstring); backward scales them."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, row_weights, chunk, samples):
        grad_h, grad_w, grad_b, losses, drawn = _chunked(h, weight, bias, targets, row_weights, chunk, tuple(ctx.needs_input_grad[:3]), samples)
        ctx.grads = (grad_h, grad_w, grad_b)  # not save_for_backward: they are neither inputs nor outputs
        ctx.mark_non_differentiable(losses, drawn)
        return _reduce(losses, row_weights), losses, drawn

    @staticmethod
    def backward(ctx, grad_loss, _grad_losses, _grad_drawn):
        return (*(None if g is None else g * grad_loss for g in ctx.grads), None, None, None, None)


@torch.no_grad()
def item_scores(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, log_probs: bool = False) -> torch.Tensor:
    """Scores for the protocol: h (..., d) -> (..., n + 1) = h W^T + b, whose padding column 0 the
    evaluator never ranks; or, with `log_probs`, the log-softmax over items 1..n, column 0 at -inf.
    Row-major: W h^T is faster with MKL here, but its transposed result made the ranking 5x slower
    and a transposing copy costs what the product saves."""
    flat = h.reshape(-1, h.shape[-1])
    out = torch.mm(flat, weight.T) if bias is None else torch.addmm(bias, flat, weight.T)  # (B, n + 1)
    if log_probs:
        out[:, 0] = float("-inf")
        out -= torch.logsumexp(out, dim=-1, keepdim=True)
    return out.view(*h.shape[:-1], -1)


MIXTURE_CHUNK = 16  # users per chunk: with m = 4, a 12,102 x 64 float buffer (3 MB) on beauty
TINY = 2.0**-100  # mean probabilities below this take the log-domain path (float32 underflows near 2^-126)


@torch.no_grad()
def mixture_log_probs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, chunk: int = MIXTURE_CHUNK) -> torch.Tensor:
    """log of the mean over m of softmax(h_j W^T + b) over items 1..n: h (B, m, d) -> (B, n + 1),
    column 0 at -inf. Users go through in chunks, so no (B, m, n) tensor exists, and each logit is
    exponentiated once (the softmax's normaliser and the mean share the exponentials). A chunk
    where some item's mean probability is below `TINY` (it could underflow) is recomputed in the
    log domain: log-softmax, then logsumexp over m, the same value without the underflow."""
    B, m, d = h.shape
    W = weight[1:]  # (n, d)
    b = None if bias is None else bias[1:, None]  # (n, 1)
    out = h.new_empty(B, W.shape[0] + 1)
    out[:, 0] = float("-inf")
    buf = h.new_empty(W.shape[0] * min(chunk, B) * m)
    mean = h.new_empty(W.shape[0], min(chunk, B))
    for s in range(0, B, chunk):
        rows = h[s : s + chunk].transpose(0, 1).reshape(-1, d)  # (m c, d): sample-major
        c = rows.shape[0] // m
        z = buf[: W.shape[0] * len(rows)].view(-1, len(rows))  # (n, m c), transposed as in `_chunked`
        torch.mm(W, rows.T, out=z) if b is None else torch.addmm(b, W, rows.T, out=z)
        z.sub_(z.amax(0)).exp_()
        z.mul_(z.sum(0).mul_(m).reciprocal_())  # probabilities / m
        p = torch.add(z[:, :c], z[:, c : 2 * c], out=mean[:, :c]) if m > 1 else mean[:, :c].copy_(z)
        for j in range(2, m):
            p += z[:, j * c : (j + 1) * c]  # (n, c) mean probabilities
        if p.min() >= TINY:
            out[s : s + c, 1:] = p.log_().T
            continue
        logits = W @ rows.T if b is None else torch.addmm(b, W, rows.T)
        out[s : s + c, 1:] = (torch.logsumexp(torch.log_softmax(logits, 0).view(-1, m, c), dim=1) - math.log(m)).T
    return out
