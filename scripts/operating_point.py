"""The operating-point rule applied afterwards to finished runs (trained with ``operating_point:
fixed``): what the rule would choose, and the frozen sets scored at that halting threshold.

A run trained with ``operating_point: validation`` does this itself before its final evaluation
(``anira.train.choose_operating_point``; README, "A shallow encoder for the early router"). This
command applies the same rule to a checkpoint that was evaluated at the configured threshold, and
prints one JSON line per run: the chosen threshold, the validation grid (threshold, accuracy on
the multi-step tokens, mean depth) and, on the frozen in-range and out-of-range sets at that
threshold, accuracy (all and multi-step), answer depth (mean, SD), accuracy and depth per
difficulty, and Spearman rho(depth, difficulty) in range.

    python scripts/operating_point.py runs/diag/hops/<hash> [more run folders]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.config import ADAPTIVE  # noqa: E402
from anira.tasks import task_class  # noqa: E402
from anira.train import choose_operating_point, evaluate, load_eval_sets, load_model  # noqa: E402


def report(run_dir: Path) -> dict:
    cfg, model = load_model(run_dir)
    if cfg.mechanism not in ADAPTIVE:
        raise ValueError(f"{run_dir}: mechanism {cfg.mechanism!r} has no halting threshold; allowed: {list(ADAPTIVE)}")
    op = choose_operating_point(model, cfg)
    model.cfg = dataclasses.replace(model.cfg, halt_threshold=op["threshold"])
    out = {"run": run_dir.name, "task": cfg.task, "mechanism": cfg.mechanism, "threshold": op["threshold"],
           "met": op["met"], "validation_full_depth": round(op["acc_multi_full_depth"], 3),
           "grid": [(g["threshold"], round(g["acc_multi"], 3), round(g["mean_depth"], 2)) for g in op["grid"]]}
    for split, examples in load_eval_sets(cfg.task).items():
        rec = evaluate(model, examples, batch_size=cfg.eval_batch_size, seed=cfg.seed + 2)
        multi = np.asarray(task_class(cfg.task).multi_step(rec), dtype=bool)
        row = {"acc": round(float(rec.correct.mean()), 3), "acc_multi": round(float(rec.correct[multi].mean()), 3),
               "depth": round(float(rec.depth.mean()), 2), "depth_sd": round(float(rec.depth.std()), 2),
               "by_difficulty": {int(k): (round(float(g.correct.mean()), 3), round(float(g.depth.mean()), 2))
                                 for k, g in rec.groupby("difficulty")}}
        if split == "in":
            rho = spearmanr(rec.depth, rec.difficulty).statistic
            row["rho"] = None if np.isnan(rho) else round(float(rho), 3)
        out[split] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", type=Path, help="finished early/online run folders (with checkpoint.pt)")
    args = ap.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not (d / "checkpoint.pt").is_file()]
    if missing:
        ap.error(f"run_dirs: no checkpoint.pt in {missing}")
    for d in args.run_dirs:
        print(json.dumps(report(d)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
