import math

import pytest
import torch
import torch.nn.functional as F

from diffrec.samplers import ancestral, ancestral_step, average, ddim_step, posterior_coefficients, strided, strided_steps
from diffrec.schedule import linear_betas, make_schedule, q_posterior

SCHED = make_schedule(linear_betas(20))
W = torch.linspace(-1, 1, 4 * 7).reshape(4, 7)  # a fixed rounding matrix: d = 4, V = 7


def denoise(h, n):  # a deterministic stand-in for the network
    return 0.5 * h.tanh() + 0.01 * n


def rounding(h0):
    return F.log_softmax(h0 @ W, dim=-1)


def run(sampler, seed=0, **kw):
    return sampler(denoise, rounding, SCHED, (3, 4), torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("sampler,kw", [(ancestral, {}), (strided, {"k": 5}), (average, {"m": 3})])
def test_samplers_are_deterministic_under_a_seeded_generator(sampler, kw):
    a, b, c = run(sampler, 0, **kw), run(sampler, 0, **kw), run(sampler, 1, **kw)
    assert a.shape == (3, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampler_golden_values():
    """Guards against silent numerical changes of the sampling loops (values from this implementation)."""
    got = [float(run(ancestral).sum()), float(run(strided, k=5).sum()), float(run(average, m=3).sum())]
    assert got == pytest.approx(GOLDEN, rel=1e-5)


GOLDEN = [-40.87563705444336, -40.87002944946289, -40.97698211669922]


def test_average_is_the_mean_of_m_one_step_predictions():
    g = torch.Generator().manual_seed(3)
    probs = [rounding(denoise(torch.randn(3, 4, generator=g), SCHED.steps)).exp() for _ in range(4)]
    expected = torch.stack(probs).mean(0).log()
    torch.testing.assert_close(run(average, 3, m=4), expected)


def test_average_is_one_rounding_call_equal_to_the_running_logaddexp():
    """In float64 against the former loop (m roundings, m - 1 logaddexp passes), with rounding
    sharp enough that the mean of the probabilities underflows outside the log domain."""
    calls = []

    def sharp(h0):
        calls.append(h0.shape)
        return F.log_softmax(h0 @ (5000 * W.double()), dim=-1)

    def denoise64(h, n):
        return denoise(h, n).double()

    got = average(denoise64, sharp, SCHED, (3, 4), torch.Generator().manual_seed(5), m=4)
    assert calls == [(12, 4)]  # one (B m, d) product
    g = torch.Generator().manual_seed(5)
    h0 = denoise64(torch.stack([torch.randn(3, 4, generator=g) for _ in range(4)], dim=1), SCHED.steps)  # (B, m, d)
    total = sharp(h0[:, 0])
    for j in range(1, 4):
        total = torch.logaddexp(total, sharp(h0[:, j]))
    expected = total - math.log(4)
    assert torch.isfinite(expected).all() and (expected < -800).any()  # exp() of it is 0 in float64
    torch.testing.assert_close(got, expected)


def test_ancestral_step_uses_the_posterior():
    h_n, h0 = torch.randn(2, 4), torch.randn(2, 4)
    mean, var = q_posterior(SCHED, h0, h_n, torch.tensor([7, 7]))
    noise = torch.randn(2, 4)
    torch.testing.assert_close(ancestral_step(h_n, h0, noise, posterior_coefficients(SCHED)[7]), mean + var.sqrt() * noise)


def test_ddim_step_is_consistent_with_the_forward_process():
    h0, eps = torch.randn(2, 4), torch.randn(2, 4)
    h_n = SCHED.sqrt_abar[9] * h0 + SCHED.sqrt_one_minus_abar[9] * eps
    # with the true h0, DDIM moves along the same eps: h_{n'} = sqrt(abar_n') h0 + sqrt(1 - abar_n') eps
    torch.testing.assert_close(ddim_step(SCHED, h_n, 9, 4, h0), SCHED.sqrt_abar[4] * h0 + SCHED.sqrt_one_minus_abar[4] * eps)
    torch.testing.assert_close(ddim_step(SCHED, h_n, 9, 0, h0), h0)


def test_strided_steps():
    assert strided_steps(50, 5) == [50, 38, 26, 13, 1]
    assert strided_steps(3, 10) == [3, 2, 1]
    assert strided_steps(50, 1) == [50]
    with pytest.raises(ValueError):
        strided_steps(50, 0)


def test_average_with_one_sample_is_one_denoiser_call_at_step_n():
    calls = []
    average(lambda h, n: calls.append(n) or h, rounding, SCHED, (3, 4), torch.Generator().manual_seed(0), m=1)
    assert calls == [SCHED.steps]
    calls.clear()
    ancestral(lambda h, n: calls.append(n) or h, rounding, SCHED, (3, 4), torch.Generator().manual_seed(0))
    assert calls == list(range(SCHED.steps, 0, -1))
    assert math.isfinite(float(run(ancestral).exp().sum()))
