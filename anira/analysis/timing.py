"""Finding 3, decision timing: is a mechanism's depth explained by static or by dynamic features?

Feature classes come from each task's table (``Task.features``, rule in ``anira.tasks.features``,
docs/features.md): static S (a function of the input alone; ``size`` included), dynamic D (the
reference algorithm's state at that output step), progress P (counters of output progress, which a
causal reader sees). The difficulty label and any column equal to it are on neither side.

Per run (one trained model), on in-range tokens (``split``) at the training max_depth, depth y is
regressed on S, D, P, their unions and size alone; categorical features are one-hot. R^2 values
are cross-validated: k-fold split by SEQUENCE (GroupKFold, groups = examples, so no sequence is in
train and test), out-of-fold predictions pooled, then

    R^2_X = 1 - sum (y - yhat_X)^2 / sum (y - mean y)^2.

Commonality decomposition of R^2 over two sides A (static) and B (dynamic), in three variants of
where progress goes (``VARIANTS``): apart (A = S, B = D; progress on neither side, its own part
unique_progress = R^2_SDP - R^2_SD), progress on the static side (A = S+P, B = D, suffix ``_ps``)
and on the dynamic side (A = S, B = D+P, suffix ``_pd``):

    unique_static  = R^2_AB - R^2_B
    unique_dynamic = R^2_AB - R^2_A
    shared         = R^2_A + R^2_B - R^2_AB
    unique_static + unique_dynamic + shared = R^2_AB,   dynamic_minus_static = R^2_B - R^2_A.

(With cross-validated R^2, ``shared`` can be slightly negative: suppression or overfitting.)
Note R^2_B - R^2_A = unique_dynamic - unique_static, so "dynamic alone explains more than static
alone" and "dynamic's unique part exceeds static's" are the same test.

Uncertainty: the out-of-fold predictions are held fixed and the R^2 values are recomputed on
sequence-bootstrap replicates (per-sequence sums of y, y^2 and squared errors), averaged over runs
as everywhere else; ``seed_sd`` is the spread over runs. This covers evaluation-sample
uncertainty, not refitting uncertainty. ``depth_sd`` (mean over runs of the in-range depth's
standard deviation) says whether there is depth variance to explain at all.

Sanity rows (``rule_prediction``): the ``oracle``'s depth is clip(1 + difficulty, 1, max_depth),
a function of the label only, so the rule predicts its decomposition to be the label's own
(the same regressions with y = that function of ``difficulty``): whatever the features explain of
the label, they explain of the oracle. ``random``'s depth is drawn independently of the token, so
the rule predicts R^2 ~ 0 for every set.
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

from anira.analysis._stats import (ADAPTIVE, BootstrapConfig, check_columns, check_one_config, group_rng, nanmean,
                                   percentile_ci, resample_counts, run_clusters, seed_sd, select)

Features = Sequence[str] | Mapping[str, Sequence[str]]  # one list for all tasks, or task -> list
MODELS = ("linear", "boosting")
PAPER_R2_SIZE_EARLY = 0.28  # the paper: graph size alone explains ~28% of ANIRA-E's depth variance (linear)
# the feature sets regressed on, by the classes they join ("size" = size alone)
SETS = {"static": ("static",), "dynamic": ("dynamic",), "progress": ("progress",),
        "both": ("static", "dynamic"), "static_progress": ("static", "progress"),
        "dynamic_progress": ("dynamic", "progress"), "all": ("static", "dynamic", "progress"), "size": ()}
# where progress goes: (suffix, side A = static, side B = dynamic), as keys of SETS
VARIANTS = (("", "static", "dynamic"), ("_ps", "static_progress", "dynamic"), ("_pd", "static", "dynamic_progress"))
PARTS = ("unique_static", "unique_dynamic", "shared", "dynamic_minus_static")
COMPONENTS = tuple(f"r2_{k}" for k in SETS) + tuple(p + v for v, _, _ in VARIANTS for p in PARTS) + ("unique_progress",)


def feature_sets(task: str, records: pd.DataFrame | None = None) -> dict[str, tuple[str, ...]]:
    """{"static", "dynamic", "progress", "categorical"} -> feature names of a registered task, read
    off its table (``Task.features``); ``size`` is static. With ``records``, only the features the
    task's rows carry (records of an earlier task design lack features added since; derived
    features need ``anira.tasks.features.with_derived_features`` first)."""
    from anira.tasks import task_class
    table = task_class(task).features
    out = {k: tuple(f.name for f in table if f.kind == k) for k in ("static", "dynamic", "progress")}
    out["categorical"] = tuple(f.name for f in table if f.categorical)
    if records is not None:
        rows = records[records["task"] == task] if "task" in records else records
        has = {c for c in rows.columns if rows[c].notna().any()}
        out = {k: tuple(f for f in v if f in has) for k, v in out.items()}
    return out


def default_feature_sets(task: str, records: pd.DataFrame | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(static, dynamic) of ``feature_sets`` (``size`` first among the static ones)."""
    fs = feature_sets(task, records)
    static = tuple(f for f in fs["static"] if f == "size") + tuple(f for f in fs["static"] if f != "size")
    return static, fs["dynamic"]


def _features_for(features: Features | None, task: str, what: str) -> list[str]:
    if isinstance(features, Mapping):
        if task not in features:
            raise ValueError(f"{what} features: no entry for task {task!r}; given for {sorted(features)}")
        return list(features[task])
    return list(features or ())


def make_model(model: str, seed: int = 0):
    """'linear': standardized OLS; 'boosting': histogram gradient boosting (non-linear check)."""
    if model == "linear":
        return make_pipeline(StandardScaler(), LinearRegression())
    if model == "boosting":
        return HistGradientBoostingRegressor(max_iter=100, random_state=seed)
    raise ValueError(f"model = {model!r} is not allowed; allowed values: {list(MODELS)}")


def design_matrix(run: pd.DataFrame, cols: Sequence[str], categorical: Sequence[str] = ()) -> np.ndarray:
    """(N, k) float matrix of ``cols``; categorical ones one-hot (first level dropped, so the
    intercept stays identifiable), every other column as it is. No column: (N, 0)."""
    parts = []
    for c in cols:
        if c in categorical:
            parts.append(pd.get_dummies(run[c].astype("category"), drop_first=True).to_numpy(dtype=float))
        else:
            parts.append(run[[c]].to_numpy(dtype=float))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(run), 0))


def oof_predictions(X: np.ndarray, y: np.ndarray, groups: np.ndarray, model: str, n_splits: int, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions with GroupKFold over sequences (deterministic). With no column, the
    training folds' mean (the baseline every R^2 is measured against)."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"cross-validation needs >= 2 sequences per run; got {n_groups}")
    pred = np.empty_like(y, dtype=float)
    base = make_model(model, seed)
    for tr, te in GroupKFold(n_splits=min(n_splits, n_groups)).split(X, y, groups):
        if X.shape[1] == 0:
            pred[te] = y[tr].mean()
        elif model == "linear":  # OLS with intercept via least squares (same fit as LinearRegression, no overhead)
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
    """(..., len(SETS)) R^2 in SETS order -> (..., len(COMPONENTS)) in COMPONENTS order."""
    keys = list(SETS)
    R = {k: r2[..., i] for i, k in enumerate(keys)}
    out = [R[k] for k in keys]
    for _, a, b in VARIANTS:
        ab = R["all"] if {a, b} != {"static", "dynamic"} else R["both"]
        out += [ab - R[b], ab - R[a], R[a] + R[b] - ab, R[b] - R[a]]
    out.append(R["all"] - R["both"])
    return np.stack(out, axis=-1)


def _sides(static, dynamic, progress, task, sub) -> dict[str, list[str]]:
    if static is None and dynamic is None:  # the task's table
        fs = feature_sets(task, sub)
        out = {k: list(fs[k]) for k in ("static", "dynamic", "progress")}
        if progress is not None:
            out["progress"] = _features_for(progress, task, "progress")
        return out | {"categorical": list(fs["categorical"])}
    return {"static": _features_for(static, task, "static"), "dynamic": _features_for(dynamic, task, "dynamic"),
            "progress": _features_for(progress, task, "progress"), "categorical": []}


def timing_decomposition(records: pd.DataFrame, static: Features | None = None, dynamic: Features | None = None,
                         progress: Features | None = None, groups: Sequence[str] = ("task", "mechanism"),
                         depth_col: str = "depth", model: Literal["linear", "boosting"] = "linear", n_splits: int = 5,
                         size_col: str = "size", split: str | None = "in", boot: BootstrapConfig | None = None,
                         per_run: bool = False) -> pd.DataFrame:
    """Cross-validated R^2 of depth on every set of SETS + the commonality parts of each VARIANT.

    static / dynamic / progress: feature names, or task -> names; all three None: the task's feature
    table (``feature_sets``; derived features are added with ``with_derived_features``). Given
    static and dynamic without progress: no progress features. Rows with a missing value in any
    used feature are dropped (``n_dropped``).
    Columns per group: for each c in COMPONENTS: c, c_lo, c_hi, c_seed_sd; then share_unique_static,
    share_unique_dynamic, share_shared (= part / r2_both), depth_sd (mean over runs of the depth's
    SD), n_seeds, n_tok, n_dropped, model, and the features used per class.
    With per_run, one row per run (no CIs).
    """
    from anira.tasks.features import with_derived_features

    boot, groups = boot or BootstrapConfig(), list(groups)
    make_model(model)
    df = select(records, split=split, eval_depth="train")
    check_one_config(df, groups)
    if static is None and dynamic is None:
        df = with_derived_features(df)
    rows = []
    for gkey, sub in df.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        task = str(sub["task"].iloc[0]) if "task" in sub else ""
        side = _sides(static, dynamic, progress, task, sub)
        if static is None and dynamic is None and not (side["static"] and side["dynamic"]):
            continue  # records without the task's feature columns (e.g. synthetic ones): nothing to regress on
        if not side["static"] or not side["dynamic"]:
            raise ValueError(f"group {gkey}: static ({side['static']}) and dynamic ({side['dynamic']}) feature "
                             f"lists must be non-empty")
        used = list(dict.fromkeys(side["static"] + side["dynamic"] + side["progress"] + [size_col]))
        check_columns(sub, used + [depth_col], "timing_decomposition")
        ok = sub[used + [depth_col]].notna().all(axis=1)
        n_dropped = int((~ok).sum())
        sub = sub[ok]
        rng = group_rng(boot, gkey)
        run_list = list(sub.groupby("run_id", sort=True))
        points = np.full((len(run_list), len(COMPONENTS)), np.nan)
        reps = np.full((len(run_list), boot.n_boot, len(COMPONENTS)), np.nan)
        sds = np.full(len(run_list), np.nan)
        for r, (run_id, run) in enumerate(run_list):
            rc = run_clusters(run)
            y = run[depth_col].to_numpy(dtype=float)
            sds[r] = y.std()
            if np.ptp(y) == 0 or len(rc.strata) < 2:
                continue  # constant depth: nothing to explain, R^2 undefined
            cols = {k: [c for kind in kinds for c in side[kind]] for k, kinds in SETS.items()}
            cols["size"] = [size_col]
            preds = [oof_predictions(design_matrix(run, c, side["categorical"]), y, rc.cluster, model, n_splits)
                     for c in cols.values()]
            n_cl = len(rc.strata)
            Sy, Syy, n = (np.bincount(rc.cluster, w, n_cl) for w in (y, y * y, np.ones_like(y)))
            SSE = np.stack([np.bincount(rc.cluster, (y - p) ** 2, n_cl) for p in preds], axis=1)  # (n_cl, sets)
            points[r] = _components(_r2_from_sums(Sy.sum(), Syy.sum(), n.sum(), SSE.sum(0)))
            K = resample_counts(rng, rc.strata, boot.n_boot)
            reps[r] = _components(_r2_from_sums(K @ Sy, K @ Syy, K @ n, K @ SSE))
            if per_run:
                rows.append(dict(zip(groups, gkey)) | {"run_id": run_id} | dict(zip(COMPONENTS, points[r]))
                            | dict(depth_sd=sds[r], n_tok=len(run), model=model))
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
        row |= dict(depth_sd=float(nanmean(sds, 0)) if len(sds) else np.nan,
                    n_seeds=int(np.sum(~np.isnan(points[:, 0]))), n_tok=len(sub), n_dropped=n_dropped, model=model,
                    static_features=" ".join(side["static"]), dynamic_features=" ".join(side["dynamic"]),
                    progress_features=" ".join(side["progress"]))
        rows.append(row)
    return pd.DataFrame(rows)


def rule_depth(records: pd.DataFrame) -> pd.Series:
    """The oracle's depth as a function of the label: clip(round(1 + difficulty), 1, max_depth)
    (``ModelConfig`` defaults oracle_offset = oracle_scale = 1)."""
    return np.clip(np.round(1.0 + records["difficulty"]), 1, records["max_depth"])


def rule_prediction(records: pd.DataFrame, model: Literal["linear", "boosting"] = "linear", n_splits: int = 5,
                    boot: BootstrapConfig | None = None, **kw) -> pd.DataFrame:
    """What the rule predicts for the sanity rows, in ``timing_decomposition``'s columns: for each
    task's ``oracle`` runs, the decomposition of ``rule_depth`` (the label's own decomposition); for
    ``random``, R^2 = 0 for every set (its depth is independent of the token)."""
    orc = records[records["mechanism"] == "oracle"]
    out = []
    if len(orc):
        out.append(timing_decomposition(orc.assign(rule_depth=rule_depth(orc)), depth_col="rule_depth", model=model,
                                        n_splits=n_splits, boot=boot, **kw))
    rnd = records.loc[records["mechanism"] == "random", ["task", "mechanism"]].drop_duplicates()
    if len(rnd):
        out.append(rnd.assign(**{c: 0.0 for c in COMPONENTS}, model=model))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def feature_importance(records: pd.DataFrame, static: Features | None = None, dynamic: Features | None = None,
                       progress: Features | None = None, groups: Sequence[str] = ("task", "mechanism"),
                       depth_col: str = "depth", model: Literal["linear", "boosting"] = "linear", n_repeats: int = 5,
                       seed: int = 0, split: str | None = "in") -> pd.DataFrame:
    """Per (group, feature): standardized coefficient and permutation importance, mean over runs.

    Features as in ``timing_decomposition`` (None: the task's table, progress included).
    coef_std: OLS coefficient with X and y standardized (a beta weight; NaN for 'boosting' and for
    categorical features). Collinear features (e.g. size and n_nodes) share their weight
    arbitrarily: read their sum. perm_importance: mean drop in R^2 when the feature is shuffled
    (sklearn permutation_importance, in-sample, ``n_repeats`` shuffles, fixed ``seed``).
    Columns: *groups, feature, kind, coef_std, coef_seed_sd, perm_importance, perm_seed_sd, n_seeds.
    """
    from anira.tasks.features import with_derived_features

    groups = list(groups)
    make_model(model)
    df = select(records, split=split, eval_depth="train")
    check_one_config(df, groups)
    if static is None and dynamic is None:
        df = with_derived_features(df)
    rows = []
    for gkey, sub in df.groupby(groups, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        task = str(sub["task"].iloc[0]) if "task" in sub else ""
        side = _sides(static, dynamic, progress, task, sub)
        kind = {f: k for k in ("progress", "dynamic", "static") for f in side[k]}
        feats = list(dict.fromkeys(side["static"] + side["dynamic"] + side["progress"]))
        check_columns(sub, feats + [depth_col], "feature_importance")
        sub = sub[sub[feats + [depth_col]].notna().all(axis=1)]
        coefs, perms = [], []
        for _, run in sub.groupby("run_id", sort=True):
            y = run[depth_col].to_numpy(dtype=float)
            if np.ptp(y) == 0:
                continue
            if side["categorical"]:  # one model over the one-hot design; permute each original column
                perms.append(_perm_importance_onehot(run, feats, side["categorical"], y, model, n_repeats, seed))
                coefs.append(np.full(len(feats), np.nan))
                continue
            X = run[feats].to_numpy(dtype=float)
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
            rows.append(dict(zip(groups, gkey)) | dict(feature=f, kind=kind[f],
                                                       coef_std=cm[j], coef_seed_sd=cs[j], perm_importance=pm[j],
                                                       perm_seed_sd=ps[j], n_seeds=len(C)))
    return pd.DataFrame(rows)


def _perm_importance_onehot(run, feats, categorical, y, model, n_repeats, seed) -> np.ndarray:
    """In-sample R^2 drop when one original column is shuffled, with categorical columns one-hot."""
    from sklearn.metrics import r2_score
    m = make_model(model, seed).fit(design_matrix(run, feats, categorical), y)
    base = r2_score(y, m.predict(design_matrix(run, feats, categorical)))
    rng = np.random.default_rng(seed)
    out = np.zeros(len(feats))
    for j, f in enumerate(feats):
        drops = []
        for _ in range(n_repeats):
            shuffled = run.assign(**{f: rng.permutation(run[f].to_numpy())})
            drops.append(base - r2_score(y, m.predict(design_matrix(shuffled, feats, categorical))))
        out[j] = np.mean(drops)
    return out


def example_depths(records: pd.DataFrame, task: str, example: int, split: str = "in",
                   mechanisms: Sequence[str] = ADAPTIVE, seed: int | None = None,
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


__all__ = ["timing_decomposition", "feature_importance", "feature_sets", "default_feature_sets", "example_depths",
           "rule_prediction", "rule_depth", "design_matrix", "oof_predictions", "make_model", "COMPONENTS", "SETS",
           "VARIANTS", "PARTS", "MODELS", "PAPER_R2_SIZE_EARLY"]
