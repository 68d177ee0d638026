"""DiffuRec pieces on hand-computed values, and reproducible sampling under a seeded generator."""
import math

import pytest
import torch

from baselines import diffurec
from baselines.diffurec import DiffuRec, DiffuRecConfig, all_prefixes, recent_targets, step_embedding, truncated_linear_betas
from benchmark.model import Batch
from benchmark.output import item_scores, softmax_cross_entropy


def test_truncated_linear_schedule_endpoints():
    betas = truncated_linear_betas(32)  # scale 1000/32 = 31.25
    assert len(betas) == 32
    assert betas[0].item() == pytest.approx(31.25 * 1e-4 + 0.01)  # 0.013125
    assert betas[-1].item() == pytest.approx(31.25 * 0.02 + 0.01)  # 0.635
    short = truncated_linear_betas(10)  # 100 * 0.02 + 0.01 > 1: the end falls back to 100 * 0.001 + 0.01
    assert (short[0].item(), short[-1].item()) == pytest.approx((0.02, 0.11))


def test_step_embedding_values():
    emb = step_embedding(torch.tensor([0.0, 1.0]), 4)  # frequencies 1 and 10000^(-1/2) = 0.01
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]])
    torch.testing.assert_close(emb, expected)
    assert step_embedding(torch.tensor([3.0]), 5)[0, -1] == 0  # odd sizes are zero-padded


def test_all_prefixes_lists_every_history_target_pair():
    inputs = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]])
    targets = torch.tensor([[0, 6, 7, 8], [0, 0, 4, 9]])  # row 1 has only two targets
    seqs, tgt = all_prefixes(inputs, targets)
    assert seqs.tolist() == [[0, 0, 0, 5], [0, 0, 5, 6], [0, 5, 6, 7], [0, 1, 2, 3], [1, 2, 3, 4]]
    assert tgt.tolist() == [6, 7, 8, 4, 9]


def test_recent_targets_keeps_the_last_k_of_each_row():
    targets = torch.tensor([[0, 6, 7, 8], [0, 0, 4, 9]])
    assert recent_targets(targets, 2).tolist() == [[0, 0, 7, 8], [0, 0, 4, 9]]
    assert recent_targets(targets, 1).tolist() == [[0, 0, 0, 8], [0, 0, 0, 9]]
    assert recent_targets(targets, 9).tolist() == targets.tolist()


def test_rounding_cross_entropy_by_hand():
    item_emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # row 0 = padding
    x0_hat = torch.tensor([[1.0, 0.0]])
    logits = item_scores(x0_hat, item_emb)
    assert logits[0, 1:].tolist() == [1.0, 0.0, 2.0]
    expected = math.log(math.e + 1 + math.e**2) - 1  # -log softmax of item 1 among items 1..3
    assert softmax_cross_entropy(x0_hat, item_emb, torch.tensor([1]))[0].item() == pytest.approx(expected)


def test_posterior_step_matches_ho_et_al():
    model = DiffuRec(DiffuRecConfig(hidden=8, layers=1, heads=1, steps=4), n_items=5, max_len=6)
    betas = truncated_linear_betas(4)
    abar = torch.cumprod(1 - betas, 0)
    x0, xs = torch.randn(2, 8), torch.randn(2, 8)
    # s = 0: the posterior mean is x0_hat itself and no noise is added
    torch.testing.assert_close(model.reverse_step(x0, xs, 0, None), x0)
    # s = 2, zero noise: eq. 7 of Ho et al. 2020
    c0 = betas[2] * abar[1].sqrt() / (1 - abar[2])
    cs = (1 - abar[1]) * (1 - betas[2]).sqrt() / (1 - abar[2])
    torch.testing.assert_close(model.reverse_step(x0, xs, 2, torch.zeros_like(x0)), (c0 * x0 + cs * xs).float())
    # forward: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps
    eps = torch.randn(2, 8)
    s = torch.tensor([0, 3])
    torch.testing.assert_close(model.q_sample(x0, s, eps), (abar[s, None].sqrt() * x0 + (1 - abar[s, None]).sqrt() * eps).float())


@pytest.mark.parametrize("window", [0, 3])
def test_sampling_is_reproducible_under_a_seeded_generator(window):
    torch.manual_seed(0)
    model = DiffuRec(DiffuRecConfig(hidden=16, layers=1, heads=2, steps=8, window=window), n_items=30, max_len=10).eval()
    seqs = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    a = model.score(seqs, torch.Generator().manual_seed(7))
    b = model.score(seqs, torch.Generator().manual_seed(7))
    c = model.score(seqs, torch.Generator().manual_seed(8))
    assert a.shape == (2, 31) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)  # the generator really drives the sampling


@pytest.mark.parametrize("targets", [0, 1])
def test_padding_row_never_learns(targets):
    torch.manual_seed(0)
    model = DiffuRec(DiffuRecConfig(hidden=16, layers=1, heads=2, steps=4, targets=targets), n_items=9, max_len=6)
    inputs, targets_ = torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[0, 2, 3], [4, 5, 6]])
    loss, _ = model.loss(Batch(inputs, targets_, torch.arange(2)))
    loss.backward()
    grad = model.item_emb.weight.grad
    assert torch.isfinite(loss) and grad[1:].abs().sum() > 0
    assert grad[0].abs().sum() == 0  # left out of the softmax, masked in attention


@pytest.mark.parametrize("window", [0, 3])
def test_prefixes_in_length_groups_give_the_whole_batchs_loss_and_gradients(window, monkeypatch):
    torch.manual_seed(0)
    model = DiffuRec(DiffuRecConfig(hidden=16, layers=2, heads=2, steps=4, window=window, targets=0), n_items=12, max_len=6).eval()  # no dropout
    batch = Batch(torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8], [0, 0, 0, 9, 10]]), torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9], [0, 0, 0, 10, 11]]), torch.arange(3))

    def loss_and_grads(pack):
        monkeypatch.setattr(diffurec, "PACK", pack)
        torch.manual_seed(1)  # the same steps, noise and lambdas
        loss, _ = model.loss(batch)
        return loss, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    whole, grads = loss_and_grads(10**6)  # one group of 10 prefixes, lengths 1-5, cut to 5
    packed, packed_grads = loss_and_grads(2)  # five groups, cut to 1, 2, 2, 3 and 5 (window 3: 1, 2, 2, 3, 3)
    torch.testing.assert_close(packed, whole)
    for got, ref in zip(packed_grads, grads):
        torch.testing.assert_close(got, ref)
