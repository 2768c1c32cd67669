"""Prove the training recipe on `hops`: train fixed / online / early / oracle / random with the default
recipe and print, per hop count, accuracy and mean depth under real early exit on the frozen sets.

    python scripts/recipe_probe.py --out runs/recipe                # all five, sequentially
    python scripts/recipe_probe.py --out runs/recipe --only online steps=3000
    python scripts/recipe_probe.py --out runs/recipe --report       # only print the table

Extra ``key=value`` arguments override RunConfig fields for every run. Finished runs are reused
(same config hash), interrupted ones resume. ``random`` draws depths with the mean depth of the
finished ``online`` run (in-range, real early exit) unless ``random_mean_depth`` is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.train import RunConfig, run  # noqa: E402

MECHANISMS = ("fixed", "online", "early", "oracle", "random")  # anira.config.MECHANISMS, in the order this probe trains them


def table(summary: dict, split: str = "in") -> str:
    s = summary[split]
    lines = [f"  {split}: acc {s['acc']:.3f}  mean depth {s['mean_depth']:.2f}  (n={s['n_tokens']})",
             "    hops   acc    depth    n"]
    for k, v in sorted(s["per_difficulty"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"    {int(k):>4}  {v['acc']:.3f}  {v['mean_depth']:5.2f}  {v['n']:>4}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", choices=MECHANISMS, action="append")
    ap.add_argument("--report", action="store_true", help="print the table of finished runs only")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    over = {}
    for item in args.overrides:
        k, v = item.split("=", 1)
        over[k] = yaml.safe_load(v)
    for mech in args.only or MECHANISMS:
        out = Path(args.out) / mech
        if args.report:
            if not (out / "summary.json").exists():
                print(f"{mech}: not finished")
                continue
            summary = json.loads((out / "summary.json").read_text())
        else:
            cfg = {"task": "hops", "mechanism": mech, **over}
            if mech == "random" and "random_mean_depth" not in cfg:
                online = Path(args.out) / "online" / "summary.json"
                if not online.exists():
                    raise SystemExit(f"random: needs the finished online run ({online}) or random_mean_depth=...")
                cfg["random_mean_depth"] = round(json.loads(online.read_text())["in"]["mean_depth"], 4)
            summary = run(RunConfig.from_dict(cfg, where="recipe_probe"), out)
        print(f"{mech}: {summary['steps']} steps, train {summary['train_time_s']:.0f} s "
              f"({summary['steps_per_s']:.2f} steps/s), run id {summary['run_id']}")
        print(table(summary, "in"))
        print(table(summary, "out"))


if __name__ == "__main__":
    main()
