"""anira.pipeline.estimate: the replay of the driver's schedule on a known case and on the committed
cpu3 study; the dry run's estimate from measured numbers; scripts/study_wall_estimate.py wraps it."""
import importlib.util
from pathlib import Path

import pytest

from anira.pipeline.driver import make_plan
from anira.pipeline.estimate import estimate_plan, format_duration, format_estimate, replay, run_times, step_work
from anira.pipeline.profile import load_profile
from anira.pipeline.runs import Layout
from anira.study import main as study_main

ROOT = Path(__file__).resolve().parents[1]


RESULTS = ROOT / "data" / "results"


def load_script():
    spec = importlib.util.spec_from_file_location("study_wall_estimate", ROOT / "scripts" / "study_wall_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_starts_a_matched_run_when_its_run_is_done_or_after_the_first_wave():
    # A (10 s) and C (12 s) start; B (matched to A, 5 s) comes before D (4 s) in the profile.
    runs = [{"hash": "a", "rank": (0, 0), "depends_on": None, "seconds": 10.0},
            {"hash": "b", "rank": (1, 3), "depends_on": "a", "seconds": 5.0},
            {"hash": "c", "rank": (2, 1), "depends_on": None, "seconds": 12.0},
            {"hash": "d", "rank": (3, 2), "depends_on": None, "seconds": 4.0}]
    assert replay(runs, workers=2) == 16.0  # B at 10-15, D at 12-16
    assert replay(runs, workers=2, waves=True) == 19.0  # D at 10-14, then B at 14-19
    assert replay(runs, workers=1) == 31.0  # one worker: the sum


def test_step_work_counts_the_depth_a_fixed_run_uses():
    base = {"batch_size": 64, "d_model": 128, "d_ff": 512, "max_depth": 6}
    assert step_work({**base, "mechanism": "fixed", "fixed_depth": 1}) * 6 == step_work({**base, "mechanism": "online"})


def test_committed_cpu3_study_replays_between_its_lower_bound_and_the_sum(capsys):
    if not (RESULTS / "cpu3" / "runs").is_dir():
        pytest.skip("no committed cpu3 results in this checkout")
    runs, factor = run_times(load_profile("cpu3"), Layout("cpu3", runs_root=RESULTS))
    assert factor >= 1.0 and all(r["measured"] for r in runs)  # every run timed in its own summary
    work = sum(r["seconds"] for r in runs)
    assert work / 2 <= replay(runs, 2) <= replay(runs, 2, waves=True) <= work
    assert load_script().main(["--profile", "cpu3", "--runs-root", str(RESULTS)]) == 0
    assert "replayed sweep" in capsys.readouterr().out


def test_dry_run_estimate_of_the_cpu3_study_is_its_measured_schedule(tmp_path, capsys):
    """From scratch (an empty runs root) the dry run times every run of the cpu3 profile from the
    committed results: within 15 % of the replay of the runs' measured times."""
    if not (RESULTS / "cpu3" / "runs").is_dir():
        pytest.skip("no committed cpu3 results in this checkout")
    prof = load_profile("cpu3")
    est = estimate_plan(prof, make_plan(prof, Layout("cpu3", runs_root=tmp_path)), workers=2)
    measured = replay(run_times(prof, Layout("cpu3", runs_root=RESULTS))[0], 2)
    assert est["runs"] == 32 and est["how"]["same config"] >= 24
    assert 0.85 * measured <= est["sweep_s"] <= 1.15 * measured
    line = f"estimated time: {format_duration(est['total_s'])} on 2 worker(s): 32 runs to train"
    assert line in format_estimate(est)
    args = ["--profile", "cpu3", "--runs-root", str(tmp_path), "--dry-run", "--executor", "local", "--workers", "2"]
    assert study_main(args) == 0
    assert line in capsys.readouterr().out


def test_dry_run_estimates_a_profile_with_no_committed_runs(tmp_path, capsys):
    assert study_main(["--profile", "smoke", "--runs-root", str(tmp_path), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimated time: ") and "12 by the per-step rate" in line
