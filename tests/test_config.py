import pytest

from baselines.sasrec import SASRecConfig
from benchmark.config import ConfigError, build_config, parse_assignments
from benchmark.registry import build_model
from benchmark.train import TrainConfig


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        build_config(SASRecConfig, {"hiden": 32})


def test_strings_from_the_command_line_are_converted_and_checked():
    cfg = build_config(SASRecConfig, {"hidden": "32", "dropout": "0.1", "loss": "bce"})
    assert cfg.hidden == 32 and cfg.dropout == 0.1 and cfg.loss == "bce"
    with pytest.raises(ConfigError, match="not an integer"):
        build_config(SASRecConfig, {"hidden": "3.5"})
    with pytest.raises(ConfigError, match="not one of"):
        build_config(SASRecConfig, {"loss": "hinge"})
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        build_config(TrainConfig, {"epochs": 0})
    assert build_config(TrainConfig, {"bucket": "false"}).bucket is False


def test_configs_are_frozen():
    cfg = SASRecConfig()
    with pytest.raises(Exception):
        cfg.hidden = 3


def test_registry_variants_and_unknown_model():
    _, cfg = build_model("sasrec-bce", n_items=5, max_len=4)
    assert cfg["loss"] == "bce" and cfg["hidden"] == 128  # the variant's own defaults
    _, cfg = build_model("sasrec-bce", {"hidden": 32}, n_items=5, max_len=4)
    assert cfg["hidden"] == 32  # a caller's override wins over them
    with pytest.raises(KeyError, match="unknown model"):
        build_model("sasrec-xx", n_items=5, max_len=4)


def test_parse_assignments():
    assert parse_assignments(["train.lr=0.1", "a.b = c"]) == {"train.lr": "0.1", "a.b": "c"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["oops"])
