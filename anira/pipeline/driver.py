"""The study driver: run every notebook of a profile in order, the per-run notebook once per run.

    1. validate the profile and the command line (any error: nothing has run yet)
    2. notebooks before the per-run one (e.g. 01_tasks), once each
    3. the sweep: every run not yet finished, through an executor (sequential, a local process
       pool, or Slurm / local subprocesses via submitit), in the profile's order; a run whose
       config is taken from another run's result (``from_run``) starts as soon as the run it
       matches has finished (with submitit: in the next job array)
    4. the notebooks after it (the analyses), once each, with ``run_dirs`` = every run's directory

The manifest (``runs/<profile>/manifest.json``, copied to ``figures/<profile>/``) is rewritten
atomically after every run, so killing the driver loses only the unfinished run's last step
interval: the next invocation skips finished runs and re-executes the others, which resume.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from anira.config import check_fields
from anira.paths import portable, portable_argv
from anira.pipeline.profile import REPO, NotebookSpec, Profile, RunSpec, config_dict, load_profile, resolve_derived
from anira.pipeline.runs import (Layout, RequeueableRun, RunJob, RunResult, atomic_write_text, error_text,
                                 execute_notebook, execute_run, exit_with_driver, notebook_duration, read_summary,
                                 run_state)

EXECUTORS = ("sequential", "local", "slurm", "submitit-local")
_PACKAGES = ("anira", "torch", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "papermill", "nbclient",
             "ipykernel", "jupyter_client", "submitit", "PyYAML", "tqdm")


class StudyError(RuntimeError):
    """Some runs or notebooks failed; the manifest lists which and where their executed copies are."""


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "sequential"  # one of EXECUTORS
    workers: int | None = None  # local: processes; slurm: max jobs at once (array parallelism)
    partition: str | None = None  # slurm partition
    time_min: int | None = None  # per-job time limit (minutes); a timed-out Slurm job is requeued and resumes
    gpus: int | None = None  # GPUs per job
    cpus_per_task: int | None = None  # CPUs per job
    # time-outs after which a run's job is requeued; None: as many as the run needs (every attempt
    # saves its progress, and an attempt that saved nothing is not requeued: see RequeueableRun)
    max_requeues: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor = {self.kind!r} is not allowed; allowed values: {list(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers = {self.workers!r} is out of range; allowed: [1, inf)")
        if self.workers is not None and self.kind == "sequential":
            raise ValueError("workers: only with executor 'local', 'slurm' or 'submitit-local'")
        cluster_only = {"partition": self.partition, "time": self.time_min, "gpus": self.gpus,
                        "cpus_per_task": self.cpus_per_task, "max_requeues": self.max_requeues}
        given = [k for k, v in cluster_only.items() if v is not None]
        if given and self.kind in ("sequential", "local"):
            raise ValueError(f"{given}: only with executor 'slurm' or 'submitit-local'")
        if self.partition is not None and self.kind != "slurm":
            raise ValueError("partition: only with executor 'slurm'")
        for k in ("time", "gpus", "cpus_per_task", "max_requeues"):
            v, low = cluster_only[k], 0 if k in ("gpus", "max_requeues") else 1
            if v is not None and v < low:
                raise ValueError(f"{k} = {v!r} is out of range; allowed: [{low}, inf)")


# ----------------------------------------------------------------------------------------------
# environment: kernel, git, versions
# ----------------------------------------------------------------------------------------------
def check_kernel() -> str:
    """The ``python3`` kernelspec must exist and run this interpreter; returns its resource dir."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    fix = f"run `{sys.executable} -m ipykernel install --sys-prefix`"
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel named 'python3' is visible to {sys.executable}; {fix}") from None
    argv0 = spec.argv[0]
    generic = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}
    if argv0 not in generic and Path(argv0).resolve() != Path(sys.executable).resolve():
        raise ValueError(f"kernel 'python3' ({spec.resource_dir}) runs {argv0}, not {sys.executable}; {fix}, "
                         f"or remove that kernelspec if it lies outside {sys.prefix} and shadows this environment's")
    return spec.resource_dir


def git_state(repo: Path = REPO) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# plan
# ----------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    spec: RunSpec
    config_hash: str | None  # None while waiting for its matched run
    state: str  # done | partial | new | waiting
    config: Any | None
    error: str | None = None  # a from_run config that could not be built


def _check_inputs(profile: Profile, layout: Layout, p: PlannedRun, cache: dict[str, str]) -> PlannedRun:
    """A cached run must have been evaluated on the data the trainer would use now.

    The trainer module may define ``inputs_fingerprint(cfg) -> str`` (anira.train does: the
    frozen eval sets' sha256); a finished run whose summary records another ``inputs_sha256`` is
    stale, an error that names the run and what to do, raised before anything runs."""
    if p.state != "done" or p.config is None:
        return p
    fn = getattr(profile.trainer, "inputs_fingerprint", None)
    recorded = (read_summary(layout.run_dir(p.config_hash)) or {}).get("inputs_sha256")
    if fn is None or recorded is None:
        return p
    key = json.dumps(getattr(p.config, "task", None))
    if key not in cache:
        cache[key] = fn(p.config)
    if recorded != cache[key]:
        raise ValueError(f"cached run {layout.run_dir(p.config_hash)} ({p.spec.label()}) was evaluated on other data "
                         f"(inputs_sha256 {recorded[:12]}) than the current frozen sets ({cache[key][:12]}); "
                         f"delete that directory to retrain it")
    return p


def _resolve(profile: Profile, layout: Layout, spec: RunSpec, cache: dict[str, str] | None = None) -> PlannedRun:
    return _check_inputs(profile, layout, _resolve_state(profile, layout, spec), {} if cache is None else cache)


def _resolve_state(profile: Profile, layout: Layout, spec: RunSpec) -> PlannedRun:
    if spec.depends_on is None:
        h = spec.config_hash
        return PlannedRun(spec, h, run_state(layout.run_dir(h), h), spec.config)
    dep_dir = layout.run_dir(spec.depends_on)
    if run_state(dep_dir, spec.depends_on) != "done":
        return PlannedRun(spec, None, "waiting", None)
    try:
        cfg = resolve_derived(profile, spec, read_summary(dep_dir) or {})
    except ValueError as err:
        return PlannedRun(spec, None, "waiting", None, str(err))
    h = profile.hash_fn(cfg)
    return PlannedRun(spec, h, run_state(layout.run_dir(h), h), cfg)


REUSED_FILES = ("config.json", "summary.json", "log.jsonl", "records.csv.gz", "weights.pt")


def reuse_finished(layout: Layout, source: Path) -> list[str]:
    """Copy into ``layout.runs_dir`` every finished run of ``source`` (a folder of run directories, e.g.
    the committed ``data/results/<profile>/runs``) that has its trained weights (``weights.pt``) and
    that ``layout`` does not hold yet; returns their hashes. A run directory is named by its config
    hash, which covers every parameter and the frozen data (``inputs_sha256`` is still checked by the
    plan), so a reused run is the run the study would train. Its executed per-run notebook
    (``source/../executed/<notebook>/<hash>.ipynb``) comes with it, so that an export of the study
    keeps it and the manifest keeps its duration. A directory already there (finished or partial)
    is left as it is."""
    source = Path(source)
    if not source.is_dir() or source.resolve() == layout.runs_dir.resolve():
        return []
    copied = []
    for src in sorted(source.iterdir()):
        if run_state(src, src.name) != "done" or not (src / "weights.pt").is_file() or layout.run_dir(src.name).exists():
            continue
        tmp = layout.runs_dir / f".{src.name}.reuse"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in REUSED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        os.replace(tmp, layout.run_dir(src.name))  # whole or not at all
        for nb in sorted((source.parent / "executed").glob(f"*/{src.name}.ipynb")):  # its executed per-run notebook
            dest = layout.executed_dir / nb.parent.name / nb.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(nb, dest)
        copied.append(src.name)
    return copied


def make_plan(profile: Profile, layout: Layout) -> list[PlannedRun]:
    cache: dict[str, str] = {}
    return [_resolve(profile, layout, r, cache) for r in profile.runs]


def format_plan(profile: Profile, layout: Layout, plan: list[PlannedRun], only: list[NotebookSpec]) -> str:
    counts = {s: sum(p.state == s for p in plan) for s in ("done", "partial", "new", "waiting")}
    dup = profile.n_entries - len(profile.runs)
    lines = [
        f"profile {profile.name}: {profile.path} (sha256 {profile.sha256[:12]})",
        f"outputs: {layout.base}  figures: {layout.figures_dir}",
        "notebooks: " + " -> ".join(f"{nb.name}{' (per run)' if nb.per_run else ''}" for nb in only),
        f"runs: {len(plan)} ({counts['done']} done/cached, {counts['partial']} partial (resume), {counts['new']} new, "
        f"{counts['waiting']} waiting for a matched run)" + (f"; {dup} duplicate sweep entries merged" if dup else ""),
    ]
    for p in plan:
        h = p.config_hash or f"after {p.spec.depends_on[:8]}".ljust(16)
        note = f"  [{p.error}]" if p.error else ""
        lines.append(f"  {p.spec.index:4d}  {h:16s}  {p.state:8s}  {p.spec.label()}{note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# executors
# ----------------------------------------------------------------------------------------------
def _run_jobs(jobs: list[RunJob], opts: ExecutorOptions, layout: Layout, name: str,
              on_result: Callable[[RunJob, RunResult], None],
              more: Callable[[], list[RunJob]] = lambda: [], rank: Callable[[RunJob], Any] = lambda job: 0) -> None:
    """Execute ``jobs`` with the chosen executor, calling ``on_result`` (in this process) for each.

    After each result ``more()`` returns the jobs that have become ready (a matched run whose run
    has finished). The sequential and local executors keep one queue, ordered by ``rank`` (the
    profile's order; ties keep their order), and start its head whenever a worker is free, so a
    ready matched run starts before the runs that come after it in the profile; submitit submits
    them as a further job array when the current one is done."""
    if not jobs:
        return
    queue = sorted(jobs, key=rank)
    if opts.kind == "sequential":
        while queue:
            job = queue.pop(0)
            on_result(job, execute_run(job))
            queue = sorted(queue + more(), key=rank)
    elif opts.kind == "local":
        # no plain fork of this process (it holds threads); the fork server imports papermill once
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["anira.pipeline.runs", "papermill"])
        workers, futures = opts.workers or 2, {}
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=exit_with_driver,
                                 initargs=(os.getpid(),)) as pool:
            while queue or futures:
                while queue and len(futures) < workers:  # the pool's own queue would put late jobs last
                    job = queue.pop(0)
                    futures[pool.submit(execute_run, job)] = job
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = futures.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as err:  # a worker that died
                        res = RunResult(job.config_hash, "failed", error=error_text(err))
                    on_result(job, res)
                    queue = sorted(queue + more(), key=rank)
    else:
        import submitit

        cluster = "slurm" if opts.kind == "slurm" else "local"
        time_min = opts.time_min or 240
        requeues = UNBOUNDED_REQUEUES if opts.max_requeues is None else opts.max_requeues
        ex = submitit.AutoExecutor(folder=str(layout.base / "submitit" / "%j"), cluster=cluster,
                                   **{f"{cluster}_max_num_timeout": requeues})
        params: dict[str, Any] = {"name": f"anira-{layout.profile}", "timeout_min": time_min}
        if cluster == "slurm":
            params["slurm_signal_delay_s"] = signal_delay_s(time_min)
        if opts.gpus is not None:
            params["gpus_per_node"] = opts.gpus
        if opts.cpus_per_task is not None:
            params["cpus_per_task"] = opts.cpus_per_task
        if opts.partition is not None:
            params["slurm_partition"] = opts.partition
        if opts.workers is not None:
            params["slurm_array_parallelism"] = opts.workers
        ex.update_parameters(**params)
        watcher = None
        if cluster == "slurm":  # job states for this driver's jobs (submitit's shared watcher is left alone)
            from anira.pipeline.slurm import QuietSlurmWatcher

            watcher = QuietSlurmWatcher()
        batch = queue
        while batch:
            _run_array(ex, batch, cluster, layout, name, on_result,
                       ack_timeout_s=max(5.0, (params.get("slurm_signal_delay_s") or 30) - 5.0), watcher=watcher)
            batch = more()


UNBOUNDED_REQUEUES = 1000  # submitit's time-out budget when --max-requeues is not given


def signal_delay_s(time_min: int) -> int:
    """Seconds before a job's time limit at which Slurm warns it (``--signal=USR2@...``).

    submitit's 90 s leaves nothing of a short job: Slurm sends the warning up to a minute earlier
    than asked (it checks time limits every 30 s or so), and submitit requeues the job as soon as the
    warning comes. Saving a checkpoint takes a step and a write, so a tenth of the limit (10 to 90 s)
    is enough."""
    return min(90, max(10, time_min * 60 // 10))


def _run_array(ex: Any, jobs: list[RunJob], cluster: str, layout: Layout, name: str,
               on_result: Callable[[RunJob, RunResult], None], ack_timeout_s: float, watcher: Any = None) -> None:
    """One submitit job array: submit ``jobs``, wait for each, report its result. A signalled job
    waits up to ``ack_timeout_s`` (less than the signal's lead on the time limit; submitit-local's is
    30 s) for its trainer's checkpoint."""
    import submitit

    sjobs = ex.map_array(RequeueableRun(ack_timeout_s=ack_timeout_s), jobs)
    by_id = {sj.job_id: job for sj, job in zip(sjobs, jobs)}
    tqdm.write(f"{name}: submitted {len(sjobs)} {cluster} job(s) ({sjobs[0].job_id} ...), logs in {layout.base / 'submitit'}")
    poll = 0.5 if cluster == "local" else 15.0
    if watcher is not None:
        for sj in sjobs:
            sj.watcher = watcher
            watcher.register_job(sj.job_id)
    for sj in submitit.helpers.as_completed(sjobs, poll_frequency=poll):
        job = by_id[sj.job_id]
        try:
            res = sj.result()
        except Exception as err:  # the job itself failed (killed, out of memory, ...)
            res = RunResult(job.config_hash, "failed", error=f"{error_text(err)} (job {sj.job_id}, logs {sj.paths.stderr})")
        on_result(job, res)


# ----------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------
def select_notebooks(profile: Profile, only: Iterable[str] | None) -> list[NotebookSpec]:
    """Notebooks named by ``only`` (full names or their number, e.g. "03" or "3"), in profile order."""
    if not only:
        return list(profile.notebooks)
    names = [nb.name for nb in profile.notebooks]
    chosen: set[str] = set()
    for token in only:
        token = token.strip()
        hits = [n for n in names if n == token or n.split("_", 1)[0] == token
                or (token.isdigit() and n.split("_", 1)[0].isdigit() and int(n.split("_", 1)[0]) == int(token))]
        if len(hits) != 1:
            raise ValueError(f"only_notebooks: {token!r} matches {len(hits)} notebooks of profile "
                             f"{profile.name!r}; allowed: {names} or their numbers (03 or 3)")
        chosen.add(hits[0])
    return [nb for nb in profile.notebooks if nb.name in chosen]


def _nb_path(nb: NotebookSpec, path: Path) -> str:
    """A path parameter as the notebook reads it: relative to its folder (its cwd) inside the repository."""
    return portable(path, nb.path.parent)


def _common_params(nb: NotebookSpec, profile: Profile, layout: Layout) -> dict[str, Any]:
    offered = {"profile": profile.name, "figures_dir": _nb_path(nb, layout.figures_dir),
               "runs_dir": _nb_path(nb, layout.runs_dir)}
    return {k: v for k, v in offered.items() if not nb.declared or k in nb.declared}


def _job(nb: NotebookSpec, profile: Profile, layout: Layout, p: PlannedRun) -> RunJob:
    h = p.config_hash
    assert h is not None
    params = {**_common_params(nb, profile, layout), **nb.params}
    offered = {"run_config": config_dict(p.config), "run_dir": _nb_path(nb, layout.run_dir(h)), "config_hash": h}
    params.update({k: v for k, v in offered.items() if not nb.declared or k in nb.declared})
    return RunJob(config_hash=h, label=p.spec.label(), notebook=nb.path, executed=layout.executed(nb.name, h),
                  run_dir=layout.run_dir(h), params=params, timeout_s=nb.timeout_s)


class _Manifest:
    """runs/<profile>/manifest.json, rewritten atomically on every change (and copied to figures/).

    Its top-level ``argv``, ``git``, ``started_utc`` ... describe the latest invocation; ``sessions``
    keeps every invocation on the same profile file, oldest first, with the notebooks it executed and
    the runs it trained, so rerunning one analysis never erases the record of the session that
    trained the study. A redraw from another results root (``layout.results_root``) writes its
    manifest under its own runs root only: the figures' copy stays the record of the study."""

    def __init__(self, profile: Profile, layout: Layout, opts: ExecutorOptions, selected: list[NotebookSpec]):
        self.layout = layout
        self.per_run = profile.per_run_notebook
        try:  # notebooks not selected this time keep their rows from the last manifest of the same profile file
            prev = json.loads(layout.manifest.read_text())
            if prev.get("profile_sha256") != profile.sha256:
                prev = {}
        except (FileNotFoundError, json.JSONDecodeError):
            prev = {}
        try:
            prev_rows = {r["name"]: r for r in prev.get("notebooks", [])}
        except (KeyError, TypeError):
            prev_rows = {}
        sessions = list(prev.get("sessions") or ([_legacy_session(prev)] if prev.get("started_utc") else []))
        chosen = {nb.name for nb in selected}
        rows = [{"name": nb.name, "per_run": nb.per_run, "status": "pending", "wall_time_s": None, "executed": None}
                if nb.name in chosen else prev_rows.get(nb.name, {"name": nb.name, "per_run": nb.per_run,
                                                                  "status": "not run", "wall_time_s": None,
                                                                  "executed": None})
                for nb in profile.notebooks]
        path = profile.path
        self.session: dict[str, Any] = {
            "argv": portable_argv(sys.argv), "git": git_state(), "versions": versions(), "executor": opts.kind,
            "started_utc": _now(), "finished_utc": None, "status": "running",
            "results_root": portable(layout.results_root) if layout.results_root is not None else None,
            "notebooks": [], "runs_trained": [],
        }
        self.data: dict[str, Any] = {
            "profile": profile.name, "profile_file": portable(path),
            "profile_sha256": profile.sha256,
            "description": profile.description, "git": self.session["git"], "versions": self.session["versions"],
            "executor": opts.kind, "argv": self.session["argv"], "started_utc": self.session["started_utc"],
            "finished_utc": None, "status": "running",
            "run_class": f"{profile.run_cls.__module__}:{profile.run_cls.__qualname__}",
            "notebooks": rows,
            "runs": [],
            "sessions": sessions + [self.session],
        }

    def set_runs(self, plan: list[PlannedRun]) -> None:
        old = {r["index"]: r for r in self.data["runs"]}
        rows = []
        for p in plan:
            cfg = p.config
            row = old.get(p.spec.index, {})
            if p.state == "done" and row.get("wall_time_s") is None:  # finished in an earlier session
                row = {**row, "wall_time_s": (read_summary(self.layout.run_dir(p.config_hash)) or {}).get("wall_time_s")}
            if p.config_hash and self.per_run and not row.get("executed"):
                nb = self.layout.executed(self.per_run.name, p.config_hash)
                row = {**row, "executed": str(nb.relative_to(self.layout.base)) if nb.exists() else None}
            if p.state == "done" and row.get("notebook_wall_s") is None and row.get("executed"):
                row = {**row, "notebook_wall_s": notebook_duration(self.layout.base / row["executed"])}
            rows.append({
                "index": p.spec.index, "config_hash": p.config_hash, "values": p.spec.values,
                "task": getattr(cfg, "task", None), "mechanism": getattr(cfg, "mechanism", None),
                "seed": getattr(cfg, "seed", None), "depends_on": p.spec.depends_on,
                # disk state, except that a run which failed in this session says so until it finishes
                "status": "failed" if (row.get("status") == "failed" and row.get("config_hash") == p.config_hash
                                       and p.state != "done") else p.state,
                "wall_time_s": row.get("wall_time_s"), "notebook_wall_s": row.get("notebook_wall_s"),
                "run_dir": self._rel(self.layout.run_dir(p.config_hash)) if p.config_hash else None,
                "executed": row.get("executed"), "error": row.get("error") or p.error,
            })
        self.data["runs"] = rows
        self.write()

    def _rel(self, path: Path) -> str:  # relative to runs/<profile>/, or to the repository (a results root)
        return str(path.relative_to(self.layout.base)) if path.is_relative_to(self.layout.base) else portable(path)

    def run_result(self, job: RunJob, res: RunResult) -> None:
        if res.status == "done":
            self.session["runs_trained"].append(job.config_hash)
        for row in self.data["runs"]:
            if row["config_hash"] == job.config_hash:
                summary = read_summary(job.run_dir) or {}
                row.update(status="done" if res.status in ("done", "cached") else res.status,
                           notebook_wall_s=res.wall_time_s if res.status != "cached" else row.get("notebook_wall_s"),
                           wall_time_s=summary.get("wall_time_s", res.wall_time_s), error=res.error,
                           executed=str(Path(job.executed).relative_to(self.layout.base)))
        self.write()

    def notebook(self, name: str, **kw: Any) -> None:
        for row in self.data["notebooks"]:
            if row["name"] == name:
                row.update(kw)
        if kw.get("status") in ("done", "failed"):
            self.session["notebooks"].append({"name": name, "status": kw["status"], "wall_time_s": kw.get("wall_time_s")})
        self.write()

    def finish(self, status: str) -> None:
        self.data["status"] = self.session["status"] = status
        self.data["finished_utc"] = self.session["finished_utc"] = _now()
        self.write()

    def write(self) -> None:
        text = json.dumps(self.data, indent=1, default=str) + "\n"
        atomic_write_text(self.layout.manifest, text)
        if self.layout.results_root is None:
            atomic_write_text(self.layout.figures_dir / "manifest.json", text)


def _legacy_session(m: dict[str, Any]) -> dict[str, Any]:
    """The one session an older manifest (without ``sessions``) describes in its top-level fields."""
    return {"argv": portable_argv(m.get("argv") or []), "git": m.get("git"), "versions": m.get("versions"),
            "executor": m.get("executor"), "started_utc": m.get("started_utc"), "finished_utc": m.get("finished_utc"),
            "status": m.get("status"), "results_root": None, "notebooks": None, "runs_trained": None}


def run_study(
    profile: Profile | str | Path,
    *,
    executor: ExecutorOptions | None = None,
    only_notebooks: Iterable[str] | None = None,
    dry_run: bool = False,
    runs_root: Path | None = None,
    figures_root: Path | None = None,
    results_root: Path | None = None,
    reuse_from: Path | None = None,
    out: Any = None,
) -> dict[str, Any]:
    """Run ``profile`` (a loaded Profile, or a name/path for ``load_profile`` with the real trainer; see
    the module docstring); returns the manifest (the plan, for ``dry_run``).

    ``results_root``: redraw from the finished runs under ``results_root/<profile>/runs`` (e.g. the
    committed ``data/results``); nothing there is written, so every run must be finished there.
    ``reuse_from``: before planning, copy the finished runs (with weights) of
    ``reuse_from/<profile>/runs`` that the run cache lacks (``reuse_finished``), so that a study
    committed part by part is completed, not retrained (not with ``dry_run``, which writes nothing).

    Raises ValueError for bad input before anything runs, StudyError when runs or notebooks failed.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    opts = executor or ExecutorOptions()
    out = out or sys.stdout
    layout = Layout(profile.name, **{k: Path(v) for k, v in (("runs_root", runs_root), ("figures_root", figures_root),
                                                            ("results_root", results_root)) if v is not None})
    if layout.results_root is not None and layout.runs_dir.resolve() == (layout.base / "runs").resolve():
        raise ValueError(f"results_root = {str(results_root)!r} is the runs root itself; give another --runs-root")
    selected = select_notebooks(profile, only_notebooks)
    per_run = profile.per_run_notebook
    if reuse_from is not None and layout.results_root is None and not dry_run:
        reused = reuse_finished(layout, Path(reuse_from) / profile.name / "runs")
        if reused:
            print(f"reused {len(reused)} finished runs from {portable(Path(reuse_from) / profile.name / 'runs')} "
                  f"(their weights, records and logs; --no-reuse trains them here instead)", file=out)
    plan = make_plan(profile, layout)
    if layout.results_root is not None:
        missing = [p.spec.label() for p in plan if p.state != "done"]
        if missing:
            raise ValueError(f"results_root: {len(missing)} of {len(plan)} runs are not finished under {layout.runs_dir} "
                             f"(a redraw trains nothing), e.g. {missing[0]}")
    pos = {nb.name: i for i, nb in enumerate(profile.notebooks)}
    after_sweep = [nb for nb in selected if per_run is not None and pos[nb.name] > pos[per_run.name]]
    if after_sweep and per_run not in selected:
        missing = [p for p in plan if p.state != "done"]
        if missing:
            raise ValueError(f"only_notebooks: {[nb.name for nb in after_sweep]} need every run finished; "
                             f"{len(missing)} of {len(plan)} are not (include {per_run.name!r} to run them)")
    if dry_run:
        print(format_plan(profile, layout, plan, selected), file=out)
        if per_run is None or per_run in selected:
            from anira.pipeline.estimate import estimate_plan, format_estimate

            workers = 1 if opts.kind == "sequential" else (opts.workers or 2)
            print(format_estimate(estimate_plan(profile, plan, workers)), file=out)
        return {"profile": profile.name, "runs": [{"index": p.spec.index, "config_hash": p.config_hash,
                                                   "state": p.state, "values": p.spec.values} for p in plan]}
    check_kernel()
    if opts.kind == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("executor = 'slurm' needs Slurm's sbatch on PATH (run the driver on a login node); "
                         "allowed here: ['sequential', 'local', 'submitit-local']")
    manifest = _Manifest(profile, layout, opts, selected)
    manifest.set_runs(plan)
    status = "complete"
    try:
        for nb in selected:
            if nb.per_run:
                t0 = time.perf_counter()
                manifest.notebook(nb.name, status="running", executed=str(layout.executed_dir.relative_to(layout.base) / nb.name))
                plan = _run_sweep(profile, layout, nb, opts, manifest, out)
                failed = [p for p in plan if p.state != "done"]
                manifest.notebook(nb.name, status="failed" if failed else "done",
                                  wall_time_s=round(time.perf_counter() - t0, 3))
                if failed:
                    rows = {r["index"]: r for r in manifest.data["runs"]}
                    detail = "\n".join(f"  {p.spec.index} {p.config_hash or '-'} {p.spec.label()}: "
                                       f"{rows[p.spec.index].get('error') or p.state}" for p in failed)
                    status = "failed"
                    raise StudyError(f"{len(failed)} of {len(plan)} runs did not finish; the notebooks after "
                                     f"{nb.name} were not run. Rerun the same command to resume them.\n{detail}")
                continue
            params = {**_common_params(nb, profile, layout), **nb.params}
            if (not nb.declared or "run_dirs" in nb.declared) and per_run is not None and pos[nb.name] > pos[per_run.name]:
                params["run_dirs"] = [_nb_path(nb, layout.run_dir(p.config_hash)) for p in make_plan(profile, layout)]
            target = layout.executed(nb.name)
            tqdm.write(f"{nb.name}: executing -> {portable(target)}", file=out)
            manifest.notebook(nb.name, status="running", executed=str(target.relative_to(layout.base)))
            try:
                wall = execute_notebook(nb.path, target, params, nb.path.parent, nb.timeout_s)
            except Exception as err:
                manifest.notebook(nb.name, status="failed", error=error_text(err))
                status = "failed"
                raise StudyError(f"notebook {nb.name} failed: {error_text(err)} (see {target})") from None
            manifest.notebook(nb.name, status="done", wall_time_s=round(wall, 3))
            tqdm.write(f"{nb.name}: done in {wall:.1f} s", file=out)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except StudyError:
        raise
    except BaseException:
        status = "error"
        raise
    finally:
        manifest.finish(status)
    return manifest.data


def _run_sweep(profile: Profile, layout: Layout, nb: NotebookSpec, opts: ExecutorOptions, manifest: _Manifest,
               out: Any) -> list[PlannedRun]:
    """All unfinished runs of the sweep, in the profile's order (sweep block, then position); a run
    configured from another run's result (``from_run``) joins the queue, at its block's place, as
    soon as the run it matches has finished."""
    plan = make_plan(profile, layout)
    manifest.set_runs(plan)
    todo = [p for p in plan if p.state in ("new", "partial")]
    n_waiting = sum(p.state == "waiting" for p in plan)
    cached = sum(p.state == "done" for p in plan)
    tqdm.write(f"{nb.name}: {len(plan)} runs, {cached} already finished, {len(todo) + n_waiting} to run"
               + (f" ({n_waiting} once the run they match has finished)" if n_waiting else "")
               + f" ({opts.kind} executor)", file=out)
    if not todo:
        return plan
    rank = {p.config_hash: (p.spec.block, p.spec.index) for p in todo}  # queued or run -> place in the profile
    bar = tqdm(total=len(todo) + n_waiting, desc=nb.name, unit="run", dynamic_ncols=True)

    def done(job: RunJob, res: RunResult) -> None:
        manifest.run_result(job, res)
        msg = f"{res.status} in {res.wall_time_s:.1f} s" if res.wall_time_s is not None else res.status
        tqdm.write(f"  {job.config_hash} {job.label}: {msg}" + (f" -- {res.error}" if res.error else ""), file=out)
        bar.update(1)

    def ready() -> list[RunJob]:  # matched runs whose run has just finished (each run is queued once)
        now = make_plan(profile, layout)
        manifest.set_runs(now)
        new = [p for p in now if p.state in ("new", "partial") and p.config_hash not in rank]
        rank.update({p.config_hash: (p.spec.block, p.spec.index) for p in new})
        return [_job(nb, profile, layout, p) for p in new]

    try:
        _run_jobs([_job(nb, profile, layout, p) for p in todo], opts, layout, nb.name, done, more=ready,
                  rank=lambda job: rank[job.config_hash])
    finally:
        bar.close()
    plan = make_plan(profile, layout)
    manifest.set_runs(plan)
    return plan
