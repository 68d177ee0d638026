import torch

from diffrec.step_sampler import LossAwareStepSampler, UniformStepSampler, make_step_sampler


def test_uniform_sampler_draws_every_step_with_weight_one():
    torch.manual_seed(0)
    n, w = UniformStepSampler(5).sample(2000)
    assert set(n.tolist()) == {1, 2, 3, 4, 5}
    assert torch.equal(w, torch.ones(2000))


def test_loss_aware_sampler_is_uniform_until_every_step_has_its_history():
    s = make_step_sampler("importance", 3)
    assert isinstance(s, LossAwareStepSampler)
    s.update(torch.tensor([1] * 10 + [2] * 10), torch.ones(20))
    assert not s.warmed_up()
    torch.testing.assert_close(s.weights(), torch.full((3,), 1 / 3))


def test_loss_aware_sampler_follows_the_second_moment_of_recent_losses():
    s = LossAwareStepSampler(3, history=2, uniform_prob=0.0)
    s.update(torch.tensor([1, 1, 2, 2, 3, 3]), torch.tensor([9.0, 9.0, 3.0, 4.0, 1.0, 1.0]))
    s.update(torch.tensor([1, 1]), torch.tensor([3.0, 4.0]))  # step 1's ring now holds only these two
    rms = torch.tensor([12.5**0.5, 12.5**0.5, 1.0])
    torch.testing.assert_close(s.weights(), (rms / rms.sum()).float())
    torch.manual_seed(0)
    n, w = s.sample(20000)
    p = s.weights()
    torch.testing.assert_close(w, 1 / (3 * p[n - 1]))
    assert abs(float((n == 3).float().mean()) - float(p[2])) < 0.01
    # importance weights make the weighted loss an unbiased estimate of the uniform-step mean
    losses = torch.tensor([5.0, 2.0, 7.0])
    assert abs(float((w * losses[n - 1]).mean()) - float(losses.mean())) < 0.1


def test_uniform_mixture_keeps_every_step_reachable():
    s = LossAwareStepSampler(2, history=1, uniform_prob=0.1)
    s.update(torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(s.weights(), torch.tensor([0.95, 0.05]))
