"""scripts/hops_probe.py builds its block variants as subclasses of the library's model and block
(``AniraModel.make_core``, ``RecurrentBlock``'s pieces), not by patching instances: each variant
runs a dense forward, and the ones that only override pieces keep the library's parameter names."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("hops_probe", ROOT / "scripts" / "hops_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options(probe, monkeypatch, *flags):
    monkeypatch.setattr(sys, "argv", ["hops_probe.py", "--out", "unused", "--d-model", "32", "--d-ff", "64",
                                      "--depth", "3", *flags])
    return probe.parse()


@pytest.mark.parametrize("flags", [(), ("--arch", "plain"), ("--gate", "1.5"), ("--kv-memory",), ("--plain-core",),
                                   ("--core-layers", "2"), ("--untied",), ("--ov-init", "1")])
def test_every_variant_runs_dense(flags, monkeypatch):
    probe = load_script()
    model = probe.build(options(probe, monkeypatch, *flags), vocab_size=20)
    ids = torch.randint(0, 20, (2, 9))
    out = model(ids, exit="dense")
    assert out.step_logits.shape == (3, 2, 9, 20) and torch.isfinite(out.logits).all()
    if not flags or flags[0] in ("--arch", "--kv-memory", "--ov-init"):  # the library block's parameters
        from anira.model import AniraModel

        assert set(model.state_dict()) == set(AniraModel(model.cfg).state_dict())


def test_gate_and_plain_arch_override_the_documented_pieces(monkeypatch):
    probe = load_script()
    model = probe.build(options(probe, monkeypatch, "--gate", "2.0", "--arch", "plain"), vocab_size=20)
    core = model.core
    assert torch.equal(core.gate.weight, torch.zeros_like(core.gate.weight)) and (core.gate.bias == 2.0).all()
    h, e = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    assert torch.equal(core.inputs(h, e), h)  # no re-injection
    assert "inputs" not in vars(core) and "finish" not in vars(core) and "forward" not in vars(core)
