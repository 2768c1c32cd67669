"""Export a finished study's light results, so that a clone can redraw every figure without training.

``export_results(layout, dest_root)`` copies, for every finished run of ``layout`` (a run whose
``summary.json`` exists), the files the analysis notebooks read -- ``config.json``,
``summary.json``, ``log.jsonl``, ``records.csv.gz`` -- plus the profile's ``manifest.json`` and the
executed notebooks into ``dest_root/<profile>/``, in the same layout as ``runs/<profile>/``::

    dest_root/<profile>/manifest.json
    dest_root/<profile>/runs/<config_hash>/{config.json, summary.json, log.jsonl, records.csv.gz, weights.pt}
    dest_root/<profile>/executed/*.ipynb

The runs exported are those the manifest lists (the last study of the profile), so a run left in
``runs/<profile>/runs/`` by an older version of the profile is not exported; without a manifest,
every finished run is. Checkpoints (weights plus optimizer state and RNG states) are not copied;
``weights.pt`` holds the trained weights alone, in float16 where that recomputes every committed
record with the same prediction and depth (about 0.6 MB for a d 128 model), else float32
(``export_weights``). With exported results the analyses 03-07 redraw from the records
(``python -m anira.study --profile cpu3 --results-from data/results``), ``anira.train.load_model``
loads any exported run, and the study driver reuses them instead of training them again.

What is exported holds paths relative to the repository (``make_portable``), never the absolute
paths of the machine that ran the study: the results are committed and read on other clones.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from anira.paths import REPO, portable_argv, portable_notebook, portable_text
from anira.pipeline.runs import Layout
from anira.train import WEIGHTS_FILE, load_model, records_differ, rescore, save_weights

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


def export_weights(run_dir: str | Path, dest_dir: str | Path) -> dict[str, Any]:
    """Write the trained weights of the finished run ``run_dir`` to ``dest_dir/weights.pt``, in
    float16 when the float16 weights recompute every record of ``records.csv.gz`` with the same
    prediction, correctness, depth and block count (``anira.train.records_differ``), else in
    float32. A run that only has ``weights.pt`` (itself exported) is copied as it is. Returns
    {"dtype", "bytes", "float16_differs"} (what float16 changed, None when nothing)."""
    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    target = dest_dir / WEIGHTS_FILE
    if not (run_dir / "checkpoint.pt").is_file():
        if not (run_dir / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{run_dir}: no checkpoint.pt or {WEIGHTS_FILE} to export")
        if (run_dir / WEIGHTS_FILE).resolve() != target.resolve():
            shutil.copy2(run_dir / WEIGHTS_FILE, target)
        saved = torch.load(target, weights_only=True)
        return {"dtype": saved["dtype"], "bytes": target.stat().st_size, "float16_differs": None}
    _, model = load_model(run_dir)
    h = json.loads((run_dir / "config.json").read_text())["config_hash"]
    half = copy.deepcopy(model)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    committed = pd.read_csv(run_dir / "records.csv.gz")
    differs = records_differ(committed, rescore(run_dir, half))
    dtype = "float16" if differs is None else "float32"
    save_weights(model, target, h, dtype)
    return {"dtype": dtype, "bytes": target.stat().st_size, "float16_differs": differs}


def export_results(layout: Layout, dest_root: str | Path, weights: bool = True, partial: bool = False) -> Path:
    """Copy the light results of ``layout`` into ``dest_root/<profile>/``; returns that folder.
    ``weights``: also each run's trained weights (``export_weights``), so that the exported study
    can be loaded, timed, explored and reused by the driver without training. ``partial``: a study
    not finished yet exports its finished runs (to be committed and reused by the next sitting)."""
    src_runs = layout.runs_dir
    finished = sorted(p for p in src_runs.glob("*/") if (p / "summary.json").is_file()) if src_runs.is_dir() else []
    if finished and layout.manifest.is_file():
        listed = [r.get("config_hash") for r in json.loads(layout.manifest.read_text()).get("runs", [])]
        missing = [h for h in listed if not h or not (src_runs / h / "summary.json").is_file()]
        if missing and not partial:
            raise ValueError(f"{layout.manifest} lists {len(missing)} unfinished runs ({missing[:3]}); "
                             f"finish the study first (python -m anira.study --profile {layout.profile}), "
                             f"or export the finished ones with partial=True (--partial)")
        finished = [src_runs / h for h in sorted(set(listed) - set(missing))]
    if not finished:
        raise ValueError(f"no finished runs under {src_runs} to export; run the study first "
                         f"(python -m anira.study --profile {layout.profile})")
    dest = Path(dest_root).resolve() / layout.profile
    if dest == layout.base:
        raise ValueError(f"dest_root = {str(dest_root)!r} is the study's own runs root; choose another folder")
    if (dest / "runs").exists():
        shutil.rmtree(dest / "runs")  # an export is a snapshot: no stale runs from an older export
    unweighted: list[str] = []
    for run in tqdm(finished, desc=f"export {layout.profile}", unit="run", disable=len(finished) < 2):
        out = dest / "runs" / run.name
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
        if weights and ((run / "checkpoint.pt").is_file() or (run / WEIGHTS_FILE).is_file()):
            export_weights(run, out)
        elif weights:
            unweighted.append(run.name)
    if unweighted:
        print(f"export: {len(unweighted)} of {len(finished)} runs have no trained weights to export "
              f"(e.g. {unweighted[0]}); the driver cannot reuse them")
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


__all__ = ["export_results", "export_weights", "make_portable", "RUN_FILES"]
