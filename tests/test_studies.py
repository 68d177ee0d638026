"""Study storage shared by many workers: two `benchmark.tune` processes started together on a fresh
journal file, or on a PostgreSQL database, finish the budget exactly with no configuration run
twice; a worker killed with SIGKILL has its trial failed and retried, and the budget is still met.

The PostgreSQL tests need a server: `.ci/run` starts one and passes its URL in
$DIFFREC_BENCH_POSTGRES_URL (postgresql://USER:PASSWORD@HOST:PORT/DB, as the README writes it);
each test gets a fresh database there."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmark import studies, tune
from tests.synthetic import chain_dataset, write_sequences

POSTGRES = os.environ.get("DIFFREC_BENCH_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL server: set DIFFREC_BENCH_POSTGRES_URL (.ci/run starts one)")
REPO = Path(__file__).resolve().parents[1]
SUITE = """models = ["sasrec-ce"]
[train]
epochs = {epochs}
eval_every = 1
batch_size = 32
[model.all]
hidden = 16
[tune]
trials = {trials}
"""


def start_tune(tmp_path: Path, storage: str, *, trials: int, epochs: int = 2) -> subprocess.Popen:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(trials=trials, epochs=epochs))
    data = tmp_path / "chain.txt"
    if not data.exists():
        write_sequences(data, chain_dataset(n_items=20, users=80))
    cmd = [sys.executable, "-m", "benchmark.tune", "--suite", str(suite), "--file", str(data), "--format", "sequences", "--out", str(tmp_path / "out"), "--storage", storage, "--threads", "1", "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def the_study(storage: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(studies.make_storage(storage))
    return optuna.load_study(study_name=summary.study_name, storage=studies.make_storage(storage))


def assert_budget_met_once_each(study: optuna.Study, budget: int) -> list:
    trials = study.get_trials()
    counted = [t for t in trials if studies.counts(t)]
    assert len(counted) == budget, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in counted)
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == budget  # no configuration twice
    assert sum(bool(t.user_attrs.get("default")) for t in counted) == 1
    assert len({t.user_attrs["sampler_seed"] for t in counted}) == budget  # recorded, one per trial task
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    return trials


def two_workers_share_a_study(tmp_path: Path, storage: str) -> None:
    procs = [start_tune(tmp_path, storage, trials=6) for _ in range(2)]
    for proc in procs:
        finish(proc)
    trials = assert_budget_met_once_each(the_study(storage), 6)
    assert len({t.user_attrs["pid"] for t in trials if studies.counts(t)}) == 2  # both took trials


def a_killed_worker_is_retried(tmp_path: Path, storage: str) -> None:
    victim, other = (start_tune(tmp_path, storage, trials=4, epochs=30) for _ in range(2))
    deadline = time.time() + 120
    while time.time() < deadline:  # the victim's first trial, running, evaluated at least twice
        time.sleep(0.05)
        try:
            running = [t for t in the_study(storage).get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("pid") == victim.pid and len(t.intermediate_values) >= 2]
        except (ValueError, KeyError):  # the study is not created yet
            continue
        if running:
            break
    else:
        pytest.fail("the first worker never ran a trial")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = running[0].number
    # as if the kill had landed in the middle of a snapshot's write (the retry removes it at its end)
    orphan = tmp_path / "out" / "snapshots" / "tuning" / the_study(storage).study_name / f".trial-{killed}.pt.0badc0de.tmp"
    orphan.write_bytes(b"half a snapshot")
    finish(other)
    trials = assert_budget_met_once_each(the_study(storage), 4)
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and dead.user_attrs.get("failed") == "worker gone"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert studies.counts(retry) and dead.params.items() <= retry.params.items()  # what it had suggested before the kill
    # the retry went on from the killed training's last snapshot (written before each evaluation is reported)
    assert retry.user_attrs["resumed_at_epochs"][0] >= max(running[0].intermediate_values)
    assert set(retry.intermediate_values) == set(range(1, retry.user_attrs["epochs_run"] + 1))  # earlier evaluations reported again
    assert not [p for p in (tmp_path / "out" / "snapshots").rglob("*") if p.is_file()]  # every trial's snapshot deleted at its end


def test_two_tune_processes_share_a_fresh_journal_file(tmp_path):
    two_workers_share_a_study(tmp_path, str(tmp_path / "optuna.journal"))


def test_a_killed_tune_process_on_a_journal_file_has_its_trial_retried(tmp_path):
    a_killed_worker_is_retried(tmp_path, str(tmp_path / "optuna.journal"))


@pytest.fixture
def database():
    """A fresh database on the CI server: its URL, in the README's form."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install -e '.[postgres]'")
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_url(POSTGRES)
    with psycopg.connect(host=admin.host, port=admin.port, user=admin.username, password=admin.password, dbname=admin.database, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.set(database=name).render_as_string(hide_password=False)


@needs_postgres
def test_two_tune_processes_share_a_fresh_postgresql_study(tmp_path, database):
    assert database.startswith("postgresql://")  # no +psycopg: the README's URL as written
    two_workers_share_a_study(tmp_path, database)


@needs_postgres
def test_a_killed_tune_process_on_postgresql_has_its_trial_retried(tmp_path, database):
    a_killed_worker_is_retried(tmp_path, database)


def test_an_unreachable_database_is_one_line(tmp_path, capsys):
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install -e '.[postgres]'")
    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=20, users=80))
    args = ["--suite", "smoke", "--file", str(tmp_path / "chain.txt"), "--format", "sequences", "--out", str(tmp_path), "--no-progress"]
    assert tune.main([*args, "--storage", "postgresql://me:secret@127.0.0.1:1/optuna"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage postgresql://me:***@127.0.0.1:1/optuna: cannot connect (") and err.count("\n") == 1


def test_stale_running_trials_are_failed_and_queued_again(tmp_path):
    study = optuna.create_study(storage=studies.make_storage(str(tmp_path / "j.journal")), study_name="s")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with studies.alive(study, dead._trial_id):
        pass
    study._storage.set_trial_user_attr(dead._trial_id, "pid", 2**22 + 1)  # above pid_max: no such process
    live = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with studies.alive(study, live._trial_id):
        assert studies.sweep_stale(study) == [dead.number]
        assert studies.sweep_stale(study) == []  # once
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.get_trials()[2].params == study.get_trials()[0].params


def test_postgresql_urls_name_psycopg_3():
    """SQLAlchemy before 2.1 reads a plain postgresql:// as psycopg2, which the [postgres] extra does not install."""
    assert studies.driver_url("postgresql://me:pw@db-host/optuna") == "postgresql+psycopg://me:pw@db-host/optuna"
    assert studies.driver_url("postgres://db-host/optuna") == "postgresql+psycopg://db-host/optuna"
    for kept in ("postgresql+psycopg2://db-host/optuna", "sqlite:///x.db", "mysql://db-host/optuna"):
        assert studies.driver_url(kept) == kept
