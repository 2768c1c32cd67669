"""Run cache, locks and the execution of one notebook (papermill) or one run of the sweep.

Layout of a profile ``P``::

    runs/P/runs/<config_hash>/             the trainer's out_dir; summary.json (with the hash) = finished
    runs/P/runs/<config_hash>/.lock        advisory lock (fcntl.flock) held while a process runs it
    runs/P/executed/<notebook>.ipynb       executed copy of a once-notebook
    runs/P/executed/<notebook>/<hash>.ipynb  executed copy of the per-run notebook, one per run
    runs/P/manifest.json
    figures/P/                             what the notebooks write (their figures_dir)

A redraw reads finished runs from another root (``results_root``, e.g. the committed
``data/results``: ``results_root/P/runs/<config_hash>/``) and writes its executed notebooks and
manifest under ``runs_root`` as usual, so the results it reads are never rewritten.

Cache rule: a run is *done* when ``summary.json`` exists and its ``config_hash`` equals the directory's
hash; *partial* when the directory holds anything else (a checkpoint: the trainer resumes from it);
*new* otherwise. Any change of a hashed parameter gives a new hash, hence a new directory.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNS_ROOT = REPO / "runs"
FIGURES_ROOT = REPO / "figures"


@dataclass(frozen=True)
class Layout:
    """Where one profile's runs, executed notebooks, manifest and figures live (absolute paths)."""

    profile: str
    runs_root: Path = RUNS_ROOT  # runs/ (git-ignored): executed notebooks, manifest, and the runs themselves
    figures_root: Path = FIGURES_ROOT  # figures/
    results_root: Path | None = None  # read the finished runs from results_root/<profile>/runs instead (a redraw)

    @property
    def base(self) -> Path:
        return Path(self.runs_root).resolve() / self.profile

    @property
    def runs_dir(self) -> Path:
        if self.results_root is not None:
            return Path(self.results_root).resolve() / self.profile / "runs"
        return self.base / "runs"

    @property
    def executed_dir(self) -> Path:
        return self.base / "executed"

    @property
    def manifest(self) -> Path:
        return self.base / "manifest.json"

    @property
    def figures_dir(self) -> Path:
        return Path(self.figures_root).resolve() / self.profile

    def run_dir(self, config_hash: str) -> Path:
        return self.runs_dir / config_hash

    def executed(self, notebook: str, config_hash: str | None = None) -> Path:
        d = self.executed_dir
        return d / notebook / f"{config_hash}.ipynb" if config_hash else d / f"{notebook}.ipynb"


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def notebook_duration(path: Path) -> float | None:
    """Seconds papermill recorded for an executed notebook (None: no such notebook or no record)."""
    try:
        return float(json.loads(Path(path).read_text())["metadata"]["papermill"]["duration"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def run_state(run_dir: Path, config_hash: str) -> str:
    """'done', 'partial' or 'new' (see module docstring); a summary of another hash is an error."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is not None:
        if summary.get("config_hash") != config_hash:
            raise ValueError(f"{run_dir}/summary.json has config_hash {summary.get('config_hash')!r}, not {config_hash!r}; "
                             f"remove that directory")
        return "done"
    if run_dir.is_dir() and any(p.name != ".lock" for p in run_dir.iterdir()):
        return "partial"
    return "new"


def exit_with_driver(driver_pid: int, poll_s: float = 1.0) -> None:
    """Initializer of a local worker process: a daemon thread ends the worker when the driver is
    gone (killed by SIGTERM or SIGKILL, which no handler of the driver could catch), so no orphaned
    worker keeps executing an old plan. The worker's kernel notices its parent is gone and exits
    too (ipykernel's parent poller), and the run resumes from its checkpoint on the next invocation."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            try:
                os.kill(driver_pid, 0)  # signal 0: existence check only
            except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another user
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLock:
    """Exclusive advisory lock on ``path`` (``fcntl.flock``), released when the holder exits or dies.

    Blocks while another process holds it, so two workers never run the same hash: the second one
    waits, then finds the summary and returns it as cached.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.waited = False

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.waited = True
            holder = self.path.read_text().strip() or "another process"
            print(f"waiting for {self.path.parent.name}: it is being run by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def execute_notebook(nb_path: Path, out_path: Path, params: dict[str, Any], cwd: Path, timeout_s: int) -> float:
    """Execute ``nb_path`` with papermill into ``out_path``; returns the wall time in seconds.

    Kernel ``python3`` (jupyter_client runs it with this interpreter), ``cwd`` = the notebook's
    folder, headless matplotlib. Raises papermill's ``PapermillExecutionError`` when a cell fails.
    """
    import papermill

    os.environ.setdefault("MPLBACKEND", "agg")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    papermill.execute_notebook(
        str(Path(nb_path).resolve()), str(out_path.resolve()), parameters=params, kernel_name="python3",
        execution_timeout=timeout_s, cwd=str(Path(cwd).resolve()), progress_bar=False, log_output=False,
        extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # the kernel's own log noise; cell errors still raise
    )
    return time.perf_counter() - t0


def error_text(err: BaseException) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    msg = f"{ename}: {evalue}" if ename else f"{type(err).__name__}: {err}"
    return msg.strip().splitlines()[0][:500] if msg.strip() else type(err).__name__


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to execute one run (plain data: pickled to processes and Slurm jobs)."""

    config_hash: str
    label: str  # the sweep values, for messages
    notebook: Path  # the per-run notebook
    executed: Path  # where its executed copy goes
    run_dir: Path
    params: dict[str, Any]  # papermill parameters (run_config, run_dir, ...)
    timeout_s: int


@dataclass
class RunResult:
    config_hash: str
    status: str  # "done" (executed now), "cached" (found finished), "failed"
    wall_time_s: float | None = None  # notebook execution time, this attempt
    error: str | None = None
    host: str = ""


def execute_run(job: RunJob) -> RunResult:
    """Run one sweep entry under its lock: skip if finished, else execute the per-run notebook
    (the trainer resumes from its checkpoint) and check it left a summary with the same hash."""
    host = socket.gethostname()
    run_dir = Path(job.run_dir)
    with RunLock(run_dir / ".lock"):
        if run_state(run_dir, job.config_hash) == "done":
            return RunResult(job.config_hash, "cached", host=host)
        t0 = time.perf_counter()
        try:
            execute_notebook(job.notebook, job.executed, job.params, Path(job.notebook).parent, job.timeout_s)
        except Exception as err:  # a failed cell, a timeout, a dead kernel: report, let the sweep go on
            return RunResult(job.config_hash, "failed", time.perf_counter() - t0,
                             f"{error_text(err)} (see {job.executed})", host)
        wall = time.perf_counter() - t0
        summary = read_summary(run_dir)
        if summary is None:
            return RunResult(job.config_hash, "failed", wall,
                             f"the notebook finished but wrote no {run_dir}/summary.json (see {job.executed})", host)
        if summary.get("config_hash") != job.config_hash:
            return RunResult(job.config_hash, "failed", wall,
                             f"summary.json has config_hash {summary.get('config_hash')!r}, the driver expected "
                             f"{job.config_hash!r}: the notebook did not train the config it was given", host)
        return RunResult(job.config_hash, "done", wall, host=host)


# the trainer's side of a checkpoint request (anira.train.CheckpointRequests); plain names here, so
# that the driver and the job process need not import torch
CHECKPOINT_REQUEST = ".checkpoint_request"
TRAINING_MARK = ".training"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_checkpoint(run_dir: Path, timeout_s: float = 60.0) -> str:
    """Ask the training loop running ``run_dir`` (in this host's notebook kernel) to save a checkpoint
    after its current step, and wait until it has; returns what happened, for the job's log.

    The loop announces itself in ``run_dir/.training`` ("<host> <pid>"); without a live one on this
    host there is nothing newer than the last checkpoint to save and this returns at once."""
    run_dir = Path(run_dir)
    mark, request = run_dir / TRAINING_MARK, run_dir / CHECKPOINT_REQUEST
    try:
        host, pid = mark.read_text().split()
    except (FileNotFoundError, ValueError):
        return "no training loop running: nothing to save"
    if host != socket.gethostname() or not _alive(int(pid)):
        return f"the training loop of {mark} ({host} {pid}) is not running here: nothing to save"
    t0 = time.monotonic()
    atomic_write_text(request, f"pid {os.getpid()} on {socket.gethostname()}\n")
    while request.exists() and mark.exists() and time.monotonic() - t0 < timeout_s:
        time.sleep(0.05)
    if request.exists() and mark.exists():
        return f"the training loop did not save a checkpoint within {timeout_s:.0f} s"
    return f"checkpoint saved in {time.monotonic() - t0:.1f} s"


class NoProgressError(RuntimeError):
    """A job attempt was stopped before its run saved anything: requeueing it again would not help."""


try:  # Slurm jobs: on preemption or time-out submitit calls ``checkpoint`` and requeues the job
    from submitit.helpers import Checkpointable as _Checkpointable
    from submitit.helpers import DelayedSubmission as _DelayedSubmission
except ImportError:  # pragma: no cover - submitit is a declared dependency
    _Checkpointable = object  # type: ignore[misc,assignment]
    _DelayedSubmission = None  # type: ignore[assignment,misc]


class RequeueableRun(_Checkpointable):  # type: ignore[misc,valid-type]
    """``execute_run`` as a submitit callable that keeps its progress when the job is stopped.

    When Slurm warns the job (``--signal``: time-out or preemption), submitit's handler in this
    process calls ``checkpoint``: the running trainer saves its current step at once (it also got the
    signal; ``request_checkpoint`` makes sure, and waits for it), then submitit requeues the job and
    the next attempt resumes from that step. An attempt that saved no checkpoint at all (its time
    limit is too short for the start-up, or for the final evaluation) is not requeued: the run fails
    with a ``NoProgressError`` that says so, rather than being requeued until the requeue limit.
    """

    def __init__(self, ack_timeout_s: float = 60.0) -> None:
        self.ack_timeout_s = ack_timeout_s  # how long ``checkpoint`` waits for the trainer
        self._started: float | None = None  # wall clock at the start of this attempt

    def __call__(self, job: RunJob) -> RunResult:
        self._started = time.time()
        return execute_run(job)

    def checkpoint(self, job: RunJob) -> Any:
        run_dir = Path(job.run_dir)
        what = request_checkpoint(run_dir, self.ack_timeout_s)
        print(f"{job.config_hash}: signalled; {what}", file=sys.stderr, flush=True)
        ckpt = [p for p in run_dir.glob("checkpoint.*") if not p.name.endswith(".tmp")]
        progressed = self._started is None or any(p.stat().st_mtime >= self._started for p in ckpt)
        if not progressed and read_summary(run_dir) is None:
            raise NoProgressError(
                f"this job attempt ({time.time() - self._started:.0f} s) saved no checkpoint of run "
                f"{job.config_hash} before it was stopped, so a requeue would not progress either; "
                f"give the jobs more time (--time)")
        return _DelayedSubmission(type(self)(self.ack_timeout_s), job)
