"""The speed-ups of the recurrent backbone change no numbers: dense steps while no token has
halted agree with the general per-token code, the split adapter and the rotary kernel agree with
their plain formulas (values and gradients), and the parameters are those of the plain block."""
from __future__ import annotations

import math

import pytest
import torch

from anira.fastpath import RealExit
from anira.model import AniraModel, rope_angles, rope_rotate
from test_model import MECHS, expected_kv_calls, fwd, inputs, make


def run_both(m: AniraModel, ids, diff, mode: str):
    """The same forward with the fast paths on and off; the shapes of the inputs of the block's MLP
    tell which path ran a step: (B, T, D) a dense step, (N, D) the per-token path."""
    ranks: dict[bool, list[int]] = {True: [], False: []}
    outs = {}
    for fast in (True, False):
        hook = m.core.mlp.register_forward_hook(lambda mod, inp, out, f=fast: ranks[f].append(inp[0].dim()))
        m.fast_paths = fast
        try:
            outs[fast] = fwd(m, ids, diff, mode, return_states=True)
        finally:
            hook.remove()
            del m.fast_paths  # back to the class default
    return outs[True], outs[False], ranks


CASES = [(mech, "exit", pe) for mech in MECHS for pe in ("learned", "rope", "none")]
CASES += [(mech, "masked", "learned") for mech in MECHS] + [(mech, "frozen", "rope") for mech in ("fixed", "early", "online")]


@pytest.mark.parametrize("mech,mode,pe", CASES)
def test_fast_paths_equal_the_general_path(mech, mode, pe):
    m = make(mech, pe, random_mean_depth=3.4)  # random: depths 3 and 4, so steps 1-3 are dense in exit
    ids, diff = inputs(2, 4, 23)
    if mech == "oracle":
        diff = diff.clamp(min=1)  # depth >= 2 everywhere: step 1 has every token active
    fast, slow, ranks = run_both(m, ids, diff, mode)
    assert torch.equal(fast.depth, slow.depth)
    assert torch.equal(fast.block_calls, slow.block_calls) and torch.equal(fast.kv_calls, slow.kv_calls)
    assert torch.allclose(fast.logits, slow.logits, atol=1e-5), (fast.logits - slow.logits).abs().max()
    assert torch.allclose(fast.p_n, slow.p_n, atol=1e-6)
    assert torch.allclose(fast.states, slow.states, atol=1e-5)
    if fast.step_logits is not None:
        assert torch.allclose(fast.step_logits, slow.step_logits, atol=1e-5)
    if mode == "exit":
        assert ranks[False] and set(ranks[False]) == {2}  # general path: per-token rows only
        assert 3 in ranks[True]  # the fast path really ran dense steps ...
        if mech != "fixed":
            assert 2 in ranks[True]  # ... and handed over to the per-token path once tokens halted
            assert len(set(fast.depth.flatten().tolist())) > 1
        assert torch.equal(fast.block_calls, fast.depth)


def test_exit_fast_path_keeps_halted_keys_of_their_frozen_state():
    """After dense steps the halted tokens' keys/values must come from their frozen state: a
    forward that halts half the tokens after the dense steps equals the masked reference."""
    m = make("random", random_depth_probs=(0.0, 0.5, 0.0, 0.0, 0.5))  # depths 2 and 5
    ids, _ = inputs(3, 4, 29)
    ex, ref = fwd(m, ids, None, "exit"), fwd(m, ids, None, "masked")
    assert set(ex.depth.unique().tolist()) == {2, 5}
    assert torch.allclose(ex.logits, ref.logits, atol=1e-5)
    # one projection per halted token after step 2, unless no later token of its sequence runs on
    assert torch.equal(ex.kv_calls, expected_kv_calls(ex.depth))
    assert torch.equal(ex.kv_calls.bool(), (ex.depth == 2) & (ex.depth.flip(1).cummax(1).values.flip(1) == 5))


def test_split_adapter_equals_the_concatenated_product_and_keeps_the_parameters():
    m = make("online", "rope", reinject="adapter", step_signal=True)
    core, D = m.core, m.cfg.d_model
    g = torch.Generator().manual_seed(5)
    h, e = torch.randn(3, 7, D, generator=g), torch.randn(3, 7, D, generator=g)
    with torch.no_grad():
        ref = core.adapter(torch.cat([h, e], -1))
        assert torch.allclose(core.inputs(h, e), ref, atol=1e-6)
        assert torch.allclose(core.inputs(h, None, core.inject(e)), ref, atol=1e-6)
    shapes = {k: tuple(v.shape) for k, v in core.state_dict().items()}
    assert shapes["adapter.weight"] == (D, 2 * D) and shapes["adapter.bias"] == (D,)
    expected = {"adapter.weight", "adapter.bias", "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
                "attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.wo.weight", "mlp.fc.weight",
                "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias", "step_proj.weight", "ln_state.weight",
                "ln_state.bias"}
    assert set(shapes) == expected


def test_split_adapter_gradients_equal_the_concatenated_product():
    torch.manual_seed(0)
    m = make("fixed", reinject="adapter")
    core, D = m.core, m.cfg.d_model
    h = torch.randn(2, 5, D, requires_grad=True)
    e = torch.randn(2, 5, D, requires_grad=True)
    w = torch.randn(2, 5, D)
    grads = []
    for split in (True, False):
        z = core.inputs(h, e) if split else core.adapter(torch.cat([h, e], -1))
        grads.append(torch.autograd.grad((z * w).sum(), [h, e, core.adapter.weight, core.adapter.bias]))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def plain_rope(x, pos, base):
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = pos.float()[..., None] * inv
    cos, sin = (ang.cos(), ang.sin()) if ang.dim() == 3 else (ang.cos()[None], ang.sin()[None])
    cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


@pytest.mark.parametrize("per_sequence", [False, True])
def test_rope_kernel_equals_the_plain_formula_with_gradients(per_sequence):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 11, 4, 8, generator=g).transpose(1, 2).requires_grad_(True)  # (B, H, L, hd), strided
    pos = torch.randint(0, 50, (3, 11), generator=g) if per_sequence else torch.arange(11)
    up = torch.randn(3, 4, 11, 8, generator=g)
    ours = rope_rotate(x, pos, 100.0)
    (gx,) = torch.autograd.grad((ours * up).sum(), x)
    ref = plain_rope(x, pos, 100.0)
    (rx,) = torch.autograd.grad((ref * up).sum(), x)
    assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(gx, rx, atol=1e-6)
    assert not torch.allclose(gx, up, atol=1e-2)  # a real rotation, not the identity
    table = rope_angles(torch.arange(50), 8, 100.0)  # precomputed angles indexed by position
    given = rope_rotate(x, (table[0][pos], table[1][pos]), 100.0)
    assert torch.allclose(given, ref, atol=1e-6)
    xd = x.detach()[:2, :2, :3].double().requires_grad_(True)  # a small slice: numerical Jacobians
    cos, sin = rope_angles(pos[:2, :3] if per_sequence else pos[:3], 8, 100.0)
    fn = lambda t: rope_rotate(t, (cos.double(), sin.double()), 100.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xd,)) and torch.autograd.gradgradcheck(fn, (xd,))


def record_layouts(monkeypatch) -> list[list[str]]:
    """The attention layouts of every real-exit forward from now on, one list per forward."""
    layouts: list[list[str]] = []
    init = RealExit.__init__

    def recording_init(self, *a, **k):
        init(self, *a, **k)
        layouts.append(self.layouts)

    monkeypatch.setattr(RealExit, "__init__", recording_init)
    return layouts


@pytest.mark.parametrize("pe", ["learned", "rope"])
@pytest.mark.parametrize("mech", ["early", "online", "oracle", "random"])
def test_exit_attention_layouts_agree_on_both_sides_of_the_switch(mech, pe, monkeypatch):
    """Real exit's per-token steps attend in the packed or the grid layout (``RealExit.GRID_FROM``):
    forced either way or chosen per step, the numbers, the depths and the block rows are those of the
    masked reference."""
    m = make(mech, pe, random_depth_probs=(0.3, 0.1, 0.2, 0.2, 0.2))
    ids, diff = inputs(4, 4, 29)
    layouts = record_layouts(monkeypatch)
    ref = fwd(m, ids, diff, "masked", return_states=True)
    for grid_from in (0.0, math.inf, RealExit.GRID_FROM):
        monkeypatch.setattr(RealExit, "GRID_FROM", grid_from)
        rows = []
        hook = m.core.mlp.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[:-1].numel()))
        try:
            ex = fwd(m, ids, diff, "exit", return_states=True)
        finally:
            hook.remove()
        assert torch.equal(ex.depth, ref.depth) and len(set(ex.depth.flatten().tolist())) > 2
        assert torch.allclose(ex.logits, ref.logits, atol=1e-5), (ex.logits - ref.logits).abs().max()
        assert torch.allclose(ex.states, ref.states, atol=1e-5)
        assert torch.allclose(ex.p_n, ref.p_n, atol=1e-6)
        assert sum(rows) == int(ex.depth.sum()) and torch.equal(ex.block_calls, ex.depth)
        assert torch.equal(ex.kv_calls, expected_kv_calls(ex.depth))
    grid, packed, auto = (set(x) for x in layouts)
    assert grid == {"grid"} and packed == {"packed"} and auto  # the switch itself: the next test


def test_grid_attention_is_chosen_from_the_most_active_tokens_in_one_sequence(monkeypatch):
    """The grid layout is used exactly at the per-token steps where some sequence has at least
    GRID_FROM * T active tokens."""
    m = make("random", random_depth_probs=(0.3, 0.1, 0.2, 0.2, 0.2))
    ids, _ = inputs(4, 4, 29)
    layouts = record_layouts(monkeypatch)
    ex = fwd(m, ids, None, "exit")
    assert (ex.depth == 1).any()  # step 1 is a plain step, every later one a per-token step
    most = [int((ex.depth >= n).sum(1).max()) for n in range(2, int(ex.depth.max()) + 1)]
    expected = ["grid" if a >= RealExit.GRID_FROM * ids.shape[1] else "packed" for a in most]
    assert layouts[0] == expected and len(set(expected)) == 2
