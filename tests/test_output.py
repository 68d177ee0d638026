import math

import numpy as np
import pytest
from scipy import stats
import torch
import torch.nn.functional as F

from benchmark.output import item_scores, mixture_log_probs, softmax_cross_entropy, softmax_cross_entropy_and_samples


def plain(h, weight, targets, bias=None, row_weights=None):
    """The computation the models did before: all logits, -inf written into the padding column."""
    logits = h @ weight.T if bias is None else h @ weight.T + bias
    logits[:, 0] = float("-inf")
    losses = F.cross_entropy(logits, targets, reduction="none")
    return (losses.mean() if row_weights is None else (row_weights * losses).sum()), losses


def inputs(M=7, d=5, n=11, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(M, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(n + 1, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n + 1, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(1, n + 1, (M,), generator=g)
    targets[0] = n  # the last item, where an off-by-one in the shift shows
    return h, weight, b, targets, torch.rand(M, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])  # 3 does not divide M = 7; 64 > M
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_equals_the_plain_computation_with_its_gradients(chunk, bias, weighted):
    h, weight, b, targets, w = inputs(bias=bias)
    row_weights = w if weighted else None
    params = [h, weight] + ([b] if bias else [])
    loss, per_target = softmax_cross_entropy(h, weight, targets, bias=b, row_weights=row_weights, chunk=chunk)
    grads = torch.autograd.grad(3.0 * loss, params)  # a non-unit incoming gradient is scaled
    ref_loss, ref_per_target = plain(h, weight, targets, b, row_weights)
    ref_grads = torch.autograd.grad(3.0 * ref_loss, params)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(per_target, ref_per_target.detach())
    assert not per_target.requires_grad
    for got, ref in zip(grads, ref_grads):
        torch.testing.assert_close(got, ref)
    assert (grads[1][0] == 0).all()  # the padding row is never scored


def test_cross_entropy_through_a_tied_table_and_without_gradients():
    h, weight, _, targets, _ = inputs(bias=False)
    seqs = torch.tensor([[0, 3, 5], [2, 2, 11]])

    def states():  # the table is also the input embedding, as in SASRec
        return torch.cat([weight[seqs].sum(1), h[:5]])

    loss, _ = softmax_cross_entropy(states(), weight, targets, chunk=2)
    ref, _ = plain(states(), weight, targets)
    torch.testing.assert_close(torch.autograd.grad(loss, weight)[0], torch.autograd.grad(ref, weight)[0])
    with torch.no_grad():
        loss, per_target = softmax_cross_entropy(h, weight, targets, chunk=2)
    torch.testing.assert_close(per_target, plain(h, weight, targets)[1].detach())


@pytest.mark.parametrize("chunk", [3, 64])
def test_samples_come_from_each_rows_softmax_beside_the_same_loss(chunk):
    h, weight, _, targets, _ = inputs(bias=False)
    torch.manual_seed(0)
    loss, per_target, drawn = softmax_cross_entropy_and_samples(h, weight, targets, 2, chunk=chunk)
    ref_loss, ref_per_target = plain(h, weight, targets)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(per_target, ref_per_target.detach())
    torch.testing.assert_close(torch.autograd.grad(loss, [h, weight]), torch.autograd.grad(ref_loss, [h, weight]))
    assert drawn.shape == (7, 2) and not drawn.requires_grad
    # rows whose softmax puts nearly all mass on one item (a different one per row) draw that item:
    # each row's draws come from its own logits, across chunk boundaries, and ids are shifted past padding
    peaked = 50.0 * weight.detach()[[4, 11, 1, 7, 2, 9, 4]]  # (M, d): large logits, so each row's argmax takes ~all its mass
    with torch.no_grad():
        _, _, drawn = softmax_cross_entropy_and_samples(peaked, weight.detach(), targets, 3, chunk=chunk)
    assert drawn.tolist() == [[t] * 3 for t in (peaked @ weight.detach()[1:].T).argmax(1).add(1).tolist()]


def test_samples_follow_the_softmax_frequencies():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(6, 3, generator=g, dtype=torch.float64)
    h = torch.randn(1, 3, generator=g, dtype=torch.float64).expand(2000, 3)  # one distribution, 2000 rows
    torch.manual_seed(3)
    with torch.no_grad():
        _, _, drawn = softmax_cross_entropy_and_samples(h, weight, torch.ones(2000, dtype=torch.long), 4, chunk=128)
    assert drawn.min() >= 1  # never the padding row
    p = torch.softmax(h[0] @ weight[1:].T, -1).numpy()
    counts = np.bincount(drawn.flatten().numpy() - 1, minlength=5)
    assert stats.chisquare(counts, p * counts.sum()).pvalue > 1e-3


def test_cross_entropy_rejects_mismatched_shapes():
    h, weight, _, targets, _ = inputs()
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(h, weight, targets[:-1])


@pytest.mark.parametrize("bias", [False, True])
def test_item_scores_and_log_probabilities_over_real_items(bias):
    h, weight, b, _, _ = inputs(bias=bias)
    h3 = h.detach().view(7, 1, 5).expand(7, 2, 5)  # any leading shape
    b = None if b is None else b.detach()
    logits = item_scores(h3, weight.detach(), b)
    ref = h.detach() @ weight.detach().T + (0 if b is None else b)
    assert logits.shape == (7, 2, 12)
    torch.testing.assert_close(logits[:, 0, 1:], ref[:, 1:])
    log_probs = item_scores(h3, weight.detach(), b, log_probs=True)
    assert torch.isneginf(log_probs[..., 0]).all()
    torch.testing.assert_close(log_probs[:, 1, 1:], torch.log_softmax(ref[:, 1:], -1))


@pytest.mark.parametrize("scale", [1.0, 400.0])  # 400: some mean probabilities underflow outside the log domain
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_mixture_log_probs_equal_the_log_of_the_mean_probability(scale, chunk):
    g = torch.Generator().manual_seed(1)
    h = scale * torch.randn(5, 4, 3, generator=g, dtype=torch.float64)  # (B, m, d)
    weight = torch.randn(9, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(9, generator=g, dtype=torch.float64)
    got = mixture_log_probs(h, weight, bias, chunk=chunk)
    assert got.shape == (5, 9) and torch.isneginf(got[:, 0]).all() and torch.isfinite(got[:, 1:]).all()
    log_probs = torch.log_softmax(h @ weight[1:].T + bias[1:], -1)  # (B, m, n)
    torch.testing.assert_close(got[:, 1:], torch.logsumexp(log_probs, 1) - math.log(4))
