"""Has the model learned its task, and does it use its depth? Trains (or reads) the four runs that
answer it and prints their in-range accuracy per difficulty beside the task's trivial floor.

The four runs share one recipe: the ``RunConfig`` defaults, then the task's measured recipe
(``Task.recipe`` for every run, ``Task.adaptive_recipe`` for early and online, e.g. `addition`:
5,000 steps), then ``key=value`` overrides (``task=`` picks the task, ``hops`` by default). The
runs: ``fixed`` at depth 1, ``fixed`` at max depth, ``early`` and ``online``. Each trains on one
thread; two run side by side (``--workers``). Finished runs are cached by config hash under
``--runs``, so a second call only reads them; an interrupted one resumes.

The floor is ``Task.floor``: the expected accuracy, per token, of a reader without multi-step
computation (e.g. ``hops``: a 1-hop lookup, else a guess). The multi-step tokens
(``Task.multi_step``) are those it cannot be sure of, where depth can pay. Bars (defined and judged
in ``anira.analysis.learning``: ``diagnostic_bars``), each printed with its verdict:
  * fixed max depth at least 0.15 above the floor on the multi-step tokens (it computes);
  * fixed depth 1 at least 0.15 below fixed max depth on the multi-step tokens (the loop is used);
  * ``early`` and ``online`` within 0.05 of fixed max depth on the multi-step tokens (halting does
    not cost it where depth is needed; in-range accuracy over all tokens can hide that, e.g. on
    ``addition`` 88 % of the digits need no chain);
  * every run <= 25 CPU-minutes of training (``train_cpu_s`` in its summary);
  * ``hops`` only: fixed max depth >= 0.95 in-range and >= 0.90 on every hop count (it learned).
  * ``language`` only, on fixed max depth: >= 0.90 on 1-fact answers; >= 0.99 on grammar-determined
    tokens; on the free choices the generator draws uniformly (``uniform``), mean cross-entropy at
    most 0.1 nats above their entropy ln(n_branching) (it models the irreducible choices, no more);
    and ``early``/``online`` within 0.03 (not 0.05) of it on the multi-fact answers.
0.15 is ten standard errors of an accuracy over the ~1,000 multi-step tokens of a frozen set, and
more than the spread between seeds measured on ``hops``: a gap that size is not noise.
It also prints each run's learning curve (periodic evaluation: accuracy per difficulty, mean depth,
Spearman rho(depth, difficulty)), so one sees when during training alignment appears.

    python scripts/learning_diagnostic.py --runs runs/diagnostic                 # train or read
    python scripts/learning_diagnostic.py --runs runs/diag_addition task=addition eval_max_depth=9
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.analysis import load_records, select  # noqa: E402
from anira.analysis.learning import diagnostic_bars, learning_table  # noqa: E402
from anira.config import load_yaml  # noqa: E402
from anira.tasks import task_class  # noqa: E402
from anira.train import RunConfig, config_hash, run  # noqa: E402


def run_configs(overrides: dict, only: list[str] | None) -> dict[str, RunConfig]:
    """name -> RunConfig of the four diagnostic runs (validated before anything is trained)."""
    base = {"task": "hops", "num_threads": 1, "progress": False, **overrides}
    task = task_class(RunConfig.from_dict(base, where="diagnostic").task)  # validated first: names a bad key
    base = {"task": "hops", "num_threads": 1, "progress": False, **task.recipe, **overrides}
    S = RunConfig.from_dict(base, where="diagnostic").max_depth
    tuned = {k: v for k, v in task.adaptive_recipe.items() if k not in overrides}  # key=value wins over the recipe
    variants = {
        "fixed1": {"mechanism": "fixed", "fixed_depth": 1},
        f"fixed{S}": {"mechanism": "fixed", "fixed_depth": S},
        "early": {"mechanism": "early", **tuned},
        "online": {"mechanism": "online", **tuned},
    }
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            raise ValueError(f"--only {','.join(unknown)}: not a diagnostic run; allowed: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in only}
    return {name: RunConfig.from_dict({**base, **v}, where=f"diagnostic run {name}") for name, v in variants.items()}


def curve(run_dir: Path, levels) -> pd.DataFrame:
    rows = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    out = []
    for r in rows:
        if r["kind"] != "eval":
            continue
        row = {"step": r["step"], "acc": r["acc"], "depth": r["mean_depth"], "rho": r.get("rho")}
        row.update({f"acc{h}": r["per_difficulty"].get(str(h), {}).get("acc") for h in levels})
        out.append(row)
    return pd.DataFrame(out)


def report(names: dict[str, Path]) -> bool:
    """Print the table, the curves and the bars (``anira.analysis.learning.diagnostic_bars``);
    True when every bar holds."""
    summaries = {n: json.loads((d / "summary.json").read_text()) for n, d in names.items()}
    records = select(load_records([d / "records.csv.gz" for d in names.values()]), split="in", eval_depth="train")
    first = records[records.run_id == next(iter(names.values())).name]
    task_name = first.task.iloc[0]
    task = task_class(task_name)
    floor, multi = task.floor(first), task.multi_step(first)
    levels = sorted(first.difficulty.unique())
    learned = learning_table(records).set_index("run_id")
    rows = []
    for n, s in summaries.items():
        rec = records[records.run_id == names[n].name]
        by = rec.groupby("difficulty").agg(acc=("correct", "mean"), depth=("depth", "mean"))
        row = {"run": n, "steps": s["steps"], "cpu_min": s.get("train_cpu_s", float("nan")) / 60,
               "acc_in": s["in"]["acc"], "acc_multi": learned.loc[names[n].name, "acc_multi"],
               "depth_in": s["in"]["mean_depth"], "rho": s["in"].get("rho"), "halt_start": s.get("halt_start")}
        row.update({f"acc{h}": by.acc.get(h) for h in levels})
        row.update({f"depth{h}": by.depth.get(h) for h in levels})
        rows.append(row)
    floor_row = {"run": "floor", "acc_in": floor.mean(), "acc_multi": floor[multi].mean(),
                 **{f"acc{h}": floor[first.difficulty == h].mean() for h in levels}}
    pd.set_option("display.width", 250)
    print(f"task {task_name}: in-range accuracy and mean depth per difficulty (real early exit, trained depth)")
    print(f"floor: the reader that {task.floor_reader}; acc_multi: on the "
          f"{int(multi.sum())} multi-step tokens of {len(first)} scored")
    print(pd.DataFrame(rows + [floor_row]).round(3).to_string(index=False), end="\n\n")
    for n, d in names.items():
        print(f"learning curve: {n}")
        print(curve(d, levels).round(3).to_string(index=False), end="\n\n")
    verdicts = diagnostic_bars(records, {n: d.name for n, d in names.items()},
                               {n: r["cpu_min"] for n, r in zip(summaries, rows)})
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
            overrides[k] = load_yaml(v)
        cfgs = run_configs(overrides, [s for s in a.only.split(",") if s])
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
