import math

import pytest
import torch

from benchmark.layers import position_ids
from diffrec.denoiser import DSR, step_embedding, two_stream_mask


def test_step_embedding_matches_formula():
    d = 6
    z = step_embedding(torch.tensor([0, 3]), d)
    assert z.shape == (2, d)
    for j in range(d // 2):
        w = 10000 ** (2 * j / d)
        assert float(z[1, 2 * j]) == torch.tensor(math.sin(3 / w)).float().item()
        assert abs(float(z[1, 2 * j + 1]) - math.cos(3 / w)) < 1e-6
    torch.testing.assert_close(z[0], torch.tensor([0.0, 1.0] * 3))


def test_two_stream_mask():
    keep = torch.tensor([[False, True, True]])
    m = two_stream_mask(keep, torch.arange(3))[0, 0]
    expected = torch.tensor(
        [
            # clean 0..2 (column 0 is padding), noisy 0..2
            [1, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],  # noisy 0 follows padding: itself only
            [0, 1, 0, 0, 1, 0],
            [0, 1, 1, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)


@pytest.mark.parametrize("slot,step_tokens,slot_context", [("linear", "all", "none"), ("raw", "all", "none"), ("linear", "slot", "last")])
def test_noisy_token_equals_network_on_its_prefix_alone(slot, step_tokens, slot_context):
    """The training pass (every prefix at once) computes exactly the inference computation."""
    torch.manual_seed(0)
    d, L, max_len = 16, 6, 10
    dsr = DSR(d, layers=2, heads=2, dropout=0.0, max_len=max_len, slot=slot, step_tokens=step_tokens, slot_context=slot_context).eval()
    history = torch.randn(3, L, d)
    keep = torch.ones(3, L, dtype=torch.bool)
    keep[0, :2] = False  # a left-padded row
    history = history * keep[..., None]
    noisy = torch.randn(3, L, d)
    n = torch.tensor([1, 5, 9])
    positions = position_ids(L + 1, max_len)
    full = dsr(history, keep, noisy, torch.arange(L), n, positions)  # (3, L, d)
    for j in range(L):
        alone = dsr(history[:, : j + 1], keep[:, : j + 1], noisy[:, j : j + 1], torch.tensor([j]), n, positions[: j + 2])
        rows = keep[:, j]
        torch.testing.assert_close(full[rows, j], alone[rows, 0], atol=1e-5, rtol=1e-5)
    # and the future does matter for the last slot, so the comparison above is not vacuous
    changed = history.clone()
    changed[:, -2] = torch.randn(3, d)  # (a constant shift would vanish in the pre-LayerNorm)
    assert not torch.allclose(dsr(changed, keep, noisy, torch.arange(L), n, positions)[:, -1], full[:, -1])


def test_step_vector_modes():
    n = torch.tensor([1, 7])
    raw = DSR(8, 1, 2, 0.0, 5, step="raw")
    assert torch.equal(raw.step_vector(n), step_embedding(n, 8))
    assert torch.equal(DSR(8, 1, 2, 0.0, 5, step="none").step_vector(n), torch.zeros(2, 8))
    assert DSR(8, 1, 2, 0.0, 5, step="mlp").step_vector(n).shape == (2, 8)


@pytest.mark.parametrize("slot_context", ["none", "last"])
def test_cached_history_gives_the_same_slots_as_the_full_pass(slot_context):
    """Inference that encodes the history once and runs only the slots per step computes exactly
    the full two-stream pass (several slots after the last column, a left-padded row)."""
    torch.manual_seed(0)
    d, L, max_len = 16, 6, 10
    dsr = DSR(d, layers=2, heads=2, dropout=0.0, max_len=max_len, step_tokens="slot", slot_context=slot_context).eval()
    keep = torch.ones(3, L, dtype=torch.bool)
    keep[0, :4] = False
    history = torch.randn(3, L, d) * keep[..., None]
    noisy, cols, n = torch.randn(3, 4, d), torch.full((4,), L - 1), torch.tensor([1, 5, 9])
    positions = position_ids(L + 1, max_len)
    full = dsr(history, keep, noisy, cols, n, positions)
    cache = dsr.encode_history(history, keep, positions)
    torch.testing.assert_close(dsr.denoise_slots(cache, history, keep, noisy, cols, n, positions), full, atol=1e-5, rtol=1e-5)
    # every step reuses the cache: another step and other noise still match the full pass
    torch.testing.assert_close(dsr.denoise_slots(cache, history, keep, noisy.flip(1), cols, n + 3, positions), dsr(history, keep, noisy.flip(1), cols, n + 3, positions), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="step_tokens"):
        DSR(d, 1, 2, 0.0, max_len, step_tokens="all").encode_history(history, keep, positions)
