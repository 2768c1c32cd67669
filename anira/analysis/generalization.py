"""Finding 2, no extrapolation: beyond the training sizes, more compute but collapsing accuracy.

- ``by_size``: accuracy (answer tokens) and mean depth (all scored tokens) per input size and split.
- ``extrapolation_table``: in-range vs out-of-range accuracy and depth per task x mechanism, with
  paired-within-run CIs of  acc_drop = acc_in - acc_out  and  depth_increase = depth_out - depth_in;
  by default on the tokens that test composition (``beyond_training``): out of range, those that need
  more steps than any in-range token; in range, the hardest ones (the most steps training needed).
- ``width_table`` (`addition`'s "wide" split): only the width grows; accuracy on the one-column
  tokens (the alignment diagnostic) beside the chain tokens, in range and wide.
- ``test_time_depth``: the same model evaluated with eval_max_depth larger than its training
  max_depth; deltas against eval_max_depth == max_depth are paired (same sequences).
Accuracies are fractions in [0, 1]; "20 points" is 0.20.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from anira.analysis._stats import (BootstrapConfig, check_columns, check_one_config, diff_ci, group_key, mean_by,
                                   select, token_floor)


def _acc_depth(df: pd.DataFrame, by: list[str], groups: list[str], depth_col: str, boot: BootstrapConfig):
    dep, dep_reps = mean_by(df, depth_col, by, groups, boot, return_reps=True)
    acc, acc_reps = mean_by(df[df["is_answer"] == 1], "correct", by, groups, boot, return_reps=True)
    dep = dep.rename(columns={"mean": "mean_depth", "ci_lo": "depth_lo", "ci_hi": "depth_hi", "seed_sd": "depth_seed_sd"})
    acc = acc.rename(columns={"mean": "accuracy", "ci_lo": "acc_lo", "ci_hi": "acc_hi", "seed_sd": "acc_seed_sd"})
    acc = acc.drop(columns=["n_seeds", "n_seq", "n_tok"])
    out = acc.merge(dep, on=groups + by, how="outer")
    return out, acc_reps, dep_reps


def by_size(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"), depth_col: str = "depth",
            boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Accuracy and mean depth per (groups, size, split) at the training max_depth, with CIs.

    Columns: *groups, size, split, accuracy, acc_lo, acc_hi, acc_seed_sd, mean_depth, depth_lo,
    depth_hi, depth_seed_sd, n_seeds, n_seq, n_tok, floor (the task's trivial floor on the same
    answer tokens, ``Task.floor``; NaN where the task's features are missing).
    """
    boot, groups = boot or BootstrapConfig(), list(groups)
    df = select(records, split=None, eval_depth="train")
    check_columns(df, ["size", "split", "correct", "is_answer", depth_col], "by_size")
    check_one_config(df, groups)
    out, _, _ = _acc_depth(df, ["size", "split"], groups, depth_col, boot)
    ans = df[df["is_answer"] == 1]
    floor = ans.assign(floor=token_floor(ans)).groupby(groups + ["size", "split"], dropna=False)["floor"].mean()
    out = out.merge(floor.reset_index(), on=groups + ["size", "split"], how="left")
    return out.sort_values(groups + ["size", "split"], kind="stable").reset_index(drop=True)


def train_size_range(records: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """task -> (min, max) input size seen in the in-range split (the training range)."""
    inn = records[records["split"] == "in"]
    return {t: (float(s.min()), float(s.max())) for t, s in inn.groupby("task")["size"]}


def _lookup(cells: list[tuple], key: tuple) -> int | None:
    try:
        return cells.index(key)
    except ValueError:
        return None


def training_steps(records: pd.DataFrame) -> pd.Series:
    """Per row, k = the largest ``difficulty`` of its task's in-range tokens: the most steps any
    in-range token needs (the bounded reader's k, ``anira.data.certify``)."""
    k = records[records["split"] == "in"].groupby("task")["difficulty"].max()
    return records["task"].map(k)


def beyond_training(records: pd.DataFrame) -> pd.Series:
    """True for the tokens that test composition beyond training: out of range, those that need
    more steps than any in-range token of their task (difficulty > k); in range, the hardest ones
    (difficulty == k). Comparing the two asks whether accuracy falls, and depth rises, once a token
    needs more steps than training ever asked for, against the tokens that needed the most there
    (a comparison with every in-range token would mix in how depth and accuracy vary with
    difficulty inside the range)."""
    check_columns(records, ["task", "split", "difficulty"], "beyond_training")
    k = training_steps(records)
    return ((records["split"] == "out") & (records["difficulty"] > k)) | ((records["split"] == "in") & (records["difficulty"] == k))


def extrapolation_table(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"),
                        depth_col: str = "depth", boot: BootstrapConfig | None = None,
                        tokens: str = "beyond") -> pd.DataFrame:
    """Per group: acc_in, acc_out, acc_drop (CI), depth_in, depth_out, depth_increase (CI), and k.

    ``tokens="beyond"`` (the default) compares the tokens of ``beyond_training`` (in range: those
    needing k steps, the most there; out of range: those needing more than k) and adds
    ``acc_out_within``, the accuracy on the out-of-range tokens that need at most k steps: nothing
    training did not ask for, so a fall there is not about composition (e.g. a position or length
    failure: the alignment diagnostic). ``tokens="all"``: every token of both splits.
    Both differences are computed per replicate on the same resampled runs (in- and out-of-range
    sequences resampled within each run), then their percentile interval is taken.
    """
    from anira.config import check_choice

    check_choice("tokens", tokens, ("beyond", "all"))
    boot, groups = boot or BootstrapConfig(), list(groups)
    df = select(records, split=None, eval_depth="train")
    check_columns(df, ["split", "correct", "is_answer", depth_col], "extrapolation_table")
    k = training_steps(df) if "difficulty" in df else pd.Series(np.nan, index=df.index)
    within = df[(df["split"] == "out") & (df["is_answer"] == 1) & (df.get("difficulty", np.inf) <= k)]
    within_acc = {group_key(g): v for g, v in within.groupby(groups, dropna=False)["correct"].mean().items()}
    k_of = {group_key(g): v for g, v in
            pd.concat([df[groups], k.rename("k")], axis=1).groupby(groups, dropna=False)["k"].max().items()}
    if tokens == "beyond":
        df = df[beyond_training(df)]
    check_one_config(df, groups)
    tab, acc_reps, dep_reps = _acc_depth(df, ["split"], groups, depth_col, boot)
    rows = []
    for gkey, sub in tab.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        s = sub.set_index("split")
        row = dict(zip(groups, gkey))
        for name, reps, col in (("acc", acc_reps, "accuracy"), ("depth", dep_reps, "mean_depth")):
            v_in = s[col].get("in", np.nan)
            v_out = s[col].get("out", np.nan)
            row[f"{name}_in"], row[f"{name}_out"] = v_in, v_out
            cells, rep = reps.get(group_key(gkey), ([], None))
            i, o = _lookup(cells, ("in",)), _lookup(cells, ("out",))
            if name == "acc":
                d, (lo, hi) = v_in - v_out, (diff_ci(rep[:, i], rep[:, o], boot.ci) if i is not None and o is not None
                                               else (np.nan, np.nan))
                row |= dict(acc_drop=d, acc_drop_lo=lo, acc_drop_hi=hi)
            else:
                d, (lo, hi) = v_out - v_in, (diff_ci(rep[:, o], rep[:, i], boot.ci) if i is not None and o is not None
                                               else (np.nan, np.nan))
                row |= dict(depth_increase=d, depth_increase_lo=lo, depth_increase_hi=hi)
        row["n_seeds"] = int(sub["n_seeds"].max())
        row["k"] = k_of.get(group_key(gkey), np.nan)
        row["acc_out_within"] = within_acc.get(group_key(gkey), np.nan)
        rows.append(row)
    cols = groups + ["acc_in", "acc_out", "acc_drop", "acc_drop_lo", "acc_drop_hi", "depth_in", "depth_out",
                     "depth_increase", "depth_increase_lo", "depth_increase_hi", "n_seeds", "k", "acc_out_within"]
    return pd.DataFrame(rows, columns=cols)


def test_time_depth(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"), depth_col: str = "depth",
                    boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Accuracy and depth per (groups, split, eval_max_depth), with deltas vs the training depth.

    delta_acc = acc(eval_max_depth) - acc(eval_max_depth == max_depth), paired over sequences;
    likewise delta_depth. Columns: *groups, split, eval_max_depth, max_depth, accuracy (+CI),
    mean_depth (+CI), delta_acc, delta_acc_lo, delta_acc_hi, delta_depth, delta_depth_lo,
    delta_depth_hi, n_seeds.
    """
    boot, groups = boot or BootstrapConfig(), list(groups)
    df = select(records, split=None, eval_depth=None)
    check_columns(df, ["split", "eval_max_depth", "max_depth", "correct", "is_answer", depth_col], "test_time_depth")
    check_one_config(df, groups, cols=("beta", "max_depth"))
    tab, acc_reps, dep_reps = _acc_depth(df, ["split", "eval_max_depth"], groups, depth_col, boot)
    train_depth = {group_key(k): v for k, v in df.groupby(groups, sort=True, dropna=False)["max_depth"].first().items()}
    out = []
    for gkey, sub in tab.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        md = train_depth[group_key(gkey)]
        sub = sub.copy()
        sub.insert(len(groups) + 2, "max_depth", md)
        for name, reps, col in (("acc", acc_reps, "accuracy"), ("depth", dep_reps, "mean_depth")):
            cells, rep = reps.get(group_key(gkey), ([], None))
            vals, los, his = [], [], []
            for _, r in sub.iterrows():
                base = sub[(sub["split"] == r["split"]) & (sub["eval_max_depth"] == md)]
                i, j = _lookup(cells, (r["split"], r["eval_max_depth"])), _lookup(cells, (r["split"], md))
                if base.empty or i is None or j is None:
                    vals.append(np.nan), los.append(np.nan), his.append(np.nan)
                    continue
                vals.append(r[col] - base[col].iloc[0])
                lo, hi = diff_ci(rep[:, i], rep[:, j], boot.ci)
                los.append(lo), his.append(hi)
            sub[f"delta_{name}"], sub[f"delta_{name}_lo"], sub[f"delta_{name}_hi"] = vals, los, his
        out.append(sub)
    res = pd.concat(out, ignore_index=True) if out else tab
    return res.sort_values(groups + ["split", "eval_max_depth"], kind="stable").reset_index(drop=True)


test_time_depth.__test__ = False  # not a pytest test despite its name


def width_table(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"), depth_col: str = "depth",
                boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Only the width grows (the "wide" split, `addition`): in-range vs wide accuracy and depth per
    group and token class, at the training max_depth.

    ``tokens`` = "one-column": answer tokens the task's floor reader gets right for sure (floor 1:
    nothing but the token's own column and the one below, the alignment diagnostic); "chain":
    the multi-step tokens (floor < 1), whose open chains in the wide split are as long as in
    training. A fall on "one-column" is a failure to find the columns at an unseen width, not a
    failure to compose. Columns: *groups, tokens, acc_in, acc_wide, acc_drop (CI), depth_in,
    depth_wide, depth_increase (CI), n_seeds; empty where no group has a wide split.
    """
    boot, groups = boot or BootstrapConfig(), list(groups)
    cols = groups + ["tokens", "acc_in", "acc_wide", "acc_drop", "acc_drop_lo", "acc_drop_hi", "depth_in",
                     "depth_wide", "depth_increase", "depth_increase_lo", "depth_increase_hi", "n_seeds"]
    df = select(records, split=None, eval_depth="train")
    check_columns(df, ["split", "correct", "is_answer", depth_col], "width_table")
    df = df[df["split"].isin(["in", "wide"]) & (df["is_answer"] == 1)]
    wide_groups = set(df.loc[df["split"] == "wide", groups].itertuples(index=False, name=None))
    df = df[[g in wide_groups for g in df[groups].itertuples(index=False, name=None)]]
    if df.empty:
        return pd.DataFrame(columns=cols)
    check_one_config(df, groups)
    df = df.assign(tokens=np.where(token_floor(df) >= 1, "one-column", "chain"))
    tab, acc_reps, dep_reps = _acc_depth(df, ["tokens", "split"], groups, depth_col, boot)
    rows = []
    for gkey, sub in tab.groupby(groups + ["tokens"], sort=True, dropna=False):
        s = sub.set_index("split")
        row = dict(zip(groups + ["tokens"], gkey))
        cells, _ = acc_reps.get(group_key(gkey[:-1]), ([], None))
        i, o = _lookup(cells, (gkey[-1], "in")), _lookup(cells, (gkey[-1], "wide"))
        for name, reps, col, sign in (("acc", acc_reps, "accuracy", 1), ("depth", dep_reps, "mean_depth", -1)):
            v_in, v_wide = s[col].get("in", np.nan), s[col].get("wide", np.nan)
            row[f"{name}_in"], row[f"{name}_wide"] = v_in, v_wide
            rep = reps.get(group_key(gkey[:-1]), ([], None))[1]
            key = "acc_drop" if name == "acc" else "depth_increase"
            if i is None or o is None:
                lo = hi = np.nan
            else:
                lo, hi = diff_ci(rep[:, i], rep[:, o], boot.ci) if sign > 0 else diff_ci(rep[:, o], rep[:, i], boot.ci)
            row |= {key: sign * (v_in - v_wide), f"{key}_lo": lo, f"{key}_hi": hi}
        row["n_seeds"] = int(sub["n_seeds"].max())
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)

__all__ = ["by_size", "train_size_range", "training_steps", "beyond_training", "extrapolation_table", "test_time_depth",
           "width_table"]
