"""How long would the sweep of a finished study take from scratch? A replay of the driver's schedule
with each run's measured time.

The replay follows the driver (``anira.pipeline.driver._run_sweep``): ``--workers`` runs at a
time, the queue in the profile's order (sweep block, then position), a run matched to another
(``from_run``) queued as soon as that run has finished. ``--waves`` replays the driver before that
change instead: matched runs only after every other run has finished.

A run's time is its ``wall_time_s`` (summary.json). A run the study did not train itself (no
executed per-run notebook: it came from the run cache, e.g. a diagnostic run of the same config)
had its wall time measured under other conditions, so its time is its training CPU time times the
largest wall/CPU ratio among the runs the study did train. Notebooks and installation are not
included.

    python scripts/study_wall_estimate.py --profile cpu --runs-root data/results
    python scripts/study_wall_estimate.py --profile cpu --runs-root data/results --waves
"""
from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.pipeline.driver import make_plan  # noqa: E402
from anira.pipeline.profile import load_profile  # noqa: E402
from anira.pipeline.runs import Layout, read_summary  # noqa: E402


def run_times(profile: str, runs_root: Path) -> tuple[list[dict], float]:
    """(one dict per planned run: hash, rank, depends_on, seconds, measured; the wall/CPU factor)."""
    prof = load_profile(profile)
    layout = Layout(prof.name, runs_root=runs_root)
    plan = make_plan(prof, layout)
    unfinished = [p.spec.label() for p in plan if p.state != "done"]
    if unfinished:
        raise SystemExit(f"--profile {profile}: {len(unfinished)} runs are not finished under {layout.base}: "
                         f"{unfinished[:3]}; finish the study first")
    per_run = prof.per_run_notebook.name
    runs = []
    for p in plan:
        s = read_summary(layout.run_dir(p.config_hash))
        runs.append({"hash": p.config_hash, "label": p.spec.label(), "rank": (p.spec.block, p.spec.index),
                     "depends_on": p.spec.depends_on, "wall": float(s["wall_time_s"]), "cpu": float(s["train_cpu_s"]),
                     "measured": layout.executed(per_run, p.config_hash).is_file()})
    ratios = [r["wall"] / r["cpu"] for r in runs if r["measured"]]
    if not ratios:
        raise SystemExit(f"no run under {layout.base} was trained by the study (no executed {per_run} notebook)")
    factor = max(ratios)
    for r in runs:
        r["seconds"] = r["wall"] if r["measured"] else r["cpu"] * factor
    return runs, factor


def replay(runs: list[dict], workers: int, waves: bool = False) -> float:
    """Seconds until the last run finishes, with the driver's queue (module docstring)."""
    pending = sorted(runs, key=lambda r: r["rank"])
    finished: set[str] = set()
    running: list[tuple[float, str]] = []  # (finish time, hash)
    clock = 0.0
    independent = {r["hash"] for r in runs if r["depends_on"] is None}
    while pending or running:
        second_wave_open = not waves or independent <= finished
        ready = [r for r in pending if r["depends_on"] is None
                 or (r["depends_on"] in finished and second_wave_open)]
        while ready and len(running) < workers:
            r = ready.pop(0)
            pending.remove(r)
            heapq.heappush(running, (clock + r["seconds"], r["hash"]))
        clock, h = heapq.heappop(running)
        finished.add(h)
    return clock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="profile name or YAML path")
    ap.add_argument("--runs-root", type=Path, default=Path("runs"), help="folder holding <profile>/runs (default: runs)")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (default 2, as `make study`)")
    ap.add_argument("--waves", action="store_true", help="matched runs only after every other run (the earlier driver)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers = {args.workers}: must be >= 1")
    runs, factor = run_times(args.profile, args.runs_root)
    n_cached = sum(not r["measured"] for r in runs)
    total = replay(runs, args.workers, args.waves)
    work = sum(r["seconds"] for r in runs)
    print(f"{len(runs)} runs, {n_cached} not trained by the study (CPU time x {factor:.3f}, the largest wall/CPU "
          f"ratio of the {len(runs) - n_cached} it trained)")
    print(f"sum of run times {work / 60:.1f} min; lower bound with {args.workers} workers {work / args.workers / 60:.1f} min")
    print(f"replayed sweep ({'two waves' if args.waves else 'matched runs as soon as ready'}, {args.workers} workers): "
          f"{total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
