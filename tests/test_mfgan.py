"""MFGAN pieces: the policy-gradient estimator's sign and values, popularity buckets, causal
discriminators, and the per-epoch GAN diagnostics in the run record."""
import numpy as np
import pytest
import torch

from baselines.mfgan import MFGAN, Discriminator, MFGANConfig, policy_gradient_loss, popularity_buckets
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, fit
from tests.synthetic import chain_dataset


def _probs_after_one_step(rewards, actions=((0, 1),), lr=1.0):
    logits = torch.zeros(1, 3, requires_grad=True)  # uniform policy over 3 actions
    log_probs = torch.log_softmax(logits, -1).gather(1, torch.tensor(actions))
    policy_gradient_loss(log_probs, torch.tensor(rewards)).backward()
    with torch.no_grad():
        return torch.softmax(logits - lr * logits.grad, -1)[0]


def test_policy_gradient_value_and_gradient_by_hand():
    logits = torch.zeros(1, 3, requires_grad=True)
    log_probs = torch.log_softmax(logits, -1).gather(1, torch.tensor([[0, 1]]))
    loss = policy_gradient_loss(log_probs, torch.tensor([[1.0, 0.0]]))
    # leave-one-out baselines: 0 for action 0, 1 for action 1 -> advantages +1, -1;
    # loss = -(log p0 - log p1) / 2 = 0 at the uniform policy, gradient -(e0 - e1) / 2
    loss.backward()
    assert loss.item() == pytest.approx(0.0)
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.5, 0.5, 0.0]]))


def test_policy_gradient_of_logits_equals_that_of_log_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    actions, rewards = torch.randint(0, 6, (4, 3), generator=g), torch.rand(4, 3, generator=g, dtype=torch.float64)
    loss = policy_gradient_loss(logits.gather(1, actions), rewards)
    ref = policy_gradient_loss(torch.log_softmax(logits, -1).gather(1, actions), rewards)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0])


def test_rewarded_action_becomes_more_likely():
    p = _probs_after_one_step([[1.0, 0.0]])
    assert p[0] > 1 / 3 > p[1]


def test_more_reward_means_more_probability_after_a_step():
    low, high = _probs_after_one_step([[0.5, 0.2]]), _probs_after_one_step([[0.9, 0.2]])
    assert high[0] > low[0] > 1 / 3


def test_equal_rewards_leave_the_policy_unchanged():
    torch.testing.assert_close(_probs_after_one_step([[0.7, 0.7]]), torch.full((3,), 1 / 3))


def test_popularity_buckets_by_hand():
    counts = np.array([0, 5, 1, 3, 10])  # index 0 = padding; ranks by count: items 2, 3, 1, 4
    assert popularity_buckets(counts, 2).tolist() == [0, 2, 1, 1, 2]
    assert popularity_buckets(np.array([0, 4, 4, 4]), 3).tolist() == [0, 1, 2, 3]  # ties by item id


def test_discriminator_judges_each_position_from_its_prefix_only():
    torch.manual_seed(0)
    d = Discriminator(vocab=10, d=8, layers=1, heads=2, dropout=0.0, max_len=6, init_std=0.1).eval()
    a, b = torch.tensor([[0, 3, 4, 5, 6]]), torch.tensor([[0, 3, 4, 9, 1]])  # differ after column 2
    real = torch.tensor([[False, True, True, False, False]])
    cands = torch.tensor([[7, 8], [2, 5]])
    torch.testing.assert_close(d(a, real, cands), d(b, real, cands))


def test_gan_diagnostics_are_recorded_per_evaluation():
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=60))
    model = MFGAN(MFGANConfig(hidden=16, layers=1, pretrain_epochs=1), n_items=split.n_items, max_len=split.max_len)
    result = fit(model, split, TrainConfig(epochs=3, eval_every=1, patience=5, batch_size=16), seed=0, progress=False)
    assert [p["adversarial"] for p in result.curve] == [0.0, 1.0, 1.0]
    for point in result.curve:
        for key in ("disc_accuracy", "disc_accuracy_item", "disc_accuracy_popularity", "gen_reward"):
            assert 0.0 <= point[key] <= 1.0, (key, point)
    assert model.bucket[1:].min() >= 1 and model.bucket[0] == 0  # buckets came from the training counts
