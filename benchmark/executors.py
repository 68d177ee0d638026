"""Where a suite's work runs: in this machine's processes (`--executor local`, the default, no Ray
needed) or as Ray Core tasks (`--executor ray`: a local Ray started here, or a cluster joined with
`--address auto|ray://HOST:10001`).

An executor maps a module-level function over keyword-argument jobs and yields each job with its
result as it finishes. `benchmark.run` maps one training group (the cells sharing a training key)
to a task that returns their records, which the driver writes; `benchmark.tune` maps one trial to a
task. A Ray task gets `num_cpus` = --threads (Ray sets OMP_NUM_THREADS to it) and `num_gpus` =
--gpus-per-task (a fraction lets several small models share a GPU). A task whose worker or node dies
(a system failure) is run again, up to MAX_RETRIES times; an exception raised by the task's code (a
bug, a bad setting) is not retried but raised here, with the job it came from.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from benchmark.config import ConfigError

MAX_RETRIES = 3  # system failures (a killed worker, a lost node) per task
PARENT_POLL_S = 1.0  # how often a local worker process looks whether the process that started it is still there
RAY_EXTRA = "pip install -e '.[ray]'"


def node_name() -> str:
    """The machine this process runs on, with its Ray node id inside a Ray task."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{socket.gethostname()} (ray node {ray.get_runtime_context().get_node_id()[:12]})"
    return socket.gethostname()


def end_with_parent(parent: int) -> None:
    """Initializer of a local worker process: the worker ends at once when the process that started
    it (`parent`) is gone, instead of running on, orphaned, through its task and the queued ones. Its
    task is then a killed worker's: a training resumes from its snapshot, a trial is retried."""

    def watch() -> None:
        while os.getppid() == parent:  # an orphan is adopted by another process
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class LocalExecutor:
    """Runs the jobs in this process, or in `workers` spawned processes when there are several
    (each ends with this process: `end_with_parent`)."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)

    def describe(self) -> str:
        return f"local, {self.workers} process(es)"

    def map(self, fn: Callable, jobs: Iterable[dict]) -> Iterator[tuple[dict, object]]:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) == 1:
            for job in jobs:
                yield job, fn(**job)
            return
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=spawn, initializer=end_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, **job): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray: Ray is not installed; install the extra with {RAY_EXTRA}") from None
    return ray


class RayExecutor:
    """Ray Core tasks: `ray.remote` with the task's resources, `ray.wait` for the next to finish."""

    name = "ray"

    def __init__(self, *, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0.0):
        ray = self.ray = import_ray()
        self.cpus, self.gpus = max(1, cpus_per_task), gpus_per_task
        if not ray.is_initialized():
            # Without an address Ray starts on this machine; its workers import this checkout's code.
            runtime_env = None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)}}
            try:
                ray.init(address=address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"--address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None
        if gpus_per_task and not ray.cluster_resources().get("GPU"):
            raise ConfigError(f"--gpus-per-task {gpus_per_task}: the Ray cluster has no GPU")

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        return f"ray, {resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} GPU(s) in the cluster, {self.cpus} CPU(s) and {self.gpus:g} GPU(s) per task"

    def map(self, fn: Callable, jobs: Iterable[dict]) -> Iterator[tuple[dict, object]]:
        ray = self.ray
        remote = ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=MAX_RETRIES, retry_exceptions=False)
        pending = {remote.remote(**job): job for job in jobs}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the task's own exception: raised as itself
                    raise exc.cause from exc
                except ray.exceptions.RayError as exc:  # retries used up, or the cluster went away
                    raise RuntimeError(f"a Ray task failed {MAX_RETRIES + 1} times on system errors ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
                yield job, result
        finally:
            for ref in pending:  # an error or an interrupt stops the rest
                ray.cancel(ref, force=True)


def add_executor_arguments(p) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where the work runs: this machine's processes, or Ray tasks (pip install -e '.[ray]')")
    p.add_argument("--address", help="with --executor ray: the cluster to join (auto, ray://HOST:10001); default: start Ray on this machine")
    p.add_argument("--gpus-per-task", type=float, default=0.0, metavar="G", help="with --executor ray: GPUs per task (0.25 lets four tasks share one GPU)")


def check_executor_arguments(args) -> None:
    if args.executor != "ray" and (args.address or args.gpus_per_task):
        raise ConfigError(f"--{'address' if args.address else 'gpus-per-task'} applies to --executor ray only")
    if not 0 <= args.gpus_per_task:
        raise ConfigError(f"--gpus-per-task {args.gpus_per_task}: must be >= 0")
    if args.executor == "ray":
        import_ray()


def make_executor(args, workers: int = 1) -> LocalExecutor | RayExecutor:
    if args.executor == "ray":
        return RayExecutor(address=args.address, cpus_per_task=args.threads or 1, gpus_per_task=args.gpus_per_task)
    return LocalExecutor(workers)
