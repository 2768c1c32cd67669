"""Run the whole study for one profile: ``python -m anira.study --profile cpu3``.

Every notebook of the profile runs in order through papermill; the training notebook once per run
of the sweep. Finished runs are cached under ``runs/<profile>/runs/<config_hash>/`` and skipped;
interrupted ones resume; finished runs committed under ``data/results/<profile>/runs`` (with
their weights) are copied into the cache first and not trained again (``--no-reuse``). Examples::

    python -m anira.study --profile smoke --dry-run            # the plan (runs, hashes, cached or not), estimated time
    python -m anira.study --profile cpu3 --executor local --workers 2
    python -m anira.study --profile full --executor slurm --partition gpu --time 240 --gpus 1
    python -m anira.study --profile cpu3 --only-notebooks 03,04 # re-run two analyses on finished runs
    python -m anira.study --profile cpu3 --export-to data/results  # copy the results and weights to commit
    python -m anira.study --profile cpu3 --results-from data/results --only-notebooks 3,4,5,6,7  # redraw the figures

Exit status: 0 done, 1 some runs or notebooks failed (rerun to resume), 2 bad input (nothing ran).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from anira.pipeline.driver import EXECUTORS, ExecutorOptions, StudyError, run_study
from anira.pipeline.export import export_results
from anira.pipeline.profile import load_profile
from anira.pipeline.runs import REPO, Layout
from anira.paths import portable

REDRAW_ROOT = REPO / "runs" / "redraw"  # executed notebooks and manifest of a redraw (--results-from)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anira.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True, help="profile name (profiles/<name>.yaml) or path to a YAML file")
    p.add_argument("--executor", default="sequential", choices=EXECUTORS,
                   help="how runs execute: in this process, a local process pool, Slurm jobs (submitit), or "
                        "submitit's local subprocesses (the Slurm code path without a cluster)")
    p.add_argument("--workers", type=int, help="local: worker processes (default 2); slurm: max jobs at once")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--time", type=int, dest="time_min", metavar="MIN",
                   help="per-job time limit in minutes (slurm/submitit-local, default 240; a job warned of its "
                        "time-out saves a checkpoint at once, is requeued and resumes from it)")
    p.add_argument("--gpus", type=int, help="GPUs per job (slurm/submitit-local)")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per job (slurm/submitit-local)")
    p.add_argument("--max-requeues", type=int, metavar="N",
                   help="time-outs after which a run's job is requeued (slurm/submitit-local; default: as many as "
                        "the run needs, since every attempt saves its progress; an attempt that saved nothing is "
                        "not requeued)")
    p.add_argument("--only-notebooks", metavar="LIST",
                   help="comma-separated notebook names or number prefixes, e.g. 03,04")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (runs, hashes, cached or not) and its estimated time, and exit")
    p.add_argument("--profiles-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--notebooks-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--runs-root", type=Path, help="where runs/<profile>/ goes (default: ./runs of the repository; "
                                                  "with --results-from: ./runs/redraw)")
    p.add_argument("--figures-root", type=Path, help="where figures/<profile>/ goes (default: ./figures)")
    p.add_argument("--results-from", type=Path, metavar="DIR",
                   help="redraw from the finished runs under DIR/<profile>/runs (e.g. data/results); nothing is "
                        "trained and nothing under DIR is written (executed notebooks and manifest go to --runs-root)")
    p.add_argument("--export-to", type=Path, metavar="DIR",
                   help="copy the finished runs' records, summaries, logs, trained weights, the manifest and the "
                        "executed notebooks to DIR/<profile>/ (nothing is run); redraw from there with --results-from DIR")
    p.add_argument("--partial", action="store_true",
                   help="with --export-to: export the finished runs of a study that is not finished yet")
    p.add_argument("--reuse-from", type=Path, metavar="DIR", default=REPO / "data" / "results",
                   help="before training, copy the finished runs of DIR/<profile>/runs that have their weights "
                        "(a study committed part by part) into the run cache instead of training them again "
                        "(default: data/results)")
    p.add_argument("--no-reuse", action="store_true", help="train every run here, reusing no committed run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_root = os.environ.get("ANIRA_DATA")
    if data_root and not os.path.isabs(data_root):  # the notebooks run in notebooks/: pass them the same folder
        os.environ["ANIRA_DATA"] = os.path.abspath(data_root)
    try:
        opts = ExecutorOptions(kind=args.executor, workers=args.workers, partition=args.partition,
                               time_min=args.time_min, gpus=args.gpus, cpus_per_task=args.cpus_per_task,
                               max_requeues=args.max_requeues)
        profile = load_profile(args.profile, profiles_dir=args.profiles_dir, notebooks_dir=args.notebooks_dir)
        if args.export_to is not None:
            layout = Layout(profile.name, **({"runs_root": args.runs_root} if args.runs_root else {}))
            print(f"exported {profile.name} results to {export_results(layout, args.export_to, partial=args.partial)}")
            return 0
        only = [t for t in args.only_notebooks.split(",") if t.strip()] if args.only_notebooks else None
        runs_root = args.runs_root
        if args.results_from is not None and runs_root is None:
            runs_root = REDRAW_ROOT
        manifest = run_study(profile, executor=opts, only_notebooks=only, dry_run=args.dry_run,
                             runs_root=runs_root, figures_root=args.figures_root, results_root=args.results_from,
                             reuse_from=None if args.no_reuse else args.reuse_from)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StudyError as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    if not args.dry_run:
        n = len(manifest["runs"])
        layout = Layout(profile.name, **{k: v for k, v in (("runs_root", runs_root),
                                                           ("figures_root", args.figures_root)) if v is not None})
        executed = [nb["name"] for nb in manifest["sessions"][-1]["notebooks"] if nb["status"] == "done"]
        print(f"profile {profile.name}: {n} runs finished, {len(executed)} notebooks executed ({', '.join(executed)}); "
              f"manifest {portable(layout.manifest)}, figures {portable(layout.figures_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
