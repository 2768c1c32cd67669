"""ANIRA: a recurrent Transformer with per-token variable depth.

Backbone (identical for every decision mechanism)::

    x       = Embed(input_ids) (+ learned absolute positions, or RoPE inside attention, or neither)
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
              With ``prelude_in_loop=False`` the prelude is the router's own shallow encoder instead:
              p = softmax(Router(LN_r(Prelude(e)))), while the loop starts from e = LN_e(x) without it
              (the other mechanisms then have no prelude, as only online has a halting head). Why:
              on `hops` a prelude in the loop let depth 1 resolve 2 hops outright and stalled the
              learning of 3-4 hops (README, "A shallow encoder for the early router").
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
               block invocations of every token and equals ``depth``. ``anira.fastpath.RealExit``.
* ``"frozen"`` training path that matches inference (``RunConfig.train_mode="frozen"``): every
               token's *own* stream o_t^n runs all S steps (so every L_n exists), but what the other
               tokens attend to is its *context* state c_j^n = o_j^{min(n, d_j)}, frozen at the
               depth it uses (the decision is discrete, hence not differentiated)::

                   step n, query t:    keys/values of j < t from c_j^{n-1}, of t itself from o_t^{n-1}
                   readout n, query t: coda keys/values of j < t from the final c_j, of t from o_t^n

               For n <= d_t the own stream *is* the state real early exit computes, so ``logits``
               (step d_t) equal the exit path's, and step_logits[n] for n != d_t is the
               counterfactual "t alone stops at n, everything else as decided" that the expected
               loss sum_n p_n L_n needs.

While no token has halted yet, a masked/exit/frozen step is one plain block call on the (B, T)
grid (no gather, scatter, padding or ``torch.where``), see ``AniraModel.fast_paths``.

Code map: ``RecurrentBlock`` is the step above; a ``Decision`` per mechanism (``FixedDepth``,
``EarlyRouter``, ``OnlineHalting``, ``OracleDepth``, ``RandomDepth``) gives p_n and depth; an
``Execution`` per mode (``Dense``, ``Masked``, ``Frozen``, ``anira.fastpath.RealExit``) runs one
step; ``AniraModel.forward`` is the one loop around them. The kernels that only make it faster
(rotary autograd function, split adapter product, per-sequence packing) are in ``anira.fastpath``.

For ``online`` in the masked/exit modes only the executed steps are known, so ``p_n`` is the
distribution *as executed*: p_n as above for n < depth and p_depth = the remaining mass
prod_{j<depth}(1 - lambda_j) (lambda_n for n > depth is reported as 0). In the dense and frozen
modes (every own stream runs all steps) p_n is the full PonderNet distribution.

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

from anira.config import MAX_DEPTH, MECHANISMS, check_choice, check_fields, check_range
from anira.fastpath import RealExit, rope_angles, rope_rotate, split_adapter, subset_attention

__all__ = ["ModelConfig", "ModelOutput", "AniraModel", "RecurrentBlock", "Layer", "Attention", "MLP", "Decision",
           "Execution", "rope_angles", "rope_rotate", "subset_attention", "step_embedding", "truncated_geometric",
           "depth_from_p"]

POS_ENCODINGS = ("learned", "rope", "none")
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
    prelude_in_loop: bool = True  # False: the prelude is the early router's own shallow encoder (see docstring)
    n_coda: int = 0  # layers after the loop, run once on every token's final state
    # (0 and 0 in the recipe: with a prelude and a coda, depth 1 already resolves 2 hops on `hops`, so
    # the loop would not be needed for them; without, every lookup is a loop step -- README)
    max_depth: int = 6  # S: most iterations of the shared block (trained range)
    # extrapolation to longer inputs is a study question; "none": no position signal but the causal
    # mask and the causal conv (conv_width), so attention can only match by content
    pos_encoding: Literal["learned", "rope", "none"] = "rope"
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
        if not isinstance(self.prelude_in_loop, bool):
            raise ValueError(f"prelude_in_loop = {self.prelude_in_loop!r} must be true or false")
        check_range("conv_width", self.conv_width, 0)
        check_range("n_coda", self.n_coda, 0)
        check_range("max_depth", self.max_depth, 1, MAX_DEPTH)
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
def step_embedding(n: int, d: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal code of the step number n (defined for any n, so test-time extra steps work),
    computed in float32 and returned in ``dtype`` (the model's)."""
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    ang = n / (100.0 ** (i / d))  # base 100: distinct codes for small step counts
    out = torch.zeros(d, device=device)
    out[0::2], out[1::2] = ang.sin(), ang.cos()[: d // 2]
    return out.to(dtype)


def context_mask(T: int, device: torch.device) -> torch.Tensor:
    """(T, 2T) mask over [context keys ; own keys]: query t sees context keys j < t and its own key t."""
    ar = torch.arange(T, device=device)
    return torch.cat([ar[None, :] < ar[:, None], torch.eye(T, dtype=torch.bool, device=device)], dim=1)


class Attention(nn.Module):
    """Multi-head causal self-attention, with the projections as separate methods so queries and
    keys/values can be computed for different token subsets (real early exit)."""

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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               k_c: torch.Tensor | None = None, v_c: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention (B, H, T, hd) -> (B, T, D), output projection included. With the context's
        keys/values k_c, v_c: query t attends to k_c, v_c at j < t and to its own k, v at t."""
        if k_c is None:
            return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        if k_c.shape[0] != k.shape[0]:  # k streams of the same sequences share one context
            k_c, v_c = (t.repeat(k.shape[0] // t.shape[0], 1, 1, 1) for t in (k_c, v_c))
        mask = context_mask(q.shape[2], q.device)
        return self.merge(F.scaled_dot_product_attention(q, torch.cat([k_c, k], 2), torch.cat([v_c, v], 2), attn_mask=mask))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention over x (B, T, D). With ``context`` (B', T, D), B = k B' (k streams of
        the same B' sequences, stacked), query t attends to the context's tokens j < t and to itself."""
        q = self.project_q(x, pos)
        k, v = self.project_kv(x, pos)
        return self.attend(q, k, v, *(() if context is None else self.project_kv(context, pos)))


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

    def forward(self, x: torch.Tensor, pos: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D); ``context``: the other tokens' states, see ``Attention.forward``."""
        x = x + self.attn(self.ln1(x), pos, None if context is None else self.ln1(context))
        return x + self.mlp(self.ln2(x))


class RecurrentBlock(nn.Module):
    """The shared block of the module docstring, h^{n-1} -> h^n::

        z = W_a [h ; e] (reinject="adapter") or h + e ("add")   ``inputs``
        a = z + Attn(LN_1 z)                                     ``forward`` (``attn``, ``ln1``)
        b = a + sigma_n,  sigma_n = W_s sin_emb(n)               ``finish`` (step_signal)
        h = LN_s(b + MLP(LN_2 b))                                ``finish``

    ``inputs`` and ``finish`` are position-wise, so real early exit calls them on the active rows
    only (``anira.fastpath.RealExit``).
    """

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
        change over steps). Keys, values and queries are all read from LN_1(z). h, e, u (..., D)."""
        if u is None:
            u = self.inject(e)
        if self.adapter is None:
            return h + u
        return split_adapter(h, u, self.adapter.weight)

    def finish(self, z: torch.Tensor, attn_out: torch.Tensor, n: int) -> torch.Tensor:
        """h^n = LN_s(b + MLP(LN_2 b)), b = z + attn_out + sigma_n (position-wise)."""
        b = z + attn_out
        if self.step_proj is not None:
            b = b + self.step_proj(step_embedding(n, z.shape[-1], z.device, z.dtype))
        return self.ln_state(b + self.mlp(self.ln2(b)))

    def forward(self, h: torch.Tensor, e: torch.Tensor, n: int, pos: torch.Tensor,
                u: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """One step for every token. h, e (B, T, D); u = inject(e). ``context`` (B, T, D): the
        states the other tokens attend to, when they are not h (frozen path; ``context is h``: the
        same states, attended to through the context/own split)."""
        z = self.inputs(h, e, u)
        x = self.ln1(z)
        if context is None:
            return self.finish(z, self.attn(x, pos), n)
        q, (k, v) = self.attn.project_q(x, pos), self.attn.project_kv(x, pos)
        k_c, v_c = (k, v) if context is h else self.attn.project_kv(self.ln1(self.inputs(context, e, u)), pos)
        return self.finish(z, self.attn.attend(q, k, v, k_c, v_c), n)


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
# the depth decision: one small class per mechanism
# ---------------------------------------------------------------------------------------------
Rows = tuple[torch.Tensor, torch.Tensor]  # (bi, ti) of the tokens a step computed, row-major


class Decision:
    """The depth decision of one forward pass (created per call by ``AniraModel._run_halting``).

    The loop asks it, before step n, which tokens still run (``running``) and tells it, after
    step n, the new states of the tokens that ran (``after_step``); ``result`` then gives p_n,
    depth and the internals. Mechanisms that decide up front (fixed, early, oracle, random) do
    everything in ``start``; ``online`` decides after each step. ``in_loop`` (masked, exit, frozen:
    the other tokens see a halted token's frozen state) asks for the depth during the loop; in
    dense mode it is only needed after it. ``full``: every token's own stream runs all M steps
    (dense, frozen), so the whole distribution is known.
    """

    def __init__(self, model: "AniraModel", M: int, explicit_M: bool):
        self.model, self.cfg, self.M, self.explicit_M = model, model.cfg, M, explicit_M
        self.router_logits: torch.Tensor | None = None
        self.depth: torch.Tensor | None = None  # (B, T) long, once decided

    def start(self, e: torch.Tensor, difficulty: torch.Tensor | None, generator: torch.Generator | None,
              in_loop: bool, full: bool) -> None:
        """Decide up front: ``self.p`` (B, T, M) and ``self.depth`` (B, T) long. Dense mode needs
        them only after the loop and computes them there (the order of the ops, and so the order
        in which autograd sums gradients, is then the one the plain dense loop has)."""
        self._inputs = (e, difficulty, generator)
        if in_loop:
            self.p, self.depth = self.decide(e, difficulty, generator)

    def decide(self, e, difficulty, generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def running(self, n: int) -> torch.Tensor:
        """(B, T) bool: the tokens that run step n when halted tokens stop."""
        return self.depth >= n

    def after_step(self, n: int, h: torch.Tensor, rows: Rows | None) -> None:
        """h: the new states of the tokens that ran step n, (B, T, D) when ``rows`` is None, else (N, D)."""

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """p (B, T, M), depth (B, T), lambda_n (B, T, M) or None."""
        if self.depth is None:
            self.p, self.depth = self.decide(*self._inputs)
        return self.p, self.depth, None

    def one_hot(self, depth: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.one_hot(depth - 1, self.M).to(e.dtype), depth


class FixedDepth(Decision):
    """depth = fixed_depth (or the call's max_depth M when given) for every token."""

    def decide(self, e, difficulty, generator):
        B, T, _ = e.shape
        d = self.M if self.explicit_M else self.cfg.depth_fixed
        return self.one_hot(torch.full((B, T), d, dtype=torch.long, device=e.device), e)


class EarlyRouter(Decision):
    """p = softmax(Router(e)) from the prelude output, depth = first n with cumulative p >= threshold.
    M > S: zero mass on the extra depths; M < S: the mass beyond M folded onto M."""

    def decide(self, e, difficulty, generator):
        self.router_logits = self.model.router(self.model.router_features(e))  # (B, T, S)
        p = torch.softmax(self.router_logits, dim=-1)
        M, S = self.M, self.cfg.max_depth
        if M > S:
            p = F.pad(p, (0, M - S))
        elif M < S:
            p = torch.cat([p[..., : M - 1], p[..., M - 1 :].sum(-1, keepdim=True)], dim=-1)
        return p, depth_from_p(p, self.cfg.halt_threshold)


class OracleDepth(Decision):
    """depth = clamp(round(oracle_offset + oracle_scale * difficulty), 1, M)."""

    def decide(self, e, difficulty, generator):
        B, T, _ = e.shape
        if difficulty is None:
            raise ValueError("difficulty = None: mechanism 'oracle' needs the per-token difficulty (B, T)")
        if difficulty.shape != (B, T):
            raise ValueError(f"difficulty has shape {tuple(difficulty.shape)}; expected {(B, T)}")
        depth = torch.round(self.cfg.oracle_offset + self.cfg.oracle_scale * difficulty.to(torch.float32))
        return self.one_hot(depth.clamp(1, self.M).to(torch.long), e)


class RandomDepth(Decision):
    """depth drawn i.i.d. per token (``generator``) from random_depth_probs, or from the two-point
    distribution on floor(m), ceil(m) with mean m = random_mean_depth; clamped to M."""

    def decide(self, e, difficulty, generator):
        B, T, _ = e.shape
        cfg = self.cfg
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
        return self.one_hot(depth.view(B, T).clamp(max=self.M).to(e.device), e)


class OnlineHalting(Decision):
    """PonderNet, decided after every step from the token's current state::

        lambda_n = sigmoid(w . h^n + b)  (n < M),  lambda_M = 1
        p_n      = lambda_n prod_{j<n} (1 - lambda_j)
        depth    = first n with sum_{j<=n} p_j = 1 - prod_{j<=n} (1 - lambda_j) >= halt_threshold

    ``full`` (dense, frozen): p is the whole distribution, from all M lambdas. Otherwise (masked,
    exit) only the executed steps are known and p is the distribution as executed: p_depth takes
    the remaining mass prod_{j<depth} (1 - lambda_j), later lambda_n and p_n are 0.
    """

    def start(self, e, difficulty, generator, in_loop, full):
        B, T, _ = e.shape
        dev, dt = e.device, e.dtype
        self.in_loop, self.full = in_loop, full
        self.lams: list[torch.Tensor] = []  # lambda_n (B, T) of every token, per step (full)
        self.depth = torch.full((B, T), self.M, dtype=torch.long, device=dev)
        self.halted = torch.zeros(B, T, dtype=torch.bool, device=dev)
        self.remain = torch.ones(B, T, device=dev, dtype=dt)  # prod_{j<n} (1 - lambda_j), 0 once halted
        if not full:
            self.p = torch.zeros(B, T, self.M, device=dev, dtype=dt)
            self.lambda_n = torch.zeros(B, T, self.M, device=dev, dtype=dt)
        self._all: Rows | None = None

    def running(self, n):
        return ~self.halted

    def after_step(self, n, h, rows):
        lam = self.model.lambda_of(h) if n < self.M else h.new_ones(h.shape[:-1])  # (B, T) or (N,)
        if self.full:
            self.lams.append(lam)
            lam = lam.detach()  # the depth is discrete: no gradient through the halting rule
        if not self.in_loop:
            return
        if rows is None:  # every token ran: all rows, row-major like h.reshape(B * T, D)
            if self._all is None:
                self._all = torch.ones_like(self.halted).nonzero(as_tuple=True)
            rows, lam = self._all, lam.reshape(-1)
        bi, ti = rows
        r = self.remain[bi, ti]
        r_new = r * (1 - lam)
        stop = ((1 - r_new >= self.cfg.halt_threshold) | (n == self.M)) & ~self.halted[bi, ti]
        if not self.full:
            self.p[bi, ti, n - 1] = torch.where(stop, r, lam * r)  # as executed: the halting step takes the rest
            self.lambda_n[bi, ti, n - 1] = lam
        self.remain[bi, ti] = torch.where(stop, torch.zeros_like(r_new), r_new)
        self.depth[bi[stop], ti[stop]] = n
        self.halted[bi[stop], ti[stop]] = True

    def result(self):
        if not self.full:
            return self.p, self.depth, self.lambda_n
        lambda_n = torch.stack(self.lams, dim=-1)  # (B, T, M)
        remain = torch.cumprod(1 - lambda_n, dim=-1)  # prod_{j<=n} (1 - lambda_j)
        p = lambda_n * torch.cat([torch.ones_like(remain[..., :1]), remain[..., :-1]], dim=-1)
        if not self.in_loop:  # dense: the same rule (and arithmetic) as the masked/exit paths
            reached = (1 - remain) >= self.cfg.halt_threshold
            reached[..., -1] = True
            self.depth = reached.to(torch.int8).argmax(-1) + 1
        return p, self.depth, lambda_n


DECISIONS: dict[str, type[Decision]] = {
    "fixed": FixedDepth, "early": EarlyRouter, "online": OnlineHalting, "oracle": OracleDepth, "random": RandomDepth,
}  # a new mechanism: one Decision subclass here and its name in anira.config.MECHANISMS


# ---------------------------------------------------------------------------------------------
# execution modes: what one step computes, and for which tokens
# ---------------------------------------------------------------------------------------------
class Execution:
    """How the loop runs step n (``exit=`` of ``AniraModel.forward``). ``step(n, h, run)`` takes the
    states h (B, T, D) and the tokens that run step n (``Decision.running``) and returns the new
    states, the new states of the tokens the decision reads and their rows (None: all, (B, T, D)).

    ``keeps_running``: every token's own stream runs all M steps (dense, frozen), so step_logits
    read every step out; else a halted token stops (block_calls = depth) and the coda reads the
    final states. ``frozen_context``: the other tokens attend to a halted token's frozen state, so
    the decision is needed inside the loop.
    """

    keeps_running = True
    frozen_context = False
    context: torch.Tensor | None = None  # the final states the other tokens see in the coda (frozen)

    def __init__(self, model: "AniraModel", e: torch.Tensor, pos: torch.Tensor, u: torch.Tensor):
        self.core, self.e, self.pos, self.u, self.fast = model.core, e, pos, u, model.fast_paths
        B, T, _ = e.shape
        self.block_calls = torch.zeros(B, T, dtype=torch.long, device=e.device)
        self.kv_calls = torch.zeros(B, T, dtype=torch.long, device=e.device)
        self.rows_computed = 0  # block token-rows computed (AniraModel.block_calls_total)

    def step(self, n: int, h: torch.Tensor, run: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Rows | None]:
        raise NotImplementedError


class Dense(Execution):
    """Every token runs every step and attends to the others' states at the same step."""

    def step(self, n, h, run):
        h = self.core(h, self.e, n, self.pos, self.u)
        self.block_calls += 1
        self.rows_computed += h.shape[0] * h.shape[1]
        return h, h, None


class Masked(Execution):
    """Reference inference path: every token is computed, a halted token's state is frozen with
    ``torch.where`` (skipped while every token runs)."""

    keeps_running, frozen_context = False, True

    def step(self, n, h, run):
        h_new = self.core(h, self.e, n, self.pos, self.u)  # every token computed ...
        self.block_calls += run.long()
        self.rows_computed += run.numel()
        if self.fast and bool(run.all()):
            return h_new, h_new, None
        rows = run.nonzero(as_tuple=True)
        return torch.where(run[..., None], h_new, h), h_new[rows], rows  # ... a halted token's state frozen


class Frozen(Execution):
    """Own streams o^n for every token and step, context c^n = o^{min(n, d)} (module docstring)."""

    frozen_context = True

    def __init__(self, model, e, pos, u):
        super().__init__(model, e, pos, u)
        self._ctx, self._last = e, None  # c^{n-1}; (o^n, tokens that ran step n) not yet applied to it

    def _advance(self) -> torch.Tensor:
        """c^n = o^n for the tokens that ran step n, c^{n-1} for the others. Applied at the next
        step (or the readout), after the decision has read o^n: the order of the plain loop's ops."""
        if self._last is not None:
            own, run = self._last
            self._ctx = own if self.fast and bool(run.all()) else torch.where(run[..., None], own, self._ctx)
            self._last = None
        return self._ctx

    def step(self, n, h, run):
        h = self.core(h, self.e, n, self.pos, self.u, context=self._advance())  # own stream, against the context
        self._last = (h, run)
        self.block_calls += 1
        self.rows_computed += h.shape[0] * h.shape[1]
        return h, h, None

    @property
    def context(self) -> torch.Tensor:
        return self._advance()


EXECUTIONS: dict[str, type] = {"dense": Dense, "masked": Masked, "exit": RealExit, "frozen": Frozen}


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
        self.prelude = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_prelude if cfg.prelude_in_loop else 0))
        self.ln_e = nn.LayerNorm(D) if cfg.state_norm else nn.Identity()
        self.core = RecurrentBlock(cfg)  # the shared block, applied at every step
        self.coda = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_coda))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        # decision heads: only the one the mechanism uses exists, so parameter counts stay honest
        self.halt = nn.Linear(D, 1) if cfg.mechanism == "online" else None  # lambda_n = sigmoid(w.h^n + b)
        self.router = nn.Linear(D, cfg.max_depth) if cfg.mechanism == "early" else None  # p = softmax(R e)
        # prelude_in_loop=False: the prelude belongs to the early router (its decision head), built last so
        # every other parameter starts exactly as without it; the other mechanisms have none
        own = cfg.mechanism == "early" and not cfg.prelude_in_loop and cfg.n_prelude > 0
        self.router_prelude = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_prelude)) if own else None
        self.ln_r = nn.LayerNorm(D) if own else None
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
            n_res = 2 * (len(self.prelude) + self.cfg.n_coda + 1)
            for name, p in self.named_parameters():
                if name.endswith("wo.weight") or name.endswith("mlp.proj.weight"):
                    nn.init.normal_(p, std=0.02 / math.sqrt(n_res))
        D = self.cfg.d_model
        adapter = self.core.adapter
        if adapter is not None:
            with torch.no_grad():  # the adapter starts as z = h + e (residual-like recurrence)
                adapter.weight.copy_(torch.cat([torch.eye(D), torch.eye(D)], dim=1))
                adapter.weight.add_(0.02 * torch.randn_like(adapter.weight))
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

    def router_features(self, e: torch.Tensor) -> torch.Tensor:
        """What the early router reads: e itself, or with ``prelude_in_loop=False`` its own prelude's
        output LN_r(Prelude_r(e)) (B, T, D), computed once per forward, before the loop."""
        if self.router_prelude is None:
            return e
        pos = torch.arange(e.shape[1], device=e.device)
        x = e
        for layer in self.router_prelude:
            x = layer(x, pos)
        return self.ln_r(x)

    def readout(self, h: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Coda + head: (B, T, D) -> (B, T, V). With ``rows`` (B, T) bool only those positions are
        read out, (N, V): every token still provides keys/values to the last coda layer, but its
        queries, MLP and head run on the N rows only (training needs the scored tokens only).
        With ``context`` (B, T, D) (frozen path): h is k streams (k B, T, D) whose tokens attend to
        the context's tokens before them and to themselves; the context runs through the coda too;
        with rows the result is (k N, V), stream by stream."""
        layers = list(self.coda)
        last = layers.pop() if rows is not None and layers else None  # on the selected rows only
        for layer in layers:
            h, context = (layer(h, pos), None) if context is None else (layer(h, pos, context), layer(context, pos))
        if rows is None:
            return self.head(self.ln_f(h))
        if context is not None:
            rows = rows.repeat(h.shape[0] // rows.shape[0], 1)  # (k B, T)
        bi, ti = rows.nonzero(as_tuple=True)
        x = h[bi, ti]  # (N, D)
        if last is not None:
            if context is None:
                a = last.ln1(h)
                k, v = last.attn.project_kv(a, pos)  # (B, H, T, hd)
                q = last.attn.project_q(a[bi, ti][None], ti[None])[0].transpose(0, 1)  # (N, H, hd)
                y = subset_attention(q, rows, k, v)
            else:  # own key/value of each row, the context's for the tokens before it
                a = last.ln1(x)[None]
                q = last.attn.project_q(a, ti[None])[0].transpose(0, 1)  # (N, H, hd)
                k_s, v_s = (t[0].transpose(0, 1) for t in last.attn.project_kv(a, ti[None]))
                k_c, v_c = (t.repeat(rows.shape[0] // context.shape[0], 1, 1, 1)
                            for t in last.attn.project_kv(last.ln1(context), pos))
                y = subset_attention(q, rows, k_c, v_c, k_s, v_s)
            x = x + last.attn.wo(y)
            x = x + last.mlp(last.ln2(x))
        return self.head(self.ln_f(x))

    def _step_logits(self, states: list[torch.Tensor], pos: torch.Tensor, rows: torch.Tensor | None,
                     context: torch.Tensor | None) -> torch.Tensor:
        """The readout of every step's states h^1..h^M (each (B, T, D)): (M, B, T, V). With the
        frozen path's ``context`` the M own streams are read out together against it."""
        M, (B, T, _) = len(states), states[0].shape
        if context is None:
            out = torch.stack([self.readout(s, pos, rows) for s in states])  # (M, B, T, V) or (M, N, V)
        else:  # stream n occupies rows n*B .. n*B + B - 1
            out = self.readout(torch.stack(states).flatten(0, 1), pos, rows, context)  # (M * B, T, V) or (M * N, V)
            out = out.view(M, -1, out.shape[-1])
        if rows is not None:
            out = self._scatter(rows, out)
        return out.view(M, B, T, -1)

    def _scatter(self, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(..., N, V) read-out rows -> (..., B, T, V), zeros (uniform logits) elsewhere."""
        out = values.new_zeros(*values.shape[:-2], *rows.shape, values.shape[-1])
        out[..., rows, :] = values
        return out

    def lambda_of(self, h: torch.Tensor) -> torch.Tensor:
        """Online halting probability lambda = sigmoid(w . h + b). (..., D) -> (...)."""
        return torch.sigmoid(self.halt(h).squeeze(-1))

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        difficulty: torch.Tensor | None = None,
        exit: Literal["dense", "masked", "exit", "frozen"] = "dense",
        max_depth: int | None = None,
        generator: torch.Generator | None = None,
        return_states: bool = False,
        readout_rows: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Run the model. input_ids (B, T) long; difficulty (B, T) only for ``oracle``;
        ``exit`` the execution mode (module docstring); ``generator`` seeds the ``random``
        mechanism's draws (global RNG when None); ``return_states`` also returns every step's
        states (for tests and analyses); ``readout_rows`` (B, T) bool reads out only those
        positions (the others get zero logits): training passes the loss mask, which skips most of
        the coda's and head's work."""
        check_choice("exit", exit, EXIT_MODES)
        if max_depth is not None:
            check_range("max_depth", max_depth, 1, MAX_DEPTH)
        M = self.cfg.max_depth if max_depth is None else max_depth
        e, pos = self.embed(input_ids)  # (B, T, D)
        decision, run_mode, h, states = self._run_halting(
            e, pos, M, max_depth is not None, difficulty, generator, exit, return_states
        )
        p, depth, lambda_n = decision.result()

        step_logits = None
        if run_mode.keeps_running:  # every step read out, each token's logits at its own depth
            step_logits = self._step_logits(states[1:], pos, readout_rows, run_mode.context)  # (M, B, T, V)
            index = (depth - 1)[None, :, :, None].expand(1, *depth.shape, step_logits.shape[-1])
            logits = step_logits.gather(0, index)[0]
        else:
            logits = self.readout(h, pos, readout_rows)
            if readout_rows is not None:
                logits = self._scatter(readout_rows, logits)
        steps = torch.arange(1, M + 1, device=e.device, dtype=p.dtype)
        return ModelOutput(
            logits=logits, p_n=p, depth=depth, expected_depth=(p * steps).sum(-1), block_calls=run_mode.block_calls,
            kv_calls=run_mode.kv_calls, step_logits=step_logits, lambda_n=lambda_n,
            router_logits=decision.router_logits,
            states=torch.stack(states + [h] * (M + 1 - len(states))) if return_states else None,
        )

    def _run_halting(self, e, pos, M: int, explicit_M: bool, difficulty, generator, exit: str, return_states: bool):
        """The recurrence loop, one for every mechanism and execution mode: h^0 = e, then for
        n = 1..M the block runs the tokens the decision keeps running, and the decision reads
        their new states. Returns the decision, the execution mode, h (the last states) and
        h^0..h^n (kept when the mode reads every step out, or for ``return_states``)."""
        Run = EXECUTIONS[exit]
        decision = DECISIONS[self.cfg.mechanism](self, M, explicit_M)
        decision.start(e, difficulty, generator, in_loop=Run.frozen_context, full=Run.keeps_running)
        run_mode = Run(self, e, pos, self.core.inject(e))  # u = inject(e): the adapter's e half, once
        keep = return_states or run_mode.keeps_running
        h, states = e, [e]  # h^0 .. h^M as executed (own streams in frozen mode), when kept
        for n in range(1, M + 1):
            run = decision.running(n) if run_mode.frozen_context else None  # (B, T) bool
            if not run_mode.keeps_running and not bool(run.any()):
                break  # every token has halted
            h, h_run, rows = run_mode.step(n, h, run)
            decision.after_step(n, h_run, rows)
            if keep:
                states.append(h)
        self.block_calls_total += run_mode.rows_computed
        return decision, run_mode, h, states
