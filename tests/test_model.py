"""Reference-equivalence tests of the ANIRA model (all on random tokens, small sizes)."""
from __future__ import annotations

import math

import pytest
import torch

from anira.losses import LossConfig, PonderLoss
from anira.model import AniraModel, ModelConfig

V, T, B = 23, 19, 3
MECHS = ["fixed", "early", "online", "oracle", "random"]


def make(mech="online", pe="learned", spread=True, seed=0, **kw) -> AniraModel:
    """A small model; ``spread`` randomises the decision heads so tokens use many different depths."""
    torch.manual_seed(seed)
    kw = {"max_depth": 5, "random_mean_depth": 2.6, "n_prelude": 1, "n_coda": 1, **kw}  # every part of the backbone
    if kw["max_depth"] < 3:
        kw["random_mean_depth"] = None
    cfg = ModelConfig(vocab_size=V, max_len=64, d_model=32, n_heads=4, d_ff=64, mechanism=mech, pos_encoding=pe, **kw)
    m = AniraModel(cfg).eval()
    with torch.no_grad():  # O(1) weights everywhere, so a wrong path changes the logits visibly
        for name, p in m.named_parameters():
            if name.startswith(("halt", "router")):
                continue
            if p.dim() == 2:
                p.normal_(0, 1 / math.sqrt(p.shape[1]))
            elif "ln" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0, 0.1)
    if spread and m.halt is not None:  # random halting weights, bias centred on this model's logits
        torch.nn.init.normal_(m.halt.weight, std=1.5)
        torch.nn.init.zeros_(m.halt.bias)
        with torch.no_grad():
            ids, _ = inputs(99, 4, 25)
            lam = m(ids, exit="dense").lambda_n[..., :-1]
            torch.nn.init.constant_(m.halt.bias, -torch.logit(lam.clamp(1e-6, 1 - 1e-6)).median().item() - 1.0)
    if spread and m.router is not None:
        torch.nn.init.normal_(m.router.weight, std=1.5)
    return m


def inputs(seed=1, b=B, t=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, t), generator=g), torch.randint(0, 5, (b, t), generator=g)


def fwd(m, ids, diff, mode, **kw):
    with torch.no_grad():
        return m(ids, difficulty=diff, exit=mode, generator=torch.Generator().manual_seed(7), **kw)


# ------------------------------------------------------------------------------------------
# independent reference: explicit softmax attention, complex-number RoPE, no SDPA
# ------------------------------------------------------------------------------------------
def ref_rope(x, base):  # x (B, H, T, hd)
    hd, Tn = x.shape[-1], x.shape[-2]
    half = hd // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float64) * 2 / hd)
    rot = torch.polar(torch.ones(Tn, half, dtype=torch.float64), torch.arange(Tn, dtype=torch.float64)[:, None] * freqs)
    c = torch.complex(x[..., :half].double(), x[..., half:].double()) * rot
    return torch.cat([c.real, c.imag], -1).float()


def ref_attn(x, a, rope, base):
    Bn, Tn, D = x.shape
    H = a.n_heads
    q, k, v = (w(x).view(Bn, Tn, H, D // H).transpose(1, 2) for w in (a.wq, a.wk, a.wv))
    if rope:
        q, k = ref_rope(q, base), ref_rope(k, base)
    s = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    s = s.masked_fill(torch.ones(Tn, Tn, dtype=torch.bool).triu(1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(Bn, Tn, D)
    return a.wo(y)


def ref_mlp(x, mlp):
    return mlp.proj(torch.nn.functional.gelu(mlp.fc(x)))


def ref_layer(x, L, rope, base):
    x = x + ref_attn(L.ln1(x), L.attn, rope, base)
    return x + ref_mlp(L.ln2(x), L.mlp)


def ref_plain_step(h, e, core, n, rope, base):
    """One plain block: z = W_a[h;e]; a = z + Attn(LN z); b = a + sigma_n; LN_s(b + MLP(LN b))."""
    D = h.shape[-1]
    z = core.adapter(torch.cat([h, e], -1)) if core.adapter is not None else h + e  # reinject="add": h + e
    a = z + ref_attn(core.ln1(z), core.attn, rope, base)
    i = torch.arange(0, D, 2, dtype=torch.float32)
    sig = torch.stack([torch.sin(n / 100 ** (i / D)), torch.cos(n / 100 ** (i / D))], -1).reshape(D)
    b = a + core.step_proj(sig) if core.step_proj is not None else a  # step_signal=False: no sigma_n
    return core.ln_state(b + ref_mlp(core.ln2(b), core.mlp))


def ref_forward(m, ids, depth):
    rope, base = m.cfg.pos_encoding == "rope", m.cfg.rope_base
    x = m.tok_emb(ids)
    if m.pos_emb is not None:
        x = x + m.pos_emb.weight[: ids.shape[1]]
    if m.conv is not None:  # y_t = b + sum_k W[..., w-1-k] x_{t-k}, x_{<0} = 0
        w, W = m.conv.kernel_size[0], m.conv.weight
        y = m.conv.bias.expand_as(x).clone()
        for k in range(w):
            y[:, k:] += x[:, : x.shape[1] - k] @ W[:, :, w - 1 - k].T
        x = x + y
    for L in m.prelude:
        x = ref_layer(x, L, rope, base)
    e = m.ln_e(x)
    h = e
    for n in range(1, depth + 1):
        h = ref_plain_step(h, e, m.core, n, rope, base)
    for L in m.coda:
        h = ref_layer(h, L, rope, base)
    return m.head(m.ln_f(h))


@pytest.mark.parametrize("pe", ["learned", "rope", "none"])
@pytest.mark.parametrize("mode", ["dense", "masked", "exit"])
def test_depth_one_equals_one_plain_block(pe, mode):
    m = make("fixed", pe, max_depth=1)
    ids, _ = inputs()
    with torch.no_grad():
        out, ref = fwd(m, ids, None, mode), ref_forward(m, ids, 1)
    assert torch.allclose(out.logits, ref, atol=1e-5), (out.logits - ref).abs().max()
    assert (out.depth == 1).all()


@pytest.mark.parametrize("pe", ["learned", "rope"])
def test_fixed_depth_equals_reference_loop(pe):
    m = make("fixed", pe, fixed_depth=3)
    ids, _ = inputs()
    with torch.no_grad():
        ref = ref_forward(m, ids, 3)
    for mode in ("dense", "masked", "exit"):
        assert torch.allclose(fwd(m, ids, None, mode).logits, ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["dense", "masked", "exit"])
@pytest.mark.parametrize("T_forced", [1, 3, 5])
def test_early_forced_to_depth_T_equals_fixed_T(mode, T_forced):
    fixed = make("fixed", fixed_depth=T_forced)
    early = make("early")
    early.load_state_dict(fixed.state_dict(), strict=False)  # shared backbone; the router stays
    with torch.no_grad():
        early.router.weight.zero_()
        early.router.bias.fill_(-1e4)
        early.router.bias[T_forced - 1] = 1e4
    ids, _ = inputs()
    a, b = fwd(fixed, ids, None, mode), fwd(early, ids, None, mode)
    assert (b.depth == T_forced).all()
    assert torch.allclose(a.logits, b.logits, atol=1e-6)


@pytest.mark.parametrize("mech", ["early", "online"])
@pytest.mark.parametrize("mode", ["dense", "masked", "exit"])
@pytest.mark.parametrize("max_depth", [None, 2, 8])
def test_halting_probabilities_sum_to_one(mech, mode, max_depth):
    m = make(mech)
    ids, _ = inputs()
    out = fwd(m, ids, None, mode, max_depth=max_depth)
    M = max_depth or m.cfg.max_depth
    assert out.p_n.shape == (B, T, M)
    assert (out.p_n >= 0).all()
    assert torch.allclose(out.p_n.sum(-1), torch.ones(B, T), atol=1e-5)
    assert ((out.depth >= 1) & (out.depth <= M)).all()
    steps = torch.arange(1, M + 1, dtype=torch.float32)
    assert torch.allclose(out.expected_depth, (out.p_n * steps).sum(-1))


def test_online_p_n_is_pondernet_distribution_in_dense_mode():
    m = make("online")
    ids, _ = inputs()
    out = fwd(m, ids, None, "dense")
    lam = out.lambda_n.double()
    assert (lam[..., -1] == 1).all()
    for n in range(m.cfg.max_depth):  # p_n = lambda_n prod_{j<n} (1 - lambda_j)
        ref = lam[..., n] * torch.prod(1 - lam[..., :n], dim=-1)
        assert torch.allclose(out.p_n[..., n].double(), ref, atol=1e-6)
    cum = out.p_n.cumsum(-1)  # halting rule: first n with cumulative p >= threshold
    d = out.depth - 1
    assert (cum.gather(-1, d[..., None])[..., 0] >= 0.5 - 1e-6).all()
    prev = torch.where(d > 0, cum.gather(-1, (d - 1).clamp(min=0)[..., None])[..., 0], torch.zeros(B, T))
    assert (prev < 0.5 + 1e-6).all()


@pytest.mark.parametrize("mech", ["early", "online", "oracle", "random"])
@pytest.mark.parametrize("mode", ["masked", "exit"])
def test_halted_states_never_change(mech, mode):
    m = make(mech)
    ids, diff = inputs()
    out = fwd(m, ids, diff, mode, return_states=True)
    S = out.states  # (M + 1, B, T, D)
    assert len(set(out.depth.flatten().tolist())) > 1  # the test needs tokens that halt at different steps
    for n in range(1, S.shape[0]):
        halted = out.depth < n  # halted before step n
        assert torch.equal(S[n][halted], S[n - 1][halted])
        running = out.depth >= n
        assert not torch.isclose(S[n][running], S[n - 1][running]).all(-1).any()


@pytest.mark.parametrize("pe", ["learned", "rope", "none"])
@pytest.mark.parametrize("mech", MECHS)
def test_early_exit_equals_masked_dense(pe, mech):
    m = make(mech, pe)
    used = set()
    for seed, (b, t) in [(1, (B, T)), (2, (5, 31)), (3, (1, 7))]:
        ids, diff = inputs(seed, b, t)
        ids[0, t // 2 :] = 0  # right padding as produced by collate
        ref, ex = fwd(m, ids, diff, "masked"), fwd(m, ids, diff, "exit")
        assert torch.equal(ref.depth, ex.depth)
        assert torch.allclose(ref.logits, ex.logits, atol=1e-5), (ref.logits - ex.logits).abs().max()
        assert torch.allclose(ref.p_n, ex.p_n, atol=1e-6)
        assert torch.allclose(ref.expected_depth, ex.expected_depth, atol=1e-5)
        assert torch.equal(ex.block_calls, ex.depth)
        assert torch.equal(ref.block_calls, ref.depth)
        used |= set(ex.depth.flatten().tolist())
    if mech in ("early", "online", "oracle", "random"):
        assert len(used) > 1  # exercised real exits, not a single depth


@pytest.mark.parametrize("pe", ["learned", "rope"])
@pytest.mark.parametrize("mech", MECHS)
def test_frozen_training_path_reads_out_exactly_what_early_exit_computes(pe, mech):
    """The ``frozen`` training path at each token's own depth equals real early exit; dense does not."""
    m = make(mech, pe)
    ids, diff = inputs(2, 5, 31)
    ex, fr, de = fwd(m, ids, diff, "exit"), fwd(m, ids, diff, "frozen"), fwd(m, ids, diff, "dense")
    assert torch.equal(ex.depth, fr.depth)
    assert torch.allclose(ex.logits, fr.logits, atol=1e-5)
    assert fr.step_logits.shape == (m.cfg.max_depth, 5, 31, V)
    assert torch.allclose(fr.p_n.sum(-1), torch.ones(5, 31), atol=1e-5)
    if mech != "fixed":  # with real exits, the dense path's readout differs from inference
        assert not torch.allclose(ex.logits, de.logits, atol=1e-3)
    else:
        assert torch.allclose(fr.step_logits[-1], de.step_logits[-1], atol=1e-5)  # no token halts early
    if mech == "online":
        assert torch.allclose(fr.lambda_n[..., :-1], fwd(m, ids, diff, "frozen").lambda_n[..., :-1])


@pytest.mark.parametrize("n_coda", [0, 1, 2])
@pytest.mark.parametrize("mech", ["fixed", "online", "early"])
def test_readout_of_selected_rows_equals_the_full_readout(mech, n_coda):
    m = make(mech, "rope", n_coda=n_coda)
    ids, diff = inputs(2, 5, 31)
    rows = torch.rand(5, 31, generator=torch.Generator().manual_seed(3)) < 0.3
    rows[3] = False  # a sequence without any selected row
    for mode in ("dense", "frozen", "masked", "exit"):
        a, b = fwd(m, ids, diff, mode), fwd(m, ids, diff, mode, readout_rows=rows)
        assert torch.allclose(a.logits[rows], b.logits[rows], atol=1e-5) and (b.logits[~rows] == 0).all()
        if a.step_logits is not None:
            assert torch.allclose(a.step_logits[:, rows], b.step_logits[:, rows], atol=1e-5)
        assert torch.equal(a.depth, b.depth)


def test_early_exit_equals_masked_at_test_time_extra_depth():
    m = make("online")
    ids, _ = inputs()
    for M in (2, 9):
        ref, ex = fwd(m, ids, None, "masked", max_depth=M), fwd(m, ids, None, "exit", max_depth=M)
        assert torch.equal(ref.depth, ex.depth) and torch.allclose(ref.logits, ex.logits, atol=1e-5)
        assert ex.depth.max() <= M


@pytest.mark.parametrize("mech", ["early", "online", "oracle", "random"])
def test_exit_skips_the_work_of_halted_tokens(mech):
    """Count the token rows that really go through the block's MLP (a forward hook)."""
    m = make(mech)
    ids, diff = inputs(b=4, t=25)
    rows = []
    hook = m.core.mlp.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[:-1].numel()))
    try:
        before = m.block_calls_total
        ex = fwd(m, ids, diff, "exit")
        exit_rows, counted = sum(rows), m.block_calls_total - before
        rows.clear()
        ref = fwd(m, ids, diff, "masked")
        masked_rows = sum(rows)
    finally:
        hook.remove()
    assert exit_rows == int(ex.depth.sum()) == counted == int(ex.block_calls.sum())
    assert masked_rows == ids.numel() * int(ref.depth.max())
    assert exit_rows < masked_rows
    assert torch.equal(ex.block_calls, ex.depth)
    # a halted token pays at most one key/value projection of its frozen state, and only when a
    # later token of its sequence runs on (nothing attends to it otherwise)
    assert ((ex.kv_calls == 0) | (ex.kv_calls == 1)).all()
    assert torch.equal(ex.kv_calls, expected_kv_calls(ex.depth))
    assert ex.kv_calls.any() and not torch.equal(ex.kv_calls.bool(), ex.depth < ex.depth.max())


def expected_kv_calls(depth: torch.Tensor) -> torch.Tensor:
    """(B, T) long: 1 where a token halted before some later token of its sequence (the one key/value
    projection of its frozen state real early exit needs), else 0."""
    later = depth.flip(1).cummax(1).values.flip(1)  # most steps of the tokens at positions >= t
    later = torch.cat([later[:, 1:], torch.zeros_like(later[:, :1])], 1)  # ... at positions > t
    return (depth < later).long()


@pytest.mark.parametrize("pe", ["learned", "rope", "none"])
@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("mode", ["dense", "masked", "exit", "frozen"])
def test_causality_future_tokens_change_no_earlier_prediction(pe, mech, mode):
    m = make(mech, pe)
    ids, diff = inputs()
    k = 11
    ids2, diff2 = ids.clone(), diff.clone()
    ids2[:, k:] = (ids[:, k:] + 1 + torch.arange(T - k)) % V
    diff2[:, k:] = (diff[:, k:] + 1) % 5
    a, b = fwd(m, ids, diff, mode), fwd(m, ids2, diff2, mode)
    assert torch.allclose(a.logits[:, :k], b.logits[:, :k], atol=1e-5)
    assert torch.equal(a.depth[:, :k], b.depth[:, :k])
    assert not torch.allclose(a.logits[:, k:], b.logits[:, k:], atol=1e-3)  # the change is visible later


def test_dense_logits_are_step_logits_at_depth_and_fixed_dense_equals_masked():
    m = make("online")
    ids, _ = inputs()
    out = fwd(m, ids, None, "dense")
    for b in range(B):
        for t in range(T):
            assert torch.equal(out.logits[b, t], out.step_logits[out.depth[b, t] - 1, b, t])
    f = make("fixed")
    assert torch.allclose(fwd(f, ids, None, "dense").logits, fwd(f, ids, None, "masked").logits, atol=1e-6)


def test_oracle_depth_mapping_and_random_depth_independent_of_tokens():
    m = make("oracle", oracle_offset=1.0, oracle_scale=1.0)
    ids, diff = inputs()
    assert torch.equal(fwd(m, ids, diff, "exit").depth, (1 + diff).clamp(1, 5))
    with pytest.raises(ValueError, match="difficulty"):
        fwd(m, ids, None, "exit")
    r = make("random")
    a = fwd(r, ids, None, "exit").depth
    b = fwd(r, (ids + 3) % V, None, "exit").depth  # same generator seed, other tokens: same depths
    assert torch.equal(a, b)
    big = torch.zeros(40, 50, dtype=torch.long)
    d = fwd(r, big, None, "masked").depth.float()
    assert set(d.unique().tolist()) == {2.0, 3.0} and abs(d.mean().item() - 2.6) < 0.05
    hist = make("random", random_depth_probs=(0.5, 0.0, 0.0, 0.0, 0.5))
    assert set(fwd(hist, big, None, "masked").depth.unique().tolist()) == {1, 5}


def test_test_time_depth_semantics():
    ids, _ = inputs()
    f = make("fixed", fixed_depth=2)
    assert (fwd(f, ids, None, "exit").depth == 2).all()
    assert (fwd(f, ids, None, "exit", max_depth=8).depth == 8).all()  # fixed: runs M steps
    e = make("early")
    assert torch.equal(fwd(e, ids, None, "exit").depth, fwd(e, ids, None, "exit", max_depth=9).depth)
    o = make("online")
    with torch.no_grad():
        o.halt.weight.zero_()
        o.halt.bias.fill_(-3.0)  # lambda = 0.047: cumulative 0.5 only after 15 steps
    assert (fwd(o, ids, None, "exit").depth == 5).all()  # forced at the trained max
    assert (fwd(o, ids, None, "exit", max_depth=20).depth == 15).all()  # free to go deeper at test time


def test_halting_bias_init_puts_mass_on_last_step():
    for mech in ("early", "online"):
        m = make(mech, spread=False)
        ids, _ = inputs()
        out = fwd(m, ids, None, "dense")
        lam = torch.sigmoid(torch.tensor(-3.0)).item()
        q_last = (1 - lam) ** 4
        assert torch.allclose(out.p_n[..., -1], torch.full((B, T), q_last), atol=1e-5)
        assert (out.depth == 5).all()


def test_same_seed_same_numbers():
    ids, _ = inputs()
    a, b = make("online", seed=3), make("online", seed=3)
    assert torch.equal(fwd(a, ids, None, "dense").logits, fwd(b, ids, None, "dense").logits)
    c = make("online", seed=4)
    assert not torch.equal(fwd(a, ids, None, "dense").logits, fwd(c, ids, None, "dense").logits)


@pytest.mark.parametrize("field,value", [
    ("max_depth", 0), ("mechanism", "sometimes"), ("fixed_depth", 0), ("fixed_depth", 9), ("halt_threshold", 1.0),
    ("halt_threshold", 0.0), ("pos_encoding", "alibi"), ("n_heads", 5), ("vocab_size", 1), ("n_prelude", -1),
    ("random_mean_depth", 0.5), ("random_depth_probs", (0.5, 0.6, 0, 0, 0)), ("random_depth_probs", (1.0,)),
])
def test_bad_model_config_raises_naming_field(field, value):
    kw = {"vocab_size": 10, "max_depth": 5, field: value}
    with pytest.raises(ValueError, match=field if field != "n_heads" else "n_heads"):
        ModelConfig(**kw)


def test_bad_call_and_loss_values_raise():
    with pytest.raises(ValueError, match="random_mean_depth"):
        ModelConfig(vocab_size=10, mechanism="random")
    m = make("fixed")
    ids, _ = inputs()
    with pytest.raises(ValueError, match="exit"):
        m(ids, exit="sometimes")
    with pytest.raises(ValueError, match="max_depth"):
        m(ids, max_depth=0)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 65, dtype=torch.long))
    for field, value in [("beta", -0.1), ("penalty", "l2"), ("prior_lambda", 1.0), ("ds_weight", -1.0),
                         ("ds_warmup_steps", -1), ("ds_power", -0.5)]:
        with pytest.raises(ValueError, match=field):
            LossConfig(**{field: value})


# ------------------------------------------------------------------------------------------
# the shared objective
# ------------------------------------------------------------------------------------------
def test_ponder_loss_terms_against_direct_computation():
    torch.manual_seed(0)
    S, Bn, Tn, Vn = 4, 2, 5, 7
    logits = torch.randn(S, Bn, Tn, Vn)
    p = torch.softmax(torch.randn(Bn, Tn, S), -1)
    tgt = torch.randint(0, Vn, (Bn, Tn))
    mask = torch.rand(Bn, Tn) > 0.4
    cfg = LossConfig(beta=0.3, prior_lambda=0.25, ds_weight=0.5, ds_warmup_steps=10)
    loss = PonderLoss(cfg, S)
    L = torch.zeros(S, Bn, Tn)
    for n in range(S):
        for b in range(Bn):
            for t in range(Tn):
                L[n, b, t] = -torch.log_softmax(logits[n, b, t], -1)[tgt[b, t]]
    lam = 0.25
    q = torch.tensor([lam * (1 - lam) ** k for k in range(S - 1)] + [(1 - lam) ** (S - 1)])
    assert abs(q.sum().item() - 1) < 1e-6
    sel = mask.nonzero().tolist()
    exp = sum((p[b, t] * L[:, b, t]).sum() for b, t in sel) / len(sel)
    ds = sum(L[:, b, t].mean() for b, t in sel) / len(sel)
    kl = sum((p[b, t] * (p[b, t] / q).log()).sum() for b, t in sel) / len(sel)
    warm = loss(logits, p, tgt, mask, step=3)
    assert torch.allclose(warm.loss, ds, atol=1e-5) and warm.beta_t == 0.0
    after = loss(logits, p, tgt, mask, step=10)
    assert torch.allclose(after.loss, exp + 0.3 * kl + 0.5 * ds, atol=1e-5)
    dcfg = LossConfig(beta=0.3, penalty="depth", ds_weight=0.0, ds_warmup_steps=0, beta_warmup_steps=4)
    dl = PonderLoss(dcfg, S)
    ed = sum((p[b, t] * torch.arange(1, S + 1)).sum() for b, t in sel) / len(sel)
    out = dl(logits, p, tgt, mask, step=1)
    assert out.beta_t == pytest.approx(0.15)
    assert torch.allclose(out.loss, exp + 0.15 * ed, atol=1e-5)
    assert "log_prior" in dict(loss.named_buffers())
    # ds_power a: L_ds = sum_n w_n L_n with w_n = n^a / sum_m m^a (a = 2: 1, 4, 9, 16 over 30)
    w = torch.tensor([1.0, 4.0, 9.0, 16.0]) / 30.0
    ds2 = sum((w * L[:, b, t]).sum() for b, t in sel) / len(sel)
    warm2 = PonderLoss(LossConfig(ds_warmup_steps=10, ds_power=2.0), S)(logits, p, tgt, mask, step=3)
    assert torch.allclose(warm2.loss, ds2, atol=1e-5) and not torch.allclose(ds2, ds, atol=1e-3)


def test_no_gradient_to_the_halting_head_during_warmup():
    m = make("online", spread=False)
    m.train()
    ids, _ = inputs()
    out = m(ids, exit="dense")
    loss = PonderLoss(LossConfig(ds_warmup_steps=5), m.cfg.max_depth)
    mask = torch.ones(B, T, dtype=torch.bool)
    loss(out.step_logits, out.p_n, ids, mask, step=0).loss.backward()
    assert m.halt.weight.grad is None or (m.halt.weight.grad == 0).all()
    m.zero_grad()
    out = m(ids, exit="dense")
    loss(out.step_logits, out.p_n, ids, mask, step=5).loss.backward()
    assert m.halt.weight.grad.abs().sum() > 0


def test_init_schemes():
    """init="gpt2": N(0, 0.02) weights, output projections scaled down; init="torch": PyTorch's
    defaults (Embedding N(0, 1), Linear U(+-1/sqrt(fan_in))); the decision heads and the adapter keep
    their own init under both (mass on the last step; z = h + e)."""
    D = 128
    for init in ("gpt2", "torch"):
        torch.manual_seed(0)
        m = AniraModel(ModelConfig(vocab_size=V, d_model=D, n_heads=4, d_ff=4 * D, mechanism="online", init=init,
                                   n_prelude=1, n_coda=1, reinject="adapter"))
        emb_std, wq = m.tok_emb.weight.std().item(), m.core.attn.wq.weight
        if init == "gpt2":
            assert abs(emb_std - 0.02) < 0.004 and abs(wq.std().item() - 0.02) < 0.002
            assert abs(m.core.attn.wo.weight.std().item() - 0.02 / 6 ** 0.5) < 0.002
        else:
            assert abs(emb_std - 1.0) < 0.1 and wq.abs().max().item() <= 1 / D ** 0.5 + 1e-6
            assert abs(wq.std().item() - 1 / (3 * D) ** 0.5) < 0.005
        assert torch.equal(m.halt.weight, torch.zeros_like(m.halt.weight)) and m.halt.bias.item() == -3.0
        eye = torch.cat([torch.eye(D), torch.eye(D)], 1)
        assert (m.core.adapter.weight - eye).abs().max().item() < 0.2
    with pytest.raises(ValueError, match="init = 'xavier'.*'gpt2', 'torch'"):
        ModelConfig(init="xavier")


@pytest.mark.parametrize("mode", ["dense", "masked", "exit", "frozen"])
def test_router_prelude_is_causal_and_exit_equals_masked(mode):
    """prelude_in_loop=False: the early router reads its own prelude; the decision stays causal and
    real early exit still computes what the masked reference does."""
    m = make("early", "rope", prelude_in_loop=False)
    assert m.router_prelude is not None and len(m.prelude) == 0
    ids, diff = inputs()
    k = 11
    ids2 = ids.clone()
    ids2[:, k:] = (ids[:, k:] + 1 + torch.arange(T - k)) % V
    a, b = fwd(m, ids, diff, mode), fwd(m, ids2, diff, mode)
    assert torch.allclose(a.logits[:, :k], b.logits[:, :k], atol=1e-5)
    assert torch.equal(a.depth[:, :k], b.depth[:, :k])
    if mode == "exit":
        ref = fwd(m, ids, diff, "masked")
        assert torch.equal(ref.depth, a.depth) and torch.allclose(ref.logits, a.logits, atol=1e-5)
        assert torch.equal(a.block_calls, a.depth) and len(set(a.depth.flatten().tolist())) > 1


def test_router_prelude_changes_only_the_early_decision():
    """With prelude_in_loop=False the loop starts from the embedding: a fixed or online model is, weight
    for weight and number for number, the model without a prelude (the prelude is early's decision
    head, as the halting head is online's); an early model differs from it only in what its router
    reads, and the router's prelude gets gradient from the halting objective."""
    ids, diff = inputs()
    for mech in ("fixed", "online"):
        base = AniraModel(ModelConfig(vocab_size=V, max_len=64, d_model=32, n_heads=4, d_ff=64, mechanism=mech,
                                      fixed_depth=3 if mech == "fixed" else None, n_prelude=0))
        torch.manual_seed(0)
        base = AniraModel(base.cfg)
        torch.manual_seed(0)
        side = AniraModel(ModelConfig(**{**base.cfg.__dict__, "n_prelude": 1, "prelude_in_loop": False}))
        assert side.router_prelude is None and base.state_dict().keys() == side.state_dict().keys()
        assert all(torch.equal(v, side.state_dict()[k]) for k, v in base.state_dict().items())
        assert torch.equal(fwd(base, ids, diff, "exit").logits, fwd(side, ids, diff, "exit").logits)
    torch.manual_seed(0)
    loop = AniraModel(ModelConfig(vocab_size=V, max_len=64, d_model=32, n_heads=4, d_ff=64, mechanism="early"))
    torch.manual_seed(0)
    early = AniraModel(ModelConfig(**{**loop.cfg.__dict__, "n_prelude": 1, "prelude_in_loop": False}))
    shared = {k: v for k, v in early.state_dict().items() if not k.startswith(("router_prelude", "ln_r"))}
    assert shared.keys() == loop.state_dict().keys()
    assert all(torch.equal(v, loop.state_dict()[k]) for k, v in shared.items())  # same init as without it
    torch.nn.init.normal_(early.router.weight, std=1.0)
    out = early(ids, exit="dense")
    out.p_n.mul(torch.arange(1, 7)).sum().backward()  # any function of the decision
    assert early.router_prelude[0].attn.wo.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prelude_in_loop"):
        ModelConfig(vocab_size=V, prelude_in_loop="no")


@pytest.mark.parametrize("step_signal", [False, True])
def test_a_double_precision_model_runs_and_matches_float32(step_signal):
    """model.double() works with every block option (the step embedding follows the model's dtype)."""
    m = make("online", step_signal=step_signal)
    x, _ = inputs()
    ref = m(x, exit="exit")
    out = m.double()(x, exit="exit")
    assert out.logits.dtype == torch.float64
    assert torch.allclose(out.logits.float(), ref.logits, atol=1e-4) and torch.equal(out.depth, ref.depth)
