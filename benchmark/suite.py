"""Suites are data: TOML files in `benchmark/suites/`, validated before anything trains.

Keys of a suite file (every key is optional except datasets and models):
    description = "..."
    commit = true                           # its records are committed: runs write into results/ by
                                            # default (packaged suites only; default false)
    datasets = ["ml-100k", "beauty", {file = "my.txt", format = "sequences"}]  # names or user files
                                            # (an interactions file takes core = K: its k-core, default 5)
    models = "all" | ["sasrec-ce", ...]     # registered model names
    seeds = [0, 1, 2]                       # 0 to 2**32 - 1
    [model_seeds]  sasrec-ce = [0, 1, 2, 3, 4]   # other seeds for some models' main cells
    params = "defaults" | "tuned"           # tuned: best trial of the (dataset, model) study when
                                            # one was exported to OUT/tuning/ (else results/tuning/),
                                            # else the defaults
    params_from = "beauty"                  # tuned: the other datasets take the best trial of this
                                            # registered dataset's study (their cells' `tuning` says
                                            # so); only it is tuned
    [data]   users = 300, max_len = 50      # data options for every dataset (users: first N only), >= 1
    [train]  epochs = 2, ...                # TrainConfig overrides for every model
    [model.all]   hidden = 16               # applied to every model whose config has the key
    [model.NAME]  key = value               # one model's config overrides
    [train_model.NAME] lr = 0.01            # one model's TrainConfig overrides
    [tune]   trials = 20, auto = false, seed = 0, pruner = "median", models = [...], datasets = [...],
             trial_time_budget_s = 0,       # seconds of training per trial (0 = no limit), every model alike
             trial_epochs = 0,              # epochs per trial at most (0 = the cell's), every model alike
             prune_after_epochs = 0         # the median pruner's warm-up, in epochs
    [[ablation]]                            # one entry per ablation; produces tagged cells
    model = "diffrec"
    datasets = ["ml-100k"]                  # default: the suite's datasets
    seeds = [0]                             # default: the suite's seeds
    grid = {steps = [10, 50], sampler = ["ancestral", "strided"]}   # cartesian product, or
    points = [{noise = "target", sampler = "strided"}, {noise = "sequence", sampler = "strided"}]  # or a list
    fixed = {samples = 5}                   # set in every point (not part of the tag)
    retrain = true                          # the points' inference keys train and select too
    [width_control]                         # models at one width: where a model's (tuned) hidden
    reference = "sasrec-ce"                 # differs from the reference's, each also runs at the
    models = ["diffrec", "diffurec"]        # other's width (tag "hidden=W"), its other settings kept
                                            # (in a tuned suite once both studies are exported)
    seeds = [0, 1, 2]                       # default: each model's main seeds

In `grid`, `points`, `fixed` and in search spaces, a key `train.KEY` addresses the TrainConfig and
a plain key the model's config. A cell's tag names its setting: "default", "tuned", or the
ablation point ("steps=50,sampler=strided"). A point's inference keys (the registry's
`ModelSpec.inference`, e.g. DiffRec's sampler) do not retrain: the cell is trained and selected
with the base setting's values and scores with the point's (`Cell.inference`), so a sampler sweep
costs one training, and every sampler is compared on the same model. A point whose training the
base's values do not suit (DiffRec's sequence noise needs a sampler that ends near step 1, not the
base's `average`) trains and selects with its own, and so does every point of an ablation with
`retrain = true` (a comparison whose points must be trained, selected and scored alike).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import tomllib

from benchmark.config import ConfigError, build_config, config_dict
from benchmark.data import DATASETS, DEFAULT_CORE, FORMATS, DataError, sha256_file
from benchmark.registry import MODELS, has_parameters, model_spec, tuning_space
from benchmark.train import MAX_SEED, TrainConfig

SUITE_KEYS = {"commit", "description", "datasets", "models", "seeds", "model_seeds", "params", "params_from", "data", "train", "model", "train_model", "tune", "ablation", "width_control"}
FILE_KEYS = {"file", "format", "name", "core"}
ABLATION_KEYS = {"model", "datasets", "seeds", "grid", "points", "fixed", "retrain"}
WIDTH_KEYS = {"reference", "models", "seeds"}
MAIN_TAGS = ("default", "tuned")  # tags of the cells that make a suite's main table


def check_seed(seed: int, name: str = "seed") -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be from 0 to {MAX_SEED} (2**32 - 1, what numpy's seeding takes), got {seed}")


@dataclass(frozen=True)
class DataOptions:
    """A suite's [data] table (and --set data.KEY=VALUE): options for every dataset of the suite.
    A cell stores only the keys that were set, so adding a field here changes no cell's key."""

    users: int | None = None  # the first N users only (None: all)
    max_len: int | None = None  # input window of the models (None: the dataset's)

    def __post_init__(self):
        for name in ("users", "max_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class TuneOptions:
    """A suite's [tune] table (and --set tune.KEY=VALUE), read by `benchmark.tune`."""

    trials: int = 20  # trial budget per study
    auto: bool = False  # benchmark.run tunes before training
    seed: int = 0
    pruner: Literal["median", "none"] = "median"
    models: tuple[str, ...] = ()  # () = the suite's models
    datasets: tuple[str, ...] = ()  # () = the suite's datasets
    trial_time_budget_s: float = 0.0  # seconds of training per trial (0 = no limit), every model alike
    trial_epochs: int = 0  # epochs of training per trial at most (0 = the cell's epochs), every model alike
    prune_after_epochs: int = 0  # the median pruner judges a trial from this epoch on (its warm-up)

    def __post_init__(self):
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if self.trial_epochs < 0 or self.prune_after_epochs < 0:
            raise ValueError("trial_epochs and prune_after_epochs must be >= 0 (trial_epochs 0 = the cell's epochs)")
        if self.trial_time_budget_s < 0:
            raise ValueError("trial_time_budget_s must be >= 0 (0 = no limit)")
        check_seed(self.seed)


DATA_KEYS = {f.name for f in dataclasses.fields(DataOptions)}
TUNE_KEYS = {f.name for f in dataclasses.fields(TuneOptions)}


# the longest tag a cell key (a record's file name) spells out: file names stay under 255 bytes
MAX_TAG_IN_KEY = 150


def checkpoint_key(training_key: str, selection: str) -> str:
    """The name of a training's model selected under `selection`; the protocol's unmasked rule keeps
    the bare training key, as before one training kept a model per rule."""
    return training_key + ("" if selection == "unmasked" else f".{selection}")


@dataclass(frozen=True)
class Cell:
    """One run: dataset x model x seed under fully resolved settings."""

    dataset: str
    model: str
    seed: int
    model_config: dict
    train_config: dict
    data_options: dict
    tag: str = "default"  # names a setting (e.g. an ablation point); part of the key
    source: dict = field(default_factory=dict)  # user file: {"file", "format", "sha256"}; {} = registered
    tuning: dict = field(default_factory=dict)  # the study whose best trial set the params; not in the key
    # model keys (the model's `inference` keys only) that score the model trained and selected with
    # model_config: an inference ablation point; {} = score as trained
    inference: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        identity = self.identity()
        identity.pop("tuning")
        identity["source"].pop("file", None)  # a file is identified by its content, not its path
        tag = self.tag if len(self.tag) <= MAX_TAG_IN_KEY else self.tag[:MAX_TAG_IN_KEY] + "..."  # the digest tells such cells apart
        return f"{self.dataset}__{self.model}__{tag}__s{self.seed}__{_digest(identity)}"

    @property
    def training_key(self) -> str:
        """Names the training of this cell: cells that differ only in tag, inference and selection
        rule share one (a rule changes no training draw, only which evaluation's parameters are
        kept), so their records come from one training (benchmark.run)."""
        identity = self.identity()
        for name in ("tuning", "tag", "inference"):
            identity.pop(name, None)
        identity["source"].pop("file", None)
        identity["train_config"].pop("selection", None)
        return f"{self.dataset}__{self.model}__s{self.seed}__{_digest(identity)}"

    @property
    def selection(self) -> str:
        """The validation NDCG@10 that stops this cell's training and selects its model (TrainConfig)."""
        return self.train_config.get("selection", TrainConfig.ADDED_FIELDS["selection"])

    @property
    def checkpoint_key(self) -> str:
        """Names the trained model this cell scores: its training's, selected under its rule."""
        return checkpoint_key(self.training_key, self.selection)

    @property
    def scoring_config(self) -> dict:
        """The model config that scores the test users: model_config with the inference keys."""
        return {**self.model_config, **self.inference}

    def identity(self) -> dict:
        """The cell as plain JSON data (what a run record stores under "cell"). What did not exist
        when older records were made is left out while it changes nothing, so their cells keep their
        keys: an empty `inference`, and the model config's fields that its class lists in
        `ADDED_FIELDS` while they hold the value listed there (the behaviour from before them), and
        the same for TrainConfig's."""
        identity = json.loads(json.dumps(dataclasses.asdict(self)))
        if not identity["inference"]:
            del identity["inference"]
        added = getattr(MODELS[self.model].config, "ADDED_FIELDS", {}) if self.model in MODELS else {}
        for name, fields in (("model_config", added), ("inference", added), ("train_config", TrainConfig.ADDED_FIELDS)):
            for key, value in fields.items():
                if identity.get(name, {}).get(key, object()) == value:
                    del identity[name][key]
        return identity

    @classmethod
    def from_identity(cls, identity: dict, where: str = "cell") -> "Cell":
        """The cell a run record stores under "cell" (`identity`'s inverse); a missing or unknown
        field raises ConfigError naming it."""
        if not isinstance(identity, dict):
            raise ConfigError(f"{where}: expected a table of cell fields, got {type(identity).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        unknown, missing = sorted(set(identity) - names), sorted(required - set(identity))
        if unknown or missing:
            raise ConfigError(f"{where}: " + (f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}") + f" (fields: {', '.join(sorted(names))})")
        return cls(**identity)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    cells: tuple[Cell, ...] = field(default_factory=tuple)
    tune: dict = field(default_factory=dict)  # resolved [tune] settings
    tune_cells: tuple[Cell, ...] = field(default_factory=tuple)  # one base cell per study
    untuned: tuple[str, ...] = field(default_factory=tuple)  # "dataset/model" that wanted tuned params but had no study
    study_free: frozenset[str] = frozenset()  # keys of ablation cells that set every tuned key themselves
    fixed: dict = field(default_factory=dict)  # model -> keys the suite sets explicitly (tuning leaves them alone)
    params: str = "defaults"  # "tuned": its cells take their studies' best trials
    width: dict = field(default_factory=dict)  # [width_control] resolved: {"models": [reference, ...], "seeds"?}

    def awaiting_studies(self, cells) -> list[str]:
        """The "dataset/model" pairs of `cells` that would train at default hyperparameters only
        because their study has not been exported yet: the suite wants tuned parameters, tunes that
        model ([tune] models, else every model of the suite), and the model has something to tune."""
        if self.params != "tuned":
            return []
        expected = set(self.tune.get("models") or {c.model for c in self.cells})
        pairs = dict.fromkeys((c.dataset, c.model) for c in cells if c.model in expected and f"{c.dataset}/{c.model}" in self.untuned and c.key not in self.study_free)
        return [f"{d}/{m}" for d, m in pairs if has_parameters(m)]


# ---------------------------------------------------------------------------------------------
# Files


def suite_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("benchmark.suites").iterdir() if p.name.endswith(".toml"))


def load_suite_file(name_or_path: str) -> tuple[str, dict]:
    """-> (suite name, parsed TOML); a path's relative `file =` entries resolve against its folder."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        try:
            text, name = path.read_text(encoding="utf-8"), path.stem
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    elif name_or_path in suite_names():
        text, name, path = resources.files("benchmark.suites").joinpath(f"{name_or_path}.toml").read_text(), name_or_path, None
    else:
        raise ConfigError(f"unknown suite {name_or_path!r} (known: {', '.join(suite_names())}, or a path to a .toml file)")
    if text.startswith("\ufeff"):
        raise ConfigError(f"{path or name}: starts with a UTF-8 byte order mark (BOM); save it without one")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"suite {name}: {exc}") from None
    if path is not None:
        raw["_base_dir"] = str(path.resolve().parent)
    return name, raw


def committed_suites() -> list[str]:
    """The packaged suites whose records are committed (`commit = true`)."""
    return [name for name in suite_names() if load_suite_file(name)[1].get("commit") is True]


def tuning_study(dataset: str, model: str, key: str) -> str:
    """Optuna study name of a base cell: readable, plus the digest of everything tuning held fixed."""
    return f"{dataset}__{model}__{key.rsplit('__', 1)[-1]}"


def best_params_path(tuning_dir: str | Path, study: str) -> Path:
    return Path(tuning_dir) / study / "best.json"


def read_best(tuning_dir: str | Path | list | None, study: str) -> dict | None:
    """The exported best trial of `study` ({"params", "trials", "best_value", ...}) from the first
    of `tuning_dir` (a folder, or a list of them) that holds it, or None."""
    for folder in [tuning_dir] if isinstance(tuning_dir, (str, Path)) else tuning_dir or []:
        path = best_params_path(folder, study)
        if path.exists():
            return json.loads(path.read_text())
    return None


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _check_keys(table, allowed: set[str], where: str) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(allowed))})")
    return dict(table)


def _dataset_ref(entry, where: str, base_dir: str | None, core: int | None = None) -> tuple[str, dict]:
    """A `datasets` entry -> (name, source); a user file is hashed so its content keys the cells. An
    interactions file's source names its k-core (the entry's `core`, else `core`, else 5, as the
    registered interaction datasets)."""
    if isinstance(entry, str):
        if entry not in DATASETS:
            raise ConfigError(f"{where}: unknown dataset {entry!r} (known: {', '.join(DATASETS)}; or {{file = PATH, format = FORMAT}})")
        return entry, {}
    entry = _check_keys(entry, FILE_KEYS, where)
    if "file" not in entry or entry.get("format") not in FORMATS:
        raise ConfigError(f"{where}: a user dataset needs file = PATH and format = one of {', '.join(FORMATS)}")
    path = Path(entry["file"]).expanduser()
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    if path.is_dir():
        raise ConfigError(f"{where}: dataset file {str(path)!r} is a directory; give the data file in it")
    if not path.is_file():
        raise ConfigError(f"{where}: dataset file {str(path)!r} does not exist")
    try:
        sha = sha256_file(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    source = {"file": str(path.resolve()), "format": entry["format"], "sha256": sha}
    k = entry.get("core", core)
    if entry["format"] == "interactions":
        source["core"] = DEFAULT_CORE if k is None else k
        if isinstance(source["core"], bool) or not isinstance(source["core"], int) or source["core"] < 1:
            raise ConfigError(f"{where}: core of {str(path)!r} must be an integer >= 1, got {source['core']!r}")
    elif "core" in entry:
        raise ConfigError(f"{where}: core applies to interactions files only, not {entry['format']}")
    return entry.get("name", path.stem), source


def split_setting(setting: dict, model: str, where: str) -> tuple[dict, dict]:
    """{"steps": 50, "train.lr": 0.01} -> (model overrides, train overrides), keys checked."""
    fields = {f.name for f in dataclasses.fields(model_spec(model).config)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_part, train_part = {}, {}
    for key, value in setting.items():
        scope, dot, sub = key.partition(".")
        if dot and scope == "train" and sub in train_fields:
            train_part[sub] = value
        elif not dot and key in fields:
            model_part[key] = value
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r} for model {model} (model keys: {', '.join(sorted(fields))}; "
                f"training keys: {', '.join('train.' + f for f in sorted(train_fields))})"
            )
    return model_part, train_part


def _format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_tag(setting: dict) -> str:
    return ",".join(f"{k}={_format_value(v)}" for k, v in setting.items()) or "default"


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table {{key = value, ...}}, got {value!r}")
    return dict(value)


def _ablation_points(ab: dict, where: str) -> list[dict]:
    if ("grid" in ab) == ("points" in ab):
        raise ConfigError(f"{where}: give exactly one of grid = {{key = [values]}} or points = [{{key = value}}, ...]")
    if "grid" in ab:
        grid = _table(ab["grid"], f"{where}.grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.grid.{key}: expected a non-empty list of values")
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    points = ab["points"]
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) and p for p in points):
        raise ConfigError(f"{where}.points: expected a non-empty list of non-empty tables")
    return [dict(p) for p in points]


def _seed_list(values, where: str) -> list[int]:
    if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}: expected a non-empty list of integers, got {values!r}")
    for seed in values:
        try:
            check_seed(seed, "seeds")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return list(values)


# ---------------------------------------------------------------------------------------------
# Resolution


def resolve_suite(
    name: str,
    raw: dict,
    *,
    datasets=None,
    models=None,
    seeds=None,
    sets: dict | None = None,
    files: list[tuple[str, str]] | None = None,
    core: int | None = None,
    tuning_dir: str | Path | None = None,
) -> Suite:
    """Validates a suite (plus command-line overrides) and expands it into cells.

    `datasets`, `models`, `seeds` replace the suite's (ablations keep only the chosen datasets and
    models); `files` are user dataset files [(path, format)] that join `datasets` (or replace the
    suite's datasets when `datasets` is not given) and `core` their k-core (interactions files);
    `sets` are --set assignments; `tuning_dir` holds exported studies (needed for params = "tuned";
    a list: the first that holds a study)."""
    where = f"suite {name}"
    raw = dict(raw)
    base_dir = raw.pop("_base_dir", None)
    _check_keys(raw, SUITE_KEYS, where)
    commit = raw.get("commit", False)
    if not isinstance(commit, bool):
        raise ConfigError(f"{where}: commit must be true or false, got {commit!r}")
    if commit and base_dir is not None:
        raise ConfigError(f"{where}: commit = true is for the packaged suites in benchmark/suites/ (results/ holds only their records); remove it")

    # Datasets, models, seeds ------------------------------------------------------------------
    overridden = datasets is not None or bool(files)
    entries = list(datasets or []) + [{"file": f, "format": fmt} for f, fmt in files or []] if overridden else raw.get("datasets", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: datasets must be a list")
    refs = dict(_dataset_ref(e, f"{where}: datasets", None if overridden else base_dir, core) for e in entries)
    suite_models = raw.get("models", [])
    if not (suite_models == "all" or isinstance(suite_models, list) and all(isinstance(m, str) for m in suite_models)):
        raise ConfigError(f"{where}: models must be \"all\" or a list of model names, got {suite_models!r}")
    if not isinstance(raw.get("description", ""), str):
        raise ConfigError(f"{where}: description must be a string")
    chosen = list(models) if models else (list(MODELS) if suite_models in ("all", ["all"]) else list(suite_models))
    for m in chosen:
        if m not in MODELS:
            raise ConfigError(f"{where}: unknown model {m!r} (known: {', '.join(MODELS)})")
    seeds_overridden = bool(seeds)
    seeds = _seed_list(list(seeds), "--seeds") if seeds else _seed_list(raw.get("seeds", [0]), f"{where}: seeds")
    model_seeds = {}
    for m, values in _table(raw.get("model_seeds", {}), f"{where}: [model_seeds]").items():
        if m not in MODELS:
            raise ConfigError(f"{where}: [model_seeds] unknown model {m!r} (known: {', '.join(MODELS)})")
        model_seeds[m] = seeds if seeds_overridden else _seed_list(values, f"{where}: [model_seeds] {m}")
    if not refs or not chosen:
        raise ConfigError(f"{where}: needs at least one dataset and one model")
    params_mode = raw.get("params", "defaults")
    if params_mode not in ("defaults", "tuned"):
        raise ConfigError(f"{where}: params must be 'defaults' or 'tuned', got {params_mode!r}")
    params_from = raw.get("params_from")
    if params_from is not None and (params_mode != "tuned" or params_from not in DATASETS):
        raise ConfigError(f"{where}: params_from = {params_from!r} needs params = \"tuned\" and a registered dataset (known: {', '.join(DATASETS)})")

    # Option tables and --set --------------------------------------------------------------------
    data_opts = _check_keys(raw.get("data", {}), DATA_KEYS, f"{where}: [data]")
    train_opts = _table(raw.get("train", {}), f"{where}: [train]")
    tune_opts = _check_keys(raw.get("tune", {}), TUNE_KEYS, f"{where}: [tune]")
    model_opts = {k: _table(v, f"{where}: [model.{k}]") for k, v in _table(raw.get("model", {}), f"{where}: [model]").items()}
    train_model_opts = {k: _table(v, f"{where}: [train_model.{k}]") for k, v in _table(raw.get("train_model", {}), f"{where}: [train_model]").items()}
    for key, value in (sets or {}).items():  # --set train.lr=0.01 / data.users=100 / sasrec-ce.hidden=32 / all.hidden=16 / tune.trials=5
        scope, _, sub = key.partition(".")
        if not sub:
            raise ConfigError(f"--set {key}: expected SCOPE.KEY with SCOPE one of train, data, tune, all, or a model name")
        if scope == "train":
            train_opts[sub] = value
        elif scope == "data":
            data_opts[sub] = value
        elif scope == "tune":
            tune_opts[sub] = value
        elif scope == "all" or scope in MODELS:
            model_opts.setdefault(scope, {})[sub] = value
        else:
            raise ConfigError(f"--set {key}: unknown scope {scope!r} (train, data, tune, all, or one of {', '.join(MODELS)})")
    _check_keys(data_opts, DATA_KEYS, f"{where}: data")
    checked = build_config(DataOptions, data_opts, where=f"{where}: data")
    data_opts = {k: getattr(checked, k) for k in data_opts if getattr(checked, k) is not None}
    for scope in list(model_opts) + list(train_model_opts):
        if scope != "all" and scope not in MODELS:
            raise ConfigError(f"{where}: unknown model {scope!r} in [model.{scope}] or [train_model.{scope}] (known: {', '.join(MODELS)})")
    shared = model_opts.pop("all", {})
    ablations = raw.get("ablation", [])
    if not isinstance(ablations, list):
        raise ConfigError(f"{where}: ablations are written [[ablation]] (a list of tables)")
    width = _width_control(raw.get("width_control"), where)
    everyone = set(chosen) | {ab.get("model") for ab in ablations if isinstance(ab, dict) and ab.get("model") in MODELS} | set(width.get("models", []))
    for key in shared:
        if not any(key in {f.name for f in dataclasses.fields(model_spec(m).config)} for m in everyone):
            raise ConfigError(f"{where}: key {key!r} in [model.all] is known to none of the chosen models")
    tune = _resolve_tune(tune_opts, where)

    def base(model: str, extra_model: dict | None = None, extra_train: dict | None = None, label: str = "") -> tuple[dict, dict]:
        spec = model_spec(model)
        fields = {f.name for f in dataclasses.fields(spec.config)}
        m_over = {**spec.defaults, **{k: v for k, v in shared.items() if k in fields}, **model_opts.get(model, {}), **(extra_model or {})}
        t_over = {**spec.train, **train_opts, **train_model_opts.get(model, {}), **(extra_train or {})}
        mcfg = config_dict(build_config(spec.config, m_over, where=f"{where}: model {model}{label}"))
        tcfg = config_dict(build_config(TrainConfig, t_over, where=f"{where}: train ({model}{label})"))
        return mcfg, tcfg

    bases = {m: base(m) for m in everyone}
    untuned: list[str] = []

    def tuned_base(dataset: str, model: str) -> tuple[dict, dict, dict]:
        """(model config, train config, tuning info) of a (dataset, model): tuned when asked and available."""
        mcfg, tcfg = bases[model]
        if params_mode != "tuned":
            return mcfg, tcfg, {}
        borrowed = {}
        for source_dataset in dict.fromkeys([dataset] + ([params_from] if params_from else [])):
            probe = Cell(source_dataset, model, tune["seed"], mcfg, tcfg, data_opts, "tune", refs[dataset] if source_dataset == dataset else {})
            study = tuning_study(source_dataset, model, probe.key)
            best = read_best(tuning_dir, study)
            if best is not None:
                borrowed = {"params_of": source_dataset} if source_dataset != dataset else {}
                break
        else:
            untuned.append(f"{dataset}/{model}")
            return mcfg, tcfg, {}
        m_part, t_part = split_setting(best["params"], model, f"tuned params of study {study}")
        mcfg, tcfg = base(model, m_part, t_part, label=f" tuned by {study}")
        budget = {k: best[k] for k in ("trial_epochs", "trial_time_budget_s", "pruner") if best.get(k)}
        return mcfg, tcfg, {"study": study, "trials": best.get("trials"), "best_value": best.get("best_value"), "params": best["params"], **budget, **borrowed}

    # Main cells ----------------------------------------------------------------------------------
    cells: dict[str, Cell] = {}
    for model in chosen:
        for dataset, source in refs.items():
            mcfg, tcfg, tuning = tuned_base(dataset, model)
            for seed in model_seeds.get(model, seeds):
                cell = Cell(dataset, model, seed, mcfg, tcfg, data_opts, "tuned" if tuning else "default", source, tuning)
                cells[cell.key] = cell

    # Ablations -----------------------------------------------------------------------------------
    free: set[str] = set()
    for i, ab in enumerate(ablations, 1):
        aw = f"{where}: ablation {i}"
        ab = _check_keys(ab, ABLATION_KEYS, aw)
        model = ab.get("model")
        if model not in MODELS:
            raise ConfigError(f"{aw}: unknown model {model!r} (known: {', '.join(MODELS)})")
        aw = f"{aw} ({model})"
        points = _ablation_points(ab, aw)
        retrain = ab.get("retrain", False)
        if not isinstance(retrain, bool):
            raise ConfigError(f"{aw}: retrain must be true or false, got {retrain!r}")
        fixed = _table(ab.get("fixed", {}), f"{aw}.fixed")
        if "datasets" in ab:
            ab_refs = dict(_dataset_ref(e, f"{aw}.datasets", base_dir) for e in ab["datasets"])
            ab_refs = {d: s for d, s in ab_refs.items() if d in refs} if overridden else ab_refs
        else:
            ab_refs = refs
        ab_seeds = _seed_list(ab["seeds"], f"{aw}.seeds") if "seeds" in ab and not seeds_overridden else seeds
        if models and model not in models:
            continue
        spec = model_spec(model)
        for point in points:
            m_part, t_part = split_setting({**fixed, **point}, model, aw)
            pw = f"{aw} point {setting_tag(point)}"
            # a point that sets every key of the model's search space owes nothing to a study: it
            # neither takes the tuned parameters (it would override them all) nor waits for them
            study_free = params_mode == "tuned" and set(tuning_space(model)[0]) <= set(m_part) | {f"train.{k}" for k in t_part}
            for dataset, source in ab_refs.items():
                mcfg, tcfg, tuning = (*bases[model], {}) if study_free else tuned_base(dataset, model)
                # inference keys score the model trained with the base's values (and selected with them),
                # unless the base's values do not suit the point's training (DiffRec's sequence noise
                # with the `average` sampler, say): then it trains and selects with its own
                scoring = config_dict(build_config(spec.config, {**mcfg, **m_part}, where=pw))
                try:
                    trained = scoring if retrain else config_dict(build_config(spec.config, {**mcfg, **{k: v for k, v in m_part.items() if k not in spec.inference}}, where=pw))
                except ConfigError:
                    trained = scoring
                inference = {k: scoring[k] for k in spec.inference if scoring[k] != trained[k]}
                tcfg = config_dict(build_config(TrainConfig, {**tcfg, **t_part}, where=pw))
                for seed in ab_seeds:
                    cell = Cell(dataset, model, seed, trained, tcfg, data_opts, setting_tag(point), source, tuning, inference)
                    cells.setdefault(cell.key, cell)
                    if study_free:
                        free.add(cell.key)

    # Width control -------------------------------------------------------------------------------
    if width:
        reference, wc_seeds = width["models"][0], width.get("seeds")
        if seeds_overridden:
            wc_seeds = seeds
        for dataset, source in refs.items():
            ref = tuned_base(dataset, reference)
            for model in width["models"][1:]:
                other = tuned_base(dataset, model)
                if params_mode == "tuned" and not (ref[2] and other[2]):
                    continue  # a width not chosen yet (its study is not exported): the pair waits for both
                if other[0]["hidden"] == ref[0]["hidden"]:
                    continue
                # each at the other's width, everything else as its own (tuned) base
                for name, (mcfg, tcfg, tuning), hidden in ((model, other, ref[0]["hidden"]), (reference, ref, other[0]["hidden"])):
                    if models and name not in models:
                        continue
                    matched = config_dict(build_config(model_spec(name).config, {**mcfg, "hidden": hidden}, where=f"{where}: [width_control] {name} at hidden {hidden}"))
                    for seed in wc_seeds or model_seeds.get(name, seeds):
                        cell = Cell(dataset, name, seed, matched, tcfg, data_opts, f"hidden={hidden}", source, tuning)
                        cells.setdefault(cell.key, cell)

    # Studies -------------------------------------------------------------------------------------
    for m in tune["models"]:
        if m not in MODELS:
            raise ConfigError(f"{where}: [tune] unknown model {m!r} (known: {', '.join(MODELS)})")
    for d in tune["datasets"]:
        if d not in DATASETS and d not in refs:
            raise ConfigError(f"{where}: [tune] unknown dataset {d!r} (known: {', '.join(DATASETS)})")
    tune_models = [m for m in tune["models"] or chosen if m in chosen]
    tune_datasets = [d for d in tune["datasets"] or refs if d in refs and params_from in (None, d)]  # with params_from, only it is tuned
    tune_cells = tuple(Cell(d, m, tune["seed"], *bases[m], data_opts, "tune", refs[d]) for m in tune_models for d in tune_datasets)
    fixed = {}
    for m in everyone:
        fields = {f.name for f in dataclasses.fields(model_spec(m).config)}
        explicit = [k for k in shared if k in fields] + list(model_opts.get(m, {}))
        fixed[m] = tuple(dict.fromkeys(explicit + [f"train.{k}" for k in {**train_opts, **train_model_opts.get(m, {})}]))
    return Suite(name, raw.get("description", ""), tuple(cells.values()), tune, tune_cells, tuple(dict.fromkeys(untuned)), frozenset(free), fixed, params_mode, width)


def _width_control(table, where: str) -> dict:
    """[width_control] -> {"models": [reference, model, ...], "seeds": [...]} ({} without one)."""
    if table is None:
        return {}
    where = f"{where}: [width_control]"
    table = _check_keys(table, WIDTH_KEYS, where)
    reference, models = table.get("reference"), table.get("models")
    if not isinstance(models, list) or not models or reference in models:
        raise ConfigError(f"{where}: needs reference = MODEL and models = [MODEL, ...], a non-empty list without the reference")
    for m in [reference, *models]:
        if m not in MODELS:
            raise ConfigError(f"{where}: unknown model {m!r} (known: {', '.join(MODELS)})")
        if "hidden" not in {f.name for f in dataclasses.fields(model_spec(m).config)}:
            raise ConfigError(f"{where}: model {m} has no width (no config key 'hidden')")
    resolved = {"models": [reference, *dict.fromkeys(models)]}
    if "seeds" in table:
        resolved["seeds"] = _seed_list(table["seeds"], f"{where}.seeds")
    return resolved


def _resolve_tune(opts: dict, where: str) -> dict:
    return config_dict(build_config(TuneOptions, opts, where=f"{where}: [tune]"))
