"""Benchmarks, one function per section: ``python -m anira.bench [--only SECTION[,SECTION ...]]``.

Each section returns rows (dicts) that are written to ``<csv-dir>/bench_<section>.csv``; a short
table is printed. Every timed quantity is measured ``repeats`` times and reported as median, min
and max. Variants that are compared run *interleaved* inside every repeat (in alternating order),
and ratios are taken per repeat (paired), so drift and load from other processes hit both sides
alike. Inputs are synthetic (uniform random token ids, every position scored): timing does not
depend on the values. A case that fails is reported as an error row (exit status 1), never
skipped silently.

Sections:
  data        examples/s of every task's generator at its training range, and of ``collate``
              (batches of ``batch_size`` pre-generated examples, counted in examples/s)
  early_exit  real early exit vs a dense pass of the same weights (``mechanism="random"``):
                t_exit  = model(ids, exit="exit")                 halted tokens skipped
                t_dense = analysis.speed.dense_forward(model, ids) every token runs all S steps,
                          one read-out: the cost of a fixed-depth model at depth S (``exit="masked"``
                          costs the same plus a ``torch.where`` per step)
                t_fixed = embed + read-out only (prelude, coda, head: what exit cannot skip)
                speed-up  = t_dense / t_exit
                ideal     = S / d,  d = mean block calls per token of the timed batch
                ideal_amd = t_dense / (t_fixed + (t_dense - t_fixed) d / S)   (Amdahl: only the loop
                            shrinks); realized/ideal_amd = predicted / measured exit time
              Depth distributions with mean m: ``two-point`` (the mechanism's own
              ``random_mean_depth``: floor/ceil of m, so every token of an integer m halts at the
              same step: the best case) and ``spread`` (uniform on {m-w..m+w}, w = min(m-1, S-m):
              tokens of one sequence halt at different steps, the realistic case).
              Target: realized/ideal >= 0.8 for d <= S/2. S/d ignores the prelude, coda and head that
              every token runs once whatever its depth, so it is out of reach at small d (1 prelude +
              1 coda layer, S = 8, d = 1: at most ~3.3x, not 8x); ideal_amd accounts for them.
  exit_study  real early exit at the study's model (S = 6, no prelude in the loop, no coda) for the
              widths of ``--exit-widths`` (128, 256, 512), on each task's own evaluation batch (32
              sequences, its length), under the study's depth distributions (``oracle`` from the
              batch's difficulty; ``learned``, ``deep``, ``full``: ``EXIT_DEPTHS``); quantities as in
              early_exit, and a pass/fail column for each case's bar (``exit_bar``): speed-up >= 0.97
              where ideal S/d <= 1.1; realized/ideal >= 0.6 at oracle depths (0.8 at d >= 512).
  train       tokens/s of one optimizer step (forward, loss, backward, grad clip 1.0, AdamW) of
              the backbone against a reference made of ``torch.nn.TransformerEncoderLayer``
              (norm_first, batch_first, causal, GELU, dropout 0, same width/heads/d_ff): prelude
              layers, ONE shared layer applied S times, coda layers, LayerNorm, head.
                fixed   AniraModel ``fixed`` at depth S, ``exit="masked"`` + ``task_loss`` (the call
                        ``anira.train`` makes for fixed/oracle/random)  vs  reference, CE at the end
                ponder  AniraModel ``online``, ``exit="dense"`` + ``PonderLoss`` (S read-outs,
                        what early/online train with)  vs  reference reading out (coda + head)
                        after every application, mean CE over the S read-outs
              Every position is scored (``readout_rows`` = the all-true loss mask, as passed by
              ``anira.train``), so both sides read out every token: a backbone comparison.
              Target: anira/ref >= 1.0.
  fastpaths   plain/fast time ratio of each speed-up in ``anira.fastpath`` against the formula it
              replaces (rotary kernel, split adapter product, plain steps while no token has halted);
              Target: >= 1.0 (a fast path that does not pay is removed).
  e2e         wall time of ``python -m anira.study --profile P`` into a temporary runs/figures
              root (nothing cached), its CPU time (all its processes), the number of runs of the
              profile. Minutes: runs only when asked (``--e2e`` or ``--only e2e``).

Clock: ``--clock wall`` (default) times elapsed time; ``--clock cpu`` the CPU time of this process,
which other processes on a shared machine disturb far less (1 thread only).

Threads: ``--threads`` (default 1) is set with ``torch.set_num_threads`` and printed.
Add a section by writing ``bench_<name>(args) -> list[dict]`` and registering it in SECTIONS.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from anira.analysis.speed import amdahl_speedup, interleaved, time_exit
from anira.tasks import TASK_NAMES, collate, make_task

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("section", "task", "op", "unit", "median", "min", "max", "repeats", "n_per_repeat", "mean_tokens", "error")
STAT_COLUMNS = ("section", "case", "quantity", "unit", "median", "min", "max", "repeats", "target", "meets",
                "batch", "seq_len", "d_model", "n_heads", "d_ff", "max_depth", "mean_depth", "threads", "error")
VOCAB = 64  # synthetic vocabulary of the model sections (the tasks' vocabularies are 20-60 tokens)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: CPU time of this process


def _timed(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def _interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of every variant: each repeat runs all variants once, in alternating order
    (``anira.analysis.speed.interleaved``, the measurement notebook 06 uses)."""
    return interleaved(variants, repeats, warmup=warmup, clock=clock)


def _row(section: str, task: str, op: str, unit: str, per_s: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    row = {k: "" for k in COLUMNS}
    row.update(section=section, task=task, op=op, unit=unit, **extra)
    if per_s:
        row.update(median=statistics.median(per_s), min=min(per_s), max=max(per_s), repeats=len(per_s))
    return row


def _stat(section: str, case: str, quantity: str, unit: str, values: list[float] | None = None,
          target: float | None = None, **ctx: Any) -> dict[str, Any]:
    """One long-format row: median/min/max of ``values``; ``meets`` compares the median to ``target``."""
    row = {k: "" for k in STAT_COLUMNS}
    row.update(section=section, case=case, quantity=quantity, unit=unit, threads=torch.get_num_threads(), **ctx)
    if values:
        med = statistics.median(values)
        row.update(median=med, min=min(values), max=max(values), repeats=len(values))
        if target is not None:
            row.update(target=target, meets="yes" if med >= target else "no")
    return row


def _error(err: BaseException, verbose: bool) -> str:
    if verbose:
        traceback.print_exc()
    return f"{type(err).__name__}: {err}".replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def bench_data(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Generator and collate throughput per task, at the training range."""
    rows = []
    n, bs, repeats = args.n_examples, args.batch_size, args.repeats
    clock = CLOCKS[args.clock]
    for name in TASK_NAMES:
        try:
            task = make_task(name, range="train")
            task.generate(10, seed=0)  # warm-up (imports, caches)
        except Exception as err:  # reported, not skipped
            msg = f"{type(err).__name__}: {err}".replace("\n", " ")
            rows.append(_row("data", name, "generate", "examples/s", error=msg))
            if args.verbose:
                traceback.print_exc()
            continue
        times = _timed(lambda: task.generate(n, seed=1), repeats, clock)
        exs = task.generate(max(n, bs), seed=2)
        mean_tokens = round(statistics.fmean(len(e.tokens) for e in exs), 2)
        rows.append(_row("data", name, "generate", "examples/s", [n / t for t in times],
                         n_per_repeat=n, mean_tokens=mean_tokens))
        batches = [exs[i : i + bs] for i in range(0, len(exs) - bs + 1, bs)]
        n_col = len(batches) * bs

        def run_collate() -> None:
            for b in batches:
                collate(b)

        times = _timed(run_collate, repeats, clock)
        rows.append(_row("data", name, f"collate(batch={bs})", "examples/s", [n_col / t for t in times],
                         n_per_repeat=n_col, mean_tokens=mean_tokens))
    return rows


# ---------------------------------------------------------------------------------------------
# early exit
# ---------------------------------------------------------------------------------------------
def spread_probs(m: float, S: int) -> tuple[float, ...]:
    """Uniform depth distribution on {m-w, ..., m+w}, w = min(m-1, S-m) (mean exactly m).
    m must be a whole number in [1, S]."""
    if m != int(m) or not 1 <= m <= S:
        raise ValueError(f"mean depth = {m!r}: the spread distribution needs a whole number in [1, {S}]")
    m, w = int(m), int(min(m - 1, S - m))
    return tuple(1.0 / (2 * w + 1) if abs(n - m) <= w else 0.0 for n in range(1, S + 1))


def early_exit_cases(means: list[float], dists: list[str], S: int) -> list[tuple[str, float, dict[str, Any]]]:
    """(case name, mean depth m, ModelConfig overrides); ``spread`` cases equal to ``two-point`` ones
    are dropped."""
    cases = []
    for m in means:
        for dist in dists:
            if dist == "two-point":
                cases.append((f"two-point m={m:g}", m, {"random_mean_depth": float(m)}))
            else:
                probs = spread_probs(m, S)
                support = [n for n, p in enumerate(probs, 1) if p > 0]
                if len(support) > 1 or "two-point" not in dists:
                    cases.append((f"spread m={m:g} ({support[0]}..{support[-1]})", m, {"random_depth_probs": probs}))
    return cases


def _time_exit(model: Any, ids: torch.Tensor, difficulty: torch.Tensor | None,
               args: argparse.Namespace) -> tuple[float, dict[str, list[float]]]:
    """(mean block calls per token, interleaved times of ``exit``, ``dense`` and ``fixed``) of one
    model on one batch: ``anira.analysis.speed.time_exit``, the measurement notebook 06 makes on the
    trained runs (real exit checked first against the masked reference; the same depth draws in
    every repeat)."""
    calls, t = time_exit(model, ids, difficulty, seed=args.seed, repeats=args.repeats, warmup=1,
                         clock=CLOCKS[args.clock])
    return float(calls.float().mean()), t


def bench_early_exit(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Real early exit vs the dense pass at S = max depth, several mean depths."""
    from anira.model import AniraModel, ModelConfig

    S, B, T = args.ee_max_depth, args.ee_batch, args.seq_len
    ctx = dict(batch=B, seq_len=T, d_model=args.d_model, n_heads=args.n_heads, d_ff=args.d_ff, max_depth=S)
    base = dict(vocab_size=VOCAB, max_len=T, d_model=args.d_model, n_heads=args.n_heads, d_ff=args.d_ff,
                max_depth=S, mechanism="random", n_prelude=1, n_coda=1)  # as measured in the README
    ids = torch.randint(2, VOCAB, (B, T), generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    weights = AniraModel(ModelConfig(**base, random_mean_depth=float(S))).state_dict()  # one set of weights
    rows: list[dict[str, Any]] = []
    sec = "early_exit"
    try:
        cases = early_exit_cases(args.ee_mean_depths, args.ee_dists, S)
    except ValueError as err:
        return [_stat(sec, "setup", "", "", error=_error(err, args.verbose), **ctx)]
    for case, m, over in cases:
        try:
            model = AniraModel(ModelConfig(**base, **over)).eval()
            model.load_state_dict(weights)
            d, t = _time_exit(model, ids, None, args)
        except Exception as err:
            rows.append(_stat(sec, case, "", "", error=_error(err, args.verbose), **ctx))
            continue
        te, td, tf = t["exit"], t["dense"], t["fixed"]
        speed = [b / a for a, b in zip(te, td)]
        ideal = S / d
        amd = [amdahl_speedup(b, f, d, S) for b, f in zip(td, tf)]
        tgt = 0.8 if m <= S / 2 else None  # the nominal mean: the drawn one is m up to sampling noise
        c = dict(ctx, mean_depth=round(d, 4))
        rows += [
            _stat(sec, case, "time exit", "s", te, **c),
            _stat(sec, case, "time dense", "s", td, **c),
            _stat(sec, case, "time embed+readout", "s", tf, **c),
            _stat(sec, case, "speed-up", "x", speed, **c),
            _stat(sec, case, "ideal S/d", "x", [ideal], **c),
            _stat(sec, case, "realized/ideal", "x", [s / ideal for s in speed], target=tgt, **c),
            _stat(sec, case, "ideal (Amdahl)", "x", amd, **c),
            _stat(sec, case, "realized/ideal (Amdahl)", "x", [s / a for s, a in zip(speed, amd)], **c),
        ]
    return rows


# depth histograms over 1..6 (every position of a 32-sequence evaluation batch, padding included)
# of adaptive runs that the study trains: ``learned`` is the online run of `hops` seed 0 of the cpu3
# study; ``deep`` has the mean depth (5.8 of 6) of the online/early/random runs of the second cpu study,
# where real exit used to be slower than dense; ``full`` runs every token to the end (only the
# overhead of real exit). The oracle's depths come from the task's own evaluation batch.
EXIT_DEPTHS: dict[str, tuple[float, ...]] = {
    "learned": (0.0911, 0.0734, 0.062, 0.0391, 0.0437, 0.6907),
    "deep": (0.01, 0.01, 0.01, 0.02, 0.05, 0.90),
    "full": (0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
}
EXIT_DISTS = ("oracle",) + tuple(EXIT_DEPTHS)
NO_REGRESSION = 0.97  # bar 1: speed-up >= this wherever the ideal S/d <= 1.1
LOW_DEPTH_BARS = ((512, 0.8), (0, 0.6))  # bar 2: realized/ideal at oracle depths, by d_model (first d >= key)


def exit_bar(ideal: float, dist: str, d_model: int) -> tuple[str, str, float] | None:
    """The bar a case is judged by: (quantity, text, threshold), or None (reported only)."""
    if ideal <= 1.1:
        return "speed-up", f"speed-up >= {NO_REGRESSION}", NO_REGRESSION
    if dist == "oracle":
        t = next(v for d, v in LOW_DEPTH_BARS if d_model >= d)
        return "realized/ideal", f"realized/ideal >= {t}", t
    return None


def bench_exit_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Real early exit on the study's depth distributions, at the study's model (no prelude in the
    loop, no coda, S = 6, d_ff = 4 d) for every width of ``--exit-widths``, on the evaluation batch of
    every task of ``--exit-tasks`` (its real tokens, padding and sequence length; ``oracle`` reads
    the batch's difficulty, the other distributions draw depths i.i.d. per position). Quantities as
    in ``early_exit``; each case is judged by its bar (``exit_bar``): no regression where the ideal
    is <= 1.1, realized/ideal at the oracle's low depths.
    """
    from anira.analysis.io import eval_examples
    from anira.model import AniraModel, ModelConfig
    from anira.tasks import collate

    S, sec, rows = 6, "exit_study", []
    for task in args.exit_tasks:
        try:
            batch = collate(eval_examples(task, "in")[: args.exit_batch], feature_names=["difficulty"])
            vocab = len(make_task(task, range="train").vocab)
        except Exception as err:
            rows.append(_stat(sec, task, "", "", error=_error(err, args.verbose)))
            continue
        ids, diff = batch.input_ids, batch.features["difficulty"]
        B, T = ids.shape
        for D in args.exit_widths:
            ctx = dict(batch=B, seq_len=T, d_model=D, n_heads=args.n_heads, d_ff=4 * D, max_depth=S)
            base = dict(vocab_size=vocab, max_len=T, d_model=D, n_heads=args.n_heads, d_ff=4 * D, max_depth=S,
                        n_prelude=0, n_coda=0)
            torch.manual_seed(args.seed)
            weights = AniraModel(ModelConfig(**base, mechanism="oracle")).state_dict()  # one set per width
            for dist in args.exit_dists:
                case = f"{task} T={T} d={D} {dist}"
                try:
                    over = (dict(mechanism="oracle") if dist == "oracle"
                            else dict(mechanism="random", random_depth_probs=EXIT_DEPTHS[dist]))
                    model = AniraModel(ModelConfig(**base, **over)).eval()
                    model.load_state_dict(weights)
                    d, t = _time_exit(model, ids, diff, args)
                except Exception as err:
                    rows.append(_stat(sec, case, "", "", error=_error(err, args.verbose), **ctx))
                    continue
                te, td, tf = t["exit"], t["dense"], t["fixed"]
                speed = [b / a for a, b in zip(te, td)]
                ideal = S / d
                amd = [amdahl_speedup(b, f, d, S) for b, f in zip(td, tf)]
                bar = exit_bar(ideal, dist, D)
                target = {bar[0]: bar[2]} if bar else {}
                c = dict(ctx, mean_depth=round(d, 4))
                rows += [
                    _stat(sec, case, "time exit", "s", te, **c),
                    _stat(sec, case, "time dense", "s", td, **c),
                    _stat(sec, case, "time embed+readout", "s", tf, **c),
                    _stat(sec, case, "speed-up", "x", speed, target=target.get("speed-up"), **c),
                    _stat(sec, case, "ideal S/d", "x", [ideal], **c),
                    _stat(sec, case, "realized/ideal", "x", [s / ideal for s in speed],
                          target=target.get("realized/ideal"), **c),
                    _stat(sec, case, "ideal (Amdahl)", "x", amd, **c),
                    _stat(sec, case, "realized/ideal (Amdahl)", "x", [s / a for s, a in zip(speed, amd)], **c),
                ]
    return rows


# ---------------------------------------------------------------------------------------------
# training throughput
# ---------------------------------------------------------------------------------------------
class LoopedEncoderReference(nn.Module):
    """The reference backbone: learned token + position embeddings, ``n_prelude`` layers, one
    shared ``nn.TransformerEncoderLayer`` applied ``depth`` times, ``n_coda`` layers, LayerNorm,
    linear head. ``every_step=True`` reads out (coda + head) after every application:
    (depth, B, T, V), the cost of the deep-supervised / PonderNet training forward."""

    def __init__(self, vocab: int, max_len: int, d_model: int, n_heads: int, d_ff: int, depth: int,
                 n_prelude: int = 1, n_coda: int = 1):
        super().__init__()

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, activation="gelu",
                                              norm_first=True, batch_first=True)

        self.depth = depth
        self.tok, self.pos = nn.Embedding(vocab, d_model), nn.Embedding(max_len, d_model)
        self.prelude = nn.ModuleList(layer() for _ in range(n_prelude))
        self.core = layer()
        self.coda = nn.ModuleList(layer() for _ in range(n_coda))
        self.ln_f, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids: torch.Tensor, every_step: bool = False) -> torch.Tensor:
        T = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)  # (T, T) causal
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))  # (B, T, D)

        def run(layers, h):
            for lay in layers:
                h = lay(h, src_mask=mask, is_causal=True)
            return h

        def readout(h):
            return self.head(self.ln_f(run(self.coda, h)))  # (B, T, V)

        x = run(self.prelude, x)
        outs = []
        for _ in range(self.depth):
            x = self.core(x, src_mask=mask, is_causal=True)
            if every_step:
                outs.append(readout(x))
        return torch.stack(outs) if every_step else readout(x)


def _train_step(model: nn.Module, loss_fn: Callable[[], torch.Tensor], n_steps: int) -> Callable[[], None]:
    """``n_steps`` optimizer steps as in ``anira.train``: zero_grad, backward, clip 1.0, AdamW."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))

    def step() -> None:
        for _ in range(n_steps):
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    return step


def bench_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Training tokens/s: AniraModel vs the TransformerEncoderLayer reference, same depth."""
    from anira.losses import LossConfig, PonderLoss, masked_mean, task_loss, token_ce
    from anira.model import AniraModel, ModelConfig

    S, B, T = args.train_depth, args.train_batch, args.seq_len
    ctx = dict(batch=B, seq_len=T, d_model=args.d_model, n_heads=args.n_heads, d_ff=args.d_ff, max_depth=S, mean_depth=S)
    g = torch.Generator().manual_seed(args.seed)
    ids, tgt = (torch.randint(2, VOCAB, (B, T), generator=g) for _ in range(2))
    mask = torch.ones(B, T, dtype=torch.bool)
    # a prelude and a coda like the reference's (LoopedEncoderReference: prelude, shared core, coda)
    size = dict(vocab_size=VOCAB, max_len=T, d_model=args.d_model, n_heads=args.n_heads, d_ff=args.d_ff, max_depth=S,
                n_prelude=1, n_coda=1)
    sec, rows = "train", []
    k = args.train_steps
    tokens = k * B * T

    def fixed_pair():
        torch.manual_seed(args.seed)
        m = AniraModel(ModelConfig(**size, mechanism="fixed")).train()
        r = LoopedEncoderReference(VOCAB, T, args.d_model, args.n_heads, args.d_ff, S).train()
        return (_train_step(m, lambda: task_loss(m(ids, exit="masked", readout_rows=mask).logits, tgt, mask), k),
                _train_step(r, lambda: task_loss(r(ids), tgt, mask), k))

    def ponder_pair():
        torch.manual_seed(args.seed)
        m = AniraModel(ModelConfig(**size, mechanism="online")).train()
        r = LoopedEncoderReference(VOCAB, T, args.d_model, args.n_heads, args.d_ff, S).train()
        ponder = PonderLoss(LossConfig(ds_warmup_steps=0), S)  # the full objective (past the warm-up)

        def anira_loss():
            out = m(ids, exit="dense", readout_rows=mask)
            return ponder(out.step_logits, out.p_n, tgt, mask, step=0).loss

        return (_train_step(m, anira_loss, k),
                _train_step(r, lambda: masked_mean(token_ce(r(ids, every_step=True), tgt), mask).mean(), k))

    pairs = {f"fixed S={S} (masked, CE)": fixed_pair, f"ponder S={S} (dense, S read-outs)": ponder_pair}
    for case, build in pairs.items():
        try:
            anira_step, ref_step = build()
            t = _interleaved({"anira": anira_step, "ref": ref_step}, args.repeats, warmup=1, clock=CLOCKS[args.clock])
        except Exception as err:
            rows.append(_stat(sec, case, "", "", error=_error(err, args.verbose), **ctx))
            continue
        rows += [
            _stat(sec, case, "tokens/s anira", "tokens/s", [tokens / s for s in t["anira"]], **ctx),
            _stat(sec, case, "tokens/s ref", "tokens/s", [tokens / s for s in t["ref"]], **ctx),
            _stat(sec, case, "anira/ref", "x", [r / a for a, r in zip(t["anira"], t["ref"])], target=1.0, **ctx),
        ]
    return rows


# ---------------------------------------------------------------------------------------------
# fast paths: each one against the plain formula it replaces
# ---------------------------------------------------------------------------------------------
def _plain_rope(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """The rotary embedding as written, [x1 cos - x2 sin, x1 sin + x2 cos], through autograd."""
    from anira.fastpath import rope_angles

    h = x.shape[-1] // 2
    cos, sin = rope_angles(pos, x.shape[-1], base)
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def bench_fastpaths(args: argparse.Namespace) -> list[dict[str, Any]]:
    """plain/fast time ratio of every fast path in ``anira.fastpath`` (> 1: it pays), each timed on
    what it replaces at the model size of the other sections:

      rope kernel     rope_rotate (the _Rotary autograd Function) vs autograd through the formula,
                      queries of a train batch (B, H, T, hd), forward + backward
      split adapter   split_adapter(h, u, W) (one D x D addmm, u computed once) vs W_a [h ; e],
                      S steps, forward + backward (reinject="adapter")
      dense steps     AniraModel.fast_paths on vs off: exit="exit" while no token has halted runs plain
                      block calls instead of the per-token path (spread depths with mean S/2: only
                      step 1 has every token; every token at depth S: every step)
    """
    from anira.fastpath import rope_rotate, split_adapter
    from anira.model import AniraModel, ModelConfig

    S, B, T, D, H = args.train_depth, args.train_batch, args.seq_len, args.d_model, args.n_heads
    ctx = dict(batch=B, seq_len=T, d_model=D, n_heads=H, d_ff=args.d_ff, max_depth=S)
    clock, sec, rows = CLOCKS[args.clock], "fastpaths", []
    g = torch.Generator().manual_seed(args.seed)
    pos = torch.arange(T)

    def grad_of(fn, *xs):
        def run() -> None:
            y = fn()
            torch.autograd.grad(y.sum(), xs)
        return run

    x = torch.randn(B, T, H, D // H, generator=g).transpose(1, 2).requires_grad_(True)  # strided, as in Attention
    h, e = (torch.randn(B, T, D, generator=g).requires_grad_(True) for _ in range(2))
    lin = nn.Linear(2 * D, D)

    def adapter_fast():
        u = torch.nn.functional.linear(e, lin.weight[:, D:], lin.bias)
        z = h
        for _ in range(S):
            z = split_adapter(z, u, lin.weight)
        return z

    def adapter_plain():
        z = h
        for _ in range(S):
            z = lin(torch.cat([z, e], -1))
        return z

    ee_S = args.ee_max_depth
    m = max(1, ee_S // 2)
    base = dict(vocab_size=VOCAB, max_len=T, d_model=D, n_heads=H, d_ff=args.d_ff, max_depth=ee_S,
                mechanism="random", n_prelude=1, n_coda=1)
    ids = torch.randint(2, VOCAB, (args.ee_batch, T), generator=g)
    gen = torch.Generator()

    def exit_pair(**over):
        """(fast, plain): exit="exit" of one set of weights with fast_paths on and off."""
        torch.manual_seed(args.seed)
        fast_m = AniraModel(ModelConfig(**base, **over)).eval()
        plain_m = AniraModel(ModelConfig(**base, **over)).eval()
        plain_m.load_state_dict(fast_m.state_dict())
        plain_m.fast_paths = False

        def run(mdl):
            def call():
                gen.manual_seed(args.seed)  # the same depth draws in every repeat
                with torch.inference_mode():
                    return mdl(ids, exit="exit", generator=gen)
            return call
        return run(fast_m), run(plain_m)

    cases = {
        f"rope kernel (B={B}, H={H}, T={T})": (grad_of(lambda: rope_rotate(x, pos, 10000.0), x),
                                               grad_of(lambda: _plain_rope(x, pos, 10000.0), x)),
        f"split adapter (S={S} steps)": (grad_of(adapter_fast, h, e, lin.weight), grad_of(adapter_plain, h, e, lin.weight)),
        f"dense steps (exit, spread m={m} of S={ee_S})": exit_pair(random_depth_probs=spread_probs(m, ee_S)),
        f"dense steps (exit, every token S={ee_S})": exit_pair(random_mean_depth=float(ee_S)),
    }
    for case, (fast, plain) in cases.items():
        try:
            t = _interleaved({"fast": fast, "plain": plain}, args.repeats, warmup=1, clock=clock)
        except Exception as err:
            rows.append(_stat(sec, case, "", "", error=_error(err, args.verbose), **ctx))
            continue
        rows += [
            _stat(sec, case, "time fast", "s", t["fast"], **ctx),
            _stat(sec, case, "time plain", "s", t["plain"], **ctx),
            _stat(sec, case, "plain/fast", "x", [b / a for a, b in zip(t["fast"], t["plain"])], target=1.0, **ctx),
        ]
    return rows


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
def study_command(profile: str, root: Path) -> list[str]:
    """The timed command: the whole study of ``profile`` into ``root`` (runs/ and figures/)."""
    return [sys.executable, "-m", "anira.study", "--profile", profile,
            "--runs-root", str(root / "runs"), "--figures-root", str(root / "figures")]


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_e2e(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Wall time of the whole study of one profile, from nothing cached, ``e2e_runs`` times."""
    sec, case = "e2e", f"study --profile {args.e2e_profile}"
    walls, cpus, n_runs = [], [], []
    env = {**os.environ, "MPLBACKEND": "agg"}
    for _ in range(args.e2e_runs):
        with tempfile.TemporaryDirectory(prefix="anira-bench-e2e-") as tmp:
            cmd = study_command(args.e2e_profile, Path(tmp))
            t0, c0 = time.perf_counter(), _children_cpu()
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
            manifests = sorted(Path(tmp, "runs").glob("*/manifest.json"))
            if proc.returncode != 0 or not manifests:
                tail = (proc.stderr or proc.stdout)[-400:]
                why = f"exit status {proc.returncode}" if proc.returncode else "no manifest.json written"
                return [_stat(sec, case, "wall", "s", error=f"{' '.join(cmd)}: {why}: {tail}")]
            walls.append(wall)
            cpus.append(cpu)
            n_runs.append(len(json.loads(manifests[0].read_text())["runs"]))
    return [
        _stat(sec, case, "wall", "s", walls),
        _stat(sec, case, "cpu", "s", cpus),
        _stat(sec, case, "runs", "runs", [float(n) for n in n_runs]),
        _stat(sec, case, "wall per run", "s/run", [w / max(n, 1) for w, n in zip(walls, n_runs)]),
    ]


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "data": bench_data,
    "early_exit": bench_early_exit,
    "exit_study": bench_exit_study,
    "train": bench_train,
    "fastpaths": bench_fastpaths,
    "e2e": bench_e2e,
}
DEFAULT_SECTIONS = ("data", "early_exit", "exit_study", "train", "fastpaths")  # e2e takes minutes: only when asked
PRINTED = {  # the short table: these quantities per case, as "median [min, max]"
    "early_exit": ("mean depth", "speed-up", "ideal S/d", "realized/ideal", "ideal (Amdahl)", "realized/ideal (Amdahl)"),
    "exit_study": ("mean depth", "speed-up", "ideal S/d", "realized/ideal", "ideal (Amdahl)", "realized/ideal (Amdahl)",
                   "bar"),
    "train": ("tokens/s anira", "tokens/s ref", "anira/ref"),
    "fastpaths": ("time fast", "time plain", "plain/fast"),
    "e2e": ("wall", "cpu", "runs", "wall per run"),
}


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def _fmt(v: Any, col: str) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if col == "mean_tokens" else f"{v:,.0f}"
    return str(v)


def _num(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}"
    if unit in ("s", "s/run"):
        return f"{v:.3g}" if v < 10 else f"{v:,.0f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def print_table(rows: list[dict[str, Any]]) -> None:
    from tabulate import tabulate

    cols = ("task", "op", "median", "min", "max", "unit", "mean_tokens", "error")
    print(tabulate([[_fmt(r[c], c) for c in cols] for r in rows], headers=list(cols), disable_numparse=True))


def print_stats(rows: list[dict[str, Any]], quantities: tuple[str, ...]) -> None:
    """One line per case, one column per quantity: median [min, max] (a single value when equal);
    a '*' marks a median below its target; the quantity "bar" names the target a case is judged by
    and whether its median passes."""
    from tabulate import tabulate

    cases: dict[str, dict[str, str]] = {}
    for r in rows:
        line = cases.setdefault(r["case"], {})
        if r["error"]:
            line["error"] = r["error"]
        elif r["quantity"] in quantities:
            med, lo, hi, u = r["median"], r["min"], r["max"], r["unit"]
            txt = _num(med, u) if _num(lo, u) == _num(hi, u) else f"{_num(med, u)} [{_num(lo, u)}, {_num(hi, u)}]"
            line[r["quantity"]] = txt + (" *" if r["meets"] == "no" else "")
        if "bar" in quantities and r["meets"]:  # the case's bar, judged on the median
            line["bar"] = f"{r['quantity']} >= {r['target']}: {'pass' if r['meets'] == 'yes' else 'FAIL'}"
        if r.get("mean_depth") != "" and "mean depth" in quantities:
            line["mean depth"] = f"{float(r['mean_depth']):.2f}"
    has_err = any("error" in v for v in cases.values())
    cols = list(quantities) + (["error"] if has_err else [])
    print(tabulate([[c] + [v.get(q, "") for q in cols] for c, v in cases.items()], headers=["case"] + cols,
                   disable_numparse=True))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else list(COLUMNS)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anira.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                    help=f"sections, space- or comma-separated, from {list(SECTIONS)} (default: {list(DEFAULT_SECTIONS)})")
    ap.add_argument("--e2e", action="store_true", help="also run the (slow) end-to-end section")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per quantity (median, min, max)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every section")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: CPU time of this process (robust to other load on a shared "
                         "machine; needs --threads 1). e2e always reports wall time (and the study's CPU time)")
    ap.add_argument("--seed", type=int, default=0, help="weights, inputs and random depth draws")
    ap.add_argument("--out-dir", "--csv-dir", dest="out_dir", default="figures/bench",
                    help="CSV directory: <csv-dir>/bench_<section>.csv")
    ap.add_argument("--csv", default=None, help="CSV path (only with a single section; overrides --csv-dir)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of errors")
    g = ap.add_argument_group("data")
    g.add_argument("--n-examples", type=int, default=5000, help="examples generated per repeat")
    g.add_argument("--batch-size", type=int, default=64, help="collate batch size")
    g = ap.add_argument_group("model size (early_exit, train)")
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--n-heads", type=int, default=4)
    g.add_argument("--d-ff", type=int, default=512)
    g.add_argument("--seq-len", type=int, default=100, help="tokens per sequence")
    g = ap.add_argument_group("early_exit")
    g.add_argument("--ee-batch", type=int, default=64, help="sequences per forward")
    g.add_argument("--ee-max-depth", type=int, default=8, help="S, the dense baseline's depth")
    g.add_argument("--ee-mean-depths", type=_floats, default=[1, 2, 3, 4, 6, 8], help="comma-separated mean depths")
    g.add_argument("--ee-dists", default="two-point,spread", help="depth distributions: two-point, spread")
    g = ap.add_argument_group("exit_study")
    g.add_argument("--exit-tasks", default="addition,hops",
                   help="comma-separated tasks whose evaluation batch is timed (its sequence length)")
    g.add_argument("--exit-widths", type=_floats, default=[128, 256, 512], help="comma-separated d_model values")
    g.add_argument("--exit-batch", type=int, default=32, help="sequences per forward (the study's eval batch)")
    g.add_argument("--exit-dists", default=",".join(EXIT_DISTS), help=f"depth distributions from {list(EXIT_DISTS)}")
    g = ap.add_argument_group("train")
    g.add_argument("--train-batch", type=int, default=32, help="sequences per step (the cpu profile's batch)")
    g.add_argument("--train-depth", type=int, default=6, help="S, block applications per forward")
    g.add_argument("--train-steps", type=int, default=2, help="optimizer steps per timed repeat")
    g = ap.add_argument_group("e2e")
    g.add_argument("--e2e-profile", default="smoke", help="profile name (smoke, cpu, ...) or YAML path")
    g.add_argument("--e2e-runs", type=int, default=1, help="timed repeats of the whole study")
    args = ap.parse_args(argv)

    only = [s.strip() for item in (args.only or DEFAULT_SECTIONS) for s in item.split(",") if s.strip()]
    if args.e2e and "e2e" not in only:
        only.append("e2e")
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only {bad[0]!r} is not a section; allowed: {list(SECTIONS)}")
    args.only = only
    if args.csv and len(only) != 1:
        ap.error("--csv needs exactly one section in --only")
    for key in ("repeats", "threads", "n_examples", "batch_size", "d_model", "n_heads", "d_ff", "seq_len", "ee_batch",
                "exit_batch", "ee_max_depth", "train_batch", "train_depth", "train_steps", "e2e_runs"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} = {getattr(args, key)} must be >= 1")
    args.exit_tasks = [t.strip() for t in args.exit_tasks.split(",") if t.strip()]
    if not args.exit_tasks or any(t not in TASK_NAMES for t in args.exit_tasks):
        ap.error(f"--exit-tasks = {args.exit_tasks!r}; allowed: {', '.join(TASK_NAMES)}")
    args.exit_dists = [d.strip() for d in args.exit_dists.split(",") if d.strip()]
    if not args.exit_dists or any(d not in EXIT_DISTS for d in args.exit_dists):
        ap.error(f"--exit-dists = {args.exit_dists!r}; allowed: {', '.join(EXIT_DISTS)}")
    if not args.exit_widths or any(w != int(w) or w < 1 or w % args.n_heads for w in args.exit_widths):
        ap.error(f"--exit-widths = {args.exit_widths} must be whole numbers >= 1 divisible by --n-heads = {args.n_heads}")
    args.exit_widths = [int(w) for w in args.exit_widths]
    args.ee_dists = [d.strip() for d in args.ee_dists.split(",") if d.strip()]
    if not args.ee_dists or any(d not in ("two-point", "spread") for d in args.ee_dists):
        ap.error(f"--ee-dists = {args.ee_dists!r}; allowed: two-point, spread")
    if not args.ee_mean_depths or any(not 1 <= m <= args.ee_max_depth for m in args.ee_mean_depths):
        ap.error(f"--ee-mean-depths = {args.ee_mean_depths} must lie in [1, --ee-max-depth = {args.ee_max_depth}]")
    if args.clock == "cpu" and args.threads != 1:
        ap.error(f"--clock cpu needs --threads 1 (CPU time sums over threads); got --threads {args.threads}")
    if args.d_model % args.n_heads:
        ap.error(f"--d-model = {args.d_model} must be divisible by --n-heads = {args.n_heads}")

    torch.set_num_threads(args.threads)
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} intra-op thread(s), {torch.get_num_interop_threads()} inter-op, "
          f"{os.cpu_count()} CPUs, {args.clock} clock, {args.repeats} repeats (median [min, max])")
    n_errors = 0
    for section in only:
        t0 = time.perf_counter()
        rows = SECTIONS[section](args)
        print(f"\n== {section} ({time.perf_counter() - t0:.0f} s) ==")
        if section in PRINTED:
            print_stats(rows, PRINTED[section])
        else:
            print_table(rows)
        path = Path(args.csv) if args.csv else Path(args.out_dir) / f"bench_{section}.csv"
        write_csv(rows, path)
        print(f"wrote {path}")
        n_errors += sum(1 for r in rows if r["error"])
    if n_errors:
        print(f"{n_errors} error(s): see the error column", file=sys.stderr)
    return 1 if n_errors else 0


if __name__ == "__main__":
    sys.exit(main())
