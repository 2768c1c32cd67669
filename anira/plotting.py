"""One visual style for the whole study, reproducible figure/table files, and the study's plots.

- Colours and markers are FIXED per mechanism (seaborn "colorblind" palette), so a mechanism looks
  the same in every figure: ``MECH_STYLE``.
- ``savefig`` writes PDF + PNG with fixed metadata (no software/producer/date), so identical results
  give identical bytes, plus ``<stem>.json`` with the provenance (profile, run ids, ...).
- ``save_table`` writes CSV + Markdown + LaTeX with one fixed rounding, plus the same sidecar.
- ``plot_*`` take the tables of ``anira.analysis`` and return a Figure (they draw, never compute
  statistics).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from anira.config import MECHANISMS

_CB = sns.color_palette("colorblind", 10).as_hex()
MECH_STYLE: dict[str, dict[str, Any]] = {
    "fixed": dict(color=_CB[7], marker="D", linestyle="-", label="fixed depth (dense)"),
    "early": dict(color=_CB[0], marker="o", linestyle="-", label="early (ANIRA-E)"),
    "online": dict(color=_CB[1], marker="s", linestyle="-", label="online (ANIRA-O)"),
    "oracle": dict(color=_CB[2], marker="^", linestyle="--", label="oracle (control)"),
    "random": dict(color=_CB[4], marker="X", linestyle=":", label="random (control)"),
}
PART_COLORS = {"unique_static": _CB[3], "shared": "#BBBBBB", "unique_dynamic": _CB[9]}  # decomposition parts
SPLIT_STYLE = {"in": dict(linestyle="-"), "out": dict(linestyle="--")}
TRAIN_RANGE_COLOR = "0.9"
FLOOR_COLOR, FLOOR_LABEL = "0.2", "trivial floor (no multi-step)"  # Task.floor, drawn beside accuracy
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
QUANTITIES = {  # quantity -> (axis text, unit)
    "depth": ("mean depth", "iterations / token"),
    "difficulty": ("token difficulty", "ground truth"),
    "accuracy": ("accuracy", "fraction of answer tokens"),
    "size": ("input size", "task units"),
    "r2": ("depth variance explained", "cross-validated $R^2$"),
    "eval_max_depth": ("max depth at test time", "iterations"),
    "speedup": ("speed-up", "x"),
}


def mech_style(mechanism: str) -> dict[str, Any]:
    """Style of a mechanism; unknown names are an error (keeps the mapping fixed)."""
    if mechanism not in MECH_STYLE:
        raise ValueError(f"mechanism = {mechanism!r} has no fixed style; allowed values: {list(MECH_STYLE)}")
    return MECH_STYLE[mechanism]


def setup_style() -> None:
    """Seaborn paper style, colour-blind palette, embedded TrueType fonts, fixed DPI."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font="DejaVu Sans")
    mpl.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
        "pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
        "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.markersize": 4, "lines.linewidth": 1.2,
        "svg.hashsalt": "anira", "path.simplify": True,
    })


def axis_label(quantity: str, unit: str | None = None) -> str:
    """'mean depth (iterations / token)' for a known quantity, or 'quantity (unit)'."""
    text, default_unit = QUANTITIES.get(quantity, (quantity, None))
    unit = default_unit if unit is None else unit
    if unit and "(" in unit:  # a unit with its own parentheses, e.g. "longest chain (variables)": no nesting
        return f"{text}: {unit}"
    return f"{text} ({unit})" if unit else text


def label_axes(ax: plt.Axes, x: str, y: str, x_unit: str | None = None, y_unit: str | None = None) -> None:
    """Set both axis labels with units (``QUANTITIES`` supplies defaults)."""
    ax.set_xlabel(axis_label(x, x_unit))
    ax.set_ylabel(axis_label(y, y_unit))


# --- reproducible files ------------------------------------------------------------------------

def make_provenance(profile: str, run_ids: Sequence[str] | pd.Series = (), **extra: Any) -> dict[str, Any]:
    """{'profile', 'run_ids' (sorted, unique), **extra}: what made a figure or table."""
    ids = sorted({str(r) for r in (run_ids.unique() if isinstance(run_ids, pd.Series) else run_ids)})
    return {"profile": str(profile), "run_ids": ids, **extra}


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple, set)):
        return sorted(o) if isinstance(o, set) else list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"provenance value of type {type(o).__name__} is not JSON-serializable")


def _check_provenance(provenance: Mapping[str, Any]) -> None:
    if not isinstance(provenance, Mapping) or "profile" not in provenance:
        raise ValueError(f"provenance must be a dict with at least 'profile' (use make_provenance); got {provenance!r}")


def _write_sidecar(stem: Path, kind: str, files: list[Path], provenance: Mapping[str, Any]) -> Path:
    side = stem.with_suffix(".json")
    body = {"kind": kind, "name": stem.name, "files": [p.name for p in files], "provenance": dict(provenance)}
    side.write_text(json.dumps(body, sort_keys=True, indent=2, default=_jsonable) + "\n")
    return side


def _footer_text(provenance: Mapping[str, Any]) -> str:
    ids = list(provenance.get("run_ids", []))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:8]
    return f"profile: {provenance['profile']} | runs: {len(ids)} ({digest})"


def savefig(fig: plt.Figure, path_stem: str | Path, provenance: Mapping[str, Any], footer: bool = False,
            close: bool = True, show: bool = False) -> dict[str, Path]:
    """Write <stem>.pdf, <stem>.png (byte-reproducible) and <stem>.json (provenance).

    footer adds a small grey line 'profile: ... | runs: n (hash of run ids)' under the figure.
    show displays the written PNG in a notebook (works with any matplotlib backend, e.g. agg).
    """
    _check_provenance(provenance)
    stem = Path(path_stem)
    if stem.suffix in (".pdf", ".png", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    if footer:
        fig.text(0.99, 0.0, _footer_text(provenance), ha="right", va="top", fontsize=5, color="0.5")
    pdf, png = stem.with_suffix(".pdf"), stem.with_suffix(".png")
    fig.savefig(pdf, format="pdf", metadata=PDF_METADATA)
    fig.savefig(png, format="png", metadata=PNG_METADATA)
    side = _write_sidecar(stem, "figure", [pdf, png], provenance)
    if close:
        plt.close(fig)
    if show:
        from IPython.display import Image, display
        display(Image(filename=str(png)))
    return {"pdf": pdf, "png": png, "json": side}


def _format_cell(v: Any, fmt: str, na: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return na
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        out = fmt % v
        try:
            if out.lstrip().startswith("-") and float(out) == 0.0:
                out = fmt % 0.0  # no "-0.000" from rounding a tiny negative number
        except ValueError:
            pass
        return out
    return str(v)


def format_table(df: pd.DataFrame, float_format: str | Mapping[str, str] = "%.3f", na: str = "") -> pd.DataFrame:
    """All cells as strings with fixed rounding (per column if ``float_format`` is a dict)."""
    out = {}
    for c in df.columns:
        fmt = float_format.get(c, "%.3f") if isinstance(float_format, Mapping) else float_format
        out[c] = [_format_cell(v, fmt, na) for v in df[c].tolist()]
    return pd.DataFrame(out, columns=list(df.columns), index=range(len(df)))


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def to_latex(df: pd.DataFrame, float_format: str | Mapping[str, str] = "%.3f") -> str:
    """A booktabs tabular (strings left-aligned, numbers right-aligned); no pandas/jinja needed."""
    cells = format_table(df, float_format, na="--")
    align = "".join("r" if _is_numeric(df[c]) else "l" for c in df.columns)
    lines = [f"\\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, path_stem: str | Path, provenance: Mapping[str, Any],
               float_format: str | Mapping[str, str] = "%.3f") -> dict[str, Path]:
    """Write <stem>.csv, <stem>.md, <stem>.tex with the same fixed rounding, and <stem>.json."""
    _check_provenance(provenance)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"save_table: df must be a pandas DataFrame, got {type(df).__name__}")
    stem = Path(path_stem)
    if stem.suffix in (".csv", ".md", ".tex", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md, tex = stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")
    format_table(df, float_format, na="").to_csv(csv, index=False, lineterminator="\n")
    colalign = ["right" if _is_numeric(df[c]) else "left" for c in df.columns]
    md.write_text(format_table(df, float_format, na="--").to_markdown(index=False, disable_numparse=True,
                                                                      colalign=colalign) + "\n")
    tex.write_text(to_latex(df, float_format))
    side = _write_sidecar(stem, "table", [csv, md, tex], provenance)
    return {"csv": csv, "md": md, "tex": tex, "json": side}


# --- plots ---------------------------------------------------------------------------------------

def _require(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """Plots need a non-empty table with the analysis function's columns."""
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError(f"{where}: table is empty or not a DataFrame")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: table lacks column(s) {missing}; present: {list(table.columns)}")


def _ordered(values: Sequence[str], order: Sequence[str] = MECHANISMS) -> list[str]:
    vals = list(dict.fromkeys(values))
    return [v for v in order if v in vals] + [v for v in vals if v not in order]


def _panels(n: int, ncols: int | None = None, width: float = 2.6, height: float = 2.2, sharey: bool = False,
            nrows: int = 1) -> tuple[plt.Figure, np.ndarray]:
    ncols = ncols or n
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=sharey)
    return fig, axes


def _legend(fig: plt.Figure, axes: np.ndarray, ncol: int = 5) -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    if handles:
        fig.legend([handles[l] for l in labels], labels, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                   ncol=min(len(labels), ncol), frameon=False)


CI_LABEL = "95% CI (bars, band)"


def _dodge(i: int, n: int, step: float = 0.07) -> float:
    """x offset of the i-th of n series, so lines that coincide (e.g. all at max depth) stay visible."""
    return (i - (n - 1) / 2) * step


def _line_with_band(ax, x, y, lo, hi, mech: str, sd=None, color: str | None = None, dx: float = 0.0,
                    ci_bars: bool = False, **kw) -> None:
    """Line + 95% CI band (``ci_bars``: also error bars with caps, visible where the band is too thin to
    see); ``sd`` (seed spread) adds thin error bars where it is finite; ``dx`` shifts the series."""
    st = mech_style(mech)
    color = color or st["color"]
    x = np.asarray(x, dtype=float) + dx
    ax.plot(x, y, color=color, marker=kw.pop("marker", st["marker"]), linestyle=kw.pop("linestyle", st["linestyle"]),
            label=kw.pop("label", st["label"]), **kw)
    ax.fill_between(x, lo, hi, color=color, alpha=0.25, linewidth=0)
    if ci_bars:
        y_, lo_, hi_ = (np.asarray(v, dtype=float) for v in (y, lo, hi))
        ax.errorbar(x, y_, yerr=np.vstack([np.clip(y_ - lo_, 0, None), np.clip(hi_ - y_, 0, None)]), fmt="none",
                    ecolor=color, elinewidth=0.8, capsize=2.0)
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        ok = np.isfinite(sd)
        if ok.any():
            ax.errorbar(np.asarray(x)[ok], np.asarray(y, dtype=float)[ok], yerr=sd[ok], fmt="none", ecolor=color,
                        elinewidth=0.7, capsize=1.5)


def _series(sub: pd.DataFrame, mech: str):
    """(label, rows, colour) for each line of ``mech``: one per depth for ``fixed`` when the table
    has a ``fixed_depth`` column (several dense baselines, greys from light = shallow to dark)."""
    s, st = sub[sub["mechanism"] == mech], mech_style(mech)
    if s.empty:
        return
    if mech != "fixed" or "fixed_depth" not in s.columns or s["fixed_depth"].isna().all():
        yield st["label"], s, st["color"]
        return
    depths = sorted(s["fixed_depth"].dropna().unique().tolist())
    shades = [mpl.colors.to_hex(c) for c in mpl.colormaps["Greys"](np.linspace(0.45, 0.9, len(depths)))]
    for d, c in zip(depths, shades):
        yield f"fixed depth {d:g} (dense)", s[s["fixed_depth"] == d], c


def plot_alignment(table: pd.DataFrame, tasks: Sequence[str] | None = None, mechanisms: Sequence[str] | None = None,
                   y: str = "mean_depth") -> plt.Figure:
    """Mean depth vs difficulty, one panel per task, one line per mechanism with its 95% CI band
    (error bars: SD over seeds, when there are several).

    table: ``depth_by_difficulty`` output (with a ``fixed_depth`` column: one line per fixed depth).
    """
    _require(table, ["task", "mechanism", "difficulty", y, "ci_lo", "ci_hi"], "plot_alignment")
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(table["task"]))
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        series = [(m, *ls) for m in mechs for ls in _series(sub, m)]
        for i, (m, label, s, color) in enumerate(series):
            s = s.sort_values("difficulty")
            _line_with_band(ax, s["difficulty"], s[y], s["ci_lo"], s["ci_hi"], m, label=label, color=color,
                            sd=s["seed_sd"] if "seed_sd" in s else None, dx=_dodge(i, len(series)), ci_bars=True)
        ax.set_title(task)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        label_axes(ax, "difficulty", "depth")
    axes[0, 0].errorbar([], [], yerr=[], color="0.3", fmt="none", capsize=2.0, label=CI_LABEL)
    _legend(fig, axes)
    fig.tight_layout()
    return fig


def plot_alignment_over_training(curves: pd.DataFrame, tasks: Sequence[str] | None = None,
                                 mechanisms: Sequence[str] | None = None) -> plt.Figure:
    """Accuracy, mean depth and Spearman rho(depth, difficulty) against the training step, one
    column per task, one line per run (seeds share their mechanism's style); a dotted vertical line
    marks the step each run's halting objective began. rho is missing where depth is constant.

    curves: ``anira.analysis.training_curves`` output.
    """
    _require(curves, ["task", "mechanism", "seed", "run_id", "step", "accuracy", "mean_depth", "rho", "halt_start"],
             "plot_alignment_over_training")
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(curves["task"]))
    mechs = _ordered(mechanisms if mechanisms is not None else curves["mechanism"])
    rows = (("accuracy", "accuracy\n(fraction of answer tokens)"), ("mean_depth", "mean depth\n(iterations / token)"),
            ("rho", "Spearman $\\rho$\n(depth, difficulty)"))
    fig, axes = plt.subplots(len(rows), len(tasks), figsize=(3.0 * len(tasks) + 0.4, 1.9 * len(rows)),
                             squeeze=False, sharex="col")
    for j, task in enumerate(tasks):
        sub = curves[curves["task"] == task]
        for i, (col, ylabel) in enumerate(rows):
            ax = axes[i, j]
            for m in mechs:
                st = mech_style(m)
                n_seeds = curves.loc[curves["mechanism"] == m, "seed"].nunique()
                for k, ((seed, _), run) in enumerate(sub[sub["mechanism"] == m].groupby(["seed", "run_id"], sort=True)):
                    # seeds after the first: open markers and a dashed line (random's dots stay its own)
                    ls = st["linestyle"] if k == 0 else (0, (4, 1.5))
                    label = st["label"] if n_seeds == 1 else f"{st['label']}, seed {seed}"
                    ax.plot(run["step"], run[col], color=st["color"], linestyle=ls, marker=st["marker"],
                            markersize=3.0 if k == 0 else 3.5, markerfacecolor=st["color"] if k == 0 else "white",
                            label=label)
                    halt = run["halt_start"].iloc[0]
                    if np.isfinite(halt):  # a triangle on the top edge, in the run's colour
                        ax.plot([halt], [1.0], marker="v", markersize=5, color=st["color"], clip_on=False,
                                linestyle="none", transform=ax.get_xaxis_transform(),
                                markerfacecolor=st["color"] if k == 0 else "white")
            if col == "rho":
                ax.axhline(0.0, color="0.5", linewidth=0.6)
                ax.set_ylim(-1.05, 1.05)
            if i == 0:
                ax.set_title(task)
            ax.set_xlabel("optimizer step" if i == len(rows) - 1 else "")
            ax.set_ylabel(ylabel if j == 0 else "")
    if curves["halt_start"].notna().any():
        axes[0, 0].plot([], [], marker="v", color="0.3", linestyle="none", label="halting objective began (top edge)")
    _legend(fig, axes, ncol=4)
    fig.tight_layout()
    return fig


def plot_depth_by_kind(table: pd.DataFrame, mechanisms: Sequence[str] | None = None) -> plt.Figure:
    """Language task: mean depth per token kind (grammar, free, answer k=...) per mechanism, 95% CIs.

    table: ``depth_by_kind`` output (one task).
    """
    _require(table, ["mechanism", "token_kind", "kind_order", "mean_depth", "ci_lo", "ci_hi"], "plot_depth_by_kind")
    kinds = table.sort_values("kind_order")["token_kind"].drop_duplicates().tolist()
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    fig, ax = plt.subplots(figsize=(0.22 * len(kinds) * max(len(mechs), 1) + 1.5, 2.4))
    width = 0.8 / max(len(mechs), 1)
    for j, m in enumerate(mechs):
        s = table[table["mechanism"] == m].set_index("token_kind").reindex(kinds)
        x = np.arange(len(kinds)) + (j - (len(mechs) - 1) / 2) * width
        st = mech_style(m)
        ax.bar(x, s["mean_depth"], width, color=st["color"], label=st["label"])
        ax.errorbar(x, s["mean_depth"], yerr=[s["mean_depth"] - s["ci_lo"], s["ci_hi"] - s["mean_depth"]],
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5)
    ax.set_xticks(np.arange(len(kinds)), [k.replace(" ", "\n") for k in kinds])  # "answer\nk=2": no overlap
    label_axes(ax, "token kind", "depth", x_unit="")
    _legend(fig, np.array([ax]))
    fig.tight_layout()
    return fig


def plot_generalization(table: pd.DataFrame, train_range: Mapping[str, tuple[float, float]] | None = None,
                        tasks: Sequence[str] | None = None, mechanisms: Sequence[str] | None = None,
                        size_units: Mapping[str, str] | None = None) -> plt.Figure:
    """Accuracy (top) and mean depth (bottom) vs input size per task; training range shaded.

    table: ``by_size`` output; train_range: task -> (min, max) size (default: sizes of split 'in').
    A ``fixed_depth`` column gives one line per fixed depth; error bars are the SD over seeds.
    The size axis of a task with a "wide" split (`addition`) shows "in" and "wide": its "out" split
    has the training width (only the composition grows) and is read in ``extrapolation_table``.
    """
    _require(table, ["task", "mechanism", "size", "split", "accuracy", "acc_lo", "acc_hi", "mean_depth", "depth_lo",
                     "depth_hi"], "plot_generalization")
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(table["task"]))
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    if train_range is None:
        inn = table[table["split"] == "in"]
        train_range = {t: (float(s.min()), float(s.max())) for t, s in inn.groupby("task")["size"]}
    fig, axes = _panels(len(tasks), nrows=2)
    for col, task in enumerate(tasks):
        sub = table[table["task"] == task]
        if (sub["split"] == "wide").any():
            sub = sub[sub["split"] != "out"]
        for row, (q, lo, hi) in enumerate((("accuracy", "acc_lo", "acc_hi"), ("mean_depth", "depth_lo", "depth_hi"))):
            ax = axes[row, col]
            if task in train_range:
                a, b = train_range[task]
                ax.axvspan(a - 0.5, b + 0.5, color=TRAIN_RANGE_COLOR, zorder=0, label="training range")
            sdcol = {"accuracy": "acc_seed_sd", "mean_depth": "depth_seed_sd"}[q]
            if q == "accuracy" and "floor" in sub and sub["floor"].notna().any():
                fl = sub.groupby("size")["floor"].mean().sort_index()  # a property of the data, not the model
                ax.plot(fl.index, fl.values, color=FLOOR_COLOR, ls=":", lw=1.2, zorder=1, label=FLOOR_LABEL)
            for m in mechs:
                for label, s, color in _series(sub, m):
                    s = s.sort_values("size")
                    _line_with_band(ax, s["size"], s[q], s[lo], s[hi], m, label=label, color=color,
                                    sd=s[sdcol] if sdcol in s else None)
            label_axes(ax, "size", "accuracy" if q == "accuracy" else "depth",
                       x_unit=(size_units or {}).get(task))
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
            if row == 0:
                ax.set_title(task)
                ax.set_ylim(-0.02, 1.02)
    _legend(fig, axes)
    fig.tight_layout()
    return fig


def plot_test_time_depth(table: pd.DataFrame, tasks: Sequence[str] | None = None,
                         mechanisms: Sequence[str] | None = None) -> plt.Figure:
    """Accuracy vs test-time max depth per task (solid: in range, dashed: out of range).

    table: ``test_time_depth`` output; the training max_depth is marked by a vertical line.
    """
    _require(table, ["task", "mechanism", "split", "eval_max_depth", "max_depth", "accuracy", "acc_lo", "acc_hi"],
             "plot_test_time_depth")
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(table["task"]))
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        series = [(m, *ls) for m in mechs for ls in _series(sub, m)]
        for i, (m, label, sm, color) in enumerate(series):
            st = mech_style(m)
            for split in ("in", "out"):
                s = sm[sm["split"] == split].sort_values("eval_max_depth")
                if s.empty:
                    continue
                x = s["eval_max_depth"].to_numpy(dtype=float) + _dodge(i, len(series), 0.12)
                y = s["accuracy"].to_numpy(dtype=float)
                err = np.vstack([np.clip(y - s["acc_lo"], 0, None), np.clip(s["acc_hi"] - y, 0, None)])
                # separate test-time depths, not a trend: points with their CI, no joining line
                ax.errorbar(x, y, yerr=err, color=color, marker=st["marker"], linestyle="none", capsize=2.0,
                            elinewidth=0.8, markerfacecolor=color if split == "in" else "white",
                            label=label if split == "in" else "_nolegend_")
        for md in sub["max_depth"].dropna().unique():
            ax.axvline(md, color="0.4", linewidth=0.8, linestyle=":", label="max depth in training")
        ax.set_title(task)
        ax.set_ylim(-0.02, 1.02)
        depths = sorted(sub["eval_max_depth"].dropna().unique())
        ax.set_xticks(depths)
        ax.set_xlim(min(depths) - 1, max(depths) + 1) if depths else None
        label_axes(ax, "eval_max_depth", "accuracy")
    for split, text, face in (("in", "training range (filled)", "0.3"), ("out", "extrapolation range (open)", "white")):
        axes[0, 0].plot([], [], color="0.3", marker="o", markerfacecolor=face, linestyle="none", label=text)
    axes[0, 0].errorbar([], [], yerr=[], color="0.3", fmt="none", capsize=2.0, label="95% CI")
    _legend(fig, axes, ncol=4)
    fig.tight_layout()
    return fig


def plot_timing(table: pd.DataFrame, mechanisms: Sequence[str] | None = None) -> plt.Figure:
    """Stacked bars of the R^2 decomposition (unique static, shared, unique dynamic) per task x
    mechanism; black tick = total R^2 with its CI, diamond = R^2 of size alone.

    table: ``timing_decomposition`` output. Negative parts are stacked below zero.
    """
    _require(table, ["task", "mechanism", "unique_static", "shared", "unique_dynamic", "r2_both", "r2_both_lo",
                     "r2_both_hi"], "plot_timing")
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    t = table[table["mechanism"].isin(mechs)].copy()
    t["_m"] = t["mechanism"].map({m: i for i, m in enumerate(mechs)})
    t = t.sort_values(["task", "_m"], kind="stable").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.5 * len(t) + 1.2), 2.6))
    x = np.arange(len(t))
    pos_base, neg_base = np.zeros(len(t)), np.zeros(len(t))
    names = {"unique_static": "unique static", "shared": "shared", "unique_dynamic": "unique dynamic"}
    for part in ("unique_static", "shared", "unique_dynamic"):
        v = t[part].fillna(0.0).to_numpy()
        base = np.where(v >= 0, pos_base, neg_base)
        ax.bar(x, v, 0.7, bottom=base, color=PART_COLORS[part], label=names[part], edgecolor="white", linewidth=0.3)
        pos_base += np.where(v >= 0, v, 0.0)
        neg_base += np.where(v < 0, v, 0.0)
    ax.errorbar(x, t["r2_both"], yerr=[t["r2_both"] - t["r2_both_lo"], t["r2_both_hi"] - t["r2_both"]],
                fmt="_", color="black", markersize=10, elinewidth=0.8, capsize=0, label="total $R^2$ (95% CI)")
    if "r2_size" in t:
        ax.plot(x, t["r2_size"], "D", color="black", markerfacecolor="white", markersize=3.5, label="size alone")
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_xticks(x, [f"{a}\n{mech_style(b)['label'].split(' ')[0]}" for a, b in zip(t["task"], t["mechanism"])])
    ax.set_ylabel(axis_label("r2"))
    _legend(fig, np.array([ax]), ncol=3)
    fig.tight_layout()
    return fig


KIND_MARK = {"static": "S", "dynamic": "D", "progress": "P"}  # feature-class tags on the importance axis


def plot_feature_importance(table: pd.DataFrame, value: str = "perm_importance",
                            mechanisms: Sequence[str] | None = None) -> plt.Figure:
    """Horizontal bars of one importance measure per feature: one panel per task, features grouped by
    class (tagged S / D / P), one bar per mechanism in its fixed colour; one x-scale for every panel,
    so bars compare across tasks. table: ``feature_importance``."""
    _require(table, ["task", "mechanism", "feature", "kind", value], "plot_feature_importance")
    mechs = _ordered(mechanisms if mechanisms is not None else table["mechanism"])
    has = table[table[value].notna()]
    if has.empty:
        raise ValueError(f"plot_feature_importance: every {value!r} is NaN (constant depths?)")
    tasks = list(dict.fromkeys(has["task"]))
    mechs = [m for m in mechs if (has["mechanism"] == m).any()]
    order = {k: i for i, k in enumerate(KIND_MARK)}
    n_feat = [has.loc[has["task"] == t, "feature"].nunique() for t in tasks]
    fig, axes = plt.subplots(len(tasks), 1, sharex=True, squeeze=False,
                             figsize=(5.0, 0.55 + sum(0.16 * len(mechs) * n + 0.45 for n in n_feat)),
                             gridspec_kw={"height_ratios": n_feat})
    width = 0.8 / max(len(mechs), 1)
    for ax, t in zip(axes[:, 0], tasks):
        s = has[has["task"] == t]
        feats = (s.drop_duplicates("feature").assign(_k=lambda d: d["kind"].map(order))
                 .sort_values(["_k"], kind="stable")[["feature", "kind"]])
        y = {f: i for i, f in enumerate(feats["feature"])}
        for j, m in enumerate(mechs):
            sm = s[s["mechanism"] == m]
            ax.barh([y[f] + (j - (len(mechs) - 1) / 2) * width for f in sm["feature"]], sm[value].fillna(0.0),
                    height=width, color=mech_style(m)["color"], label=mech_style(m)["label"])
        ax.set_yticks(range(len(y)), [f"{f} ({KIND_MARK.get(k, '?')})" for f, k in zip(feats["feature"], feats["kind"])])
        ax.invert_yaxis()
        ax.axvline(0, color="0.3", linewidth=0.6)
        ax.set_title(t, loc="left")
    axes[-1, 0].set_xlabel({"perm_importance": "drop in $R^2$ when the feature is shuffled",
                            "coef_std": "standardized coefficient"}.get(value, value))
    handles = [mpl.patches.Patch(color=mech_style(m)["color"], label=mech_style(m)["label"]) for m in mechs]
    handles += [mpl.lines.Line2D([], [], linestyle="none", label=f"({k}) {v}")
                for v, k in KIND_MARK.items()]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 4),
               frameon=False, handlelength=1.0)
    return fig


def plot_depth_heatmap(tokens: Sequence[str], depths_by_mechanism: Mapping[str, Sequence[float]],
                       difficulty: Sequence[float] | None = None, max_depth: int | None = None,
                       ax: plt.Axes | None = None, annotate: bool = True, title: str | None = None) -> plt.Figure:
    """Per-token depth of one sequence, one row per mechanism (e.g. early above online), token text
    on the x-axis, ground-truth difficulty on the top axis. NaN depth (unscored token) is blank.
    """
    mechs = list(depths_by_mechanism)
    n = len(tokens)
    M = np.array([np.asarray(depths_by_mechanism[m], dtype=float) for m in mechs]).reshape(len(mechs), -1)
    if M.shape[1] != n:
        raise ValueError(f"depths_by_mechanism rows have {M.shape[1]} values; tokens has {n}")
    if difficulty is not None and len(difficulty) != n:
        raise ValueError(f"difficulty has {len(difficulty)} values; tokens has {n}")
    vmax = max_depth if max_depth is not None else (np.nanmax(M) if np.isfinite(M).any() else 1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 0.28 * n + 1.2), 0.45 * len(mechs) + 1.3))
    else:
        fig = ax.figure
    cmap = mpl.colormaps["viridis"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(M), aspect="auto", cmap=cmap, vmin=1, vmax=vmax, interpolation="nearest")
    if annotate:
        for (i, j), v in np.ndenumerate(M):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=5.5,
                        color="white" if v < 1 + 0.6 * (vmax - 1) else "black")
    ax.set_xticks(np.arange(n), list(tokens), rotation=90, family="monospace", fontsize=6)
    ax.set_yticks(np.arange(len(mechs)), [MECH_STYLE[m]["label"] if m in MECH_STYLE else m for m in mechs])
    ax.grid(False)
    if difficulty is not None:
        top = ax.secondary_xaxis("top")
        top.set_xticks(np.arange(n), ["" if not np.isfinite(float(d)) else f"{float(d):.0f}" for d in difficulty],
                       fontsize=5.5)
        top.set_xlabel("difficulty", fontsize=7)
    blank = "white cells: tokens not scored (no depth recorded)"
    if title:
        ax.set_title(f"{title}; {blank}")
    else:
        ax.set_title(blank, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="depth used (iterations)")
    return fig


def plot_example_heatmaps(sequences: Sequence[Mapping[str, Any]], max_depth: int | None = None,
                          annotate: bool = True) -> plt.Figure:
    """Several ``plot_depth_heatmap`` panels stacked vertically (one per example sequence).

    sequences: dicts with "tokens", "depths" (mechanism -> per-token depth), optional "difficulty"
    and "title" (e.g. from ``anira.analysis.io.example_sequence``).
    """
    if not sequences:
        raise ValueError("plot_example_heatmaps: sequences is empty")
    n_tok = max(len(s["tokens"]) for s in sequences)
    n_mech = max(len(s["depths"]) for s in sequences)
    fig, axes = plt.subplots(len(sequences), 1, squeeze=False,
                             figsize=(max(3.0, 0.2 * n_tok + 2.2), len(sequences) * (0.32 * n_mech + 1.35)))
    for ax, s in zip(axes[:, 0], sequences):
        plot_depth_heatmap(s["tokens"], s["depths"], s.get("difficulty"), max_depth=max_depth, ax=ax,
                           annotate=annotate, title=s.get("title"))
    fig.tight_layout()
    return fig


def plot_pareto(table: pd.DataFrame, tasks: Sequence[str] | None = None, annotate_beta: bool | None = None) -> plt.Figure:
    """Accuracy vs mean compute per task: the fixed-depth baselines (points labelled by depth, not
    joined: nothing was run between them), adaptive points per mechanism (error bars: SD over seeds,
    where there are several), the Pareto front as a dashed step line. table: ``pareto``.

    annotate_beta: write each adaptive point's beta beside it; None (default) = only when the
    table holds more than one beta (a sweep); with one beta the labels would only pile up."""
    _require(table, ["task", "mechanism", "beta", "accuracy", "accuracy_sd", "mean_depth", "mean_depth_sd", "on_front"],
             "plot_pareto")
    if annotate_beta is None:
        annotate_beta = table.loc[table["mechanism"] != "fixed", "beta"].dropna().nunique() > 1
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(table["task"]))
    fig, axes = _panels(len(tasks), width=2.8, height=2.4)
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        for m in _ordered(sub["mechanism"]):
            s = sub[sub["mechanism"] == m].sort_values("mean_depth")
            st = mech_style(m)
            # open markers, so points at the same place stay visible; no line between the fixed depths
            # (only the depths run are known); error bars only where several seeds give a spread
            ax.plot(s["mean_depth"], s["accuracy"], color=st["color"], marker=st["marker"], linestyle="none",
                    markerfacecolor="none", markersize=6 if m == "fixed" else 5, markeredgewidth=1.2, label=st["label"])
            xerr, yerr = s["mean_depth_sd"].fillna(0).to_numpy(), s["accuracy_sd"].fillna(0).to_numpy()
            spread = (xerr > 0) | (yerr > 0)
            if spread.any():
                ax.errorbar(s["mean_depth"][spread], s["accuracy"][spread], xerr=xerr[spread], yerr=yerr[spread],
                            fmt="none", ecolor=st["color"], elinewidth=0.7, capsize=1.5)
            if m == "fixed" and "fixed_depth" in s:
                for _, r in s.iterrows():
                    if pd.notna(r["fixed_depth"]):
                        ax.annotate(f"depth {r['fixed_depth']:g}", (r["mean_depth"], r["accuracy"]), fontsize=6,
                                    xytext=(-5, 5), textcoords="offset points", ha="right", va="bottom",
                                    color=st["color"])
            if annotate_beta and m != "fixed":
                for _, r in s.iterrows():
                    if pd.notna(r["beta"]):
                        ax.annotate(f"{r['beta']:g}", (r["mean_depth"], r["accuracy"]), fontsize=5,
                                    xytext=(2, 2), textcoords="offset points", color=st["color"])
        front = sub[sub["on_front"]].sort_values("mean_depth")
        if not front.empty:
            ax.step(front["mean_depth"], front["accuracy"], where="post", color="black", linestyle="--",
                    linewidth=0.8, label="Pareto front")
        ax.set_title(task)
        ax.margins(x=0.1, y=0.12)  # markers at the edges (depth 1, max depth) stay whole
        label_axes(ax, "depth", "accuracy", x_unit="iterations / token, compute")
    _legend(fig, axes, ncol=6)
    fig.tight_layout()
    return fig


def plot_speedup(table: pd.DataFrame) -> plt.Figure:
    """Realized vs ideal speed-up of real early exit (y = x: perfect). table: ``speedup_table``."""
    _require(table, ["mechanism", "ideal_speedup", "realized_speedup"], "plot_speedup")
    fig, ax = plt.subplots(figsize=(3.2, 2.8))
    for m in _ordered(table["mechanism"]):
        s, st = table[table["mechanism"] == m], mech_style(m)
        ax.plot(s["ideal_speedup"], s["realized_speedup"], st["marker"], color=st["color"], label=st["label"],
                markerfacecolor="none", markeredgewidth=1.2)
        if "task" in s:
            for _, r in s.iterrows():  # which task each point is
                ax.annotate(str(r["task"]), (r["ideal_speedup"], r["realized_speedup"]), fontsize=5.5,
                            xytext=(4, -2), textcoords="offset points", color=st["color"])
    hi = float(np.nanmax(table[["ideal_speedup", "realized_speedup"]].to_numpy())) if len(table) else 1.0
    ax.plot([1, max(hi, 1.0)], [1, max(hi, 1.0)], color="0.4", linestyle=":", linewidth=0.8,
            label="realized = ideal")
    label_axes(ax, "ideal speed-up", "realized speed-up", x_unit="max depth / mean depth",
               y_unit="dense / early-exit time")
    _legend(fig, np.array([ax]), ncol=2)
    fig.tight_layout()
    return fig


__all__ = ["MECHANISMS", "MECH_STYLE", "PART_COLORS", "KIND_MARK", "QUANTITIES", "PNG_METADATA", "PDF_METADATA", "mech_style",
           "setup_style", "axis_label", "label_axes", "make_provenance", "savefig", "format_table", "to_latex",
           "latex_escape", "save_table", "plot_alignment", "plot_depth_by_kind", "plot_generalization",
           "plot_test_time_depth", "plot_timing", "plot_feature_importance", "plot_depth_heatmap",
           "plot_example_heatmaps", "plot_pareto",
           "plot_speedup"]
