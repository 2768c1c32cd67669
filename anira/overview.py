"""Figures of notebooks 01 and 02: the tasks themselves (example sequences coloured by difficulty,
difficulty/size distributions over the training and extrapolation ranges) and one run's
training curves (loss, accuracy, mean depth, depth histogram)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

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


def token_layout(tokens: Sequence[str], row_chars: int) -> list[tuple[int, float]]:
    """(row, x centre) of each token, in character units: a token takes its length plus a gap of 1.5
    (at least 3.5), and rows wrap before ``row_chars``, so no two boxes overlap however long the words."""
    out, row, x = [], 0, 0.0
    for tok in tokens:
        w = max(len(tok), 2) + 1.5
        if x > 0 and x + w > row_chars:
            row, x = row + 1, 0.0
        out.append((row, x + w / 2))
        x += w
    return out


def plot_example_tokens(task: Task, ex: Example, ax: plt.Axes, max_difficulty: int, row_chars: int = 140) -> None:
    """Draw the tokens of ``ex`` as text boxes wrapped in rows of ``row_chars`` characters (each box
    as wide as its word); scored tokens coloured by difficulty."""
    table = token_table(task, ex)
    cmap = sns.color_palette("viridis", as_cmap=True)
    layout = token_layout(list(table.token), row_chars)
    n_rows = layout[-1][0] + 1
    for (r, x), (_, row) in zip(layout, table.iterrows()):
        d = row.difficulty
        face = "white" if np.isnan(d) else cmap(d / max(max_difficulty, 1))
        color = "black" if np.isnan(d) or d / max(max_difficulty, 1) > 0.5 else "white"
        ax.text(x, -r, row.token, ha="center", va="center", fontsize=7, color=color, family="monospace",
                bbox=dict(boxstyle="round,pad=0.15", facecolor=face, edgecolor="0.7", linewidth=0.4))
    ax.set_xlim(-1, row_chars + 1)
    ax.set_ylim(-n_rows + 0.4, 0.6)
    ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max_difficulty))
    plt.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="difficulty of scored token")


def feature_frame(task_name: str, n: int, seed: int) -> pd.DataFrame:
    """Per scored-token features of ``n`` generated examples in both declared ranges."""
    frames = []
    for rng_name in ("train", "extrap"):
        task = make_task(task_name, range=rng_name)
        for k, ex in enumerate(task.generate(n, seed)):
            df = pd.DataFrame(ex.features)
            df["example"] = k
            df["range"] = "training" if rng_name == "train" else "extrapolation"
            frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "task", task_name)
    return out


def plot_distributions(features: pd.DataFrame, axes: np.ndarray, palette: dict[str, str]) -> None:
    """Difficulty (answer tokens) and size histograms, training vs extrapolation range."""
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
