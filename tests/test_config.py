import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from anira.config import check_range, from_dict, to_dict


@dataclass
class Toy:
    n: int = 3
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)


def test_from_dict_accepts_valid_and_coerces():
    cfg = from_dict(Toy, {"n": 5, "lr": 1, "sizes": [3, 4]})
    assert cfg == Toy(n=5, lr=1.0, sizes=(3, 4))
    assert to_dict(cfg)["sizes"] == [3, 4]


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ValueError, match=r"unknown key.*'nn'.*allowed keys: \['kind', 'lr', 'n', 'sizes'\]"):
        from_dict(Toy, {"nn": 1}, where="p.yaml")


@pytest.mark.parametrize("key,value", [("n", 1.5), ("n", True), ("kind", "c"), ("sizes", [1, "x"]), ("lr", "fast")])
def test_wrong_type_names_field(key, value):
    with pytest.raises(ValueError, match=rf"Toy\.{key}"):
        from_dict(Toy, {key: value})


def test_check_range_message():
    with pytest.raises(ValueError, match=r"depth = 0 is out of range; allowed: \[1, 8\]"):
        check_range("depth", 0, 1, 8)


def test_run_config_takes_model_and_loss_fields_from_their_configs():
    """RunConfig's model and loss fields are ModelConfig's and LossConfig's (same types and defaults),
    and a name defined twice is an error."""
    import typing

    from anira.config import include_fields
    from anira.losses import LossConfig
    from anira.model import ModelConfig
    from anira.train import LOSS_FIELDS, MODEL_FIELDS, RunConfig

    run = {f.name: f for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    for src, names in ((ModelConfig, MODEL_FIELDS), (LossConfig, LOSS_FIELDS)):
        src_hints = typing.get_type_hints(src)
        for f in dataclasses.fields(src):
            if f.name in names:
                assert run[f.name].default == f.default and hints[f.name] == src_hints[f.name]
    assert set(MODEL_FIELDS) == {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size", "rope_base"}
    rc = RunConfig(max_depth=4, beta=0.5)
    assert rc.model_config(vocab_size=10).max_depth == 4 and rc.loss_config().beta == 0.5

    with pytest.raises(TypeError, match="defined twice"):
        @dataclasses.dataclass
        @include_fields(LossConfig)
        class Twice:
            beta: float = 1.0


@pytest.mark.parametrize("text,value", [("1e-3", 0.001), ("2E5", 2e5), ("-5e+2", -500.0), ("0.5", 0.5), ("3", 3),
                                        ("1e", "1e"), ("e5", "e5"), ("[1e-2, 2]", [0.01, 2])])
def test_exponent_floats_are_numbers_in_overrides_and_profiles(text, value):
    """PyYAML (YAML 1.1) reads 1e-3 as a string; the project's loader reads it as the float it is,
    so ``lr=1e-3`` works on the command line and in a profile."""
    from anira.config import load_yaml
    from anira.train import config_from_command_line

    got = load_yaml(text)
    assert got == value and type(got) is type(value)
    assert config_from_command_line(None, ["lr=1e-3", "beta=5e-2"]).lr == 0.001
