"""Fixtures shared by test modules."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_manifest() -> dict:
    """The smoke study, run once by the real driver (in-process executor) into runs/smoke and
    figures/smoke, where nbval's notebooks read it afterwards; its manifest."""
    env = {**os.environ, "MPLBACKEND": "agg"}
    proc = subprocess.run([sys.executable, "-m", "anira.study", "--profile", "smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads((ROOT / "runs" / "smoke" / "manifest.json").read_text())
