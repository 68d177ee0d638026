"""Golden values of the protocol's metrics, computed by hand."""
import math

import numpy as np
import pytest
import torch

from benchmark.metrics import metrics_from_ranks, per_user_metrics, rank_metrics, ranks_of


def test_hand_computed_ranks_and_metrics():
    # Items 1..5 (column 0 is padding and must be ignored even when it holds the top score).
    scores = torch.tensor(
        [
            [9.0, 0.1, 0.9, 0.5, 0.3, 0.2],  # target 2 has the top score -> rank 0
            [9.0, 0.1, 0.9, 0.5, 0.3, 0.2],  # target 4: items 2, 3 ahead -> rank 2
            [0.0, 0.5, 0.5, 0.5, 0.1, 0.0],  # target 1 tied with items 2, 3 -> pessimistic rank 2
        ]
    )
    out = rank_metrics(scores, [2, 4, 1], ks=(1, 3))
    assert out["ranks"].tolist() == [0, 2, 2]
    assert out["HR@1"] == pytest.approx(1 / 3)
    assert out["HR@3"] == pytest.approx(1.0)
    assert out["NDCG@3"] == pytest.approx((1 + 2 / math.log2(4)) / 3)  # ranks 0, 2, 2
    assert out["MRR@3"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert out["MRR@1"] == pytest.approx(1 / 3)


def test_constant_scores_rank_every_target_last():
    scores = torch.ones(4, 12)  # 11 items
    out = rank_metrics(scores, [1, 5, 7, 10], ks=(5, 10))
    assert out["ranks"].tolist() == [10, 10, 10, 10]
    assert all(out[f"{m}@{k}"] == 0.0 for m in ("HR", "NDCG", "MRR") for k in (5, 10))


def test_k_larger_than_catalogue_counts_every_target():
    scores = torch.ones(2, 4)  # 3 items, all tied: rank 2
    out = rank_metrics(scores, [1, 3], ks=(20,))
    assert out["HR@20"] == 1.0
    assert out["NDCG@20"] == pytest.approx(1 / math.log2(4))
    assert out["MRR@20"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_are_errors(bad):
    scores = torch.rand(2, 6)
    scores[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        ranks_of(scores, torch.tensor([1, 2]))


def test_padding_column_may_hold_anything():
    scores = torch.tensor([[float("nan"), 0.2, 0.1]])
    assert ranks_of(scores, torch.tensor([1])).tolist() == [0]


def test_target_outside_catalogue_is_an_error():
    with pytest.raises(ValueError, match="item ids"):
        ranks_of(torch.rand(1, 4), torch.tensor([0]))


def test_history_masking_removes_history_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5]])
    # target 4 has items 1, 2, 3 ahead; items 1 and 3 are history -> only item 2 remains ahead
    assert ranks_of(scores, torch.tensor([4]), torch.tensor([[1, 3, 0]])).tolist() == [1]
    # a repeated item: the target is in the history too and still counts
    assert ranks_of(scores, torch.tensor([4]), [[4, 1]]).tolist() == [2]
    # masking a tie partner breaks the pessimistic tie
    tied = torch.tensor([[0.0, 0.5, 0.5]])
    assert ranks_of(tied, torch.tensor([1])).tolist() == [1]
    assert ranks_of(tied, torch.tensor([1]), [[2]]).tolist() == [0]


def test_per_user_metrics_match_means():
    ranks = np.array([0, 3, 12, 40])
    per = per_user_metrics(ranks, (10,))
    assert per["HR@10"].tolist() == [1, 1, 0, 0]
    assert per["NDCG@10"][1] == pytest.approx(1 / math.log2(5))
    means = metrics_from_ranks(ranks, (10,))
    assert means["NDCG@10"] == pytest.approx(per["NDCG@10"].mean())
    assert set(means) == {"HR@10", "NDCG@10", "MRR@10"}


def test_numpy_and_tensor_inputs_agree():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30))
    targets = rng.integers(1, 30, size=50)
    a = rank_metrics(scores, targets)
    b = rank_metrics(torch.tensor(scores), torch.tensor(targets))
    assert a["ranks"].tolist() == b["ranks"].tolist()
    # brute force: pessimistic rank = number of other real items scoring >= the target
    brute = [(scores[i, 1:] >= scores[i, t]).sum() - 1 for i, t in enumerate(targets)]
    assert a["ranks"].tolist() == brute


def test_one_pass_masked_ranks_equal_masking_by_hand():
    """The masked rank from one pass equals ranking after removing the history columns by hand,
    with ties, repeated history items, padding and the target inside the history."""
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.integers(0, 6, size=(200, 16)).astype(np.float32))  # many ties
    targets = torch.tensor(rng.integers(1, 16, size=200))
    history = torch.tensor(rng.integers(0, 16, size=(200, 9)))  # 0 = padding, repeats, target at times
    masked = ranks_of(scores, targets, history)
    for i in range(200):
        drop = set(history[i].tolist()) - {0, int(targets[i])}
        keep = [j for j in range(1, 16) if j not in drop]
        expected = sum(scores[i, j] >= scores[i, targets[i]] for j in keep) - 1
        assert masked[i] == expected
