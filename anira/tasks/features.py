"""The rule that puts every recorded per-token feature in one class, and the features derived from
the records for the decision-timing analysis (notebook 05).

Finding 3 asks whether a mechanism's depth follows *static* structure or the *dynamic* state of
the task's algorithm, so the answer is only as good as the classes. Each task declares one
``Feature`` per recorded column (``Task.features``, next to its generator), with its class and the
reason, and ``docs/features.md`` is rendered from those tables (a test keeps it in step). The
classes, decided before the analysis is run:

    static    a function of the input alone, known before any output token is produced: size,
              edge count, degrees, hubs, the layout of the prompt. The mechanical test: for the
              same input, producing the outputs in another valid order leaves it unchanged for
              every output token (node, query, column).
    dynamic   the state of the task's reference algorithm at this output step, which changes as
              the output proceeds: frontier, newly enabled nodes, the execution's depth, remaining
              work, what earlier outputs revealed. Another output order changes it.
    progress  a counter of output progress (answers written, outputs remaining). A causal model
              sees the output written so far, so a shallow reader can count it, although it
              changes with the output: it is neither input structure nor state the algorithm must
              compute, so the decomposition reports it on each side and apart.
    label     the difficulty label and every column equal to it: on neither side (a column equal
              to the label would explain an aligned model by construction), reported separately.
    other     bookkeeping and sums of features of different classes (e.g. the sequence position
              = prompt length + output step): not used; the reason names the parts.

Where a feature is ambiguous, both versions are recorded and the reason says which is which (e.g.
``toposort``'s ``dfs_depth``, a node's depth in a fixed DFS forest of the input graph, is static;
``exec_depth``, the node's depth in the forest the reference algorithm's execution grows, is the
algorithm-state version).

Derived features are computed from a run's records (``with_derived_features``), so runs recorded
before a feature was declared are analysed with it too: from other columns of the same record, or
from the frozen evaluation example the record was scored on (the records' ``target`` tokens are
checked against it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

FEATURE_KINDS = {
    "static": "a function of the input alone, known before any output token; unchanged when the outputs come "
              "in another valid order",
    "dynamic": "the reference algorithm's state at this output step; changes as the output proceeds",
    "progress": "a counter of output progress (visible to a causal reader); reported on each side and apart",
    "label": "the difficulty label or a column equal to it: on neither side",
    "other": "bookkeeping, or a sum of features of different classes: not used",
}
TIMING_KINDS = ("static", "dynamic", "progress")  # the classes the decomposition uses


@dataclass(frozen=True)
class Feature:
    name: str  # the record column
    kind: str  # one of FEATURE_KINDS
    reason: str  # one line: why this class, by the rule above
    derived: str = ""  # how a derived feature is computed (empty: recorded by the generator)
    categorical: bool = False  # one-hot encoded in the decomposition (codes, not quantities)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind = {self.kind!r} is not allowed; allowed: {list(FEATURE_KINDS)}")
        if not self.reason:
            raise ValueError(f"feature {self.name!r}: give the reason for its class")


def common(size: str, position: str, is_answer: str = "1 on every scored token (bookkeeping)",
           difficulty: str = "the task's difficulty label", position_kind: str = "other") -> tuple[Feature, ...]:
    """The four columns every record carries, with the task's own reasons."""
    return (Feature("difficulty", "label", difficulty), Feature("size", "static", size),
            Feature("position", position_kind, position), Feature("is_answer", "other", is_answer))


# --- derived features ----------------------------------------------------------------------------
# Each takes one task's records and returns one value per row (NaN where it cannot be computed).

def hops_assign_pos(records: pd.DataFrame) -> pd.Series:
    """Prompt position of the queried variable's assignment: position = query position + 1 and
    distance = query position - assignment position, so assignment position = position - 1 - distance."""
    return records["position"] - 1 - records["distance"]


def addition_prefix_reveals(records: pd.DataFrame) -> pd.Series:
    """1 when the digit just written fixes the carry into this column: s_i = 9 with 1 <= i < n, which
    is exactly where open_chain is 0 and carry_chain is not (module docstring of `addition`)."""
    if "open_chain" not in records:
        return pd.Series(np.nan, index=records.index)
    return ((records["open_chain"] == 0) & (records["carry_chain"] > 0)).astype(float).where(
        records["open_chain"].notna())


def toposort_exec_depths(nodes: Sequence[str], edges: Sequence[tuple[str, str]], order: Sequence[str]) -> list[int]:
    """Per output step, the depth of the emitted node in the forest the reference algorithm grows:
    a node is released (enters the frontier) by the emission of its last pending predecessor, its
    parent; nodes available at the start are roots (depth 0):

        exec_depth(v) = 0                              if v has no predecessor
                      = 1 + exec_depth(last predecessor of v in ``order``)   otherwise.

    It depends on the order the outputs come in (another valid order can release v by another
    predecessor), unlike the structural ``dfs_depth`` and ``level``."""
    pred: dict[str, list[str]] = {v: [] for v in nodes}
    for a, b in edges:
        pred[b].append(a)
    step = {v: t for t, v in enumerate(order)}
    depth: dict[str, int] = {}
    for v in order:
        ps = pred[v]
        depth[v] = 0 if not ps else 1 + depth[max(ps, key=step.__getitem__)]
    return [depth[v] for v in order]


def toposort_exec_depth(records: pd.DataFrame) -> pd.Series:
    """``toposort_exec_depths`` of each record's evaluation example (frozen sets of ``anira.data``)."""
    from anira.tasks.toposort import ToposortTask

    def per_example(task, ex) -> dict[int, int]:
        nodes, edges, order = ToposortTask.parse(task.render(ex))
        return dict(zip(ex.scored, toposort_exec_depths(nodes, edges, order)))
    return _from_examples(records, "toposort", per_example)


def _from_examples(records: pd.DataFrame, task_name: str, per_example: Callable) -> pd.Series:
    """Values computed from the evaluation example of each record, joined on (split, example,
    position); NaN for a split whose examples do not match the records' targets (with a warning)."""
    from anira.analysis.io import eval_examples
    from anira.tasks import make_task

    task = make_task(task_name, range="train")
    out = pd.Series(np.nan, index=records.index, dtype=float)
    for split, sub in records.groupby("split", sort=False):
        exs = eval_examples(task_name, str(split))
        idx = sub["example"].to_numpy(dtype=int)
        pos = sub["position"].to_numpy(dtype=int)
        ok = (idx < len(exs)).all() and all(p < len(exs[i].tokens) for i, p in zip(idx, pos))
        if ok and "target" in sub:
            ok = all(exs[i].tokens[p] == t for i, p, t in zip(idx, pos, sub["target"].to_numpy(dtype=int)))
        if not ok:
            warnings.warn(f"{task_name}/{split}: the records' targets do not match the evaluation set's tokens "
                          f"(records from another evaluation set?); derived features left missing")
            continue
        cache: dict[int, dict[int, int]] = {}
        vals = np.empty(len(sub))
        for k, (i, p) in enumerate(zip(idx, pos)):
            if i not in cache:
                cache[i] = per_example(task, exs[i])
            vals[k] = cache[i][p]
        out.loc[sub.index] = vals
    return out


DERIVE: dict[tuple[str, str], Callable[[pd.DataFrame], pd.Series]] = {
    ("hops", "assign_pos"): hops_assign_pos,
    ("addition", "prefix_reveals"): addition_prefix_reveals,
    ("toposort", "exec_depth"): toposort_exec_depth,
}


def with_derived_features(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` plus the derived features of every task they hold (NaN on other tasks' rows and
    where a feature cannot be computed). Columns already present are kept as they are."""
    from anira.tasks import TASK_NAMES as TASKS, task_class

    if records.empty or "task" not in records:
        return records
    out = records.copy()
    for task in records["task"].unique():
        if task not in TASKS:
            continue
        rows = records["task"] == task
        for f in task_class(task).features:
            if not f.derived or f.name in records.columns and records.loc[rows, f.name].notna().any():
                continue
            try:
                vals = DERIVE[(task, f.name)](records.loc[rows]).to_numpy(dtype=float)
            except KeyError:  # records without the columns it is derived from (e.g. synthetic records)
                continue
            if f.name not in out:
                out[f.name] = np.nan
            out.loc[rows, f.name] = vals
    return out


# --- the docs page ---------------------------------------------------------------------------------

def features_markdown() -> str:
    """docs/features.md: the rule and one table per registered task (``python -m anira.tasks.features``
    writes it; tests/test_feature_classes.py checks it is up to date)."""
    from anira.tasks import TASK_NAMES as TASKS, task_class

    lines = ["# Per-token features and their classes", "",
             "Generated from the feature tables declared next to each task (`Task.features`) by",
             "`python -m anira.tasks.features > docs/features.md`; a test fails when this page and the",
             "tables differ. The decision-timing analysis (notebook 05, `anira.analysis.timing`) reads its",
             "feature sets from these tables, and the rule was fixed before the study was analysed.", "",
             "## The rule", ""]
    lines += [f"- **{k}**: {v}." for k, v in FEATURE_KINDS.items()]
    lines += ["", "The decomposition regresses depth on the static set, the dynamic set and their union, and",
              "reports it three ways: progress apart (on neither side; its own share reported), progress on",
              "the static side and progress on the dynamic side. `size` alone is reported beside the paper's",
              "~28% for ANIRA-E. Tests check the rule where it can be checked: static features are unchanged",
              "when the same input's outputs come in another valid order, dynamic ones change and are recomputed",
              "from the reference algorithm's state, progress features are functions of the output step and",
              "the size, and label features equal the difficulty on every record.", ""]
    for name in TASKS:
        cls = task_class(name)
        lines += [f"## `{name}`", "", "| feature | class | reason | derived from |", "| --- | --- | --- | --- |"]
        order = {k: i for i, k in enumerate(FEATURE_KINDS)}
        for f in sorted(cls.features, key=lambda f: order[f.kind]):
            cat = " (categorical)" if f.categorical else ""
            lines.append(f"| `{f.name}` | {f.kind}{cat} | {f.reason} | {f.derived or 'recorded'} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(features_markdown(), end="")


__all__ = ["Feature", "FEATURE_KINDS", "TIMING_KINDS", "common", "with_derived_features", "features_markdown",
           "toposort_exec_depths", "DERIVE"]
