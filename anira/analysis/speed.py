"""Measured wall-clock speed-up of real early exit against a dense pass of the same model.

For one trained run and one batch of its evaluation inputs (B sequences padded to length T):

    t_exit   = median wall time of model(input_ids, exit="exit")   (halted tokens skipped)
    t_dense  = median wall time of ``dense_forward``: the same weights, every position runs all
               S = max_depth steps, one read-out (the cost of a fixed-depth model at depth S)
    realized = t_dense / t_exit
    ideal    = S / dbar,  dbar = mean block calls per position of the timed batch (padding
               included: the model decides a depth for padded positions too, and runs them)
    efficiency = realized / ideal       (1 = every skipped block call saved its full share of time)

Both passes see the same batch, threads and device; they alternate within each repeat so drift
(other processes, frequency scaling) hits both alike. The ideal ignores what real exit adds
(gathering the active tokens, one key/value projection per halted token, per-step bookkeeping),
which dominates for tiny models: measure on the profile's real model size.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

MEASURED = ("early", "online", "oracle", "random")  # mechanisms whose depth varies per token


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


def _time(fn, repeats: int, device: str = "cpu") -> list[float]:
    """Wall times of ``repeats`` calls; on CUDA the queue is drained before and after each call."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


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
    gen = torch.Generator().manual_seed(cfg.seed + 2)  # CPU: the random mechanism draws on the CPU

    def run_exit():
        gen.manual_seed(cfg.seed + 2)  # the same random-depth draws every repeat
        return model(batch.input_ids, difficulty=diff, exit="exit", generator=gen)

    def run_dense():
        return dense_forward(model, batch.input_ids)

    for _ in range(warmup):
        run_exit(), run_dense()
    t_exit, t_dense = [], []
    for _ in range(repeats):  # alternate, so drift affects both
        t_exit += _time(run_exit, 1, device)
        t_dense += _time(run_dense, 1, device)
    out = run_exit()
    calls = out.block_calls.float()  # (B, T)
    mask = batch.loss_mask
    M = cfg.max_depth
    te, td = statistics.median(t_exit), statistics.median(t_dense)
    mean_all = float(calls.mean())
    return dict(run_id=Path(run_dir).name, task=cfg.task, mechanism=cfg.mechanism, seed=cfg.seed,
                beta=cfg.beta if cfg.mechanism in ("early", "online", "random") else np.nan, max_depth=M,
                d_model=cfg.d_model, n_seq=batch.input_ids.shape[0], seq_len=batch.input_ids.shape[1],
                mean_depth=mean_all, mean_depth_scored=float(calls[mask].mean()) if mask.any() else np.nan,
                ideal_speedup=M / mean_all, time_exit_s=te, time_dense_s=td, time_exit_min_s=min(t_exit),
                time_dense_min_s=min(t_dense), realized_speedup=td / te, efficiency=(td / te) / (M / mean_all),
                repeats=repeats, threads=torch.get_num_threads(), device=device)


def measure_speedup(run_dirs: Sequence[str | Path], mechanisms: Sequence[str] = MEASURED, split: str = "in",
                    n_examples: int = 32, repeats: int = 5, warmup: int = 1, num_threads: int | None = 1,
                    device: str = "cpu") -> pd.DataFrame:
    """``time_run`` for every run of ``run_dirs`` whose mechanism is in ``mechanisms``; one row per run.

    num_threads: torch CPU threads during the measurement (restored afterwards); None keeps the
    current setting. An empty frame (with the columns) when no run qualifies.
    """
    import json

    cols = ["run_id", "task", "mechanism", "seed", "beta", "max_depth", "d_model", "n_seq", "seq_len", "mean_depth",
            "mean_depth_scored", "ideal_speedup", "time_exit_s", "time_dense_s", "time_exit_min_s",
            "time_dense_min_s", "realized_speedup", "efficiency", "repeats", "threads", "device"]
    todo = []
    for rd in run_dirs:
        cfg = json.loads((Path(rd) / "config.json").read_text())["config"]
        if cfg["mechanism"] in mechanisms:
            if (Path(rd) / "checkpoint.pt").is_file():
                todo.append(rd)
            else:  # exported results keep records, not weights: nothing to time
                print(f"measure_speedup: {Path(rd).name} has no checkpoint.pt (exported results?); not timed")
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
    """Mean (and SD over seeds) of ideal / realized speed-up per (task, mechanism, beta, max_depth)."""
    keys = ["task", "mechanism", "beta", "max_depth"]
    if per_run.empty:
        return pd.DataFrame(columns=keys + ["mean_depth", "ideal_speedup", "realized_speedup", "realized_speedup_sd",
                                            "efficiency", "n_seeds"])
    return (per_run.groupby(keys, sort=True, dropna=False)
            .agg(mean_depth=("mean_depth", "mean"), ideal_speedup=("ideal_speedup", "mean"),
                 realized_speedup=("realized_speedup", "mean"), realized_speedup_sd=("realized_speedup", "std"),
                 efficiency=("efficiency", "mean"), n_seeds=("seed", "size"))
            .reset_index())


__all__ = ["dense_forward", "time_run", "measure_speedup", "summarize_speedup", "MEASURED"]
