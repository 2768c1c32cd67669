"""Job states of the driver's Slurm jobs: from ``sacct``, or from ``squeue`` where accounting is off.

submitit asks ``sacct`` at every status poll. On a cluster without accounting storage (a small
one, or the single-node one of ``scripts/slurm_local.sh``) every call fails, submitit logs a
warning each time (dozens of lines per study), and never learns that a job left the queue without
a result (killed, cancelled): it would wait for that job forever. ``QuietSlurmWatcher`` says once
that it falls back to ``squeue``, and reports a job that ``squeue`` no longer lists as
``NOT_IN_QUEUE`` (finished: submitit then reads its result, or says it left none).
"""
from __future__ import annotations

import getpass
import subprocess
import sys
import time

from submitit.slurm.slurm import SlurmInfoWatcher
from tqdm.auto import tqdm

GONE = "NOT_IN_QUEUE"  # not a Slurm state: squeue no longer lists the job (and sacct is off)


class QuietSlurmWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.use_squeue = False

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        if not self.use_squeue:
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode == 0:
                self._info_dict.update(self.read_info(proc.stdout))
            else:
                why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                tqdm.write(f"sacct does not answer ({why}); job states come from squeue", file=sys.stderr)
                self.use_squeue = True
        if self.use_squeue:
            self._update_from_squeue()
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _update_from_squeue(self) -> None:
        # every job of this user, one line per array task; a job id that is gone would be an error
        proc = subprocess.run(["squeue", "--noheader", "--array", "--user", getpass.getuser(),
                               "--format", "%i|%T|%N"], capture_output=True, text=True)
        if proc.returncode != 0:  # the controller is busy or restarting: keep the last states
            return
        listed = {}
        for line in proc.stdout.splitlines():
            job_id, state, nodes = (line.split("|") + ["", ""])[:3]
            listed[job_id.strip()] = {"JobID": job_id.strip(), "State": state.strip(), "NodeList": nodes.strip()}
        for job_id in self._registered - self._finished:
            self._info_dict[job_id] = listed.get(job_id, {"JobID": job_id, "State": GONE, "NodeList": ""})
