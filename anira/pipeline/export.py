"""Export a finished study's light results, so that a clone can redraw every figure without training.

``export_results(layout, dest_root)`` copies, for every finished run of ``layout`` (a run whose
``summary.json`` exists), the files the analysis notebooks read -- ``config.json``,
``summary.json``, ``log.jsonl``, ``records.csv.gz`` -- plus the profile's ``manifest.json`` and the
executed notebooks into ``dest_root/<profile>/``, in the same layout as ``runs/<profile>/``::

    dest_root/<profile>/manifest.json
    dest_root/<profile>/runs/<config_hash>/{config.json, summary.json, log.jsonl, records.csv.gz}
    dest_root/<profile>/executed/*.ipynb

The runs exported are those the manifest lists (the last study of the profile), so a run left in
``runs/<profile>/runs/`` by an older version of the profile is not exported; without a manifest,
every finished run is. Checkpoints are not copied (tens of MB each): with exported results the
analyses 03-07 redraw from the records (``python -m anira.study --profile cpu --runs-root
data/results --only-notebooks 03,04,05,06,07``), except the wall-clock timing of 06, which needs the weights.

What is exported holds paths relative to the repository (``make_portable``), never the absolute
paths of the machine that ran the study: the results are committed and read on other clones.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from anira.paths import REPO, portable_argv, portable_notebook, portable_text
from anira.pipeline.runs import Layout

RUN_FILES = ("config.json", "summary.json", "log.jsonl", "records.csv.gz")


def make_portable(path: str | Path, repo: str | Path = REPO) -> bool:
    """Rewrite the JSON file or executed notebook ``path`` so that no absolute path of ``repo`` stays in
    it (see ``anira.paths``; a run's recorded ``argv`` also loses paths outside ``repo``); returns
    whether it changed. Other files are left alone."""
    path = Path(path)
    if path.suffix not in (".json", ".ipynb"):
        return False
    text = path.read_text()
    doc = json.loads(text)
    if path.suffix == ".ipynb":
        doc = portable_notebook(doc, repo)
    else:
        if isinstance(doc, dict) and isinstance(doc.get("argv"), list):
            doc["argv"] = portable_argv(doc["argv"], repo)
        doc = json.loads(portable_text(json.dumps(doc), repo))
    indent = 1 if text.startswith("{\n ") and not text.startswith("{\n  ") else 2
    new = json.dumps(doc, indent=indent, ensure_ascii=False) + ("\n" if text.endswith("\n") else "")
    if new == text:
        return False
    path.write_text(new)
    return True


def export_results(layout: Layout, dest_root: str | Path) -> Path:
    """Copy the light results of ``layout`` into ``dest_root/<profile>/``; returns that folder."""
    src_runs = layout.runs_dir
    finished = sorted(p for p in src_runs.glob("*/") if (p / "summary.json").is_file()) if src_runs.is_dir() else []
    if finished and layout.manifest.is_file():
        listed = [r.get("config_hash") for r in json.loads(layout.manifest.read_text()).get("runs", [])]
        missing = [h for h in listed if not h or not (src_runs / h / "summary.json").is_file()]
        if missing:
            raise ValueError(f"{layout.manifest} lists {len(missing)} unfinished runs ({missing[:3]}); "
                             f"finish the study first (python -m anira.study --profile {layout.profile})")
        finished = [src_runs / h for h in sorted(listed)]
    if not finished:
        raise ValueError(f"no finished runs under {src_runs} to export; run the study first "
                         f"(python -m anira.study --profile {layout.profile})")
    dest = Path(dest_root).resolve() / layout.profile
    if dest == layout.base:
        raise ValueError(f"dest_root = {str(dest_root)!r} is the study's own runs root; choose another folder")
    if (dest / "runs").exists():
        shutil.rmtree(dest / "runs")  # an export is a snapshot: no stale runs from an older export
    for run in finished:
        out = dest / "runs" / run.name
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
    if layout.manifest.is_file():
        shutil.copy2(layout.manifest, dest / "manifest.json")
    if layout.executed_dir.is_dir():
        if (dest / "executed").exists():
            shutil.rmtree(dest / "executed")
        keep = {p.name for p in finished}  # per-run notebooks (executed/<notebook>/<hash>.ipynb) of these runs only
        shutil.copytree(layout.executed_dir, dest / "executed", ignore=lambda d, names: [
            n for n in names if Path(d) != layout.executed_dir and n.endswith(".ipynb") and n[:-6] not in keep])
    for f in sorted(dest.rglob("*")):
        if f.suffix in (".json", ".ipynb"):
            make_portable(f)
    return dest


__all__ = ["export_results", "make_portable", "RUN_FILES"]
