"""Efficiency: accuracy vs compute, and the wall-clock speed-up real early exit delivers.

Input: per-run summary dicts, e.g. ``load_summaries(run_dirs)`` = summary.json with the run's
config.json ``config`` nested under "config". Each canonical field is read from the first dotted
key of ``SUMMARY_KEYS`` that exists (a flat dict with the canonical names works too):

    run_id, task, mechanism, seed, beta, max_depth, fixed_depth   (identity / configuration)
    accuracy        in-range answer-token accuracy, fraction in [0, 1]      (summary "in.acc")
    mean_depth      mean iterations per answer token under real early exit  ("in.mean_depth")
    wall_time       seconds of the evaluation pass (trainer: "eval_time_s", which covers every
                    eval split and eval depth of the run: compare runs evaluated alike)
    wall_time_dense optional: same model and data with every token forced to max_depth

Compute = mean depth (recurrent-block applications per token); a fixed-depth baseline's compute is
its depth. Pareto front (per task): a point is on it when no other point has accuracy >= and
compute <= with at least one strict. Speed-up of an adaptive run:

    ideal    = max_depth / mean_depth
    realized = wall_time_dense / wall_time

with wall_time_dense from the summary or, failing that, the fixed-depth run of the same task at
depth max_depth (same seed if present, else the mean over seeds); efficiency = realized / ideal.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from anira.config import ADAPTIVE, VARYING

SUMMARY_KEYS: dict[str, tuple[str, ...]] = {  # canonical field -> dotted keys tried in order
    "run_id": ("run_id", "config_hash"),
    "task": ("task", "config.task"),
    "mechanism": ("mechanism", "config.mechanism"),
    "seed": ("seed", "config.seed"),
    "beta": ("beta", "config.beta"),
    "max_depth": ("max_depth", "config.max_depth"),
    "fixed_depth": ("fixed_depth", "config.fixed_depth"),
    "accuracy": ("accuracy", "in.acc"),
    "mean_depth": ("mean_depth", "in.mean_depth"),
    "wall_time": ("wall_time", "eval_time_s"),
    "wall_time_dense": ("wall_time_dense", "eval_time_dense_s"),
}
SUMMARY_FIELDS = tuple(SUMMARY_KEYS)
REQUIRED_FIELDS = ("task", "mechanism", "accuracy", "mean_depth")
POINT_KEYS = ("task", "mechanism", "beta", "fixed_depth", "max_depth")  # one Pareto point = these, over seeds


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def load_summaries(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """summary.json of each run directory, with config.json's "config" under "config"."""
    out = []
    for rd in run_dirs:
        rd = Path(rd)
        if not (rd / "summary.json").exists():
            raise ValueError(f"run_dirs: {rd} has no summary.json (unfinished run?)")
        s = json.loads((rd / "summary.json").read_text())
        if (rd / "config.json").exists():
            s["config"] = json.loads((rd / "config.json").read_text()).get("config", {})
        out.append(s)
    return out


def summaries_frame(summaries: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """One row per run with the SUMMARY_FIELDS columns (missing optional fields are NaN)."""
    if isinstance(summaries, pd.DataFrame):
        df = summaries.copy()
        for f in SUMMARY_FIELDS:
            if f not in df:
                df[f] = np.nan
    else:
        rows = []
        for i, s in enumerate(summaries):
            if not isinstance(s, Mapping):
                raise ValueError(f"summaries[{i}] must be a dict, got {type(s).__name__}")
            row = {}
            for f, keys in SUMMARY_KEYS.items():
                vals = [v for v in (_get(s, k) for k in keys) if v is not None]
                row[f] = vals[0] if vals else np.nan
            rows.append(row)
        df = pd.DataFrame(rows, columns=list(SUMMARY_FIELDS))
    for f in REQUIRED_FIELDS:
        if df.empty or df[f].isna().any():
            bad = [] if df.empty else df.index[df[f].isna()].tolist()
            raise ValueError(f"summaries: field {f!r} is missing (rows {bad}); required fields: {list(REQUIRED_FIELDS)}")
    df = df.astype({f: float for f in ("beta", "max_depth", "fixed_depth", "accuracy", "mean_depth", "wall_time",
                                       "wall_time_dense")})
    fixed = df["mechanism"] == "fixed"
    # a fixed run without fixed_depth runs max_depth (the trainer's default); else its mean depth
    fill = df["max_depth"].where(df["max_depth"].notna(), df["mean_depth"])
    df.loc[fixed & df["fixed_depth"].isna(), "fixed_depth"] = fill[fixed & df["fixed_depth"].isna()]
    df.loc[~fixed, "fixed_depth"] = np.nan
    df.loc[df["mechanism"].isin(["fixed", "oracle"]), "beta"] = np.nan  # no compute penalty in their objective
    return df


def pareto_front(accuracy: np.ndarray, compute: np.ndarray) -> np.ndarray:
    """Boolean mask of non-dominated points (maximize accuracy, minimize compute)."""
    a, c = np.asarray(accuracy, float), np.asarray(compute, float)
    ge = (a[None, :] >= a[:, None]) & (c[None, :] <= c[:, None])  # ge[i, j]: j at least as good as i
    strict = (a[None, :] > a[:, None]) | (c[None, :] < c[:, None])
    return ~np.any(ge & strict, axis=1)


def pareto(summaries: Sequence[Mapping[str, Any]] | pd.DataFrame, mechanisms: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy vs mean compute per configuration (mean and SD over seeds), Pareto front flagged.

    Columns: task, mechanism, beta, fixed_depth, max_depth, accuracy, accuracy_sd, mean_depth,
    mean_depth_sd, n_seeds, adaptive, on_front.
    """
    df = summaries_frame(summaries)
    if mechanisms is not None:
        df = df[df["mechanism"].isin(list(mechanisms))]
    keys = list(POINT_KEYS)
    agg = (df.groupby(keys, sort=True, dropna=False)
           .agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"), mean_depth=("mean_depth", "mean"),
                mean_depth_sd=("mean_depth", "std"), n_seeds=("accuracy", "size"))
           .reset_index())
    agg["adaptive"] = agg["mechanism"].isin(ADAPTIVE)
    agg["on_front"] = False
    for _, idx in agg.groupby("task").groups.items():
        agg.loc[idx, "on_front"] = pareto_front(agg.loc[idx, "accuracy"].to_numpy(), agg.loc[idx, "mean_depth"].to_numpy())
    return agg


def speedup_table(summaries: Sequence[Mapping[str, Any]] | pd.DataFrame,
                  mechanisms: Sequence[str] = VARYING, aggregate: bool = True) -> pd.DataFrame:
    """Realized wall-clock speed-up of real early exit vs the ideal max_depth / mean_depth.

    Per run: task, mechanism, seed, beta, max_depth, mean_depth, ideal_speedup, wall_time,
    wall_time_dense, dense_source ('summary' / 'fixed run' / 'missing'), realized_speedup,
    efficiency. With ``aggregate``, mean and SD over seeds per (task, mechanism, beta, max_depth).
    """
    df = summaries_frame(summaries)
    fixed = df[df["mechanism"] == "fixed"]
    rows = []
    for _, r in df[df["mechanism"].isin(list(mechanisms))].iterrows():
        dense, source = r["wall_time_dense"], "summary"
        if pd.isna(dense) or not np.isfinite(float(dense)):
            base = fixed[(fixed["task"] == r["task"]) & (fixed["fixed_depth"] == r["max_depth"])]
            same = base[base["seed"] == r["seed"]]
            base = same if len(same) else base
            dense, source = (float(base["wall_time"].mean()), "fixed run") if len(base) and base["wall_time"].notna().any() \
                else (np.nan, "missing")
        ideal = float(r["max_depth"]) / float(r["mean_depth"])
        with np.errstate(invalid="ignore", divide="ignore"):
            realized = float(dense) / float(r["wall_time"])
        rows.append(dict(task=r["task"], mechanism=r["mechanism"], seed=r["seed"], beta=r["beta"],
                         max_depth=r["max_depth"], mean_depth=r["mean_depth"], ideal_speedup=ideal,
                         wall_time=r["wall_time"], wall_time_dense=dense, dense_source=source,
                         realized_speedup=realized, efficiency=realized / ideal))
    out = pd.DataFrame(rows, columns=["task", "mechanism", "seed", "beta", "max_depth", "mean_depth", "ideal_speedup",
                                      "wall_time", "wall_time_dense", "dense_source", "realized_speedup", "efficiency"])
    if not aggregate or out.empty:
        return out
    keys = ["task", "mechanism", "beta", "max_depth"]
    return (out.groupby(keys, sort=True, dropna=False)
            .agg(mean_depth=("mean_depth", "mean"), ideal_speedup=("ideal_speedup", "mean"),
                 realized_speedup=("realized_speedup", "mean"), realized_speedup_sd=("realized_speedup", "std"),
                 efficiency=("efficiency", "mean"), n_seeds=("seed", "size"))
            .reset_index())


__all__ = ["load_summaries", "SUMMARY_KEYS", "summaries_frame", "pareto_front", "pareto", "speedup_table", "SUMMARY_FIELDS", "REQUIRED_FIELDS"]
