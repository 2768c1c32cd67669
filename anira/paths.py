"""Paths in what the project writes and commits: relative to the repository, never the machine's.

A manifest, a run's ``config.json`` or an executed notebook is committed with the results it
describes, so a path in it must mean the same on every clone: ``runs/cpu/runs/<hash>``, not the
absolute path of the machine that made it. Inside a notebook the paths are relative to the
notebook's folder (``../runs/...``), the folder papermill runs it in. A path outside the repository
(a temporary folder, a cluster scratch disk) stays absolute: there is nothing to be relative to.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]


def portable(path: str | Path, start: str | Path = REPO, repo: str | Path = REPO) -> str:
    """``path`` relative to ``start`` when both lie in ``repo``, else ``path`` as it is (absolute)."""
    p, repo = Path(path), Path(repo)
    if not p.is_absolute():
        return str(path)
    p = Path(os.path.normpath(p))
    if not (p.is_relative_to(repo) and Path(start).resolve().is_relative_to(repo)):
        return str(p)
    return os.path.relpath(p, Path(start).resolve())


def portable_argv(argv: Iterable[str], repo: str | Path = REPO) -> list[str]:
    """``argv`` with the repository's absolute paths made relative and any other absolute path cut to
    its name (a kernel's connection file ``/tmp/tmpab12.json`` says nothing on another machine)."""
    out = []
    for a in argv:
        a = str(a)
        if a.startswith("/"):
            rel = portable(a, repo, repo)
            a = rel if not rel.startswith("/") else Path(a).name
        out.append(a)
    return out


def portable_text(text: str, repo: str | Path = REPO, start: str | Path | None = None) -> str:
    """``text`` with every absolute path under ``repo`` written relative to ``start`` (default: the
    repository itself, ``repo/x`` -> ``x``; ``start = repo/notebooks`` gives ``../x``)."""
    repo = str(Path(repo)).rstrip("/")
    up = "" if start is None or Path(start) == Path(repo) else os.path.relpath(repo, start)  # e.g. ".."
    return re.sub(re.escape(repo) + r"(/|(?=[\"'\s\\,\]]|$))",
                  lambda m: (f"{up}/" if up else "") if m.group(1) else (up or "."), text)


def portable_notebook(nb: dict[str, Any], repo: str | Path = REPO) -> dict[str, Any]:
    """An executed notebook (nbformat JSON) with the paths of ``repo`` made relative: in the
    parameters papermill injected (and recorded in its metadata) relative to the notebook's folder,
    ``repo/notebooks``, where they are read; everywhere else (outputs, tracebacks) to ``repo``."""
    nb_dir = Path(repo) / "notebooks"
    cells = []
    for cell in nb.get("cells", []):
        injected = "injected-parameters" in cell.get("metadata", {}).get("tags", [])
        cell = json.loads(portable_text(json.dumps(cell), repo, nb_dir if injected else None))
        cells.append(cell)
    meta = {}
    for key, value in nb.get("metadata", {}).items():  # the keys keep their order: a minimal diff
        if key == "papermill" and isinstance(value, dict):
            value = {k: json.loads(portable_text(json.dumps(v), repo, nb_dir if k == "parameters" else None))
                     for k, v in value.items()}
        else:
            value = json.loads(portable_text(json.dumps(value), repo))
        meta[key] = value
    return {**nb, "cells": cells, "metadata": meta}


__all__ = ["REPO", "portable", "portable_argv", "portable_text", "portable_notebook"]
