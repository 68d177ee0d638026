"""Run records: one JSON file per run, written atomically, with everything needed to trust it."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "numpy", "pandas", "scipy", "optuna")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; renames it over `path` when the block ends
    normally and removes it when the block raises, so `path` is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj) -> Path:
    """Writes JSON to a temporary file in the same folder, then renames it over `path`."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


@functools.cache
def git_commit() -> str:
    """The commit of the code this process runs: read once, on the first call (`benchmark.run` makes
    it at start), so that edits made while a long suite runs do not relabel its later records.
    $DIFFREC_BENCH_GIT_COMMIT, when set, wins: a copy of the tree on another machine (a lent GPU
    machine, say) may carry no repository, or one at another commit than the files it holds."""
    if os.environ.get("DIFFREC_BENCH_GIT_COMMIT"):
        return os.environ["DIFFREC_BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.cache
def code_digest() -> str:
    """sha256 of the Python sources of the three packages, read once like `git_commit`: a training
    snapshot is resumed only by the code that wrote it (commits that add records leave it alone)."""
    digest = hashlib.sha256()
    for path in sorted(p for package in ("benchmark", "diffrec", "baselines") for p in (PROJECT_ROOT / package).rglob("*.py")):
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    dev = str(device)
    return {
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else f"cpu ({cpu_model()})",
        "torch_threads": torch.get_num_threads(),
        "host_cpus": os.cpu_count(),
    }


def load_records(folder: str | Path) -> list[dict]:
    """Every run record under `folder/runs/` (or `folder` itself), sorted by file name."""
    folder = Path(folder)
    runs = folder / "runs" if (folder / "runs").is_dir() else folder
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
