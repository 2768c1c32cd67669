"""The real driver on the real `smoke` profile: every notebook, every run of the sweep.

It writes to the default places (runs/smoke, figures/smoke) on purpose: nbval executes the
notebooks on their default (smoke) parameters right after the unit tests (`make test`), and the
analysis notebooks then read these runs; the training notebook's default run is in the cache.
The study runs once per session (``smoke_manifest``, tests/conftest.py): tests/test_slurm.py
compares its Slurm runs with these.
"""
import json
from pathlib import Path

import nbformat
import yaml

from anira.config import from_dict
from anira.train import RunConfig, config_hash

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _default_run_config() -> dict:
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(cell.source, scope)
    return scope["run_config"]


def test_smoke_driver_runs_every_run_and_notebook(smoke_manifest):
    profile = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    runs = smoke_manifest["runs"]
    assert len(runs) >= 10, "the smoke sweep should cover every task and mechanism"
    assert all(r["status"] in ("done", "cached") for r in runs), runs
    for run in runs:
        run_dir = ROOT / "runs" / "smoke" / "runs" / run["config_hash"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["config_hash"] == run["config_hash"]
        assert (run_dir / "records.csv.gz").stat().st_size > 0
    executed = ROOT / "runs" / "smoke" / "executed"
    for name in [nb["name"] for nb in profile["notebooks"] if not nb.get("per_run")]:
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} produced no output"
    assert list((ROOT / "figures" / "smoke").glob("*.png")), "no figure was written"


def test_every_numbered_notebook_is_in_the_smoke_profile():
    profile = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    assert [nb["name"] for nb in profile["notebooks"]] == NOTEBOOKS


def test_training_notebook_default_is_a_smoke_run():
    """nbval runs 02_train on its defaults: they must be a run of the smoke sweep (then it is cached)."""
    from anira.pipeline.profile import load_profile

    profile = load_profile("smoke")
    hashes = {r.config_hash for r in profile.runs}
    cfg = from_dict(RunConfig, _default_run_config())
    assert config_hash(cfg) in hashes
