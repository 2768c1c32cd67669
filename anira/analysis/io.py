"""Loading a study's runs for the analysis notebooks (03-07), and choosing which runs to compare.

- ``resolve_run_dirs(runs_dir, run_dirs)``: the finished run directories (those holding
  summary.json); the notebooks' ``run_dirs`` parameter (None = every finished run under
  ``runs_dir``), with an error that names the parameter when nothing is found.
- ``load_study(run_dirs)``: (per-token records of every run, per-run summaries).
- ``select_beta(records, beta)``: the runs of one compute-penalty weight. ``beta`` acts only on
  the learned allocations, so ``fixed`` and ``oracle`` runs are kept whatever beta their config
  carries (their ``beta`` column is set to NaN, as in ``summaries_frame``); ``early``, ``online``
  and ``random`` (matched in mean depth to an online run of that beta) are kept when equal to it.
  ``beta=None`` picks the headline beta: the value with the most early/online runs (ties: the
  smaller value), i.e. the one the profile ran over every seed.
  ``runs_of_beta(run_dirs, beta)`` applies the same rule to run directories (from config.json),
  so only the chosen runs' records are read.
- ``with_fixed_depth(records)``: a ``fixed_depth`` column (NaN unless mechanism == "fixed"), so a
  table can keep several fixed-depth baselines apart by grouping on it.
- ``eval_examples`` / ``example_sequence``: the evaluation examples a run was scored on (the
  frozen sets of ``anira.data``, or the trainer's seeded fallback when a task has none) and one
  example's tokens with the per-token depths of each mechanism, for the depth heatmaps.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from anira.analysis._stats import ADAPTIVE, check_columns, run_table, select
from anira.analysis.efficiency import load_summaries
from anira.analysis.timing import example_depths

STUDY_HINT = "run `python -m anira.study --profile smoke` first"  # what to do when no run exists
BETA_FREE = ("fixed", "oracle")  # mechanisms whose training objective has no compute penalty


def resolve_run_dirs(runs_dir: str | Path | None, run_dirs: Sequence[str | Path] | None = None) -> list[Path]:
    """The finished run directories to analyse, sorted by path.

    run_dirs None: every sub-directory of ``runs_dir`` that holds a summary.json (unfinished runs
    are skipped). Otherwise each given directory must hold a summary.json. No run at all is a
    ValueError naming the parameter (and how to make runs).
    """
    if run_dirs is None:
        if runs_dir is None:
            raise ValueError("runs_dir = None and run_dirs = None: give the folder that holds the run directories")
        root = Path(runs_dir)
        found = sorted(p for p in root.glob("*/") if (p / "summary.json").is_file()) if root.is_dir() else []
        if not found:
            raise ValueError(f"runs_dir = {str(runs_dir)!r}: no finished runs under {root.resolve()} "
                             f"(no sub-directory holds a summary.json); {STUDY_HINT}")
        return found
    if not isinstance(run_dirs, (list, tuple)) or not all(isinstance(d, (str, Path)) for d in run_dirs):
        raise ValueError(f"run_dirs = {run_dirs!r} must be a list of run directories (or None)")
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError(f"run_dirs = []: no runs to analyse; pass None to use every finished run under "
                         f"runs_dir, or {STUDY_HINT}")
    unfinished = [str(d) for d in dirs if not (d / "summary.json").is_file()]
    if unfinished:
        raise ValueError(f"run_dirs: {len(unfinished)} of {len(dirs)} directories hold no summary.json "
                         f"(unfinished or missing runs): {unfinished[:5]}; {STUDY_HINT}")
    return sorted(dirs)


def load_study(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(records, summaries) of the given run directories.

    records: every run's records.csv.gz concatenated (run order = ``run_dirs`` order); a run
    without records is an error. summaries: ``efficiency.load_summaries`` (summary.json with the
    run's config under "config"), same order.
    """
    dirs = [Path(d) for d in run_dirs]
    missing = [str(d) for d in dirs if not (d / "records.csv.gz").is_file()]
    if missing:
        raise ValueError(f"run_dirs: no records.csv.gz in {missing[:5]} (a finished run always writes one)")
    frames = [pd.read_csv(d / "records.csv.gz") for d in dirs]
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return records, load_summaries(dirs)


def headline_beta(records: pd.DataFrame) -> float | None:
    """The beta with the most early/online runs (ties: the smaller); None without such runs."""
    check_columns(records, ["run_id", "mechanism", "beta"], "headline_beta")
    ad = records[records["mechanism"].isin(ADAPTIVE)].drop_duplicates("run_id")
    if ad.empty:
        return None
    counts = ad.groupby("beta")["run_id"].nunique()
    return float(counts[counts == counts.max()].index.min())


def select_beta(records: pd.DataFrame, beta: float | None = None) -> tuple[pd.DataFrame, float | None]:
    """(records of one beta, that beta); see the module docstring. A beta that no early/online run
    used is a ValueError listing the betas present."""
    check_columns(records, ["run_id", "mechanism", "beta"], "select_beta")
    present = sorted(records.loc[records["mechanism"].isin(ADAPTIVE), "beta"].dropna().unique().tolist())
    if beta is None:
        beta = headline_beta(records)
    elif not isinstance(beta, (int, float)) or isinstance(beta, bool):
        raise ValueError(f"beta = {beta!r} must be a number or None")
    elif present and not np.isclose(present, beta).any():
        raise ValueError(f"beta = {beta!r}: no early/online run used it; betas present: {present}")
    free = records["mechanism"].isin(BETA_FREE)
    keep = free | (np.isclose(records["beta"].astype(float), beta) if beta is not None else False)
    out = records.loc[keep].copy()
    out.loc[out["mechanism"].isin(BETA_FREE), "beta"] = np.nan
    return out, (None if beta is None else float(beta))


def runs_of_beta(run_dirs: Sequence[str | Path], beta: float | None = None) -> tuple[list[Path], float | None]:
    """(the run directories ``select_beta`` would keep, that beta), decided from each run's
    config.json before any records are read (a large beta sweep need not be loaded)."""
    rows = []
    for d in map(Path, run_dirs):
        try:
            cfg = json.loads((d / "config.json").read_text())["config"]
        except (FileNotFoundError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"run_dirs: {d} has no readable config.json ({err})") from None
        rows.append({"run_id": str(d), "mechanism": cfg["mechanism"], "beta": float(cfg.get("beta", np.nan))})
    kept, beta = select_beta(pd.DataFrame(rows, columns=["run_id", "mechanism", "beta"]), beta)
    keep = set(kept["run_id"])
    return [Path(d) for d in run_dirs if str(Path(d)) in keep], beta


def with_fixed_depth(records: pd.DataFrame) -> pd.DataFrame:
    """records plus ``fixed_depth`` (the depth a fixed run used at its training max_depth; NaN else)."""
    rt = run_table(records).set_index("run_id")["fixed_depth"]
    return records.assign(fixed_depth=records["run_id"].map(rt).astype(float))


def task_size_name(task: str) -> str:
    """What ``size`` means for ``task``, in words (the task's ``size_name``), for axis labels."""
    from anira.tasks import task_class
    return task_class(task).size_name


def mechanisms_of(records: pd.DataFrame, task: str | None = None) -> list[str]:
    """Mechanisms with records (of ``task`` when given), in sorted order."""
    df = records if task is None else records[records["task"] == task]
    return sorted(df["mechanism"].unique().tolist())


# --- evaluation examples ---------------------------------------------------------------------

@lru_cache(maxsize=16)
def _eval_set(task: str, split: str) -> tuple:
    from anira.train import load_eval_sets

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the trainer warns when it falls back to generating
        sets = load_eval_sets(task)
    return tuple(sets[split])


def eval_examples(task: str, split: str = "in") -> list:
    """The examples the trainer scored for ``task``/``split``: index i = records' ``example`` i.

    Same source as ``anira.train.load_eval_sets``: the frozen set of ``anira.data`` when it
    exists, else the trainer's seeded fallback (identical for every run).
    """
    from anira.tasks import task_class

    allowed = list(task_class(task).ranges)
    if split not in allowed:
        raise ValueError(f"split = {split!r} is not allowed for task {task!r}; allowed values: {allowed}")
    return list(_eval_set(task, split))


def example_sequence(records: pd.DataFrame, task: str, example: int, split: str = "in",
                     mechanisms: Sequence[str] = ADAPTIVE, max_tokens: int | None = 48,
                     seed: int | None = None) -> dict[str, Any]:
    """One evaluated sequence as token text with each mechanism's depth per token.

    Position p of a record is the index of the predicted token in the sequence; the depth was
    spent at the input position p - 1 to predict tokens[p]. The heatmap column of position p is
    labelled with tokens[p] (the token being predicted) and holds that depth; unscored positions
    are NaN. With ``max_tokens`` only the last ``max_tokens`` positions up to the last scored one
    are kept (answers come last in every task). The records' ``target`` must equal tokens[p]
    (ValueError otherwise: records and evaluation set out of step).

    Returns {"tokens": [str], "positions": [int], "depths": {mechanism: [float]},
    "difficulty": [float], "example": int, "size": int}.
    """
    wide = example_depths(records, task, example, split=split, mechanisms=mechanisms, seed=seed)
    exs = eval_examples(task, split)
    if not 0 <= example < len(exs):
        raise ValueError(f"example = {example} is out of range for {task}/{split}; allowed: [0, {len(exs) - 1}]")
    ex = exs[example]
    from anira.tasks import make_task

    vocab = make_task(task).vocab  # the design's vocabulary (addition's hints included)
    pos = wide["position"].to_numpy(dtype=int)
    tok = np.asarray(ex.tokens)
    if pos.max() >= len(tok) or not np.array_equal(tok[pos], wide["target"].to_numpy(dtype=int)):
        raise ValueError(f"{task}/{split} example {example}: the records' targets do not match the evaluation "
                         f"set's tokens (records from another evaluation set?)")
    last = int(pos.max())
    first = 1 if max_tokens is None else max(1, last - int(max_tokens) + 1)
    positions = list(range(first, last + 1))
    w = wide.set_index("position")
    depths = {m: [float(w[m].get(p, np.nan)) if m in w else np.nan for p in positions] for m in mechanisms}
    return {"tokens": vocab.decode(tok[positions].tolist()), "positions": positions, "depths": depths,
            "difficulty": [float(w["difficulty"].get(p, np.nan)) for p in positions], "example": int(example),
            "size": int(ex.size)}


__all__ = ["resolve_run_dirs", "load_study", "headline_beta", "select_beta", "runs_of_beta", "with_fixed_depth",
           "task_size_name", "mechanisms_of", "eval_examples", "example_sequence", "STUDY_HINT", "BETA_FREE"]
