"""Suites: validation before training, expansion into cells with stable keys, ablation grids,
user files, command-line overrides, tuned parameters."""
import json
import shutil

import pytest

from benchmark import records, run
from baselines.sasrec import SEARCH_SPACE as SASREC_SPACE
from benchmark.config import ConfigError
from benchmark.registry import MODELS
from benchmark.suite import Cell, best_params_path, load_suite_file, resolve_suite, setting_tag, suite_names, tuning_study
from tests.synthetic import chain_dataset, write_sequences

BASE = {"datasets": ["ml-100k"], "models": ["sasrec-ce"], "seeds": [0]}


@pytest.fixture
def chain_file(tmp_path):
    return write_sequences(tmp_path / "chain.txt", chain_dataset(users=60))


def test_packaged_suites_resolve_with_unique_stable_keys():
    assert {"smoke", "quick", "paper", "full"} <= set(suite_names())
    for name in suite_names():
        first = resolve_suite(*load_suite_file(name))
        again = resolve_suite(*load_suite_file(name))
        keys = [c.key for c in first.cells]
        assert keys and len(keys) == len(set(keys)), name
        assert keys == [c.key for c in again.cells], name
        assert max(len(f".{k}.json.xxxxxxxx.tmp") for k in keys) <= 255, name  # a record's (temporary) file name fits the filesystem


def test_a_long_tag_is_cut_in_the_key_and_the_digest_tells_cells_apart():
    long = ",".join(f"key{i}=value{i}" for i in range(30))
    a, b = (Cell("beauty", "sasrec-ss", 0, {"hidden": h}, {}, {}, long + f",hidden={h}") for h in (64, 256))
    assert a.key.startswith(f"beauty__sasrec-ss__{long[:150]}...__s0__") and a.key != b.key and len(a.key) < 200


def test_paper_suite_is_the_papers_datasets_with_five_seeds_and_ablations():
    suite = resolve_suite(*load_suite_file("paper"))
    assert {c.dataset for c in suite.cells} == {"beauty", "toys", "ml-1m"}
    main = [c for c in suite.cells if c.tag == "default"]
    seeds = {m: {c.seed for c in main if c.model == m} for m in MODELS}
    assert all(seeds[m] == {0, 1, 2, 3, 4} for m in ("sasrec-ce", "diffrec", "diffrec-paper", "diffurec"))
    assert all(seeds[m] == {0, 1, 2} for m in MODELS if m not in ("sasrec-ce", "diffrec", "diffrec-paper", "diffurec"))
    assert {c.seed for c in resolve_suite(*load_suite_file("paper"), seeds=[7]).cells} == {7}  # --seeds replaces them all
    tags = {c.tag for c in suite.cells if c.model == "diffrec"}
    assert {"noise=target,sampler=strided", "noise=sequence,sampler=strided"} <= tags and any(t.startswith("steps=") for t in tags)
    # one stopping rule for every model (but the issue-23 point that trains as RecTools does), and
    # one epoch budget per trial for every study
    as_written = [c for c in suite.cells if "train.patience=50" in c.tag]
    assert {(c.train_config["epochs"], c.train_config["min_epochs"], c.train_config["patience"], c.train_config["eval_every"]) for c in suite.cells if c not in as_written} == {(300, 40, 10, 2)}
    assert [(c.model, c.seed, c.train_config["adam_beta2"], c.train_config["epochs"], c.train_config["patience"], c.train_config["eval_every"]) for c in as_written] == [("sasrec-ss", 0, 0.98, 200, 50, 1)] * 2
    assert [(c.model_config["block"], c.model_config["attend_padding"]) for c in as_written] == [("pre_ln", False), ("sasrec", True)]  # then RecTools' model whole
    assert (suite.tune["trials"], suite.tune["trial_epochs"], suite.tune["trial_time_budget_s"]) == (20, 40, 0.0)
    assert {c.model for c in suite.tune_cells} == {m for m in MODELS if m != "pop"}
    # the noising ablation trains both points alike
    noising = [c for c in suite.cells if c.tag.startswith("noise=")]
    assert noising and all(c.inference == {} and c.model_config["sampler"] == "strided" for c in noising)
    # issue 23: both SASRecs at eSASRec's beauty setting, selected on unmasked and on masked
    # validation; each point sets every key the SASRec search space tunes, so no study changes them
    # RecTools' beta2 alone, under the shared stopping rule, for SASRec-SS at eSASRec's setting and
    # for the contenders at their tuned parameters
    beta2 = [c for c in suite.cells if "train.adam_beta2" in c.tag and c not in as_written]
    assert sorted((c.model, c.train_config["selection"], c.train_config["adam_beta2"], c.model_config.get("hidden") if c.model == "sasrec-ss" else None) for c in beta2) == [
        ("diffrec", "unmasked", 0.98, None), ("sasrec-ce", "unmasked", 0.98, None), ("sasrec-ss", "masked", 0.98, 256), ("sasrec-ss", "unmasked", 0.98, 256)
    ]
    assert [c.tag for c in beta2 if c.model != "sasrec-ss"] == ["train.adam_beta2=0.98"] * 2 and all(c.seed == 0 and c.dataset == "beauty" for c in beta2)
    esasrec = [c for c in suite.cells if "train.selection=" in c.tag and "table_dropout" not in c.tag and "bucket" not in c.tag and c not in beta2]
    assert [(c.model, c.seed, c.train_config["bucket"]) for c in suite.cells if "train.bucket=" in c.tag] == [("sasrec-ss", 0, False)]
    rectools = [c for c in suite.cells if "table_dropout" in c.tag and c not in as_written]  # and with RecTools' three switches
    assert {(c.model, c.seed, c.train_config["selection"], c.model_config["table_dropout"], c.model_config["scale_input"], c.model_config["init"]) for c in rectools} == {
        (m, 0, "masked", 0.2, False, "xavier") for m in ("sasrec-ss", "sasrec-ce")
    }
    wide = {(c.model, c.train_config["selection"], c.seed) for c in esasrec if c.model_config["hidden"] == 256}
    assert wide == {(m, s, seed) for m in ("sasrec-ss", "sasrec-ce") for s in ("unmasked", "masked") for seed in (0, 1, 2)}
    assert {(c.model, c.train_config["selection"], c.seed) for c in esasrec if c.model_config["hidden"] == 64} == {("sasrec-ss", s, 0) for s in ("unmasked", "masked")}
    assert all(set(SASREC_SPACE) <= {kv.split("=")[0] for kv in c.tag.split(",")} and c.key in suite.study_free for c in esasrec + rectools + as_written)
    assert {(c.model_config["layers"], c.model_config["heads"], c.model_config["dropout"], c.train_config["lr"], c.train_config["weight_decay"]) for c in esasrec} == {(1, 1, 0.2, 1e-3, 0.0)}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"models": ["nosuchmodel"]}, "unknown model 'nosuchmodel'"),
        ({"datasets": ["nosuchdata"]}, "unknown dataset 'nosuchdata'"),
        ({"train": {"epoch": 3}}, "unknown key 'epoch'"),
        ({"data": {"user": 3}}, r"\[data\]: unknown key 'user'"),
        ({"model": {"sasrec-ce": {"hiden": 8}}}, "unknown key 'hiden'"),
        ({"model": {"all": {"hiden": 8}}}, "known to none"),
        ({"params": "best"}, "params must be"),
        ({"tune": {"trails": 2}}, "unknown key 'trails'"),
        ({"tune": {"models": ["sasrec"]}}, r"\[tune\] unknown model 'sasrec'"),
        ({"tune": {"pruner": "hyperband"}}, r"\[tune\]\.pruner: 'hyperband' is not one of"),
        ({"tune": {"trial_time_budget_s": -1}}, "trial_time_budget_s must be >= 0"),
        ({"tune": {"trial_time_budget_s": "long"}}, "trial_time_budget_s: 'long' is not a number"),
        ({"tune": {"trial_epochs": -1}}, "trial_epochs and prune_after_epochs must be >= 0"),
        ({"train": {"epochs": 10, "min_epochs": 20}}, "min_epochs must be from 0 to epochs"),
        ({"seeds": [0.5]}, "list of integers"),
        ({"model_seeds": {"nosuch": [0]}}, r"\[model_seeds\] unknown model 'nosuch'"),
        ({"model_seeds": {"sasrec-ce": []}}, "non-empty list of integers"),
        ({"ablation": [{"model": "nosuch", "points": [{"a": 1}]}]}, "ablation 1: unknown model 'nosuch'"),
        ({"ablation": [{"model": "sasrec-ce", "grid": {"nosuchkey": [1]}}]}, "unknown key 'nosuchkey' for model sasrec-ce"),
        ({"ablation": [{"model": "sasrec-ce", "grid": {"loss": ["hinge"]}}]}, "'hinge' is not one of"),
        ({"ablation": [{"model": "sasrec-ce", "grid": {"dropout": [0.1]}, "points": [{"dropout": 0.2}]}]}, "exactly one of grid"),
        ({"ablation": [{"model": "sasrec-ce", "grid": {"dropout": []}}]}, "non-empty list"),
        ({"ablation": [{"model": "sasrec-ce", "points": [{"dropout": 0.1}], "seed": [1]}]}, "unknown key 'seed'"),
    ],
)
def test_invalid_suites_are_rejected_with_the_bad_key_named(change, message):
    with pytest.raises(ConfigError, match=message):
        resolve_suite("t", {**BASE, **change})


def test_diffrec_ablation_keys_are_validated():
    ok = {"model": "diffrec", "grid": {"noise": ["target", "sequence"], "sampler": ["ancestral", "strided"], "step_sampling": ["uniform", "importance"]}}
    assert len(resolve_suite("t", {**BASE, "ablation": [ok]}).cells) == 1 + 8
    with pytest.raises(ConfigError, match="'diagonal' is not one of"):
        resolve_suite("t", {**BASE, "ablation": [{"model": "diffrec", "points": [{"noise": "diagonal"}]}]})


def test_cell_keys_are_stable_across_versions():
    """Golden key: a cell's key must not move when fields are added (records would go stale)."""
    cell = Cell("ml-100k", "sasrec-ce", 3, {"hidden": 16}, {"lr": 0.01}, {}, "default")
    assert cell.key == "ml-100k__sasrec-ce__default__s3__56fcdf8e54"
    assert "inference" not in cell.identity()


def test_sampler_points_score_the_base_training_and_share_it():
    ab = {"model": "diffrec", "grid": {"steps": [10, 50], "sampler": ["ancestral", "average"]}, "fixed": {"sampler_steps": 5}}
    suite = resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [ab]})
    cells = {c.tag: c for c in suite.cells}
    main = cells["default"]
    assert main.model_config["sampler"] == "average" and main.inference == {}
    ancestral10 = cells["steps=10,sampler=ancestral"]
    assert (ancestral10.model_config["steps"], ancestral10.model_config["sampler"]) == (10, "average")  # trained and selected with the base sampler
    assert ancestral10.inference == {"sampler": "ancestral", "sampler_steps": 5}
    assert ancestral10.scoring_config["sampler"] == "ancestral" and ancestral10.scoring_config["steps"] == 10
    assert cells["steps=10,sampler=average"].inference == {"sampler_steps": 5}
    assert len({ancestral10.training_key, cells["steps=10,sampler=average"].training_key}) == 1
    assert cells["steps=50,sampler=ancestral"].training_key == main.training_key != ancestral10.training_key
    assert len({c.key for c in suite.cells}) == len(suite.cells) == 5
    with pytest.raises(ConfigError, match="sampler"):
        resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [{"model": "diffrec", "points": [{"sampler": "euler"}]}]})
    # sequence noise cannot be selected with the base's `average` (it would rank from a noised history): own sampler throughout
    noise = resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [{"model": "diffrec", "points": [{"noise": n, "sampler": "strided"} for n in ("target", "sequence")]}]})
    cells = {c.tag: c for c in noise.cells}
    target, sequence = cells["noise=target,sampler=strided"], cells["noise=sequence,sampler=strided"]
    assert target.training_key == cells["default"].training_key and target.inference == {"sampler": "strided"}
    assert sequence.model_config["sampler"] == "strided" and sequence.inference == {}
    with pytest.raises(ConfigError, match="noise='sequence' needs a sampler"):
        resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [{"model": "diffrec", "points": [{"noise": "sequence"}]}]})
    # retrain = true: every point trains, selects and scores with its own sampler (a symmetric comparison)
    both = resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [{"model": "diffrec", "retrain": True, "points": [{"noise": n, "sampler": "strided"} for n in ("target", "sequence")]}]})
    cells = {c.tag: c for c in both.cells}
    for tag in ("noise=target,sampler=strided", "noise=sequence,sampler=strided"):
        assert cells[tag].model_config["sampler"] == "strided" and cells[tag].inference == {}
    assert len({c.training_key for c in both.cells}) == 3
    with pytest.raises(ConfigError, match="retrain must be true or false"):
        resolve_suite("t", {**BASE, "models": ["diffrec"], "ablation": [{"model": "diffrec", "retrain": "yes", "points": [{"sampler": "strided"}]}]})
    # a model without inference keys retrains for every point
    sas = resolve_suite("t", {**BASE, "ablation": [{"model": "sasrec-ce", "points": [{"dropout": 0.1}]}]})
    assert len({c.training_key for c in sas.cells}) == 2 and all(c.inference == {} for c in sas.cells)


def test_ablation_grid_expands_into_tagged_cells():
    ab = {"model": "sasrec-ce", "grid": {"dropout": [0.1, 0.2], "train.lr": [0.001, 0.01]}, "fixed": {"layers": 1}, "seeds": [3, 4]}
    suite = resolve_suite("t", {**BASE, "ablation": [ab]})
    cells = [c for c in suite.cells if c.tag != "default"]
    assert len(cells) == 2 * 2 * 2
    assert sorted({c.tag for c in cells}) == ["dropout=0.1,train.lr=0.001", "dropout=0.1,train.lr=0.01", "dropout=0.2,train.lr=0.001", "dropout=0.2,train.lr=0.01"]
    cell = next(c for c in cells if c.tag == "dropout=0.2,train.lr=0.01" and c.seed == 4)
    assert (cell.model_config["dropout"], cell.model_config["layers"], cell.train_config["lr"]) == (0.2, 1, 0.01)
    assert {c.seed for c in cells} == {3, 4}
    main = [c for c in suite.cells if c.tag == "default"]
    assert [c.model_config["layers"] for c in main] == [2]  # fixed settings stay inside the ablation


def test_points_ablation_and_command_line_overrides(chain_file):
    raw = {**BASE, "datasets": ["ml-100k", "beauty"], "ablation": [{"model": "sasrec-ce", "datasets": ["beauty"], "seeds": [7], "points": [{"dropout": 0.0}, {"layers": 1}]}]}
    suite = resolve_suite("t", raw)
    assert sorted((c.dataset, c.tag, c.seed) for c in suite.cells if c.tag != "default") == [("beauty", "dropout=0", 7), ("beauty", "layers=1", 7)]
    only_ml = resolve_suite("t", raw, datasets=["ml-100k"], seeds=[1, 2])
    assert {(c.dataset, c.tag) for c in only_ml.cells} == {("ml-100k", "default")}  # beauty's ablation dropped
    assert sorted(c.seed for c in only_ml.cells) == [1, 2]
    with_seeds = resolve_suite("t", raw, seeds=[1])
    assert {c.seed for c in with_seeds.cells} == {1}  # --seeds overrides ablation seeds too
    other_model = resolve_suite("t", raw, models=["sasrec-bce"])
    assert {c.model for c in other_model.cells} == {"sasrec-bce"}
    sets = resolve_suite("t", raw, sets={"sasrec-ce.hidden": "32", "train.epochs": "3", "data.users": "50", "tune.trials": "4"})
    assert {(c.model_config["hidden"], c.train_config["epochs"], c.data_options["users"]) for c in sets.cells} == {(32, 3, 50)}
    assert sets.tune["trials"] == 4
    for bad, message in [({"nosuch.x": "1"}, "unknown scope"), ({"train.nope": "1"}, "unknown key 'nope'"), ({"sasrec-ce.hidden": "big"}, "not an integer")]:
        with pytest.raises(ConfigError, match=message):
            resolve_suite("t", raw, sets=bad)


def test_user_files_are_keyed_by_content_not_path(tmp_path, chain_file):
    suite_file = tmp_path / "mine.toml"
    suite_file.write_text('datasets = [{file = "chain.txt", format = "sequences"}]\nmodels = ["sasrec-ce"]\n')
    suite = resolve_suite(*load_suite_file(str(suite_file)))
    (cell,) = suite.cells
    assert cell.dataset == "chain" and cell.source["format"] == "sequences" and cell.source["file"] == str(chain_file.resolve())
    moved = tmp_path / "elsewhere" / "chain.txt"
    moved.parent.mkdir()
    shutil.copy(chain_file, moved)
    (same,) = resolve_suite("t", {"models": ["sasrec-ce"]}, files=[(str(moved), "sequences")]).cells
    assert same.key == cell.key
    moved.write_text(moved.read_text() + "61 1 2 3\n")
    (changed,) = resolve_suite("t", {"models": ["sasrec-ce"]}, files=[(str(moved), "sequences")]).cells
    assert changed.key != cell.key
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_suite("t", {"models": ["sasrec-ce"]}, files=[(str(tmp_path / "none.txt"), "sequences")])
    with pytest.raises(ConfigError, match="format"):
        resolve_suite("t", {"models": ["sasrec-ce"], "datasets": [{"file": str(chain_file), "format": "csv"}]})


def test_tuned_params_come_from_the_exported_study(tmp_path):
    every_key = {"hidden": 64, "layers": 1, "dropout": 0.2, "train.lr": 1e-3, "train.weight_decay": 0.0}  # sasrec's whole space
    raw = {**BASE, "params": "tuned", "ablation": [{"model": "sasrec-ce", "points": [{"layers": 1}, every_key]}]}
    untuned = resolve_suite("t", raw, tuning_dir=tmp_path)
    full = setting_tag(every_key)
    assert untuned.untuned == ("ml-100k/sasrec-ce",) and {c.tag for c in untuned.cells} == {"default", "layers=1", full}
    by_tag = {c.tag: c for c in untuned.cells}
    assert untuned.awaiting_studies([by_tag["layers=1"]]) == ["ml-100k/sasrec-ce"] and untuned.awaiting_studies([by_tag[full]]) == []
    (base,) = untuned.tune_cells
    study = tuning_study(base.dataset, base.model, base.key)
    path = best_params_path(tmp_path, study)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"params": {"dropout": 0.45, "train.lr": 0.004}, "trials": 7, "best_value": 0.5}))
    tuned = resolve_suite("t", raw, tuning_dir=tmp_path)
    main = next(c for c in tuned.cells if c.tag == "tuned")
    assert (main.model_config["dropout"], main.train_config["lr"], main.tuning["trials"]) == (0.45, 0.004, 7)
    ablated = next(c for c in tuned.cells if c.tag == "layers=1")
    assert (ablated.model_config["dropout"], ablated.model_config["layers"]) == (0.45, 1)  # ablations start from the tuned config
    free = next(c for c in tuned.cells if c.tag == full)  # ... except one that sets every tuned key: the study changes nothing
    assert free.key == by_tag[full].key and free.tuning == {} and (free.model_config["dropout"], free.train_config["lr"]) == (0.2, 1e-3)
    assert not tuned.untuned


def test_breadth_suite_borrows_the_paper_suites_beauty_studies():
    paper, breadth = (resolve_suite(*load_suite_file(name)) for name in ("paper", "breadth"))
    studies = {tuning_study(c.dataset, c.model, c.key) for c in paper.tune_cells}
    assert {c.dataset for c in breadth.cells} == {"sports", "yelp"} and {c.seed for c in breadth.cells} == {0}
    raw = load_suite_file("breadth")[1]
    borrowed = resolve_suite("breadth", {**raw, "datasets": ["beauty"]}).tune_cells
    assert {tuning_study(c.dataset, c.model, c.key) for c in borrowed} >= studies


def test_params_from_lends_a_studied_datasets_params_to_the_others(tmp_path):
    raw = {**BASE, "datasets": ["beauty", "toys"], "params": "tuned", "params_from": "beauty"}
    beauty = next(c for c in resolve_suite("t", raw, tuning_dir=tmp_path).tune_cells if c.dataset == "beauty")
    path = best_params_path(tmp_path, tuning_study("beauty", "sasrec-ce", beauty.key))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"params": {"dropout": 0.45}, "trials": 20, "best_value": 0.5}))
    suite = resolve_suite("t", raw, tuning_dir=tmp_path)
    cells = {c.dataset: c for c in suite.cells}
    assert not suite.untuned and all(c.tag == "tuned" and c.model_config["dropout"] == 0.45 for c in cells.values())
    assert "params_of" not in cells["beauty"].tuning and cells["toys"].tuning["params_of"] == "beauty"
    assert cells["toys"].tuning["study"] == cells["beauty"].tuning["study"]
    assert [c.dataset for c in suite.tune_cells] == ["beauty"]  # only the lending dataset is tuned
    assert resolve_suite("t", {**raw, "datasets": ["toys"]}).tune_cells == ()
    without = resolve_suite("t", {k: v for k, v in raw.items() if k != "params_from"}, tuning_dir=tmp_path)
    assert without.untuned == ("toys/sasrec-ce",)
    for bad in ({"params_from": "nosuch"}, {"params": "defaults"}):
        with pytest.raises(ConfigError, match="params_from"):
            resolve_suite("t", {**raw, **bad})


def test_width_control_runs_each_model_at_the_others_tuned_width(tmp_path):
    raw = {**BASE, "datasets": ["beauty", "toys"], "models": ["sasrec-ce", "diffrec", "diffurec"], "params": "tuned", "params_from": "beauty",
           "model_seeds": {"diffrec": [0, 1]}, "width_control": {"reference": "sasrec-ce", "models": ["diffrec", "diffurec"]}}
    untuned = resolve_suite("t", raw, tuning_dir=tmp_path)
    assert {c.tag for c in untuned.cells} == {"default"}  # every default width is 64: nothing to match
    widths = {"sasrec-ce": 256, "diffrec": 64, "diffurec": 256}
    for base in sorted(untuned.tune_cells, key=lambda c: c.model != "sasrec-ce"):
        path = best_params_path(tmp_path, tuning_study("beauty", base.model, base.key))
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"params": {"hidden": widths[base.model], "dropout": 0.45}, "trials": 20, "best_value": 0.5}))
        if base.model == "sasrec-ce":  # the reference tuned, the others not yet: their widths are not chosen, no control yet
            half = resolve_suite("t", raw, tuning_dir=tmp_path)
            assert {(c.model, c.tag) for c in half.cells} == {("sasrec-ce", "tuned"), ("diffrec", "default"), ("diffurec", "default")}
    suite = resolve_suite("t", raw, tuning_dir=tmp_path)
    control = {(c.dataset, c.model, c.tag, c.seed): c for c in suite.cells if c.tag != "tuned"}
    # diffurec's width equals SASRec-CE's: no control; diffrec runs at 256, SASRec-CE at 64, each on its main seeds
    assert set(control) == {(d, "diffrec", "hidden=256", s) for d in ("beauty", "toys") for s in (0, 1)} | {(d, "sasrec-ce", "hidden=64", 0) for d in ("beauty", "toys")}
    matched = control["toys", "diffrec", "hidden=256", 1]
    assert matched.model_config["hidden"] == 256 and matched.model_config["dropout"] == 0.45 and matched.tuning["params_of"] == "beauty"
    assert control["beauty", "sasrec-ce", "hidden=64", 0].model_config["hidden"] == 64
    seeded = resolve_suite("t", {**raw, "width_control": {**raw["width_control"], "seeds": [3]}}, tuning_dir=tmp_path)
    assert {c.seed for c in seeded.cells if c.tag != "tuned"} == {3}
    only = resolve_suite("t", raw, models=["diffrec"], tuning_dir=tmp_path)  # --models keeps the chosen models' cells
    assert {(c.model, c.tag) for c in only.cells} == {("diffrec", "tuned"), ("diffrec", "hidden=256")}
    for bad, word in (({"reference": "sasrec-ce", "models": ["sasrec-ce"]}, "without the reference"), ({"reference": "pop", "models": ["diffrec"]}, "no width"),
                      ({"reference": "sasrec-ce", "models": ["nosuch"]}, "unknown model 'nosuch'"), ({"reference": "sasrec-ce", "models": ["diffrec"], "seed": [0]}, "unknown key 'seed'")):
        with pytest.raises(ConfigError, match=word):
            resolve_suite("t", {**raw, "width_control": bad})


def test_a_tuned_suite_refuses_to_train_a_model_whose_study_is_not_exported(tmp_path, capsys, monkeypatch):
    """paper before its studies: the cells would train at the defaults (hours each) and stop being
    cells of the suite once the studies land, so the run stops before anything trains. The
    committed studies are hidden: as they land, this would otherwise train their cells for hours."""
    monkeypatch.setattr(records, "RESULTS_DIR", tmp_path / "no-committed-results")
    argv = ["--suite", "paper", "--datasets", "beauty", "--models", "sasrec-ce", "pop", "--seeds", "0", "--out", str(tmp_path), "--no-progress", "--no-report"]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert "no exported study yet for 1 dataset/model pair(s) (beauty/sasrec-ce)" in err and "benchmark.tune --suite paper" in err  # pop has nothing to tune
    assert not (tmp_path / "runs").exists()  # refused before anything is written
    assert run.main(["--suite", "breadth", "--datasets", "sports", "--models", "svae", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "sports/svae" in (err := capsys.readouterr().err) and "this suite tunes none itself" in err  # breadth borrows beauty's studies
    smoke = resolve_suite(*load_suite_file("smoke"), tuning_dir=tmp_path)  # tunes sasrec-ce and diffrec only; the rest run at their defaults by design
    assert smoke.awaiting_studies(smoke.cells) == ["ml-100k/sasrec-ce", "ml-100k/diffrec"]
    (base,) = [c for c in smoke.tune_cells if c.model == "sasrec-ce"]
    path = best_params_path(tmp_path, tuning_study(base.dataset, base.model, base.key))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"params": {"dropout": 0.2}, "trials": 2, "best_value": 0.1}))
    smoke = resolve_suite(*load_suite_file("smoke"), tuning_dir=tmp_path)
    assert smoke.awaiting_studies(smoke.cells) == ["ml-100k/diffrec"]
    assert (quick := resolve_suite(*load_suite_file("quick"))).awaiting_studies(quick.cells) == []  # defaults by design


def test_cli_lists_and_rejects_bad_settings_before_training(capsys):
    assert run.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for word in ("smoke", "paper", "full", "sasrec-ce", "beauty", "yelp"):
        assert word in listing
    assert run.main(["--suite", "smoke", "--set", "sasrec-ce.hiden=3", "--out", "/nonexistent"]) == 2
    assert "unknown key 'hiden'" in capsys.readouterr().err
    assert run.main(["--suite", "nosuch"]) == 2
    assert "unknown suite 'nosuch'" in capsys.readouterr().err


def test_only_and_tags_run_the_main_cells_the_ablation_cells_or_matching_tags_and_keep_shared_trainings(tmp_path, monkeypatch, capsys):
    chain_file = write_sequences(tmp_path / "c.txt", chain_dataset(n_items=20, users=40))
    ran = []

    def fake_run_cell(cell, checkpoints=None, **kw):
        ran.append((cell.tag, checkpoints is not None))
        return {"metrics": {part: {"NDCG@10": 0.0, "HR@10": 0.0} for part in ("test", "test_masked")}}

    monkeypatch.setattr(run, "run_cell", fake_run_cell)
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        f'datasets = [{{file = "{chain_file}", format = "sequences"}}]\nmodels = ["diffrec"]\n'
        '[[ablation]]\nmodel = "diffrec"\npoints = [{steps = 5}, {sampler = "strided"}]\n'
    )
    expected = {
        "": [("default", True), ("sampler=strided", True), ("steps=5", False)],
        "--only_main": [("default", True)],
        "--only_ablations": [("sampler=strided", True), ("steps=5", False)],
        "--tags_steps=*": [("steps=5", False)],
        "--tags_default_sampler=*": [("default", True), ("sampler=strided", True)],
        "--only_ablations_--tags_default_steps=5": [("steps=5", False)],
    }
    for only in ([], ["--only", "main"], ["--only", "ablations"], ["--tags", "steps=*"], ["--tags", "default", "sampler=*"], ["--only", "ablations", "--tags", "default", "steps=5"]):
        ran.clear()
        assert run.main(["--suite", str(suite_file), "--out", str(tmp_path / "out" / "_".join(only)), "--no-report", "--no-progress"] + only) == 0
        # the main cell and the sampler point share one training: both keep it, even with --only main
        assert sorted(ran) == expected["_".join(only)]
    # a pattern that matches no cell (it must match the whole tag) is an error, before anything runs
    ran.clear()
    assert run.main(["--suite", str(suite_file), "--out", str(tmp_path / "none"), "--no-report", "--no-progress", "--tags", "default", "steps"]) == 2
    assert "--tags 'steps' matches no cell" in capsys.readouterr().err and ran == [] and not (tmp_path / "none").exists()


def test_shards_split_the_trainings_and_keep_shared_ones_together(tmp_path, monkeypatch):
    ran = {}
    ab = {"model": "diffrec", "grid": {"steps": [10, 50], "sampler": ["ancestral", "strided", "average"]}}
    suite = resolve_suite("t", {**BASE, "models": ["diffrec", "sasrec-ce"], "seeds": [0, 1], "ablation": [ab]})
    monkeypatch.setattr(run, "write_json_atomic", lambda path, record: path)  # the shards start together: none sees another's records
    for k in range(3):
        monkeypatch.setattr(run, "run_cell", lambda cell, k=k, **kw: ran.setdefault(k, []).append(cell) or {"metrics": {p: {"NDCG@10": 0.0, "HR@10": 0.0} for p in ("test", "test_masked")}})
        run.run_suite(suite, out=tmp_path, progress=False, shard=(k, 3))
    keys = [c.key for cells in ran.values() for c in cells]
    assert sorted(keys) == sorted(c.key for c in suite.cells)  # every cell once
    where = {c.training_key: k for k, cells in ran.items() for c in cells}
    assert all(where[c.training_key] == k for k, cells in ran.items() for c in cells)  # a training in one shard
    assert len(set(where.values())) == 3
    for cells in ran.values():  # a training's cells run one after another
        order = [c.training_key for c in cells]
        assert order == sorted(order, key=order.index)


def test_shards_split_what_is_left_evenly(tmp_path, monkeypatch):
    from benchmark.records import write_json_atomic

    suite = resolve_suite("t", {**BASE, "seeds": [0, 1, 2, 3, 4, 5]})
    for cell in suite.cells:
        if cell.seed in (0, 3):  # done before; counting them, shard 0 of 3 would get nothing to run
            write_json_atomic(run.record_path(tmp_path, cell), {"cell": cell.identity()})
    monkeypatch.setattr(run, "write_json_atomic", lambda path, record: path)  # the shards start together
    ran = {}
    for k in range(3):
        monkeypatch.setattr(run, "run_cell", lambda cell, k=k, **kw: ran.setdefault(k, []).append(cell.seed) or {"metrics": {p: {"NDCG@10": 0.0, "HR@10": 0.0} for p in ("test", "test_masked")}})
        run.run_suite(suite, out=tmp_path, progress=False, shard=(k, 3))
    assert ran == {0: [1, 5], 1: [2], 2: [4]}


def test_a_cell_finished_meanwhile_by_another_process_is_not_run_again(tmp_path, monkeypatch):
    from benchmark.records import write_json_atomic

    suite = resolve_suite("t", {**BASE, "seeds": [0, 1]})
    first, second = suite.cells
    ran = []

    def fake_run_cell(cell, **kw):
        ran.append(cell.seed)
        write_json_atomic(run.record_path(tmp_path, second), {"cell": second.identity()})  # the other process
        return {"metrics": {p: {"NDCG@10": 0.0, "HR@10": 0.0} for p in ("test", "test_masked")}}

    monkeypatch.setattr(run, "run_cell", fake_run_cell)
    assert run.run_suite(suite, out=tmp_path, progress=False) == [run.record_path(tmp_path, first)]
    assert ran == [0]


def test_committed_quick_records_are_still_cells_of_the_quick_suite():
    """A config field added to a model (DiffRec's item_scale and transition) must not orphan the
    records made before it: every committed quick record is a cell of the quick suite as defined
    now, so the report still shows it and a rerun skips it."""
    from benchmark.records import RESULTS_DIR, load_records, tuning_dirs

    cells = {c.key: c for c in resolve_suite(*load_suite_file("quick"), tuning_dir=tuning_dirs(RESULTS_DIR)).cells}
    records = [r for r in load_records(RESULTS_DIR) if r["suite"] == "quick"]
    assert any(r["model"] == "diffrec" for r in records)
    assert [r["key"] for r in records if r["key"] not in cells] == []
    for r in records:
        stored = dict(r["cell"])
        mine = cells[r["key"]].identity()
        for d in (stored, mine):
            d.pop("tuning", None)
        assert mine == stored, r["key"]
