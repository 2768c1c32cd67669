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
