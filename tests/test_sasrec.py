import math

import pytest
import torch

from baselines.sasrec import SASRec, SASRecConfig, ss_loss
from benchmark.layers import attention_mask
from benchmark.model import Batch
from benchmark.splits import left_pad


def _model(loss="ce", **kw):
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(loss=loss, hidden=16, layers=2, heads=2, **kw), n_items=30, max_len=12)
    return m.eval()


def test_padding_is_inert():
    """Heavily padded batches give finite scores identical to the unpadded sequences'."""
    model = _model()
    seqs = [torch.tensor([3, 7, 9]), torch.tensor([1]), torch.tensor([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])]
    padded = left_pad([s.numpy() for s in seqs], 12)  # rows 0 and 1 are mostly padding
    with torch.no_grad():
        batch_scores = model.score(padded)
        for i, s in enumerate(seqs):
            alone = model.score(s[None])  # cut to its own length: no padding at all
            assert torch.isfinite(batch_scores[i]).all()
            torch.testing.assert_close(batch_scores[i], alone[0], rtol=1e-5, atol=1e-5)


def test_scoring_runs_only_the_last_position_through_the_last_block():
    model = _model()
    seqs = left_pad([[3, 7, 9], [1], list(range(4, 16))], 12)
    keep = seqs > 0
    x = torch.randn(3, 12, 16)
    mask = attention_mask(keep, causal=True)
    with torch.no_grad():
        full = model.encoder(x, keep, mask)[:, -1]
        torch.testing.assert_close(model.encoder.forward_last(x, keep, mask), full)
        scores = model.score(seqs)
        torch.testing.assert_close(scores[:, 1:], (model.hidden_states(seqs)[:, -1] @ model.item_emb.weight.T)[:, 1:])


def test_padding_is_inert_in_training_mode_gradients():
    model = _model().train()
    inputs = left_pad([torch.tensor([2, 3]).numpy()], 12)
    targets = left_pad([torch.tensor([3, 4]).numpy()], 12)
    loss, _ = model.loss(Batch(inputs, targets, torch.tensor([0])))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ce_loss_is_full_softmax_over_real_positions():
    model = _model(dropout=0.0)
    inputs = left_pad([torch.tensor([2, 3, 5]).numpy()], 5)
    targets = left_pad([torch.tensor([3, 5, 8]).numpy()], 5)
    loss, _ = model.loss(Batch(inputs, targets, torch.tensor([0])))
    h = model.hidden_states(inputs)[0, -3:]  # the three real positions
    logits = h @ model.item_emb.weight[1:].T  # items 1..30 only
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([3, 5, 8]) - 1)
    torch.testing.assert_close(loss, expected)


def test_bce_negatives_never_equal_the_positive():
    model = _model(loss="bce", dropout=0.0)
    torch.manual_seed(1)
    pos = torch.randint(1, 31, (20000,))
    neg = torch.randint(1, model.n_items, pos.shape)
    neg = neg + (neg >= pos).long()
    assert not (neg == pos).any() and neg.min() >= 1 and neg.max() <= 30


def test_config_rejects_impossible_settings():
    with pytest.raises(ValueError):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="divisible"):
        SASRec(SASRecConfig(hidden=10, heads=3), n_items=5, max_len=4)
    with pytest.raises(ValueError, match="negatives 0 must be at least 1"):
        SASRecConfig(loss="ss", negatives=0)
    with pytest.raises(ValueError, match="t 1.5"):
        SASRecConfig(loss="ss", t=1.5)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_ss_loss_matches_a_hand_computed_case():
    """4 items, d = 2; sequence 0 has one padded and one real position (negatives 2 and 3), sequence 1
    two real positions (negatives 2 and 4). Position (1, 0)'s target 2 is also one of its sequence's
    negatives (an accidental hit), which must leave its softmax and its gBCE sum; the padded position
    must leave the mean."""
    weight = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    h = torch.tensor([[[9.0, 9.0], [1.0, 2.0]], [[2.0, -1.0], [0.0, 1.0]]], dtype=torch.float64)  # (B=2, L=2, d=2)
    targets = torch.tensor([[0, 1], [2, 3]])
    neg = torch.tensor([[2, 3], [2, 4]])
    # (0, 1): target logit 1, negatives at 2 and 3; (1, 0): target logit -1, negative 4 at -2 (2 is the
    # hit); (1, 1): target logit 1, negatives at 1 and 0
    softmax = (
        math.log(math.e**1 + math.e**2 + math.e**3) - 1
        + math.log(math.e**-1 + math.e**-2) + 1
        + math.log(math.e**1 + math.e**1 + math.e**0) - 1
    ) / 3
    torch.testing.assert_close(ss_loss(h, weight, targets, neg, n_items=4), torch.tensor(softmax, dtype=torch.float64))
    # gBCE, t = 0.5: alpha = k / (n - 1) = 2/3, beta = alpha (t (1 - 1/alpha) + 1/alpha) = 5/6
    beta = 5 / 6
    a = -(beta * _log_sigmoid(1) + _log_sigmoid(-2) + _log_sigmoid(-3)) / 3
    b = -(beta * _log_sigmoid(-1) + _log_sigmoid(2)) / 3
    c = -(beta * _log_sigmoid(1) + _log_sigmoid(-1) + _log_sigmoid(0)) / 3
    torch.testing.assert_close(ss_loss(h, weight, targets, neg, n_items=4, t=0.5), torch.tensor((a + b + c) / 3, dtype=torch.float64))


def test_ss_negatives_are_drawn_per_sequence():
    """Each sequence of a batch gets its own k negatives (the batch does not share one set): with the
    random draw replayed, the model's loss equals ss_loss on those (B, k) negatives and differs from
    the loss with sequence 0's negatives given to every sequence."""
    model = SASRec(SASRecConfig(loss="ss", hidden=8, layers=1, heads=1, dropout=0.0, negatives=5), n_items=50, max_len=6).eval()
    inputs = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9], [0, 0, 10, 11]])
    targets = torch.tensor([[0, 4, 5, 6], [7, 8, 9, 10], [0, 0, 11, 12]])
    batch = Batch(inputs=inputs, targets=targets, users=torch.arange(3))
    torch.manual_seed(0)
    loss, _ = model.loss(batch)
    torch.manual_seed(0)
    neg = torch.randint(1, 51, (3, 5))
    assert len({tuple(row) for row in neg.tolist()}) == 3
    h = model.hidden_states(inputs)
    torch.testing.assert_close(loss, ss_loss(h, model.item_emb.weight, targets, neg, 50))
    assert not torch.allclose(loss, ss_loss(h, model.item_emb.weight, targets, neg[:1].expand(3, -1), 50))


def test_table_dropout_is_one_draw_for_the_input_and_the_scores():
    """With `table_dropout`, a training step drops out the item table once and uses that table both
    to look up the inputs and to score targets and negatives; evaluation uses the plain table."""
    model = SASRec(SASRecConfig(loss="ss", hidden=8, layers=1, heads=1, dropout=0.0, negatives=5, table_dropout=0.5), n_items=50, max_len=6).train()
    inputs = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    targets = torch.tensor([[0, 4, 5, 6], [7, 8, 9, 10]])
    batch = Batch(inputs=inputs, targets=targets, users=torch.arange(2))
    torch.manual_seed(0)
    loss, _ = model.loss(batch)
    torch.manual_seed(0)
    table = torch.nn.functional.dropout(model.item_emb.weight, 0.5, True)
    neg = torch.randint(1, 51, (2, 5))
    assert ((table == 0) | torch.isclose(table, 2 * model.item_emb.weight)).all() and 0.3 < (table[1:] == 0).float().mean() < 0.7
    torch.testing.assert_close(loss, ss_loss(model.hidden_states(inputs, table=table), table, targets, neg, 50))
    other = torch.nn.functional.dropout(model.item_emb.weight, 0.5, True)  # the scores from a second draw
    assert not torch.allclose(loss, ss_loss(model.hidden_states(inputs, table=table), other, targets, neg, 50))
    model.eval()
    assert model.item_table() is model.item_emb.weight


def test_unscaled_input_equals_scaled_input_of_a_table_divided_by_sqrt_d():
    plain, unscaled = (SASRec(SASRecConfig(hidden=16, layers=1, heads=1, scale_input=s), n_items=30, max_len=8).eval() for s in (True, False))
    unscaled.load_state_dict(plain.state_dict())
    seqs = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        scaled_h = plain.hidden_states(seqs, table=plain.item_emb.weight / 4)  # sqrt(16) = 4: exact in floats
        assert torch.equal(unscaled.hidden_states(seqs), scaled_h)
        assert not torch.allclose(plain.hidden_states(seqs), scaled_h)


def test_xavier_init_sets_every_matrix_and_keeps_the_padding_row_zero():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden=64, layers=1, heads=1, init="xavier"), n_items=3000, max_len=50)
    items = model.item_emb.weight
    assert torch.equal(items[0], torch.zeros(64))
    assert abs(items[1:].std().item() / math.sqrt(2 / (3001 + 64)) - 1) < 0.05  # normal(0.02) would be 0.02 / 0.0255
    assert abs(model.pos_emb.weight.std().item() / math.sqrt(2 / (50 + 64)) - 1) < 0.1
    with pytest.raises(ValueError, match="table_dropout"):
        SASRecConfig(table_dropout=1.0)


def test_the_authors_block_is_rectools_layer_computed_independently():
    """`block = "sasrec"`: RecTools' SASRecTransformerLayer written out with torch's own
    MultiheadAttention on the block's weights (eval mode): q = LN(x), x = q + MHA(q, x, x),
    f = LN'(x), out = f + W2 ReLU(W1 f)."""
    from benchmark.layers import SASRecBlock

    torch.manual_seed(0)
    d, heads, L = 16, 2, 6
    block = SASRecBlock(d, heads, dropout=0.3).eval()
    for p in block.parameters():  # LayerNorms away from identity, so that a swapped norm shows
        torch.nn.init.normal_(p, std=0.3)
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    mha.in_proj_weight.data, mha.in_proj_bias.data = block.attn.qkv.weight.data, block.attn.qkv.bias.data
    mha.out_proj.weight.data, mha.out_proj.bias.data = block.attn.out.weight.data, block.attn.out.bias.data
    x = torch.randn(3, L, d)
    with torch.no_grad():
        q = block.ln_q(x)
        x1 = q + mha(q, x, x, attn_mask=~torch.ones(L, L, dtype=torch.bool).tril(), need_weights=False)[0]
        f = block.ln_ff(x1)
        expected = f + block.ffn[3](torch.relu(block.ffn[0](f)))
        mask = attention_mask(torch.ones(3, L, dtype=torch.bool), causal=True)
        torch.testing.assert_close(block(x, mask), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block(x, mask, tail=2), expected[:, -2:], rtol=1e-5, atol=1e-5)


def test_attend_padding_scores_a_sequence_alike_in_any_batch_and_reads_the_padding():
    model = _model(attend_padding=True, block="sasrec")
    plain = SASRec(SASRecConfig(loss="ce", hidden=16, layers=2, heads=2, block="sasrec"), n_items=30, max_len=12).eval()
    plain.load_state_dict(model.state_dict())  # the same parameters
    short = torch.tensor([[3, 7, 9]])
    batch = left_pad([[3, 7, 9], list(range(4, 16))], 12)
    with torch.no_grad():
        torch.testing.assert_close(model.score(short)[0], model.score(batch)[0], rtol=1e-5, atol=1e-5)  # the window is always max_len
        assert model.hidden_states(short).shape == (1, 3, 16)  # training states stay aligned with the batch's targets
        torch.testing.assert_close(model.hidden_states(short)[0, -1], model.hidden_states(batch)[0, -1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model.score(short), plain.score(short), atol=1e-4)  # the nine padding positions are attended to
        full = left_pad([list(range(4, 16))], 12)  # no padding: the switch changes nothing
        torch.testing.assert_close(model.score(full), plain.score(full), rtol=1e-5, atol=1e-5)
