"""Notebook 07: each finding of the paper, the statistic that tests it, a threshold fixed in
advance, the value measured, and a verdict: "reproduced", "not reproduced", "inconclusive" or
"untestable (not learned)".

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
    CI straddles it, or the total R^2 is below TIMING_MIN_R2 (nothing to decompose), or undefined
    (depth constant in every run: no depth variance to explain), or data is missing.
Aggregate rows (claims 1, 2, per mechanism over the algorithmic tasks with data, T of them):
    need = ceil(TASK_FRACTION * T) task-level reproductions; reproduced if #reproduced >= need,
    not reproduced if #reproduced + #inconclusive < need, inconclusive otherwise.
Learning bar (``learning``: the table of ``learning_table``, one row per run). Only a run that
learned its task can reproduce or refute a finding: a run learned when its in-range accuracy on
the multi-step tokens is >= the task's trivial floor on them + LEARN_FLOOR_GAP (0.15, the bar of
the learning diagnostic; see ``learning``). Every row whose scope is a task x mechanism with a run
(any seed) below the bar reads UNTESTABLE, "untestable (not learned)", and its note names the bar
each such run failed, with its numbers; its value and CI are still reported. An untestable task
counts neither for nor against an aggregate: T above counts the testable tasks only, and an
aggregate with no testable task is itself untestable. Where the bar cannot be judged (records
without the task's feature columns, so no floor) the verdict is kept and the note says "learning
bar not judged: no floor". Without a learning table (``learning=None``) no bar is applied.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from anira.analysis.learning import LEARN_FLOOR_GAP, failed_bar_note
from anira.config import ADAPTIVE

ALGORITHMIC_TASKS = ("hops", "toposort", "addition")  # tasks the alignment / extrapolation claims are about
ALIGN_MECHANISMS = ADAPTIVE  # the paper's two learned allocations
ALIGN_RHO_MIN = 0.3  # a "moderate" monotone association (Cohen-style convention for correlations)
ALIGN_CI_LO_MIN = 0.0  # and it must be positive beyond sampling noise
EXTRAP_MECHANISMS = ADAPTIVE
EXTRAP_ACC_DROP_MIN = 0.20  # "accuracy collapses": at least 20 accuracy points lost out of range
EXTRAP_DEPTH_INCREASE_MIN = 0.0  # "allocate more compute": out-of-range mean depth >= in-range
TIMING_TASK = "toposort"  # the task with both static (graph) and dynamic (execution) features
TIMING_MARGIN = 0.0  # d = R^2_dyn - R^2_stat must be beyond this margin, by its CI
TIMING_MIN_R2 = 0.05  # below this total R^2 there is no allocation signal to attribute
TASK_FRACTION = 2 / 3  # aggregate rule: reproduced on >= 2/3 of the algorithmic tasks with data

UNTESTABLE = "untestable (not learned)"  # a run of the row's task x mechanism failed the learning bar
VERDICTS = ("reproduced", "not reproduced", "inconclusive", UNTESTABLE)


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
    note: str = ""  # why inconclusive or untestable, or extra context


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


def learning_status(learning: pd.DataFrame | None, task: str, mech: str) -> tuple[str, str]:
    """(status, note) of the learning bar for one task x mechanism (see the module docstring).

    status: "" when no bar is applied (``learning`` is None), "learned" when every run passed it,
    "not learned" when any run failed it (note: the bar each failed, with its numbers), "not judged"
    when no run failed but some could not be judged (no floor) or there is no run.
    """
    if learning is None:
        return "", ""
    sub = learning[(learning["task"] == task) & (learning["mechanism"] == mech)]
    if sub.empty:
        return "not judged", "learning bar not judged: no run"
    learned = sub["learned"].astype("boolean")
    failed = sub[learned.fillna(True) == False]  # noqa: E712 (NA is not a failure)
    if len(failed):
        return "not learned", "; ".join(failed_bar_note(r) for _, r in failed.iterrows())
    if learned.isna().any():
        why = sorted(set(sub.loc[learned.isna(), "note"].fillna("").replace("", "no floor")))
        return "not judged", f"learning bar not judged: {', '.join(why)}"
    return "learned", ""


def _judged(claim: Claim, status: tuple[str, str]) -> Claim:
    """The claim with the learning bar applied: untestable if a run failed it, else a note if not judged."""
    state, note = status
    if state == "not learned":
        claim.verdict = UNTESTABLE
    if state in ("not learned", "not judged"):
        claim.note = note + (f"; {claim.note}" if claim.note else "")
    return claim


def _aggregate(finding: str, mech: str, parts: dict[str, Claim]) -> Claim:
    """The aggregate row over the algorithmic tasks with data (task -> its claim); untestable
    tasks are left out, and those whose learning bar was not judged are named."""
    untestable = [t for t, c in parts.items() if c.verdict == UNTESTABLE]
    testable = [c.verdict for c in parts.values() if c.verdict != UNTESTABLE]
    not_judged = [t for t, c in parts.items() if c.note.startswith("learning bar not judged")]
    verdict = aggregate_verdict(testable)
    if untestable and not testable:
        verdict = UNTESTABLE
    notes = [] if parts else ["data missing"]
    if untestable:
        notes.append(f"left out, not learned: {', '.join(untestable)}")
    if not_judged:
        notes.append(f"learning bar not judged: {', '.join(not_judged)}")
    kind = "testable algorithmic tasks" if untestable else "algorithmic tasks with data"
    return Claim(finding, f"tasks reproduced, of {len(testable)} {kind}", TASK_FRACTION,
                 f"reproduced on >= {TASK_FRACTION:.2f} of tasks", float(testable.count("reproduced")), verdict,
                 scope=f"all / {mech}", note="; ".join(notes))


def alignment_claims(alignment: pd.DataFrame | None, learning: pd.DataFrame | None = None) -> list[Claim]:
    finding = "Alignment: compute correlates with ground-truth token complexity (no difficulty labels)"
    out = []
    for mech in ALIGN_MECHANISMS:
        parts = {}
        for task in _tasks(alignment):
            r = _rows(alignment, task, mech)
            if r is None:
                continue
            v = interval_verdict(_f(r["rho"]), _f(r["rho_lo"]), _f(r["rho_hi"]), ALIGN_RHO_MIN, ALIGN_CI_LO_MIN)
            note = "depth constant (rho := 0)" if bool(r.get("depth_constant", False)) else ""
            c = _judged(Claim(finding, "Spearman rho(depth, difficulty), in-range tokens", ALIGN_RHO_MIN,
                              f"rho > {ALIGN_RHO_MIN} and CI low > {ALIGN_CI_LO_MIN}", _f(r["rho"]), v,
                              _f(r["rho_lo"]), _f(r["rho_hi"]), f"{task} / {mech}", note),
                        learning_status(learning, task, mech))
            out.append(c)
            parts[task] = c
        out.append(_aggregate(finding, mech, parts))
    return out


def extrapolation_claims(extrapolation: pd.DataFrame | None, learning: pd.DataFrame | None = None) -> list[Claim]:
    finding = "No extrapolation: beyond training sizes, more compute but accuracy collapses"
    out = []
    for mech in EXTRAP_MECHANISMS:
        parts = {}
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
            c = _judged(Claim(finding, "accuracy drop in-range - out-of-range (fraction)", EXTRAP_ACC_DROP_MIN,
                              f"drop CI low > {EXTRAP_ACC_DROP_MIN} and depth increase CI low >= "
                              f"{EXTRAP_DEPTH_INCREASE_MIN}", _f(r["acc_drop"]), v, _f(r["acc_drop_lo"]),
                              _f(r["acc_drop_hi"]), f"{task} / {mech}", note),
                        learning_status(learning, task, mech))
            out.append(c)
            parts[task] = c
        out.append(_aggregate(finding, mech, parts))
    return out


def timing_claims(timing: pd.DataFrame | None, learning: pd.DataFrame | None = None) -> list[Claim]:
    out = []
    for mech, sign, finding in (
            ("early", -1.0, "Decision timing: early (E) depth explained more by static structure than by dynamic state"),
            ("online", 1.0, "Decision timing: online (O) depth explained more by dynamic state than by static structure")):
        r = _rows(timing, TIMING_TASK, mech)
        stat = "R^2_dynamic - R^2_static (= unique dynamic - unique static), cross-validated"
        comp = (f"d < -{TIMING_MARGIN} by CI" if sign < 0 else f"d > {TIMING_MARGIN} by CI")
        status = learning_status(learning, TIMING_TASK, mech)
        if r is None:
            out.append(_judged(Claim(finding, stat, TIMING_MARGIN, comp, float("nan"), "inconclusive",
                                     scope=f"{TIMING_TASK} / {mech}", note="data missing"), status))
            continue
        d, lo, hi = _f(r["dynamic_minus_static"]), _f(r["dynamic_minus_static_lo"]), _f(r["dynamic_minus_static_hi"])
        # test sign * d > margin; for early, flip the interval
        s_lo, s_hi = (lo, hi) if sign > 0 else (-hi, -lo)
        v = interval_verdict(sign * d, s_lo, s_hi, TIMING_MARGIN)
        tot = _f(r["r2_both"])
        note = f"total R^2 = {tot:.3f}, size alone R^2 = {_f(r.get('r2_size')):.3f}"
        if not np.isfinite(tot):  # timing_decomposition skips every run whose depth is constant
            v, note = "inconclusive", "depth constant in every run: no depth variance to explain (R^2 undefined)"
        elif tot < TIMING_MIN_R2:
            v, note = "inconclusive", f"total R^2 = {tot:.3f} < {TIMING_MIN_R2}: no allocation signal to attribute"
        out.append(_judged(Claim(finding, stat, TIMING_MARGIN, comp, d, v, lo, hi, f"{TIMING_TASK} / {mech}", note),
                           status))
    return out


def evaluate_claims(alignment: pd.DataFrame | None = None, extrapolation: pd.DataFrame | None = None,
                    timing: pd.DataFrame | None = None, learning: pd.DataFrame | None = None) -> list[Claim]:
    """All claims from the tables of ``alignment_table``, ``extrapolation_table`` and
    ``timing_decomposition`` (None -> that claim is 'inconclusive', data missing), with the learning
    bar of ``learning_table`` applied (None -> no bar: verdicts as if every run had learned)."""
    return (alignment_claims(alignment, learning) + extrapolation_claims(extrapolation, learning)
            + timing_claims(timing, learning))


def claim_inputs(records: pd.DataFrame, boot=None, n_splits: int = 5,
                 timing_model: str = "linear") -> dict[str, pd.DataFrame | None]:
    """The three tables ``evaluate_claims`` reads, computed from per-token records.

    Uses the mechanisms the claims are about (ALIGN_MECHANISMS, EXTRAP_MECHANISMS) on the
    ALGORITHMIC_TASKS, and TIMING_TASK for timing with the task's default static/dynamic feature
    sets. Records must hold one configuration per task x mechanism (filter a beta sweep first).
    A table without data is None (its claims become 'inconclusive: data missing'). "learning" is
    ``learning_table`` over every run of the records (fixed runs included, for reading beside the
    claims; the claims consult only the rows of their own task x mechanism).
    Returns {"alignment": ..., "extrapolation": ..., "timing": ..., "learning": ...}.
    """
    from anira.analysis._stats import select
    from anira.analysis.alignment import alignment_table
    from anira.analysis.generalization import extrapolation_table
    from anira.analysis.learning import learning_table
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
        "learning": learning_table(records) if len(records) else None,
    }


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim, columns in Claim field order."""
    return pd.DataFrame([asdict(c) for c in claims])


def thresholds() -> dict[str, float | str | tuple]:
    """The fixed thresholds, for printing beside the claims table."""
    return dict(ALGORITHMIC_TASKS=ALGORITHMIC_TASKS, ALIGN_MECHANISMS=ALIGN_MECHANISMS, ALIGN_RHO_MIN=ALIGN_RHO_MIN,
                ALIGN_CI_LO_MIN=ALIGN_CI_LO_MIN, EXTRAP_ACC_DROP_MIN=EXTRAP_ACC_DROP_MIN,
                EXTRAP_DEPTH_INCREASE_MIN=EXTRAP_DEPTH_INCREASE_MIN, TIMING_TASK=TIMING_TASK,
                TIMING_MARGIN=TIMING_MARGIN, TIMING_MIN_R2=TIMING_MIN_R2, TASK_FRACTION=TASK_FRACTION,
                LEARN_FLOOR_GAP=LEARN_FLOOR_GAP)


__all__ = ["Claim", "evaluate_claims", "claim_inputs", "claims_table", "thresholds", "interval_verdict", "aggregate_verdict",
           "combine_all", "alignment_claims", "extrapolation_claims", "timing_claims", "learning_status", "VERDICTS",
           "UNTESTABLE", "LEARN_FLOOR_GAP",
           "ALGORITHMIC_TASKS", "ALIGN_MECHANISMS", "ALIGN_RHO_MIN", "ALIGN_CI_LO_MIN", "EXTRAP_MECHANISMS",
           "EXTRAP_ACC_DROP_MIN", "EXTRAP_DEPTH_INCREASE_MIN", "TIMING_TASK", "TIMING_MARGIN", "TIMING_MIN_R2",
           "TASK_FRACTION"]
