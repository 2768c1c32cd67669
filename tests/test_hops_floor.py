"""scripts/hops_floor.py on the committed reference results: every hops run is listed, and the floor
it derives from each run's records equals the floor computed from the evaluation set those runs were
scored on (the second study's design, regenerated)."""
import importlib.util
import json
from pathlib import Path

import pytest

from anira.data import EVAL_COUNT, earlier_params, eval_seed
from anira.tasks import make_task
from anira.tasks.hops import guess_pool, no_composition_accuracy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results" / "cpu"


def load_script():
    spec = importlib.util.spec_from_file_location("hops_floor", ROOT / "scripts" / "hops_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_from_records_equals_floor_from_eval_set():
    t = load_script().table(RESULTS)
    overall = t[t.hops == "all"]
    configs = [json.loads(p.read_text())["config"] for p in RESULTS.glob("runs/*/config.json")]
    n_hops_runs = sum(c["task"] == "hops" for c in configs)
    assert len(overall) == n_hops_runs > 0
    # the committed study was scored on the second study's design (anira.data --earlier v2)
    params = earlier_params("v2")["hops"]["train"]
    exs = make_task("hops", **params).generate(EVAL_COUNT, eval_seed("hops", "in"))
    feats = [f for ex in exs for f in ex.features]
    floor = sum(no_composition_accuracy(f["difficulty"], guess_pool(f)) for f in feats) / len(feats)
    assert overall.floor.to_numpy() == pytest.approx(floor)
    assert ((overall.acc >= 0) & (overall.acc <= 1)).all()
