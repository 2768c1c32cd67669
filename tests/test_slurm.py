"""The Slurm executor against a real Slurm: the smoke study, a time-out and a requeue.

``scripts/slurm_local.sh up`` brings up a single-node Slurm (root; it installs slurm-wlm and munge
with apt when missing) and the session tears it down again; where that is impossible the tests
are skipped and say why. Select them with ``-m slurm``.

Slurm holds a requeued job for two minutes (its BeginTime) before it may start again; the tests
lift that hold as soon as they see it (``release_requeued``), as a cluster's scheduler would
restart the job whenever its policy allows: the tests time the driver, not that policy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PARTITION = "cpu"

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")  # session: set up before the session's smoke study, which is skipped with it
def slurm():
    """A running Slurm with partition ``cpu``: one this script brought up earlier, or a new one
    (stopped again at the end of the session)."""
    if subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0:
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no local Slurm up, and bringing one up (scripts/slurm_local.sh up) needs root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    t0 = time.perf_counter()
    up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.skip(f"could not bring up a local Slurm: {up.stderr.strip()[-800:]}")
    print(f"\nslurm up in {time.perf_counter() - t0:.1f} s: {up.stderr.strip()}", file=sys.stderr)
    try:
        yield
    finally:
        subprocess.run([str(SCRIPT), "down"], capture_output=True)


@contextmanager
def release_requeued(name: str):
    """Start requeued jobs named ``name`` as soon as they are pending on their BeginTime."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0):
            out = subprocess.run(["squeue", "-h", "-t", "PD", "--name", name, "-o", "%i %r"],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                job_id, _, reason = line.partition(" ")
                if reason.strip() == "BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def study_cmd(profile: str | Path, root: Path, executor: str = "slurm", *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "anira.study", "--profile", str(profile), "--executor", executor,
           "--runs-root", str(root / "runs"), "--figures-root", str(root / "figures")]
    if executor == "slurm":
        cmd += ["--partition", PARTITION, "--cpus-per-task", "1"]
    return cmd + list(extra)


def run_study(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "MPLBACKEND": "agg"}, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, wall


def records(runs: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(runs.glob("*/records.csv.gz"))}


def log_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]


# ------------------------------------------------------------------------------------------------
def test_smoke_study_under_slurm_gives_the_local_records(slurm, smoke_manifest, tmp_path):
    """The smoke sweep's 12 runs as Slurm jobs (an array of 11, then the matched random run once
    its online run has finished); every run's per-token records byte for byte those of the same
    study run on this machine (the session's smoke study, tests/conftest.py). Only the sweep: the
    notebooks before and after it run in the driver's process whatever the executor (the local
    study executes them), and would double this test's time."""
    with release_requeued("anira-smoke"):
        proc, wall = run_study(study_cmd("smoke", tmp_path, "slurm", "--time", "20", "--only-notebooks", "02"),
                               timeout=1800)
    print(f"\nsmoke sweep under slurm: {wall:.0f} s", file=sys.stderr)
    assert "Bypassing sacct error" not in proc.stderr  # submitit's warning at every poll
    assert proc.stderr.count("sacct does not answer") <= 1
    manifest = json.loads((tmp_path / "runs" / "smoke" / "manifest.json").read_text())
    assert manifest["executor"] == "slurm" and manifest["status"] == "complete"
    assert len(manifest["runs"]) == 12 and all(r["status"] == "done" for r in manifest["runs"])
    assert proc.stdout.count("submitted 11 slurm job(s)") == 1 and proc.stdout.count("submitted 1 slurm job(s)") == 1
    local = records(ROOT / "runs" / "smoke" / "runs")
    assert {r["config_hash"] for r in smoke_manifest["runs"]} == set(local)
    assert records(tmp_path / "runs" / "smoke" / "runs") == local


# ------------------------------------------------------------------------------------------------
# one run longer than a job's time limit; only a checkpoint taken on a signal can carry it over
# (ckpt_every is beyond its steps)
LONG_STEPS = 1800  # 50-90 s of training on one core: more than one job attempt of --time 1 allows


def long_profile(d: Path) -> Path:
    smoke = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    body = {"profile": "long", "description": "one run longer than its job's time limit", "timeout_s": 900,
            "defaults": {**smoke["defaults"], "steps": LONG_STEPS, "ckpt_every": 10 * LONG_STEPS, "log_every": 7,
                         "eval_every": 500},
            "sweep": [{"task": ["hops"], "mechanism": ["online"], "seed": [0], "beta": [0.01]}],
            "notebooks": [{"name": "02_train", "per_run": True}]}
    path = d / "long.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


class Background:
    """A study started in the background; ``result()`` waits for it and returns its run folder."""

    def __init__(self, cmd: list[str], runs: Path):
        self.runs = runs
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "MPLBACKEND": "agg"}, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.run_dir: Path | None = None

    def result(self) -> Path:
        if self.run_dir is None:
            out, err = self.proc.communicate(timeout=900)
            assert self.proc.returncode == 0, f"driver failed:\n{out[-3000:]}\n{err[-3000:]}"
            (self.run_dir,) = self.runs.iterdir()
            wall = json.loads((self.run_dir / "summary.json").read_text())["wall_time_s"]
            print(f"\nlong run, uninterrupted: {wall:.0f} s in the trainer", file=sys.stderr)
        return self.run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The long run trained in one go (in-process executor), alongside the Slurm job of the first
    test that needs it (the node has two CPUs; each uses one)."""
    d = tmp_path_factory.mktemp("uninterrupted")
    bg = Background(study_cmd(long_profile(d), d, "sequential"), d / "runs" / "long" / "runs")
    yield bg
    if bg.proc.poll() is None:
        bg.proc.kill()
        bg.proc.wait()


def same_run(run_dir: Path, uninterrupted: Background) -> None:
    reference = uninterrupted.result()
    assert run_dir.name == reference.name
    assert (run_dir / "records.csv.gz").read_bytes() == (reference / "records.csv.gz").read_bytes()
    assert log_rows(run_dir) == log_rows(reference)


def test_a_run_longer_than_its_time_limit_finishes_over_requeues(slurm, uninterrupted, tmp_path):
    """``--time 1``: Slurm warns each attempt well before its minute is up, the trainer saves its
    step, submitit requeues the job, the next attempt resumes there. The records are those of the
    uninterrupted run."""
    profile = long_profile(tmp_path)
    with release_requeued("anira-long"):
        proc, wall = run_study(study_cmd(profile, tmp_path, "slurm", "--time", "1"), timeout=900)
    (run_dir,) = (tmp_path / "runs" / "long" / "runs").iterdir()
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "long" / "submitit").rglob("*_log.*"))
    requeued, signalled = logs.count("Requeued job"), logs.count("signalled;")
    saved = logs.count("signalled; checkpoint saved")  # the others came after training, in the final evaluation
    print(f"\nlong run with --time 1: {wall:.0f} s, {requeued} requeues, {saved} on a checkpoint saved then",
          file=sys.stderr)
    assert requeued >= 1 and signalled == requeued and saved >= 1
    same_run(run_dir, uninterrupted)


def test_a_run_requeued_mid_training_resumes_from_the_step_it_was_at(slurm, uninterrupted, tmp_path):
    """``scontrol requeue`` (what preemption does): Slurm sends SIGTERM, the trainer saves the step
    it is at before the kill, the job goes back to the queue and the next attempt resumes there."""
    import torch

    profile = long_profile(tmp_path)
    runs = tmp_path / "runs" / "long" / "runs"
    env = {**os.environ, "MPLBACKEND": "agg"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(study_cmd(profile, tmp_path, "slurm", "--time", "20"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        log = None
        while not (log and log.exists() and len(log.read_text().splitlines()) >= 20):
            assert proc.poll() is None and time.time() < deadline, "the run never started training"
            time.sleep(0.5)
            log = next(runs.glob("*/log.jsonl"), None) if runs.exists() else None
        job_id = subprocess.run(["squeue", "-h", "--name", "anira-long", "-o", "%i"], capture_output=True,
                                text=True, check=True).stdout.split()[0]
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        while subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True).stdout.strip() != "PENDING":
            assert time.time() < deadline, "the job was not requeued"
            time.sleep(0.2)
        step = torch.load(log.parent / "checkpoint.pt", weights_only=False)["step"]
        assert 0 < step < LONG_STEPS  # saved on SIGTERM: ckpt_every is beyond the run's steps
        with release_requeued("anira-long"):
            out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"driver failed:\n{out[-3000:]}\n{err[-3000:]}"
    print(f"\nlong run requeued at step {step}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    same_run(log.parent, uninterrupted)
