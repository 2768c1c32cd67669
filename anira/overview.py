"""Figures of notebooks 01 and 02: the tasks themselves (example sequences coloured by difficulty,
difficulty/size distributions over the training and extrapolation ranges) and one run's
training curves (loss, accuracy, mean depth, depth histogram)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from anira.tasks import make_task
from anira.tasks.base import Example, Task


def token_table(task: Task, ex: Example) -> pd.DataFrame:
    """One row per token of ``ex``: text, whether it is scored, its difficulty (NaN if unscored)."""
    words = task.render(ex)
    diff = np.full(len(words), np.nan)
    for i, rec in zip(ex.scored, ex.features):
        diff[i] = rec["difficulty"]
    return pd.DataFrame({"position": range(len(words)), "token": words, "difficulty": diff})


# Where a row of tokens may wrap: ``KEEP_TOGETHER[task](tokens, i)`` is True when token i must stay on
# the row of token i - 1: an assignment "q = 3 ;", a query with its answer "? q 3", an edge "n0 > n7",
# an operand's digits, a sentence up to its "." or a question up to its answer. Other tasks: never
# start a row with punctuation.
_PUNCT = {";", ".", ",", "?", ":", "|", "="}


def _default_keep(tokens: Sequence[str], i: int) -> bool:
    return tokens[i] in _PUNCT


def _language_keep(tokens: Sequence[str], i: int) -> bool:
    prev = tokens[i - 1]
    return not (prev == "." or prev == "<bos>" or (i >= 2 and tokens[i - 2] == "?"))


KEEP_TOGETHER: dict[str, Callable[[Sequence[str], int], bool]] = {
    "hops": lambda t, i: t[i] in {"=", ";", "|"} or t[i].isdigit() or t[i - 1] in {"=", "?"},
    "toposort": lambda t, i: t[i] in {">", ":", "="} or t[i - 1] == ">",
    "addition": lambda t, i: t[i] in {"+", "="} or (t[i].isdigit() and t[i - 1].isdigit()),
    "language": _language_keep,
}


def _token_width(tok: str) -> float:
    return max(len(tok), 2) + 1.5


def token_layout(tokens: Sequence[str], row_chars: int,
                 keep_together: Callable[[Sequence[str], int], bool] | None = None) -> list[tuple[int, float]]:
    """(row, x centre) of each token, in character units: a token takes its length plus a gap of 1.5
    (at least 3.5), and rows wrap before ``row_chars``, so no two boxes overlap however long the words.

    keep_together(tokens, i): True where token i must not start a row (it belongs with token i - 1); a
    run of tokens kept together moves to the next row whole (split token by token only if longer
    than a row).
    """
    groups: list[list[int]] = []
    for i, tok in enumerate(tokens):
        if groups and keep_together is not None and keep_together(tokens, i):
            groups[-1].append(i)
        else:
            groups.append([i])
    out: list[tuple[int, float]] = [(0, 0.0)] * len(tokens)
    row, x = 0, 0.0
    for g in groups:
        width = sum(_token_width(tokens[i]) for i in g)
        if x > 0 and x + width > row_chars and width <= row_chars:
            row, x = row + 1, 0.0
        for i in g:
            w = _token_width(tokens[i])
            if x > 0 and x + w > row_chars:
                row, x = row + 1, 0.0
            out[i] = (row, x + w / 2)
            x += w
    return out


# Difficulty colours: one per integer, sampled from viridis (perceptually uniform, readable with
# colour-vision deficiencies and in greyscale), reversed so that harder = darker. Unscored tokens
# (context) are white boxes with a dashed outline and grey text.
UNSCORED = dict(facecolor="white", edgecolor="0.55", linestyle=(0, (2, 1.5)), text="0.35")
UNSCORED_LABEL = "not scored (context)"
FONT_PT = 7.0  # token text size
CHAR_EM = 0.602  # advance of one DejaVu Sans Mono character, in em
ROW_PITCH_IN = 0.21  # height of one token row


def difficulty_colors(max_difficulty: int) -> dict[int, str]:
    """difficulty 0..max_difficulty -> hex colour, one discrete level each (harder = darker)."""
    n = int(max_difficulty) + 1
    cmap = mpl.colormaps["viridis_r"]
    return {d: mpl.colors.to_hex(cmap(0.5 if n == 1 else d / (n - 1))) for d in range(n)}


def _text_color(face: str) -> str:
    r, g, b = mpl.colors.to_rgb(face)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.4 else "white"


def _char_inches(fontsize: float = FONT_PT) -> float:
    return CHAR_EM * fontsize / 72


def plot_example_tokens(task: Task, ex: Example, ax: plt.Axes, max_difficulty: int, row_chars: int = 140,
                        legend: bool = True, fontsize: float = FONT_PT) -> dict[int, str]:
    """Draw the tokens of ``ex`` as text boxes (each as wide as its word) in rows of at most
    ``row_chars`` characters, or fewer if the axes is narrower, wrapping between tokens where the
    task's syntax allows (``KEEP_TOGETHER``). Scored tokens are filled with their difficulty's
    discrete colour (``difficulty_colors``), unscored ones are white with a dashed outline.

    legend: one swatch per difficulty present in ``ex`` plus the unscored style, above the tokens,
    titled with what difficulty means for the task. Returns the difficulty -> colour map used.
    """
    table = token_table(task, ex)
    present = sorted({int(d) for d in table.difficulty.dropna()})
    colors = difficulty_colors(max([int(max_difficulty)] + present))
    fig = ax.figure
    char_in = _char_inches(fontsize)
    ax_chars = ax.get_position().width * fig.get_figwidth() / char_in
    row_chars = max(8, min(row_chars, int(ax_chars + 1e-6)))
    layout = token_layout(list(table.token), row_chars, KEEP_TOGETHER.get(task.name, _default_keep))
    n_rows = layout[-1][0] + 1
    for (r, x), (_, row) in zip(layout, table.iterrows()):
        if np.isnan(row.difficulty):
            box = dict(facecolor=UNSCORED["facecolor"], edgecolor=UNSCORED["edgecolor"],
                       linestyle=UNSCORED["linestyle"])
            color = UNSCORED["text"]
        else:
            face = colors[int(row.difficulty)]
            box, color = dict(facecolor=face, edgecolor="0.35"), _text_color(face)
        ax.text(x, -r, row.token, ha="center", va="center", fontsize=fontsize, color=color, family="monospace",
                bbox=dict(boxstyle="round,pad=0.15", linewidth=0.5, **box))
    ax.set_xlim(0, max(row_chars, ax_chars))  # one data unit = one character: no stretched gaps
    ax.set_ylim(-n_rows + 0.5, 0.5)
    ax.axis("off")
    if legend:
        handles = [mpl.patches.Patch(facecolor=colors[d], edgecolor="0.35", linewidth=0.5, label=str(d))
                   for d in present]
        handles.append(mpl.patches.Patch(facecolor=UNSCORED["facecolor"], edgecolor=UNSCORED["edgecolor"],
                                         linestyle=UNSCORED["linestyle"], linewidth=0.5, label=UNSCORED_LABEL))
        meaning = getattr(task, "difficulty_name", "")
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles), frameon=False,
                  title=f"difficulty = {meaning}" if meaning else "difficulty", alignment="left",
                  fontsize=fontsize, title_fontsize=fontsize, handlelength=1.2, handleheight=0.9,
                  handletextpad=0.4, columnspacing=1.0, borderaxespad=0.2, borderpad=0.1)
    return colors


def plot_task_examples(examples: Sequence[tuple[Task, Example]], max_difficulty: int | None = None,
                       row_chars: int = 116, fontsize: float = FONT_PT) -> plt.Figure:
    """One panel per (task, example), stacked and sized to their content: token rows of at most
    ``row_chars`` characters at their natural width, a title (task, size and what size means) and a
    legend per panel (what difficulty means, one swatch per difficulty present, the unscored style).
    One colour scale for every panel (difficulty 0..``max_difficulty``, default: the largest shown),
    so a colour means the same number everywhere."""
    if not examples:
        raise ValueError("plot_task_examples: examples is empty")
    shown = [int(r["difficulty"]) for _, ex in examples for r in ex.features]
    max_difficulty = max(shown + [0] if max_difficulty is None else shown + [int(max_difficulty)])
    char_in = _char_inches(fontsize)
    width = row_chars * char_in
    rows = [token_layout(task.render(ex), row_chars, KEEP_TOGETHER.get(task.name, _default_keep))[-1][0] + 1
            for task, ex in examples]
    header = 0.62  # title, legend title, swatches
    heights = [header + n * ROW_PITCH_IN for n in rows]
    margin = 0.05
    fig = plt.figure(figsize=(width + 2 * margin, sum(heights) + margin))
    W, H = fig.get_figwidth(), fig.get_figheight()
    top = H
    for (task, ex), n, h in zip(examples, rows, heights):
        bottom = top - h
        ax = fig.add_axes((margin / W, bottom / H, width / W, n * ROW_PITCH_IN / H))
        plot_example_tokens(task, ex, ax, max_difficulty, row_chars=row_chars, fontsize=fontsize)
        ax.set_title(f"{task.name} \N{MIDDLE DOT} size {ex.size}: {task.size_name}", loc="left", fontsize=9,
                     fontweight="bold", pad=30)
        top = bottom
    return fig


RANGE_LABELS = {"train": "training", "extrap": "extrapolation", "wide": "wider inputs"}


def feature_frame(task_name: str, n: int, seed: int) -> pd.DataFrame:
    """Per scored-token features of ``n`` generated examples in every declared range (``range``:
    "training", "extrapolation", and "wider inputs" for `addition`'s width-only range)."""
    from anira.tasks import task_class

    frames = []
    for rng_name in task_class(task_name).ranges.values():
        task = make_task(task_name, range=rng_name)
        for k, ex in enumerate(task.generate(n, seed)):
            df = pd.DataFrame(ex.features)
            df["example"] = k
            df["range"] = RANGE_LABELS[rng_name]
            frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "task", task_name)
    return out


def plot_distributions(features: pd.DataFrame, axes: np.ndarray, palette: dict[str, str]) -> None:
    """Difficulty (answer tokens) and size histograms per declared range (training, extrapolation,
    wider inputs); ``palette`` maps each range label to its colour."""
    answers = features[features["is_answer"] == 1]
    sns.histplot(answers, x="difficulty", hue="range", discrete=True, stat="probability", common_norm=False,
                 multiple="dodge", shrink=0.8, palette=palette, ax=axes[0])
    axes[0].set_xlabel("difficulty of answer token")
    axes[0].set_ylabel("fraction of answer tokens")
    sizes = features.drop_duplicates(["range", "example"])
    sns.histplot(sizes, x="size", hue="range", discrete=True, stat="probability", common_norm=False,
                 palette=palette, ax=axes[1])
    axes[1].set_xlabel("input size")
    axes[1].set_ylabel("fraction of sequences")


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """The run's log.jsonl as a frame (one row per logged interval or evaluation)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run has not logged anything yet")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def plot_training_curves(log: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and mean depth against optimizer step, plus the depth histogram over training."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    train = log[log["kind"] == "train"] if "kind" in log else log
    evals = log[log["kind"] == "eval"] if "kind" in log else log.iloc[0:0]
    for ax, col, label in zip(axes[:3], ("loss", "acc", "mean_depth"),
                              ("training loss (nats/token)", "accuracy (fraction of answer tokens)", "mean depth (iterations)")):
        if col in train:
            ax.plot(train["step"], train[col], label="training batches")
        if col in evals and len(evals):
            ax.plot(evals["step"], evals[col], "o-", label="frozen in-range set (early exit)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7)
    hist_col = "depth_hist" if "depth_hist" in train else None
    if hist_col is not None and len(train):
        hist = np.array([h for h in train[hist_col]], dtype=float)
        hist = hist / np.clip(hist.sum(axis=1, keepdims=True), 1, None)
        im = axes[3].imshow(hist.T, aspect="auto", origin="lower", cmap="viridis",
                            extent=(train["step"].min(), train["step"].max(), 0.5, hist.shape[1] + 0.5))
        fig.colorbar(im, ax=axes[3], label="fraction of tokens")
    axes[3].set_xlabel("optimizer step")
    axes[3].set_ylabel("depth used (iterations)")
    axes[3].set_title("depth histogram", fontsize=9)
    fig.tight_layout()
    return fig
