"""Suites are data: TOML files in `benchmark/suites/`, validated before anything trains.

Keys of a suite file:
    description = "..."
    datasets = ["ml-100k", "beauty"]      # registered dataset names
    models = "all" | ["sasrec-ce", ...]     # registered model names
    seeds = [0, 1, 2]
    [data]   users = 300, max_len = 50      # data options for every dataset (users: first N only)
    [train]  epochs = 2, ...                # TrainConfig overrides for every model
    [model.all]   hidden = 16               # applied to every model whose config has the key
    [model.NAME]  key = value               # one model's config overrides
    [train_model.NAME] lr = 0.01            # one model's TrainConfig overrides
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from benchmark.config import ConfigError, build_config, config_dict
from benchmark.data import DATASETS
from benchmark.registry import MODELS, model_spec
from benchmark.train import TrainConfig

SUITE_KEYS = {"description", "datasets", "models", "seeds", "data", "train", "model", "train_model"}
DATA_KEYS = {"users", "max_len"}


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

    @property
    def key(self) -> str:
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
        return f"{self.dataset}__{self.model}__{self.tag}__s{self.seed}__{digest}"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    cells: tuple[Cell, ...] = field(default_factory=tuple)


def suite_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("benchmark.suites").iterdir() if p.name.endswith(".toml"))


def load_suite_file(name_or_path: str) -> tuple[str, dict]:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, name = path.read_text(), path.stem
    elif name_or_path in suite_names():
        text, name = resources.files("benchmark.suites").joinpath(f"{name_or_path}.toml").read_text(), name_or_path
    else:
        raise ConfigError(f"unknown suite {name_or_path!r} (known: {', '.join(suite_names())}, or a path to a .toml file)")
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"suite {name}: {exc}") from None


def resolve_suite(name: str, raw: dict, *, datasets=None, models=None, seeds=None, sets: dict | None = None) -> Suite:
    """Validates a suite (plus command-line overrides) and expands it into cells."""
    where = f"suite {name}"
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(SUITE_KEYS))})")
    datasets = list(datasets or raw.get("datasets", []))
    chosen = models or raw.get("models", [])
    chosen = list(MODELS) if chosen == "all" or chosen == ["all"] else list(chosen)
    seeds = [int(s) for s in (seeds or raw.get("seeds", [0]))]
    for d in datasets:
        if d not in DATASETS:
            raise ConfigError(f"{where}: unknown dataset {d!r} (known: {', '.join(DATASETS)})")
    for m in chosen:
        if m not in MODELS:
            raise ConfigError(f"{where}: unknown model {m!r} (known: {', '.join(MODELS)})")
    if not datasets or not chosen:
        raise ConfigError(f"{where}: needs at least one dataset and one model")

    data_opts, train_opts = dict(raw.get("data", {})), dict(raw.get("train", {}))
    model_opts = {k: dict(v) for k, v in raw.get("model", {}).items()}
    train_model_opts = {k: dict(v) for k, v in raw.get("train_model", {}).items()}
    for key, value in (sets or {}).items():  # --set train.lr=0.01 / data.users=100 / sasrec-ce.hidden=32 / all.hidden=16
        scope, _, sub = key.partition(".")
        if not sub:
            raise ConfigError(f"--set {key}: expected SCOPE.KEY with SCOPE one of train, data, all, or a model name")
        if scope == "train":
            train_opts[sub] = value
        elif scope == "data":
            data_opts[sub] = value
        elif scope == "all" or scope in MODELS:
            model_opts.setdefault(scope, {})[sub] = value
        else:
            raise ConfigError(f"--set {key}: unknown scope {scope!r}")
    bad = sorted(set(data_opts) - DATA_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown data key {bad[0]!r} (valid: {', '.join(sorted(DATA_KEYS))})")
    data_opts = {k: int(v) for k, v in data_opts.items()}
    for scope in list(model_opts) + list(train_model_opts):
        if scope != "all" and scope not in MODELS:
            raise ConfigError(f"{where}: unknown model {scope!r} in [model.{scope}] or [train_model.{scope}]")
    shared = model_opts.pop("all", {})
    for key in shared:
        if not any(key in {f.name for f in dataclasses.fields(model_spec(m).config)} for m in chosen):
            raise ConfigError(f"{where}: key {key!r} in [model.all] is known to none of the chosen models")

    cells = []
    for model in chosen:
        spec = model_spec(model)
        fields = {f.name for f in dataclasses.fields(spec.config)}
        overrides = {**spec.defaults, **{k: v for k, v in shared.items() if k in fields}, **model_opts.get(model, {})}
        mcfg = config_dict(build_config(spec.config, overrides, where=f"{where}: model {model}"))
        tcfg = config_dict(build_config(TrainConfig, {**spec.train, **train_opts, **train_model_opts.get(model, {})}, where=f"{where}: train ({model})"))
        for dataset in datasets:
            for seed in seeds:
                cells.append(Cell(dataset, model, seed, mcfg, tcfg, data_opts))
    return Suite(name, raw.get("description", ""), tuple(cells))
