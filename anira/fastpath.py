"""The speed work of the backbone, apart from its math (``anira.model``).

Every piece here computes the same numbers as a plain formula written next to it, and is checked
against that formula by tests/test_model_fastpaths.py (values and gradients) and against the
masked reference path by tests/test_model.py:

* ``rope_rotate``      rotary embedding through ``_Rotary``, an autograd Function whose backward is
                       the inverse rotation (one output buffer, no concatenation, no saved inputs)
                       instead of autograd through x1 cos - x2 sin, x1 sin + x2 cos.
* ``split_adapter``    z = W_a [h ; e] + b_a = h W_h^T + u, u = W_e e + b_a computed once per forward
                       (``RecurrentBlock.inject``), as one ``addmm`` on a slice of the adapter weight:
                       each step then costs one D x D product instead of one 2D x D product.
* ``subset_attention`` causal attention of N query rows against every token's keys/values, padded
                       per sequence, so the work grows with N, not B * T.
* ``RealExit``         ``exit="exit"``: the recurrent block runs only on the tokens still active,
                       with a key/value cache for the halted ones (below).

The benchmark measures what each buys: section ``early_exit`` real early exit against a dense pass
of the same weights, section ``fastpaths`` every other piece against the formula it replaces
(plain/fast time, one CPU thread, d 128, batch 32 x 100 tokens, on a loaded 2-core machine: rotary
kernel 1.4x, split adapter 1.8x, plain steps while no token has halted 1.04x with spread depths
and 1.2x when every token runs all 8 steps). A piece that stops paying there should go.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
def rope_angles(pos: torch.Tensor, hd: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles pos_l * base^(-2i/hd), i < hd/2: (..., L, hd/2) float32.
    pos (..., L) integer positions. A table for positions 0..T-1 indexed by ``ti`` gives exactly
    the rows computed from ``ti`` directly (same elementwise arithmetic)."""
    inv_freq = base ** (-torch.arange(0, hd, 2, device=pos.device, dtype=torch.float32) / hd)  # (hd/2,)
    ang = pos.to(torch.float32)[..., None] * inv_freq
    return ang.cos(), ang.sin()


def _rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[x1 cos - x2 sin, x1 sin + x2 cos] (x = [x1, x2] on the last axis), written into one output
    instead of four temporaries and a concatenation (same products and sums, so the same numbers)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    out = torch.empty_like(x)
    o1, o2 = out[..., :h], out[..., h:]
    torch.mul(x1, cos, out=o1)
    o1.sub_(x2 * sin)
    torch.mul(x1, sin, out=o2)
    o2.add_(x2 * cos)
    return out


class _Rotary(torch.autograd.Function):
    """y = R x; the backward is the inverse rotation R^T g = rotation by -angle, i.e.
    [g1 cos + g2 sin, g2 cos - g1 sin], the same numbers autograd of the plain formula gives."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate_halves(x, cos, sin)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _Rotary.apply(g, cos, -sin), None, None  # itself differentiable (create_graph=True)


def rope_rotate(
    x: torch.Tensor, pos: torch.Tensor | tuple[torch.Tensor, torch.Tensor], base: float
) -> torch.Tensor:
    """Rotary position embedding. x (B, H, L, hd); pos (B, L) or (L,) integer positions, or their
    ``rope_angles`` (cos, sin) when the caller has them already."""
    hd = x.shape[-1]
    cos, sin = rope_angles(pos, hd, base) if isinstance(pos, torch.Tensor) else pos  # (B, L, hd/2) or (L, hd/2)
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B|1, 1, L, hd/2)
    return _Rotary.apply(x, cos, sin)


def split_adapter(h: torch.Tensor, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """u + h W_h^T with W_h = weight[:, :D], the h half of the adapter weight W_a = [W_h  W_e]
    (D, 2D); h, u (..., D). Equals W_a [h ; e] + b_a when u = W_e e + b_a."""
    D = h.shape[-1]
    z = torch.addmm(u.reshape(-1, D), h.reshape(-1, D), weight[:, :D].t())
    return z.view(h.shape)


def subset_attention(
    q: torch.Tensor, rows: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
    self_k: torch.Tensor | None = None, self_v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention for a subset of query rows against every token's keys/values.

    q (N, H, hd): queries of the rows where ``rows`` (B, T) is true, in row-major order;
    K, V (B, H, T, hd). The queries are padded per sequence into (B, A, H, hd), A = most rows in
    one sequence, so the work grows with N, not B * T. Query (b, t) sees keys 0..t of sequence b;
    with ``self_k``/``self_v`` (N, H, hd) it sees keys 0..t-1 from K/V and its *own* key/value
    from self_k/self_v instead of K[b, :, t] (the frozen-context training path).
    Returns (N, H * hd), before the output projection.
    """
    B, H, T, hd = K.shape
    bi, ti = rows.nonzero(as_tuple=True)
    N = bi.numel()
    slot = (rows.cumsum(1) - 1)[bi, ti]  # rank of each row within its sequence
    A = int(rows.sum(1).max())
    Qp = q.new_zeros(B, A, H, hd)
    Qp[bi, slot] = q
    qpos = torch.full((B, A), T - 1, dtype=torch.long, device=K.device)  # unused slots: see all keys
    qpos[bi, slot] = ti
    keys = torch.arange(T, device=K.device)[None, None, :]
    if self_k is None:
        mask = keys <= qpos[:, :, None]  # (B, A, T)
    else:
        mask = torch.cat([keys < qpos[:, :, None], torch.eye(A, dtype=torch.bool, device=K.device).expand(B, A, A)], -1)
        Ks, Vs = q.new_zeros(B, A, H, hd), q.new_zeros(B, A, H, hd)
        Ks[bi, slot], Vs[bi, slot] = self_k, self_v
        K, V = torch.cat([K, Ks.transpose(1, 2)], 2), torch.cat([V, Vs.transpose(1, 2)], 2)
    y = F.scaled_dot_product_attention(Qp.transpose(1, 2), K, V, attn_mask=mask[:, None])  # (B, H, A, hd)
    return y.transpose(1, 2)[bi, slot].reshape(N, H * hd)


# ---------------------------------------------------------------------------------------------
# real early exit
# ---------------------------------------------------------------------------------------------
class RealExit:
    """Execution mode ``exit="exit"`` of ``AniraModel`` (the interface: ``anira.model.Execution``).

    Step n runs the block on the active tokens only: their rows are gathered, flattened across the
    batch for the position-wise parts (re-injection, norms, projections, MLP, state norm). Keys and
    values of every token come from its *current* state and are cached in K, V (B, T, H, hd): a
    token whose state changed at step n - 1 is projected at step n, with the active tokens in one
    pass (``stale``). For a token that has halted this is its one key/value projection
    (``kv_calls``); it is skipped when no active token comes after it in its sequence (nothing will
    attend to it: the padding at the end of a batch, say), and never repeated. The block's pieces it
    calls (``RecurrentBlock.inputs``, ``ln1``, ``attn.project_q``/``project_kv``/``wo``, ``finish``)
    are the ones a full step calls, on fewer rows: the same numbers as the masked reference path.

    Attention, per step, in whichever layout costs less (``GRID_FROM``): the active queries
    *packed* per sequence against every key (``subset_attention``, work ~ B A T with A the most
    active tokens in one sequence), or on the (B, T) *grid* with a causal mask (work ~ B T^2 / 2;
    the halted tokens' query slots are zero and their outputs dropped: no block row is computed
    for them). The grid is the cheaper one once A >= T / 2.

    Fast path (``AniraModel.fast_paths``): while every token is still active a step is one plain
    block call on the (B, T) grid, with no gather, scatter or padding; K/V are then stale for every
    token and are projected at the next step.
    """

    keeps_running = False  # a halted token stops: block_calls = depth, the loop ends when none is active
    frozen_context = True  # others attend to a halted token's frozen state: the decision runs in the loop
    GRID_FROM = 0.5  # attention on the (B, T) grid when A / T >= this, else packed (class docstring)

    def __init__(self, model, e: torch.Tensor, pos: torch.Tensor, u: torch.Tensor):
        cfg, core, (B, T, D) = model.cfg, model.core, e.shape
        self.core, self.e, self.pos, self.u, self.fast = core, e, pos, u, model.fast_paths
        H, hd = cfg.n_heads, D // cfg.n_heads
        self.K = torch.zeros(B, T, H, hd, device=e.device, dtype=e.dtype)  # cached keys of every token's state
        self.V = torch.zeros(B, T, H, hd, device=e.device, dtype=e.dtype)
        self.stale = torch.ones(B, T, dtype=torch.bool, device=e.device)  # state changed since K/V were computed
        self.block_calls = torch.zeros(B, T, dtype=torch.long, device=e.device)
        self.kv_calls = torch.zeros(B, T, dtype=torch.long, device=e.device)
        self.rows_computed = 0
        self.layouts: list[str] = []  # attention layout of every per-token step ("packed" or "grid")
        if cfg.pos_encoding == "rope":  # the rotary angles of positions 0..T-1, indexed by each step's rows
            self._angles = rope_angles(pos, hd, cfg.rope_base)  # (T, hd/2) each
        else:
            self._angles = None

    def _at(self, ti: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """What ``project_q``/``project_kv`` take for the rows at positions ti (N,): (1, N)."""
        if self._angles is None:
            return ti[None]
        cos_t, sin_t = self._angles
        return cos_t.index_select(0, ti)[None], sin_t.index_select(0, ti)[None]  # (1, N, hd/2)

    def step(self, n: int, h: torch.Tensor, run: torch.Tensor):
        """h (B, T, D) -> (h, the new states the decision reads, their rows or None for all).

        Rows are gathered and written back through flat indices b * T + t into (B T, D) views
        (``index_select``/``index_copy``: a row copy each, where indexing with (b, t) pairs costs
        several times more on a CPU)."""
        core, u = self.core, self.u
        if self.fast and bool(run.all()):  # no token has halted yet: one plain step on the (B, T) grid
            h = core(h, self.e, n, self.pos, u)
            self.stale.fill_(True)  # every state changed; K/V are projected at the next step
            self.block_calls += 1
            self.rows_computed += h.shape[0] * h.shape[1]
            return h, h, None
        attn = core.attn
        B, T, D = h.shape
        # K/V to project: every token whose state changed (the active ones among them) that an active
        # token at or after its position will attend to
        t = torch.arange(T, device=run.device)
        last = torch.where(run, t, -1).amax(1)  # (B,) position of the last active token
        need = self.stale & (t <= last[:, None])  # (B, T), contains run
        fk = need.view(-1).nonzero().squeeze(1)  # (M,) flat rows b * T + t, row-major
        tk = fk % T
        z = core.inputs(h.view(-1, D).index_select(0, fk), None, u.reshape(-1, D).index_select(0, fk))  # (M, D)
        x = core.ln1(z)[None]  # (1, M, D)
        k, v = attn.project_kv(x, self._at(tk))  # (1, H, M, hd)
        self.K.view(B * T, D).index_copy_(0, fk, k[0].transpose(0, 1).reshape(-1, D))
        self.V.view(B * T, D).index_copy_(0, fk, v[0].transpose(0, 1).reshape(-1, D))
        self.kv_calls += need & ~run
        # the active tokens: a subsequence of the projected ones, in the same order
        fi = run.view(-1).nonzero().squeeze(1)  # (N,)
        bi, ti = fi // T, fi % T
        if fi.numel() < fk.numel():
            sel = run.view(-1).index_select(0, fk).nonzero().squeeze(1)  # their places among the M rows
            z, x = z.index_select(0, sel), x.index_select(1, sel)
        q = attn.project_q(x, self._at(ti))[0].transpose(0, 1)  # (N, H, hd)
        A = int(run.sum(1).max())
        if A >= self.GRID_FROM * T:
            self.layouts.append("grid")
            Q = q.new_zeros(B * T, D).index_copy_(0, fi, q.reshape(-1, D))  # the halted tokens' slots stay zero
            Q = Q.view(B, T, *q.shape[1:]).transpose(1, 2)  # (B, H, T, hd)
            y = F.scaled_dot_product_attention(Q, self.K.transpose(1, 2), self.V.transpose(1, 2), is_causal=True)
            y = y.transpose(1, 2).reshape(B * T, D).index_select(0, fi)  # (N, D)
        else:
            self.layouts.append("packed")
            y = subset_attention(q, run, self.K.transpose(1, 2), self.V.transpose(1, 2))  # (N, D)
        h_run = core.finish(z, attn.wo(y), n)  # (N, D)
        h = h.reshape(-1, D).index_copy(0, fi, h_run).view(B, T, D)
        self.block_calls += run
        self.stale = run | (self.stale & ~need)  # the active tokens just changed; the projected others are fresh
        self.rows_computed += fi.numel()
        return h, h_run, (bi, ti)
