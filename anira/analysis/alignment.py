"""Finding 1, alignment: does the allocated depth follow each token's ground-truth complexity?

Statistics (all on in-range tokens evaluated at the training ``max_depth``, sequence bootstrap,
mean over seeds; see ``_stats``):

- mean depth per difficulty level;
- rho = Spearman(depth, difficulty) over the scored tokens of a run, averaged over runs. A
  constant depth (fixed baseline, or a router that collapsed to one depth) gives rho = 0;
- in-range accuracy = fraction of answer tokens (``is_answer == 1``) predicted correctly;
- language task only: mean depth per token kind (grammar / free choice / answer needing k
  state-tracking steps) and the *complexity vs surprise* comparison below.

Complexity vs surprise (language). Surprise of a token = its surprisal -log p(target) under a
REFERENCE model: the deepest fixed-depth (dense) run of the same task, averaged over its seeds,
matched on (split, example, position). This measures how unpredictable the token still is with
all the compute (free-choice tokens stay surprising: their entropy is irreducible), and does not
depend on the adaptive model's own allocation. The model's own loss (``surprise="own"``) is
confounded (its depth changes its loss) and is used only when no reference run exists; the
output says which one was used. We report rho_c = Spearman(depth, difficulty),
rho_s = Spearman(depth, surprise) and rho_c - rho_s with a paired CI:
"complexity" if the CI of the difference is above 0, "surprise" if below, else "undecided".

Both together (``complexity_surprise_regression``): the two are confounded by token kind (answers
are complex and, once learned, unsurprising; free choices are surprising and need no facts), so
rank correlations taken one at a time can each look strong. The regression of depth on both,
standardised (depth steps per SD of each, in-range tokens of every kind), says what each adds
given the other; surprise is the reference model's loss, the model's own loss, or the
generator's entropy (``generator``: ln n_branching on the tokens drawn uniformly among what the
grammar allows, 0 on grammar tokens and answers; the other free tokens are left out). CIs come
from the same sequence bootstrap; depth "follows" complexity (or surprise) when that coefficient's CI
is above 0 and above the other's (the CI of their difference), "neither" when no coefficient's CI
is above 0, else "undecided".
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from anira.analysis._stats import (BootstrapConfig, _runs, check_columns, check_one_config, diff_ci, group_rng,
                                   mean_by, nanmean, percentile_ci, resample_counts, run_clusters, seed_sd, select,
                                   spearman_by, token_floor)
from anira.config import VARYING

KIND_NAMES = {0: "grammar", 1: "free", 2: "answer"}  # language `kind` codes


def depth_by_difficulty(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"),
                        depth_col: str = "depth", split: str | None = "in", answer_only: bool = False,
                        boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Mean depth per (groups, difficulty) with 95% sequence-bootstrap CI and seed spread.

    Columns: *groups, difficulty, mean_depth, ci_lo, ci_hi, seed_sd, n_seeds, n_seq, n_tok.
    """
    df = select(records, split=split, eval_depth="train", answer_only=answer_only)
    check_one_config(df, groups)
    out = mean_by(df, depth_col, ["difficulty"], groups, boot)
    return out.rename(columns={"mean": "mean_depth"})


def alignment_table(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"),
                    depth_col: str = "depth", answer_only: bool = False,
                    boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Per group: Spearman rho(depth, difficulty) with CI, in-range accuracy, mean depth.

    Columns: *groups, rho, rho_lo, rho_hi, rho_seed_sd, depth_constant, accuracy, acc_lo, acc_hi,
    acc_seed_sd, floor, mean_depth, depth_lo, depth_hi, depth_seed_sd, n_seeds, n_seq, n_tok;
    ``floor`` is the task's trivial floor on the same answer tokens (``Task.floor``), so an
    accuracy at it says the model learned nothing that needs depth.
    """
    groups = list(groups)
    df = select(records, split="in", eval_depth="train", answer_only=answer_only)
    check_columns(df, ["difficulty", depth_col, "correct", "is_answer"], "alignment_table")
    check_one_config(df, groups)
    rho, _ = spearman_by(df, depth_col, ["difficulty"], groups, boot)
    rho = rho.rename(columns={"rho_difficulty": "rho", "rho_difficulty_lo": "rho_lo", "rho_difficulty_hi": "rho_hi",
                              "rho_difficulty_seed_sd": "rho_seed_sd", "x_constant": "depth_constant"})
    df1 = df.assign(_all=0)
    dep = mean_by(df1, depth_col, ["_all"], groups, boot).drop(columns=["_all", "n_seeds", "n_seq", "n_tok"])
    dep = dep.rename(columns={"mean": "mean_depth", "ci_lo": "depth_lo", "ci_hi": "depth_hi", "seed_sd": "depth_seed_sd"})
    ans = df1[df1["is_answer"] == 1]
    acc = mean_by(ans, "correct", ["_all"], groups, boot).drop(columns=["_all", "n_seeds", "n_seq", "n_tok"])
    acc = acc.rename(columns={"mean": "accuracy", "ci_lo": "acc_lo", "ci_hi": "acc_hi", "seed_sd": "acc_seed_sd"})
    floor = ans.assign(floor=token_floor(ans)).groupby(groups, dropna=False)["floor"].mean().reset_index()
    out = rho.merge(acc, on=groups, how="left").merge(floor, on=groups, how="left").merge(dep, on=groups, how="left")
    cols = groups + ["rho", "rho_lo", "rho_hi", "rho_seed_sd", "depth_constant", "accuracy", "acc_lo", "acc_hi",
                     "acc_seed_sd", "floor", "mean_depth", "depth_lo", "depth_hi", "depth_seed_sd", "n_seeds", "n_seq", "n_tok"]
    return out[cols]


def token_kind_labels(kind: pd.Series, difficulty: pd.Series) -> pd.Series:
    """'grammar', 'free' or 'answer k=<difficulty>' from the language task's ``kind`` code."""
    bad = sorted(set(kind.unique()) - set(KIND_NAMES))
    if bad:
        raise ValueError(f"kind values {bad} are not allowed; allowed: {KIND_NAMES}")
    lab = kind.map(KIND_NAMES)
    is_ans = kind == 2
    return lab.where(~is_ans, "answer k=" + difficulty.astype(int).astype(str))


def depth_by_kind(records: pd.DataFrame, groups: Sequence[str] = ("task", "mechanism"), kind_col: str = "kind",
                  depth_col: str = "depth", boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Mean depth per token kind (grammar, free, answer k=1, 2, ...) with CIs (language task).

    Columns: *groups, token_kind, kind_order, mean_depth, ci_lo, ci_hi, seed_sd, n_seeds, n_seq, n_tok.
    """
    df = select(records, split="in", eval_depth="train")
    check_columns(df, [kind_col, "difficulty", depth_col], "depth_by_kind")
    check_one_config(df, groups)
    df = df.assign(token_kind=token_kind_labels(df[kind_col], df["difficulty"]))
    out = mean_by(df, depth_col, ["token_kind"], groups, boot).rename(columns={"mean": "mean_depth"})
    order = {"grammar": -2, "free": -1}
    out.insert(len(groups) + 1, "kind_order",
               out["token_kind"].map(lambda k: order.get(k, int(k.split("=")[1]) if "=" in k else 99)))
    return out.sort_values(list(groups) + ["kind_order"], kind="stable").reset_index(drop=True)


def reference_surprise(records: pd.DataFrame, reference_mechanism: str = "fixed") -> pd.DataFrame:
    """Per (task, split, example, position): mean loss of the deepest reference runs, or empty.

    Deepest = the largest ``depth`` used by any reference run of that task (for a fixed-depth run,
    its depth); the loss is averaged over that depth's runs (seeds).
    """
    ref = select(records, split=None, eval_depth="train", mechanism=reference_mechanism)
    if ref.empty:
        return pd.DataFrame(columns=["task", "split", "example", "position", "surprise"])
    run_depth = ref.groupby("run_id")["depth"].max()
    ref = ref.assign(_d=ref["run_id"].map(run_depth))
    ref = ref[ref["_d"] == ref.groupby("task")["_d"].transform("max")]
    return (ref.groupby(["task", "split", "example", "position"], sort=True)["loss"].mean()
            .rename("surprise").reset_index())


def complexity_vs_surprise(records: pd.DataFrame, task: str = "language",
                           mechanisms: Sequence[str] = VARYING,
                           surprise: Literal["reference", "own"] = "reference", reference_mechanism: str = "fixed",
                           depth_col: str = "depth", boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Does depth follow complexity (difficulty) or surprise (loss)? See the module docstring.

    Columns: task, mechanism, surprise_source, rho_complexity (+ _lo, _hi), rho_surprise (+ _lo,
    _hi), rho_diff, rho_diff_lo, rho_diff_hi, follows, n_seeds, n_tok.
    """
    if surprise not in ("reference", "own"):
        raise ValueError(f"surprise = {surprise!r} is not allowed; allowed values: ['reference', 'own']")
    boot = boot or BootstrapConfig()
    df = select(records, split="in", eval_depth="train", task=task, mechanism=list(mechanisms))
    check_one_config(df, ["task", "mechanism"])
    source = surprise
    if surprise == "reference":
        ref = reference_surprise(select(records, split="in", eval_depth="train", task=task), reference_mechanism)
        if ref.empty:
            source = "own"
        else:
            df = df.merge(ref, on=["task", "split", "example", "position"], how="inner")
    if source == "own":
        df = df.assign(surprise=df["loss"])
    rho, reps = spearman_by(df, depth_col, ["difficulty", "surprise"], ["task", "mechanism"], boot)
    rows = []
    for _, r in rho.iterrows():
        rep = reps[(r["task"], r["mechanism"])]
        lo, hi = diff_ci(rep[:, 0], rep[:, 1], boot.ci)
        d = r["rho_difficulty"] - r["rho_surprise"]
        follows = "complexity" if lo > 0 else "surprise" if hi < 0 else "undecided"
        rows.append(dict(task=r["task"], mechanism=r["mechanism"], surprise_source=source,
                         rho_complexity=r["rho_difficulty"], rho_complexity_lo=r["rho_difficulty_lo"],
                         rho_complexity_hi=r["rho_difficulty_hi"], rho_surprise=r["rho_surprise"],
                         rho_surprise_lo=r["rho_surprise_lo"], rho_surprise_hi=r["rho_surprise_hi"],
                         rho_diff=d, rho_diff_lo=lo, rho_diff_hi=hi, follows=follows,
                         n_seeds=r["n_seeds"], n_tok=r["n_tok"]))
    return pd.DataFrame(rows)


SURPRISE_SOURCES = ("reference", "own", "generator")


def generator_entropy(records: pd.DataFrame) -> pd.Series:
    """The generator's entropy (nats) of each token given the story so far, where it is known
    exactly: ln n_branching on tokens drawn uniformly (``uniform``), 0 on answers (fixed by the
    story); NaN on the free tokens whose draw mixes weighted choices."""
    check_columns(records, ["kind", "uniform", "n_branching"], "generator_entropy")
    ent = np.log(records["n_branching"].astype(float)).where(records["uniform"] == 1)
    return ent.mask(records["kind"] == 2, 0.0)


def _wls(S: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Solutions of the normal equations S b = R, batched: S (..., p, p), R (..., p); NaN where singular."""
    out = np.full(R.shape, np.nan)
    ok = np.abs(np.linalg.det(S)) > 1e-9 * np.maximum(1.0, np.abs(S).max(axis=(-1, -2))) ** S.shape[-1]
    out[ok] = np.linalg.solve(S[ok], R[ok][..., None])[..., 0]
    return out


def _follows(lo: np.ndarray, dlo: float, dhi: float) -> str:
    """"complexity" / "surprise": its coefficient's CI above 0 and above the other's (CI of the
    difference); "neither" when no coefficient's CI is above 0; else "undecided"."""
    if lo[0] > 0 and dlo > 0:
        return "complexity"
    if lo[1] > 0 and dhi < 0:
        return "surprise"
    return "neither" if not (lo[0] > 0 or lo[1] > 0) else "undecided"


def complexity_surprise_regression(records: pd.DataFrame, task: str = "language",
                                   mechanisms: Sequence[str] = VARYING,
                                   surprise: Literal["reference", "own", "generator"] = "reference",
                                   reference_mechanism: str = "fixed", depth_col: str = "depth",
                                   boot: BootstrapConfig | None = None) -> pd.DataFrame:
    """Depth regressed on complexity (difficulty) and surprise together (module docstring).

    Per run: OLS of depth on [1, z(difficulty), z(surprise)] over the in-range tokens (z: the run's
    own mean and SD), bootstrapped over sequences; per mechanism the mean over runs (seeds).
    Columns: task, mechanism, surprise_source, beta_complexity (+ _lo, _hi, _seed_sd),
    beta_surprise (+ _lo, _hi, _seed_sd), beta_diff (+ _lo, _hi), follows, r2, n_seeds, n_tok.
    With ``reference`` and no reference run, the model's own loss is used (surprise_source says so).
    """
    if surprise not in SURPRISE_SOURCES:
        raise ValueError(f"surprise = {surprise!r} is not allowed; allowed values: {list(SURPRISE_SOURCES)}")
    boot = boot or BootstrapConfig()
    df = select(records, split="in", eval_depth="train", task=task, mechanism=list(mechanisms))
    check_one_config(df, ["task", "mechanism"])
    source = surprise
    if surprise == "reference":
        ref = reference_surprise(select(records, split="in", eval_depth="train", task=task), reference_mechanism)
        if ref.empty:
            source = "own"
        else:
            df = df.merge(ref, on=["task", "split", "example", "position"], how="inner")
    if source == "own":
        df = df.assign(surprise=df["loss"])
    elif source == "generator":
        df = df.assign(surprise=generator_entropy(df))
    df = df[df["surprise"].notna() & df[depth_col].notna()]
    rows = []
    for (tk, mech), sub in df.groupby(["task", "mechanism"], sort=True):
        rng = group_rng(boot, (tk, mech, "regression", source))
        runs = _runs(sub)
        points = np.full((len(runs), 3), np.nan)  # beta_c, beta_s, r2
        reps = np.full((len(runs), boot.n_boot, 2), np.nan)
        for r, (_, run) in enumerate(runs):
            y = run[depth_col].to_numpy(dtype=float)
            cols = []
            for name in ("difficulty", "surprise"):
                v = run[name].to_numpy(dtype=float)
                sd = v.std()
                cols.append((v - v.mean()) / sd if sd > 0 else np.zeros_like(v))
            X = np.column_stack([np.ones_like(y), *cols])
            rc = run_clusters(run)
            n_cl = len(rc.strata)
            S = np.zeros((n_cl, 3, 3))
            R = np.zeros((n_cl, 3))
            np.add.at(S, rc.cluster, X[:, :, None] * X[:, None, :])
            np.add.at(R, rc.cluster, X * y[:, None])
            b = _wls(S.sum(0)[None], R.sum(0)[None])[0]
            resid = y - X @ b
            r2 = 1 - resid.var() / y.var() if y.var() > 0 else np.nan
            points[r] = [b[1], b[2], r2]
            K = resample_counts(rng, rc.strata, boot.n_boot)
            reps[r] = _wls(np.einsum("bc,cij->bij", K, S), K @ R)[:, 1:]
        agg = nanmean(reps, 0)
        lo, hi = percentile_ci(agg, boot.ci)
        dlo, dhi = diff_ci(agg[:, 0], agg[:, 1], boot.ci)
        mean, sd = nanmean(points, 0), seed_sd(points)
        diff = mean[0] - mean[1]
        rows.append(dict(task=tk, mechanism=mech, surprise_source=source,
                         beta_complexity=mean[0], beta_complexity_lo=lo[0], beta_complexity_hi=hi[0],
                         beta_complexity_seed_sd=sd[0], beta_surprise=mean[1], beta_surprise_lo=lo[1],
                         beta_surprise_hi=hi[1], beta_surprise_seed_sd=sd[1], beta_diff=diff, beta_diff_lo=dlo,
                         beta_diff_hi=dhi, follows=_follows(lo, dlo, dhi),
                         r2=mean[2], n_seeds=int(np.sum(~np.isnan(points[:, 0]))), n_tok=len(sub)))
    return pd.DataFrame(rows)


__all__ = ["depth_by_difficulty", "alignment_table", "depth_by_kind", "token_kind_labels", "reference_surprise",
           "complexity_vs_surprise", "complexity_surprise_regression", "generator_entropy", "SURPRISE_SOURCES",
           "KIND_NAMES"]
