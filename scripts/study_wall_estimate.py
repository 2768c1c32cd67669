"""How long would the sweep of a finished study take from scratch? A replay of the driver's schedule
with each run's measured time (the logic is ``anira.pipeline.estimate``; ``--dry-run`` of the
driver prints the same kind of estimate for a study not yet run).

    python scripts/study_wall_estimate.py --profile cpu3 --runs-root data/results
    python scripts/study_wall_estimate.py --profile cpu3 --runs-root data/results --waves
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.pipeline.estimate import replay, run_times  # noqa: E402
from anira.pipeline.profile import load_profile  # noqa: E402
from anira.pipeline.runs import Layout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="profile name or YAML path")
    ap.add_argument("--runs-root", type=Path, default=Path("runs"), help="folder holding <profile>/runs (default: runs)")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (default 2, as `make study`)")
    ap.add_argument("--waves", action="store_true", help="matched runs only after every other run (the earlier driver)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers = {args.workers}: must be >= 1")
    prof = load_profile(args.profile)
    try:
        runs, factor = run_times(prof, Layout(prof.name, runs_root=args.runs_root))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    n_cached = sum(not r["measured"] for r in runs)
    total = replay(runs, args.workers, args.waves)
    work = sum(r["seconds"] for r in runs)
    print(f"{len(runs)} runs ({n_cached} not trained by the study), each at its training CPU time x {factor:.3f}, "
          f"the median wall/CPU ratio of the {len(runs) - n_cached} it trained")
    print(f"sum of run times {work / 60:.1f} min; lower bound with {args.workers} workers {work / args.workers / 60:.1f} min")
    print(f"replayed sweep ({'two waves' if args.waves else 'matched runs as soon as ready'}, {args.workers} workers): "
          f"{total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
