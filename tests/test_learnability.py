"""Every registered model must learn a deterministic chain: next item = fixed function of the
previous one. A model that cannot is broken, whatever its benchmark numbers say."""
import pytest
import torch

from benchmark.registry import MODELS, build_model
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, evaluate, fit
from tests.synthetic import chain_dataset

# Models that need other settings to learn the chain quickly on CPU; the defaults otherwise.
TRAIN = {"default": dict(epochs=30, eval_every=5, patience=3, batch_size=32, lr=3e-3)}
MODEL = {"default": dict(hidden=32)}
NOT_LEARNING = {"pop"}  # popularity cannot follow a chain by design


# Settings that train another way: DiffRec's whole-sequence noising (history noised with the target,
# scored with the strided chain), which stays at popularity's level on toys; here it must still learn.
VARIANTS = [(name, {}) for name in sorted(set(MODELS) - NOT_LEARNING)] + [("diffrec", {"noise": "sequence", "sampler": "strided"})]


@pytest.mark.parametrize("name, variant", VARIANTS, ids=[name + "".join(f"-{v}" for v in variant.values()) for name, variant in VARIANTS])
def test_learns_deterministic_chain(name, variant):
    torch.set_num_threads(1)
    split = leave_one_out(chain_dataset())
    model, _ = build_model(name, {**MODEL.get(name, MODEL["default"]), **variant}, n_items=split.n_items, max_len=split.max_len)
    fit(model, split, TrainConfig(**TRAIN.get(name, TRAIN["default"])), seed=0, progress=False)
    hr10 = evaluate(model, split.valid)["metrics"]["HR@10"]
    assert hr10 >= 0.9, f"{name} reached validation HR@10 {hr10:.3f} on a deterministic chain"
