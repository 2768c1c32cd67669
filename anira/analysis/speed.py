"""Measured wall-clock speed-up of real early exit against a dense pass of the same model.

For one trained run and one batch of its evaluation inputs (B sequences padded to length T):

    t_exit   = median wall time of model(input_ids, exit="exit")   (halted tokens skipped)
    t_dense  = median wall time of ``dense_forward``: the same weights, every position runs all
               S = max_depth steps, one read-out (the cost of a fixed-depth model at depth S)
    t_fixed  = median wall time of the part no exit can skip: embedding (+ prelude, convolution)
               and read-out, run once per token
    realized = t_dense / t_exit
    ideal    = S / dbar,  dbar = mean block calls per position of the timed batch (padding
               included: the model decides a depth for padded positions too, and runs them)
    efficiency = realized / ideal       (1 = every skipped block call saved its full share of time)
    amdahl   = t_dense / (t_fixed + (t_dense - t_fixed) dbar / S): the most a perfect exit could
               give once the fixed part is paid; efficiency_amdahl = realized / amdahl

The three passes see the same batch, threads and device; they alternate within each repeat (the
order reversed every other repeat) so drift (other processes, frequency scaling) hits all alike.
Real exit is first checked against the masked reference, so a wrong fast path is never timed.
The ideal ignores what real exit adds (gathering the active tokens, one key/value projection per
halted token, per-step bookkeeping), which dominates for tiny models: measure on the profile's
real model size. ``python -m anira.bench --only exit_study`` uses the same measurement
(``time_exit``) on untrained models of the study's shape at several widths.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from anira.config import VARYING

MEASURED = VARYING  # mechanisms whose depth varies per token


@torch.no_grad()
def dense_forward(model, input_ids: torch.Tensor, depth: int | None = None) -> torch.Tensor:
    """Logits (B, T, V) with every position run for ``depth`` (default max_depth) steps:
    h^n = core(h^{n-1}, e, n) for n = 1..depth on all tokens, then coda + head once."""
    M = model.cfg.max_depth if depth is None else int(depth)
    e, pos = model.embed(input_ids)  # (B, T, D)
    h = e
    for n in range(1, M + 1):
        h = model.core(h, e, n, pos)
    return model.readout(h, pos)


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter, device: str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of every variant: each repeat runs all variants once, in alternating order
    (reversed every other repeat); on CUDA the queue is drained before and after each call."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    names = list(variants)
    for _ in range(warmup):
        for k in names:
            variants[k]()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            sync()
            t0 = clock()
            variants[k]()
            sync()
            times[k].append(clock() - t0)
    return times


@torch.inference_mode()
def time_exit(model, ids: torch.Tensor, difficulty: torch.Tensor | None = None, *, seed: int = 0, repeats: int = 5,
              warmup: int = 1, clock: Callable[[], float] = time.perf_counter,
              device: str = "cpu") -> tuple[torch.Tensor, dict[str, list[float]]]:
    """(block calls per position (B, T), interleaved times of ``exit``, ``dense`` and ``fixed``) of
    one model on one batch: real exit (checked first against the masked reference), every token
    to the end (``dense_forward``), and the embedding + read-out that no exit can skip. The random
    mechanism's depth draws are the same in every repeat (``seed``)."""
    gen = torch.Generator().manual_seed(seed)  # CPU: the random mechanism draws on the CPU

    def run_exit(mode: str = "exit"):
        gen.manual_seed(seed)
        return model(ids, difficulty=difficulty, exit=mode, generator=gen)

    def run_fixed():
        e, pos = model.embed(ids)
        return model.readout(e, pos)

    out, ref = run_exit(), run_exit("masked")
    if not torch.allclose(out.logits, ref.logits, atol=1e-4, rtol=1e-4):
        err = (out.logits - ref.logits).abs().max().item()
        raise AssertionError(f"exit logits differ from the masked reference (max |diff| {err:.2e})")
    t = interleaved({"exit": run_exit, "dense": lambda: dense_forward(model, ids), "fixed": run_fixed},
                    repeats, warmup=warmup, clock=clock, device=device)
    return out.block_calls, t


def amdahl_speedup(t_dense: float, t_fixed: float, mean_depth: float, max_depth: int) -> float:
    """The speed-up of a perfect exit once the fixed part is paid: only the loop's share shrinks."""
    return t_dense / (t_fixed + (t_dense - t_fixed) * mean_depth / max_depth)


@torch.no_grad()
def time_run(run_dir: str | Path, split: str = "in", n_examples: int = 32, repeats: int = 5, warmup: int = 1,
             device: str = "cpu") -> dict:
    """Time real early exit vs ``dense_forward`` for one run (see the module docstring)."""
    from anira.analysis.io import eval_examples
    from anira.tasks import collate
    from anira.train import load_model

    if not isinstance(n_examples, int) or n_examples < 1:
        raise ValueError(f"n_examples = {n_examples!r} must be an integer >= 1")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats = {repeats!r} must be an integer >= 1")
    cfg, model = load_model(run_dir, device=device)
    exs = eval_examples(cfg.task, split)[:n_examples]
    batch = collate(exs, feature_names=["difficulty"]).to(device)
    diff = batch.features["difficulty"] if cfg.mechanism == "oracle" else None
    calls, t = time_exit(model, batch.input_ids, diff, seed=cfg.seed + 2, repeats=repeats, warmup=warmup, device=device)
    calls = calls.float()  # (B, T)
    mask = batch.loss_mask
    M = cfg.max_depth
    te, td, tf = (statistics.median(t[k]) for k in ("exit", "dense", "fixed"))
    mean_all = float(calls.mean())
    amdahl = amdahl_speedup(td, tf, mean_all, M)
    return dict(run_id=Path(run_dir).name, task=cfg.task, mechanism=cfg.mechanism, seed=cfg.seed,
                beta=cfg.beta if cfg.mechanism in ("early", "online", "random") else np.nan, max_depth=M,
                d_model=cfg.d_model, n_seq=batch.input_ids.shape[0], seq_len=batch.input_ids.shape[1],
                mean_depth=mean_all, mean_depth_scored=float(calls[mask].mean()) if mask.any() else np.nan,
                ideal_speedup=M / mean_all, time_exit_s=te, time_dense_s=td, time_fixed_s=tf,
                time_exit_min_s=min(t["exit"]), time_dense_min_s=min(t["dense"]), realized_speedup=td / te,
                efficiency=(td / te) / (M / mean_all), amdahl_speedup=amdahl, efficiency_amdahl=(td / te) / amdahl,
                repeats=repeats, threads=torch.get_num_threads(), device=device)


def measure_speedup(run_dirs: Sequence[str | Path], mechanisms: Sequence[str] = MEASURED, split: str = "in",
                    n_examples: int = 32, repeats: int = 5, warmup: int = 1, num_threads: int | None = 1,
                    device: str = "cpu") -> pd.DataFrame:
    """``time_run`` for every run of ``run_dirs`` whose mechanism is in ``mechanisms``; one row per run.

    num_threads: torch CPU threads during the measurement (restored afterwards); None keeps the
    current setting. An empty frame (with the columns) when no run qualifies.
    """
    import json

    from anira.train import WEIGHTS_FILE

    cols = ["run_id", "task", "mechanism", "seed", "beta", "max_depth", "d_model", "n_seq", "seq_len", "mean_depth",
            "mean_depth_scored", "ideal_speedup", "time_exit_s", "time_dense_s", "time_fixed_s", "time_exit_min_s",
            "time_dense_min_s", "realized_speedup", "efficiency", "amdahl_speedup", "efficiency_amdahl", "repeats",
            "threads", "device"]
    todo = []
    for rd in run_dirs:
        cfg = json.loads((Path(rd) / "config.json").read_text())["config"]
        if cfg["mechanism"] in mechanisms:
            if (Path(rd) / "checkpoint.pt").is_file() or (Path(rd) / WEIGHTS_FILE).is_file():
                todo.append(rd)
            else:  # results exported without weights: nothing to time
                print(f"measure_speedup: {Path(rd).name} has neither checkpoint.pt nor {WEIGHTS_FILE}; not timed")
    old = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        rows = [time_run(rd, split=split, n_examples=n_examples, repeats=repeats, warmup=warmup, device=device)
                for rd in todo]
    finally:
        torch.set_num_threads(old)
    return pd.DataFrame(rows, columns=cols)


def summarize_speedup(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean (and SD over seeds) of ideal / realized / Amdahl speed-up per (task, mechanism, beta, max_depth)."""
    keys = ["task", "mechanism", "beta", "max_depth"]
    if per_run.empty:
        return pd.DataFrame(columns=keys + ["mean_depth", "ideal_speedup", "realized_speedup", "realized_speedup_sd",
                                            "efficiency", "amdahl_speedup", "efficiency_amdahl", "n_seeds"])
    return (per_run.groupby(keys, sort=True, dropna=False)
            .agg(mean_depth=("mean_depth", "mean"), ideal_speedup=("ideal_speedup", "mean"),
                 realized_speedup=("realized_speedup", "mean"), realized_speedup_sd=("realized_speedup", "std"),
                 efficiency=("efficiency", "mean"), amdahl_speedup=("amdahl_speedup", "mean"),
                 efficiency_amdahl=("efficiency_amdahl", "mean"), n_seeds=("seed", "size"))
            .reset_index())


__all__ = ["dense_forward", "interleaved", "time_exit", "amdahl_speedup", "time_run", "measure_speedup",
           "summarize_speedup", "MEASURED"]
