"""Shared statistics for the analyses: record checks, run selection, the sequence bootstrap and a
frequency-weighted Spearman correlation.

Resampling unit. Tokens of one sequence are not independent (one model, one input), so every
confidence interval resamples whole SEQUENCES. A sequence is a *cluster*
``(run_id, split, example)``; clusters are resampled with replacement inside each *stratum*
``(run_id, split)``, so every replicate keeps the design (same runs, same number of in- and
out-of-range sequences per run). The same example evaluated at several ``eval_max_depth`` values
is one cluster, so differences between evaluation depths are paired.

Seeds. A group (e.g. one task x mechanism) usually holds one run per training seed. Every
statistic is computed per run and then averaged over runs:

    stat_group = (1 / R) sum_r stat_r                (R runs with data in that cell)

Its CI is the percentile interval of the same average over bootstrap replicates (each run
resampled independently). ``seed_sd`` is the standard deviation of ``stat_r`` over runs: the
seed-to-seed spread, reported beside (not folded into) the sequence-level CI.

Replicates are drawn as multinomial counts K (B, n_clusters) per stratum, so any statistic that is
a ratio of per-cluster sums is one matrix product: mean = (K @ sum_value) / (K @ count).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse

from anira.config import ADAPTIVE, MECHANISMS, check_choice, check_fields, check_range  # noqa: F401 (re-exported)

SPLITS = ("in", "out", "wide")  # training range / extrapolation range / wider inputs only (`addition`)
RUN_COLUMNS = ("run_id", "task", "mechanism", "seed", "beta", "max_depth", "eval_max_depth")
TOKEN_COLUMNS = ("split", "example", "position", "correct", "loss", "depth", "expected_depth",
                 "difficulty", "size", "is_answer")
RECORD_COLUMNS = RUN_COLUMNS + TOKEN_COLUMNS  # the schema of records.csv.gz (plus task features)


def token_floor(records: pd.DataFrame) -> pd.Series:
    """Per token: its task's trivial floor (``Task.floor``: the expected accuracy of a reader that
    does no multi-step computation). NaN for a task that defines none or whose feature columns the
    records lack (e.g. synthetic records)."""
    from anira.tasks import task_class

    out = pd.Series(np.nan, index=records.index, dtype=float)
    for task, sub in records.groupby("task", sort=False):
        try:
            out.loc[sub.index] = np.asarray(task_class(task).floor(sub), dtype=float)
        except (KeyError, ValueError, NotImplementedError):
            continue
    return out


@dataclass
class BootstrapConfig:
    n_boot: int = 2000  # replicates; 2000 keeps 95% percentile endpoints stable to ~1% of their width
    ci: float = 0.95  # two-sided coverage of the percentile interval
    seed: int = 0  # base seed; each group draws from its own stream seeded by (seed, group key)

    def __post_init__(self) -> None:
        check_fields(self)
        if not isinstance(self.n_boot, int) or self.n_boot < 10:
            raise ValueError(f"n_boot = {self.n_boot!r} must be an integer >= 10")
        check_range("ci", self.ci, 0.5, 0.999)


def check_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise ValueError naming the missing columns (and those present)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: records lack column(s) {missing}; present: {sorted(map(str, df.columns))}")


def select(records: pd.DataFrame, split: str | None = "in", eval_depth: str | int | None = "train",
           answer_only: bool = False, **equals: Any) -> pd.DataFrame:
    """Rows of ``records`` for one analysis.

    split: "in", "out" or None (both). eval_depth: "train" keeps rows evaluated at the training
    ``max_depth`` (eval_max_depth == max_depth), an int keeps that ``eval_max_depth``, None keeps all.
    answer_only keeps ``is_answer == 1``. ``equals``: column=value or column=[values].
    """
    mask = np.ones(len(records), dtype=bool)
    if split is not None:
        check_choice("split", split, SPLITS)
        check_columns(records, ["split"], "select")
        mask &= (records["split"] == split).to_numpy()
    if eval_depth is not None:
        check_columns(records, ["eval_max_depth", "max_depth"], "select")
        if eval_depth == "train":
            mask &= (records["eval_max_depth"] == records["max_depth"]).to_numpy()
        elif isinstance(eval_depth, (int, np.integer)) and not isinstance(eval_depth, bool):
            mask &= (records["eval_max_depth"] == eval_depth).to_numpy()
        else:
            raise ValueError(f"eval_depth = {eval_depth!r} is not allowed; allowed: 'train', an int, or None")
    if answer_only:
        check_columns(records, ["is_answer"], "select")
        mask &= (records["is_answer"] == 1).to_numpy()
    for col, val in equals.items():
        check_columns(records, [col], "select")
        vals = list(val) if isinstance(val, (list, tuple, set)) else [val]
        mask &= records[col].isin(vals).to_numpy()
    return records.loc[mask]


def check_one_config(records: pd.DataFrame, groups: Sequence[str], cols: Sequence[str] = ("beta", "max_depth")) -> None:
    """Refuse groups that silently mix training configurations (e.g. several beta values).

    A table per task x mechanism must describe one configuration; with a beta sweep in the
    records, filter first (``select(records, beta=...)``) or add "beta" to ``groups``.
    """
    cols = [c for c in cols if c in records.columns and c not in groups]
    if records.empty:
        return
    fixed_depth = _fixed_depths(records) if {"mechanism", "depth", "run_id"} <= set(records.columns) else None
    for key, sub in records.groupby(list(groups), sort=True, dropna=False):
        where = dict(zip(groups, _as_tuple(key)))
        for c in cols:
            vals = sorted(sub[c].dropna().unique().tolist())
            if len(vals) > 1:
                raise ValueError(f"group {where} mixes {c} values {vals}; "
                                 f"filter with select(records, {c}=...) or add {c!r} to groups")
        if fixed_depth is not None:
            ids = [r for r in sub["run_id"].unique() if r in fixed_depth.index]
            depths = sorted(fixed_depth.loc[ids].unique().tolist())
            if len(depths) > 1:
                raise ValueError(f"group {where} mixes fixed-depth runs of depths {depths}; keep one depth "
                                 f"(run_table(records) lists runs; select(records, run_id=[...]))")


def _fixed_depths(records: pd.DataFrame) -> pd.Series | None:
    """run_id -> depth of each fixed-depth run, read at its training max_depth."""
    fx = records[records["mechanism"] == "fixed"]
    if {"eval_max_depth", "max_depth"} <= set(fx.columns):
        fx = fx[fx["eval_max_depth"] == fx["max_depth"]]
    return fx.groupby("run_id")["depth"].max() if len(fx) else None


def run_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its configuration columns, ``fixed_depth`` (the depth a fixed run used,
    NaN otherwise) and its number of token rows, to choose runs for an analysis."""
    check_columns(records, ["run_id", "mechanism", "depth"], "run_table")
    cols = [c for c in ("run_id", "task", "mechanism", "seed", "beta", "max_depth") if c in records.columns]
    out = records.groupby("run_id", sort=True).agg(**{c: (c, "first") for c in cols if c != "run_id"},
                                                   n_tokens=("depth", "size")).reset_index()
    fd = _fixed_depths(records)
    out.insert(len(cols), "fixed_depth", out["run_id"].map(fd) if fd is not None else np.nan)
    return out


def _as_tuple(key: Any) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def group_key(key: Any) -> tuple:
    """A group key as a tuple with NaN replaced by None, so that keys of groups formed with
    ``dropna=False`` (e.g. ``fixed_depth`` = NaN for adaptive runs) compare equal across groupbys
    (NaN != NaN would make every dictionary lookup of such a group miss)."""
    return tuple(None if isinstance(v, float) and v != v else v for v in _as_tuple(key))


def group_rng(boot: BootstrapConfig, key: Any) -> np.random.Generator:
    """A generator that depends only on the base seed and the group key (stable across tables)."""
    return np.random.default_rng([boot.seed, zlib.crc32(repr(key).encode())])


def resample_counts(rng: np.random.Generator, strata: np.ndarray, n_boot: int) -> np.ndarray:
    """Bootstrap counts K (B, n_clusters): clusters resampled with replacement within each stratum.

    strata: (n_clusters,) integer stratum of each cluster. Row b of K says how often each cluster
    appears in replicate b; each stratum's counts sum to its size.
    """
    K = np.zeros((n_boot, len(strata)))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        K[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
    return K


@dataclass
class RunClusters:
    """One run's tokens mapped onto its sequences (clusters) and strata."""

    cluster: np.ndarray  # (N,) cluster index of each token
    strata: np.ndarray  # (n_clusters,) stratum (split) of each cluster


def run_clusters(run: pd.DataFrame) -> RunClusters:
    codes, uniq = pd.MultiIndex.from_arrays([run["split"], run["example"]]).factorize(sort=True)
    strata, _ = pd.factorize(uniq.get_level_values(0), sort=True)  # clusters sorted by (split, example)
    return RunClusters(cluster=codes.astype(np.int64), strata=np.asarray(strata, dtype=np.int64))


def percentile_ci(reps: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN replicates."""
    a = (1.0 - ci) / 2.0
    with np.errstate(all="ignore"), _quiet():
        lo = np.nanquantile(reps, a, axis=0)
        hi = np.nanquantile(reps, 1.0 - a, axis=0)
    return lo, hi


class _quiet:
    """Silence the 'All-NaN slice' / 'Mean of empty slice' warnings of nan-reductions."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with _quiet():
        return np.nanmean(a, axis=axis)


def seed_sd(points: np.ndarray) -> np.ndarray:
    """SD over runs (axis 0) of per-run statistics; NaN with fewer than two runs."""
    with _quiet():
        n = np.sum(~np.isnan(points), axis=0)
        sd = np.nanstd(points, axis=0, ddof=1)
    return np.where(n >= 2, sd, np.nan)


def _runs(sub: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    return list(sub.groupby("run_id", sort=True))


def mean_by(records: pd.DataFrame, value: str, by: Sequence[str], groups: Sequence[str],
            boot: BootstrapConfig | None = None, return_reps: bool = False,
            ) -> pd.DataFrame | tuple[pd.DataFrame, dict[tuple, tuple[list[tuple], np.ndarray]]]:
    """Mean of ``value`` per (groups, by) cell with a sequence-bootstrap CI and the seed spread.

    Per run r and cell c:  m_rc = sum_{tokens in c} value / #tokens in c;  the cell's value is
    mean_r m_rc. Replicates use the same resampled sequences for every cell of a group, so
    differences between cells (e.g. out - in, eval depth 12 - 8) have paired CIs.

    Returns columns: *groups, *by, mean, ci_lo, ci_hi, seed_sd, n_seeds, n_seq, n_tok.
    With return_reps, also {group key: (cell keys, replicates (B, n_cells))}, keyed by ``group_key``.
    """
    boot = boot or BootstrapConfig()
    groups, by = list(groups), list(by)
    check_columns(records, groups + by + [value, "run_id", "split", "example"], "mean_by")
    rows, all_reps = [], {}
    for gkey, sub in records.groupby(groups, sort=True, dropna=False):
        gkey = _as_tuple(gkey)
        cell_codes, cells = pd.MultiIndex.from_frame(sub[by]).factorize(sort=True)
        n_cells = len(cells)
        rng = group_rng(boot, gkey)
        runs = _runs(sub.assign(_cell=cell_codes))
        points = np.full((len(runs), n_cells), np.nan)
        reps = np.full((len(runs), boot.n_boot, n_cells), np.nan)
        n_seq = np.zeros(n_cells, dtype=int)
        n_tok = np.zeros(n_cells, dtype=int)
        for r, (_, run) in enumerate(runs):
            rc = run_clusters(run)
            c = run["_cell"].to_numpy()
            v = run[value].to_numpy(dtype=float)
            n_cl = len(rc.strata)
            flat = rc.cluster * n_cells + c
            S = np.bincount(flat, v, n_cl * n_cells).reshape(n_cl, n_cells)  # per-sequence sums
            C = np.bincount(flat, None, n_cl * n_cells).reshape(n_cl, n_cells).astype(float)  # and counts
            with np.errstate(invalid="ignore", divide="ignore"):
                points[r] = S.sum(0) / C.sum(0)
                K = resample_counts(rng, rc.strata, boot.n_boot)
                reps[r] = (K @ S) / (K @ C)
            n_seq += (C > 0).sum(0)
            n_tok += C.sum(0).astype(int)
        mean = nanmean(points, 0)
        agg = nanmean(reps, 0)  # (B, n_cells)
        lo, hi = percentile_ci(agg, boot.ci)
        sd = seed_sd(points)
        n_seeds = np.sum(~np.isnan(points), axis=0)
        cell_keys = [tuple(k) if isinstance(k, tuple) else (k,) for k in cells]
        for j, ck in enumerate(cell_keys):
            rows.append(dict(zip(groups, gkey)) | dict(zip(by, ck)) | dict(
                mean=mean[j], ci_lo=lo[j], ci_hi=hi[j], seed_sd=sd[j], n_seeds=int(n_seeds[j]),
                n_seq=int(n_seq[j]), n_tok=int(n_tok[j])))
        all_reps[group_key(gkey)] = (cell_keys, agg)
    out = pd.DataFrame(rows, columns=groups + by + ["mean", "ci_lo", "ci_hi", "seed_sd", "n_seeds", "n_seq", "n_tok"])
    return (out, all_reps) if return_reps else out


# --- Spearman with frequency weights -----------------------------------------------------------

def weighted_ranks(x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks of ``x`` in the data set where token i appears W[b, i] times.

    x: (N,), W: (b, N) non-negative counts. A tie group g of total weight W_g preceded by weight
    C_g occupies ranks C_g + 1 .. C_g + W_g, so its mid-rank is C_g + (W_g + 1) / 2. This equals
    scipy.stats.rankdata on np.repeat(x, W[b]). Returns ranks (b, N) and the number of distinct
    values present per row (b,) (1 means x is constant in that replicate).
    """
    _, g = np.unique(x, return_inverse=True)
    G = int(g.max()) + 1 if len(g) else 0
    M = scipy.sparse.csr_matrix((np.ones(len(x)), (np.arange(len(x)), g)), shape=(len(x), G))
    Wg = np.asarray((M.T @ W.T).T)  # (b, G)
    before = np.cumsum(Wg, axis=1) - Wg
    ranks = before[:, g] + (Wg[:, g] + 1.0) / 2.0
    return ranks, (Wg > 0).sum(axis=1)


def weighted_spearman(x: np.ndarray, y: np.ndarray, W: np.ndarray, x_constant_is_zero: bool = True) -> np.ndarray:
    """Spearman rho(x, y) per row of frequency weights W (b, N): Pearson correlation of mid-ranks.

    rho = sum w (rx - mx)(ry - my) / sqrt(sum w (rx - mx)^2 * sum w (ry - my)^2), weighted means m.
    When x is constant (e.g. a fixed depth) rho is set to 0 if ``x_constant_is_zero``: an
    allocation that never varies carries no information about y. A constant y gives NaN.
    """
    rx, nx = weighted_ranks(x, W)
    ry, ny = weighted_ranks(y, W)
    sw = W.sum(axis=1, keepdims=True)
    dx = rx - (W * rx).sum(axis=1, keepdims=True) / sw
    dy = ry - (W * ry).sum(axis=1, keepdims=True) / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (W * dx * dy).sum(1) / np.sqrt((W * dx * dx).sum(1) * (W * dy * dy).sum(1))
    rho = np.where(nx <= 1, 0.0 if x_constant_is_zero else np.nan, rho)
    return np.where(ny <= 1, np.nan, rho)


def spearman_from_tables(T: np.ndarray, x_constant_is_zero: bool = True) -> np.ndarray:
    """Spearman rho from contingency tables T (b, Gx, Gy) of counts over sorted x and y values.

    Same mid-rank definition as ``weighted_spearman`` (which it equals on discrete data), but the
    cost is O(b Gx Gy) instead of O(b N): the fast path for integer depth vs integer difficulty.
    """
    wx, wy = T.sum(2), T.sum(1)  # (b, Gx), (b, Gy)
    n = wx.sum(1, keepdims=True)
    rx = np.cumsum(wx, 1) - wx + (wx + 1.0) / 2.0
    ry = np.cumsum(wy, 1) - wy + (wy + 1.0) / 2.0
    dx = rx - (wx * rx).sum(1, keepdims=True) / n
    dy = ry - (wy * ry).sum(1, keepdims=True) / n
    cov = np.einsum("bij,bi,bj->b", T, dx, dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = cov / np.sqrt((wx * dx * dx).sum(1) * (wy * dy * dy).sum(1))
    rho = np.where((wx > 0).sum(1) <= 1, 0.0 if x_constant_is_zero else np.nan, rho)
    return np.where((wy > 0).sum(1) <= 1, np.nan, rho)


def _coarsen(v: np.ndarray, levels: int) -> np.ndarray:
    """Rank-preserving quantile bins 0..levels-1 (ties only inside a bin)."""
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, levels + 1)[1:-1]))
    return np.searchsorted(edges, v, side="right")


def _run_spearman(xv: np.ndarray, yv: np.ndarray, cluster: np.ndarray, K: np.ndarray, chunk: int,
                  max_cells: int = 4096, exact_reps: bool = False) -> tuple[float, np.ndarray]:
    """Point rho and bootstrap replicates (B,) for one run.

    The point estimate is always exact. Replicates use contingency tables (``spearman_from_tables``)
    when x and y have at most ``max_cells`` value pairs; otherwise (a continuous variable such as
    the loss) the many-valued variable is coarsened to quantile bins so the table fits, which moves
    replicate rhos by ~1e-4 (measured with 256 bins on 20k tokens). ``exact_reps`` uses per-token
    frequency weights instead (O(B N), ~100x slower).
    """
    ux, gx = np.unique(xv, return_inverse=True)
    uy, gy = np.unique(yv, return_inverse=True)
    Gx, Gy = len(ux), len(uy)
    n_cl = K.shape[1]

    def tables(gx, gy, Gx, Gy):
        return np.bincount((cluster * Gx + gx) * Gy + gy, None, n_cl * Gx * Gy).reshape(n_cl, Gx * Gy)

    if Gx * Gy <= max_cells:
        T = tables(gx, gy, Gx, Gy)
        point = spearman_from_tables(T.sum(0).reshape(1, Gx, Gy).astype(float))[0]
        return point, spearman_from_tables((K @ T).reshape(-1, Gx, Gy))
    point = weighted_spearman(xv, yv, np.ones((1, len(xv))))[0]
    if exact_reps or max_cells < 4:
        step = max(1, chunk // max(len(xv), 1))
        reps = np.concatenate([weighted_spearman(xv, yv, K[b0:b0 + step][:, cluster])  # (b, N) token weights
                               for b0 in range(0, K.shape[0], step)])
        return point, reps
    side = int(np.sqrt(max_cells))
    if Gx <= side:
        gy = _coarsen(yv, max_cells // Gx)
    elif Gy <= side:
        gx = _coarsen(xv, max_cells // Gy)
    else:
        gx, gy = _coarsen(xv, side), _coarsen(yv, side)
    Gx, Gy = int(gx.max()) + 1, int(gy.max()) + 1
    reps = spearman_from_tables((K @ tables(gx, gy, Gx, Gy)).reshape(-1, Gx, Gy))
    if Gx == 1 and len(ux) > 1:  # coarsening never turns a varying x into a constant one
        reps = np.full_like(reps, np.nan)
    return point, reps


def spearman_by(records: pd.DataFrame, x: str, ys: Sequence[str], groups: Sequence[str],
                boot: BootstrapConfig | None = None, chunk: int = 4_000_000,
                ) -> tuple[pd.DataFrame, dict[tuple, np.ndarray]]:
    """Spearman rho(x, y) for each y in ``ys``, per group: mean over runs, sequence-bootstrap CI.

    ``x`` is the allocation (depth): a constant x gives rho = 0 (see ``weighted_spearman``).
    All y's share the resampled sequences, so differences rho(x, y1) - rho(x, y2) are paired.
    Returns a frame (*groups, n_seeds, n_seq, n_tok, and per y: rho_<y>, rho_<y>_lo, rho_<y>_hi,
    rho_<y>_seed_sd, x_constant) and {group_key: replicates (B, len(ys)) averaged over runs}.
    """
    boot = boot or BootstrapConfig()
    groups, ys = list(groups), list(ys)
    check_columns(records, groups + ys + [x, "run_id", "split", "example"], "spearman_by")
    rows, all_reps = [], {}
    for gkey, sub in records.groupby(groups, sort=True, dropna=False):
        gkey = _as_tuple(gkey)
        rng = group_rng(boot, gkey)
        runs = _runs(sub)
        points = np.full((len(runs), len(ys)), np.nan)
        reps = np.full((len(runs), boot.n_boot, len(ys)), np.nan)
        n_seq = 0
        for r, (_, run) in enumerate(runs):
            rc = run_clusters(run)
            n_seq += len(rc.strata)
            K = resample_counts(rng, rc.strata, boot.n_boot)
            xv = run[x].to_numpy(dtype=float)
            for j, y in enumerate(ys):
                yv = run[y].to_numpy(dtype=float)
                ok = ~(np.isnan(xv) | np.isnan(yv))  # tokens lacking a value do not count
                if ok.sum() >= 2:
                    points[r, j], reps[r, :, j] = _run_spearman(xv[ok], yv[ok], rc.cluster[ok], K, chunk)
        agg = nanmean(reps, 0)
        lo, hi = percentile_ci(agg, boot.ci)
        mean, sd = nanmean(points, 0), seed_sd(points)
        row = dict(zip(groups, gkey)) | dict(n_seeds=int(np.sum(~np.isnan(points[:, 0]))), n_seq=n_seq,
                                             n_tok=len(sub), x_constant=bool(sub[x].nunique() <= 1))
        for j, y in enumerate(ys):
            row |= {f"rho_{y}": mean[j], f"rho_{y}_lo": lo[j], f"rho_{y}_hi": hi[j], f"rho_{y}_seed_sd": sd[j]}
        rows.append(row)
        all_reps[group_key(gkey)] = agg
    return pd.DataFrame(rows), all_reps


def diff_ci(reps_a: np.ndarray, reps_b: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile CI of a - b from paired replicates."""
    lo, hi = percentile_ci(np.asarray(reps_a) - np.asarray(reps_b), ci)
    return float(lo), float(hi)
