"""Where results go: the README's first command, run in a fresh copy of the repository, leaves every
tracked file as it was and writes only into git-ignored folders; a run that writes into results/
refuses to start on uncommitted code."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.config import ConfigError
from benchmark.records import LOCAL_DIR, PROJECT_ROOT, RESULTS_DIR, uncommitted_code, write_json_atomic
from benchmark.suite import committed_suites, load_suite_file, resolve_suite
from tests.synthetic import chain_dataset, write_sequences


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def repo_copy(dest: Path) -> Path:
    """A clean repository at `dest` holding this checkout's files as they are now: a clone of HEAD
    plus the working tree's uncommitted edits (tracked and untracked, not ignored), committed there.
    So the test runs the code under test, not the last commit; on a clean CI checkout the clone
    alone is that code."""
    subprocess.run(["git", "clone", "--quiet", "--shared", str(PROJECT_ROOT), str(dest)], check=True)
    edited = git(PROJECT_ROOT, "ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0")
    for rel in filter(None, edited):
        source, target = PROJECT_ROOT / rel, dest / rel
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:  # deleted in the working tree
            target.unlink(missing_ok=True)
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--allow-empty", "-m", "working tree under test")
    return dest


def run_in(repo: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m benchmark.run ARGS` with `repo` as the working folder, importing `repo`'s code."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-m", "benchmark.run", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def changes(repo: Path) -> list[str]:
    """`git status --porcelain`: modified tracked files and untracked files outside ignored folders."""
    return git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()


@pytest.mark.slow
def test_the_readme_smoke_run_leaves_the_repository_untouched(tmp_path):
    """The README's first command in a fresh copy: tuning (2-trial studies), every model, the DiffRec
    ablations and the report all land in runs-local/smoke/ (git-ignored); a second run finds
    everything done."""
    repo = repo_copy(tmp_path / "repo")
    data = os.environ["DIFFREC_BENCH_DATA"]
    first = run_in(repo, "--suite", "smoke", "--data-dir", data)
    assert first.returncode == 0, first.stderr[-3000:]
    assert changes(repo) == []

    out = repo / "runs-local" / "smoke"
    studies = sorted(p.parent.name for p in (out / "tuning").glob("*/best.json"))
    assert [s.split("__")[1] for s in studies] == ["diffrec", "sasrec-ce"]
    for study in studies:
        best = json.loads((out / "tuning" / study / "best.json").read_text())
        assert best["trials"] == 2 and best["budget"] == 2
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    tags = {r["tag"] for r in records}
    assert "tuned" in tags and "noise=sequence,sampler=strided" in tags and "steps=20,sampler=strided" in tags
    assert all(r["tuning"]["trials"] == 2 for r in records if r["tag"] == "tuned")
    for name in ("tables/smoke.md", "tables/smoke.tex", "README.md", "figures/smoke/ndcg_vs_steps.png", "figures/smoke/noise_target_vs_sequence.pdf"):
        assert (out / name).exists(), name

    again = run_in(repo, "--suite", "smoke", "--data-dir", data, "--no-progress", "--no-report")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(records)} already done, 0 to run" in again.stdout
    assert again.stdout.count("exported with 2 of 2 trials") == 2  # finished studies are neither rerun nor re-exported
    assert len(list((out / "runs").glob("*.json"))) == len(records)
    assert changes(repo) == []


# --- where a run writes by default ------------------------------------------------------------------
def out_of(*argv: str) -> Path:
    from benchmark.cli import add_suite_arguments, out_folder
    from benchmark.suite import load_suite_file

    p = argparse.ArgumentParser()
    add_suite_arguments(p)
    args = p.parse_args(argv)
    return out_folder(args, *load_suite_file(args.suite))


def test_only_committed_suites_run_as_defined_write_into_results():
    assert committed_suites() == ["breadth", "full", "paper", "quick"]
    for suite in ("quick", "paper", "full"):
        assert out_of("--suite", suite) == RESULTS_DIR
    assert out_of("--suite", "smoke") == LOCAL_DIR / "smoke"
    for override in (["--datasets", "ml-100k"], ["--models", "pop"], ["--seeds", "1"], ["--set", "train.lr=0.01"], ["--file", "my.txt", "--format", "sequences"]):
        assert out_of("--suite", "quick", *override) == LOCAL_DIR / "quick", override
    assert out_of("--suite", "smoke", "--out", "elsewhere") == Path("elsewhere")
    assert out_of("--suite", "quick", "--datasets", "ml-100k", "--out", "results") == Path("results")


def test_commit_is_a_boolean_and_only_for_packaged_suites(tmp_path):
    base = {"datasets": ["ml-100k"], "models": ["pop"]}
    with pytest.raises(ConfigError, match="commit must be true or false, got 'true'"):
        resolve_suite("t", {**base, "commit": "true"})
    (tmp_path / "mine.toml").write_text('commit = true\ndatasets = ["ml-100k"]\nmodels = ["pop"]\n')
    with pytest.raises(ConfigError, match="commit = true is for the packaged suites"):
        resolve_suite(*load_suite_file(str(tmp_path / "mine.toml")))


def test_an_override_run_of_a_committed_suite_keeps_its_committed_tuned_settings(tmp_path, monkeypatch):
    """Tuned parameters come from OUT/tuning, else from the committed studies in results/tuning (their
    best.json; the Optuna storage is not committed): a paper cell rerun with overrides in runs-local/
    is the paper's cell."""
    import benchmark.records
    from benchmark.cli import add_suite_arguments, suite_from_args
    from benchmark.suite import best_params_path, tuning_study

    committed = tmp_path / "results"
    monkeypatch.setattr(benchmark.records, "RESULTS_DIR", committed)  # stands for results/ (read by tuning_dirs)
    base = next(c for c in resolve_suite(*load_suite_file("paper")).tune_cells if (c.dataset, c.model) == ("beauty", "sasrec-ce"))
    study = tuning_study("beauty", "sasrec-ce", base.key)
    best_params_path(committed / "tuning", study).parent.mkdir(parents=True)
    best_params_path(committed / "tuning", study).write_text(json.dumps({"params": {"dropout": 0.25}, "trials": 20, "trial_epochs": 40}))
    p = argparse.ArgumentParser()
    add_suite_arguments(p)
    args = p.parse_args(["--suite", "paper", "--datasets", "beauty", "toys", "--models", "sasrec-ce", "--seeds", "0"])
    suite = suite_from_args(args, p)
    assert Path(args.out) == LOCAL_DIR / "paper"
    main = {c.dataset: c for c in suite.cells if c.tag in ("default", "tuned")}
    assert all(c.tag == "tuned" and c.tuning["study"] == study and c.model_config["dropout"] == 0.25 for c in main.values())
    assert main["toys"].tuning["params_of"] == "beauty"  # the paper suite lends beauty's studies to toys and ml-1m
    assert "results/tuning/optuna.db" not in git(PROJECT_ROOT, "ls-files", "results/tuning")


def test_the_report_of_results_covers_committed_suites_only(tmp_path, monkeypatch, capsys):
    from benchmark import report
    from tests.test_report import fake_record

    for suite in ("quick", "smoke"):
        record = fake_record("ml-100k", "pop", 0, range(50), suite=suite)
        record["key"] = f"{suite}-record"
        write_json_atomic(tmp_path / "runs" / f"{suite}-record.json", record)
    report.write_report(tmp_path)
    assert "## Suite `smoke`" in (tmp_path / "README.md").read_text()  # any other folder: every suite
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    report.write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "## Suite `quick`" in readme and "## Suite `smoke`" not in readme
    assert "suites that are not committed (smoke) are left out" in capsys.readouterr().err


def test_the_report_defaults_to_the_folder_the_run_wrote(tmp_path, monkeypatch, capsys):
    from benchmark import report

    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(report, "default_out", lambda suite, committed: tmp_path / "local" / suite)
    for argv, folder in ((["--suite", "smoke"], "local/smoke"), (["--suite", "paper"], "results"), ([], "results"), (["--suite", "smoke", "quick"], "results")):
        assert report.main(argv) == 2  # no records there
        assert f"no run records under {tmp_path / folder / 'runs'}" in capsys.readouterr().err, argv


# --- provenance: runs into results/ need committed code -----------------------------------------------
def test_uncommitted_code_lists_the_changed_and_untracked_files_a_run_loads(tmp_path):
    pkg = tmp_path / "benchmark"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text("from benchmark import model\n")
    (pkg / "model.py").write_text("X = 1\n")
    (pkg / "report.py").write_text("Y = 1\n")  # not loaded by a run
    (tmp_path / "README.md").write_text("docs\n")
    assert uncommitted_code("benchmark.run", tmp_path) is None  # no repository: git cannot tell
    git(tmp_path, "init", "--quiet")
    git(tmp_path, "add", "--all")
    git(tmp_path, "commit", "--quiet", "-m", "toy")
    assert uncommitted_code("benchmark.run", tmp_path) == []
    (pkg / "report.py").write_text("Y = 2\n")
    (tmp_path / "README.md").write_text("more docs\n")
    assert uncommitted_code("benchmark.run", tmp_path) == []  # edits outside the run's code do not count
    (pkg / "model.py").write_text("from benchmark import extra\n")
    (pkg / "extra.py").write_text("Z = 1\n")
    (pkg / "unused.py").write_text("W = 1\n")
    assert uncommitted_code("benchmark.run", tmp_path) == ["benchmark/extra.py", "benchmark/model.py"]
    git(tmp_path, "add", "benchmark/model.py")
    assert uncommitted_code("benchmark.run", tmp_path) == ["benchmark/extra.py", "benchmark/model.py"]  # staged is not committed


def test_a_copy_without_git_names_its_commit_and_a_dirty_one_is_refused(tmp_path, monkeypatch):
    from benchmark import cli as run

    monkeypatch.setattr(run, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(run, "uncommitted_code", lambda entry: None)  # a copy without git
    monkeypatch.delenv("DIFFREC_BENCH_GIT_COMMIT", raising=False)
    with pytest.raises(ConfigError, match="git cannot tell whether its code is committed; set DIFFREC_BENCH_GIT_COMMIT"):
        run.check_committed_code(tmp_path, "benchmark.run")
    run.check_committed_code(tmp_path / "elsewhere", "benchmark.run")  # records that are not committed: no check
    monkeypatch.setenv("DIFFREC_BENCH_GIT_COMMIT", "0123abc")
    run.check_committed_code(tmp_path, "benchmark.run")  # taken at its word
    monkeypatch.setenv("DIFFREC_BENCH_GIT_COMMIT", "0123abc+dirty")
    with pytest.raises(ConfigError, match=r"DIFFREC_BENCH_GIT_COMMIT=0123abc\+dirty names uncommitted code"):
        run.check_committed_code(tmp_path, "benchmark.run")


TINY = """description = "a committed suite that trains in seconds"
commit = true
datasets = [{{file = "{file}", format = "sequences"}}]
models = ["pop"]
seeds = [0]
"""


def test_a_committed_suite_refuses_uncommitted_code_unless_allowed(tmp_path):
    repo = repo_copy(tmp_path / "repo")
    (repo / "benchmark" / "suites" / "tiny.toml").write_text(TINY.format(file=write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=20, users=40))))
    git(repo, "add", "benchmark/suites/tiny.toml")
    git(repo, "commit", "--quiet", "-m", "a committed suite for the test")
    head = git(repo, "rev-parse", "HEAD").strip()
    with open(repo / "benchmark" / "train.py", "a") as f:
        f.write("# an edit\n")
    env = {k: v for k, v in os.environ.items() if k != "DIFFREC_BENCH_GIT_COMMIT"}

    refused = run_in(repo, "--suite", "tiny", "--no-report", "--no-progress", env=env)
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: this run writes into") and "uncommitted changes: benchmark/train.py; commit them" in line and "--allow-dirty" in line
    assert changes(repo) == [" M benchmark/train.py"]  # nothing written

    allowed = run_in(repo, "--suite", "tiny", "--no-report", "--no-progress", "--allow-dirty", env=env)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    (record,) = (repo / "results" / "runs").glob("chain__pop__*__s0__*.json")
    assert json.loads(record.read_text())["environment"]["git_commit"] == f"{head}+dirty"

    git(repo, "checkout", "benchmark/train.py")
    (repo / "README.md").write_text("edited docs\n")  # not code a run loads: no refusal, no +dirty
    clean = run_in(repo, "--suite", "tiny", "--seeds", "1", "--out", "results", "--no-report", "--no-progress", env=env)
    assert clean.returncode == 0, clean.stderr[-3000:]
    (record,) = (repo / "results" / "runs").glob("chain__pop__*__s1__*.json")
    assert json.loads(record.read_text())["environment"]["git_commit"] == head


def test_the_tuning_journal_is_committed_and_its_locks_are_not():
    """A study outlives the machine it started on only through the committed journal; the lock
    files that Optuna's journal backend makes beside it are the machine's own."""
    tuning = RESULTS_DIR.relative_to(PROJECT_ROOT) / "tuning"
    paths = [str(tuning / name) for name in ("optuna.journal", "optuna.journal.lock", "optuna.journal.lock1f2e.rename", "optuna.db")]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == paths[1:]
