"""Does a `hops` run compose lookups, or only guess? Its accuracy against the no-composition floor.

For every finished `hops` run under RESULTS (a run cache or exported results, e.g. data/results/cpu)
it reads the per-token records of the in-range set at the trained depth and prints, per hop count,
the run's accuracy next to the floor of a reader that composes nothing
(`anira.tasks.hops.no_composition_accuracy`: one lookup for 1-hop queries, otherwise a uniform
guess among the prompt's digits it cannot rule out: all of them in the dense design, those earlier
queries have not taken in the earlier design), split into the first query of each example and the
later ones (in the earlier design a later query can rule out earlier answers; in the dense one it
may share a chain with an earlier query, the ``chain_seen`` feature).

    python scripts/hops_floor.py data/results/cpu
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.analysis._stats import select  # noqa: E402
from anira.analysis.io import load_study, resolve_run_dirs, with_fixed_depth  # noqa: E402
from anira.tasks.hops import guess_pool, no_composition_accuracy  # noqa: E402


def table(results: Path) -> pd.DataFrame:
    """Rows (run, query, hops, acc, floor): per run overall (query = hops = "all") and per first/later
    query and hop count, on the in-range set at the trained depth."""
    records, _ = load_study(resolve_run_dirs(results / "runs"))
    records = with_fixed_depth(select(records, split="in", eval_depth="train", task="hops"))
    if records.empty:
        raise SystemExit(f"no finished hops run with records under {results / 'runs'}")
    records = records.assign(
        floor=no_composition_accuracy(records.difficulty, guess_pool(records)),
        query=records.query_index.clip(upper=1).map({0: "first", 1: "later"}),
    )
    rows = []
    for (run_id, mechanism, seed), df in records.groupby(["run_id", "mechanism", "seed"]):
        depth = df.fixed_depth.iloc[0]
        label = f"{mechanism}{'' if pd.isna(depth) else f' depth {int(depth)}'} seed {seed} ({run_id})"
        rows.append({"run": label, "query": "all", "hops": "all", "acc": df.correct.mean(), "floor": df.floor.mean()})
        for (query, hops), g in df.groupby(["query", "difficulty"]):
            rows.append({"run": label, "query": query, "hops": hops, "acc": g.correct.mean(), "floor": g.floor.mean()})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="folder with runs/<id>/ (summary.json, records.csv.gz)")
    t = table(ap.parse_args().results)
    pd.set_option("display.width", 200)
    print("in-range accuracy at the trained depth; floor = no-composition reader (1-hop lookup, else a guess)")
    overall = t[t.hops == "all"].set_index("run")[["acc", "floor"]]
    print(overall.round(3).to_string(), end="\n\n")
    by = t[t.hops != "all"].pivot_table(index="run", columns=["query", "hops"], values="acc")
    floor = t[t.hops != "all"].groupby(["query", "hops"]).floor.mean().rename("floor (all runs)")
    print(pd.concat([by, floor.to_frame().T]).round(2).to_string())


if __name__ == "__main__":
    main()
