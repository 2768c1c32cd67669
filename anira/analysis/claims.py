"""Notebook 07: each finding of the paper, the statistic that tests it, a threshold fixed in
advance, the value measured, and a verdict: "reproduced", "not reproduced", "inconclusive",
"untestable (not learned)", "untestable (no room to allocate)", for decision timing "untestable (no
depth variance)", or, for extrapolation, "untestable (set not certified)" (``anira.data.certify``:
the out-of-range set does not need more steps than training).

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
Claim 3, decision timing (``timing_decomposition`` with the tasks' feature tables), for each
algorithmic task and each mechanism in TIMING_DIRECTION (early: static explains more; online:
dynamic explains more), linear model as in the paper:
    d = R^2_dynamic - R^2_static (= unique dynamic - unique static), progress apart (on neither side);
    d_adverse = the same with the progress features on the side the claim argues against (early:
    with the dynamic features; online: with the static ones), so a counter of output progress
    cannot carry the verdict.
    untestable (no depth variance)  the depth's SD (mean over seeds, in-range tokens) < TIMING_MIN_DEPTH_SD
    inconclusive                 total R^2 (static + dynamic) < TIMING_MIN_R2: nothing to attribute
    reproduced                   sign * d > TIMING_MARGIN by its CI, and sign * d_adverse too
    not reproduced               the CI of sign * d lies entirely below the margin
    inconclusive                 otherwise (the CI straddles it, or only d_adverse fails).
    The note gives the unique parts, size alone's R^2 (beside the paper's ~0.28 for early), both
    progress variants and the seed spread.
  Sanity rows, per task: ``oracle`` (depth = f(difficulty) only; label on neither side): the rule
  predicts the label's own decomposition (``timing.rule_prediction``); "as predicted" when d and the
  total R^2 are within SANITY_TOL of it. ``random`` (depth independent of the token): the rule
  predicts total R^2 (every class) < TIMING_MIN_R2 and neither direction reproduced. A sanity row
  whose depth is constant is "untestable (no depth variance)".
Claim 4, language (``language_claims``; the task where difficulty and surprise come apart), for
early and online: depth follows complexity (the facts an answer needs) rather than surprise. The
alignment rule on rho(depth, complexity), and, with every surprise source (the reference model's
loss, the model's own, the generator's entropy), the regression of depth on both standardised must
attribute depth to complexity (``alignment.complexity_surprise_regression``: "follows complexity").
Sanity rows: oracle must come out "complexity", random "neither". (This rule was added after the
third study's language tables were first drawn; it reuses the alignment threshold and a zero margin,
and no other value was tried.)
Aggregate rows (per mechanism over the algorithmic tasks with a testable row, T of them):
    value = fraction of the T tasks reproduced; reproduced if it is >= TASK_FRACTION, not
    reproduced if even the inconclusive tasks could not lift it there, inconclusive otherwise
    (need = ceil(TASK_FRACTION * T)). Statistic and threshold are both fractions.
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
Room to allocate (the same table's ``room`` and ``depth_varies``, see ``learning``), applied after
the learning bar to the rows of early and online:
    no room      a run's in-range answer depth > ROOM_MAX_FRACTION (0.85) x max_depth, pinned near the
                 ceiling: alignment, extrapolation and timing rows read NO_ROOM, "untestable (no
                 room to allocate)" (depth cannot follow difficulty, nor grow out of range).
    no variance  room, but the depth's SD < MIN_DEPTH_SD (0.2): compute saved uniformly. Alignment
                 is then a real "not reproduced" (never "reproduced"); timing is "untestable (no
                 depth variance)" (nothing to explain).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from anira.analysis.learning import LEARN_FLOOR_GAP, MIN_DEPTH_SD, ROOM_MAX_FRACTION, failed_bar_note
from anira.analysis.timing import PAPER_R2_SIZE_EARLY
from anira.config import ADAPTIVE

ALGORITHMIC_TASKS = ("hops", "toposort", "addition")  # tasks the alignment / extrapolation claims are about
ALIGN_MECHANISMS = ADAPTIVE  # the paper's two learned allocations
ALIGN_RHO_MIN = 0.3  # a "moderate" monotone association (Cohen-style convention for correlations)
ALIGN_CI_LO_MIN = 0.0  # and it must be positive beyond sampling noise
EXTRAP_MECHANISMS = ADAPTIVE
EXTRAP_ACC_DROP_MIN = 0.20  # "accuracy collapses": at least 20 accuracy points lost out of range
EXTRAP_DEPTH_INCREASE_MIN = 0.0  # "allocate more compute": out-of-range mean depth >= in-range
TIMING_DIRECTION = {"early": -1.0, "online": 1.0}  # the paper: E static (d < 0), O dynamic (d > 0)
TIMING_SANITY = ("oracle", "random")  # controls whose timing rows the rule predicts
TIMING_MARGIN = 0.0  # d = R^2_dyn - R^2_stat must be beyond this margin, by its CI
TIMING_MIN_R2 = 0.05  # below this total R^2 there is no allocation signal to attribute
# An integer depth whose one-step deviations from its mode touch fewer than ~4% of tokens has an SD
# below 0.2 (sqrt(p (1 - p)) < 0.2 for p < 0.042): effectively constant, too little variance for a
# decomposition over 5-10 features. Set with the rule, before this rule was run on any study (the
# second cpu study's toposort runs were known to be near-constant: online SD 0.08).
TIMING_MIN_DEPTH_SD = MIN_DEPTH_SD  # 0.2, one constant with the learning table's depth_varies
# Language (added with the third study's language runs, after its tables were first drawn; no other
# value was tried): the alignment threshold above, reused, and a zero margin as for timing
LANGUAGE_TASK = "language"
LANGUAGE_MECHANISMS = ADAPTIVE
LANGUAGE_MARGIN = 0.0  # beta_complexity - beta_surprise (standardised) must be above this by its CI
LANGUAGE_SANITY = {"oracle": "complexity", "random": "neither"}  # what the rule must give the controls
SANITY_TOL = 0.02  # oracle: d and total R^2 within this of the label's own decomposition
TASK_FRACTION = 2 / 3  # aggregate rule: reproduced on >= 2/3 of the algorithmic tasks with data

UNTESTABLE = "untestable (not learned)"  # a run of the row's task x mechanism failed the learning bar
NO_ROOM = "untestable (no room to allocate)"  # an adaptive run pinned near max depth (learning.room)
DEPTH_CONSTANT = "untestable (no depth variance)"  # timing: no depth variance to explain
NOT_CERTIFIED = "untestable (set not certified)"  # extrapolation: the out-of-range set needs no more steps
UNTESTABLE_MIXED = "untestable (several reasons)"  # an aggregate whose tasks are untestable for different reasons
VERDICTS = ("reproduced", "not reproduced", "inconclusive", UNTESTABLE, NO_ROOM, DEPTH_CONSTANT, NOT_CERTIFIED,
            UNTESTABLE_MIXED)
_UNTESTABLE_KINDS = ((UNTESTABLE, "not learned"), (NO_ROOM, "no room to allocate"),
                     (DEPTH_CONSTANT, "no depth variance"), (NOT_CERTIFIED, "out-of-range set not certified"))
SANITY_VERDICTS = ("as predicted", "not as predicted", DEPTH_CONSTANT)  # the timing sanity rows


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


def depth_status(learning: pd.DataFrame | None, task: str, mech: str) -> tuple[str, str]:
    """(status, note) of the room-to-allocate bars for one task x mechanism: "no room" when any run
    is pinned near max depth, else "no variance" when any run's depth does not vary, else "" (also
    without a learning table, or where the table has no depth columns)."""
    if learning is None or "room" not in learning.columns:
        return "", ""
    sub = learning[(learning["task"] == task) & (learning["mechanism"] == mech)]
    pinned = sub[sub["room"].astype("boolean").fillna(True) == False]  # noqa: E712
    if len(pinned):
        return "no room", "; ".join(
            f"{r['mechanism']} seed {r['seed']}: answer depth {r['depth_mean']:.2f} > {ROOM_MAX_FRACTION} x "
            f"max depth {int(r['max_depth'])}" for _, r in pinned.iterrows())
    flat = sub[sub["depth_varies"].astype("boolean").fillna(True) == False]  # noqa: E712
    if len(flat):
        return "no variance", "; ".join(
            f"{r['mechanism']} seed {r['seed']}: answer depth {r['depth_mean']:.2f}, SD {r['depth_sd']:.3f} < "
            f"{MIN_DEPTH_SD} (compute saved uniformly)" for _, r in flat.iterrows())
    return "", ""


def _room(claim: Claim, status: tuple[str, str], no_variance: str | None) -> Claim:
    """The claim with the room bars applied after the learning bar: NO_ROOM when pinned; when the
    depth does not vary, ``no_variance`` (a verdict) replaces the verdict (None: kept as it is)."""
    state, note = status
    if claim.verdict == UNTESTABLE or not state:
        return claim
    if state == "no room":
        claim.verdict = NO_ROOM
    elif no_variance is not None:
        claim.verdict = no_variance
    claim.note = note + (f"; {claim.note}" if claim.note else "")
    return claim


def _aggregate(finding: str, mech: str, parts: dict[str, Claim]) -> Claim:
    """The aggregate row over the algorithmic tasks with data (task -> its claim): the fraction of
    the testable ones reproduced against TASK_FRACTION; untestable tasks are left out, and those
    whose learning bar was not judged are named."""
    kinds_all = [k for k, _ in _UNTESTABLE_KINDS]
    untestable = [t for t, c in parts.items() if c.verdict in kinds_all]
    testable = [c.verdict for c in parts.values() if c.verdict not in kinds_all]
    not_judged = [t for t, c in parts.items() if c.note.startswith("learning bar not judged")]
    verdict = aggregate_verdict(testable)
    if untestable and not testable:
        kinds = {parts[t].verdict for t in untestable}
        verdict = kinds.pop() if len(kinds) == 1 else UNTESTABLE_MIXED  # the note names each task's reason
    notes = [] if parts else ["data missing"]
    for kind, why in _UNTESTABLE_KINDS:
        left = [t for t in untestable if parts[t].verdict == kind]
        if left:
            notes.append(f"left out, {why}: {', '.join(left)}")
    if not_judged:
        notes.append(f"learning bar not judged: {', '.join(not_judged)}")
    if testable:
        notes.append(f"{testable.count('reproduced')} of {len(testable)} reproduced")
    kind = "testable algorithmic tasks" if untestable else "algorithmic tasks with data"
    value = testable.count("reproduced") / len(testable) if testable else float("nan")
    return Claim(finding, f"fraction of the {len(testable)} {kind} reproduced", TASK_FRACTION,
                 f"fraction >= {TASK_FRACTION:.3f}", value, verdict, scope=f"all / {mech}", note="; ".join(notes))


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
            c = _room(c, depth_status(learning, task, mech), "not reproduced")
            out.append(c)
            parts[task] = c
        out.append(_aggregate(finding, mech, parts))
    return out


def extrapolation_claims(extrapolation: pd.DataFrame | None, learning: pd.DataFrame | None = None,
                         certificates: dict[str, dict] | None = None) -> list[Claim]:
    """Per task x mechanism on the tokens of ``beyond_training``. ``certificates`` (task ->
    ``anira.data.certify`` of the sets the records were scored on): a task whose out-of-range set is
    not certified to need more steps than training is NOT_CERTIFIED (a model that "extrapolates"
    there may only have used a shortcut); None = not checked (the note says so)."""
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
            room = depth_status(learning, task, mech)
            c = _room(c, room if room[0] == "no room" else ("", ""), None)
            if room[0] == "no variance" and c.verdict == "reproduced" and not _f(r["depth_increase_lo"]) > 0:
                # compute saved uniformly and no more of it out of range: "more compute" holds only
                # with equality (a constant depth in and out), so the row is not a reproduction
                c.verdict = DEPTH_CONSTANT
                c.note = f"{room[1]}; not more depth out of range; {c.note}"
            cert = (certificates or {}).get(task)
            if cert is None:
                c.note += "; out-of-range set not certified (no certificate given)"
            elif not cert["certified"] and c.verdict not in (UNTESTABLE, NO_ROOM):
                c.verdict = NOT_CERTIFIED
                c.note = (f"bounded reader with k = {cert['k']}: {cert['beyond_reader']:.3f} on the "
                          f"{cert['n_beyond']} out-of-range tokens needing more (bar {cert['floor_bar']}), "
                          f"{cert['beyond_solved']:.3f} solved by a shortcut; {c.note}")
            out.append(c)
            parts[task] = c
        out.append(_aggregate(finding, mech, parts))
    return out


def _timing_tasks(timing: pd.DataFrame | None) -> list[str]:
    return _tasks(timing)


def _side_name(sign: float) -> str:
    return "static" if sign < 0 else "dynamic"


def timing_rule(r: pd.Series, sign: float) -> tuple[str, str]:
    """(verdict, note) of one timing row in the direction ``sign`` (-1: static explains more, +1:
    dynamic explains more), by the rule of the module docstring."""
    depth_sd, tot = _f(r.get("depth_sd")), _f(r.get("r2_both"))
    if np.isfinite(depth_sd) and depth_sd < TIMING_MIN_DEPTH_SD or not np.isfinite(tot):
        return DEPTH_CONSTANT, (f"depth SD = {depth_sd:.3f} < {TIMING_MIN_DEPTH_SD}: no depth variance to explain"
                                if np.isfinite(depth_sd) else "depth constant in every run: no depth variance to explain")
    d, lo, hi = _f(r["dynamic_minus_static"]), _f(r["dynamic_minus_static_lo"]), _f(r["dynamic_minus_static_hi"])
    adv = "_pd" if sign < 0 else "_ps"  # progress joins the side the claim argues against
    da, dal, dah = (_f(r.get(f"dynamic_minus_static{adv}{x}")) for x in ("", "_lo", "_hi"))
    parts = (f"R^2 static {_f(r['r2_static']):.3f}, dynamic {_f(r['r2_dynamic']):.3f}, progress "
             f"{_f(r.get('r2_progress')):.3f}, static+dynamic {tot:.3f}; unique static {_f(r['unique_static']):.3f}, "
             f"unique dynamic {_f(r['unique_dynamic']):.3f}, shared {_f(r['shared']):.3f}; size alone "
             f"{_f(r.get('r2_size')):.3f}; with progress static-side d = {_f(r.get('dynamic_minus_static_ps')):.3f}, "
             f"dynamic-side d = {_f(r.get('dynamic_minus_static_pd')):.3f}; depth SD {depth_sd:.2f}")
    sd = _f(r.get("dynamic_minus_static_seed_sd"))
    if np.isfinite(sd):
        parts += f"; seed SD of d {sd:.3f}"
    if tot < TIMING_MIN_R2:
        return "inconclusive", f"total R^2 = {tot:.3f} < {TIMING_MIN_R2}: no allocation signal to attribute; {parts}"
    s_lo, s_hi = (lo, hi) if sign > 0 else (-hi, -lo)
    v = interval_verdict(sign * d, s_lo, s_hi, TIMING_MARGIN)
    if v == "reproduced" and np.isfinite(da):
        a_lo, a_hi = (dal, dah) if sign > 0 else (-dah, -dal)
        if interval_verdict(sign * da, a_lo, a_hi, TIMING_MARGIN) != "reproduced":
            other = _side_name(-sign)
            return "inconclusive", (f"progress decides it: with progress on the {other} side d = {da:.3f} "
                                    f"[{dal:.3f}, {dah:.3f}]; {parts}")
    return v, parts


def timing_claims(timing: pd.DataFrame | None, learning: pd.DataFrame | None = None,
                  prediction: pd.DataFrame | None = None) -> list[Claim]:
    """Per task and mechanism (TIMING_DIRECTION), an aggregate per mechanism, and the sanity rows
    of TIMING_SANITY beside them (``prediction``: ``timing.rule_prediction``; None = the oracle's
    prediction is missing)."""
    out = []
    stat = "R^2_dynamic - R^2_static (progress apart), cross-validated linear"
    tasks = _timing_tasks(timing) or list(ALGORITHMIC_TASKS)
    for mech, sign in TIMING_DIRECTION.items():
        finding = (f"Decision timing: {mech} ({'E' if mech == 'early' else 'O'}) depth explained more by "
                   + ("static structure than by dynamic state" if sign < 0 else "dynamic state than by static structure"))
        comp = f"d {'<' if sign < 0 else '>'} {'-' if sign < 0 else ''}{TIMING_MARGIN} by CI, also with progress on the {_side_name(-sign)} side"
        parts = {}
        for task in tasks:
            r = _rows(timing, task, mech)
            status = learning_status(learning, task, mech)
            if r is None:
                c = Claim(finding, stat, TIMING_MARGIN, comp, float("nan"), "inconclusive", scope=f"{task} / {mech}",
                          note="data missing")
            else:
                v, note = timing_rule(r, sign)
                lab = _rows(prediction, task, "oracle")
                if lab is not None and v != DEPTH_CONSTANT:  # what a depth that follows the label would give
                    note += f"; the label's own d = {_f(lab['dynamic_minus_static']):.3f}"
                if mech == "early" and v != DEPTH_CONSTANT:
                    note += f"; paper: size alone ~{PAPER_R2_SIZE_EARLY:.2f} for E"
                c = Claim(finding, stat, TIMING_MARGIN, comp, _f(r["dynamic_minus_static"]), v,
                          _f(r["dynamic_minus_static_lo"]), _f(r["dynamic_minus_static_hi"]), f"{task} / {mech}", note)
            c = _judged(c, status)
            if r is not None:
                c = _room(c, depth_status(learning, task, mech), DEPTH_CONSTANT)
            out.append(c)
            if r is not None:
                parts[task] = c
        out.append(_aggregate(finding, mech, parts))
    out += timing_sanity(timing, prediction, tasks)
    return out


def timing_sanity(timing: pd.DataFrame | None, prediction: pd.DataFrame | None, tasks: Sequence[str]) -> list[Claim]:
    """The sanity rows: what the rule predicts for ``oracle`` and ``random`` beside what came out."""
    out = []
    for mech in TIMING_SANITY:
        for task in tasks:
            r = _rows(timing, task, mech)
            if r is None:
                continue
            scope = f"{task} / {mech}"
            rules = {s: timing_rule(r, sign)[0] for s, sign in (("E", -1.0), ("O", 1.0))}
            said = f"claim rule: E direction {rules['E']}, O direction {rules['O']}"
            if rules["E"] == DEPTH_CONSTANT:
                out.append(Claim(f"Decision timing sanity: {mech}", "d (progress apart)", float("nan"), "as predicted",
                                 float("nan"), DEPTH_CONSTANT, scope=scope,
                                 note=f"depth SD = {_f(r.get('depth_sd')):.3f} < {TIMING_MIN_DEPTH_SD}"))
                continue
            d, tot, all_ = _f(r["dynamic_minus_static"]), _f(r["r2_both"]), _f(r.get("r2_all"))
            if mech == "oracle":
                p = _rows(prediction, task, mech)
                if p is None:
                    out.append(Claim("Decision timing sanity: oracle = the label's own decomposition", "d (progress apart)",
                                     SANITY_TOL, f"|d - d_label| <= {SANITY_TOL}", d, "not as predicted",
                                     _f(r["dynamic_minus_static_lo"]), _f(r["dynamic_minus_static_hi"]), scope,
                                     note="prediction missing"))
                    continue
                pd_, ptot = _f(p["dynamic_minus_static"]), _f(p["r2_both"])
                ok = abs(d - pd_) <= SANITY_TOL and abs(tot - ptot) <= SANITY_TOL
                out.append(Claim("Decision timing sanity: oracle = the label's own decomposition", "d (progress apart)",
                                 SANITY_TOL, f"|d - d_label| and |R^2 - R^2_label| <= {SANITY_TOL}", d,
                                 "as predicted" if ok else "not as predicted", _f(r["dynamic_minus_static_lo"]),
                                 _f(r["dynamic_minus_static_hi"]), scope,
                                 note=f"predicted d = {pd_:.3f}, R^2 static+dynamic = {ptot:.3f}; came out R^2 = {tot:.3f}; "
                                      f"{said}"))
            else:
                ok = all_ < TIMING_MIN_R2 and "reproduced" not in rules.values()
                out.append(Claim("Decision timing sanity: random has nothing to explain", "R^2 of every class together",
                                 TIMING_MIN_R2, f"R^2 < {TIMING_MIN_R2} and no direction reproduced", all_,
                                 "as predicted" if ok else "not as predicted", _f(r.get("r2_all_lo")), _f(r.get("r2_all_hi")),
                                 scope, note=f"predicted R^2 = 0; d = {d:.3f}; {said}"))
    return out


def _language_rows(table: pd.DataFrame | None, mech: str) -> pd.DataFrame:
    if table is None or table.empty:
        return pd.DataFrame()
    return table[(table["task"] == LANGUAGE_TASK) & (table["mechanism"] == mech)].set_index("surprise_source")


def _language_note(rows: pd.DataFrame) -> str:
    def sd(x):
        return "" if pd.isna(x) else f" (seed SD {_f(x):.3f})"

    return "; ".join(
        f"{src}: beta_c {_f(r['beta_complexity']):.3f}{sd(r.get('beta_complexity_seed_sd'))}, "
        f"beta_s {_f(r['beta_surprise']):.3f}{sd(r.get('beta_surprise_seed_sd'))}, follows {r['follows']}"
        for src, r in rows.iterrows())


def language_claims(regression: pd.DataFrame | None, alignment: pd.DataFrame | None,
                    learning: pd.DataFrame | None = None) -> list[Claim]:
    """The language finding: depth follows the facts a token needs (complexity), not how
    unpredictable it is (surprise). Per mechanism in LANGUAGE_MECHANISMS, from
    ``complexity_surprise_regression`` with every surprise source (``regression``: their rows
    together) and ``alignment_table`` on the language task:
        reproduced      rho(depth, complexity) passes the alignment rule (ALIGN_RHO_MIN, CI low > 0) and
                        every surprise source "follows complexity" (beta_c CI > 0 and beta_c - beta_s
                        CI > LANGUAGE_MARGIN)
        not reproduced  rho's CI upper bound < ALIGN_RHO_MIN, or some source gives "surprise" or "neither"
        inconclusive    otherwise, or data missing.
    Value: beta_c - beta_s with the reference model's surprise. The learning and room bars apply as
    for alignment. Sanity rows: the rule must give ``oracle`` "complexity" and ``random`` "neither"
    with every source (LANGUAGE_SANITY)."""
    finding = "Language: compute follows complexity (facts needed), not surprise"
    stat = "beta_complexity - beta_surprise, depth on both standardised (reference surprise)"
    comp = (f"rho(depth, complexity) > {ALIGN_RHO_MIN}, CI low > {ALIGN_CI_LO_MIN}; every surprise source: "
            f"beta_c CI low > 0 and difference CI low > {LANGUAGE_MARGIN}")
    out = []
    for mech in LANGUAGE_MECHANISMS:
        rows, a = _language_rows(regression, mech), _rows(alignment, LANGUAGE_TASK, mech)
        if rows.empty or a is None:
            continue
        va = interval_verdict(_f(a["rho"]), _f(a["rho_lo"]), _f(a["rho_hi"]), ALIGN_RHO_MIN, ALIGN_CI_LO_MIN)
        follows = set(rows["follows"])
        if va == "not reproduced" or follows & {"surprise", "neither"}:
            v = "not reproduced"
        elif va == "reproduced" and follows == {"complexity"}:
            v = "reproduced"
        else:
            v = "inconclusive"
        ref = rows.loc["reference"] if "reference" in rows.index else rows.iloc[0]
        note = (f"rho(depth, complexity) = {_f(a['rho']):.3f} [{_f(a['rho_lo']):.3f}, {_f(a['rho_hi']):.3f}] ({va}); "
                + _language_note(rows))
        c = _judged(Claim(finding, stat, LANGUAGE_MARGIN, comp, _f(ref["beta_diff"]), v, _f(ref["beta_diff_lo"]),
                          _f(ref["beta_diff_hi"]), f"{LANGUAGE_TASK} / {mech}", note),
                    learning_status(learning, LANGUAGE_TASK, mech))
        out.append(_room(c, depth_status(learning, LANGUAGE_TASK, mech), "not reproduced"))
    for mech, predicted in LANGUAGE_SANITY.items():
        rows = _language_rows(regression, mech)
        if rows.empty:
            continue
        ok = set(rows["follows"]) == {predicted}
        ref = rows.loc["reference"] if "reference" in rows.index else rows.iloc[0]
        out.append(Claim(f"Language sanity: {mech} follows {predicted}", stat, LANGUAGE_MARGIN,
                         f"the rule gives '{predicted}' with every surprise source", _f(ref["beta_diff"]),
                         "as predicted" if ok else "not as predicted", _f(ref["beta_diff_lo"]),
                         _f(ref["beta_diff_hi"]), f"{LANGUAGE_TASK} / {mech}", _language_note(rows)))
    return out


def evaluate_claims(alignment: pd.DataFrame | None = None, extrapolation: pd.DataFrame | None = None,
                    timing: pd.DataFrame | None = None, learning: pd.DataFrame | None = None,
                    timing_prediction: pd.DataFrame | None = None,
                    certificates: dict[str, dict] | None = None, language: pd.DataFrame | None = None,
                    language_alignment: pd.DataFrame | None = None) -> list[Claim]:
    """All claims from the tables of ``alignment_table``, ``extrapolation_table`` and
    ``timing_decomposition`` (None -> that claim is 'inconclusive', data missing), with the learning
    bar of ``learning_table`` applied (None -> no bar: verdicts as if every run had learned), and the
    timing sanity rows judged against ``timing_prediction`` (``timing.rule_prediction``); the
    language rows (``language_claims``) where ``language`` (the regression with every surprise
    source) and ``language_alignment`` are given, none otherwise."""
    return (alignment_claims(alignment, learning) + extrapolation_claims(extrapolation, learning, certificates)
            + timing_claims(timing, learning, timing_prediction)
            + language_claims(language, language_alignment, learning))


def claim_inputs(records: pd.DataFrame, boot=None, n_splits: int = 5,
                 timing_model: str = "linear", certify: bool = True) -> dict[str, pd.DataFrame | None]:
    """The three tables ``evaluate_claims`` reads, computed from per-token records.

    Uses the mechanisms the claims are about (ALIGN_MECHANISMS, EXTRAP_MECHANISMS) on the
    ALGORITHMIC_TASKS; timing uses those tasks' feature tables, for the TIMING_DIRECTION mechanisms
    and the TIMING_SANITY controls, with the rule's prediction for the controls. Records must hold one configuration per task x mechanism (filter a beta sweep first).
    A table without data is None (its claims become 'inconclusive: data missing'). "learning" is
    ``learning_table`` over every run of the records (fixed runs included, for reading beside the
    claims; the claims consult only the rows of their own task x mechanism).
    "certificates" is ``anira.data.certify`` of each task's frozen sets (those under ``ANIRA_DATA``:
    the sets the records were scored on, which the driver checks), or None with ``certify=False``.
    "language" / "language_alignment": the language task's regression with every surprise source and
    its alignment table (None without language runs).
    Returns {"alignment": ..., "extrapolation": ..., "timing": ..., "learning": ..., "timing_prediction": ...,
    "certificates": ..., "language": ..., "language_alignment": ...}.
    """
    from anira import data
    from anira.analysis._stats import select
    from anira.analysis.alignment import SURPRISE_SOURCES, alignment_table, complexity_surprise_regression
    from anira.analysis.generalization import extrapolation_table
    from anira.analysis.learning import learning_table
    from anira.analysis.timing import rule_prediction, timing_decomposition

    def part(mechanisms, tasks):
        return select(records, split=None, eval_depth=None, mechanism=list(mechanisms), task=list(tasks))

    al = part(ALIGN_MECHANISMS, ALGORITHMIC_TASKS)
    ex = part(EXTRAP_MECHANISMS, ALGORITHMIC_TASKS)
    tm = part(tuple(TIMING_DIRECTION) + TIMING_SANITY, ALGORITHMIC_TASKS)
    lang = select(records, split=None, eval_depth=None, task=LANGUAGE_TASK)
    lang_mechs = tuple(m for m in LANGUAGE_MECHANISMS + tuple(LANGUAGE_SANITY) if m in set(lang["mechanism"]))
    lang_adaptive = lang[lang["mechanism"].isin(LANGUAGE_MECHANISMS)]
    # the generator's entropy needs the generator's columns (records of the language task have them);
    # without a fixed reference run "reference" falls back to the model's own loss (dropped as a repeat)
    sources = [s for s in SURPRISE_SOURCES if s != "generator" or {"uniform", "n_branching"} <= set(lang.columns)]
    return {
        "alignment": alignment_table(al, boot=boot) if len(al) else None,
        "extrapolation": extrapolation_table(ex, boot=boot) if len(ex) else None,
        "timing": timing_decomposition(tm, model=timing_model, n_splits=n_splits, boot=boot) if len(tm) else None,
        "learning": learning_table(records) if len(records) else None,
        "timing_prediction": rule_prediction(tm, model=timing_model, n_splits=n_splits, boot=boot) if len(tm) else None,
        "certificates": ({t: data.certify(t) for t in sorted(set(ex["task"]))} if certify and len(ex) else None),
        "language": (pd.concat([complexity_surprise_regression(lang, mechanisms=lang_mechs, surprise=s, boot=boot)
                                for s in sources], ignore_index=True)
                     .drop_duplicates(["mechanism", "surprise_source"]) if lang_mechs else None),
        "language_alignment": alignment_table(lang_adaptive, boot=boot) if len(lang_adaptive) else None,
    }


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim, columns in Claim field order."""
    return pd.DataFrame([asdict(c) for c in claims])


def thresholds() -> dict[str, float | str | tuple]:
    """The fixed thresholds, for printing beside the claims table."""
    return dict(ALGORITHMIC_TASKS=ALGORITHMIC_TASKS, ALIGN_MECHANISMS=ALIGN_MECHANISMS, ALIGN_RHO_MIN=ALIGN_RHO_MIN,
                ALIGN_CI_LO_MIN=ALIGN_CI_LO_MIN, EXTRAP_ACC_DROP_MIN=EXTRAP_ACC_DROP_MIN,
                EXTRAP_DEPTH_INCREASE_MIN=EXTRAP_DEPTH_INCREASE_MIN, TIMING_DIRECTION=TIMING_DIRECTION,
                TIMING_MARGIN=TIMING_MARGIN, TIMING_MIN_R2=TIMING_MIN_R2, TIMING_MIN_DEPTH_SD=TIMING_MIN_DEPTH_SD,
                SANITY_TOL=SANITY_TOL, TASK_FRACTION=TASK_FRACTION, LANGUAGE_MARGIN=LANGUAGE_MARGIN,
                LEARN_FLOOR_GAP=LEARN_FLOOR_GAP, ROOM_MAX_FRACTION=ROOM_MAX_FRACTION, MIN_DEPTH_SD=MIN_DEPTH_SD)


__all__ = ["Claim", "evaluate_claims", "claim_inputs", "claims_table", "thresholds", "interval_verdict", "aggregate_verdict",
           "combine_all", "alignment_claims", "extrapolation_claims", "timing_claims", "learning_status", "VERDICTS",
           "UNTESTABLE", "NO_ROOM", "UNTESTABLE_MIXED", "LEARN_FLOOR_GAP", "depth_status",
           "ALGORITHMIC_TASKS", "ALIGN_MECHANISMS", "ALIGN_RHO_MIN", "ALIGN_CI_LO_MIN", "EXTRAP_MECHANISMS",
           "EXTRAP_ACC_DROP_MIN", "EXTRAP_DEPTH_INCREASE_MIN", "TIMING_DIRECTION", "TIMING_SANITY", "TIMING_MARGIN",
           "TIMING_MIN_R2", "TIMING_MIN_DEPTH_SD", "SANITY_TOL", "TASK_FRACTION", "DEPTH_CONSTANT", "SANITY_VERDICTS",
           "timing_rule", "timing_sanity"]
