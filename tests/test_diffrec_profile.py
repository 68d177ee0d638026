"""diffrec.profile: the per-step loss of a trained DiffRec, read from a run's checkpoint."""
import json
import math

import numpy as np

from benchmark.data import SequenceData
from benchmark.registry import build_model
from benchmark.run import run_suite
from benchmark.splits import leave_one_out
from benchmark.suite import resolve_suite
from benchmark.train import TrainConfig, fit
from diffrec import profile
from tests.synthetic import chain_dataset, write_sequences


def test_a_model_whose_history_says_nothing_reads_the_answer_from_a_clean_slot():
    """Random sequences: only the slot can tell the target, so the loss must rise with n from
    well below ln(V) (slot nearly clean) to ln(V) (slot = noise)."""
    rng = np.random.default_rng(0)
    seqs = tuple(rng.integers(1, 21, size=int(rng.integers(6, 12))).astype(np.int64) for _ in range(300))
    split = leave_one_out(SequenceData("random", "sequences", "<random>", "0" * 64, seqs, 20, 12), 12)
    model, _ = build_model("diffrec", {"hidden": 16, "steps": 10, "dropout": 0.0}, n_items=20, max_len=12, seed=0)
    fit(model, split, TrainConfig(epochs=15, eval_every=15, batch_size=32, lr=3e-3), seed=0, progress=False)
    rows = profile.step_profile(model, split.valid)
    assert [r["n"] for r in rows] == list(range(1, 11))
    assert all(a["abar"] > b["abar"] for a, b in zip(rows, rows[1:]))
    assert rows[0]["ce"] < rows[-1]["ce"] - 0.5
    assert abs(rows[-1]["ce"] - math.log(20)) < 0.2


def test_cli_reads_the_records_checkpoint_or_says_it_has_none(tmp_path, capsys):
    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=12, users=60))
    raw = {
        "models": ["diffrec"],
        "train": {"epochs": 1, "batch_size": 32},
        "model": {"all": {"hidden": 16, "steps": 4}},
        "ablation": [{"model": "diffrec", "points": [{"sampler": "strided"}, {"steps": 5}]}],
    }
    suite = resolve_suite("t", raw, files=[(str(tmp_path / "chain.txt"), "sequences")])
    run_suite(suite, out=tmp_path / "out", progress=False)
    records = {json.loads(p.read_text())["tag"]: p for p in (tmp_path / "out" / "runs").glob("*.json")}
    capsys.readouterr()
    assert profile.main([str(records["sampler=strided"]), "--users", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "20 validation users, N = 4" in lines[0] and len(lines) == 2 + 4
    assert profile.main([str(records["steps=5"])]) == 2  # a training of its own: no checkpoint kept
    assert "no checkpoint for this record's training" in capsys.readouterr().err
