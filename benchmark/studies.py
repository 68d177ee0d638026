"""Optuna study storage for `benchmark.tune`, and the bookkeeping that lets many workers share one
study: which trials use the budget, and which running trials belong to a worker that is gone.

Storages (`--storage`):
- a file path (default `OUT/tuning/optuna.journal`): Optuna's journal file storage, for the workers
  of one machine (appends under a lock file; no database, no table creation to race on);
- a SQLAlchemy URL, `postgresql://USER:PASSWORD@HOST[:PORT]/DB` for workers on several machines
  (psycopg 3: `pip install -e '.[postgres]'`; plain `postgresql://` is read as
  `postgresql+psycopg://`), with Optuna's heartbeat and `RetryHeartbeatStaleTrialCallback`.
  SQLite URLs work too, but Optuna advises against SQLite for parallel workers.

Every running trial carries its worker's host, pid and a heartbeat time (user attributes, updated
every HEARTBEAT_S). A worker about to take a trial first fails the running trials whose worker is
gone (a dead pid on its own host, or no heartbeat for GRACE_S) and queues each again
(`RetryHeartbeatStaleTrialCallback`), so a killed worker's trial is retried, never counted.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.config import ConfigError

HEARTBEAT_S = 10  # how often a running trial says it is alive
GRACE_S = 60  # a running trial silent this long (a worker on another machine) is taken as dead
CREATE_TRIES = 5  # concurrent first starts on one database race to create its tables
POSTGRES_EXTRA = "pip install -e '.[postgres]'"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def default_storage(out: str | Path) -> str:
    path = Path(out) / "tuning" / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def driver_url(url: str) -> str:
    """`postgresql://` names psycopg 3 explicitly: SQLAlchemy before 2.1 reads it as psycopg2."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Journal file storage for a path, RDB storage (with heartbeat and retry of stale trials) for a
    URL. A URL that cannot be reached is a ConfigError of one line, not a driver traceback."""
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    import sqlalchemy.exc

    for attempt in range(CREATE_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental" since optuna 2.9
                return optuna.storages.RDBStorage(
                    driver_url(url),
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
                )
        except ModuleNotFoundError as exc:
            raise ConfigError(f"--storage {redact(url)}: its database driver is not installed ({exc.name}); for PostgreSQL: {POSTGRES_EXTRA}") from None
        except sqlalchemy.exc.OperationalError as exc:  # no server there, wrong password, no such database
            raise ConfigError(f"--storage {redact(url)}: cannot connect ({first_line(exc.orig or exc)})") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:  # another worker created the tables meanwhile
            if attempt == CREATE_TRIES - 1:
                raise ConfigError(f"--storage {redact(url)}: cannot create the study tables ({first_line(exc.orig or exc)})") from None
            time.sleep(0.2 * (attempt + 1))
        except sqlalchemy.exc.ArgumentError as exc:
            raise ConfigError(f"--storage {redact(url)}: not a database URL ({first_line(exc)})") from None
    raise AssertionError("unreachable")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_study(name: str, storage, *, seed: int, pruner: str, warmup: int = 0) -> optuna.Study:
    """Creates the study or loads it (workers starting together: one creates, the others load).
    The median pruner stops a trial whose validation score at an epoch falls below the median of
    earlier trials at that epoch, once five trials have finished, from epoch `warmup` on."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup) if pruner == "median" else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


# ---------------------------------------------------------------------------------------------
# Live workers


def worker_gone(trial: FrozenTrial, now: float, host: str = "") -> bool:
    """A running trial whose worker has stopped: its pid is dead on this host, or it has not beaten
    for GRACE_S (attributes copied into a retried trial are older than its start and do not count)."""
    host = host or socket.gethostname()
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    beat = trial.user_attrs.get("heartbeat", 0.0)
    if beat < started - 1.0:  # not yet marked by the worker that took it
        return now - started > GRACE_S
    if trial.user_attrs.get("host") == host and not pid_alive(trial.user_attrs.get("pid", 0)):
        return True
    return now - beat > GRACE_S


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


def sweep_stale(study: optuna.Study) -> list[int]:
    """Fails the running trials whose worker is gone and queues each again; -> their numbers. Of
    workers sweeping together, the one whose FAIL lands queues the retry."""
    now, swept = time.time(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not worker_gone(trial, now):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "failed", "worker gone")
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first, or it just finished
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry(study, study._storage.get_trial(trial._trial_id))
        swept.append(trial.number)
    return swept


@contextlib.contextmanager
def alive(study: optuna.Study, trial_id: int):
    """Marks a trial with this worker's host and pid and beats every HEARTBEAT_S while it runs."""
    storage, stop = study._storage, threading.Event()
    storage.set_trial_user_attr(trial_id, "host", socket.gethostname())
    storage.set_trial_user_attr(trial_id, "pid", os.getpid())
    storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried; the trial goes on
                storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------------------------
# The budget


def counts(trial: FrozenTrial) -> bool:
    """Finished trials use the budget, failures of a broken configuration included; those of a
    gone worker or a surplus start do not."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def reserved(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that hold a place in the budget, by number: finished ones that count, running
    ones (of live workers, after `sweep_stale`), and queued ones; of several queued defaults (trial
    0 enqueued by workers starting together) only the first."""
    held, default_seen = [], False
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not (counts(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)):
            continue
        if trial.user_attrs.get("default"):
            if default_seen:
                continue
            default_seen = True
        held.append(trial)
    return held


def within_budget(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial `number` (just taken) is among the first `budget` reserved ones. Trial numbers
    are unique, so of workers that took trials together exactly the first ones go on."""
    return number in [t.number for t in reserved(study)[:budget]]


def places_to_run(study: optuna.Study, budget: int) -> int:
    """How many trials still need a worker: the budget less the trials finished or running (queued
    ones need a worker too)."""
    return budget - sum(t.state != TrialState.WAITING for t in reserved(study)[:budget])


def counted_trials(study: optuna.Study, budget: int) -> list[FrozenTrial]:
    """The finished trials that use the budget, first `budget` by number."""
    return sorted((t for t in study.get_trials(deepcopy=False, states=FINISHED) if counts(t)), key=lambda t: t.number)[:budget]
