"""Pop: scores are the training counts, the same for every user, and never see held-out items."""
import numpy as np
import torch

from benchmark.data import SequenceData
from benchmark.registry import build_model
from benchmark.splits import leave_one_out
from benchmark.train import NOT_TRAINED, TrainConfig, evaluate, fit


def held_out_dataset() -> SequenceData:
    # Training parts (all but the last two items): 1 1 2 | 2 3 | 1 2 2 3; items 4..7 are only ever
    # validation or test targets, so Pop must score them 0.
    seqs = [[1, 1, 2, 4, 5], [2, 3, 6, 7], [1, 2, 2, 3, 4, 7]]
    return SequenceData(name="tiny", format="sequences", path="<tiny>", sha256="0" * 64, sequences=tuple(np.array(s) for s in seqs), n_items=7, max_len=10)


def test_pop_scores_are_training_counts_for_every_user():
    split = leave_one_out(held_out_dataset())
    model, _ = build_model("pop", n_items=split.n_items, max_len=split.max_len)
    result = fit(model, split, TrainConfig(), seed=0, progress=False)
    assert result.stopped == NOT_TRAINED and not model.trainable
    scores = model.score(split.valid.inputs)
    expected = torch.tensor([0, 3, 4, 2, 0, 0, 0, 0], dtype=torch.float32)  # item 0 = padding
    assert scores.shape == (3, 8)
    assert torch.equal(scores, expected.expand(3, -1))


def test_pop_never_counts_validation_or_test_items():
    split = leave_one_out(held_out_dataset())
    model, _ = build_model("pop", n_items=split.n_items, max_len=split.max_len)
    fit(model, split, TrainConfig(), seed=0, progress=False)
    held_out = torch.cat([split.valid.targets, split.test.targets]).unique()
    assert held_out.tolist() == [4, 5, 6, 7]
    assert (model.counts[held_out] == 0).all()
    # Each validation target (4 or 6) ties with the 3 other unseen items below items 1-3: pessimistic rank 6.
    assert evaluate(model, split.valid)["ranks"].tolist() == [6, 6, 6]
