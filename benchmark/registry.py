"""The explicit registry of models: a name, the class, its config and the defaults that make the
named variant. Adding a model = one file in `baselines/` (or `diffrec/`) plus one line here."""
from __future__ import annotations

from dataclasses import dataclass, field

from baselines.sasrec import SASRec, SASRecConfig
from benchmark.config import build_config, config_dict


@dataclass(frozen=True)
class ModelSpec:
    cls: type
    config: type
    defaults: dict = field(default_factory=dict)  # config values that define this variant
    train: dict = field(default_factory=dict)  # TrainConfig defaults this model needs
    about: str = ""


MODELS: dict[str, ModelSpec] = {
    "sasrec-bce": ModelSpec(SASRec, SASRecConfig, {"loss": "bce"}, about="SASRec, BCE with one sampled negative (Kang & McAuley 2018)"),
    "sasrec-ce": ModelSpec(SASRec, SASRecConfig, {"loss": "ce"}, about="SASRec, full softmax CE (Klenitskiy & Vasilev 2023)"),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    return MODELS[name]


def build_model(name: str, overrides: dict | None = None, *, n_items: int, max_len: int):
    """-> (model, resolved config dict). Unknown keys raise ConfigError naming the key."""
    spec = model_spec(name)
    cfg = build_config(spec.config, {**spec.defaults, **(overrides or {})}, where=f"model {name}")
    return spec.cls(cfg, n_items=n_items, max_len=max_len), config_dict(cfg)
