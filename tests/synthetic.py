"""Synthetic per-token records with KNOWN ground truth, for the tests of the analyses.

Every token gets independent features: static ``level`` (0..3) and ``is_hub`` (0/1), dynamic
``frontier_size`` (0..4) and ``remaining`` (0..9), a ``difficulty`` (0..4), and the example's
``size``; language rows also get ``kind`` (0 grammar, 1 free, 2 answer; difficulty 0 unless
answer). The depth of each mechanism follows one rule (``depth_mode``):

    "difficulty"  depth = 1 + difficulty + round(noise * N(0, 1))        (aligned)
    "static"      depth = 1 + level + is_hub                              (exactly static)
    "dynamic"     depth = 1 + frontier_size                               (exactly dynamic)
    "random"      depth ~ Uniform{1..max_depth}                           (independent)
    "constant"    depth = max_depth                                       (fixed baseline)
    "surprise"    depth = 1 + 3 * [kind == free] + round(noise * N(0, 1)) (language: follows surprise)

depth is clipped to [1, max_depth]; out-of-range sequences add ``out_extra_depth``. Correctness is
Bernoulli(acc_in) in range, Bernoulli(acc_out) out of range. Loss = 2.0 on free tokens and 0.1
otherwise, plus noise (a dense model's surprisal pattern). Extra ``eval_depths`` repeat the same
sequences with depth + 1 (clipped) and identical correctness.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

DEPTH_MODES = ("difficulty", "static", "dynamic", "random", "constant", "surprise")
STATIC = ("size", "level", "is_hub")
DYNAMIC = ("frontier_size", "remaining")


def synthetic_records(tasks: Sequence[str] = ("toposort",), depth_mode: Mapping[str, str] | None = None,
                      seeds: Sequence[int] = (0, 1), n_examples: int = 30, n_tokens: int = 10, max_depth: int = 8,
                      eval_depths: Sequence[int] = (), noise: float = 0.3, acc_in: float = 0.95,
                      acc_out: float = 0.3, out_extra_depth: int = 1, beta: float = 0.01,
                      rng_seed: int = 0) -> pd.DataFrame:
    """Records in the study's schema; ``depth_mode`` maps mechanism -> rule (see module docstring)."""
    depth_mode = dict(depth_mode or {"early": "static", "online": "dynamic"})
    for m, mode in depth_mode.items():
        if mode not in DEPTH_MODES:
            raise ValueError(f"depth_mode[{m!r}] = {mode!r} is not allowed; allowed values: {list(DEPTH_MODES)}")
    rng = np.random.default_rng(rng_seed)
    frames = []
    for task in tasks:
        # the same evaluation sequences for every run of a task (a frozen evaluation set)
        base = {}
        for split, sizes in (("in", (4, 8)), ("out", (12, 16))):
            n = n_examples * n_tokens
            ex = np.repeat(np.arange(n_examples), n_tokens)
            size = np.repeat(rng.integers(sizes[0], sizes[1] + 1, n_examples), n_tokens)
            kind = rng.integers(0, 3, n) if task == "language" else np.full(n, 2)
            diff = rng.integers(0, 5, n)
            if task == "language":
                diff = np.where(kind == 2, rng.integers(1, 5, n), 0)
            if split == "out":  # out of range, multi-step tokens need more steps than any in range (5-8)
                diff = np.where(diff > 0, diff + 4, diff)
            base[split] = pd.DataFrame(dict(
                split=split, example=ex, position=np.tile(np.arange(1, n_tokens + 1), n_examples), size=size,
                difficulty=diff, is_answer=(kind == 2).astype(int), kind=kind, level=rng.integers(0, 4, n),
                is_hub=rng.integers(0, 2, n), frontier_size=rng.integers(0, 5, n), remaining=rng.integers(0, 10, n),
                target=rng.integers(2, 20, n), loss_base=np.where(kind == 1, 2.0, 0.1)))
        for mech, mode in depth_mode.items():
            for seed in seeds:
                for split, b in base.items():
                    n = len(b)
                    if mode == "difficulty":
                        d = 1 + b["difficulty"].to_numpy() + np.round(noise * rng.standard_normal(n))
                    elif mode == "static":
                        d = 1 + b["level"].to_numpy() + b["is_hub"].to_numpy()
                    elif mode == "dynamic":
                        d = 1 + b["frontier_size"].to_numpy()
                    elif mode == "random":
                        d = rng.integers(1, max_depth + 1, n)
                    elif mode == "constant":
                        d = np.full(n, max_depth)
                    else:  # surprise
                        d = 1 + 3 * (b["kind"].to_numpy() == 1) + np.round(noise * rng.standard_normal(n))
                    if split == "out" and mode != "constant":
                        d = d + out_extra_depth
                    d = np.clip(d, 1, max_depth).astype(int)
                    correct = (rng.random(n) < (acc_in if split == "in" else acc_out)).astype(int)
                    loss = b["loss_base"].to_numpy() + 0.05 * rng.random(n)
                    for e in (max_depth, *eval_depths):
                        de = d if e == max_depth else np.clip(d + 1, 1, e)
                        frames.append(b.drop(columns="loss_base").assign(
                            run_id=f"{task}-{mech}-s{seed}", task=task, mechanism=mech, seed=seed,
                            beta=np.nan if mech == "fixed" else beta, max_depth=max_depth, eval_max_depth=e,
                            depth=de, expected_depth=de + 0.1, correct=correct,
                            pred=np.where(correct == 1, b["target"], 0), loss=loss))
    return pd.concat(frames, ignore_index=True)


__all__ = ["synthetic_records", "DEPTH_MODES", "STATIC", "DYNAMIC"]
