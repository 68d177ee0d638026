"""Bad settings and bad files are refused before any training: one line on stderr naming the option,
key or file, exit code 2, nothing written into OUT (issue 17). Stray files in OUT/runs are named
and skipped; records are written with the umask's mode."""
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from benchmark import cli, data, records, report, run
from benchmark.config import ConfigError, build_config
from benchmark.data import DataError, load_dataset
from benchmark.registry import build_model
from benchmark.suite import load_suite_file, resolve_suite
from benchmark.train import TrainConfig, load_trained
from baselines.sasrec import SASRecConfig
from tests.synthetic import chain_dataset, write_sequences


@pytest.fixture
def suite_file(tmp_path):
    """A one-cell suite on a tiny file (pop trains nothing, so a run takes a second)."""
    write_sequences(tmp_path / "chain.txt", chain_dataset(n_items=12, users=30, min_len=4, max_len_items=6))
    path = tmp_path / "s.toml"
    path.write_text('datasets = [{file = "chain.txt", format = "sequences"}]\nmodels = ["pop"]\n[train]\nepochs = 1\n')
    return path


def refused(capsys, argv, *fragments) -> str:
    """Runs benchmark.run; asserts exit code 2 and one stderr line "error: ..." holding `fragments`."""
    assert run.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    "option, fragments",
    [
        (["--seeds", "-1"], ["--seeds", "from 0 to 4294967295", "got -1"]),
        (["--seeds", "0", "4294967296"], ["--seeds", "got 4294967296"]),
        (["--threads", "-1"], ["--threads -1", ">= 0"]),
        (["--device", "foo"], ["--device 'foo'"]),
        (["--set", "train.lr=nan"], ["lr: 'nan' is not a finite number"]),
        (["--set", "train.lr=inf"], ["lr: 'inf' is not a finite number"]),
        (["--set", "train.weight_decay=-inf"], ["weight_decay: '-inf' is not a finite number"]),
        (["--set", "data.max_len=0"], ["data: max_len must be >= 1, got 0"]),
        (["--set", "data.max_len=-3"], ["data: max_len must be >= 1, got -3"]),
        (["--set", "data.users=0"], ["data: users must be >= 1, got 0"]),
        (["--set", "data.users=-5"], ["data: users must be >= 1, got -5"]),
        (["--set", "data.users=many"], ["data.users: 'many' is not an integer"]),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, suite_file, option, fragments):
    out = tmp_path / "out"
    refused(capsys, ["--suite", str(suite_file), "--out", str(out), *option], *fragments)
    assert not out.exists()


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="this torch build has CUDA")
def test_cuda_on_a_build_without_cuda_says_how_to_get_one(tmp_path, capsys, suite_file):
    refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out"), "--device", "cuda"], "built without CUDA", "pyproject.toml", "CUDA wheel")
    assert not (tmp_path / "out").exists()


def test_cuda_devices_are_accepted_where_there_are_gpus(monkeypatch):
    """What a CUDA machine sees (simulated: this test must run on CPU-only machines too)."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("cpu", "cuda", "cuda:0", "cuda:1"):
        cli.check_device(device)
    with pytest.raises(ConfigError, match=r"--device cuda:2: no such CUDA device here \(2 visible\)"):
        cli.check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no such CUDA device"):
        cli.check_device("cuda")
    with pytest.raises(ConfigError, match="not supported"):
        cli.check_device("meta")


def test_non_finite_floats_are_refused_for_every_float_field():
    for value in (float("nan"), float("inf"), "-inf", "nan"):
        with pytest.raises(ConfigError, match="is not a finite number"):
            build_config(TrainConfig, {"weight_decay": value})
        with pytest.raises(ConfigError, match="dropout: .* is not a finite number"):
            build_config(SASRecConfig, {"dropout": value})
    with pytest.raises(ConfigError, match="is not an integer"):
        build_config(TrainConfig, {"epochs": float("inf")})  # int(inf) is an OverflowError, not a traceback


BASE = {"datasets": ["ml-100k"], "models": ["pop"], "seeds": [0]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tune": {"auto": "ture"}}, r"\[tune\]\.auto: 'ture' is not a boolean"),
        ({"tune": {"auto": 2}}, r"\[tune\]\.auto: 2 is not a boolean"),
        ({"tune": {"trials": 2.5}}, r"\[tune\]\.trials: 2.5 is not an integer"),
        ({"tune": {"seed": -1}}, "seed must be from 0 to 4294967295"),
        ({"tune": {"models": 3}}, r"\[tune\]\.models: 3 is not a list"),
        ({"tune": {"trial_time_budget_s": float("inf")}}, "trial_time_budget_s: inf is not a finite number"),
        ({"data": {"users": 0}}, "users must be >= 1"),
        ({"data": {"max_len": "long"}}, r"data\.max_len: 'long' is not an integer"),
        ({"seeds": [0, 2**32]}, "seeds: seeds must be from 0 to 4294967295"),
        ({"ablation": [{"model": "pop", "points": [{"hidden": 8}], "seeds": [-2]}]}, r"ablation 1 \(pop\)\.seeds: seeds must be from 0"),
        ({"models": 3}, r"models must be \"all\" or a list of model names, got 3"),
        ({"description": ["a"]}, "description must be a string"),
        ({"train": 3}, r"\[train\]: expected a table"),
        ({"model": {"pop": 3}}, r"\[model\.pop\]: expected a table"),
        ({"train_model": [1]}, r"\[train_model\]: expected a table"),
    ],
)
def test_every_typed_key_of_a_suite_file_is_checked(change, message):
    with pytest.raises(ConfigError, match=message):
        resolve_suite("t", {**BASE, **change})


def test_a_suite_file_with_a_misspelt_boolean_is_refused(tmp_path, capsys, suite_file):
    suite_file.write_text(suite_file.read_text() + '[tune]\nauto = "ture"\n')
    refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out")], "[tune].auto: 'ture' is not a boolean")
    assert not (tmp_path / "out").exists()


# --- OUT ------------------------------------------------------------------------------------------


def test_an_out_that_is_a_file_or_under_a_file_is_refused_at_start(tmp_path, capsys, suite_file):
    blocker = tmp_path / "results.txt"
    blocker.write_text("mine\n")
    for out in (blocker, blocker / "sub"):
        refused(capsys, ["--suite", str(suite_file), "--out", str(out)], f"{blocker}: is a file, not a folder")
    assert blocker.read_text() == "mine\n"


def unwritable_folder(tmp_path) -> Path:
    """A folder this process cannot create files in: a read-only one, or, as root (who writes
    through permissions), one under /sys, where nobody may create files."""
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root, which writes through permissions, and there is no /sys to test with")
    return Path("/sys/diffrec-bench-out")


def test_an_out_that_cannot_be_written_is_refused_at_start(tmp_path, capsys, suite_file):
    out = unwritable_folder(tmp_path)
    refused(capsys, ["--suite", str(suite_file), "--out", str(out)], str(out), "cannot write there")
    assert not out.exists()


def test_a_record_that_cannot_be_read_is_an_error_not_a_rerun(tmp_path, capsys, suite_file, monkeypatch):
    out = tmp_path / "out"
    assert run.main(["--suite", str(suite_file), "--out", str(out), "--no-progress", "--no-report"]) == 0
    (record,) = (out / "runs").glob("*.json")
    real_read_text = Path.read_text

    def read_text(path, *args, **kwargs):  # chmod 000 does not stop root: fail the read itself
        if path == record:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    capsys.readouterr()
    refused(capsys, ["--suite", str(suite_file), "--out", str(out), "--no-report"], f"{record}: cannot read (Permission denied)", "delete it")


def test_records_tables_and_the_readme_take_the_umask_mode(tmp_path, capsys, suite_file):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert run.main(["--suite", str(suite_file), "--out", str(out), "--no-progress"]) == 0
        os.umask(0o077)
        private = records.write_json_atomic(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"README.md"} and any(p.suffix == ".json" for p in written)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: "0o644" for p in written}
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


# --- stray files in OUT ---------------------------------------------------------------------------


STRAY = {"truncated.json": '{"key": "x", "metr', "list.json": "[1, 2]\n", "notes.json": '{"note": "mine"}\n'}


def skipped(err: str) -> list[str]:
    """The files named by the "warning: FILE: ...; skipped" lines of `err`."""
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert all(line.endswith("; skipped") for line in lines), lines
    return sorted(Path(line.removeprefix("warning: ").split(": ")[0]).name for line in lines)


def test_stray_json_in_runs_is_named_and_skipped_by_run_and_report(tmp_path, capsys, suite_file):
    out = tmp_path / "out"
    assert run.main(["--suite", str(suite_file), "--out", str(out), "--no-progress", "--no-report"]) == 0
    for name, text in STRAY.items():
        (out / "runs" / name).write_text(text)
    capsys.readouterr()
    assert run.main(["--suite", str(suite_file), "--out", str(out), "--no-progress"]) == 0  # all done: the report
    assert skipped(capsys.readouterr().err) == sorted(STRAY)
    assert report.main(["--out", str(out)]) == 0
    assert skipped(capsys.readouterr().err) == sorted(STRAY)
    assert [r["model"] for r in records.load_records(out)] == ["pop"]


# --- damaged snapshots and checkpoints --------------------------------------------------------------


def test_a_damaged_snapshot_is_one_line_naming_it_before_any_training(tmp_path, capsys, suite_file, monkeypatch):
    suite_file.write_text(suite_file.read_text().replace('["pop"]', '["sasrec-ce"]\nseeds = [0, 1]') + "[model.all]\nhidden = 8\n")
    first, second = resolve_suite(*load_suite_file(str(suite_file))).cells
    monkeypatch.setattr(run, "fit_rules", lambda *a, **kw: pytest.fail("trained before refusing"))
    out = tmp_path / "out"
    snapshot = run.snapshot_path(out, second)  # the first cell's training would come first
    snapshot.parent.mkdir(parents=True)
    for content in (b"damaged", None):
        if content is None:  # a torch file holding a class: torch's error advises weights_only=False
            torch.save({"tag": Path("x")}, snapshot)
        else:
            snapshot.write_bytes(content)
        err = refused(capsys, ["--suite", str(suite_file), "--out", str(out), "--no-report"], f"{snapshot}: cannot load this training snapshot", "delete it")
        assert "weights_only" not in err
    assert [p for p in out.rglob("*") if p.is_file()] == [snapshot]  # nothing written


def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, capsys, suite_file):
    suite_file.write_text(
        suite_file.read_text().replace('["pop"]', '["diffrec"]') + "[model.all]\nhidden = 8\n" + '[[ablation]]\nmodel = "diffrec"\ngrid = {sampler = ["strided"]}\n'
    )
    cells = resolve_suite(*load_suite_file(str(suite_file))).cells
    assert len(cells) == 2 and len({c.training_key for c in cells}) == 1
    saved = tmp_path / "out" / "checkpoints" / f"{cells[0].training_key}.pt"
    saved.parent.mkdir(parents=True)
    torch.save({"model": Path("x")}, saved)
    err = refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out"), "--no-report"], f"{saved}: cannot load this checkpoint", "delete it")
    assert "weights_only" not in err
    model, _ = build_model("pop", n_items=3, max_len=4)
    saved.write_bytes(b"\x00" * 10)
    with pytest.raises(records.RecordError, match="cannot load this checkpoint"):
        load_trained(model, saved)


# --- user files ----------------------------------------------------------------------------------


def test_a_directory_given_as_file_is_named_as_one(tmp_path, capsys, suite_file):
    folder = tmp_path / "data"
    folder.mkdir()
    refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out"), "--file", str(folder), "--format", "sequences"], str(folder), "is a directory")
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(file=folder, fmt="sequences")


def test_a_byte_order_mark_is_named(tmp_path, capsys, suite_file):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "chain.txt").read_bytes())
    refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out"), "--file", str(path), "--format", "sequences"], str(path), "byte order mark (BOM)")
    suite_file.write_bytes(b"\xef\xbb\xbf" + suite_file.read_bytes())
    refused(capsys, ["--suite", str(suite_file), "--out", str(tmp_path / "out")], str(suite_file), "byte order mark (BOM)")
    assert not (tmp_path / "out").exists()


def interactions_file(path: Path, dense_users: int = 6, loners: int = 3) -> Path:
    """`dense_users` users who each rated the same `dense_users` items, and `loners` users whose
    three items nobody else rated: the 5-core keeps the dense block only."""
    rows = [(u, i, 100 * u + i) for u in range(1, dense_users + 1) for i in range(1, dense_users + 1)]
    rows += [(u, 100 + 3 * u + j, j) for u in range(dense_users + 1, dense_users + loners + 1) for j in range(3)]
    path.write_text("".join(f"{u}\t{i}\t5\t{t}\n" for u, i, t in rows))
    return path


def test_a_user_interactions_file_is_5_core_filtered_like_the_registered_ones(tmp_path, capsys, suite_file):
    path = interactions_file(tmp_path / "u.data")
    loaded = load_dataset(file=path, fmt="interactions")
    assert (loaded.n_users, loaded.n_items, loaded.unfiltered) == (6, 6, (9, 15))
    assert load_dataset(file=path, fmt="interactions", min_core=1).n_users == 9
    out = tmp_path / "out"
    argv = ["--suite", str(suite_file), "--file", str(path), "--format", "interactions", "--no-progress", "--no-report"]
    assert run.main([*argv, "--out", str(out)]) == 0
    assert f"{path}: 5-core filtering removed 3 of 9 users and 9 of 15 items" in capsys.readouterr().out
    (record,) = records.load_records(out)
    assert record["dataset"]["users"] == 6 and record["cell"]["source"]["core"] == 5
    assert run.main([*argv, "--out", str(out), "--core", "1"]) == 0  # another k is another cell
    assert "1-core filtering removed 0 of 9 users and 0 of 15 items" in capsys.readouterr().out
    assert sorted(r["dataset"]["users"] for r in records.load_records(out)) == [6, 9]
    refused(capsys, [*argv, "--out", str(out), "--core", "0"], "--core 0")
    nothing = interactions_file(tmp_path / "sparse.data", dense_users=0, loners=29)  # every item occurs once
    refused(capsys, [*argv[:2], "--file", str(nothing), "--format", "interactions", "--out", str(tmp_path / "out2")], f"{nothing}: no interactions left after 5-core filtering of 29 users and 87 items")
    assert not (tmp_path / "out2").exists()
    assert data.main(["stats", "--file", str(path), "--format", "interactions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["users"] == 6
