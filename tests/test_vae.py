"""SVAE and ContrastVAE: their losses on hand-computed values, padding invariance, the data
augmentations, and the per-evaluation diagnostics (KL term and active units) in the run record."""
import math

import pytest
import torch

from baselines.contrastvae import augment, info_nce, variational_dropout_kl
from baselines.svae import active_units, gaussian_kl, kl_weight, latent_diagnostics, roll_rows
from benchmark.registry import build_model
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, fit
from tests.synthetic import chain_dataset


def test_gaussian_kl_matches_closed_form():
    # mu = (1, 0), sigma^2 = (1, 2): 1/2 [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = 1 - ln(2) / 2
    kl = gaussian_kl(torch.tensor([1.0, 0.0]), torch.tensor([0.0, math.log(2.0)]))
    assert kl.item() == pytest.approx(1 - math.log(2) / 2, abs=1e-6)  # 0.6534264
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).tolist() == [0.0, 0.0, 0.0]  # q = prior


def test_kl_weight_warms_up_linearly_then_stays():
    assert [kl_weight(e, 0.2, 4) for e in (1, 2, 3, 5, 50)] == pytest.approx([0.0, 0.05, 0.1, 0.2, 0.2])
    assert kl_weight(1, 0.3, 0) == 0.3


def test_active_units_counts_variance_above_threshold():
    mu = torch.tensor(
        [
            [5.0, 0.0, 0.0, 1.0],
            [5.0, 0.1, 0.2, -1.0],
            [5.0, 0.2, 0.4, 1.0],
        ]
    )  # population variances: 0, 0.00667, 0.0267, 0.889
    assert active_units(mu) == 2
    assert active_units(mu, threshold=0.005) == 3


def test_info_nce_on_hand_computed_batches():
    eye = torch.eye(2)
    # Identical views, tau = 1: each row sees its positive at cos 1 and two negatives at cos 0
    # (the third, itself, is excluded): -log(e / (e + 2)).
    assert info_nce(eye, eye, 1.0).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)  # 0.5514
    # Swapped views, tau = 0.5: the positive is orthogonal (0), one negative is parallel (2 after /tau):
    # -log(1 / (1 + 1 + e^2)).
    assert info_nce(eye, eye.flip(0), 0.5).item() == pytest.approx(math.log(2 + math.e**2), abs=1e-6)  # 2.2395
    # Cosine similarity: the scale of a latent does not matter.
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert info_nce(3 * a, b, 0.7).item() == pytest.approx(info_nce(a, b, 0.7).item(), abs=1e-5)


def test_variational_dropout_kl_golden_values():
    # -(0.5 ln a + c1 a + c2 a^2 + c3 a^3), Kingma et al. 2015 eq. 14
    assert variational_dropout_kl(torch.tensor(1.0)).item() == pytest.approx(-(1.16145124 - 1.50204118 + 0.58629921), abs=1e-6)
    assert variational_dropout_kl(torch.tensor(0.5)).item() == pytest.approx(0.0680709, abs=1e-6)


def test_roll_rows_turns_left_padding_into_right_padding_and_back():
    seqs = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 7]])
    lengths = (seqs > 0).sum(1)
    right = roll_rows(seqs, 4 - lengths)
    assert right.tolist() == [[1, 2, 0, 0], [3, 4, 5, 6], [7, 0, 0, 0]]
    assert torch.equal(roll_rows(right, lengths), seqs)
    assert torch.equal(roll_rows(right[..., None].expand(-1, -1, 2), lengths), seqs[..., None].expand(-1, -1, 2))


@pytest.mark.parametrize("op", ["crop", "mask", "reorder"])
def test_augment_keeps_inputs_and_targets_aligned(op):
    seq = torch.arange(1, 11)  # items 1..10
    g = torch.Generator().manual_seed(0)
    inputs, targets = augment(seq, op, 0.3, mask_id=99, generator=g)
    assert inputs.shape == targets.shape
    if op == "crop":  # a window of ceil(0.7 * 10) = 7 items: 6 inputs, targets shifted by one
        assert len(inputs) == 6 and torch.equal(targets, inputs + 1)
    elif op == "mask":  # round(0.3 * 9) = 3 inputs masked, targets untouched
        assert (inputs == 99).sum() == 3 and torch.equal(targets, seq[1:])
        assert torch.equal(inputs[inputs != 99], seq[:-1][inputs != 99])
    else:  # a window of 3 items shuffled: same items, next-item targets of the new order
        full = torch.cat([inputs, targets[-1:]])
        assert sorted(full.tolist()) == seq.tolist() and torch.equal(targets, full[1:]) and (full != seq).sum() <= 3


@pytest.mark.parametrize("name", ["svae", "contrastvae"])
def test_scores_do_not_depend_on_padding(name):
    torch.manual_seed(0)
    model, _ = build_model(name, {"hidden": 16}, n_items=9, max_len=8)
    model.eval()
    short = torch.tensor([[3, 4, 5], [0, 1, 2]])
    padded = torch.cat([torch.zeros(2, 4, dtype=torch.long), short], dim=1)
    scores = model.score(short)
    assert scores.shape == (2, 10)
    torch.testing.assert_close(model.score(padded), scores, atol=1e-5, rtol=1e-5)


def test_contrastvae_data_view_never_scores_the_mask_token():
    model, _ = build_model("contrastvae", {"hidden": 16, "augmentation": "data"}, n_items=9, max_len=8)
    assert model.item_emb.num_embeddings == 11  # padding, 9 items, the mask token
    assert model.score(torch.tensor([[0, 1, 2]])).shape == (1, 10)
    inputs, targets = model.augmented_batch(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]]))
    assert inputs.shape == targets.shape and ((inputs > 0) == (targets > 0)).all()
    assert targets.max() <= 9  # targets are items, never the mask token


@pytest.mark.parametrize("name, overrides", [("svae", {}), ("contrastvae", {}), ("contrastvae", {"augmentation": "variational"}), ("contrastvae", {"augmentation": "data"})])
def test_diagnostics_and_kl_annealing_appear_in_the_run_record(name, overrides):
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset(users=60))
    model, cfg = build_model(name, {"hidden": 16, "beta_max": 0.2, "anneal_epochs": 2, **overrides}, n_items=split.n_items, max_len=split.max_len)
    result = fit(model, split, TrainConfig(epochs=3, eval_every=1, patience=5, batch_size=32), seed=0, progress=False)
    latent = cfg.get("latent", cfg["hidden"])
    assert len(result.curve) == 3
    for point in result.curve:
        assert isinstance(point["active_units"], int) and 0 <= point["active_units"] <= latent
        assert point["valid_kl"] >= 0 and math.isfinite(point["valid_kl"])
        assert point["kl"] >= 0
    assert [p["beta"] for p in result.curve] == pytest.approx([0.0, 0.1, 0.2])  # on_epoch_start drives the schedule


def test_collapsed_posterior_shows_as_zero_active_units():
    torch.manual_seed(0)
    split = leave_one_out(chain_dataset(users=60))
    model, _ = build_model("svae", {"hidden": 16}, n_items=split.n_items, max_len=split.max_len)
    assert latent_diagnostics(model, split.valid.inputs)["active_units"] > 0  # a fresh encoder varies
    with torch.no_grad():  # mu = 0 and log sigma^2 = 0 for every history: q = prior, KL = 0
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.zero_()
    collapsed = latent_diagnostics(model, split.valid.inputs)
    assert collapsed == {"valid_kl": 0.0, "active_units": 0}
