import math

import pytest
import torch

from diffrec.schedule import cosine_betas, linear_betas, make_betas, make_schedule, q_posterior, q_sample, sqrt_betas


def test_alphas_and_cumulative_products_match_definitions():
    betas = torch.tensor([0.1, 0.2, 0.5])
    s = make_schedule(betas)
    assert s.steps == 3
    torch.testing.assert_close(s.betas, torch.tensor([0.0, 0.1, 0.2, 0.5]))
    torch.testing.assert_close(s.alphas, torch.tensor([1.0, 0.9, 0.8, 0.5]))
    torch.testing.assert_close(s.abar, torch.tensor([1.0, 0.9, 0.72, 0.36]))
    torch.testing.assert_close(s.sqrt_abar ** 2 + s.sqrt_one_minus_abar ** 2, torch.ones(4))


def test_posterior_matches_ddpm_formulas_on_hand_computed_values():
    s = make_schedule(torch.tensor([0.1, 0.2, 0.5]))
    # n = 2: beta 0.2, alpha 0.8, abar 0.72, abar_prev 0.9
    h0, hn = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]])
    mean, var = q_posterior(s, h0, hn, torch.tensor([2]))
    c0 = 0.2 * math.sqrt(0.9) / 0.28
    cn = 0.1 * math.sqrt(0.8) / 0.28
    torch.testing.assert_close(mean, torch.tensor([[c0 * 1.0 + cn * 0.5, c0 * -2.0 + cn * 3.0]]))
    torch.testing.assert_close(var, torch.tensor([[0.2 * 0.1 / 0.28]]))
    # n = 1: the posterior is the clean h0 itself, with zero variance
    mean, var = q_posterior(s, h0, hn, torch.tensor([1]))
    torch.testing.assert_close(mean, h0)
    assert float(var) == 0.0


def test_q_sample_has_closed_form_mean_and_variance():
    s = make_schedule(linear_betas(20))
    g = torch.Generator().manual_seed(0)
    h0 = torch.tensor([1.5, -0.5, 0.0])
    n = 7
    samples = q_sample(s, h0.expand(200_000, 3), torch.full((200_000,), n), torch.randn(200_000, 3, generator=g))
    abar = float(torch.cumprod(1 - linear_betas(20), 0)[n - 1])
    torch.testing.assert_close(samples.mean(0), math.sqrt(abar) * h0, atol=0.01, rtol=0)
    torch.testing.assert_close(samples.var(0), torch.full((3,), 1 - abar), atol=0.01, rtol=0)


def test_schedules_are_valid_and_noise_fully_at_n():
    for kind in ("linear", "linear-continuous", "cosine", "sqrt"):
        for steps in (10, 50, 200):
            betas = make_betas(kind, steps)
            assert betas.shape == (steps,) and (betas > 0).all() and (betas < 1).all()
            if kind != "sqrt":  # sqrt takes a large first step by design (Diffusion-LM)
                assert (betas[1:] >= betas[:-1] - 1e-12).all(), kind
            assert float(make_schedule(betas).abar[-1]) < 0.05, (kind, steps)


def test_schedule_golden_values():
    torch.testing.assert_close(linear_betas(1000)[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))
    torch.testing.assert_close(linear_betas(50)[[0, -1]], torch.tensor([2e-3, 0.4], dtype=torch.float64))
    # cosine: abar(t) = cos^2(((t + s)/(1 + s)) pi/2) / abar(0)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    assert float(cosine_betas(10)[3]) == pytest.approx(1 - f(0.4) / f(0.3))
    assert float(sqrt_betas(10)[0]) == pytest.approx(1 - (1 - math.sqrt(0.1001)) / (1 - math.sqrt(0.0001)))


def test_bad_betas_are_rejected():
    with pytest.raises(ValueError):
        make_schedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError):
        make_betas("linear", 0)


# abar_n of "linear-continuous" = exp(-(0.1 t + 9.95 t^2)) at t = n / N with DDPM's range:
# t = 1/N, 1/2 and 1, by hand.
CONTINUOUS_ABAR = {
    2: (0.0790638, 0.0790638, 4.31857e-5),
    10: (0.896282, 0.0790638, 4.31857e-5),
    50: (0.994038, 0.0790638, 4.31857e-5),
    1000: (0.999890, 0.0790638, 4.31857e-5),
}


@pytest.mark.parametrize("steps", sorted(CONTINUOUS_ABAR))
def test_linear_continuous_golden_values_and_smooth_end(steps):
    betas = make_betas("linear-continuous", steps)
    abar = make_schedule(betas).abar.double()
    for n, want in zip((1, steps // 2, steps), CONTINUOUS_ABAR[steps]):
        assert float(abar[n]) == pytest.approx(want, rel=1e-4), n
    assert (betas < 1).all()  # unclamped: at N = 2 the last beta is 0.99945, above the other schedules' MAX_BETA
    assert (abar[1:] < abar[:-1]).all()
    assert 1e-5 < float(abar[-1]) < 1e-4  # the same small, nonzero end for every N
    assert float(abar[1:steps].min()) > 1e-6  # no step before N is pure noise (the lowest: 4.4e-5 at N = 1000)


def test_linear_continuous_tracks_ddpm_linear_at_1000_steps():
    new, old = (make_schedule(make_betas(kind, 1000)).abar for kind in ("linear-continuous", "linear"))
    assert float((new - old).abs().max()) < 1e-3


def test_old_linear_schedule_is_unchanged():
    # records that name "linear" keep their meaning: the clamp still drives N = 10 to ~0 by step 7
    abar = make_schedule(make_betas("linear", 10)).abar
    assert float(abar[5]) == pytest.approx(0.0143777, rel=1e-4)
    assert float(abar[7]) < 1e-7
