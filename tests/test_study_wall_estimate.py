"""scripts/study_wall_estimate.py: the replay of the driver's schedule on a known case, and on the
committed cpu study."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    m = load_script()
    assert m.replay(runs, workers=2) == 16.0  # B at 10-15, D at 12-16
    assert m.replay(runs, workers=2, waves=True) == 19.0  # D at 10-14, then B at 14-19
    assert m.replay(runs, workers=1) == 31.0  # one worker: the sum


def test_committed_cpu_study_replays_between_its_lower_bound_and_the_sum(capsys):
    if not (ROOT / "data" / "results" / "cpu" / "runs").is_dir():
        pytest.skip("no committed cpu results in this checkout")
    m = load_script()
    runs, factor = m.run_times("cpu", ROOT / "data" / "results")
    assert factor >= 1.0 and any(not r["measured"] for r in runs) and any(r["measured"] for r in runs)
    work = sum(r["seconds"] for r in runs)
    assert work / 2 <= m.replay(runs, 2) <= m.replay(runs, 2, waves=True) <= work
    assert m.main(["--profile", "cpu", "--runs-root", str(ROOT / "data" / "results")]) == 0
    assert "replayed sweep" in capsys.readouterr().out
