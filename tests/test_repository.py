"""What a fresh clone holds: no absolute paths of the machine that made a file, a safe example for
one run by hand, and the study's design in the repository where the code points to it."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from anira.config import from_dict
from anira.pipeline.profile import available_profiles, declared_parameters
from anira.train import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (".ipynb", ".json", ".md", ".csv", ".yaml", ".yml", ".tex", ".toml", ".txt")
# "/" + at least two path segments, not inside a URL, a relative path ("a/b", "runs/<profile>/runs/") or a
# ratio ("1/2/3")
ABSOLUTE = re.compile(r"(?<![\w.:/~\\<>{}*-])/(?:[A-Za-z0-9_.+-]+/)+[A-Za-z0-9_.+-]*")


def text_of(path: Path) -> str:
    """The file's text; for a notebook without its images (base64 is full of slashes)."""
    text = path.read_text(errors="replace")
    if path.suffix != ".ipynb":
        return text
    nb = json.loads(text)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            for mime in [m for m in out.get("data", {}) if m.startswith("image/") and m != "image/svg+xml"]:
                del out["data"][mime]
    return json.dumps(nb, indent=1)


def tracked(*suffixes: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.splitlines() if f.endswith(suffixes) and (ROOT / f).is_file()]


def test_no_committed_file_holds_an_absolute_path():
    hits = []
    for path in tracked(*SCANNED):
        for m in ABSOLUTE.finditer(text_of(path)):
            hits.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert hits == [], f"{len(hits)} absolute paths, e.g. {hits[:5]}"


def test_the_absolute_path_pattern_finds_paths_and_skips_urls_and_ratios():
    found = [m.group(0) for m in ABSOLUTE.finditer(
        'a "/home/me/runs/cpu" b https://arxiv.org/abs/1 c 1/2/3/4 d runs/cpu/x e /tmp/x.json f ../figures/cpu')]
    assert found == ["/home/me/runs/cpu", "/tmp/x.json"]


def test_one_run_by_hand_is_a_complete_example_outside_every_profiles_cache():
    """The README's single-notebook command: its parameters file is a valid run config, and the run
    goes to runs/mine, never into a profile's run cache (a partial run_config there once mixed
    max_depth 6 into the smoke runs and broke notebook 03)."""
    example = ROOT / "profiles" / "examples" / "one_run.yaml"
    params = yaml.safe_load(example.read_text())
    from_dict(RunConfig, params["run_config"])
    declared = declared_parameters(ROOT / "notebooks" / "02_train.ipynb")
    assert set(params) <= set(declared)
    caches = {(ROOT / "runs" / p / "runs").resolve() for p in available_profiles()}
    for runs_dir in (params["runs_dir"], declared["runs_dir"].strip("\"'")):
        target = (ROOT / "notebooks" / runs_dir).resolve()
        assert target == (ROOT / "runs" / "mine").resolve() and target not in caches
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "papermill notebooks/02_train.ipynb" in line)
    assert "-f profiles/examples/one_run.yaml" in command and " runs/mine/" in command


def test_the_study_design_the_code_points_to_is_in_the_repository():
    design = ROOT / "docs" / "study.md"
    assert design.is_file()
    for path in tracked(".py", ".ipynb", ".md"):
        if path.is_relative_to(ROOT / "data" / "results") or path == Path(__file__).resolve():
            continue  # executed copies are records of what ran
        text = path.read_text(errors="replace")
        assert "STUDY.md" not in text, f"{path.relative_to(ROOT)} points to a file that is not in the repository"
