"""Look inside one trained model, token by token (notebook 08_explore).

``pick_run`` finds a finished run by task, mechanism and seed among run folders (the study's, or
the committed ``data/results/<profile>/runs``); ``read_input`` turns a typed input into token ids
or draws one from the task's generator; ``trace`` runs the model under real early exit on that
one sequence and returns, for every position, the word, the model's next-token prediction (the
answer, on an answer position), the depth it used and the halting distribution over steps;
``plot_trace`` draws the last two as a heat map. Nothing here trains or writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from anira.config import MECHANISMS
from anira.tasks import BOS_ID, Example, collate, make_task


def pick_run(run_dirs: Sequence[str | Path], task: str, mechanism: str, seed: int | None = None) -> Path:
    """The finished run of ``run_dirs`` with this task, mechanism (and seed; None: the lowest);
    ValueError naming what there is when none matches."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism = {mechanism!r}; allowed values: {list(MECHANISMS)}")
    found = []
    for d in map(Path, run_dirs):
        if not (d / "summary.json").is_file() or not (d / "config.json").is_file():
            continue
        c = json.loads((d / "config.json").read_text())["config"]
        found.append((c["task"], c["mechanism"], c["seed"], d))
    hits = sorted((s, str(d)) for t, m, s, d in found if t == task and m == mechanism and (seed is None or s == seed))
    if not hits:
        have = sorted({f"{t}/{m}/seed {s}" for t, m, s, _ in found})
        raise ValueError(f"no finished run with task = {task!r}, mechanism = {mechanism!r}, seed = {seed!r}; "
                         f"allowed (task/mechanism/seed): {have}")
    return Path(hits[0][1])


def read_input(task: str, text: str | None, example_seed: int = 0, range: str = "train") -> tuple[list[int], Example | None]:
    """Token ids of a typed input (``text``: words of the task's vocabulary separated by spaces; a
    leading ``<bos>`` is added) and no example, or, when ``text`` is None, the ``example_seed``-th
    draw of the task's generator in ``range`` ("train" or "extrap") with its labelled example."""
    t = make_task(task, range=range)
    if text is None:
        ex = t.generate(1, seed=example_seed)[0]
        return list(ex.tokens), ex
    words = str(text).split()
    unknown = sorted({w for w in words if w not in t.vocab.stoi or w in ("<pad>",)})
    if unknown or not words:
        raise ValueError(f"text: {unknown or 'nothing'} not in the {task!r} vocabulary; allowed words: "
                         f"{[w for w in t.vocab.itos if w != '<pad>']}")
    ids = t.vocab.encode(words)
    return ([BOS_ID] + ids if ids[0] != BOS_ID else ids), None


@dataclass
class Trace:
    table: pd.DataFrame  # one row per input position: position, word, next (the word that follows), pred, depth, ...
    p_n: np.ndarray  # (T, M) halting distribution over steps 1..M at each position
    threshold: float  # the halting threshold used (the run's operating point unless overridden)


@torch.no_grad()
def trace(model: Any, tokens: Sequence[int], vocab_words: Sequence[str], example: Example | None = None,
          threshold: float | None = None, seed: int = 0) -> Trace:
    """Run ``model`` under real early exit on one sequence. ``example`` (from the generator) adds
    the target, correctness and difficulty of the scored positions; ``threshold`` overrides the
    halting threshold (None: the model's); ``seed`` fixes a ``random`` run's depth draws."""
    import dataclasses

    cfg = model.cfg
    if threshold is not None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold = {threshold!r}; allowed values: a number in (0, 1), or None")
        model.cfg = dataclasses.replace(cfg, halt_threshold=float(threshold))
    difficulty = None
    if cfg.mechanism == "oracle":
        if example is None:
            raise ValueError("mechanism 'oracle' reads each token's difficulty label: explore it on a generated "
                             "example (text = None), not on typed text")
        difficulty = collate([example], feature_names=["difficulty"]).features["difficulty"]
    try:
        # a generated example: its last token is only a target; typed text: predict after every word
        ids = torch.tensor([list(tokens[:-1] if example is not None else tokens)], dtype=torch.long)
        out = model(ids, difficulty=difficulty, exit="exit", generator=torch.Generator().manual_seed(seed))
        used = model.cfg.halt_threshold
    finally:
        model.cfg = cfg
    T = out.depth.shape[1]
    pred = out.logits[0].argmax(-1).tolist()
    words = [vocab_words[i] for i in tokens]
    table = pd.DataFrame({
        "position": range(T),
        "word": words[:T],
        "next": (words[1:] + [""])[:T],  # the word that follows ("" after the last typed word)
        "pred": [vocab_words[i] for i in pred],
        "depth": out.depth[0].tolist(),
        "expected_depth": out.expected_depth[0].tolist(),
    })
    if example is not None:
        scored = {i - 1: f for i, f in zip(example.scored, example.features)}
        table["scored"] = [i in scored for i in range(T)]
        table["correct"] = [(table.at[i, "pred"] == table.at[i, "next"]) if i in scored else None for i in range(T)]
        table["difficulty"] = [scored[i].get("difficulty") if i in scored else None for i in range(T)]
    return Trace(table, out.p_n[0].numpy(), float(used))


def plot_trace(tr: Trace, title: str = "", only_scored: bool = False):
    """Heat map of the halting distribution p_n (steps x positions), the depth used marked on each
    position, the words along the x axis; returns the figure."""
    import matplotlib.pyplot as plt

    tab, p = tr.table, tr.p_n
    if only_scored and "scored" in tab:
        keep = tab["scored"].to_numpy()
        tab, p = tab[keep], p[keep]
    T, M = p.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * T + 2), 0.45 * M + 2.2))
    im = ax.imshow(p.T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                   extent=(-0.5, T - 0.5, 0.5, M + 0.5))
    ax.scatter(np.arange(T), tab["depth"], marker="s", s=30, facecolors="none", edgecolors="#E69F00", linewidths=1.5,
               label="depth used (real early exit)")
    labels = [f"{w}→{pr}" for w, pr in zip(tab["word"], tab["pred"])]
    ax.set_xticks(np.arange(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(1, M + 1))
    ax.set_xlabel("input word → predicted next word")
    ax.set_ylabel("recurrent step n")
    ax.set_title(title or f"halting distribution p_n per position (threshold {tr.threshold:g})")
    fig.colorbar(im, ax=ax, label="halting probability p_n", fraction=0.03, pad=0.01)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.35 if T > 20 else -0.25), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["pick_run", "read_input", "trace", "plot_trace", "Trace"]
