"""Has the model learned `hops`, and does it use its depth? Trains (or reads) the four runs that
answer it and prints their in-range accuracy per hop count beside the no-composition floor.

The four runs share one recipe (the ``RunConfig`` defaults, plus ``key=value`` overrides):
``fixed`` at depth 1, ``fixed`` at max depth, ``early`` and ``online``. Each trains on one thread;
two run side by side (``--workers``). Finished runs are cached by config hash under ``--runs``, so a
second call only reads them; an interrupted one resumes.

Bars (issue "hops-learns"), each printed with its verdict:
  * fixed max depth: in-range accuracy >= 0.95 and >= 0.90 on every hop count 1-4 (it learned);
  * fixed depth 1 at least 0.15 below fixed max depth on each of 2-4 hops (the loop is used);
  * ``early`` and ``online`` within 0.05 of fixed max depth in-range (halting does not cost it);
  * every run <= 25 CPU-minutes of training (``train_cpu_s`` in its summary).
It also prints each run's learning curve (periodic evaluation: accuracy per hop count, mean depth,
Spearman rho(depth, hops)), so one sees when during training alignment appears.

    python scripts/learning_diagnostic.py --runs runs/diagnostic                 # train or read
    python scripts/learning_diagnostic.py --runs runs/diagnostic steps=3000      # another recipe
    python scripts/learning_diagnostic.py --runs runs/diagnostic --only fixed6,online

Exit status 0 when every bar holds, 1 when one fails (the table says which), 2 on a bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.tasks.hops import guess_pool, no_composition_accuracy  # noqa: E402
from anira.train import RunConfig, config_hash, run  # noqa: E402

BARS = {"max_in": 0.95, "max_per_hop": 0.90, "depth1_gap": 0.15, "adaptive_gap": 0.05, "cpu_min": 25.0}
HOPS = (1, 2, 3, 4)


def run_configs(overrides: dict, only: list[str] | None) -> dict[str, RunConfig]:
    """name -> RunConfig of the four diagnostic runs (validated before anything is trained)."""
    base = {"task": "hops", "num_threads": 1, "progress": False, **overrides}
    S = RunConfig.from_dict(base, where="diagnostic").max_depth
    variants = {
        "fixed1": {"mechanism": "fixed", "fixed_depth": 1},
        f"fixed{S}": {"mechanism": "fixed", "fixed_depth": S},
        "early": {"mechanism": "early"},
        "online": {"mechanism": "online"},
    }
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            raise ValueError(f"--only {','.join(unknown)}: not a diagnostic run; allowed: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in only}
    return {name: RunConfig.from_dict({**base, **v}, where=f"diagnostic run {name}") for name, v in variants.items()}


def per_hop(run_dir: Path) -> pd.DataFrame:
    """In-range answer tokens at the trained depth: acc, floor and mean depth per hop count."""
    rec = pd.read_csv(run_dir / "records.csv.gz")
    rec = rec[(rec.split == "in") & (rec.eval_max_depth == rec.eval_max_depth.min()) & (rec.is_answer == 1)]
    rec = rec.assign(floor=no_composition_accuracy(rec.difficulty, guess_pool(rec)))
    return rec.groupby("difficulty").agg(acc=("correct", "mean"), floor=("floor", "mean"), depth=("depth", "mean"))


def curve(run_dir: Path) -> pd.DataFrame:
    rows = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    out = []
    for r in rows:
        if r["kind"] != "eval":
            continue
        row = {"step": r["step"], "acc": r["acc"], "depth": r["mean_depth"], "rho": r.get("rho")}
        row.update({f"acc{h}": r["per_difficulty"].get(str(h), {}).get("acc") for h in HOPS})
        out.append(row)
    return pd.DataFrame(out)


def report(names: dict[str, Path]) -> bool:
    """Print the table, the curves and the bars; True when every bar holds."""
    summaries = {n: json.loads((d / "summary.json").read_text()) for n, d in names.items()}
    tables = {n: per_hop(d) for n, d in names.items()}
    rows = []
    for n, s in summaries.items():
        t = tables[n]
        row = {"run": n, "steps": s["steps"], "cpu_min": s.get("train_cpu_s", float("nan")) / 60,
               "acc_in": s["in"]["acc"], "floor_in": None, "depth_in": s["in"]["mean_depth"],
               "rho": s["in"].get("rho"), "halt_start": s.get("halt_start")}
        for h in HOPS:
            row[f"acc{h}"] = t.acc.get(h)
            row[f"depth{h}"] = t.depth.get(h)
        rows.append(row)
    first = next(iter(names.values()))
    rec = pd.read_csv(first / "records.csv.gz")
    rec = rec[(rec.split == "in") & (rec.eval_max_depth == rec.eval_max_depth.min()) & (rec.is_answer == 1)]
    floor = no_composition_accuracy(rec.difficulty, guess_pool(rec))
    floor_row = {"run": "floor (no composition)", "acc_in": floor.mean(),
                 **{f"acc{h}": floor[rec.difficulty == h].mean() for h in HOPS}}
    table = pd.DataFrame(rows + [floor_row]).drop(columns="floor_in")
    pd.set_option("display.width", 220)
    print("in-range accuracy and mean depth per hop count (real early exit, trained depth)")
    print(table.round(3).to_string(index=False), end="\n\n")
    for n, d in names.items():
        print(f"learning curve: {n}")
        print(curve(d).round(3).to_string(index=False), end="\n\n")

    verdicts = []
    fixed_max = next((n for n in names if n.startswith("fixed") and n != "fixed1"), None)
    by = {r["run"]: r for r in rows}
    if fixed_max:
        m = by[fixed_max]
        verdicts.append((f"{fixed_max}: in-range >= {BARS['max_in']}", m["acc_in"] >= BARS["max_in"], f"{m['acc_in']:.3f}"))
        worst = min(m[f"acc{h}"] for h in HOPS if m[f"acc{h}"] is not None)
        verdicts.append((f"{fixed_max}: every hop count 1-4 >= {BARS['max_per_hop']}", worst >= BARS["max_per_hop"],
                         f"lowest {worst:.3f}"))
        if "fixed1" in by:
            gaps = [m[f"acc{h}"] - by["fixed1"][f"acc{h}"] for h in HOPS[1:]]
            verdicts.append((f"fixed1 >= {BARS['depth1_gap']} below {fixed_max} on 2-4 hops", min(gaps) >= BARS["depth1_gap"],
                             "gaps " + " / ".join(f"{g:.3f}" for g in gaps)))
        for n in ("early", "online"):
            if n in by:
                gap = m["acc_in"] - by[n]["acc_in"]
                verdicts.append((f"{n} within {BARS['adaptive_gap']} of {fixed_max}", gap <= BARS["adaptive_gap"],
                                 f"{by[n]['acc_in']:.3f} ({gap:+.3f} below)"))
    for n, r in by.items():
        verdicts.append((f"{n} <= {BARS['cpu_min']:.0f} CPU-minutes", r["cpu_min"] <= BARS["cpu_min"], f"{r['cpu_min']:.1f}"))
    print("bars")
    for what, ok, value in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {value}")
    return all(ok for _, ok, _ in verdicts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="run cache: one folder per config hash")
    ap.add_argument("--workers", type=int, default=2, help="runs trained side by side (one thread each)")
    ap.add_argument("--only", default="", help="comma-separated subset of fixed1,fixed<S>,early,online")
    ap.add_argument("--read", action="store_true", help="only read finished runs, train nothing")
    ap.add_argument("overrides", nargs="*", help="RunConfig fields as key=value (values parsed as YAML)")
    a = ap.parse_args(argv)
    try:
        if a.workers < 1:
            raise ValueError(f"--workers = {a.workers}: must be >= 1")
        overrides = {}
        for item in a.overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value")
            k, v = item.split("=", 1)
            overrides[k] = yaml.safe_load(v)
        cfgs = run_configs(overrides, [s for s in a.only.split(",") if s])
        if cfgs and next(iter(cfgs.values())).task != "hops":
            raise ValueError("task: the diagnostic's floor and bars are defined for task=hops only")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dirs = {n: a.runs / config_hash(c) for n, c in cfgs.items()}
    todo = [(c, str(dirs[n])) for n, c in cfgs.items() if not (dirs[n] / "summary.json").exists()]
    if todo and a.read:
        print(f"error: --read: {len(todo)} run(s) not finished under {a.runs}", file=sys.stderr)
        return 2
    if todo and a.workers == 1:
        for cfg, out in todo:
            run(cfg, out)
    elif todo:
        with ProcessPoolExecutor(max_workers=min(a.workers, len(todo))) as pool:
            list(pool.map(run, *zip(*todo)))
    return 0 if report(dirs) else 1


if __name__ == "__main__":
    sys.exit(main())
