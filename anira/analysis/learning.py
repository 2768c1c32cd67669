"""Did a run learn its task? The per-run learning bar that the claims (notebook 07) apply.

A run (one task x mechanism x seed) *learned* its task when its in-range accuracy on the
multi-step tokens, at the trained depth, is at least the task's trivial floor on those same tokens
plus LEARN_FLOOR_GAP:

    acc_multi >= floor_multi + LEARN_FLOOR_GAP

The floor is ``Task.floor``: per token, the expected accuracy of a reader without multi-step
computation; the multi-step tokens (``Task.multi_step``) are those where that floor is below 1,
the only tokens on which depth can pay. A run at the floor answers like that reader, so its depth
and its extrapolation say nothing about the paper's findings: the claims call its rows
"untestable (not learned)" instead of "reproduced" or "not reproduced".

LEARN_FLOOR_GAP = 0.15 is the floor bar of the learning diagnostic (``diagnostic_bars``),
fixed with it before the study: about ten standard errors of an accuracy over the ~1,000 multi-step
tokens of a frozen evaluation set (sd <= 0.5 / sqrt(1000) = 0.016), and more than the seed-to-seed
spread measured on ``hops``. A gap that size is not noise; a smaller one is not evidence of learning.

Room to allocate (the depth-used bars, judged beside the learning bar). An adaptive run can only
show where it puts its depth if its depth is free to move: ``room`` is True when its mean depth on
the in-range answer tokens at the trained depth is at most ROOM_MAX_FRACTION (0.85) x max_depth,
so it has room to allocate, and out of range to add; ``depth_varies`` is True when the depth's SD
on those tokens is at least MIN_DEPTH_SD (0.2: one-step deviations from the mode on fewer than ~4%
of tokens give less). Both are NA for fixed-depth runs, whose depth is not a decision. The claims
call a row whose run has no room "untestable (no room to allocate)", and a timing row whose depth
does not vary "untestable (no depth variance)"; neither is ever "reproduced".

Where the records lack the task's feature columns (e.g. synthetic records), or a run has no
multi-step tokens, the bar cannot be judged: ``learned`` is NA and ``note`` says why.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from anira.analysis._stats import _fixed_depths, check_columns, select

LEARN_FLOOR_GAP = 0.15  # acc_multi must be >= floor_multi + this (the diagnostic's floor bar)
# The other bars of the learning diagnostic (scripts/learning_diagnostic.py), judged on the four runs
# of one recipe (fixed 1, fixed max depth, early, online) by ``diagnostic_bars``:
DEPTH1_GAP = 0.15  # fixed depth 1 at least this far below fixed max depth on the multi-step tokens
ADAPTIVE_GAP = 0.05  # early and online within this of fixed max depth on the multi-step tokens
CPU_MINUTES_MAX = 25.0  # each run's training, in CPU-minutes (``train_cpu_s`` of its summary)
HOPS_BARS = {"max_in": 0.95, "max_per_hop": 0.90}  # hops, fixed max depth: learned outright
LANGUAGE_BARS = {"one_fact": 0.90, "grammar": 0.99, "free_ce_gap": 0.10, "adaptive_gap": 0.03}
ROOM_MAX_FRACTION = 0.85  # an adaptive run has room when its in-range answer depth <= this x max_depth
MIN_DEPTH_SD = 0.2  # below this SD of the in-range answer depth, depth does not vary (see claims)
_TOL = 1e-9  # an accuracy exactly at the bar passes ("at least"), whatever the float rounding

LEARNING_COLUMNS = ("task", "mechanism", "seed", "run_id", "fixed_depth", "acc_multi", "floor_multi", "bar", "gap",
                    "n_multi", "learned", "max_depth", "depth_mean", "depth_sd", "room", "depth_varies", "note")


def _floor_and_multi(run: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(floor, multi_step) per token of one run, or (None, None, why not)."""
    from anira.tasks import task_class

    task = run["task"].iloc[0]
    try:
        cls = task_class(task)
        floor = np.asarray(cls.floor(run), dtype=float)
        multi = np.asarray(cls.multi_step(run), dtype=bool)
    except (KeyError, ValueError, NotImplementedError):
        return None, None, "no floor"
    if np.isnan(floor).any():
        return None, None, "no floor"
    return floor, multi, ""


def learning_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run: is it above the learning bar (module docstring)?

    Reads in-range tokens at the trained depth (``select(records, split="in", eval_depth="train")``).
    Columns: task, mechanism, seed, run_id, fixed_depth (the depth of a fixed run, else NaN),
    acc_multi (accuracy on the multi-step tokens), floor_multi (mean floor on them),
    bar = floor_multi + LEARN_FLOOR_GAP, gap = acc_multi - floor_multi, n_multi (their number),
    learned (True / False, NA where not judged), max_depth (the trained depth S), depth_mean and
    depth_sd (over the answer tokens), room (depth_mean <= ROOM_MAX_FRACTION x S) and depth_varies
    (depth_sd >= MIN_DEPTH_SD), both NA for fixed runs, and note (why not judged, else empty).
    Rows are sorted by task, mechanism, fixed_depth, seed.
    """
    check_columns(records, ["run_id", "task", "mechanism", "seed", "correct"], "learning_table")
    df = select(records, split="in", eval_depth="train")
    fixed = _fixed_depths(df) if len(df) else None
    rows = []
    for run_id, run in df.groupby("run_id", sort=True):
        floor, multi, why = _floor_and_multi(run)
        row = {"task": run["task"].iloc[0], "mechanism": run["mechanism"].iloc[0], "seed": run["seed"].iloc[0],
               "run_id": run_id,
               "fixed_depth": float(fixed.get(run_id, np.nan)) if fixed is not None else np.nan,
               "acc_multi": np.nan, "floor_multi": np.nan, "bar": np.nan, "gap": np.nan, "n_multi": 0,
               "learned": pd.NA, **_depth_use(run, run["mechanism"].iloc[0] == "fixed"), "note": why}
        if floor is not None:
            n = int(multi.sum())
            row["n_multi"] = n
            if n == 0:
                row["note"] = "no multi-step tokens"
            else:
                acc = float(run["correct"].to_numpy(dtype=float)[multi].mean())
                fl = float(floor[multi].mean())
                row.update(acc_multi=acc, floor_multi=fl, bar=fl + LEARN_FLOOR_GAP, gap=acc - fl,
                           learned=bool(acc - fl >= LEARN_FLOOR_GAP - _TOL))
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(LEARNING_COLUMNS))
    for col in ("learned", "room", "depth_varies"):
        out[col] = out[col].astype("boolean")
    out["n_multi"] = out["n_multi"].astype(int)
    if len(out):
        out = out.sort_values(["task", "mechanism", "fixed_depth", "seed"], na_position="first", kind="stable")
    return out.reset_index(drop=True)


def language_bars(name: str, rec: pd.DataFrame) -> list[tuple[str, bool, str]]:
    """The language bars on one run's in-range tokens (records of the `language` task): 1-fact
    answers, grammar tokens, and the cross-entropy of the uniformly drawn free choices against
    their entropy ln(n_branching). (bar, passed, value) per bar; ``name`` labels the run."""
    one = rec[(rec.kind == 2) & (rec.steps == 1)].correct.mean()
    grammar = rec[rec.kind == 0].correct.mean()
    free = rec[(rec.kind == 1) & (rec.uniform == 1)]
    gap = free.loss.mean() - np.log(free.n_branching).mean()
    b = LANGUAGE_BARS
    return [(f"{name}: 1-fact answers >= {b['one_fact']}", bool(one >= b["one_fact"]), f"{one:.3f}"),
            (f"{name}: grammar tokens >= {b['grammar']}", bool(grammar >= b["grammar"]), f"{grammar:.4f}"),
            (f"{name}: uniform free choices' cross-entropy <= entropy + {b['free_ce_gap']} nats",
             bool(gap <= b["free_ce_gap"]), f"{free.loss.mean():.3f} vs ln n {np.log(free.n_branching).mean():.3f} "
                                            f"({gap:+.3f}) on {len(free):,} tokens")]


def diagnostic_bars(records: pd.DataFrame, names: dict[str, str], cpu_minutes: dict[str, float]
                    ) -> list[tuple[str, bool, str]]:
    """The learning diagnostic's bars on the runs of one recipe, (bar, passed, value) each.

    ``records``: the runs' records; ``names``: display name -> run_id, with "fixed1" for fixed
    depth 1, "fixed<S>" for fixed max depth, "early" and "online" (any subset);
    ``cpu_minutes``: display name -> training CPU-minutes. Bars: fixed max depth
    LEARN_FLOOR_GAP above the floor on the multi-step tokens (``learning_table``); fixed 1 at least
    DEPTH1_GAP below it; early and online within ADAPTIVE_GAP of it (``language``:
    LANGUAGE_BARS["adaptive_gap"]); `hops` also HOPS_BARS on fixed max depth, `language` also
    ``language_bars``; every run at most CPU_MINUTES_MAX.
    """
    table = learning_table(records).set_index("run_id")
    acc = {n: float(table.loc[r, "acc_multi"]) for n, r in names.items()}
    floor = float(table["floor_multi"].iloc[0])
    task = str(table["task"].iloc[0])
    out: list[tuple[str, bool, str]] = []
    fixed_max = next((n for n in names if n.startswith("fixed") and n != "fixed1"), None)
    if fixed_max:
        m = acc[fixed_max]
        out.append((f"{fixed_max} >= {LEARN_FLOOR_GAP} above the floor on multi-step tokens",
                    bool(m - floor >= LEARN_FLOOR_GAP - _TOL), f"{m:.3f} vs {floor:.3f} ({m - floor:+.3f})"))
        if "fixed1" in acc:
            gap = m - acc["fixed1"]
            out.append((f"fixed1 >= {DEPTH1_GAP} below {fixed_max} on multi-step tokens",
                        bool(gap >= DEPTH1_GAP - _TOL), f"{acc['fixed1']:.3f} ({gap:+.3f} below)"))
        run = select(records, split="in", eval_depth="train", run_id=names[fixed_max])
        if task == "hops":
            in_acc = float(run["correct"].mean())
            out.append((f"{fixed_max}: in-range >= {HOPS_BARS['max_in']}", in_acc >= HOPS_BARS["max_in"],
                        f"{in_acc:.3f}"))
            worst = float(run[run["difficulty"].isin([1, 2, 3, 4])].groupby("difficulty")["correct"].mean().min())
            out.append((f"{fixed_max}: every hop count 1-4 >= {HOPS_BARS['max_per_hop']}",
                        worst >= HOPS_BARS["max_per_hop"], f"lowest {worst:.3f}"))
        if task == "language":
            out += language_bars(fixed_max, run)
        bar = LANGUAGE_BARS["adaptive_gap"] if task == "language" else ADAPTIVE_GAP
        for n in ("early", "online"):
            if n in acc:
                gap = m - acc[n]
                out.append((f"{n} within {bar} of {fixed_max} on multi-step tokens", bool(gap <= bar + _TOL),
                            f"{acc[n]:.3f} ({gap:+.3f} below)"))
    for n in names:
        out.append((f"{n} <= {CPU_MINUTES_MAX:.0f} CPU-minutes", bool(cpu_minutes[n] <= CPU_MINUTES_MAX),
                    f"{cpu_minutes[n]:.1f}"))
    return out


def _depth_use(run: pd.DataFrame, is_fixed: bool) -> dict:
    """max_depth, depth_mean, depth_sd over the run's answer tokens; room and depth_varies (NA for fixed runs)."""
    ans = run[run["is_answer"] == 1] if "is_answer" in run.columns else run
    S = int(run["max_depth"].iloc[0]) if "max_depth" in run.columns else np.nan
    if "depth" not in ans.columns or ans.empty:
        return {"max_depth": S, "depth_mean": np.nan, "depth_sd": np.nan, "room": pd.NA, "depth_varies": pd.NA}
    depth = ans["depth"].to_numpy(dtype=float)
    m, sd = float(depth.mean()), float(depth.std())
    judged = not is_fixed and np.isfinite(S)
    return {"max_depth": S, "depth_mean": m, "depth_sd": sd,
            "room": bool(m <= ROOM_MAX_FRACTION * S + _TOL) if judged else pd.NA,
            "depth_varies": bool(sd >= MIN_DEPTH_SD - _TOL) if judged else pd.NA}


RANDOM_MATCH_TV = 0.1  # the depth-used bar: random within this total variation of its online run


def random_match_table(records: pd.DataFrame) -> pd.DataFrame:
    """Is each ``random`` control matched to its ``online`` run (same task, seed and max_depth) in its
    whole depth distribution, not only its mean? In-range answer tokens at the trained depth.
    Columns: task, seed, run_id (the random run), online_run_id, depth_mean, online_depth_mean,
    tv (total variation distance between the two depth distributions, 0..1) and matched
    (tv <= RANDOM_MATCH_TV); a random run without an online run of its task and seed is left out."""
    check_columns(records, ["run_id", "task", "mechanism", "seed", "depth"], "random_match_table")
    df = select(records, split="in", eval_depth="train", answer_only="is_answer" in records.columns)
    rows = []
    for run_id, rnd in df[df["mechanism"] == "random"].groupby("run_id", sort=True):
        task, seed, S = rnd["task"].iloc[0], rnd["seed"].iloc[0], rnd["max_depth"].iloc[0]
        on = df[(df["mechanism"] == "online") & (df["task"] == task) & (df["seed"] == seed) & (df["max_depth"] == S)]
        for on_id, o in on.groupby("run_id", sort=True):
            p = rnd["depth"].value_counts(normalize=True)
            q = o["depth"].value_counts(normalize=True)
            tv = 0.5 * float(p.sub(q, fill_value=0.0).abs().sum())
            rows.append({"task": task, "seed": seed, "run_id": run_id, "online_run_id": on_id,
                         "depth_mean": float(rnd["depth"].mean()), "online_depth_mean": float(o["depth"].mean()),
                         "tv": tv, "matched": tv <= RANDOM_MATCH_TV + _TOL})
    return pd.DataFrame(rows, columns=["task", "seed", "run_id", "online_run_id", "depth_mean", "online_depth_mean",
                                       "tv", "matched"])


def failed_bar_note(row: pd.Series) -> str:
    """The bar a run failed, with its numbers, e.g. 'online on hops (seed 0): acc 0.410 on 1,095
    multi-step tokens < floor 0.351 + 0.15'."""
    fd = row.get("fixed_depth", np.nan)
    who = f"{row['mechanism']}" + (f" depth {int(fd)}" if pd.notna(fd) else "")
    return (f"{who} on {row['task']} (seed {row['seed']}): acc {row['acc_multi']:.3f} on {int(row['n_multi']):,} "
            f"multi-step tokens < floor {row['floor_multi']:.3f} + {LEARN_FLOOR_GAP}")


TRAINING_CURVE_COLUMNS = ("task", "mechanism", "seed", "run_id", "step", "accuracy", "mean_depth", "rho", "halt_start")


def training_curves(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The evaluations each run logged while it trained: one row per run and evaluation step.

    Read from ``log.jsonl`` (its ``kind == "eval"`` rows): every ``eval_every`` steps the trainer
    scores the answer tokens of the first ``eval_examples`` sequences of the frozen in-range set
    under real early exit. Columns: task, mechanism, seed, run_id (the run's config hash), step,
    accuracy, mean_depth (iterations per answer token), rho (Spearman rho(depth, difficulty) over
    those tokens; NaN where depth or difficulty is constant, so no alignment can show) and
    halt_start (the step the halting objective began, from summary.json; NaN where it never did or
    the run does not halt). Rows are sorted by task, mechanism, seed, run_id, step.
    """
    rows = []
    for d in map(Path, run_dirs):
        try:
            doc = json.loads((d / "config.json").read_text())
            lines = (d / "log.jsonl").read_text().splitlines()
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise ValueError(f"run_dirs: {d} has no readable config.json and log.jsonl ({err})") from None
        cfg = doc["config"]
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
        halt = summary.get("halt_start")
        halt = float(halt) if isinstance(halt, (int, float)) and np.isfinite(halt) else np.nan
        for line in lines:
            ev = json.loads(line) if line.strip() else {}
            if ev.get("kind") != "eval" or ev.get("split", "in") != "in":
                continue
            rows.append({"task": cfg["task"], "mechanism": cfg["mechanism"], "seed": int(cfg["seed"]),
                         "run_id": str(doc.get("config_hash", d.name)), "step": int(ev["step"]),
                         "accuracy": float(ev["acc"]), "mean_depth": float(ev["mean_depth"]),
                         "rho": np.nan if ev.get("rho") is None else float(ev["rho"]), "halt_start": halt})
    out = pd.DataFrame(rows, columns=list(TRAINING_CURVE_COLUMNS))
    return out.sort_values(["task", "mechanism", "seed", "run_id", "step"], kind="stable").reset_index(drop=True)


__all__ = ["LEARN_FLOOR_GAP", "ROOM_MAX_FRACTION", "MIN_DEPTH_SD", "RANDOM_MATCH_TV", "LEARNING_COLUMNS",
           "TRAINING_CURVE_COLUMNS", "learning_table", "random_match_table", "failed_bar_note", "training_curves"]
