"""Executors: the smoke suite's pop and SASRec-CE cells run as Ray tasks on a local Ray (2 CPUs)
write the records the local executor writes; a worker killed mid-training is retried to the same
record; an exception of the task's own code is raised once, not retried. Skipped only where Ray is
not installed (`pip install -e '.[ray]'`; CI installs it). Local worker processes end with the
process that started them."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark import run
from benchmark.config import ConfigError
from benchmark.executors import PARENT_POLL_S, LocalExecutor
from benchmark.records import PROJECT_ROOT
from benchmark.suite import load_suite_file, resolve_suite


SMOKE_PART = ["--suite", "smoke", "--models", "pop", "sasrec-ce", "--threads", "1", "--no-tune", "--no-report", "--no-progress"]


@pytest.fixture(scope="module")
def executor():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it)")
    from benchmark.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": str(Path(run.__file__).resolve().parents[1])}})
    yield RayExecutor(cpus_per_task=1)
    ray.shutdown()


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert run.main([*SMOKE_PART, "--out", str(out)]) == 0
    return {p.name: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}


def smoke_part():
    return resolve_suite(*load_suite_file("smoke"), models=["pop", "sasrec-ce"])


def same_results(a: dict, b: dict) -> bool:
    return a["metrics"] == b["metrics"] and a["per_user"] == b["per_user"] and a["cell"] == b["cell"]


def test_ray_executor_writes_the_local_executors_records(tmp_path, executor, local_records):
    assert run.main([*SMOKE_PART, "--out", str(tmp_path), "--executor", "ray"]) == 0  # joins the Ray started above
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert sorted(records) == sorted(local_records) and len(records) == 2
    for name, record in records.items():
        assert same_results(record, local_records[name]), name
        assert record["executor"]["name"] == "ray" and "ray node" in record["executor"]["node"]
        assert local_records[name]["executor"]["name"] == "local"


def kill_once_mid_training(marker: str, **job) -> dict:
    """The first attempt dies by SIGKILL once the training has written its snapshot (after epoch 1)."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        snapshot = run.snapshot_path(job["out"], job["cells"][0])

        def kill_when_saved():
            while not snapshot.exists():
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=kill_when_saved, daemon=True).start()
    return run.run_group(**job)


def test_a_worker_killed_mid_task_is_retried_to_the_same_record(tmp_path, executor, local_records):
    (cell,) = [c for c in smoke_part().cells if c.model == "sasrec-ce"]
    job = dict(cells=[cell], out=tmp_path, threads=1, suite="smoke", executor="ray", marker=str(tmp_path / "killed"))
    ((_, records),) = list(executor.map(kill_once_mid_training, [job]))
    assert (tmp_path / "killed").exists()  # the first attempt ran, and died
    (record,) = records.values()
    assert record["training"]["resumed_at_epochs"] == [1]  # the retry continued from the snapshot of the killed attempt
    assert same_results(record, local_records[run.record_path(tmp_path, cell).name])


def fail_with_config_error(counter: str) -> None:
    with open(counter, "a") as f:
        f.write("x")
    raise ConfigError("a bad setting")


def test_an_exception_of_the_task_is_raised_once_not_retried(tmp_path, executor):
    counter = tmp_path / "attempts"
    with pytest.raises(ConfigError, match="a bad setting"):
        list(executor.map(fail_with_config_error, [dict(counter=str(counter))]))
    assert counter.read_text() == "x"
    with pytest.raises(ConfigError, match="a bad setting"):
        list(LocalExecutor().map(fail_with_config_error, [dict(counter=str(counter))]))


def test_ray_options_are_checked_and_a_missing_ray_is_one_line(capsys, monkeypatch):
    assert run.main(["--suite", "smoke", "--address", "auto", "--no-report"]) == 2
    assert capsys.readouterr().err == "error: --address applies to --executor ray only\n"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert run.main(["--suite", "smoke", "--executor", "ray", "--no-report"]) == 2
    assert capsys.readouterr().err == "error: --executor ray: Ray is not installed; install the extra with pip install -e '.[ray]'\n"


def note_pid_and_sleep(folder: str) -> None:
    Path(folder, str(os.getpid())).touch()
    time.sleep(300)


def running(pid: int) -> bool:
    """The process exists and is no zombie (an orphan's end may wait for whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_local_workers_end_with_the_process_that_started_them(tmp_path):
    """`kill PID` of a `benchmark.tune --workers 2` or `benchmark.run --workers 2` stops its workers
    too, rather than leaving them to run their tasks and the ones queued for them."""
    script = f"from benchmark.executors import LocalExecutor; from tests.test_executors import note_pid_and_sleep; list(LocalExecutor(2).map(note_pid_and_sleep, [dict(folder={str(tmp_path)!r})] * 4))"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = [int(p.name) for p in tmp_path.iterdir()]
        assert len(workers) == 2, "the two workers never started their tasks"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20 * PARENT_POLL_S
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(running, workers))
        assert len(list(tmp_path.iterdir())) == 2  # no queued task started after the parent was gone
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
