"""Leave-one-out splits: no validation or test position ever reaches a training input."""
import numpy as np
import pytest

from benchmark.data import DATASETS, load_dataset
from benchmark.splits import leave_one_out
from tests.synthetic import chain_dataset


def _rows(t):
    return [row[row > 0] for row in t.numpy()]


@pytest.fixture(scope="module", params=sorted(DATASETS))
def real_split(request):
    ds = load_dataset(request.param)
    return ds, leave_one_out(ds)


def test_no_valid_or_test_position_reaches_training(real_split):
    ds, split = real_split
    L = split.max_len
    for s, inp, tgt, vin, tin in zip(ds.sequences, _rows(split.train_inputs), _rows(split.train_targets), _rows(split.valid.inputs), _rows(split.test.inputs)):
        n = len(s)
        # training inputs/targets are exactly s_1..s_{n-3} / s_2..s_{n-2} (their last max_len positions)
        assert np.array_equal(inp, s[: n - 3][-L:]) and np.array_equal(tgt, s[1 : n - 2][-L:])
        assert np.array_equal(vin, s[: n - 2][-L:])  # the validation input ends before s_{n-1}
        assert np.array_equal(tin, s[: n - 1][-L:])
    assert np.array_equal(split.valid.targets.numpy(), [s[-2] for s in ds.sequences])
    assert np.array_equal(split.test.targets.numpy(), [s[-1] for s in ds.sequences])


def test_targets_never_in_training_rows_when_items_do_not_repeat(real_split):
    ds, split = real_split
    if ds.name == "yelp":
        pytest.skip("yelp repeats items: an earlier interaction with the same item is legitimate history")
    train = np.concatenate([split.train_inputs.numpy(), split.train_targets.numpy()], axis=1)
    valid, test = split.valid.targets.numpy()[:, None], split.test.targets.numpy()[:, None]
    assert not (train == valid).any() and not (train == test).any()
    assert not (split.valid.inputs.numpy() == test).any()  # the validation input never holds the test item


def test_history_holds_the_whole_prefix_even_beyond_max_len():
    ds = chain_dataset(users=20, min_len=30, max_len_items=40, max_len=8)
    split = leave_one_out(ds)
    for s, h, v in zip(ds.sequences, _rows(split.test.history), _rows(split.test.inputs)):
        assert np.array_equal(h, s[:-1]) and len(v) == 8


def test_user_slice_keeps_the_catalogue():
    ds = chain_dataset(users=50)
    split = leave_one_out(ds, users=10)
    assert split.n_users == 10 and split.n_items == ds.n_items


def test_yelp_repeats_stay_in_the_history_and_a_repeated_target_is_never_masked():
    """yelp is the only registered file whose sequences repeat items. The split is by position: the
    last interaction is the test target even when the user met that item before, and the earlier
    interaction stays in the history (and in training). The masked metric leaves out the distinct
    history items other than the target: a model that scores exactly the history items 1 ranks a
    repeated target first (masked) and every other target after all items but the history."""
    import torch

    from benchmark.metrics import ranks_unmasked_and_masked

    ds = load_dataset("yelp")
    split = leave_one_out(ds)
    hist, targets = split.test.history, split.test.targets
    scores = torch.zeros(len(targets), split.n_items + 1)
    scores.scatter_(1, hist, 1.0)
    scores[:, 0] = 0.0  # padding column (never ranked)
    unmasked, masked = ranks_unmasked_and_masked(scores, targets, hist)
    repeated = (hist == targets[:, None]).any(1)
    distinct = torch.tensor([len(set(h[h > 0].tolist())) for h in hist])
    assert 0 < int(repeated.sum()) < len(targets)  # some test targets repeat an earlier item, most do not
    assert (unmasked[repeated] == distinct[repeated] - 1).all() and (masked[repeated] == 0).all()
    rest = ~repeated
    assert (unmasked[rest] == split.n_items - 1).all() and (masked[rest] == split.n_items - 1 - distinct[rest]).all()
