"""Benchmarks, one function per section: ``python -m anira.bench [--only SECTION ...]``.

Each section returns rows (dicts) that are printed as a table and written to
``<out-dir>/bench_<section>.csv``. Every timed quantity is measured ``repeats`` times and
reported as median, min and max. A task that cannot be imported or built is reported as an
error row (and the exit status is 1), never skipped silently.

Sections:
  data   examples/s of every task's generator at its training range, and of ``collate``
         (batches of ``batch_size`` pre-generated examples, counted in examples/s)

Add a section by writing ``bench_<name>(args) -> list[dict]`` and registering it in SECTIONS.
"""
from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from anira.tasks import TASK_NAMES, collate, make_task

COLUMNS = ("section", "task", "op", "unit", "median", "min", "max", "repeats", "n_per_repeat", "mean_tokens", "error")


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _row(section: str, task: str, op: str, unit: str, per_s: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    row = {k: "" for k in COLUMNS}
    row.update(section=section, task=task, op=op, unit=unit, **extra)
    if per_s:
        row.update(median=statistics.median(per_s), min=min(per_s), max=max(per_s), repeats=len(per_s))
    return row


def bench_data(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Generator and collate throughput per task, at the training range."""
    rows = []
    n, bs, repeats = args.n_examples, args.batch_size, args.repeats
    for name in TASK_NAMES:
        try:
            task = make_task(name, range="train")
            task.generate(10, seed=0)  # warm-up (imports, caches)
        except Exception as err:  # reported, not skipped
            msg = f"{type(err).__name__}: {err}".replace("\n", " ")
            rows.append(_row("data", name, "generate", "examples/s", error=msg))
            if args.verbose:
                traceback.print_exc()
            continue
        times = _timed(lambda: task.generate(n, seed=1), repeats)
        exs = task.generate(max(n, bs), seed=2)
        mean_tokens = round(statistics.fmean(len(e.tokens) for e in exs), 2)
        rows.append(_row("data", name, "generate", "examples/s", [n / t for t in times],
                         n_per_repeat=n, mean_tokens=mean_tokens))
        batches = [exs[i : i + bs] for i in range(0, len(exs) - bs + 1, bs)]
        n_col = len(batches) * bs

        def run_collate() -> None:
            for b in batches:
                collate(b)

        times = _timed(run_collate, repeats)
        rows.append(_row("data", name, f"collate(batch={bs})", "examples/s", [n_col / t for t in times],
                         n_per_repeat=n_col, mean_tokens=mean_tokens))
    return rows


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {"data": bench_data}


def _fmt(v: Any, col: str) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if col == "mean_tokens" else f"{v:,.0f}"
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    from tabulate import tabulate

    cols = ("task", "op", "median", "min", "max", "unit", "mean_tokens", "error")
    print(tabulate([[_fmt(r[c], c) for c in cols] for r in rows], headers=list(cols), disable_numparse=True))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anira.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="sections to run")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per quantity (median, min, max)")
    ap.add_argument("--n-examples", type=int, default=5000, help="data: examples generated per repeat")
    ap.add_argument("--batch-size", type=int, default=64, help="data: collate batch size")
    ap.add_argument("--out-dir", default="figures/bench", help="CSV directory: <out-dir>/bench_<section>.csv")
    ap.add_argument("--csv", default=None, help="CSV path (only with a single section; overrides --out-dir)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of errors")
    args = ap.parse_args(argv)
    if args.csv and len(args.only) != 1:
        ap.error("--csv needs exactly one section in --only")
    for key in ("repeats", "n_examples", "batch_size"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} = {getattr(args, key)} must be >= 1")
    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, 1 thread, "
          f"{args.repeats} repeats (median [min, max])")
    n_errors = 0
    for section in args.only:
        rows = SECTIONS[section](args)
        print(f"\n== {section} ==")
        print_table(rows)
        path = Path(args.csv) if args.csv else Path(args.out_dir) / f"bench_{section}.csv"
        write_csv(rows, path)
        print(f"wrote {path}")
        n_errors += sum(1 for r in rows if r["error"])
    if n_errors:
        print(f"{n_errors} error(s): see the error column", file=sys.stderr)
    return 1 if n_errors else 0


if __name__ == "__main__":
    sys.exit(main())
