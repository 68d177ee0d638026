"""Run records: one JSON file per run, written atomically, with everything needed to trust it."""
from __future__ import annotations

import ast
import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "results"  # under version control: the records of committed suites only
LOCAL_DIR = PROJECT_ROOT / "runs-local"  # git-ignored: every other run, one folder per suite
PACKAGES = ("torch", "numpy", "pandas", "scipy", "optuna")


class RecordError(Exception):
    """A file or folder under OUT (a run record, a training snapshot, a checkpoint, OUT itself) that
    cannot be read or written; the message is one line naming it."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; renames it over `path` when the block ends
    normally and removes it when the block raises, so `path` is whole or absent. The file gets the
    mode `open` gives (0666 less the umask), not mkstemp's 0600: a results folder shared between
    users stays readable to them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # another writer's temporary name: draw again
            continue
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_with_temps(path: str | Path) -> None:
    """Removes `path` and the temporaries that writers of it, killed mid-write, left beside it
    (`.NAME.XXXXXXXX.tmp`, see `atomic_path`). Only for a file that one process at a time writes
    (a training's snapshot) and that no process writes any more."""
    path = Path(path)
    for p in [path, *path.parent.glob(f".{glob.escape(path.name)}.*.tmp")]:
        p.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, obj) -> Path:
    """Writes JSON to a temporary file in the same folder, then renames it over `path`."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def default_out(suite: str, committed: bool) -> Path:
    """Where a run writes unless `--out` says otherwise: results/ for a committed suite run as
    defined, runs-local/<suite>/ for anything else (smoke, user files, overrides)."""
    return RESULTS_DIR if committed else LOCAL_DIR / suite


def tuning_dirs(out: str | Path) -> list[Path]:
    """Where `params = "tuned"` finds a study's best.json: OUT's own studies first, then the committed
    ones, so a run of a committed suite with overrides (in runs-local/) keeps its tuned settings."""
    return list(dict.fromkeys([Path(out) / "tuning", RESULTS_DIR / "tuning"]))


@functools.cache
def git_commit() -> str:
    """The commit of the code this process runs, "+dirty" when the code a run loads differs from it
    (`uncommitted_code`; edits to results or docs do not count): read once, on the first call
    (`benchmark.run` makes it at start), so that edits made while a long suite runs do not relabel
    its later records. $DIFFREC_BENCH_GIT_COMMIT, when set, wins: a copy of the tree on another
    machine (a lent GPU machine, say) may carry no repository, or one at another commit than the
    files it holds."""
    if os.environ.get("DIFFREC_BENCH_GIT_COMMIT"):
        return os.environ["DIFFREC_BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode:
        return "unknown"
    return out.stdout.strip() + ("" if uncommitted_code(root=PROJECT_ROOT) == [] else "+dirty")


CODE_PACKAGES = ("benchmark", "diffrec", "baselines")


def _load_time_imports(tree: ast.Module) -> Iterator[str]:
    """Names a module imports while it loads: its top-level imports, also those in class bodies and
    `if`/`try`/`with` blocks, not those inside functions (they run later, if ever). `from P import
    N` yields P and P.N (N may be a submodule)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        else:
            stack.extend(ast.iter_child_nodes(node))


def module_closure(entry: str, root: Path = PROJECT_ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> list[Path]:
    """The source files of module `entry` and of every module of `packages` (under `root`) that it
    imports while loading, transitively, with the packages' `__init__.py` files (sorted)."""
    found: dict[str, Path | None] = {}
    todo = [entry]
    while todo:
        parts = todo.pop().split(".")
        if parts[0] not in packages:
            continue
        for i in range(1, len(parts) + 1):  # a module's packages load before it
            name = ".".join(parts[:i])
            if name in found:
                continue
            base = root.joinpath(*name.split("."))
            found[name] = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
            if found[name] is not None:
                todo.extend(_load_time_imports(ast.parse(found[name].read_bytes(), filename=str(found[name]))))
    return sorted(p for p in found.values() if p is not None)


def uncommitted_code(entry: str = "benchmark.run", root: Path = PROJECT_ROOT) -> list[str] | None:
    """The files of `module_closure(entry)` that differ from the commit checked out at `root`
    (modified, staged or untracked), as paths relative to `root`; None where git cannot tell (no
    repository there)."""
    paths = [p.relative_to(root).as_posix() for p in module_closure(entry, root)]
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--no-renames", "--untracked-files=all", "--", *paths], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode:
        return None
    return sorted(line[3:] for line in proc.stdout.split("\0") if line)  # "XY path"


@functools.cache
def code_digest(entry: str = "benchmark.run", root: Path = PROJECT_ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """sha256 of the code a suite run trains and scores with: the sources of `entry` and of the
    modules it loads with it (`module_closure`), read once like `git_commit`. A training snapshot is
    resumed only by the code that wrote it; edits elsewhere (the report, tuning and profiling modules
    that a run imports only when it needs them, docs, records) leave snapshots valid."""
    digest = hashlib.sha256()
    for path in module_closure(entry, root, packages):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
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


def device_kind(device: str) -> str:
    """A record's `environment.device` -> "cpu" ("cpu (AMD EPYC)") or "gpu" (any other: "NVIDIA H200")."""
    return "cpu" if device.startswith("cpu") else "gpu"


def device_name(device: str) -> str:
    """What a record names as its device: "NVIDIA H200" for a CUDA device, "cpu (AMD EPYC)" else."""
    return torch.cuda.get_device_name(0) if str(device).startswith("cuda") else f"cpu ({cpu_model()})"


def environment(device: str) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": git_commit(),
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host_cpus": os.cpu_count(),
    }


def check_writable(folder: str | Path) -> None:
    """Creates `folder` (with its parents) if needed, then a file in it, and removes the file: a
    RecordError naming the folder when that fails (a file in the way, no permission, a read-only
    disk), so a run stops at its start, not at its first record. A failed check leaves no folder
    behind; a passed one leaves `folder` (processes started together on one new OUT each find it)."""
    folder = Path(folder)
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RecordError(f"{blocking}: is a file, not a folder; choose another --out")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        for made in created:  # innermost first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise RecordError(f"{folder}: cannot write there ({exc.strerror or exc}); choose another --out") from None


# What every run record has had: the keys a report reads (a JSON object with them is a record).
RECORD_FIELDS = {"key": str, "dataset": dict, "model": str, "seed": int, "config": dict, "timings": dict, "metrics": dict}


def read_record(path: str | Path) -> dict:
    """The run record in `path`; a RecordError naming the file when it is not JSON (truncated, say)
    or not a record (see RECORD_FIELDS). OSError (no permission, say) passes through."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}), truncated or not a run record") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: JSON {type(record).__name__}, not a run record")
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind):
            raise RecordError(f"{path}: not a run record ({name!r} missing or not a {kind.__name__})")
    if "name" not in record["dataset"] or "test" not in record["metrics"]:
        raise RecordError(f"{path}: not a run record (no dataset name or test metrics)")
    return record


def load_records(folder: str | Path) -> list[dict]:
    """Every run record under `folder/runs/` (or `folder` itself), sorted by file name; a file that
    is not one (stray, truncated, unreadable) is named in a warning on stderr and skipped."""
    folder = Path(folder)
    runs = folder / "runs" if (folder / "runs").is_dir() else folder
    records = []
    for path in sorted(runs.glob("*.json")):
        try:
            records.append(read_record(path))
        except RecordError as exc:
            print(f"warning: {exc}; skipped", file=sys.stderr)
        except OSError as exc:
            print(f"warning: {path}: cannot read ({exc.strerror or exc}); skipped", file=sys.stderr)
    return records
