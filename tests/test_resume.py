"""Resume: a suite killed with SIGKILL and started again finishes every cell exactly once (the
smoke suite's end-to-end run, its rerun included, is in tests/test_layout.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.records import PROJECT_ROOT, RecordError, atomic_path, code_digest, module_closure, write_json_atomic
from benchmark.run import is_done, record_path, remove_stale_temps, run_suite
from benchmark.suite import load_suite_file, resolve_suite
from tests.synthetic import chain_dataset, untimed, write_sequences

SUITE = """
datasets = [{file = "chain.txt", format = "sequences"}]
models = ["sasrec-ce"]
seeds = [0, 1, 2, 3, 4]
[train]
epochs = 4
eval_every = 1
batch_size = 32
[model.all]
hidden = 16
"""


def run_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from benchmark.run import main; sys.exit(main())", *args]


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}


def test_kill_9_then_restart_finishes_every_cell_exactly_once(tmp_path):
    write_sequences(tmp_path / "chain.txt", chain_dataset(users=300))
    (tmp_path / "tiny.toml").write_text(SUITE)
    suite = resolve_suite(*load_suite_file(str(tmp_path / "tiny.toml")))
    expected = {c.key for c in suite.cells}
    out, runs = tmp_path / "out", tmp_path / "out" / "runs"
    args = ["--suite", str(tmp_path / "tiny.toml"), "--out", str(out), "--no-progress", "--no-report"]

    proc = subprocess.Popen(run_command(*args), cwd=PROJECT_ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(runs.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    first = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 1 <= len(first) < len(expected), "the kill must land while cells are still left"

    done = subprocess.run(run_command(*args), cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already done, {len(expected) - len(first)} to run" in done.stdout
    records = {p.stem: json.loads(p.read_text()) for p in runs.glob("*.json")}
    assert set(records) == expected  # no cell missing, none twice
    assert sorted(r["seed"] for r in records.values()) == [0, 1, 2, 3, 4]
    for name, text in first.items():
        assert (runs / name).read_text() == text  # finished cells were not run again
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_kill_9_during_training_resumes_from_the_snapshot_with_the_same_result(tmp_path):
    write_sequences(tmp_path / "chain.txt", chain_dataset(users=300))
    (tmp_path / "one.toml").write_text(
        'datasets = [{file = "chain.txt", format = "sequences"}]\nmodels = ["sasrec-ce"]\nseeds = [0]\n'
        "[train]\nepochs = 40\neval_every = 2\npatience = 40\nbatch_size = 32\n[model.all]\nhidden = 16\n"
    )
    args = ["--suite", str(tmp_path / "one.toml"), "--no-progress", "--no-report"]
    straight = subprocess.run(run_command(*args, "--out", str(tmp_path / "a")), cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "b"
    proc = subprocess.Popen(run_command(*args, "--out", str(out)), cwd=PROJECT_ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((out / "snapshots").glob("*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not list((out / "runs").glob("*.json")), "the kill must land mid-training"
    (snapshot,) = (out / "snapshots").glob("*.pt")
    snapshot.with_name(f".{snapshot.name}.0badc0de.tmp").write_bytes(b"half a snapshot")  # as if killed mid-write
    done = subprocess.run(run_command(*args, "--out", str(out)), cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (a,), (b,) = (list(map(json.loads, map(Path.read_text, (folder / "runs").glob("*.json")))) for folder in (tmp_path / "a", out))
    assert a["training"]["resumed_at_epochs"] == [] and b["training"]["resumed_at_epochs"][0] in range(2, 40, 2)
    assert b["metrics"] == a["metrics"] and b["best_epoch"] == a["best_epoch"] and b["per_user"] == a["per_user"]
    assert not list((out / "snapshots").glob("*"))  # removed once the record was written


def test_existing_records_are_skipped_only_for_the_same_resolved_cell(tmp_path):
    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=10, users=40))
    raw = {"models": ["sasrec-ce"], "train": {"epochs": 1}, "model": {"all": {"hidden": 8}}}
    suite = resolve_suite("t", raw, files=[(str(tmp_path / "chain.txt"), "sequences")])
    (cell,) = suite.cells
    assert not is_done(tmp_path, cell)
    write_json_atomic(record_path(tmp_path, cell), {"cell": cell.identity()})
    assert is_done(tmp_path, cell)
    write_json_atomic(record_path(tmp_path, cell), {"cell": {**cell.identity(), "seed": 99}})
    assert not is_done(tmp_path, cell)  # same file name, different cell: run again
    record_path(tmp_path, cell).write_text("{trunc")
    assert not is_done(tmp_path, cell)
    stale, live = (tmp_path / "runs" / f".{cell.key}.json.{x}.tmp" for x in ("abc123", "def456"))
    stale.write_text("{")
    live.write_text("{")  # another process's write in progress
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temps(tmp_path) == [stale] and not stale.exists() and live.exists()
    live.unlink()
    written = run_suite(suite, out=tmp_path, progress=False)
    assert written == [record_path(tmp_path, cell)] and is_done(tmp_path, cell)
    assert run_suite(suite, out=tmp_path, progress=False) == []


def test_atomic_writes_leave_the_old_file_or_nothing(tmp_path):
    target = tmp_path / "runs" / "r.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a rec")
            raise RuntimeError("killed")
    assert list(target.parent.iterdir()) == []
    write_json_atomic(target, {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": 2, "y": object()})  # fails half-way through the dump
    assert json.loads(target.read_text()) == {"x": 1} and [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_sampler_points_train_once_and_resume_from_the_checkpoint(tmp_path, monkeypatch):
    import benchmark.run as run_mod

    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=12, users=60))
    raw = {
        "models": ["diffrec"],
        "train": {"epochs": 2, "eval_every": 1, "batch_size": 32},
        "model": {"all": {"hidden": 16, "steps": 8}},
        "ablation": [{"model": "diffrec", "grid": {"sampler": ["ancestral", "strided"]}}],
    }
    suite = resolve_suite("t", raw, files=[(str(tmp_path / "chain.txt"), "sequences")])
    assert len(suite.cells) == 3 and len({c.training_key for c in suite.cells}) == 1
    fits = []
    real_fit = run_mod.fit_rules
    monkeypatch.setattr(run_mod, "fit_rules", lambda *a, **kw: fits.append(1) or real_fit(*a, **kw))
    run_suite(suite, out=tmp_path / "out", progress=False)
    assert len(fits) == 1  # one training for three records
    (saved,) = (tmp_path / "out" / "checkpoints").glob("*.pt")
    assert saved.stem == suite.cells[0].training_key
    records = {r["tag"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "out" / "runs").glob("*.json")))}
    assert sorted(r["training"]["reused"] for r in records.values()) == [False, True, True]
    assert len({json.dumps(r["curve"]) for r in records.values()}) == 1  # the same training history
    strided = records["sampler=strided"]
    assert strided["config"]["model"]["sampler"] == "strided" and strided["cell"]["model_config"]["sampler"] == "average"
    assert strided["protocol"]["inference"] == {"scored_with": {"sampler": "strided"}, "trained_and_selected_with": {"sampler": "average"}}
    assert "inference" not in records["default"]["protocol"]
    # the strided record scores the checkpoint itself: rebuild it by hand and compare
    from benchmark.registry import build_model
    from benchmark.train import evaluate, load_trained

    cell = next(c for c in suite.cells if c.tag == "sampler=strided")
    _, split, max_len = run_mod.load_data(cell)
    model, _ = build_model("diffrec", cell.scoring_config, n_items=split.n_items, max_len=max_len)
    load_trained(model, saved)
    assert evaluate(model, split.test, seed=cell.seed + 1)["metrics"] == strided["metrics"]["test"]

    # records lost, checkpoint kept: the rerun scores again without training
    for path in (tmp_path / "out" / "runs").glob("*.json"):
        path.unlink()
    monkeypatch.setattr(run_mod, "fit_rules", lambda *a, **kw: pytest.fail("trained again"))
    assert len(run_suite(suite, out=tmp_path / "out", progress=False)) == 3
    again = {r["tag"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "out" / "runs").glob("*.json")))}
    assert {t: r["metrics"] for t, r in again.items()} == {t: r["metrics"] for t, r in records.items()}
    assert all(r["training"]["device"].startswith("cpu") and r["training"]["finished_at"] for r in again.values())

    # a damaged checkpoint is an error that names it, not a silent retraining
    saved.write_bytes(b"not a checkpoint")
    next((tmp_path / "out" / "runs").glob("*.json")).unlink()
    with pytest.raises(RecordError, match=f"{saved.name}: cannot load this checkpoint"):
        run_suite(suite, out=tmp_path / "out", progress=False)


def test_selection_rules_share_one_training_and_each_record_is_its_own_run(tmp_path, monkeypatch):
    """Cells that differ only in `train.selection` train once (both rules followed to their stops),
    and each record is what the cell run alone gives: its curve, stop, and test metrics."""
    import benchmark.run as run_mod

    torch.set_num_threads(1)
    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=12, users=80))
    raw = {
        "models": ["sasrec-ce"],
        "train": {"epochs": 12, "eval_every": 1, "patience": 2, "batch_size": 32, "lr": 3e-3},
        "model": {"all": {"hidden": 16}},
        "ablation": [{"model": "sasrec-ce", "grid": {"train.selection": ["masked"]}}],
    }
    suite = resolve_suite("t", raw, files=[(str(tmp_path / "chain.txt"), "sequences")])
    main, masked = sorted(suite.cells, key=lambda c: c.selection, reverse=True)
    assert (main.selection, masked.selection) == ("unmasked", "masked") and main.training_key == masked.training_key
    assert main.checkpoint_key == main.training_key != masked.checkpoint_key
    fits = []
    real_fit = run_mod.fit_rules
    monkeypatch.setattr(run_mod, "fit_rules", lambda *a, **kw: fits.append(a[3]) or real_fit(*a, **kw))
    run_suite(suite, out=tmp_path / "out", progress=False)
    assert fits == [("masked", "unmasked")]  # one training for both records
    assert sorted(p.stem for p in (tmp_path / "out" / "checkpoints").glob("*.pt")) == sorted([main.checkpoint_key, masked.checkpoint_key])
    shared = {c.selection: json.loads(record_path(tmp_path / "out", c).read_text()) for c in (main, masked)}
    alone = {c.selection: run_mod.run_cell(c, progress=False) for c in (main, masked)}
    assert fits[1:] == [("unmasked",), ("masked",)]
    assert shared["unmasked"]["epochs_run"] != shared["masked"]["epochs_run"]  # the rules stopped apart
    for selection, record in shared.items():
        solo = alone[selection]
        assert record["metrics"] == solo["metrics"] and record["per_user"] == solo["per_user"]
        assert (record["best_epoch"], record["epochs_run"], record["stopped"]) == (solo["best_epoch"], solo["epochs_run"], solo["stopped"])
        assert untimed(record["curve"]) == untimed(solo["curve"])
        assert record["training"]["selections"] == ["masked", "unmasked"] and solo["training"]["selections"] == [selection]
    assert sorted(r["training"]["reused"] for r in shared.values()) == [False, True]


def test_a_copy_of_the_tree_names_its_commit_from_the_environment(monkeypatch):
    import benchmark.records as records

    monkeypatch.delenv("DIFFREC_BENCH_GIT_COMMIT", raising=False)
    here = records.git_commit.__wrapped__()
    assert here != "unknown"  # this checkout is a repository
    monkeypatch.setenv("DIFFREC_BENCH_GIT_COMMIT", "0123abc")
    assert records.git_commit.__wrapped__() == "0123abc"  # the copy's own .git may sit at another commit
    monkeypatch.setattr(records, "PROJECT_ROOT", Path("/"))  # no repository there
    assert records.git_commit.__wrapped__() == "0123abc"
    monkeypatch.delenv("DIFFREC_BENCH_GIT_COMMIT")
    assert records.git_commit.__wrapped__() == "unknown"


def test_the_code_digest_covers_what_a_run_loads_and_nothing_else(tmp_path):
    # A toy tree: `a` imports `b` at load time (one inside an `if`), `c` only inside a function.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nif True:\n    from pkg import b\n\ndef later():\n    import pkg.c\n")
    (pkg / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 1\n")
    assert module_closure("pkg.a", tmp_path, ("pkg",)) == [pkg / "__init__.py", pkg / "a.py", pkg / "b.py"]

    def digest() -> str:
        code_digest.cache_clear()
        return code_digest("pkg.a", tmp_path, ("pkg",))

    before = digest()
    (pkg / "c.py").write_text("Y = 2\n")
    assert digest() == before
    (pkg / "b.py").write_text("X = 2\n")
    assert digest() != before

    # The real closure of a suite run is exactly what importing it loads from the three packages.
    probe = "import sys, benchmark.run; print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in ('benchmark', 'diffrec', 'baselines'))))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=True).stdout.split()
    closure = module_closure("benchmark.run")
    assert loaded == [str(p) for p in closure]
    assert PROJECT_ROOT / "benchmark" / "train.py" in closure and PROJECT_ROOT / "benchmark" / "report.py" not in closure
