"""ANIRA: a recurrent Transformer with per-token variable depth.

Backbone (identical for every decision mechanism)::

    x       = Embed(input_ids) (+ learned absolute positions, or RoPE inside attention)
    x_t     = x_t + sum_{k=0}^{w-1} W_k x_{t-k}                  # short causal conv (conv_width w)
    e       = LN_e(Prelude(x))                                   # (B, T, D)
    h^0     = e
    step n  = 1 .. S (S = max_depth):
        z^n = W_a [h^{n-1} ; e]    or   h^{n-1} + e              # input re-injection (reinject=adapter | add)
        a^n = z^n + Attn(LN_1(z^n))                              # causal self-attention
        b^n = a^n + sigma_n                                      # step signal sigma_n = W_s sin_emb(n) (step_signal)
        h^n = LN_s(b^n + MLP(LN_2(b^n)))                         # one *shared* block for every n
    logits  = Head(LN_f(Coda(h^{depth})))                        # each token at the depth it used

``reinject="add"`` has no adapter parameters (the block is then a plain pre-norm layer on h + e,
as in the looped Transformers of the literature); ``step_signal=False`` drops sigma_n, so the
block computes the same function at every step. Which of them learns multi-hop `hops` faster is
measured, not assumed (README, "learning recipe").

The short causal convolution gives every token its few predecessors directly (cf. token shift
or "canon layers"): in `hops` the right-hand side of ``x = y`` then knows ``x``, so one hop is one
attention lookup. Without it (``conv_width=0``) both this model and a plain 2-layer GPT sat on the
"guess a digit of the prompt" plateau (~65 % on `hops`) for more than 2,000 steps; with it a plain
2-layer probe learned 1-hop lookup in ~300 steps. It runs once, before the loop, so it changes
nothing about per-token depth or early exit.

The step signal enters after attention, so a token's keys/values at step n are a function of its
state h^{n-1} (and e) only: a halted token's keys/values do not change, they are computed once
from its frozen state and cached (real early exit, below).

Decision mechanisms (``ModelConfig.mechanism``) give every token a distribution p_n over depths
n = 1..S and a depth. The halting rule is shared by ``early`` and ``online``: a token halts at
the first n where the cumulative probability sum_{j<=n} p_j >= ``halt_threshold``.

* ``fixed``   depth = ``fixed_depth`` for every token (p one-hot).
* ``early``   (ANIRA-E) p = softmax(Router(e)), decided from the prelude output before the loop.
* ``online``  (ANIRA-O) lambda_n = sigmoid(w . h^n + b) read from the token's current state,
              p_n = lambda_n prod_{j<n} (1 - lambda_j), lambda_S = 1 (PonderNet).
* ``oracle``  depth = clamp(round(oracle_offset + oracle_scale * difficulty), 1, S) from the
              task's ground-truth difficulty (p one-hot). Defaults 1 + 1 * difficulty: a k-hop
              answer gets k + 1 steps, a difficulty-0 token one step.
* ``random``  depth drawn i.i.d. per token, independent of the input: from
              ``random_depth_probs`` when given (e.g. the depth histogram of an adaptive run),
              else from the two-point distribution on floor(m), ceil(m) with mean
              m = ``random_mean_depth``.

Both adaptive mechanisms start from the same distribution: the halting bias b = halt_bias_init
(default -3: lambda = 0.047, so almost all mass sits on the last step) and a router whose bias
is the log of that same truncated geometric distribution (its weights start at zero).

Execution modes of ``AniraModel.forward`` (``exit=``):

* ``"dense"``  every token runs all S steps; ``step_logits[n]`` reads every token out at step n
               (the training path for the PonderNet objective). ``logits`` gathers each token's
               own depth from ``step_logits``.
* ``"masked"`` reference inference path: every token is computed at every step, but a halted
               token's state is frozen with ``torch.where``; later tokens attend to the frozen
               state. The coda then reads every token at its own depth.
* ``"exit"``   real early exit: the block runs only on the still-active tokens (flattened across
               the batch for the position-wise parts, padded per sequence for attention); keys and
               values of every token come from its current state, cached, so a halted token costs
               one key/value projection (``kv_calls``) and nothing else. ``block_calls`` counts the
               block invocations of every token and equals ``depth``. While no token has halted
               yet, a step is one plain block call on the (B, T) grid (no gather, scatter or
               padding; the masked path likewise skips its ``torch.where``), see
               ``AniraModel.fast_paths``.

For ``online`` in the masked/exit modes only the executed steps are known, so ``p_n`` is the
distribution *as executed*: p_n as above for n < depth and p_depth = the remaining mass
prod_{j<depth}(1 - lambda_j) (lambda_n for n > depth is reported as 0). In dense mode p_n is the
full PonderNet distribution.

Call-time ``max_depth`` M (test-time iterations): ``fixed`` runs exactly M steps, ``online``
keeps iterating with its learned halting head and forces lambda_M = 1, ``oracle``/``random``
clamp their depth to M. ``early`` has a router with S outputs, so it cannot ask for more than S
steps: for M > S its distribution gets zero mass on the extra depths (depths unchanged); for
M < S the mass beyond M is folded onto M.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from anira.config import MECHANISMS, check_choice, check_fields, check_range

POS_ENCODINGS = ("learned", "rope")
REINJECTIONS = ("adapter", "add")
INITS = ("gpt2", "torch")
EXIT_MODES = ("dense", "masked", "exit", "frozen")


@dataclass
class ModelConfig:
    vocab_size: int = 64  # set from the task's vocabulary (identical across its ranges)
    max_len: int = 512  # longest input (learned positions table); must cover the extrapolation sets
    d_model: int = 128  # width; d=128 with 4 heads learns 1-4 hop `hops` on CPU in minutes
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    d_ff: int = 512  # MLP hidden width (4 x d_model, the usual ratio)
    n_prelude: int = 0  # layers before the loop; the early router reads their output (0: the embedding + conv)
    n_coda: int = 0  # layers after the loop, run once on every token's final state
    # (0 and 0 in the recipe: with a prelude and a coda, depth 1 already resolves 2 hops on `hops`, so
    # the loop would not be needed for them; without, every lookup is a loop step -- README)
    max_depth: int = 6  # S: most iterations of the shared block (trained range)
    pos_encoding: Literal["learned", "rope"] = "rope"  # extrapolation to longer inputs is a study question
    rope_base: float = 10000.0  # RoPE frequency base (only for pos_encoding="rope")
    state_norm: bool = True  # LayerNorm on e and on every state h^n (bounded state over many steps)
    conv_width: int = 4  # causal conv over the last conv_width tokens on the embeddings (0 = off), see docstring
    reinject: Literal["adapter", "add"] = "add"  # z = W_a [h ; e] (learned) or z = h + e (fixed, no parameters)
    step_signal: bool = False  # add sigma_n = W_s sin_emb(n) after attention (False: the block does not know n)
    # weight init: "gpt2" = N(0, 0.02) for every linear and embedding weight (output projections
    # / sqrt(#residual branches)); "torch" = PyTorch's defaults (Linear U(+-1/sqrt(fan_in)), Embedding
    # N(0, 1)). Which one learns multi-hop `hops` faster is measured (README, "learning recipe").
    init: Literal["gpt2", "torch"] = "torch"
    mechanism: Literal["fixed", "early", "online", "oracle", "random"] = "online"  # the one switch
    fixed_depth: int | None = None  # depth of `fixed`; None = max_depth
    halt_bias_init: float = -3.0  # halting-bias init: lambda=0.047, mass on the last step (anti-collapse)
    halt_threshold: float = 0.5  # halt at the first n with cumulative p_n >= this (early and online)
    oracle_offset: float = 1.0  # oracle depth = clamp(round(offset + scale*difficulty), 1, S)
    oracle_scale: float = 1.0  # one extra step per unit of difficulty (one per hop in `hops`)
    random_mean_depth: float | None = None  # `random`: mean depth, matched to an adaptive run
    random_depth_probs: tuple[float, ...] | None = None  # `random`: full depth histogram (len S) instead

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("vocab_size", self.vocab_size, 2)
        check_range("max_len", self.max_len, 1)
        check_range("d_model", self.d_model, 1)
        check_range("n_heads", self.n_heads, 1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model = {self.d_model} must be divisible by n_heads = {self.n_heads}")
        check_range("d_ff", self.d_ff, 1)
        check_range("n_prelude", self.n_prelude, 0)
        check_range("conv_width", self.conv_width, 0)
        check_range("n_coda", self.n_coda, 0)
        check_range("max_depth", self.max_depth, 1)
        check_choice("pos_encoding", self.pos_encoding, POS_ENCODINGS)
        if self.pos_encoding == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"pos_encoding = 'rope' needs an even head size; d_model / n_heads = {self.d_model // self.n_heads}")
        check_range("rope_base", self.rope_base, 1.0)
        check_choice("reinject", self.reinject, REINJECTIONS)
        check_choice("init", self.init, INITS)
        if not isinstance(self.step_signal, bool):
            raise ValueError(f"step_signal = {self.step_signal!r} must be true or false")
        check_choice("mechanism", self.mechanism, MECHANISMS)
        if self.fixed_depth is not None:
            check_range("fixed_depth", self.fixed_depth, 1, self.max_depth)
        if not 0.0 < self.halt_threshold < 1.0:
            raise ValueError(f"halt_threshold = {self.halt_threshold!r} is out of range; allowed: (0, 1)")
        if not math.isfinite(self.halt_bias_init):
            raise ValueError(f"halt_bias_init = {self.halt_bias_init!r} must be finite")
        if self.random_depth_probs is not None:
            probs = self.random_depth_probs
            if len(probs) != self.max_depth or any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(
                    f"random_depth_probs = {probs!r} must be {self.max_depth} non-negative numbers summing to 1"
                )
        if self.random_mean_depth is not None:
            check_range("random_mean_depth", self.random_mean_depth, 1.0, float(self.max_depth))
        if self.mechanism == "random" and self.random_mean_depth is None and self.random_depth_probs is None:
            raise ValueError("random_mean_depth = None: mechanism 'random' needs random_mean_depth or random_depth_probs")

    @property
    def depth_fixed(self) -> int:
        return self.max_depth if self.fixed_depth is None else self.fixed_depth


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V) read out at each token's depth
    p_n: torch.Tensor  # (B, T, M) halting distribution over depths 1..M (sums to 1)
    depth: torch.Tensor  # (B, T) long, the depth each token used
    expected_depth: torch.Tensor  # (B, T) sum_n n p_n
    block_calls: torch.Tensor  # (B, T) long, recurrent-block invocations per token
    kv_calls: torch.Tensor  # (B, T) long, key/value-only projections (exit mode, halted tokens)
    step_logits: torch.Tensor | None = None  # (M, B, T, V) per-step readouts (dense mode only)
    lambda_n: torch.Tensor | None = None  # (B, T, M) online halting probabilities per step
    router_logits: torch.Tensor | None = None  # (B, T, S) early router logits
    states: torch.Tensor | None = None  # (M + 1, B, T, D) h^0..h^M as executed (return_states=True)


# ---------------------------------------------------------------------------------------------
# building blocks
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


def step_embedding(n: int, d: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal code of the step number n (defined for any n, so test-time extra steps work)."""
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    ang = n / (100.0 ** (i / d))  # base 100: distinct codes for small step counts
    out = torch.zeros(d, device=device)
    out[0::2], out[1::2] = ang.sin(), ang.cos()[: d // 2]
    return out


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


class Attention(nn.Module):
    """Multi-head attention with separate projection helpers, so queries and keys/values can be
    computed for different token subsets (real early exit)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.n_heads, self.hd = cfg.n_heads, D // cfg.n_heads
        self.rope = cfg.pos_encoding == "rope"
        self.rope_base = cfg.rope_base
        self.wq, self.wk, self.wv = (nn.Linear(D, D, bias=False) for _ in range(3))
        self.wo = nn.Linear(D, D, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, H, L, hd)
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.hd).transpose(1, 2)

    def project_q(self, x: torch.Tensor, pos: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Queries (B, H, L, hd); ``pos`` positions or their ``rope_angles``."""
        q = self._heads(self.wq(x))
        return rope_rotate(q, pos, self.rope_base) if self.rope else q

    def project_kv(
        self, x: torch.Tensor, pos: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self._heads(self.wk(x))
        if self.rope:
            k = rope_rotate(k, pos, self.rope_base)
        return k, self._heads(self.wv(x))

    def merge(self, y: torch.Tensor) -> torch.Tensor:  # (B, H, L, hd) -> (B, L, D) output projection
        B, H, L, hd = y.shape
        return self.wo(y.transpose(1, 2).reshape(B, L, H * hd))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Causal self-attention over x (B, T, D)."""
        q = self.project_q(x, pos)
        k, v = self.project_kv(x, pos)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Layer(nn.Module):
    """Plain pre-norm Transformer layer (prelude and coda): x + Attn(LN x), then + MLP(LN x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), pos)
        return x + self.mlp(self.ln2(x))


class RecurrentBlock(nn.Module):
    """The shared block, split into the pieces that real early exit calls separately."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        # W_a [h ; e]: input re-injection ("add": z = h + e, no parameters)
        self.adapter = nn.Linear(2 * D, D) if cfg.reinject == "adapter" else None
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)
        self.step_proj = nn.Linear(D, D, bias=False) if cfg.step_signal else None  # sigma_n = W_s sin_emb(n)
        self.ln_state = nn.LayerNorm(D) if cfg.state_norm else nn.Identity()  # fixed state scale over steps

    def inject(self, e: torch.Tensor) -> torch.Tensor:
        """The step-independent half of the adapter, u = W_e e + b_a (..., D), with W_a = [W_h  W_e]
        the single ``adapter`` weight sliced (no extra parameters): computed once per forward.
        Additive re-injection: u = e."""
        if self.adapter is None:
            return e
        return F.linear(e, self.adapter.weight[:, e.shape[-1] :], self.adapter.bias)

    def inputs(self, h: torch.Tensor, e: torch.Tensor | None, u: torch.Tensor | None = None) -> torch.Tensor:
        """z = W_a [h ; e] + b_a = W_h h + u, u = ``inject(e)`` (pass it when known: it does not
        change over steps, so each step costs one D x D product instead of one 2D x D product).
        Keys, values and queries are all read from LN_1(z). h, e, u (..., D)."""
        if u is None:
            u = self.inject(e)
        if self.adapter is None:
            return h + u
        D = h.shape[-1]
        z = torch.addmm(u.reshape(-1, D), h.reshape(-1, D), self.adapter.weight[:, :D].t())  # u + h W_h^T
        return z.view(h.shape)

    def finish(self, z: torch.Tensor, attn_out: torch.Tensor, n: int) -> torch.Tensor:
        """h^n = LN_s(b + MLP(LN_2 b)), b = z + attn_out + sigma_n (position-wise)."""
        b = z + attn_out
        if self.step_proj is not None:
            b = b + self.step_proj(step_embedding(n, z.shape[-1], z.device))
        return self.ln_state(b + self.mlp(self.ln2(b)))

    def forward(self, h: torch.Tensor, e: torch.Tensor, n: int, pos: torch.Tensor,
                u: torch.Tensor | None = None) -> torch.Tensor:
        """One full step for every token (dense and masked modes). h, e (B, T, D); u = inject(e)."""
        z = self.inputs(h, e, u)
        return self.finish(z, self.attn(self.ln1(z), pos), n)


def truncated_geometric(lam: float, S: int) -> torch.Tensor:
    """q_n = lam (1-lam)^{n-1} for n < S, q_S = (1-lam)^{S-1}: constant halting rate lam, forced at S."""
    n = torch.arange(1, S + 1, dtype=torch.float64)
    q = lam * (1 - lam) ** (n - 1)
    q[-1] = (1 - lam) ** (S - 1)
    return q.to(torch.float32)


def depth_from_p(p: torch.Tensor, threshold: float) -> torch.Tensor:
    """First n (1-based) with cumsum_{j<=n} p_j >= threshold. p (..., M) -> (...) long."""
    cum = p.cumsum(-1)
    reached = cum >= threshold
    reached[..., -1] = True
    return reached.to(torch.int8).argmax(-1) + 1


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class AniraModel(nn.Module):
    # While no token has halted, masked/exit/frozen run plain dense steps (same numbers, less
    # bookkeeping); tests set it False on an instance to compare against the general per-token path.
    fast_paths = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        D = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.pos_emb = nn.Embedding(cfg.max_len, D) if cfg.pos_encoding == "learned" else None
        # local token mixing: x_t + sum_{k<w} W_k x_{t-k} (full channel mixing, causal padding)
        self.conv = nn.Conv1d(D, D, cfg.conv_width, padding=cfg.conv_width - 1) if cfg.conv_width else None
        self.prelude = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_prelude))
        self.ln_e = nn.LayerNorm(D) if cfg.state_norm else nn.Identity()
        self.core = RecurrentBlock(cfg)
        self.coda = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_coda))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        # decision heads: only the one the mechanism uses exists, so parameter counts stay honest
        self.halt = nn.Linear(D, 1) if cfg.mechanism == "online" else None  # lambda_n = sigmoid(w.h^n + b)
        self.router = nn.Linear(D, cfg.max_depth) if cfg.mechanism == "early" else None  # p = softmax(R e)
        self.block_calls_total = 0  # running count of recurrent-block token invocations (all forwards)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cfg.init == "gpt2":  # else the modules keep PyTorch's default init
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Embedding):
                    nn.init.normal_(m.weight, std=0.02)
            n_res = 2 * (self.cfg.n_prelude + self.cfg.n_coda + 1)
            for name, p in self.named_parameters():
                if name.endswith("wo.weight") or name.endswith("mlp.proj.weight"):
                    nn.init.normal_(p, std=0.02 / math.sqrt(n_res))
        D = self.cfg.d_model
        if self.core.adapter is not None:  # adapter starts as z = h + e (residual-like recurrence)
            with torch.no_grad():
                self.core.adapter.weight.copy_(torch.cat([torch.eye(D), torch.eye(D)], dim=1))
                self.core.adapter.weight.add_(0.02 * torch.randn_like(self.core.adapter.weight))
        if self.halt is not None:
            nn.init.zeros_(self.halt.weight)
            nn.init.constant_(self.halt.bias, self.cfg.halt_bias_init)
        if self.router is not None:
            nn.init.zeros_(self.router.weight)
            q = truncated_geometric(torch.sigmoid(torch.tensor(self.cfg.halt_bias_init)).item(), self.cfg.max_depth)
            with torch.no_grad():
                self.router.bias.copy_(q.clamp_min(1e-12).log())

    # --- pieces -------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns e = LN_e(Prelude(Embed(ids))) (B, T, D) and positions (T,)."""
        B, T = input_ids.shape
        if T > self.cfg.max_len:
            raise ValueError(f"input length {T} exceeds max_len = {self.cfg.max_len}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        if self.conv is not None:
            x = x + self.conv(x.transpose(1, 2))[..., :T].transpose(1, 2)  # (B, T, D), causal
        for layer in self.prelude:
            x = layer(x, pos)
        return self.ln_e(x), pos

    def readout(self, h: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Coda + head: (B, T, D) -> (B, T, V). With ``rows`` (B, T) bool only those positions are
        read out, (N, V): every token still provides keys/values to the last coda layer, but its
        queries, MLP and head run on the N rows only (training needs the scored tokens only)."""
        if rows is None:
            for layer in self.coda:
                h = layer(h, pos)
            return self.head(self.ln_f(h))
        bi, ti = rows.nonzero(as_tuple=True)
        if not len(self.coda):
            return self.head(self.ln_f(h[bi, ti]))
        for layer in self.coda[:-1]:
            h = layer(h, pos)
        last = self.coda[-1]
        a = last.ln1(h)
        k, v = last.attn.project_kv(a, pos)  # (B, H, T, hd)
        q = last.attn.project_q(a[bi, ti][None], ti[None])[0].transpose(0, 1)  # (N, H, hd)
        x = h[bi, ti] + last.attn.wo(subset_attention(q, rows, k, v))
        x = x + last.mlp(last.ln2(x))
        return self.head(self.ln_f(x))

    def _scatter(self, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(..., N, V) read-out rows -> (..., B, T, V), zeros (uniform logits) elsewhere."""
        out = values.new_zeros(*values.shape[:-2], *rows.shape, values.shape[-1])
        out[..., rows, :] = values
        return out

    def lambda_of(self, h: torch.Tensor) -> torch.Tensor:
        """Online halting probability lambda = sigmoid(w . h + b). (..., D) -> (...)."""
        return torch.sigmoid(self.halt(h).squeeze(-1))

    def decide(
        self, e: torch.Tensor, M: int, explicit_M: bool, difficulty: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Up-front decision (all mechanisms but online): p (B, T, M), depth (B, T), router logits."""
        cfg, (B, T, _) = self.cfg, e.shape
        router_logits = None
        if cfg.mechanism == "early":
            router_logits = self.router(e)  # (B, T, S)
            p = torch.softmax(router_logits, dim=-1)
            S = cfg.max_depth
            if M > S:
                p = F.pad(p, (0, M - S))
            elif M < S:
                p = torch.cat([p[..., : M - 1], p[..., M - 1 :].sum(-1, keepdim=True)], dim=-1)
            return p, depth_from_p(p, cfg.halt_threshold), router_logits
        if cfg.mechanism == "fixed":
            d = M if explicit_M else cfg.depth_fixed
            depth = torch.full((B, T), d, dtype=torch.long, device=e.device)
        elif cfg.mechanism == "oracle":
            if difficulty is None:
                raise ValueError("difficulty = None: mechanism 'oracle' needs the per-token difficulty (B, T)")
            if difficulty.shape != (B, T):
                raise ValueError(f"difficulty has shape {tuple(difficulty.shape)}; expected {(B, T)}")
            depth = torch.round(cfg.oracle_offset + cfg.oracle_scale * difficulty.to(torch.float32))
            depth = depth.clamp(1, M).to(torch.long)
        else:  # random
            if cfg.random_depth_probs is not None:
                probs = torch.tensor(cfg.random_depth_probs, dtype=torch.float32)
            else:
                m = cfg.random_mean_depth
                lo = math.floor(m)
                probs = torch.zeros(cfg.max_depth)
                probs[lo - 1] = 1.0 - (m - lo)
                if m > lo:
                    probs[lo] = m - lo
            depth = torch.multinomial(probs, B * T, replacement=True, generator=generator) + 1
            depth = depth.view(B, T).clamp(max=M).to(e.device)
        p = F.one_hot(depth - 1, M).to(e.dtype)
        return p, depth, router_logits

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        difficulty: torch.Tensor | None = None,
        exit: Literal["dense", "masked", "exit"] = "dense",
        max_depth: int | None = None,
        generator: torch.Generator | None = None,
        return_states: bool = False,
        readout_rows: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Run the model. input_ids (B, T) long; difficulty (B, T) only for ``oracle``;
        ``generator`` seeds the ``random`` mechanism's draws (global RNG when None);
        ``return_states`` also returns every step's states (for tests and analyses);
        ``readout_rows`` (B, T) bool reads out only those positions (the others get zero logits):
        training passes the loss mask, which skips most of the coda's and head's work."""
        check_choice("exit", exit, EXIT_MODES)
        if max_depth is not None:
            check_range("max_depth", max_depth, 1)
        M = self.cfg.max_depth if max_depth is None else max_depth
        e, pos = self.embed(input_ids)
        states: list[torch.Tensor] | None = [e] if return_states else None
        if exit == "dense":
            out = self._dense(e, pos, M, max_depth is not None, difficulty, generator, states, readout_rows)
        elif exit == "frozen":
            out = self._frozen(e, pos, M, max_depth is not None, difficulty, generator, states, readout_rows)
        else:
            out = self._run_halting(
                e, pos, M, max_depth is not None, difficulty, generator, exit == "exit", states, readout_rows
            )
        if states is not None:
            states += [states[-1]] * (M + 1 - len(states))  # steps skipped because every token had halted
            out.states = torch.stack(states)
        return out

    def _dense(self, e, pos, M, explicit_M, difficulty, generator, rec, rows) -> ModelOutput:
        cfg, (B, T, _) = self.cfg, e.shape
        online = cfg.mechanism == "online"
        h, states, lams = e, [], []
        u = self.core.inject(e)  # (B, T, D) the adapter's e half, once for all steps
        for n in range(1, M + 1):
            h = self.core(h, e, n, pos, u)  # (B, T, D)
            states.append(h)
            if rec is not None:
                rec.append(h)
            if online:
                lams.append(self.lambda_of(h) if n < M else torch.ones(B, T, device=h.device, dtype=h.dtype))
        self.block_calls_total += B * T * M
        step_logits = torch.stack([self.readout(s, pos, rows) for s in states])  # (M, B, T, V) or (M, N, V)
        if rows is not None:
            step_logits = self._scatter(rows, step_logits)
        lambda_n = router_logits = None
        if online:
            lambda_n = torch.stack(lams, dim=-1)  # (B, T, M)
            remain = torch.cumprod(1 - lambda_n, dim=-1)  # prod_{j<=n} (1 - lambda_j)
            remain_prev = torch.cat([torch.ones_like(remain[..., :1]), remain[..., :-1]], dim=-1)
            p = lambda_n * remain_prev  # p_n = lambda_n prod_{j<n}(1 - lambda_j)
            reached = (1 - remain) >= cfg.halt_threshold  # same rule (and arithmetic) as the masked/exit paths
            reached[..., -1] = True
            depth = reached.to(torch.int8).argmax(-1) + 1
        else:
            p, depth, router_logits = self.decide(e, M, explicit_M, difficulty, generator)
        logits = step_logits.gather(0, (depth - 1)[None, :, :, None].expand(1, B, T, step_logits.shape[-1]))[0]
        steps = torch.arange(1, M + 1, device=e.device, dtype=p.dtype)
        full = torch.full((B, T), M, dtype=torch.long, device=e.device)
        return ModelOutput(
            logits=logits, p_n=p, depth=depth, expected_depth=(p * steps).sum(-1), block_calls=full,
            kv_calls=torch.zeros_like(full), step_logits=step_logits, lambda_n=lambda_n, router_logits=router_logits,
        )

    def _frozen(self, e, pos, M, explicit_M, difficulty, generator, rec, rows) -> ModelOutput:
        """Training path that matches inference: every token's *own* stream runs all M steps (so
        L_n exists for every n), but what the other tokens attend to is its *context* state,
        frozen at the depth it actually uses (the decision is discrete, hence not differentiated):

            c_j^n = o_j^{min(n, d_j)}        context state of token j after step n
            step n, query t:  keys/values of j < t from c_j^{n-1}, of t itself from o_t^{n-1}
            readout n, query t: coda keys/values of j < t from the final c_j, of t from o_t^n

        So for n <= d_t the own stream *is* the state real early exit computes, ``logits`` (step
        d_t) equal the exit path's, and step_logits[n] for n != d_t is the counterfactual "t alone
        stops at n, everything else as decided" that the expected loss sum_n p_n L_n needs."""
        cfg, (B, T, D) = self.cfg, e.shape
        dev, online = e.device, cfg.mechanism == "online"
        router_logits = lambda_n = None
        if online:
            depth = torch.full((B, T), M, dtype=torch.long, device=dev)
            decided = torch.zeros(B, T, dtype=torch.bool, device=dev)
            remain = torch.ones(B, T, device=dev, dtype=e.dtype)
            lams = []
        else:
            p, depth, router_logits = self.decide(e, M, explicit_M, difficulty, generator)
        ar = torch.arange(T, device=dev)
        split_mask = torch.cat([ar[None, :] < ar[:, None], torch.eye(T, dtype=torch.bool, device=dev)], dim=1)  # (T, 2T)
        attn = self.core.attn
        own, ctx, owns = e, e, []
        u = self.core.inject(e)  # (B, T, D) the adapter's e half, once for all steps
        for n in range(1, M + 1):
            z_own = self.core.inputs(own, e, u)
            x_own = self.core.ln1(z_own)
            q = attn.project_q(x_own, pos)
            k_s, v_s = attn.project_kv(x_own, pos)
            if ctx is own:  # no token has halted yet: the context is the own stream (same numbers)
                k_c, v_c = k_s, v_s
            else:
                k_c, v_c = attn.project_kv(self.core.ln1(self.core.inputs(ctx, e, u)), pos)
            y = F.scaled_dot_product_attention(q, torch.cat([k_c, k_s], 2), torch.cat([v_c, v_s], 2), attn_mask=split_mask)
            own = self.core.finish(z_own, attn.merge(y), n)  # (B, T, D)
            owns.append(own)
            if rec is not None:
                rec.append(own)
            if online:
                lam = self.lambda_of(own) if n < M else torch.ones(B, T, device=dev, dtype=e.dtype)
                lams.append(lam)
                running = ~decided  # still running at step n (the context takes the new state)
                remain = remain * (1 - lam)
                newly = running & ((1 - remain.detach() >= cfg.halt_threshold) | (n == M))
                depth = torch.where(newly, torch.full_like(depth, n), depth)
                decided = decided | newly
            else:
                running = depth >= n
            ctx = own if self.fast_paths and bool(running.all()) else torch.where(running[..., None], own, ctx)
        self.block_calls_total += B * T * M
        if online:
            lambda_n = torch.stack(lams, dim=-1)  # (B, T, M)
            rem = torch.cumprod(1 - lambda_n, dim=-1)
            p = lambda_n * torch.cat([torch.ones_like(rem[..., :1]), rem[..., :-1]], dim=-1)
        # readouts: the S own streams against the context's final states, layer by layer
        x = torch.stack(owns).reshape(M * B, T, D)  # stream n occupies rows n*B .. n*B + B - 1
        c = ctx
        layers = list(self.coda)
        full_layers = layers if rows is None else layers[:-1]
        for layer in full_layers:
            a, ca = layer.ln1(x), layer.ln1(c)
            q = layer.attn.project_q(a, pos)
            k_s, v_s = layer.attn.project_kv(a, pos)
            k_c, v_c = (t.repeat(M, 1, 1, 1) for t in layer.attn.project_kv(ca, pos))
            y = F.scaled_dot_product_attention(q, torch.cat([k_c, k_s], 2), torch.cat([v_c, v_s], 2), attn_mask=split_mask)
            x = x + layer.attn.merge(y)
            x = x + layer.mlp(layer.ln2(x))
            c = layer(c, pos)
        if rows is None:
            step_logits = self.head(self.ln_f(x)).view(M, B, T, -1)
        else:  # last coda layer and head on the selected rows of every stream only
            rows_m = rows.repeat(M, 1)  # (M * B, T)
            bi, ti = rows_m.nonzero(as_tuple=True)
            xr = x[bi, ti]  # (M * N, D)
            if layers:
                last = layers[-1]
                a = last.ln1(xr)[None]
                q = last.attn.project_q(a, ti[None])[0].transpose(0, 1)  # (M * N, H, hd)
                k_s, v_s = (t[0].transpose(0, 1) for t in last.attn.project_kv(a, ti[None]))
                k_c, v_c = (t.repeat(M, 1, 1, 1) for t in last.attn.project_kv(last.ln1(c), pos))
                xr = xr + last.attn.wo(subset_attention(q, rows_m, k_c, v_c, k_s, v_s))
                xr = xr + last.mlp(last.ln2(xr))
            step_logits = self._scatter(rows, self.head(self.ln_f(xr)).view(M, -1, self.cfg.vocab_size))
        V = step_logits.shape[-1]
        logits = step_logits.gather(0, (depth - 1)[None, :, :, None].expand(1, B, T, V))[0]
        steps = torch.arange(1, M + 1, device=dev, dtype=p.dtype)
        full = torch.full((B, T), M, dtype=torch.long, device=dev)
        return ModelOutput(
            logits=logits, p_n=p, depth=depth, expected_depth=(p * steps).sum(-1), block_calls=full,
            kv_calls=torch.zeros_like(full), step_logits=step_logits, lambda_n=lambda_n, router_logits=router_logits,
        )

    def _run_halting(self, e, pos, M, explicit_M, difficulty, generator, real_exit: bool, rec, rows) -> ModelOutput:
        """Masked reference (real_exit=False) and real early exit (real_exit=True)."""
        cfg, (B, T, D) = self.cfg, e.shape
        dev = e.device
        online = cfg.mechanism == "online"
        router_logits = None
        if online:
            p = torch.zeros(B, T, M, device=dev, dtype=e.dtype)
            lambda_n = torch.zeros(B, T, M, device=dev, dtype=e.dtype)
            remain = torch.ones(B, T, device=dev, dtype=e.dtype)  # prod_{j<n}(1 - lambda_j)
            depth = torch.full((B, T), M, dtype=torch.long, device=dev)
        else:
            lambda_n = None
            p, depth, router_logits = self.decide(e, M, explicit_M, difficulty, generator)
        active = torch.ones(B, T, dtype=torch.bool, device=dev)
        block_calls = torch.zeros(B, T, dtype=torch.long, device=dev)
        kv_calls = torch.zeros(B, T, dtype=torch.long, device=dev)
        h = e
        u = self.core.inject(e)  # (B, T, D) the adapter's e half, once for all steps
        if real_exit:
            H, hd = cfg.n_heads, D // cfg.n_heads
            K = torch.zeros(B, T, H, hd, device=dev, dtype=e.dtype)  # cached keys of every token's state
            V = torch.zeros(B, T, H, hd, device=dev, dtype=e.dtype)
            stale = torch.ones(B, T, dtype=torch.bool, device=dev)  # state changed since K/V were computed
            if cfg.pos_encoding == "rope":  # the rotary angles of positions 0..T-1, indexed by each step's rows
                cos_t, sin_t = rope_angles(pos, hd, cfg.rope_base)  # (T, hd/2)

                def at(ti: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                    return cos_t[ti][None], sin_t[ti][None]  # (1, N, hd/2)
            else:

                def at(ti: torch.Tensor) -> torch.Tensor:
                    return ti[None]  # (1, N)
        for n in range(1, M + 1):
            if not online:
                active = depth >= n
            if not bool(active.any()):
                break
            everyone = self.fast_paths and bool(active.all())  # no token has halted yet
            if real_exit and everyone:  # one plain step on the (B, T) grid: no gather, scatter or padding
                h = self.core(h, e, n, pos, u)
                block_calls += 1
                stale.fill_(True)  # every state changed; K/V are projected later only for the halted ones
                self.block_calls_total += B * T
                if online:
                    bi, ti = active.nonzero(as_tuple=True)  # row-major, like h.reshape(B * T, D)
                    lam = self.lambda_of(h).reshape(-1) if n < M else torch.ones(B * T, device=dev, dtype=e.dtype)
                    self._online_update(lam, bi, ti, n, M, p, lambda_n, remain, depth, active)
            elif real_exit:
                attn = self.core.attn
                # halted tokens whose state changed: one key/value projection of the frozen state
                bi, ti = (stale & ~active).nonzero(as_tuple=True)
                if bi.numel():
                    x = self.core.ln1(self.core.inputs(h[bi, ti], None, u[bi, ti]))[None]  # (1, N, D)
                    k, v = attn.project_kv(x, at(ti))
                    K[bi, ti], V[bi, ti] = k[0].transpose(0, 1), v[0].transpose(0, 1)
                    kv_calls[bi, ti] += 1
                    stale[bi, ti] = False
                bi, ti = active.nonzero(as_tuple=True)  # row-major: grouped by sequence
                N = bi.numel()
                z = self.core.inputs(h[bi, ti], None, u[bi, ti])  # (N, D), only the active tokens
                x = self.core.ln1(z)[None]  # (1, N, D)
                rot = at(ti)
                q = attn.project_q(x, rot)[0].transpose(0, 1)  # (N, H, hd)
                k, v = attn.project_kv(x, rot)
                K[bi, ti], V[bi, ti] = k[0].transpose(0, 1), v[0].transpose(0, 1)
                y = subset_attention(q, active, K.transpose(1, 2), V.transpose(1, 2))  # (N, D)
                h_act = self.core.finish(z, attn.wo(y), n)  # (N, D)
                h = h.index_put((bi, ti), h_act)
                block_calls[bi, ti] += 1
                stale[bi, ti] = True
                self.block_calls_total += N
                if online:
                    lam = self.lambda_of(h_act) if n < M else torch.ones(N, device=dev, dtype=e.dtype)
                    self._online_update(lam, bi, ti, n, M, p, lambda_n, remain, depth, active)
            else:
                h_new = self.core(h, e, n, pos, u)  # every token computed ...
                h = h_new if everyone else torch.where(active[..., None], h_new, h)  # ... a halted token's state frozen
                block_calls += active.long()
                self.block_calls_total += B * T
                if online:
                    bi, ti = active.nonzero(as_tuple=True)
                    if n == M:
                        lam = torch.ones(bi.numel(), device=dev, dtype=e.dtype)
                    else:
                        lam = self.lambda_of(h_new.reshape(B * T, D) if everyone else h_new[bi, ti])
                    self._online_update(lam, bi, ti, n, M, p, lambda_n, remain, depth, active)
            if rec is not None:
                rec.append(h)
        logits = self.readout(h, pos, rows)
        if rows is not None:
            logits = self._scatter(rows, logits)
        steps = torch.arange(1, M + 1, device=dev, dtype=p.dtype)
        return ModelOutput(
            logits=logits, p_n=p, depth=depth, expected_depth=(p * steps).sum(-1), block_calls=block_calls,
            kv_calls=kv_calls, step_logits=None, lambda_n=lambda_n, router_logits=router_logits,
        )

    def _online_update(self, lam, bi, ti, n, M, p, lambda_n, remain, depth, active) -> None:
        """Online halting after step n for the active tokens (bi, ti), in place.

        p_n = lambda_n * remain; remain <- remain * (1 - lambda_n); halt when 1 - remain >= threshold
        (or n == M), in which case p_n takes all the remaining mass (the distribution as executed)."""
        r = remain[bi, ti]
        pn = lam * r
        r_new = r * (1 - lam)
        stop = (1 - r_new >= self.cfg.halt_threshold) | (n == M)
        pn = torch.where(stop, r, pn)
        p[bi, ti, n - 1] = pn
        lambda_n[bi, ti, n - 1] = lam
        remain[bi, ti] = torch.where(stop, torch.zeros_like(r_new), r_new)
        depth[bi[stop], ti[stop]] = n
        active[bi[stop], ti[stop]] = False
