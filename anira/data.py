"""Frozen evaluation sets: every task's in-range and extrapolation examples, written once.

Layout under the data root (default: the repository's ``data/``; env var ``ANIRA_DATA`` overrides)::

    data/<task>/eval_in.jsonl.gz    EVAL_COUNT examples from the task's training range
    data/<task>/eval_out.jsonl.gz   EVAL_COUNT examples from its extrapolation range
    data/<task>/vocab.json          the task's token list (id = position)
    data/manifest.json              per set: task, split, range, params (config dict), seed,
                                    count, file, sha256 (file bytes), content_sha256 (JSON lines);
                                    per file: sha256

Each line is one ``Example.to_json()`` dumped with sorted keys and no spaces. The gzip stream is
byte-reproducible: header mtime 0, the file name without ``.gz`` in the header, level 9. (The
compressed bytes also depend on the zlib build; ``content_sha256`` identifies the data itself,
and a mismatch report says which of the two differs.)

Seeds: ``eval_seed(task, split)`` = the first 4 bytes of sha256("anira-eval/<task>/<split>") as
an integer, i.e. fixed per task and split and far from the small seeds of training streams.

CLI: ``python -m anira.data`` regenerates every task in ``TASK_NAMES``;
``python -m anira.data --check`` regenerates into a temporary directory and compares every
sha256 with the committed manifest and files (exit 1 on any mismatch).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from anira.config import to_dict
from anira.tasks import TASK_NAMES, Example, Vocab, make_task, task_class

EVAL_COUNT = 512  # examples per task and split
SPLITS = {"in": "train", "out": "extrap", "wide": "wide"}  # split name -> task range it is drawn from
# every task has "in" and "out"; a task adds others in ``Task.ranges`` ("wide": `addition`, width only)
MANIFEST = "manifest.json"
FORMAT = 1  # bump when the file layout changes


# ---------------------------------------------------------------------------------------------
# paths and names
# ---------------------------------------------------------------------------------------------
def default_root() -> Path:
    """``$ANIRA_DATA`` if set, else ``data/`` of the repository this package lives in."""
    env = os.environ.get("ANIRA_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def eval_seed(task: str, split: str) -> int:
    return int.from_bytes(hashlib.sha256(f"anira-eval/{task}/{split}".encode()).digest()[:4], "big")


def set_file(task: str, split: str) -> str:
    """Path of a set relative to the data root."""
    return f"{task}/eval_{split}.jsonl.gz"


def _check_task(task: str) -> None:
    if task not in TASK_NAMES:
        raise ValueError(f"task = {task!r} is not a known task; allowed values: {list(TASK_NAMES)}")


def task_splits(task: str) -> list[str]:
    """The frozen splits of ``task``: "in", "out" and the task's own (``Task.ranges``)."""
    return list(task_class(task).ranges)


def _check_split(split: str, task: str | None = None) -> None:
    allowed = task_splits(task) if task is not None else list(SPLITS)
    if split not in allowed:
        where = f" for task {task!r}" if task is not None else ""
        raise ValueError(f"split = {split!r} is not allowed{where}; allowed values: {allowed}")


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _gzip(content: bytes, name: str) -> bytes:
    """Deterministic gzip: mtime 0, fixed file name ``name`` in the header, level 9."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(content)
    return buf.getvalue()


def _jsonl(examples: Iterable[Example]) -> bytes:
    return b"".join(json.dumps(ex.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n" for ex in examples)


def _json_text(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode()


def _task_class_or_raise(task: str):
    try:
        return task_class(task)
    except ImportError as err:
        raise ImportError(
            f"task {task!r} could not be imported ({err}); the frozen evaluation sets need every task "
            f"in TASK_NAMES = {list(TASK_NAMES)}"
        ) from err


def build_task_files(task: str, count: int = EVAL_COUNT, params: dict[str, dict] | None = None
                     ) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """The files of one task (relative path -> bytes) and its manifest entries, in memory.
    ``params`` = {range name: task parameters} replaces a range's config (an earlier design); with
    ``params`` only the ranges it names are written (an earlier design had "in" and "out" only)."""
    _check_task(task)
    _task_class_or_raise(task)
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    vocab = None
    for split, rng_name in task_class(task).ranges.items():
        if params is not None and rng_name not in params:
            continue
        t = make_task(task, range=rng_name, **params.get(rng_name, {}) if params else {})
        vocab = t.vocab.to_json() if vocab is None else vocab
        if t.vocab.to_json() != vocab:
            raise ValueError(f"task {task!r}: the vocabulary differs between ranges; it must be fixed")
        seed = eval_seed(task, split)
        content = _jsonl(t.generate(count, seed=seed))
        rel = set_file(task, split)
        files[rel] = _gzip(content, Path(rel).name[: -len(".gz")])
        entries.append({
            "task": task,
            "split": split,
            "range": rng_name,
            "params": to_dict(t.config),
            "seed": seed,
            "count": count,
            "file": rel,
            "sha256": _sha256(files[rel]),
            "content_sha256": _sha256(content),
            "vocab_size": len(vocab),
        })
    files[f"{task}/vocab.json"] = _json_text(vocab)
    return files, entries


def _read_manifest(root: Path) -> dict[str, Any] | None:
    p = root / MANIFEST
    return json.loads(p.read_text()) if p.exists() else None


def write_eval_sets(root: str | os.PathLike = "data", tasks: Iterable[str] = TASK_NAMES, count: int = EVAL_COUNT,
                    params: dict[str, dict[str, dict]] | None = None) -> dict[str, Any]:
    """Write the sets of ``tasks`` under ``root`` and update ``root/manifest.json``.

    Entries of tasks not in ``tasks`` are kept from an existing manifest. A task whose module
    cannot be imported raises ImportError: nothing is skipped. ``params`` = {task: {range:
    parameters}} writes a task's sets from other parameters (``EARLIER``). Returns the manifest.
    """
    root = Path(root)
    tasks = list(tasks)
    for task in tasks:
        _check_task(task)
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count = {count!r} must be a positive integer")
    built = [build_task_files(task, count, (params or {}).get(task)) for task in tasks]  # all in memory before any write
    old = _read_manifest(root) or {}
    sets = [e for e in old.get("sets", []) if e["task"] not in tasks]
    file_sums = {k: v for k, v in old.get("files", {}).items() if k.split("/")[0] not in tasks}
    for files, entries in built:
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            file_sums[rel] = _sha256(data)
        sets += entries
    manifest = {
        "format": FORMAT,
        "generator": "python -m anira.data",
        "sets": sorted(sets, key=lambda e: (e["task"], e["split"])),
        "files": dict(sorted(file_sums.items())),
    }
    (root / MANIFEST).write_bytes(_json_text(manifest))
    return manifest


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path} does not exist; regenerate the frozen sets with `python -m anira.data` "
        f"or point ANIRA_DATA at a directory that holds them"
    )


def load_eval_set(task: str, split: str, root: str | os.PathLike | None = None, verify: bool = True) -> list[Example]:
    """The frozen set ``split`` ("in", "out", or one of the task's own: ``task_splits``) of ``task``.

    With ``verify`` the file's sha256 must match the manifest (ValueError otherwise), so stale or
    edited files are never evaluated silently.
    """
    _check_task(task)
    _check_split(split, task)
    root = Path(root) if root is not None else default_root()
    path = root / set_file(task, split)
    if not path.exists():
        raise _missing(path)
    data = path.read_bytes()
    if verify:
        manifest = _read_manifest(root)
        if manifest is None:
            raise _missing(root / MANIFEST)
        want = manifest.get("files", {}).get(set_file(task, split))
        if want is None:
            raise ValueError(f"{root / MANIFEST} has no entry for {set_file(task, split)}; regenerate with `python -m anira.data`")
        if _sha256(data) != want:
            raise ValueError(f"{path}: sha256 does not match {root / MANIFEST}; regenerate with `python -m anira.data`")
    lines = gzip.decompress(data).decode().splitlines()
    return [Example.from_json(json.loads(line)) for line in lines]


def load_vocab(task: str, root: str | os.PathLike | None = None) -> Vocab:
    _check_task(task)
    root = Path(root) if root is not None else default_root()
    path = root / task / "vocab.json"
    if not path.exists():
        raise _missing(path)
    return Vocab.from_json(json.loads(path.read_text()))


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------
def check(root: str | os.PathLike | None = None, tasks: Iterable[str] = TASK_NAMES) -> list[str]:
    """Regenerate ``tasks`` in a temporary directory and compare with ``root``; [] when identical.

    Every file listed for these tasks is compared by sha256 against both the manifest under
    ``root`` and the file on disk; each problem is one line of the returned list.
    """
    root = Path(root) if root is not None else default_root()
    tasks = list(tasks)
    committed = _read_manifest(root)
    if committed is None:
        return [f"{root / MANIFEST} is missing"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_eval_sets(tmp, tasks)
        old_sets = {(e["task"], e["split"]): e for e in committed.get("sets", [])}
        for e in fresh["sets"]:
            o = old_sets.get((e["task"], e["split"]))
            if o is None:
                problems.append(f"{e['file']}: no entry in the committed manifest")
                continue
            for key in ("params", "seed", "count"):
                if o.get(key) != e[key]:
                    problems.append(f"{e['file']}: {key} differs: committed {o.get(key)!r}, regenerated {e[key]!r}")
            if o.get("content_sha256") != e["content_sha256"]:
                problems.append(f"{e['file']}: the examples differ (content sha256)")
            elif o.get("sha256") != e["sha256"]:
                problems.append(f"{e['file']}: same examples, but the gzip bytes differ (another zlib build?)")
        for rel, sha in fresh["files"].items():
            on_disk = root / rel
            want = committed.get("files", {}).get(rel)
            if want is None:
                problems.append(f"{rel}: not listed in the committed manifest")
            elif want != sha:
                problems.append(f"{rel}: sha256 differs from the committed manifest")
            if not on_disk.exists():
                problems.append(f"{rel}: missing under {root}")
            elif _sha256(on_disk.read_bytes()) != sha:
                problems.append(f"{rel}: the file under {root} differs from the regenerated one")
    return problems


EARLIER = ("v2", "v3")  # the earlier designs whose sets committed diagnostic runs were scored on


def earlier_params(design: str) -> dict[str, dict[str, dict]]:
    """Task parameters of an earlier design that committed results were scored on.

    ``v2``: before the extrapolation sets were certified to need more steps than training (the
    second `cpu` reference study, commit 18ea01f; the learning diagnostics in
    ``data/results/{hops,addition,toposort}_diagnostic`` were scored on it). ``v3``: `addition` at
    one width without column hints (``addition.PLAIN_DESIGN``; the depth-used diagnostic's addition
    runs were scored on it); the other tasks as now. ``--earlier DESIGN`` writes their sets, e.g.
    into a separate root to rescore those runs with ``ANIRA_DATA`` pointing there. (The first
    study's designs, v1, are in the git history: README, "Earlier studies".)"""
    from anira.config import check_choice
    from anira.tasks import addition, hops, toposort

    check_choice("design", design, EARLIER)
    if design == "v3":
        return {"addition": {"train": addition.PLAIN_DESIGN, "extrap": addition.PLAIN_EXTRAP}}
    return {"hops": {"train": hops.STUDY2_DESIGN, "extrap": hops.STUDY2_EXTRAP},
            "addition": {"train": addition.STUDY2_DESIGN, "extrap": addition.STUDY2_EXTRAP},
            "toposort": {"train": toposort.STUDY2_DESIGN, "extrap": toposort.STUDY2_EXTRAP}}


# ---------------------------------------------------------------------------------------------
# certificate: the extrapolation set needs more steps than training
# ---------------------------------------------------------------------------------------------
CERTIFIED = ("hops", "addition", "toposort", "language")  # the tasks that define a bounded reader


def certify(task: str, root: str | os.PathLike | None = None,
            sets: dict[str, list[Example]] | None = None) -> dict[str, Any]:
    """Run the task's bounded reader (``Task.bounded_reader``) with k = the most steps any in-range
    token needs (the largest ``difficulty`` of the in-range set) on both frozen sets.

    Returns k; ``in_reader`` (its accuracy in range: 1.0 when the reader is exact there); on the
    out-of-range tokens that need more than k steps: ``n_beyond``, ``beyond_reader`` (its mean
    accuracy there: the guessing floor when no shortcut is left) and ``beyond_solved`` (the share it
    still gets right for sure, by a shortcut); ``floor_bar`` (the task's bound on that floor) and
    ``certified`` (exact in range, at least one token beyond, none solved, floor <= the bar, and,
    for a task with a "wide" split where only the width grows, ``wide_reader`` = 1: the same
    k-step reader stays exact there). ``sets`` = {"in": [...], "out": [...]} replaces the frozen
    sets (e.g. an earlier design's)."""
    import numpy as np

    _check_task(task)
    if task not in CERTIFIED:
        raise ValueError(f"task = {task!r} has no bounded reader; allowed values: {list(CERTIFIED)}")
    sets = sets or {split: load_eval_set(task, split, root) for split in task_splits(task)}
    t = make_task(task)
    k = max(f["difficulty"] for ex in sets["in"] for f in ex.features)

    def read(exs):  # on answer tokens (a language model's other tokens chain no facts)
        acc = np.array([a for ex in exs for a in t.bounded_reader(t.render(ex), k)])
        diff = np.array([f["difficulty"] for ex in exs for f in ex.features])
        answer = np.array([f["is_answer"] == 1 for ex in exs for f in ex.features])
        return acc[answer], diff[answer]

    acc_in, _ = read(sets["in"])
    acc_out, diff_out = read(sets["out"])
    beyond = acc_out[diff_out > k]
    res = {"task": task, "k": int(k), "in_reader": float(acc_in.mean()), "n_beyond": int(beyond.size),
           "beyond_reader": float(beyond.mean()) if beyond.size else float("nan"),
           "beyond_solved": float((beyond == 1).mean()) if beyond.size else float("nan"),
           "floor_bar": task_class(task).extrapolation_floor_bar}
    if "wide" in sets:  # only the width grows: the same k-step reader must stay exact there
        acc_wide, _ = read(sets["wide"])
        res["wide_reader"] = float(acc_wide.mean())
    res["certified"] = bool(res["in_reader"] == 1.0 and beyond.size and res["beyond_solved"] == 0
                            and res["beyond_reader"] <= res["floor_bar"] and res.get("wide_reader", 1.0) == 1.0)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anira.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate in a temporary directory and compare sha256")
    ap.add_argument("--root", default=None, help="data root (default: $ANIRA_DATA or the repository's data/)")
    ap.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), help=f"tasks (default: all of {list(TASK_NAMES)})")
    ap.add_argument("--earlier", default=None, choices=EARLIER, metavar="DESIGN",
                    help=f"write an earlier design's sets ({', '.join(EARLIER)}: see anira.data.earlier_params) "
                         "instead of the current ones; use it with --root, never on the repository's data/")
    ap.add_argument("--certify", action="store_true",
                    help="run each algorithmic task's bounded reader on its frozen sets and print the certificate")
    args = ap.parse_args(argv)
    if args.certify:
        rows = [certify(t, args.root) for t in args.tasks if t in CERTIFIED]
        for r in rows:
            print(f"{r['task']:9s} k={r['k']}  reader in range {r['in_reader']:.3f}  beyond k: {r['n_beyond']} tokens, "
                  f"reader {r['beyond_reader']:.3f} (bar {r['floor_bar']:.2f}), solved by a shortcut "
                  f"{r['beyond_solved']:.3f}" + (f"  reader on the wider set {r['wide_reader']:.3f}" if "wide_reader" in r else "")
                  + f"  {'certified' if r['certified'] else 'NOT certified'}")
        return 0 if all(r["certified"] for r in rows) else 1
    root = Path(args.root) if args.root else default_root()
    if args.earlier and (args.check or root.resolve() == (Path(__file__).resolve().parent.parent / "data").resolve()):
        ap.error("--earlier: give another --root (the repository's data/ holds the current design's sets), without --check")
    if args.check:
        problems = check(root, args.tasks)
        for p in problems:
            print(f"MISMATCH {p}")
        print(f"checked {len(args.tasks)} task(s) under {root}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    manifest = write_eval_sets(root, args.tasks, params=earlier_params(args.earlier) if args.earlier else None)
    for e in manifest["sets"]:
        if e["task"] in args.tasks:
            print(f"wrote {root / e['file']}  count={e['count']} seed={e['seed']} sha256={e['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
