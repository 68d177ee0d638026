"""Datasets of the benchmark: registry, download with checksum, parsers and a ``stats`` CLI.

Every dataset becomes a list of per-user chronological item sequences (oldest first), with item
ids contiguous in ``1..n_items`` so that 0 is free for padding. The papers' leave-one-out protocol
uses the last item of each sequence as the test target and the one before it as the validation
target, so every user must have at least ``MIN_SEQUENCE_LEN`` (3) items.

Input formats
-------------
``sequences``
    One line per user: ``uid iid_1 iid_2 ... iid_n``, whitespace separated, oldest item first.
    User ids are 1..N and item ids 1..N (contiguous); both are kept as published.
``interactions``
    Tab separated ``user item rating unix_timestamp``, one interaction per line, in any order
    (MovieLens ``u.data``). Each user's interactions are sorted by timestamp, ties kept in file
    order; then users and items with fewer than ``min_core`` interactions are dropped repeatedly
    until none is left (iterative k-core; ``min_core`` is 5 for registered and user files alike
    unless given, and 1 keeps everything). Surviving items
    are renumbered 1..n in ascending order of their original id, users are listed in ascending
    order of their original id.
``pickle``
    A pickled ``dict`` with keys ``train``, ``val``, ``test``, ``umap``, ``smap`` (the DiffuRec
    ML-1M file): ``train[u]`` is user ``u``'s history without its last two items, ``val[u]``
    and ``test[u]`` are one-element lists. The sequence of ``u`` is
    ``train[u] + val[u] + test[u]``, users in ascending ``u``. The unpickler refuses every class
    reference, so a tampered file cannot run code.

Where the files live
--------------------
Registered datasets are looked up under a data folder: ``--data-dir`` / ``data_dir=``, else the
environment variable ``DIFFREC_BENCH_DATA``, else ``<project root>/data`` (git-ignored). A file
that is present must match its sha256; a missing one is downloaded from its public URL, checked,
and only then moved into place.

Every problem with the data raises :class:`DataError` with a one-line message naming the file
(and the line, where there is one).

CLI: ``python -m benchmark.data stats [NAMES...] [--data-dir D] [--json]``
or ``python -m benchmark.data stats --file PATH --format sequences|interactions|pickle``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from tabulate import tabulate

Format = Literal["sequences", "interactions", "pickle"]
FORMATS: tuple[str, ...] = get_args(Format)

ENV_VAR = "DIFFREC_BENCH_DATA"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOWNLOAD_TIMEOUT_S = 30
MIN_SEQUENCE_LEN = 3  # leave-one-out needs a training item, a validation and a test target
DEFAULT_MAX_LEN = 50
DEFAULT_CORE = 5  # iterative k-core of interaction files (ml-100k's, and a user's unless told)
PICKLE_KEYS = ("train", "val", "test", "umap", "smap")

_INT64_MAX = 2**63 - 1
# A positive integer of at most 18 digits (so it always fits in int64), with optional padding zeros.
_POSITIVE = r"0*[1-9][0-9]{0,17}"
_POSITIVE_ID_LINE = re.compile(rf"{_POSITIVE}(?:[ \t]+{_POSITIVE})*")
_INTEGER = re.compile(r"[+-]?[0-9]+")


class DataError(Exception):
    """A dataset file is missing, corrupt or malformed; the message is one line naming the file."""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: where its file lives, how to check and fetch it, how to parse it."""

    name: str
    format: Format
    relpath: str  # path of the file inside the data folder
    sha256: str  # of the file itself (for ml-100k: of the extracted u.data)
    url: str
    archive_member: str | None = None  # member of the zip at ``url`` that is the file, if any
    max_len: int = DEFAULT_MAX_LEN  # default input window of the models
    min_core: int | None = None  # iterative k-core filter (interactions format only)
    notes: str = ""


_S3REC_DATA = (
    "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/"
    "49a890dcb516c9ed3126564495234ea74d5cd566/data/"
)

DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        format="interactions",
        relpath="ml-100k/u.data",
        sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        archive_member="ml-100k/u.data",
        max_len=200,
        min_core=5,
        notes="raw GroupLens u.data; timestamp order (ties in file order), then iterative 5-core",
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        format="pickle",
        relpath="ml-1m/dataset.pkl",
        sha256="24517f75352c088e6163b0f1a1d61932390c08d837e191e02d09d1d35dc63ea4",
        url=(
            "https://raw.githubusercontent.com/WHUIR/DiffuRec/"
            "f6f70c9d78477591742c71c9ed83e5f1269530e8/datasets/data/ml-1m/dataset.pkl"
        ),
        max_len=200,
        notes="DiffuRec's pre-split pickle: all ratings, no item filter; train + val + test",
    ),
    "beauty": DatasetSpec(
        name="beauty",
        format="sequences",
        relpath="beauty/Beauty.txt",
        sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        url=_S3REC_DATA + "Beauty.txt",
        notes="Amazon 2014 Beauty, 5-core, as published by S3-Rec (used as is)",
    ),
    "toys": DatasetSpec(
        name="toys",
        format="sequences",
        relpath="toys/Toys_and_Games.txt",
        sha256="176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        url=_S3REC_DATA + "Toys_and_Games.txt",
        notes="Amazon 2014 Toys and Games, 5-core, as published by S3-Rec (used as is)",
    ),
    "sports": DatasetSpec(
        name="sports",
        format="sequences",
        relpath="sports/Sports_and_Outdoors.txt",
        sha256="2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        url=_S3REC_DATA + "Sports_and_Outdoors.txt",
        notes="Amazon 2014 Sports and Outdoors, 5-core, as published by S3-Rec (used as is)",
    ),
    "yelp": DatasetSpec(
        name="yelp",
        format="sequences",
        relpath="yelp/Yelp.txt",
        sha256="724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        url=_S3REC_DATA + "Yelp.txt",
        notes="Yelp 2019 as published by S3-Rec (used as is); sequences repeat items",
    ),
}


@dataclass(frozen=True)
class SequenceData:
    """Per-user chronological item sequences (read-only int64 arrays, items in 1..n_items)."""

    name: str
    format: str
    path: str
    sha256: str
    sequences: tuple[np.ndarray, ...]
    n_items: int
    max_len: int  # input window of the models (not the longest sequence)
    unfiltered: tuple[int, int] | None = None  # (users, items) before k-core filtering; None: not filtered

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return sum(len(seq) for seq in self.sequences)

    def stats(self) -> dict[str, Any]:
        """Counts and sequence-length summary; ``max_len`` here is the longest sequence."""
        lengths = [len(seq) for seq in self.sequences]
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_len": self.n_interactions / self.n_users,
            "min_len": min(lengths),
            "max_len": max(lengths),
            "sha256": self.sha256,
        }


# ---------------------------------------------------------------------------------------------
# Files: data folder, checksums, download


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$DIFFREC_BENCH_DATA``, else ``<project root>/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return PROJECT_ROOT / "data"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# sha256 of files already hashed in this process, keyed by (absolute path, size, mtime_ns).
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _cached_sha256(path: Path) -> str:
    """sha256 of ``path``, hashed at most once per (path, size, mtime) in this process."""
    try:
        key = _stat_key(path)
        if key not in _SHA256_CACHE:
            _SHA256_CACHE[key] = sha256_file(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _SHA256_CACHE[key]


def _new_temp_file(folder: Path, final_name: str, temps: list[Path]) -> Path:
    """An empty hidden temp file in ``folder``, recorded in ``temps`` for cleanup."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=f".{final_name}.", suffix=".part")
    os.close(handle)
    temps.append(Path(name))
    return temps[-1]


def _download(spec: DatasetSpec, dest: Path) -> None:
    """Fetch ``spec.url`` (extracting ``spec.archive_member``), check sha256, move onto ``dest``.

    On any failure nothing is left behind: temp files and folders created here are removed.
    """
    new_folders = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    temps: list[Path] = []
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fetched = _new_temp_file(dest.parent, dest.name, temps)
        with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with fetched.open("wb") as out:
                shutil.copyfileobj(response, out)
        payload = fetched
        if spec.archive_member is not None:
            payload = _new_temp_file(dest.parent, dest.name, temps)
            with zipfile.ZipFile(fetched) as archive, archive.open(spec.archive_member) as src:
                with payload.open("wb") as out:
                    shutil.copyfileobj(src, out)
        actual = sha256_file(payload)
        if actual != spec.sha256:
            raise DataError(f"the downloaded file has sha256 {actual}, expected {spec.sha256}")
        os.replace(payload, dest)
        _SHA256_CACHE[_stat_key(dest)] = actual
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        if not dest.exists():
            for folder in new_folders:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()


def ensure_file(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path:
    """Path of ``spec``'s file in the data folder, checked against its sha256.

    A missing file is downloaded from ``spec.url``; a present file with another checksum is an
    error (it is never overwritten).
    """
    dest = resolve_data_dir(data_dir) / spec.relpath
    if dest.exists():
        actual = _cached_sha256(dest)
        if actual != spec.sha256:
            raise DataError(
                f"{dest}: sha256 mismatch for {spec.name}: expected {spec.sha256}, got {actual}; "
                f"replace it with the file from {spec.url}"
            )
        return dest
    try:
        _download(spec, dest)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, http.client.HTTPException,
            DataError) as exc:
        raise DataError(
            f"{spec.name}: expected {dest}, which is missing, and downloading {spec.url} failed "
            f"({type(exc).__name__}: {exc}); put the file at that path, or pass --data-dir / set "
            f"{ENV_VAR} to a folder that holds {spec.relpath}"
        ) from None
    return dest


# ---------------------------------------------------------------------------------------------
# Parsers


def _content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines; blank lines only allowed at the end."""
    blank_at: int | None = None
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if lineno == 1 and raw.startswith("\ufeff"):
                    raise DataError(f"{path}: starts with a UTF-8 byte order mark (BOM); save it without one (sed -i '1s/^\\xEF\\xBB\\xBF//' {path})")
                line = raw.strip()
                if not line:
                    blank_at = blank_at or lineno
                elif blank_at is not None:
                    raise DataError(f"{path} line {blank_at}: blank line before the end of file")
                else:
                    yield lineno, line
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_int(token: str, what: str, where: str, *, positive: bool) -> int:
    """``token`` as an int64, or DataError (``what`` names the field, ``where`` the file/line)."""
    if not _INTEGER.fullmatch(token):
        raise DataError(f"{where}: token {token!r} is not an integer {what}")
    value = int(token)
    if positive and value < 1:
        raise DataError(f"{where}: {what} {value} is not positive (ids start at 1)")
    if abs(value) > _INT64_MAX:
        raise DataError(f"{where}: {what} {token} does not fit in 64 bits")
    return value


def _check_length(length: int, user: int, min_items: int, where: str) -> None:
    if length == 0:
        raise DataError(f"{where}: user {user} has no items")
    if length < min_items:
        raise DataError(f"{where}: user {user} has {length} items, fewer than the {min_items} required")


def _smallest_missing(sorted_ids: np.ndarray) -> int:
    """Smallest id in 1.. absent from ``sorted_ids`` (distinct, ascending, all >= 1)."""
    gaps = np.flatnonzero(sorted_ids != np.arange(1, len(sorted_ids) + 1))
    return int(gaps[0]) + 1 if len(gaps) else len(sorted_ids) + 1


def _check_contiguous_items(sequences: Sequence[np.ndarray], path: Path) -> int:
    """Number of items, after checking that item ids (all >= 1) are exactly 1..n_items."""
    ids = np.unique(np.concatenate(sequences))
    if ids[-1] != len(ids):
        raise DataError(
            f"{path}: item ids are not contiguous 1..N: item id {_smallest_missing(ids)} never "
            f"occurs ({len(ids)} distinct ids, largest {ids[-1]})"
        )
    return len(ids)


def _read_only(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.int64)
    array.flags.writeable = False
    return array


def read_sequences(path: str | Path, *, min_items: int = 1) -> list[np.ndarray]:
    """Parse a ``uid iid_1 ... iid_n`` file; sequences in ascending user id, ids kept as is."""
    path = Path(path)
    by_user: dict[int, np.ndarray] = {}
    line_of_user: dict[int, int] = {}
    for lineno, line in _content_lines(path):
        where = f"{path} line {lineno}"
        tokens = line.split()
        if _POSITIVE_ID_LINE.fullmatch(line):
            ids = [int(token) for token in tokens]
        else:
            ids = [
                _parse_int(token, "item id" if i else "user id", where, positive=True)
                for i, token in enumerate(tokens)
            ]
        user = ids[0]
        if user in line_of_user:
            first = line_of_user[user]
            raise DataError(f"{where}: duplicate user id {user} (first on line {first})")
        _check_length(len(ids) - 1, user, min_items, where)
        line_of_user[user] = lineno
        by_user[user] = _read_only(ids[1:])
    if not by_user:
        raise DataError(f"{path}: no users")
    users = np.array(sorted(by_user), dtype=np.int64)
    if users[-1] != len(users):
        raise DataError(
            f"{path}: user ids are not 1..N: user id {_smallest_missing(users)} is missing "
            f"({len(users)} users, largest id {users[-1]})"
        )
    sequences = [by_user[int(user)] for user in users]
    _check_contiguous_items(sequences, path)
    return sequences


def _k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions kept by iterative k-core filtering (to a fixed point).

    ``users`` and ``items`` are dense indices (0..n-1).
    """
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        still = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if np.array_equal(still, keep):
            return keep
        keep = still


def read_interactions(
    path: str | Path, min_core: int | None = None, *, min_items: int = 1
) -> list[np.ndarray]:
    """Parse ``user<TAB>item<TAB>rating<TAB>timestamp`` lines into per-user sequences.

    Each user's items are sorted by timestamp, ties in file order; then, if ``min_core`` is set,
    iterative ``min_core``-core filtering of users and items. Items are renumbered 1..n in
    ascending original id, users are listed in ascending original id.
    """
    return _interactions(path, min_core, min_items)[0]


def _interactions(
    path: str | Path, min_core: int | None, min_items: int
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """``read_interactions`` -> (sequences, (users, items) before the k-core filter)."""
    path = Path(path)
    if min_core is not None and min_core < 1:
        raise ValueError(f"min_core must be >= 1, got {min_core}")
    rows: list[tuple[int, int, int]] = []
    for lineno, line in _content_lines(path):
        where = f"{path} line {lineno}"
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(
                f"{where}: expected 4 tab-separated fields (user item rating timestamp), "
                f"found {len(fields)}"
            )
        user = _parse_int(fields[0], "user id", where, positive=True)
        item = _parse_int(fields[1], "item id", where, positive=True)
        _parse_int(fields[2], "rating", where, positive=False)
        timestamp = _parse_int(fields[3], "timestamp", where, positive=False)
        rows.append((user, item, timestamp))
    if not rows:
        raise DataError(f"{path}: no interactions")
    user_ids, item_ids, timestamps = (np.array(column, dtype=np.int64) for column in zip(*rows))
    users, user_index = np.unique(user_ids, return_inverse=True)
    all_items, item_index = np.unique(item_ids, return_inverse=True)
    if min_core is None:
        keep = np.ones(len(rows), dtype=bool)
    else:
        keep = _k_core(user_index, item_index, min_core)
    if not keep.any():
        raise DataError(
            f"{path}: no interactions left after {min_core}-core filtering of {len(users)} users and "
            f"{len(all_items)} items; a smaller k (--core K) keeps more"
        )
    # Sort by user, then timestamp, then file position (np.lexsort: last key is the primary one).
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((kept, timestamps[kept], user_index[kept]))]
    _, items = np.unique(item_index[order], return_inverse=True)
    items = items + 1
    starts = np.flatnonzero(np.diff(user_index[order], prepend=-1))
    sequences = [_read_only(seq) for seq in np.split(items, starts[1:])]
    for start, seq in zip(starts, sequences):
        _check_length(len(seq), int(users[user_index[order[start]]]), min_items, str(path))
    return sequences, (len(users), len(all_items))


class _NoClassUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers, numbers and strings."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"{self.path}: pickle references class {module}.{name}; refusing to load")


def _load_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return _NoClassUnpickler(handle, path).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # a corrupt pickle can fail in many ways (EOFError, ValueError, ...)
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: corrupt or truncated pickle ({reason})") from None


def _check_item_list(values: Any, where: str) -> list[int]:
    """``values`` as a list of item ids (ints >= 1 that fit in int64), or DataError."""
    if not isinstance(values, list):
        raise DataError(f"{where} is a {type(values).__name__}, not a list of item ids")
    for value in values:
        if type(value) is not int or not 1 <= value <= _INT64_MAX:
            raise DataError(f"{where} holds {value!r}, not a positive integer item id")
    return values


def read_pickle(path: str | Path, *, min_items: int = 1) -> list[np.ndarray]:
    """Parse a pre-split pickle: sequence of ``u`` is train[u] + val[u] + test[u], ascending u."""
    path = Path(path)
    content = _load_pickle(path)
    if not isinstance(content, dict):
        raise DataError(f"{path}: pickle holds a {type(content).__name__}, expected a dict")
    for key in PICKLE_KEYS:
        if key not in content:
            raise DataError(f"{path}: pickle has no key {key!r} (expected {', '.join(PICKLE_KEYS)})")
        if not isinstance(content[key], dict):
            raise DataError(f"{path}: {key} is a {type(content[key]).__name__}, expected a dict")
    train, val, test = content["train"], content["val"], content["test"]
    for user in train:
        if type(user) is not int:
            raise DataError(f"{path}: train has user key {user!r}, expected integers")
    for split in ("val", "test"):
        unmatched = train.keys() ^ content[split].keys()
        if unmatched:
            user = min(unmatched, key=repr)
            inside, outside = ("train", split) if user in train else (split, "train")
            raise DataError(f"{path}: user {user!r} is in {inside} but not in {outside}")
    if not train:
        raise DataError(f"{path}: no users")
    sequences = []
    for user in sorted(train):
        items = _check_item_list(train[user], f"{path}: train[{user}]")
        for split, targets in (("val", val[user]), ("test", test[user])):
            _check_item_list(targets, f"{path}: {split}[{user}]")
            if len(targets) != 1:
                raise DataError(
                    f"{path}: {split}[{user}] has {len(targets)} items, expected exactly 1"
                )
        sequence = items + val[user] + test[user]
        _check_length(len(sequence), user, min_items, str(path))
        sequences.append(_read_only(sequence))
    _check_contiguous_items(sequences, path)
    return sequences


# ---------------------------------------------------------------------------------------------
# Loading


# Parsed datasets of this process, keyed by (path, sha256, format, min_core): (sequences, n_items,
# (users, items) before k-core filtering or None).
_PARSED: dict[tuple[str, str, str, int | None], tuple[tuple[np.ndarray, ...], int, tuple[int, int] | None]] = {}


def _parse(path: Path, fmt: str, min_core: int | None) -> tuple[tuple[np.ndarray, ...], tuple[int, int] | None]:
    if fmt == "sequences":
        return tuple(read_sequences(path, min_items=MIN_SEQUENCE_LEN)), None
    if fmt == "interactions":
        sequences, unfiltered = _interactions(path, min_core, MIN_SEQUENCE_LEN)
        return tuple(sequences), unfiltered if min_core is not None else None
    return tuple(read_pickle(path, min_items=MIN_SEQUENCE_LEN)), None


def load_dataset(
    name: str | None = None,
    *,
    data_dir: str | Path | None = None,
    file: str | Path | None = None,
    fmt: str | None = None,
    max_len: int | None = None,
    min_core: int | None = None,
) -> SequenceData:
    """Load a registered dataset by ``name``, or a user ``file`` in format ``fmt``.

    A registered file is checked against its sha256 (and downloaded if missing); a user file is
    not checked, but its sha256 is recorded. ``max_len`` and ``min_core`` default to the spec's
    values (for user files: 50, and 5 for interactions); ``min_core`` only applies to interactions. Every user
    needs at least 3 items. Parsed data are cached in-process, so repeated loads are cheap.
    """
    if (name is None) == (file is None):
        raise DataError("load_dataset needs exactly one of a dataset name or file=")
    if name is not None:
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
        if fmt is not None:
            raise DataError(f"fmt= applies to file= only ({name} is {DATASETS[name].format})")
        spec = DATASETS[name]
        path = ensure_file(spec, data_dir)
        sha256, fmt = spec.sha256, spec.format
        max_len = spec.max_len if max_len is None else max_len
        min_core = spec.min_core if min_core is None else min_core
    else:
        path = Path(file)
        if fmt not in FORMATS:
            raise DataError(f"{path}: fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a data file")
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        name, sha256 = path.stem, _cached_sha256(path)
        max_len = DEFAULT_MAX_LEN if max_len is None else max_len
        if min_core is None and fmt == "interactions":
            min_core = DEFAULT_CORE
    if min_core is not None and fmt != "interactions":
        raise DataError(f"{path}: min_core applies to the interactions format only, not {fmt}")
    if min_core is not None and min_core < 1:
        raise DataError(f"{path}: min_core must be >= 1 (1 keeps everything), got {min_core}")
    key = (str(path.resolve()), sha256, fmt, min_core)
    if key not in _PARSED:
        sequences, unfiltered = _parse(path, fmt, min_core)
        _PARSED[key] = (sequences, int(max(seq.max() for seq in sequences)), unfiltered)
    sequences, n_items, unfiltered = _PARSED[key]
    return SequenceData(name, fmt, str(path), sha256, sequences, n_items, max_len, unfiltered)


# ---------------------------------------------------------------------------------------------
# CLI


def _stats_command(args: argparse.Namespace) -> int:
    if args.file is not None and (args.names or args.format is None):
        args.usage_error("--file needs --format and no dataset names")
    if args.file is None and args.format is not None:
        args.usage_error("--format applies to --file only")
    if args.core is not None and args.format != "interactions":
        args.usage_error("--core applies to an interactions --file only")
    if args.file is not None:
        datasets = [load_dataset(file=args.file, fmt=args.format, min_core=args.core)]
    else:
        names = args.names or list(DATASETS)
        datasets = [load_dataset(name, data_dir=args.data_dir) for name in names]
    rows = [dataset.stats() for dataset in datasets]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ("name", "users", "items", "interactions", "avg_len", "min_len", "max_len")
        table = [[row[column] for column in columns] for row in rows]
        print(tabulate(table, headers=columns, floatfmt=".2f", intfmt=","))
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="users, items, interactions and lengths of datasets")
    stats.add_argument(
        "names", nargs="*", metavar="NAME", help=f"datasets (default: {', '.join(DATASETS)})"
    )
    stats.add_argument("--data-dir", help=f"data folder (default: ${ENV_VAR}, else <project>/data)")
    stats.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    stats.add_argument("--file", help="a dataset file of your own instead of registered names")
    stats.add_argument("--format", choices=FORMATS, help="format of --file")
    stats.add_argument("--core", type=int, metavar="K", help=f"k-core of an interactions --file (default {DEFAULT_CORE}; 1 keeps everything)")
    stats.set_defaults(func=_stats_command, usage_error=stats.error)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 on a data error; argparse exits 2 on bad usage)."""
    args = _build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
