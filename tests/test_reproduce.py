"""benchmark.reproduce: a record re-run from its stored cell comes out identical; the metrics of a
committed record equal those recomputed from its per-user ranks; a perturbed metric, changed data
or a broken record are caught."""
import json
from pathlib import Path

import pytest
import torch

from benchmark import reproduce as reproduce_mod
from benchmark.records import PROJECT_ROOT
from benchmark.report import readme
from benchmark.reproduce import main as reproduce
from benchmark.run import main as run
from benchmark.suite import Cell

COMMITTED = PROJECT_ROOT / "results" / "runs"
POP = COMMITTED / "ml-100k__pop__default__s0__97e3aa21ea.json"
GPU = COMMITTED / "beauty__diffrec__noise=sequence,sampler=strided__s0__97c6b66a9f.json"  # made on an H200

TINY = """
datasets = ["ml-100k"]
models = ["sasrec-ce"]
[data]
users = 50
max_len = 20
[train]
epochs = 1
batch_size = 16
[model.all]
hidden = 8
[[ablation]]  # two sampler points share one training: the second cell reuses the first's model
model = "diffrec"
points = [{sampler = "strided"}, {sampler = "ancestral"}]
fixed = {steps = 5, sampler_steps = 2}
"""


def edited(record_path: Path, tmp_path: Path, change) -> Path:
    record = json.loads(record_path.read_text())
    change(record)
    path = tmp_path / record_path.name
    path.write_text(json.dumps(record))
    return path


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    """Records of a tiny suite run the README way: a SASRec-CE cell and two DiffRec sampler points
    scored on one shared training (one of them reused)."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.toml").write_text(TINY)
    assert run(["--suite", str(folder / "tiny.toml"), "--out", str(folder / "out"), "--threads", "1", "--no-progress", "--no-report"]) == 0
    return {json.loads(p.read_text())["model"] + ("-reused" if json.loads(p.read_text())["training"]["reused"] else ""): p for p in (folder / "out" / "runs").glob("*.json")}


def test_check_only_passes_on_a_committed_record(capsys):
    assert reproduce([str(POP), "--check-only"]) == 0
    out = capsys.readouterr().out
    assert "verdict: identical" in out and "test_masked  NDCG@10" in out


def test_check_only_names_a_perturbed_metric(tmp_path, capsys):
    def nudge(record):
        record["metrics"]["test_masked"]["NDCG@10"] += 1e-9

    path = edited(POP, tmp_path, nudge)
    assert reproduce([str(path), "--check-only"]) == 1
    assert "verdict: different; outside the tolerance: test_masked/NDCG@10" in capsys.readouterr().out
    assert reproduce([str(path), "--check-only", "--atol", "1e-8"]) == 0
    assert "verdict: within tolerance (rtol 0, atol 1e-08)" in capsys.readouterr().out


def test_a_tiny_record_reproduces_bit_for_bit(tiny_records, tmp_path, capsys):
    assert reproduce([str(tiny_records["sasrec-ce"]), "--out", str(tmp_path / "again"), "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "verdict: identical" in out
    assert "test_ranks differ for 0 of 50 users" in out
    again = tmp_path / "again" / "runs" / tiny_records["sasrec-ce"].name
    assert f"reproduced record: {again}" in out
    assert json.loads(again.read_text())["metrics"] == json.loads(tiny_records["sasrec-ce"].read_text())["metrics"]


def test_a_reused_training_point_trains_its_base_then_scores_with_its_sampler(tiny_records, tmp_path, capsys):
    path = tiny_records["diffrec-reused"]
    assert json.loads(path.read_text())["cell"]["inference"]
    assert reproduce([str(path), "--out", str(tmp_path / "again"), "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "inference-only point" in out and "verdict: identical" in out


def test_a_different_training_is_reported_as_different(tiny_records, tmp_path, capsys):
    def nudge(record):  # what a change to the training code would look like from the outside
        record["metrics"]["valid"]["HR@20"] += 0.5
        record["per_user"]["test_ranks"][0] += 1

    path = edited(tiny_records["sasrec-ce"], tmp_path, nudge)
    assert reproduce([str(path), "--out", str(tmp_path / "again"), "--threads", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "test_ranks differ for 1 of 50 users" in out and "outside the tolerance: valid/HR@20" in out


def test_a_record_of_other_data_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce_mod, "run_cell", lambda *a, **k: pytest.fail("trained on other data"))
    path = edited(POP, tmp_path, lambda r: r["dataset"].update(sha256="0" * 64))
    assert reproduce([str(path), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset ml-100k" in err and "sha256" in err and "refusing" in err
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("metrics"), "not a run record ('metrics' missing"),
        (lambda r: r.pop("cell"), "not a run record this can rerun (no 'cell')"),
        (lambda r: r["metrics"]["test"].update({"HR@10": None}), "metrics.test.HR@10 is not a number"),
        (lambda r: r["cell"].update(model="nope"), "unknown model 'nope'"),
        (lambda r: r["cell"].update(seed=1), "the record was edited?"),
        (lambda r: r["cell"].update(colour="red"), "unknown field 'colour'"),
    ],
)
def test_a_broken_record_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    assert reproduce([str(edited(POP, tmp_path, change)), "--check-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_file_directory_and_results_folder_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce_mod, "run_cell", lambda *a, **k: pytest.fail("trained"))
    assert reproduce([str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert reproduce([str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert reproduce([str(POP), "--out", str(PROJECT_ROOT / "results" / "scratch")]) == 2
    assert "inside results/" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_record_without_a_gpu_says_so(capsys, monkeypatch):
    monkeypatch.setattr(reproduce_mod, "run_cell", lambda *a, **k: pytest.fail("trained"))
    assert reproduce([str(GPU)]) == 2
    assert "the record was made on the GPU 'NVIDIA H200'" in capsys.readouterr().err


def test_a_time_budget_stop_is_warned_about(tmp_path, capsys, monkeypatch):
    record = json.loads(POP.read_text())
    monkeypatch.setattr(reproduce_mod, "run_cell", lambda *a, **k: record)  # the stored run itself: no training
    path = edited(POP, tmp_path, lambda r: r.update(stopped="time budget 60s"))
    assert reproduce([str(path), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert "not expected to reproduce bit for bit" in out and "verdict: identical" in out


def test_cells_round_trip_through_their_identity():
    record = json.loads(POP.read_text())
    assert Cell.from_identity(record["cell"]).key == record["key"]


def test_the_results_readme_says_how_to_check_a_number(tmp_path):
    text = readme([], tmp_path)
    assert "How to check any number here" in text and "`python -m benchmark.reproduce runs/<key>.json`" in text and "--check-only" in text


def test_it_runs_with_the_records_threads_and_device_kind_unless_told(tmp_path, monkeypatch):
    record, seen = json.loads(POP.read_text()), []

    def fake_run_cell(cell, **kwargs):  # the stored run itself: no training
        seen.append((torch.get_num_threads(), kwargs["device"]))
        return record

    monkeypatch.setattr(reproduce_mod, "run_cell", fake_run_cell)
    path = edited(POP, tmp_path, lambda r: r["environment"].update(torch_threads=2))
    before = torch.get_num_threads()
    try:
        assert reproduce([str(path), "--out", str(tmp_path / "a")]) == 0
        assert reproduce([str(path), "--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [(2, "cpu"), (1, "cpu")]
