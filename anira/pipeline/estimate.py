"""How long will a study take? Measured run times replayed on the driver's schedule.

``replay`` follows the driver (``driver._run_sweep``): ``workers`` runs at a time, the queue in the
profile's order (sweep block, then position), a run matched to another (``from_run``) queued as
soon as that run has finished (``waves=True``: only after every other run, the earlier driver).

``estimate_plan`` (what ``--dry-run`` prints) gives every run still to train a time from measured
numbers, the committed results under ``data/results/*/runs/`` (never from step counts alone):

* a committed run of the same config hash: its measured time (see below);
* otherwise the seconds per unit of work of the committed runs of the same task and mechanism (else
  the same task, else any), where a step's work is batch x d_model x (4 d_model + 2 d_ff) x the
  depth it runs (``fixed_depth`` for fixed, else ``max_depth``), times the run's steps. A rate is
  taken from a run's training CPU time (one thread: it does not grow when the machine is busy, as
  wall time does) times the median wall/CPU ratio of the committed runs a study trained (two side
  by side), as is a committed run's own time;
* plus, per run, the measured cost of starting its notebook (the median over committed runs of the
  executed notebook's duration minus the run's own wall time).

Notebooks other than the per-run one take their times from the profile's committed manifest
(``data/results/<profile>/manifest.json``), else from the other committed manifests, else
``NOTEBOOK_DEFAULT_S`` each. The rates are those of the machine that made the committed results
(a 2-core CPU); a profile for a GPU (``device: cuda``) runs faster than its estimate.

``run_times`` + ``replay`` estimate a *finished* study's from-scratch wall time
(``scripts/study_wall_estimate.py``): each run at its training CPU time times the median wall/CPU
ratio of the runs the study trained (its executed per-run notebook exists). A run trains on one
thread, so its CPU time does not grow when the machine is busy; its wall time does (a run trained
beside other work, or at low priority, would otherwise count several times over), and a run the
study took from the run cache has no wall time of its own in this study. The dry run's estimate
uses the same basis for its committed references.
"""
from __future__ import annotations

import heapq
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anira.pipeline.runs import REPO, Layout, notebook_duration, read_summary

RESULTS_ROOT = REPO / "data" / "results"
NOTEBOOK_DEFAULT_S = 30.0  # an analysis notebook with no measured time (a profile never run)
RUN_OVERHEAD_DEFAULT_S = 10.0  # kernel start when no executed notebook says otherwise


def replay(runs: list[dict], workers: int, waves: bool = False) -> float:
    """Seconds until the last of ``runs`` (dicts: hash, rank, depends_on, seconds) finishes."""
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
        if not running:  # a run waits for one that is not in the list: it can never start
            raise ValueError(f"{len(pending)} runs wait for runs that are not planned: "
                             f"{[r['hash'] for r in pending][:3]}")
        clock, h = heapq.heappop(running)
        finished.add(h)
    return clock


# ----------------------------------------------------------------------------------------------
# a finished study
# ----------------------------------------------------------------------------------------------
def run_times(profile: Any, layout: Layout) -> tuple[list[dict], float]:
    """(one dict per planned run: hash, label, rank, depends_on, seconds, measured; the wall/CPU
    factor) for a finished study of ``profile`` under ``layout``; see the module docstring."""
    from anira.pipeline.driver import make_plan

    plan = make_plan(profile, layout)
    unfinished = [p.spec.label() for p in plan if p.state != "done"]
    if unfinished:
        raise ValueError(f"profile {profile.name}: {len(unfinished)} runs are not finished under {layout.runs_dir}: "
                         f"{unfinished[:3]}; finish the study first")
    per_run = profile.per_run_notebook.name
    runs = []
    for p in plan:
        s = read_summary(layout.run_dir(p.config_hash))
        runs.append({"hash": p.config_hash, "label": p.spec.label(), "rank": (p.spec.block, p.spec.index),
                     "depends_on": p.spec.depends_on, "wall": float(s["wall_time_s"]), "cpu": float(s["train_cpu_s"]),
                     "measured": layout.executed(per_run, p.config_hash).is_file()})
    ratios = [r["wall"] / r["cpu"] for r in runs if r["measured"]]
    if not ratios:
        raise ValueError(f"no run under {layout.runs_dir} was trained by the study (no executed {per_run} notebook)")
    factor = statistics.median(ratios)
    for r in runs:
        r["seconds"] = r["cpu"] * factor
    return runs, factor


# ----------------------------------------------------------------------------------------------
# a plan: the dry run's estimate
# ----------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """One committed finished run: its config fields and measured times."""

    config_hash: str
    config: dict[str, Any]
    wall_s: float
    cpu_s: float | None  # training CPU time (None: not recorded)
    overhead_s: float | None  # executed notebook duration - the run's wall time (None: not executed by a study)


def step_work(cfg: dict[str, Any]) -> float:
    """Work of one training step, in arbitrary units (module docstring)."""
    d, ff = cfg.get("d_model", 128), cfg.get("d_ff", 4 * cfg.get("d_model", 128))
    depth = cfg.get("fixed_depth") if cfg.get("mechanism") == "fixed" and cfg.get("fixed_depth") else cfg.get("max_depth", 6)
    return float(cfg.get("batch_size", 64)) * d * (4 * d + 2 * ff) * float(depth)


def load_references(results_root: Path = RESULTS_ROOT) -> list[Reference]:
    refs = []
    for summary_path in sorted(Path(results_root).glob("*/runs/*/summary.json")):
        run = summary_path.parent
        try:
            s = json.loads(summary_path.read_text())
            cfg = json.loads((run / "config.json").read_text())["config"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        if not s.get("wall_time_s"):
            continue
        duration = notebook_duration(run.parents[1] / "executed" / "02_train" / f"{run.name}.ipynb")
        overhead = None if duration is None else max(0.0, duration - float(s["wall_time_s"]))
        cpu = float(s["train_cpu_s"]) if s.get("train_cpu_s") else None
        refs.append(Reference(run.name, cfg, float(s["wall_time_s"]), cpu, overhead))
    return refs


def _planned_config(profile: Any, p: Any) -> dict[str, Any]:
    from anira.config import to_dict

    if p.config is not None:
        return to_dict(p.config)
    defaults = {f: getattr(profile.run_cls, f) for f in ("d_model", "d_ff", "batch_size", "max_depth", "steps")
                if hasattr(profile.run_cls, f)}
    return {**defaults, **p.spec.base}


def estimate_plan(profile: Any, plan: list[Any], workers: int, results_root: Path = RESULTS_ROOT) -> dict[str, Any]:
    """Estimated wall seconds of the runs of ``plan`` still to train (on ``workers``) and of the
    notebooks; see the module docstring. Returns seconds and how each run's time was found."""
    refs = load_references(results_root)
    by_hash = {r.config_hash: r for r in refs}
    overheads = [r.overhead_s for r in refs if r.overhead_s is not None]
    overhead = statistics.median(overheads) if overheads else RUN_OVERHEAD_DEFAULT_S

    ratios = [r.wall_s / r.cpu_s for r in refs if r.cpu_s and r.overhead_s is not None]  # runs a study trained
    wall_per_cpu = statistics.median(ratios) if ratios else 1.0

    def seconds_of(r: Reference) -> float:  # see the module docstring: CPU time x the median wall/CPU ratio
        return r.cpu_s * wall_per_cpu if r.cpu_s else r.wall_s

    def rate(match: dict[str, Any]) -> float | None:
        rates = [seconds_of(r) / (r.config.get("steps", 1) * step_work(r.config))
                 for r in refs if all(r.config.get(k) == v for k, v in match.items())]
        return statistics.median(rates) if rates else None

    runs, how = [], {"same config": 0, "per-step rate": 0, "done": 0}
    for p in plan:
        key = p.config_hash or f"after:{p.spec.depends_on}:{p.spec.index}"
        if p.state == "done":
            how["done"] += 1
            continue
        cfg = _planned_config(profile, p)
        if p.config_hash in by_hash:
            seconds = seconds_of(by_hash[p.config_hash]) + overhead
            how["same config"] += 1
        else:
            r = (rate({"task": cfg.get("task"), "mechanism": cfg.get("mechanism")}) or rate({"task": cfg.get("task")})
                 or rate({}))
            seconds = (r or 0.0) * cfg.get("steps", 0) * step_work(cfg) + overhead
            how["per-step rate"] += 1
        runs.append({"hash": key, "rank": (p.spec.block, p.spec.index), "seconds": seconds,
                     "depends_on": None})
    hashes = {r["hash"] for r in runs}
    for p, r in zip([p for p in plan if p.state != "done"], runs):  # a matched run waits only for a planned run
        r["depends_on"] = p.spec.depends_on if p.spec.depends_on in hashes else None
    sweep_s = replay(runs, workers) if runs else 0.0
    measured, own = notebook_times(results_root, profile.name)
    nb_s = sum(measured.get(nb.name) or NOTEBOOK_DEFAULT_S for nb in profile.notebooks if not nb.per_run)
    return {"sweep_s": sweep_s, "notebooks_s": nb_s, "total_s": sweep_s + nb_s, "runs": len(runs), "workers": workers,
            "how": how, "overhead_s": overhead, "notebooks_measured": own}


def notebook_times(results_root: Path, profile: str) -> tuple[dict[str, float], bool]:
    """(notebook name -> seconds, measured on this profile?): from the profile's committed manifest,
    else the median over every committed manifest."""
    times: dict[str, list[float]] = {}
    own: dict[str, float] = {}
    for path in sorted(Path(results_root).glob("*/manifest.json")):
        try:
            rows = json.loads(path.read_text())["notebooks"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        for r in rows:
            if not r.get("per_run") and r.get("wall_time_s"):
                times.setdefault(r["name"], []).append(float(r["wall_time_s"]))
                if path.parent.name == profile:
                    own[r["name"]] = float(r["wall_time_s"])
    if own:
        return own, True
    return {k: statistics.median(v) for k, v in times.items()}, False


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def format_estimate(est: dict[str, Any]) -> str:
    how = est["how"]
    return (f"estimated time: {format_duration(est['total_s'])} on {est['workers']} worker(s): "
            f"{est['runs']} runs to train ({format_duration(est['sweep_s'])}; {how['same config']} timed by a committed "
            f"run of the same config, {how['per-step rate']} by the per-step rate of committed runs of the same task "
            f"and mechanism) + notebooks ({format_duration(est['notebooks_s'])}"
            f"{'' if est['notebooks_measured'] else ', as measured for another profile'}); "
            f"from the CPU times measured in data/results, a rough guide")


__all__ = ["replay", "run_times", "estimate_plan", "format_estimate", "format_duration", "step_work",
           "load_references", "Reference"]
