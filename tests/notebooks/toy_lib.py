"""A toy stand-in for ``anira.train`` used by the pipeline tests: a flat config, its hash, and a
``run(cfg, out_dir)`` that "trains" for ``steps`` steps with a checkpoint after each, resumes from
that checkpoint, and writes ``summary.json`` (with the config hash) when finished.

Every call appends one line (kernel pid, parent pid) to ``out_dir/attempts.log`` so tests can count executions across
processes (sequential, process pool, submitit jobs).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from anira.config import check_choice, check_range, from_dict, to_dict

TASKS = ("hops", "toposort")


@dataclass
class ToyConfig:
    task: str = "hops"  # one of TASKS
    task_params: dict = field(default_factory=dict)  # task size overrides
    mechanism: Literal["fixed", "early", "online", "random"] = "online"
    seed: int = 0
    beta: float = 0.01
    fixed_depth: int | None = None
    random_mean_depth: float | None = None  # `random` control, matched to an adaptive run
    steps: int = 4  # toy "optimizer steps", one checkpoint each
    step_sleep_s: float = 0.0  # wall time per step, so a test can kill the driver mid-run
    crash_once_at: int | None = None  # raise after this step's checkpoint, the first attempt only
    num_threads: int = 1  # not hashed (as in the real trainer)

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("mechanism", self.mechanism, ("fixed", "early", "online", "random"))
        check_range("steps", self.steps, 1)
        if self.fixed_depth is not None:
            check_range("fixed_depth", self.fixed_depth, 1)


RunConfig = ToyConfig  # the name the study pipeline reads from a trainer module


def config_hash(cfg: ToyConfig) -> str:
    d = {k: v for k, v in to_dict(cfg).items() if k != "num_threads"}
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


INPUTS = "toy-data-v1"  # stands in for the frozen evaluation data a run is scored on


def inputs_fingerprint(cfg: ToyConfig) -> str:
    return hashlib.sha256(INPUTS.encode()).hexdigest()


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def run(cfg: ToyConfig, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = config_hash(cfg)
    with (out / "attempts.log").open("a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\n")  # kernel pid, and its parent: the process that ran papermill
    if (out / "summary.json").exists():
        return json.loads((out / "summary.json").read_text())
    ckpt = out / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    t0 = time.perf_counter()
    for step in range(start + 1, cfg.steps + 1):
        time.sleep(cfg.step_sleep_s)
        _write(ckpt, {"step": step, "config_hash": h})
        if cfg.crash_once_at == step and not (out / "crashed").exists():
            (out / "crashed").write_text("1")
            raise RuntimeError(f"simulated crash after step {step}")
    depth = {"fixed": cfg.fixed_depth or 3, "random": cfg.random_mean_depth or 0.0}.get(cfg.mechanism, 2.5 + cfg.seed)
    summary = {"config_hash": h, "resumed_from": start, "steps": cfg.steps, "wall_time_s": time.perf_counter() - t0,
               "inputs_sha256": inputs_fingerprint(cfg), "in": {"acc": 1.0, "mean_depth": depth}}
    _write(out / "summary.json", summary)
    return summary


def from_params(run_config: dict) -> ToyConfig:
    return from_dict(ToyConfig, run_config, where="run_config")
