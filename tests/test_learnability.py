"""Every registered model must learn two deterministic tasks. A model that cannot is broken,
whatever its benchmark numbers say.

- "chain": next item = a fixed permutation of the last one.
- "skip-chain": next item = a fixed permutation of the item two back; the last item says nothing
  about it (`tests.synthetic.skip_chain_dataset`).
DiffRec, with the last item in its slot, learned the first task even when broken. Four breakages,
each applied by hand and measured (validation HR@10 on the skip chain, hidden 32, 30 epochs;
correct code 0.93), and the end-to-end test that now fails for each:
- the slot cannot attend to the history: 0.31 here (the chain: 1.00);
- q_sample uses abar_{n-1}: 0.93 with the defaults, whose slot at step N carries too little signal
  for it to matter; the one-step variant below (N = 1, h^1 in the slot as is) fails, because the
  broken forward process puts the clean target in its slot in training and inference gives it
  noise;
- the training target never enters the slot: 0.997 here (the model reads the history alone), but
  `test_diffrec_reads_its_noisy_target` fails: cross-entropy at step 1 equals that at step N;
- inference positions shifted by one: 0.93 here and on every variant; a uniform shift keeps every
  relative position, and training sees the slot at every absolute position, so no task of this
  kind can tell. `tests/test_diffrec_model.py::test_training_slot_equals_inference_slot_on_the_same_window`
  catches it."""
import pytest
import torch

from benchmark.registry import MODELS, build_model
from benchmark.splits import leave_one_out
from benchmark.train import TrainConfig, evaluate, fit
from tests.synthetic import chain_dataset, skip_chain_dataset

TASKS = {"chain": chain_dataset, "skip-chain": skip_chain_dataset}
# Validation HR@10 to reach. On the skip chain the models reach 0.92-1.00 here (ContrastVAE 0.92,
# DiffRec 0.93) and the broken ones 0.25-0.31, chance being 10 / 40.
PASS = {"chain": 0.9, "skip-chain": 0.8}

# Models that need other settings to learn the chains quickly on CPU; the defaults otherwise.
TRAIN = {
    "default": dict(epochs=30, eval_every=5, patience=3, batch_size=32, lr=3e-3),
    "diffrec-paper": dict(epochs=60, eval_every=5, patience=20, batch_size=32, lr=3e-3),
}
# diffrec-paper at its own defaults (E(v) unscaled beside the raw z_n, MSE weight 1) does not learn
# the tasks quickly: skip chain, 60 epochs, hidden 64, dropout 0.1: HR@10 0.60; with MSE weight 0.1
# 0.57; with item_scale "sqrt_d" 0.66; with both 1.00; with item_scale "unit" 0.91 (hidden 32 at its
# defaults: 0.29, and 0.33 on the chain). These values are in its search space.
MODEL = {"default": dict(hidden=32), "diffrec-paper": dict(hidden=64, item_scale="sqrt_d", mse_weight=0.1, dropout=0.1)}
NOT_LEARNING = {"pop"}  # popularity cannot follow a chain by design

# Settings that train another way: DiffRec's whole-sequence noising (history noised with the target,
# scored with the strided chain), which stays at popularity's level on toys; here it must still learn.
SEQUENCE_NOISE = ("diffrec", {"noise": "sequence", "sampler": "strided"})
# One diffusion step with h^1 entering the slot as is: pure noise in training and at inference
# (abar_1 = 4.3e-5), so it must learn as SASRec does; a forward process at another noise level than
# the sampler's shows up as a slot that carries the target in training only.
ONE_STEP = ("diffrec", {"steps": 1, "slot_scale": "none", "schedule": "linear-continuous"})
RECTOOLS = ("sasrec-ss", {"block": "sasrec", "attend_padding": True, "table_dropout": 0.2, "scale_input": False, "init": "xavier"})  # RecTools' SASRec (issue 23)
VARIANTS = [(name, {}) for name in sorted(set(MODELS) - NOT_LEARNING)] + [SEQUENCE_NOISE, ONE_STEP, RECTOOLS]
# Whole-sequence noising does not learn the skip chain: validation HR@10 0.25-0.31 after 30 or 200
# epochs (chance is 10 / 40); not investigated further here. Strict: a fix shows up as a failure.
FAILS = {"skip-chain-diffrec-sequence-strided": "whole-sequence noising does not learn the skip chain (HR@10 0.25-0.31)"}


def case_id(task: str, name: str, variant: dict) -> str:
    return f"{task}-{name}" + "".join(f"-{v}" for v in variant.values())


CASES = [
    pytest.param(task, name, variant, id=case_id(task, name, variant), marks=[pytest.mark.xfail(strict=True, reason=FAILS[case_id(task, name, variant)])] if case_id(task, name, variant) in FAILS else [])
    for task in TASKS
    for name, variant in VARIANTS
]


@pytest.mark.parametrize("task, name, variant", CASES)
def test_learns_deterministic_chain(task, name, variant):
    torch.set_num_threads(1)
    split = leave_one_out(TASKS[task]())
    model, _ = build_model(name, {**MODEL.get(name, MODEL["default"]), **variant}, n_items=split.n_items, max_len=split.max_len, seed=0)
    fit(model, split, TrainConfig(**TRAIN.get(name, TRAIN["default"])), seed=0, progress=False)
    hr10 = evaluate(model, split.valid)["metrics"]["HR@10"]
    assert hr10 >= PASS[task], f"{name} reached validation HR@10 {hr10:.3f} on the {task}"


def test_diffrec_reads_its_noisy_target():
    """Trained on the skip chain, DiffRec's cross-entropy with the true target in its slot must
    fall as the noise does (`diffrec.profile`): a denoiser that never saw its target would rank from
    the history alone, which the tasks above cannot tell apart. Measured: 1.02 at n = 1 against 2.01
    at n = N; with the target kept out of the training slot 1.38 against 1.37."""
    from diffrec.profile import step_profile

    torch.set_num_threads(1)
    split = leave_one_out(skip_chain_dataset())
    model, _ = build_model("diffrec", MODEL["default"], n_items=split.n_items, max_len=split.max_len, seed=0)
    fit(model, split, TrainConfig(**TRAIN["default"]), seed=0, progress=False)
    profile = step_profile(model, split.valid)
    assert profile[0]["ce"] < 0.75 * profile[-1]["ce"], f"cross-entropy {profile[0]['ce']:.3f} at n = 1 against {profile[-1]['ce']:.3f} at n = N"
