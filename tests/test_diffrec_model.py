import dataclasses

import pytest
import torch

from benchmark.config import ConfigError, build_config
from benchmark.model import Batch
from diffrec.model import DiffRec, DiffRecConfig

N_ITEMS, MAX_LEN = 30, 8


def make(**kw):
    torch.manual_seed(0)
    return DiffRec(DiffRecConfig(hidden=16, steps=10, dropout=0.0, **kw), n_items=N_ITEMS, max_len=MAX_LEN)


def batch():
    inputs = torch.tensor([[0, 0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 9, 10]])
    targets = torch.tensor([[0, 0, 0, 0, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 0, 10, 11]])
    return Batch(inputs, targets, torch.arange(3))


def capture_dsr_calls(model):
    calls = []
    model.dsr.register_forward_hook(lambda mod, args, out: calls.append((args, out)))
    return calls


@pytest.mark.parametrize("noise", ["target", "sequence"])
def test_target_noising_leaves_history_bit_identical(noise):
    model = make(noise=noise, sampler="strided")
    calls = capture_dsr_calls(model)
    loss, logs = model.loss(batch())
    assert torch.isfinite(loss) and {"mse", "ce"} <= set(logs)
    history = calls[0][0][0]
    clean = model.embed(batch().inputs[:, -(MAX_LEN - 1) :])
    assert torch.equal(history, clean) == (noise == "target")
    model.eval()
    encoded = []
    encode = model.dsr.encode_history
    model.dsr.encode_history = lambda history, *args: encoded.append(history) or encode(history, *args)
    model.score(batch().inputs, torch.Generator().manual_seed(0))
    # target noise: the history is encoded once, as is; sequence noise: every call gets it noised
    inference_history = encoded[0] if noise == "target" else calls[-1][0][0]
    assert torch.equal(inference_history, model.embed(batch().inputs[:, -(MAX_LEN - 1) :])) == (noise == "target")


def test_training_slot_equals_inference_slot_on_the_same_window():
    """The last training slot sees exactly what inference sees: same history, positions and network.
    (The full pass at inference; the history encoded once gives the same slots, tested below.)"""
    model = make(step_tokens="all").eval()
    calls = capture_dsr_calls(model)
    with torch.no_grad():
        model.loss(batch())
        model.score(batch().inputs, torch.Generator().manual_seed(0))
    (h_t, keep_t, noisy_t, cols_t, n_t, pos_t), out_t = calls[0]
    (h_s, keep_s, _, cols_s, _, pos_s), _ = calls[1]
    assert torch.equal(h_t, h_s) and torch.equal(keep_t, keep_s)  # training drops the oldest column, like inference
    again = model.dsr(h_s, keep_s, noisy_t[:, -1:], cols_s, n_t, pos_s)[:, 0]
    torch.testing.assert_close(again, out_t[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ancestral", "strided", "average"])
def test_scores_are_reproducible_under_a_seeded_generator(sampler):
    # slot_scale "none": the slot reads h^N itself; with "signal" the one-call samplers see sqrt(abar_N) h^N,
    # about 4e-9 h^N here, so their draws change nothing beyond float error and could not show the seed
    model = make(sampler=sampler, sampler_steps=3, samples=2, slot_scale="none").eval()
    seqs = batch().inputs
    a = model.score(seqs, torch.Generator().manual_seed(0))
    b = model.score(seqs, torch.Generator().manual_seed(0))
    c = model.score(seqs, torch.Generator().manual_seed(1))
    assert a.shape == (3, N_ITEMS + 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a[:, 1:]).all()


def test_average_sampler_equals_mean_of_one_step_predictions():
    model = make(samples=3).eval()
    one = make(samples=1).eval()
    one.load_state_dict(model.state_dict())
    seqs = batch().inputs
    g = torch.Generator().manual_seed(5)
    expected = torch.stack([one.score(seqs, g).exp() for _ in range(3)]).mean(0).log()
    torch.testing.assert_close(model.score(seqs, torch.Generator().manual_seed(5)), expected)


def test_padding_is_inert_in_scoring():
    model = make().eval()
    seqs = batch().inputs
    # the same short row alone (cut to its length) scores like inside the padded batch, with the same noise
    alone = model.score(seqs[2:, -2:], torch.Generator().manual_seed(0))
    padded = model.score(seqs[2:], torch.Generator().manual_seed(0))
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_importance_sampling_records_losses_and_weights_the_loss():
    model = make(step_sampling="importance")
    for _ in range(100):
        model.loss(batch())
    assert int(model.step_sampler.counts.sum()) == 300  # one step per sequence per call
    assert model.step_sampler.warmed_up()
    sample = model.step_sampler.sample
    model.step_sampler.update = lambda n, losses: None  # keep the distribution fixed for the comparison
    torch.manual_seed(1)
    plain, _ = model.loss(batch())
    model.step_sampler.sample = lambda b, device=None: (lambda n, w: (n, 2 * w))(*sample(b, device))
    torch.manual_seed(1)
    doubled, _ = model.loss(batch())
    torch.testing.assert_close(doubled, 2 * plain)


def test_rounding_ties_output_to_item_table_and_bias_is_optional():
    tied, free = make(), make(tie_rounding=False, rounding_bias=True)
    assert tied.rounding_layer() == (tied.item_emb.weight, None)
    assert free.rounding_layer() == (free.out.weight, free.bias) and free.bias is not None


def test_bad_configs_are_rejected():
    for bad in ({"noise": "history"}, {"sampler": "dpm"}, {"steps": 0}, {"samples": 0}, {"mse_weight": -1}, {"hidden": 15}, {"beta_end": 2.0}):
        with pytest.raises(ConfigError):
            build_config(DiffRecConfig, bad)
    assert dataclasses.asdict(build_config(DiffRecConfig, {"steps": "200"}))["steps"] == 200
    # a chain that does not end in noise: sampling from N(0, I) at step N would not match training
    with pytest.raises(ConfigError, match=r"steps=1 ends at abar_N = 0.9, not pure noise"):
        build_config(DiffRecConfig, {"steps": 1, "schedule": "linear"})
    for ok in ({"steps": 1, "schedule": "linear-continuous"}, {"steps": 2}, {"steps": 1, "schedule": "cosine"}, {"steps": 1, "schedule": "sqrt"}):
        build_config(DiffRecConfig, ok)
    # sequence noise with a sampler that denoises at step N only, where the history is noise as well
    for bad in ({"sampler": "average"}, {"sampler": "strided", "sampler_steps": 1}):
        with pytest.raises(ConfigError, match=r"noise='sequence' needs a sampler .* denoises at step N only"):
            build_config(DiffRecConfig, {"noise": "sequence", **bad})
    for ok in ({"sampler": "ancestral"}, {"sampler": "strided", "sampler_steps": 2}):
        build_config(DiffRecConfig, {"noise": "sequence", **ok})


def test_registered_and_built_from_overrides():
    from benchmark.registry import build_model

    model, cfg = build_model("diffrec", {"hidden": 16, "sampler": "strided", "steps": "20"}, n_items=N_ITEMS, max_len=MAX_LEN)
    assert isinstance(model, DiffRec) and cfg["sampler"] == "strided" and cfg["steps"] == 20
    assert model.schedule.steps == 20


@pytest.mark.parametrize("sampler", ["ancestral", "strided", "average"])
def test_history_encoded_once_scores_like_the_full_pass(sampler, monkeypatch):
    model = make(step_tokens="slot", slot_context="last", sampler=sampler, sampler_steps=3, samples=3).eval()
    assert model.history_is_static and not make(noise="sequence", step_tokens="slot", sampler="ancestral").history_is_static
    seqs = batch().inputs
    calls = capture_dsr_calls(model)
    cached = model.score(seqs, torch.Generator().manual_seed(0))
    assert calls == []  # no full pass: the history was encoded once, the steps ran the slots alone
    monkeypatch.setattr(DiffRec, "history_is_static", property(lambda self: False))
    full = model.score(seqs, torch.Generator().manual_seed(0))
    assert calls  # now every step was a full pass
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_slot_scale_signal_multiplies_h_n_by_sqrt_abar_n():
    h, n = torch.randn(2, 3, 16), torch.tensor([1, 10])
    scaled = make(slot_scale="signal")
    expected = h * scaled.schedule.sqrt_abar[n].float()[:, None, None]
    torch.testing.assert_close(scaled.slot_input(h, n, scaled.schedule), expected)
    assert torch.equal(make(slot_scale="none").slot_input(h, n, scaled.schedule), h)  # the paper's h^n
    assert float(scaled.schedule.sqrt_abar[10]) < 0.9  # the check above is not vacuous at N = 10


def test_training_never_reads_the_inference_keys():
    """The suite scores sampler ablations on one trained model (benchmark.suite): that is only
    sound while training is identical whatever the inference keys say."""
    from diffrec.model import INFERENCE_KEYS

    assert set(INFERENCE_KEYS) <= {f.name for f in dataclasses.fields(DiffRecConfig)}
    states = []
    for kw in ({}, {"sampler": "ancestral", "sampler_steps": 3, "samples": 7}, {"sampler": "strided", "sampler_steps": 2, "samples": 1}):
        assert set(kw) <= set(INFERENCE_KEYS)
        torch.manual_seed(1)
        model = DiffRec(DiffRecConfig(hidden=16, steps=10, dropout=0.1, step_sampling="importance", **kw), n_items=N_ITEMS, max_len=MAX_LEN)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(2)
        for _ in range(3):
            model.training_step(batch(), [opt])
        states.append(model.state_dict())
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_item_scale_switches_between_sasrec_scale_raw_embeddings_and_the_noise_scale():
    items = torch.tensor([1, 5, 9])
    scaled, raw, unit = make(item_scale="sqrt_d"), make(item_scale="one"), make(item_scale="unit", init_std=0.05)
    torch.testing.assert_close(scaled.embed(items), scaled.item_emb(items) * 4.0)  # sqrt(16)
    torch.testing.assert_close(raw.embed(items), raw.item_emb(items))
    torch.testing.assert_close(unit.embed(items), unit.item_emb(items) * 20.0)  # 1 / 0.05
    torch.manual_seed(0)
    vectors = DiffRec(DiffRecConfig(hidden=64, item_scale="unit"), n_items=500, max_len=MAX_LEN).embed(torch.arange(1, 501))
    assert 0.9 < float(vectors.detach().std()) < 1.1  # the forward noise's scale at initialisation


@pytest.mark.parametrize("transition", ["target", "all"])
def test_embedding_transition_on_every_token_noises_the_history_in_training_only(transition):
    model = make(transition=transition, beta0=0.25, step_tokens="all")
    calls = capture_dsr_calls(model)
    model.loss(batch())
    inputs = batch().inputs[:, -(MAX_LEN - 1) :]
    offset = (calls[0][0][0] - model.embed(inputs)).detach()[inputs > 0]  # (real tokens, d)
    if transition == "target":
        assert torch.equal(offset, torch.zeros_like(offset))
    else:  # h_i ~ N(E(v_i), beta0 I): variance 0.25 per coordinate
        assert float(offset.var()) == pytest.approx(0.25, rel=0.15)
    model.eval()
    model.score(batch().inputs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(calls[-1][0][0], model.embed(inputs))  # inference: the mean E(v)


def test_paper_form_is_the_same_model_with_the_paper_values():
    from benchmark.registry import build_model
    from benchmark.tune import search_space

    model, cfg = build_model("diffrec-paper", {"hidden": 16}, n_items=N_ITEMS, max_len=MAX_LEN)
    assert isinstance(model, DiffRec)
    assert (cfg["step_embedding"], cfg["step_tokens"], cfg["slot_input"], cfg["slot_scale"], cfg["slot_context"]) == ("raw", "all", "raw", "none", "none")
    assert (cfg["transition"], cfg["rounding_bias"], cfg["tie_rounding"], cfg["ce_weight"], cfg["h0_ce_weight"]) == ("all", True, False, 0.0, 1.0)
    W, b = model.rounding_layer()
    assert b is not None and W is not model.item_emb.weight
    assert cfg["schedule"] == build_model("diffrec", {}, n_items=N_ITEMS, max_len=MAX_LEN)[1]["schedule"] == "linear-continuous"
    space, origin = search_space("diffrec-paper")
    assert origin == "the registry entry of diffrec-paper" and space["hidden"] == ("choice", [64, 128, 256]) and "item_scale" in space
    loss, _ = model.loss(batch())
    assert torch.isfinite(loss)
