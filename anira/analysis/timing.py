"""Finding 3, decision timing: is a mechanism's depth explained by static or by dynamic features?

Per run (one trained model), on in-range tokens (``split``) at the training max_depth, depth y is regressed
on feature sets S (static: knowable from the input structure), D (dynamic: state of the reference
algorithm at that output step), S+D, and size alone. R^2 values are cross-validated: k-fold split
by SEQUENCE (GroupKFold, groups = examples, so no sequence is in train and test), out-of-fold
predictions pooled, then

    R^2_X = 1 - sum (y - yhat_X)^2 / sum (y - mean y)^2.

Commonality decomposition of the total R^2_SD into three parts that sum to it exactly:

    unique_static  = R^2_SD - R^2_D
    unique_dynamic = R^2_SD - R^2_S
    shared         = R^2_S + R^2_D - R^2_SD
    unique_static + unique_dynamic + shared = R^2_SD.

(With cross-validated R^2, ``shared`` can be slightly negative: suppression or overfitting.)
Note R^2_S - R^2_D = unique_static - unique_dynamic, so "static alone explains more than dynamic
alone" and "static's unique part exceeds dynamic's" are the same test: ``dynamic_minus_static``.

Uncertainty: the out-of-fold predictions are held fixed and the R^2 values are recomputed on
sequence-bootstrap replicates (per-sequence sums of y, y^2 and squared errors), averaged over runs
as everywhere else; ``seed_sd`` is the spread over runs. This covers evaluation-sample
uncertainty, not refitting uncertainty.
"""
from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anira.analysis._stats import (BootstrapConfig, check_columns, check_one_config, group_rng, nanmean,
                                   percentile_ci, resample_counts, run_clusters, seed_sd, select)

Features = Sequence[str] | Mapping[str, Sequence[str]]  # one list for all tasks, or task -> list
MODELS = ("linear", "boosting")
PAPER_R2_SIZE_EARLY = 0.28  # the paper: graph size alone explains ~28% of ANIRA-E's depth variance (linear)
COMPONENTS = ("r2_static", "r2_dynamic", "r2_both", "r2_size", "unique_static", "unique_dynamic", "shared",
              "dynamic_minus_static")


def default_feature_sets(task: str, records: pd.DataFrame | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(static, dynamic) feature names of a registered task; ``size`` counts as static. With
    ``records``, only the features the task's rows carry (records of an earlier task design lack
    features added since, e.g. `hops`' shortcut features)."""
    from anira.tasks import task_class
    cls = task_class(task)
    static = ("size",) + tuple(f for f in cls.static_features if f != "size")
    dynamic = tuple(cls.dynamic_features)
    if records is not None:
        rows = records[records["task"] == task] if "task" in records else records
        has = {c for c in rows.columns if rows[c].notna().any()}
        static, dynamic = tuple(f for f in static if f in has), tuple(f for f in dynamic if f in has)
    return static, dynamic


def _features_for(features: Features, task: str, what: str) -> list[str]:
    if isinstance(features, Mapping):
        if task not in features:
            raise ValueError(f"{what} features: no entry for task {task!r}; given for {sorted(features)}")
        return list(features[task])
    return list(features)


def make_model(model: str, seed: int = 0):
    """'linear': standardized OLS; 'boosting': histogram gradient boosting (non-linear check)."""
    if model == "linear":
        return make_pipeline(StandardScaler(), LinearRegression())
    if model == "boosting":
        return HistGradientBoostingRegressor(max_iter=100, random_state=seed)
    raise ValueError(f"model = {model!r} is not allowed; allowed values: {list(MODELS)}")


def oof_predictions(X: np.ndarray, y: np.ndarray, groups: np.ndarray, model: str, n_splits: int, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions with GroupKFold over sequences (deterministic)."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"cross-validation needs >= 2 sequences per run; got {n_groups}")
    pred = np.empty_like(y, dtype=float)
    base = make_model(model, seed)
    for tr, te in GroupKFold(n_splits=min(n_splits, n_groups)).split(X, y, groups):
        if model == "linear":  # OLS with intercept via least squares (same fit as LinearRegression, no overhead)
            A = np.column_stack([np.ones(len(tr)), X[tr]])
            coef = np.linalg.lstsq(A, y[tr], rcond=None)[0]
            pred[te] = coef[0] + X[te] @ coef[1:]
        else:
            pred[te] = clone(base).fit(X[tr], y[tr]).predict(X[te])
    return pred


def _r2_from_sums(Sy, Syy, n, SSE):
    """R^2 = 1 - SSE / SST, SST = sum y^2 - (sum y)^2 / n; works on (..., k) arrays of sums."""
    sst = Syy - Sy ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - SSE / sst[..., None]
    return np.where((sst > 1e-12 * np.maximum(Syy, 1.0))[..., None], r2, np.nan)


def _components(r2: np.ndarray) -> np.ndarray:
    """(..., 4) [static, dynamic, both, size] -> (..., 8) in COMPONENTS order."""
    s, d, b, z = r2[..., 0], r2[..., 1], r2[..., 2], r2[..., 3]
    return np.stack([s, d, b, z, b - d, b - s, s + d - b, d - s], axis=-1)


def timing_decomposition(records: pd.DataFrame, static: Features, dynamic: Features,
                         groups: Sequence[str] = ("task", "mechanism"), depth_col: str = "depth",
                         model: Literal["linear", "boosting"] = "linear", n_splits: int = 5,
                         size_col: str = "size", split: str | None = "in", boot: BootstrapConfig | None = None,
                         per_run: bool = False) -> pd.DataFrame:
    """Cross-validated R^2 of depth on static, dynamic, both and size alone + commonality parts.

    static / dynamic: feature names, or task -> names (e.g. from ``default_feature_sets``).
    Rows with a missing value in any used feature are dropped (``n_dropped``).
    Columns per group: for each c in COMPONENTS: c, c_lo, c_hi, c_seed_sd; then share_unique_static,
    share_unique_dynamic, share_shared (= part / r2_both), n_seeds, n_tok, n_dropped, model.
    With per_run, one row per run (no CIs).
    """
    boot, groups = boot or BootstrapConfig(), list(groups)
    make_model(model)
    df = select(records, split=split, eval_depth="train")
    check_one_config(df, groups)
    rows = []
    for gkey, sub in df.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        task = str(sub["task"].iloc[0]) if "task" in sub else ""
        fs, fd = _features_for(static, task, "static"), _features_for(dynamic, task, "dynamic")
        if not fs or not fd:
            raise ValueError(f"group {gkey}: static ({fs}) and dynamic ({fd}) feature lists must be non-empty")
        used = list(dict.fromkeys(fs + fd + [size_col]))
        check_columns(sub, used + [depth_col], "timing_decomposition")
        ok = sub[used + [depth_col]].notna().all(axis=1)
        n_dropped = int((~ok).sum())
        sub = sub[ok]
        rng = group_rng(boot, gkey)
        run_list = list(sub.groupby("run_id", sort=True))
        points = np.full((len(run_list), len(COMPONENTS)), np.nan)
        reps = np.full((len(run_list), boot.n_boot, len(COMPONENTS)), np.nan)
        for r, (run_id, run) in enumerate(run_list):
            rc = run_clusters(run)
            y = run[depth_col].to_numpy(dtype=float)
            if np.ptp(y) == 0 or len(rc.strata) < 2:
                continue  # constant depth: nothing to explain, R^2 undefined
            preds = [oof_predictions(run[cols].to_numpy(dtype=float), y, rc.cluster, model, n_splits)
                     for cols in (fs, fd, fs + fd, [size_col])]
            n_cl = len(rc.strata)
            Sy, Syy, n = (np.bincount(rc.cluster, w, n_cl) for w in (y, y * y, np.ones_like(y)))
            SSE = np.stack([np.bincount(rc.cluster, (y - p) ** 2, n_cl) for p in preds], axis=1)  # (n_cl, 4)
            points[r] = _components(_r2_from_sums(Sy.sum(), Syy.sum(), n.sum(), SSE.sum(0)))
            K = resample_counts(rng, rc.strata, boot.n_boot)
            reps[r] = _components(_r2_from_sums(K @ Sy, K @ Syy, K @ n, K @ SSE))
            if per_run:
                rows.append(dict(zip(groups, gkey)) | {"run_id": run_id} | dict(zip(COMPONENTS, points[r]))
                            | dict(n_tok=len(run), model=model))
        if per_run:
            continue
        mean, sd = nanmean(points, 0), seed_sd(points)
        lo, hi = percentile_ci(nanmean(reps, 0), boot.ci)
        row = dict(zip(groups, gkey))
        for j, c in enumerate(COMPONENTS):
            row |= {c: mean[j], f"{c}_lo": lo[j], f"{c}_hi": hi[j], f"{c}_seed_sd": sd[j]}
        tot = row["r2_both"]
        for part in ("unique_static", "unique_dynamic", "shared"):
            row[f"share_{part}"] = row[part] / tot if np.isfinite(tot) and tot > 0 else np.nan
        row |= dict(n_seeds=int(np.sum(~np.isnan(points[:, 0]))), n_tok=len(sub), n_dropped=n_dropped, model=model)
        rows.append(row)
    return pd.DataFrame(rows)


def feature_importance(records: pd.DataFrame, static: Features, dynamic: Features,
                       groups: Sequence[str] = ("task", "mechanism"), depth_col: str = "depth",
                       model: Literal["linear", "boosting"] = "linear", n_repeats: int = 5,
                       seed: int = 0, split: str | None = "in") -> pd.DataFrame:
    """Per (group, feature): standardized coefficient and permutation importance, mean over runs.

    coef_std: OLS coefficient with X and y standardized (a beta weight; NaN for 'boosting').
    Collinear features (e.g. size and n_nodes) share their weight arbitrarily: read their sum.
    perm_importance: mean drop in R^2 when the feature is shuffled (sklearn permutation_importance,
    in-sample, ``n_repeats`` shuffles, fixed ``seed``).
    Columns: *groups, feature, kind, coef_std, coef_seed_sd, perm_importance, perm_seed_sd, n_seeds.
    """
    groups = list(groups)
    make_model(model)
    df = select(records, split=split, eval_depth="train")
    check_one_config(df, groups)
    rows = []
    for gkey, sub in df.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        task = str(sub["task"].iloc[0]) if "task" in sub else ""
        fs, fd = _features_for(static, task, "static"), _features_for(dynamic, task, "dynamic")
        feats = list(dict.fromkeys(fs + fd))
        check_columns(sub, feats + [depth_col], "feature_importance")
        sub = sub[sub[feats + [depth_col]].notna().all(axis=1)]
        coefs, perms = [], []
        for _, run in sub.groupby("run_id", sort=True):
            X, y = run[feats].to_numpy(dtype=float), run[depth_col].to_numpy(dtype=float)
            if np.ptp(y) == 0:
                continue
            m = make_model(model, seed).fit(X, y)
            if model == "linear":
                coefs.append(m[-1].coef_ / y.std())  # X already standardized inside the pipeline
            else:
                coefs.append(np.full(len(feats), np.nan))
            perms.append(permutation_importance(m, X, y, n_repeats=n_repeats, random_state=seed,
                                                scoring="r2").importances_mean)
        C = np.array(coefs) if coefs else np.full((0, len(feats)), np.nan)
        P = np.array(perms) if perms else np.full((0, len(feats)), np.nan)
        cm, cs, pm, ps = nanmean(C, 0), seed_sd(C), nanmean(P, 0), seed_sd(P)
        for j, f in enumerate(feats):
            rows.append(dict(zip(groups, gkey)) | dict(feature=f, kind="static" if f in fs else "dynamic",
                                                       coef_std=cm[j], coef_seed_sd=cs[j], perm_importance=pm[j],
                                                       perm_seed_sd=ps[j], n_seeds=len(C)))
    return pd.DataFrame(rows)


def example_depths(records: pd.DataFrame, task: str, example: int, split: str = "in",
                   mechanisms: Sequence[str] = ("early", "online"), seed: int | None = None,
                   depth_col: str = "depth") -> pd.DataFrame:
    """One sequence's per-token depths side by side: rows = positions, columns = mechanisms.

    Uses the run with the smallest seed (or ``seed``) of each mechanism; also returns the
    ``target`` token id and ``difficulty`` per position (for the heatmap's labels).
    """
    df = select(records, split=split, eval_depth="train", task=task, example=example, mechanism=list(mechanisms))
    if df.empty:
        raise ValueError(f"no records for task={task!r}, example={example}, split={split!r}, mechanisms={list(mechanisms)}")
    if seed is not None:
        df = df[df["seed"] == seed]
    else:
        df = df[df["seed"] == df.groupby("mechanism")["seed"].transform("min")]
    check_one_config(df, ["mechanism"])
    wide = df.pivot_table(index="position", columns="mechanism", values=depth_col, aggfunc="first")
    wide = wide[[m for m in mechanisms if m in wide.columns]]
    meta = df.groupby("position")[["target", "difficulty"]].first()
    return meta.join(wide).reset_index()


__all__ = ["timing_decomposition", "feature_importance", "default_feature_sets", "example_depths",
           "oof_predictions", "make_model", "COMPONENTS", "MODELS", "PAPER_R2_SIZE_EARLY"]
