"""Notebook 07: each finding of the paper, the statistic that tests it, a threshold fixed in
advance, the value measured, and a verdict: "reproduced", "not reproduced" or "inconclusive".

The thresholds below were set before any run of this study and must not be tuned to results.

Claim 1, alignment (tables from ``alignment_table``), for each mechanism in ALIGN_MECHANISMS and
each algorithmic task:  rho = Spearman(depth, difficulty) (mean over seeds, 95% sequence CI).
    reproduced      rho > ALIGN_RHO_MIN (0.3) and CI lower bound > ALIGN_CI_LO_MIN (0)
    not reproduced  CI upper bound < ALIGN_RHO_MIN (confidently weaker than 0.3)
    inconclusive    otherwise (the CI straddles a bound) or data missing.
Claim 2, no extrapolation (``extrapolation_table``), per mechanism and algorithmic task:
    acc_drop = acc_in - acc_out must exceed EXTRAP_ACC_DROP_MIN (0.20 = 20 points) with its CI
    lower bound above it, AND depth_increase = depth_out - depth_in must be >= 0 with CI lower
    bound >= 0. Not reproduced if either part is confidently false (acc_drop CI upper bound
    < 0.20, or depth_increase CI upper bound < 0); inconclusive otherwise.
Claim 3, decision timing (``timing_decomposition``) on TIMING_TASK (toposort):
    d = R^2_dynamic - R^2_static (= unique_dynamic - unique_static, see ``timing``).
    early:  static explains more   -> reproduced if d < -TIMING_MARGIN with CI upper bound < -TIMING_MARGIN
    online: dynamic explains more  -> reproduced if d > TIMING_MARGIN with CI lower bound > TIMING_MARGIN
    not reproduced if the CI lies entirely on the other side of the margin; inconclusive if the
    CI straddles it, or the total R^2 is below TIMING_MIN_R2 (nothing to decompose, e.g. a
    constant depth), or data is missing.
Aggregate rows (claims 1, 2, per mechanism over the algorithmic tasks with data, T of them):
    need = ceil(TASK_FRACTION * T) task-level reproductions; reproduced if #reproduced >= need,
    not reproduced if #reproduced + #inconclusive < need, inconclusive otherwise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

ALGORITHMIC_TASKS = ("hops", "toposort", "addition")  # tasks the alignment / extrapolation claims are about
ALIGN_MECHANISMS = ("early", "online")  # the paper's two learned allocations
ALIGN_RHO_MIN = 0.3  # a "moderate" monotone association (Cohen-style convention for correlations)
ALIGN_CI_LO_MIN = 0.0  # and it must be positive beyond sampling noise
EXTRAP_MECHANISMS = ("early", "online")
EXTRAP_ACC_DROP_MIN = 0.20  # "accuracy collapses": at least 20 accuracy points lost out of range
EXTRAP_DEPTH_INCREASE_MIN = 0.0  # "allocate more compute": out-of-range mean depth >= in-range
TIMING_TASK = "toposort"  # the task with both static (graph) and dynamic (execution) features
TIMING_MARGIN = 0.0  # d = R^2_dyn - R^2_stat must be beyond this margin, by its CI
TIMING_MIN_R2 = 0.05  # below this total R^2 there is no allocation signal to attribute
TASK_FRACTION = 2 / 3  # aggregate rule: reproduced on >= 2/3 of the algorithmic tasks with data

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass
class Claim:
    finding: str  # the paper's statement being tested
    statistic: str  # what is measured, in words
    threshold: float  # the fixed threshold (module constant)
    comparison: str  # how value and CI are compared with the threshold
    value: float  # measured value (NaN when data is missing)
    verdict: str  # one of VERDICTS
    ci_lo: float = float("nan")  # 95% CI of value (sequence bootstrap, mean over seeds)
    ci_hi: float = float("nan")
    scope: str = ""  # task / mechanism the row is about ("all" for aggregates)
    note: str = ""  # why inconclusive, or extra context


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def interval_verdict(value: float, lo: float, hi: float, threshold: float, lo_threshold: float | None = None,
                     strict: bool = True) -> str:
    """'value above threshold' tested with its CI (see the module docstring).

    reproduced: value > threshold and lo > lo_threshold (>= when not strict); not reproduced:
    hi < threshold; inconclusive otherwise or when any number is NaN.
    """
    lo_threshold = threshold if lo_threshold is None else lo_threshold
    if any(np.isnan(_f(v)) for v in (value, lo, hi)):
        return "inconclusive"
    above = (value > threshold and lo > lo_threshold) if strict else (value >= threshold and lo >= lo_threshold)
    if above:
        return "reproduced"
    if hi < threshold:
        return "not reproduced"
    return "inconclusive"


def combine_all(verdicts: Sequence[str]) -> str:
    """All parts must hold: any 'not reproduced' wins, then any 'inconclusive'."""
    if "not reproduced" in verdicts:
        return "not reproduced"
    if "inconclusive" in verdicts:
        return "inconclusive"
    return "reproduced"


def aggregate_verdict(verdicts: Sequence[str], fraction: float = TASK_FRACTION) -> str:
    """Reproduced on >= ceil(fraction * T) of T parts; not reproduced if that is out of reach."""
    if not verdicts:
        return "inconclusive"
    need = math.ceil(fraction * len(verdicts) - 1e-9)
    r, i = verdicts.count("reproduced"), verdicts.count("inconclusive")
    if r >= need:
        return "reproduced"
    if r + i < need:
        return "not reproduced"
    return "inconclusive"


def _rows(table: pd.DataFrame | None, task: str, mech: str) -> pd.Series | None:
    if table is None or table.empty:
        return None
    sub = table[(table["task"] == task) & (table["mechanism"] == mech)]
    if len(sub) > 1:
        raise ValueError(f"table has {len(sub)} rows for task={task!r}, mechanism={mech!r}; pass one configuration")
    return None if sub.empty else sub.iloc[0]


def _tasks(table: pd.DataFrame | None) -> list[str]:
    if table is None or table.empty:
        return []
    return [t for t in ALGORITHMIC_TASKS if t in set(table["task"])]


def alignment_claims(alignment: pd.DataFrame | None) -> list[Claim]:
    finding = "Alignment: compute correlates with ground-truth token complexity (no difficulty labels)"
    out = []
    for mech in ALIGN_MECHANISMS:
        parts = []
        for task in _tasks(alignment):
            r = _rows(alignment, task, mech)
            if r is None:
                continue
            v = interval_verdict(_f(r["rho"]), _f(r["rho_lo"]), _f(r["rho_hi"]), ALIGN_RHO_MIN, ALIGN_CI_LO_MIN)
            note = "depth constant (rho := 0)" if bool(r.get("depth_constant", False)) else ""
            out.append(Claim(finding, "Spearman rho(depth, difficulty), in-range tokens", ALIGN_RHO_MIN,
                             f"rho > {ALIGN_RHO_MIN} and CI low > {ALIGN_CI_LO_MIN}", _f(r["rho"]), v,
                             _f(r["rho_lo"]), _f(r["rho_hi"]), f"{task} / {mech}", note))
            parts.append(v)
        out.append(Claim(finding, f"tasks reproduced, of {len(parts)} algorithmic tasks with data", TASK_FRACTION,
                         f"reproduced on >= {TASK_FRACTION:.2f} of tasks", float(parts.count("reproduced")),
                         aggregate_verdict(parts), scope=f"all / {mech}",
                         note="" if parts else "data missing"))
    return out


def extrapolation_claims(extrapolation: pd.DataFrame | None) -> list[Claim]:
    finding = "No extrapolation: beyond training sizes, more compute but accuracy collapses"
    out = []
    for mech in EXTRAP_MECHANISMS:
        parts = []
        for task in _tasks(extrapolation):
            r = _rows(extrapolation, task, mech)
            if r is None:
                continue
            va = interval_verdict(_f(r["acc_drop"]), _f(r["acc_drop_lo"]), _f(r["acc_drop_hi"]), EXTRAP_ACC_DROP_MIN)
            vd = interval_verdict(_f(r["depth_increase"]), _f(r["depth_increase_lo"]), _f(r["depth_increase_hi"]),
                                  EXTRAP_DEPTH_INCREASE_MIN, strict=False)
            v = combine_all([va, vd])
            note = (f"depth_increase = {_f(r['depth_increase']):.3f} "
                    f"[{_f(r['depth_increase_lo']):.3f}, {_f(r['depth_increase_hi']):.3f}] ({vd})")
            out.append(Claim(finding, "accuracy drop in-range - out-of-range (fraction)", EXTRAP_ACC_DROP_MIN,
                             f"drop CI low > {EXTRAP_ACC_DROP_MIN} and depth increase CI low >= "
                             f"{EXTRAP_DEPTH_INCREASE_MIN}", _f(r["acc_drop"]), v, _f(r["acc_drop_lo"]),
                             _f(r["acc_drop_hi"]), f"{task} / {mech}", note))
            parts.append(v)
        out.append(Claim(finding, f"tasks reproduced, of {len(parts)} algorithmic tasks with data", TASK_FRACTION,
                         f"reproduced on >= {TASK_FRACTION:.2f} of tasks", float(parts.count("reproduced")),
                         aggregate_verdict(parts), scope=f"all / {mech}", note="" if parts else "data missing"))
    return out


def timing_claims(timing: pd.DataFrame | None) -> list[Claim]:
    out = []
    for mech, sign, finding in (
            ("early", -1.0, "Decision timing: early (E) depth explained more by static structure than by dynamic state"),
            ("online", 1.0, "Decision timing: online (O) depth explained more by dynamic state than by static structure")):
        r = _rows(timing, TIMING_TASK, mech)
        stat = "R^2_dynamic - R^2_static (= unique dynamic - unique static), cross-validated"
        comp = (f"d < -{TIMING_MARGIN} by CI" if sign < 0 else f"d > {TIMING_MARGIN} by CI")
        if r is None:
            out.append(Claim(finding, stat, TIMING_MARGIN, comp, float("nan"), "inconclusive",
                             scope=f"{TIMING_TASK} / {mech}", note="data missing"))
            continue
        d, lo, hi = _f(r["dynamic_minus_static"]), _f(r["dynamic_minus_static_lo"]), _f(r["dynamic_minus_static_hi"])
        # test sign * d > margin; for early, flip the interval
        s_lo, s_hi = (lo, hi) if sign > 0 else (-hi, -lo)
        v = interval_verdict(sign * d, s_lo, s_hi, TIMING_MARGIN)
        tot = _f(r["r2_both"])
        note = f"total R^2 = {tot:.3f}, size alone R^2 = {_f(r.get('r2_size')):.3f}"
        if not np.isfinite(tot) or tot < TIMING_MIN_R2:
            v, note = "inconclusive", f"total R^2 = {tot:.3f} < {TIMING_MIN_R2}: no allocation signal to attribute"
        out.append(Claim(finding, stat, TIMING_MARGIN, comp, d, v, lo, hi, f"{TIMING_TASK} / {mech}", note))
    return out


def evaluate_claims(alignment: pd.DataFrame | None = None, extrapolation: pd.DataFrame | None = None,
                    timing: pd.DataFrame | None = None) -> list[Claim]:
    """All claims from the tables of ``alignment_table``, ``extrapolation_table`` and
    ``timing_decomposition`` (None -> that claim is 'inconclusive', data missing)."""
    return alignment_claims(alignment) + extrapolation_claims(extrapolation) + timing_claims(timing)


def claim_inputs(records: pd.DataFrame, boot=None, n_splits: int = 5,
                 timing_model: str = "linear") -> dict[str, pd.DataFrame | None]:
    """The three tables ``evaluate_claims`` reads, computed from per-token records.

    Uses the mechanisms the claims are about (ALIGN_MECHANISMS, EXTRAP_MECHANISMS) on the
    ALGORITHMIC_TASKS, and TIMING_TASK for timing with the task's default static/dynamic feature
    sets. Records must hold one configuration per task x mechanism (filter a beta sweep first).
    A table without data is None (its claims become 'inconclusive: data missing').
    Returns {"alignment": ..., "extrapolation": ..., "timing": ...}.
    """
    from anira.analysis._stats import select
    from anira.analysis.alignment import alignment_table
    from anira.analysis.generalization import extrapolation_table
    from anira.analysis.timing import default_feature_sets, timing_decomposition

    def part(mechanisms, tasks):
        return select(records, split=None, eval_depth=None, mechanism=list(mechanisms), task=list(tasks))

    al = part(ALIGN_MECHANISMS, ALGORITHMIC_TASKS)
    ex = part(EXTRAP_MECHANISMS, ALGORITHMIC_TASKS)
    tm = part(("early", "online"), (TIMING_TASK,))
    static, dynamic = default_feature_sets(TIMING_TASK)
    return {
        "alignment": alignment_table(al, boot=boot) if len(al) else None,
        "extrapolation": extrapolation_table(ex, boot=boot) if len(ex) else None,
        "timing": timing_decomposition(tm, static, dynamic, model=timing_model, n_splits=n_splits, boot=boot)
        if len(tm) else None,
    }


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim, columns in Claim field order."""
    return pd.DataFrame([asdict(c) for c in claims])


def thresholds() -> dict[str, float | str | tuple]:
    """The fixed thresholds, for printing beside the claims table."""
    return dict(ALGORITHMIC_TASKS=ALGORITHMIC_TASKS, ALIGN_MECHANISMS=ALIGN_MECHANISMS, ALIGN_RHO_MIN=ALIGN_RHO_MIN,
                ALIGN_CI_LO_MIN=ALIGN_CI_LO_MIN, EXTRAP_ACC_DROP_MIN=EXTRAP_ACC_DROP_MIN,
                EXTRAP_DEPTH_INCREASE_MIN=EXTRAP_DEPTH_INCREASE_MIN, TIMING_TASK=TIMING_TASK,
                TIMING_MARGIN=TIMING_MARGIN, TIMING_MIN_R2=TIMING_MIN_R2, TASK_FRACTION=TASK_FRACTION)


__all__ = ["Claim", "evaluate_claims", "claim_inputs", "claims_table", "thresholds", "interval_verdict", "aggregate_verdict",
           "combine_all", "alignment_claims", "extrapolation_claims", "timing_claims", "VERDICTS",
           "ALGORITHMIC_TASKS", "ALIGN_MECHANISMS", "ALIGN_RHO_MIN", "ALIGN_CI_LO_MIN", "EXTRAP_MECHANISMS",
           "EXTRAP_ACC_DROP_MIN", "EXTRAP_DEPTH_INCREASE_MIN", "TIMING_TASK", "TIMING_MARGIN", "TIMING_MIN_R2",
           "TASK_FRACTION"]
