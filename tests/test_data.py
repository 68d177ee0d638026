"""Tests of benchmark.data: published counts on the real files, checksums, download, parsers, CLI.

The real datasets are found through DIFFREC_BENCH_DATA (tests/conftest.py defaults it to
../shared/datasets); every malformed-input case uses tiny synthetic files in tmp_path.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import data
from benchmark.data import DataError, DatasetSpec, load_dataset

PUBLISHED = {  # users, items, interactions after preprocessing
    "ml-100k": (943, 1349, 99287),
    "ml-1m": (6040, 3706, 1000209),
    "beauty": (22363, 12101, 198502),
    "toys": (19412, 11924, 167597),
    "sports": (35598, 18357, 296337),
    "yelp": (30431, 20033, 316354),
}
UNREACHABLE_URL = "http://127.0.0.1:9/x"


def real_data_dir(name: str) -> Path:
    """The data folder holding dataset ``name``; skip when it is not available here."""
    folder = data.resolve_data_dir(None)
    if not (folder / data.DATASETS[name].relpath).is_file():
        pytest.skip(f"{name} not found under {folder} (set DIFFREC_BENCH_DATA)")
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def fake_spec(content: bytes, **changes) -> DatasetSpec:
    spec = DatasetSpec(
        name="tiny",
        format="sequences",
        relpath="tiny/tiny.txt",
        sha256=hashlib.sha256(content).hexdigest(),
        url=UNREACHABLE_URL,
        notes="synthetic",
    )
    return dataclasses.replace(spec, **changes)


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


TINY_SEQUENCES = "1 1 2 3\n2 2 3 4 1\n3 4 3 2\n"


# --- real datasets -----------------------------------------------------------------------------


def test_registry_lists_the_six_datasets():
    assert list(data.DATASETS) == list(PUBLISHED)
    for name, spec in data.DATASETS.items():
        assert spec.name == name and len(spec.sha256) == 64 and spec.url.startswith("https://")
        assert spec.max_len == (200 if name.startswith("ml-") else 50)
    assert data.DATASETS["ml-100k"].min_core == 5
    assert data.DATASETS["ml-100k"].archive_member == "ml-100k/u.data"


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_counts(name):
    loaded = load_dataset(name, data_dir=real_data_dir(name))
    assert (loaded.n_users, loaded.n_items, loaded.n_interactions) == PUBLISHED[name]
    assert loaded.sha256 == data.DATASETS[name].sha256
    assert loaded.max_len == data.DATASETS[name].max_len
    assert all(seq.dtype == np.int64 and seq.ndim == 1 and len(seq) >= 3 for seq in loaded.sequences)
    assert min(int(seq.min()) for seq in loaded.sequences) == 1
    assert max(int(seq.max()) for seq in loaded.sequences) == loaded.n_items


def test_loaded_data_is_cached_and_read_only():
    folder = real_data_dir("beauty")
    first = load_dataset("beauty", data_dir=folder)
    again = load_dataset("beauty", data_dir=folder, max_len=20)
    assert again.sequences is first.sequences and again.max_len == 20
    with pytest.raises(ValueError):
        first.sequences[0][0] = 7


def test_ml100k_matches_an_independent_pandas_pipeline():
    """Stable sort by (user, timestamp), iterative 5-core, items renumbered by ascending id."""
    path = real_data_dir("ml-100k") / data.DATASETS["ml-100k"].relpath
    frame = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "time"])
    frame = frame.sort_values(["user", "time"], kind="stable")
    while True:
        keep = (frame.groupby("user")["item"].transform("size") >= 5) & (
            frame.groupby("item")["user"].transform("size") >= 5
        )
        if keep.all():
            break
        frame = frame[keep]
    frame = frame.assign(item=np.unique(frame["item"], return_inverse=True)[1] + 1)
    expected = [group.to_numpy() for _, group in frame.groupby("user")["item"]]
    loaded = load_dataset("ml-100k")
    assert len(loaded.sequences) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.sequences, expected))


def test_ml1m_sequence_is_train_then_val_then_test():
    loaded = load_dataset("ml-1m", data_dir=real_data_dir("ml-1m"))
    first = loaded.sequences[0]
    assert first[:3].tolist() == [2970, 1575, 958] and first[-2:].tolist() == [1440, 48]


def test_cli_json_counts(capsys):
    folder = real_data_dir("ml-100k")
    assert data.main(["stats", "ml-100k", "--data-dir", str(folder), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    counts = (row["users"], row["items"], row["interactions"])
    assert row["name"] == "ml-100k" and counts == PUBLISHED["ml-100k"]
    assert row["min_len"] == 19 and row["max_len"] == 648


# --- data folder, checksums, download ----------------------------------------------------------


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFREC_BENCH_DATA", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DIFFREC_BENCH_DATA")
    assert data.resolve_data_dir(None) == Path(data.__file__).resolve().parent.parent / "data"


def test_present_file_with_right_checksum_is_used(tmp_path):
    content = TINY_SEQUENCES.encode()
    write(tmp_path / "tiny.txt", TINY_SEQUENCES)
    spec = fake_spec(content, relpath="tiny.txt")
    assert data.ensure_file(spec, tmp_path) == tmp_path / "tiny.txt"
    assert data.sha256_file(tmp_path / "tiny.txt") == spec.sha256


def test_checksums_are_hashed_once_per_file_version(tmp_path, monkeypatch):
    calls = []
    real_sha256_file = data.sha256_file
    monkeypatch.setattr(data, "sha256_file", lambda path: calls.append(path) or real_sha256_file(path))
    path = write(tmp_path / "tiny.txt", TINY_SEQUENCES)
    spec = fake_spec(TINY_SEQUENCES.encode(), relpath="tiny.txt")
    data.ensure_file(spec, tmp_path)
    data.ensure_file(spec, tmp_path)
    assert len(calls) == 1
    write(path, TINY_SEQUENCES + "4 1 2 3\n")  # another size: hashed again, and now wrong
    with pytest.raises(DataError, match="sha256 mismatch"):
        data.ensure_file(spec, tmp_path)
    assert len(calls) == 2


def test_checksum_mismatch_is_an_error(tmp_path):
    write(tmp_path / "tiny.txt", TINY_SEQUENCES)
    spec = fake_spec(b"other bytes", relpath="tiny.txt")
    with pytest.raises(DataError) as caught:
        data.ensure_file(spec, tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "tiny.txt") in message
    assert spec.sha256 in message and data.sha256_file(tmp_path / "tiny.txt") in message
    assert "\n" not in message


@pytest.mark.parametrize("member", [None, "tiny/tiny.txt"])
def test_missing_file_and_unreachable_url(tmp_path, member):
    spec = fake_spec(b"whatever", archive_member=member)
    with pytest.raises(DataError) as caught:
        data.ensure_file(spec, tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "tiny" / "tiny.txt") in message
    assert UNREACHABLE_URL in message and "--data-dir" in message and "DIFFREC_BENCH_DATA" in message
    assert all_files(tmp_path) == []  # no file, temp file or folder left behind


def test_download_extracts_zip_member(tmp_path):
    archive = tmp_path / "src" / "tiny.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pack/tiny.txt", TINY_SEQUENCES)
        zf.writestr("pack/other.txt", "noise")
    spec = fake_spec(TINY_SEQUENCES.encode(), url=archive.as_uri(), archive_member="pack/tiny.txt")
    dest = data.ensure_file(spec, tmp_path / "data")
    assert dest == tmp_path / "data" / "tiny" / "tiny.txt"
    assert dest.read_text() == TINY_SEQUENCES
    assert all_files(tmp_path / "data") == ["tiny", "tiny/tiny.txt"]


@pytest.mark.parametrize("member", [None, "pack/absent.txt"])
def test_failed_download_leaves_nothing(tmp_path, member):
    """A download with the wrong checksum, or a zip without the member, leaves nothing behind."""
    source = tmp_path / "src" / "tiny.zip"
    source.parent.mkdir()
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("pack/tiny.txt", TINY_SEQUENCES)
    existing = tmp_path / "data" / "tiny"
    existing.mkdir(parents=True)
    spec = fake_spec(TINY_SEQUENCES.encode(), url=source.as_uri(), archive_member=member)
    with pytest.raises(DataError, match="tiny.txt"):
        data.ensure_file(spec, tmp_path / "data")
    assert all_files(tmp_path / "data") == ["tiny"]  # pre-existing folder kept, nothing else


# --- read_sequences ----------------------------------------------------------------------------


def test_read_sequences_keeps_published_ids(tmp_path):
    path = write(tmp_path / "s.txt", "2 2 3 4 1\n1 1 2 3\n3 4 3 2\n\n")
    sequences = data.read_sequences(path)
    assert [seq.tolist() for seq in sequences] == [[1, 2, 3], [2, 3, 4, 1], [4, 3, 2]]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("1 1 2\n2 x3 1\n", 2, "token 'x3' is not an integer item id"),
        ("1 1 2\nu2 1 2\n", 2, "token 'u2' is not an integer user id"),
        ("1 1 2\n2 2.5 1\n", 2, "token '2.5' is not an integer item id"),
        ("1 1 2\n2 0 1\n", 2, "item id 0 is not positive"),
        ("1 1 2\n2 -3 1\n", 2, "item id -3 is not positive"),
        ("0 1 2\n", 1, "user id 0 is not positive"),
        ("1 1 2\n2\n3 1 2\n", 2, "user 2 has no items"),
        ("1 1 2\n\n2 1 2\n", 2, "blank line"),
        ("1 1 2\n2 2 1\n1 2 1\n", 3, "duplicate user id 1 (first on line 1)"),
    ],
)
def test_malformed_sequences(tmp_path, text, line, fragment):
    path = write(tmp_path / "Beauty.txt", text)
    with pytest.raises(DataError) as caught:
        data.read_sequences(path)
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1 1 2\n3 2 1\n", "user id 2 is missing"),
        ("1 1 2\n2 4 1\n", "item id 3 never occurs"),
        ("1 2 3\n2 3 4\n", "item id 1 never occurs"),
        ("", "no users"),
    ],
)
def test_sequences_ids_must_be_contiguous(tmp_path, text, fragment):
    path = write(tmp_path / "s.txt", text)
    with pytest.raises(DataError, match=fragment) as caught:
        data.read_sequences(path)
    assert str(caught.value).startswith(f"{path}: ")


# --- read_interactions -------------------------------------------------------------------------


def interactions(*rows: tuple[int, int, int, int]) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in rows)


def test_interactions_ties_keep_file_order(tmp_path):
    path = write(
        tmp_path / "u.data",
        interactions((7, 50, 3, 100), (7, 30, 3, 50), (3, 10, 1, 9), (7, 90, 3, 100), (7, 70, 3, 100)),
    )
    # Users in ascending original id (3, 7); items renumbered by ascending original id
    # (10->1, 30->2, 50->3, 70->4, 90->5); the three items at t=100 stay in file order 50, 90, 70.
    assert [seq.tolist() for seq in data.read_interactions(path)] == [[1], [2, 3, 5, 4]]


def test_k_core_iterates_to_a_fixed_point(tmp_path):
    # 2-core: user 4 (one interaction) goes first; then item 30 has one interaction left, so it
    # goes; then user 3 has one left and goes. One pass would keep users 1-3 and item 30.
    rows = [(1, 10, 5, 1), (1, 20, 5, 2), (2, 10, 5, 1), (2, 20, 5, 2)]
    rows += [(3, 20, 5, 1), (3, 30, 5, 2), (4, 30, 5, 3)]
    path = write(tmp_path / "u.data", interactions(*rows))
    assert [seq.tolist() for seq in data.read_interactions(path, min_core=2)] == [[1, 2], [1, 2]]
    assert len(data.read_interactions(path)) == 4


def test_k_core_can_remove_everything(tmp_path):
    path = write(tmp_path / "u.data", interactions((1, 1, 5, 1), (2, 2, 5, 1)))
    with pytest.raises(DataError, match="no interactions left after 2-core"):
        data.read_interactions(path, min_core=2)


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("1\t2\t3", "expected 4 tab-separated fields"),
        ("1\t2\t3\t4\t5", "found 5"),
        ("1 2 3 4", "found 1"),
        ("1\tb\t3\t4", "token 'b' is not an integer item id"),
        ("1\t2\t3.5\t4", "token '3.5' is not an integer rating"),
        ("1\t2\t3\tnoon", "token 'noon' is not an integer timestamp"),
        ("0\t2\t3\t4", "user id 0 is not positive"),
        ("1\t-2\t3\t4", "item id -2 is not positive"),
    ],
)
def test_malformed_interactions(tmp_path, line, fragment):
    path = write(tmp_path / "u.data", interactions((1, 1, 5, 1)) + line + "\n")
    with pytest.raises(DataError) as caught:
        data.read_interactions(path)
    assert str(caught.value).startswith(f"{path} line 2: ")
    assert fragment in str(caught.value)


# --- read_pickle -------------------------------------------------------------------------------


def split_dict(**changes) -> dict:
    content = {
        "train": {0: [1, 2], 1: [3, 1]},
        "val": {0: [3], 1: [2]},
        "test": {0: [4], 1: [4]},
        "umap": {10: 0, 11: 1},
        "smap": {5: 1, 6: 2, 7: 3, 8: 4},
    }
    content.update(changes)
    return content


def write_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_read_pickle_concatenates_splits(tmp_path):
    path = write_pickle(tmp_path / "dataset.pkl", split_dict())
    assert [seq.tolist() for seq in data.read_pickle(path)] == [[1, 2, 3, 4], [3, 1, 2, 4]]


class WritesMarker:
    """Unpickling an instance calls open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    payload = pickle.dumps(split_dict(umap=WritesMarker(tmp_path / "marker")))
    pickle.loads(pickle.dumps(WritesMarker(tmp_path / "proof"))).close()
    assert (tmp_path / "proof").exists()  # the payload does run under a plain unpickler
    path = tmp_path / "dataset.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError) as caught:
        data.read_pickle(path)
    expected = rf"{re.escape(str(path))}: pickle references class (io|builtins)\.open; refusing to load"
    assert re.fullmatch(expected, str(caught.value))
    assert not (tmp_path / "marker").exists()


def test_pickle_with_any_class_is_refused(tmp_path):
    path = write_pickle(tmp_path / "dataset.pkl", collections.OrderedDict(split_dict()))
    with pytest.raises(DataError, match=r"references class collections\.OrderedDict; refusing to load"):
        data.read_pickle(path)


def test_truncated_pickle(tmp_path):
    path = tmp_path / "dataset.pkl"
    path.write_bytes(pickle.dumps(split_dict())[:-20])
    with pytest.raises(DataError, match="corrupt or truncated pickle") as caught:
        data.read_pickle(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([1, 2, 3], "pickle holds a list, expected a dict"),
        ({k: v for k, v in split_dict().items() if k != "val"}, "no key 'val'"),
        (split_dict(train=[[1, 2]]), "train is a list, expected a dict"),
        (split_dict(train={0: (1, 2), 1: [3, 1]}), r"train\[0\] is a tuple, not a list"),
        (split_dict(train={0: [1, "2"], 1: [3, 1]}), r"train\[0\] holds '2'"),
        (split_dict(val={0: [3, 1], 1: [2]}), r"val\[0\] has 2 items, expected exactly 1"),
        (split_dict(test={0: [], 1: [4]}), r"test\[0\] has 0 items, expected exactly 1"),
        (split_dict(test={0: [4]}), "user 1 is in train but not in test"),
        (split_dict(train={0: [1, 2], 1: [3, 1]}, val={0: [3], 1: [2], 2: [1]}), "user 2 is in val but not in train"),
        (split_dict(test={0: [5], 1: [5]}), "item id 4 never occurs"),
    ],
)
def test_malformed_pickle(tmp_path, content, fragment):
    path = write_pickle(tmp_path / "dataset.pkl", content)
    with pytest.raises(DataError, match=fragment) as caught:
        data.read_pickle(path)
    assert str(caught.value).startswith(f"{path}: ")


# --- load_dataset and the CLI on user files ----------------------------------------------------


def test_load_user_file(tmp_path):
    path = write(tmp_path / "mine.txt", TINY_SEQUENCES)
    loaded = load_dataset(file=path, fmt="sequences")
    assert (loaded.name, loaded.format, loaded.path) == ("mine", "sequences", str(path))
    assert loaded.sha256 == data.sha256_file(path) and loaded.max_len == 50
    assert loaded.stats() == {
        "name": "mine", "users": 3, "items": 4, "interactions": 10,
        "avg_len": 10 / 3, "min_len": 3, "max_len": 4, "sha256": loaded.sha256,
    }


def test_user_file_interactions_with_min_core(tmp_path):
    rows = [(u, i, 5, t) for u in (1, 2, 3) for t, i in enumerate((1, 2, 3))] + [(4, 9, 5, 1)]
    path = write(tmp_path / "u.data", interactions(*rows))
    loaded = load_dataset(file=path, fmt="interactions", min_core=2)
    assert (loaded.n_users, loaded.n_items, loaded.n_interactions) == (3, 3, 9)


def test_users_need_three_items(tmp_path):
    path = write(tmp_path / "short.txt", "1 1 2 3\n2 2 3\n")
    with pytest.raises(DataError) as caught:
        load_dataset(file=path, fmt="sequences")
    assert str(caught.value) == f"{path} line 2: user 2 has 2 items, fewer than the 3 required"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({}, "exactly one of"),
        ({"name": "beauty", "file": "x.txt"}, "exactly one of"),
        ({"name": "nope"}, "unknown dataset 'nope'; known datasets: ml-100k, ml-1m, beauty"),
        ({"file": "x.txt", "fmt": "csv"}, "fmt must be one of sequences, interactions, pickle"),
        ({"file": "missing.txt", "fmt": "sequences"}, "no such file"),
        ({"name": "beauty", "fmt": "sequences"}, "fmt= applies to file= only"),
    ],
)
def test_load_dataset_argument_errors(kwargs, fragment):
    with pytest.raises(DataError, match=fragment):
        load_dataset(**kwargs)


def test_min_core_only_for_interactions(tmp_path):
    path = write(tmp_path / "mine.txt", TINY_SEQUENCES)
    with pytest.raises(DataError, match="min_core applies to the interactions format only"):
        load_dataset(file=path, fmt="sequences", min_core=5)


def test_cli_stats_on_user_file(tmp_path, capsys):
    path = write(tmp_path / "mine.txt", TINY_SEQUENCES)
    assert data.main(["stats", "--file", str(path), "--format", "sequences", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["users"], row["items"], row["interactions"]) == ("mine", 3, 4, 10)


def test_cli_table(tmp_path, capsys):
    path = write(tmp_path / "mine.txt", TINY_SEQUENCES)
    assert data.main(["stats", "--file", str(path), "--format", "sequences"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["name", "users", "items", "interactions", "avg_len", "min_len", "max_len"]
    assert row.split() == ["mine", "3", "4", "10", "3.33", "3", "4"]


def test_cli_unknown_dataset(capsys):
    assert data.main(["stats", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: unknown dataset 'nope'") and captured.err.count("\n") == 1


def test_cli_data_error_on_malformed_file(tmp_path, capsys):
    path = write(tmp_path / "bad.txt", "1 1 2 3\n2 2 x 4\n")
    assert data.main(["stats", "--file", str(path), "--format", "sequences"]) == 2
    assert capsys.readouterr().err == f"error: {path} line 2: token 'x' is not an integer item id\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["stats", "--file", "x.txt"],
        ["stats", "--format", "pickle"],
        ["stats", "--file", "x", "--format", "csv"],
        ["stats", "beauty", "--file", "x", "--format", "sequences"],
    ],
)
def test_cli_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as caught:
        data.main(argv)
    assert caught.value.code == 2
