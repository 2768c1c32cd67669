"""Study profiles: one YAML file per profile, strictly validated, expanded into a list of runs.

Schema (every key is checked; unknown keys, wrong types and unknown values are errors that name
the file, the key and what is allowed)::

    profile: smoke                # must equal the file name (profiles/smoke.yaml)
    description: "..."            # optional, free text
    timeout_s: 1800               # papermill execution timeout per notebook *cell*, seconds
    defaults: {steps: 50, ...}    # run-config fields shared by every run (optional)
    task_params:                  # optional, per task: merged into each run's task_params
      hops: {max_vars: 8}
    sweep:                        # blocks; each expands as the cartesian product of its lists
      - {task: [hops, toposort], mechanism: [early, online], seed: [0, 1], beta: [0.01]}
      - {task: [hops], mechanism: [fixed], fixed_depth: [1, 3, 6], seed: [0]}
      - task: [hops]              # a control whose config needs another run's result:
        mechanism: [random]
        seed: [0]
        from_run:
          match: {mechanism: online}                  # the matched run = this entry with these values
          set: {random_depth_probs: in.depth_probs}   # field <- dotted key of its summary.json
                                                      # (in.depth_probs: its answer depths' distribution;
                                                      # in.mean_depth: their mean, for random_mean_depth)
    notebooks:                    # run in this order
      - {name: 01_tasks, params: {n_examples: 3}}
      - {name: 02_train, per_run: true}               # once per run of the sweep
      - {name: 03_alignment, params: {n_boot: 1000}, timeout_s: 3600}

A run's config is ``defaults`` <- ``task_params[task]`` (merged into ``task_params``) <- the sweep
entry, built with ``anira.config.from_dict(RunConfig, ...)`` so it gets the library's validation.
Every sweep value is a list (one run per element): write ``seed: [0]``, not ``seed: 0``.

Notebook parameters are literals checked against the notebook's ``parameters`` cell (declared
name, same literal type as its default). The driver adds, when the notebook declares them:
``profile``, ``figures_dir``, ``runs_dir`` (all notebooks), ``run_config`` (the complete config as
a dict), ``run_dir``, ``config_hash`` (the per-run notebook) and ``run_dirs`` (notebooks after the
per-run one). The per-run notebook must declare ``run_config`` and ``run_dir``; every other notebook
must declare ``figures_dir``, so no profile ever writes into another profile's figures.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import yaml

from anira.config import from_dict, load_yaml, to_dict
from anira.notebook import assignments, literal_type_ok

REPO = Path(__file__).resolve().parents[2]
PROFILES_DIR = REPO / "profiles"
NOTEBOOKS_DIR = REPO / "notebooks"

# The trainer module (RunConfig, config_hash, check_run, inputs_fingerprint): anira.train, imported
# when a profile is loaded, not with this package (a Slurm job that only executes a notebook never
# needs torch in its own process). Tests set it to their toy trainer.
trainer: ModuleType | None = None

# parameters the driver passes itself; a profile may not set them
DRIVER_PARAMS = ("profile", "figures_dir", "runs_dir", "run_dirs", "run_dir", "run_config", "config_hash")
_TOP_KEYS = {"profile": str, "description": str, "timeout_s": int, "defaults": dict, "task_params": dict,
             "sweep": list, "notebooks": list}
_REQUIRED_TOP = ("profile", "timeout_s", "notebooks")
_NOTEBOOK_KEYS = {"name": str, "params": dict, "per_run": bool, "timeout_s": int}
_FROM_RUN_KEYS = ("match", "set")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class NotebookSpec:
    name: str  # file stem in the notebooks folder, e.g. "02_train"
    path: Path  # absolute path of the source notebook
    params: dict[str, Any]  # literal parameters from the profile
    per_run: bool  # executed once per run of the sweep (the training notebook)
    timeout_s: int  # papermill execution_timeout (per cell)
    declared: tuple[str, ...]  # names in the notebook's `parameters` cell (empty when not inspected)


@dataclass
class RunSpec:
    """One run of the sweep. ``config`` is None while it waits for the run it is matched to."""

    index: int  # position in the expanded sweep (after de-duplication)
    block: int  # which sweep block produced it
    values: dict[str, Any]  # the sweep values of this entry (what distinguishes it)
    config: Any | None  # run-config instance
    config_hash: str | None
    depends_on: str | None = None  # config hash of the matched run (from_run)
    set_from: dict[str, str] = field(default_factory=dict)  # field -> dotted key in the matched summary
    base: dict[str, Any] = field(default_factory=dict)  # config dict before the `set_from` fields

    def label(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.values.items())


@dataclass
class Profile:
    name: str
    path: Path
    sha256: str  # of the profile file's bytes
    description: str
    timeout_s: int
    notebooks: list[NotebookSpec]
    runs: list[RunSpec]
    trainer: ModuleType  # the trainer module: RunConfig, config_hash, check_run, inputs_fingerprint
    n_entries: int  # sweep entries before de-duplication by config hash

    @property
    def run_cls(self) -> type:
        return self.trainer.RunConfig

    @property
    def hash_fn(self) -> Callable[[Any], str]:
        return self.trainer.config_hash

    @property
    def per_run_notebook(self) -> NotebookSpec | None:
        return next((nb for nb in self.notebooks if nb.per_run), None)

    def build_config(self, values: dict[str, Any], where: str = "") -> Any:
        return _build(self.run_cls, values, where)


def _short(v: Any) -> str:
    s = str(v).replace(" ", "")
    return s if len(s) <= 40 else s[:37] + "..."


def _check_run(check_fn: Callable | None, cfg: Any, where: str) -> None:
    if check_fn is None:
        return
    try:
        check_fn(cfg)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _build(run_cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return from_dict(run_cls, values)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from None


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    d = Path(profiles_dir or PROFILES_DIR)
    return sorted(p.stem for p in d.glob("*.yaml"))


def profile_path(name_or_path: str | Path, profiles_dir: Path | None = None) -> Path:
    """``profiles/<name>.yaml`` for a bare name, else the path itself; missing -> ValueError listing the names."""
    s = str(name_or_path)
    d = Path(profiles_dir or PROFILES_DIR)
    path = Path(s) if (s.endswith((".yaml", ".yml")) or "/" in s) else d / f"{s}.yaml"
    if not path.is_file():
        raise ValueError(f"profile = {s!r} not found ({path}); available profiles in {d}: {available_profiles(d)}")
    return path.resolve()


def _check_type(where: str, value: Any, tp: type) -> None:
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise ValueError(f"{where} = {value!r} has the wrong type; expected {tp.__name__}")


def load_profile(
    name_or_path: str | Path,
    *,
    profiles_dir: Path | None = None,
    notebooks_dir: Path | None = None,
    trainer_module: ModuleType | None = None,
    check_notebooks: bool = True,
) -> Profile:
    """Read and validate a profile; every error is a ValueError naming the file and the key.

    The runs are ``RunConfig``s of the trainer (``anira.train``; ``trainer_module``: another module
    with ``RunConfig``, ``config_hash`` and optionally ``check_run`` and ``inputs_fingerprint``, e.g.
    the tests' toy trainer), hashed by its ``config_hash`` and checked by its ``check_run``.

    ``check_notebooks`` (default) also requires every notebook file to exist and checks the
    profile's parameters against each notebook's ``parameters`` cell.
    """
    path = profile_path(name_or_path, profiles_dir)
    raw = path.read_bytes()
    f = str(path)
    try:
        doc = load_yaml(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"{f}: malformed YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{f}: the profile must be a mapping with keys {sorted(_TOP_KEYS)}, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"{f}: unknown key(s) {unknown}; allowed keys: {sorted(_TOP_KEYS)}")
    for key in _REQUIRED_TOP:
        if key not in doc:
            raise ValueError(f"{f}: missing required key {key!r}; required keys: {list(_REQUIRED_TOP)}")
    for key, tp in _TOP_KEYS.items():
        if key in doc and doc[key] is not None:
            _check_type(f"{f}: {key}", doc[key], tp)
    name = doc["profile"]
    if name != path.stem or not _NAME_RE.match(name):
        raise ValueError(f"{f}: profile = {name!r} must equal the file name {path.stem!r} (letters, digits, _ . -)")
    if doc["timeout_s"] <= 0:
        raise ValueError(f"{f}: timeout_s = {doc['timeout_s']!r} is out of range; allowed: [1, inf)")

    module = trainer_module or trainer
    if module is None:
        import anira.train as module
    run_cls, hash_fn = module.RunConfig, module.config_hash
    notebooks = _load_notebooks(f, doc["notebooks"], doc["timeout_s"], Path(notebooks_dir or NOTEBOOKS_DIR),
                                check_notebooks)
    sweep = doc.get("sweep") or []
    per_run = [nb for nb in notebooks if nb.per_run]
    if sweep and not per_run:
        raise ValueError(f"{f}: sweep has {len(sweep)} block(s) but no notebook has per_run: true")
    if per_run and not sweep:
        raise ValueError(f"{f}: notebook {per_run[0].name!r} has per_run: true but the sweep is empty")
    runs, n_entries = _expand_sweep(f, module, doc.get("defaults") or {}, doc.get("task_params") or {}, sweep)
    return Profile(name=name, path=path, sha256=hashlib.sha256(raw).hexdigest(), description=doc.get("description") or "",
                   timeout_s=doc["timeout_s"], notebooks=notebooks, runs=runs, trainer=module, n_entries=n_entries)


# ----------------------------------------------------------------------------------------------
# notebooks
# ----------------------------------------------------------------------------------------------
def declared_parameters(nb_path: Path) -> dict[str, str]:
    """name -> default source text of the assignments in the notebook's cell tagged ``parameters``.

    Read with ``json`` and ``ast`` (what papermill would inject into is exactly this cell); empty
    when there is no such cell.
    """
    nb = json.loads(Path(nb_path).read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return assignments(src, f"{nb_path}: the parameters cell")
    return {}


def _load_notebooks(f: str, entries: list, timeout_s: int, nb_dir: Path, check: bool) -> list[NotebookSpec]:
    if not entries:
        raise ValueError(f"{f}: notebooks is empty; list at least one notebook")
    available = sorted(p.stem for p in nb_dir.glob("*.ipynb"))
    out: list[NotebookSpec] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"{f}: notebooks[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where} = {e!r} must be a mapping with keys {sorted(_NOTEBOOK_KEYS)}")
        unknown = sorted(set(e) - set(_NOTEBOOK_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(_NOTEBOOK_KEYS)}")
        if "name" not in e:
            raise ValueError(f"{where}: missing required key 'name'")
        for key, tp in _NOTEBOOK_KEYS.items():
            if key in e and e[key] is not None:
                _check_type(f"{where}.{key}", e[key], tp)
        nb_name, params = e["name"], e.get("params") or {}
        where = f"{f}: notebooks[{i}] ({nb_name})"
        if nb_name in seen:
            raise ValueError(f"{where}: listed twice")
        seen.add(nb_name)
        nb_path = nb_dir / f"{nb_name}.ipynb"
        if check and not nb_path.is_file():
            raise ValueError(f"{where}: name = {nb_name!r}: no such notebook {nb_path}; available: {available}")
        per_run = bool(e.get("per_run", False))
        timeout = e.get("timeout_s") or timeout_s
        if timeout <= 0:
            raise ValueError(f"{where}.timeout_s = {timeout!r} is out of range; allowed: [1, inf)")
        reserved = sorted(set(params) & set(DRIVER_PARAMS))
        if reserved:
            raise ValueError(f"{where}.params: {reserved} are set by the driver; remove them from the profile")
        declared: dict[str, str] = {}
        if check:
            declared = declared_parameters(nb_path)
            if not declared:
                raise ValueError(f"{where}: {nb_path.name} has no cell tagged 'parameters'")
            for key, value in params.items():
                if key not in declared:
                    allowed = sorted(set(declared) - set(DRIVER_PARAMS))
                    raise ValueError(f"{where}.params: unknown parameter {key!r}; {nb_path.name} declares: {allowed}")
                ok, tp = literal_type_ok(value, declared[key])
                if not ok:
                    raise ValueError(f"{where}.params.{key} = {value!r} has the wrong type; expected {tp} "
                                     f"(the notebook's default is {declared[key]})")
            needed = ("run_config", "run_dir") if per_run else ("figures_dir",)
            missing = [k for k in needed if k not in declared]
            if missing:
                raise ValueError(f"{where}: {nb_path.name} must declare {missing} in its parameters cell "
                                 f"(the driver passes them{'; per_run notebook' if per_run else ''})")
        if per_run and any(nb.per_run for nb in out):
            raise ValueError(f"{where}: per_run: true is allowed on one notebook only")
        out.append(NotebookSpec(nb_name, nb_path.resolve(), dict(params), per_run, timeout, tuple(declared)))
    return out


# ----------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------
def _expand_sweep(f: str, module: ModuleType, defaults: dict, task_params: dict,
                  sweep: list) -> tuple[list[RunSpec], int]:
    run_cls, hash_fn = module.RunConfig, module.config_hash
    fields = sorted(x.name for x in dataclasses.fields(run_cls) if x.init)
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise ValueError(f"{f}: defaults: unknown key(s) {unknown} for {run_cls.__name__}; allowed keys: {fields}")
    _build(run_cls, defaults, f"{f}: defaults")
    for task, tp in task_params.items():
        if not isinstance(tp, dict):
            raise ValueError(f"{f}: task_params.{task} = {tp!r} must be a mapping of task parameters")
    # the run-config module's own input checks beyond the config (anira.train.check_run: the data)
    check_fn = getattr(module, "check_run", None)
    runs: list[RunSpec] = []
    by_hash: dict[str, RunSpec] = {}
    derived: list[tuple[str, dict, dict, dict, int]] = []
    tasks_seen: set[str] = set()
    n_entries = 0
    for b, block in enumerate(sweep):
        where = f"{f}: sweep[{b}]"
        if not isinstance(block, dict) or not block:
            raise ValueError(f"{where} = {block!r} must be a non-empty mapping of run-config field -> list of values")
        unknown = sorted(set(block) - set(fields) - {"from_run"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} for {run_cls.__name__}; allowed keys: "
                             f"{fields + ['from_run']}")
        axes = {k: v for k, v in block.items() if k != "from_run"}
        for k, v in axes.items():
            if not isinstance(v, list) or not v:
                raise ValueError(f"{where}.{k} = {v!r} must be a non-empty list of values (one run per value), "
                                 f"e.g. {k}: [{v!r}]")
        from_run = _check_from_run(where, block.get("from_run"), fields, axes)
        for combo in itertools.product(*axes.values()):
            n_entries += 1
            values = dict(zip(axes, combo))
            d = {**defaults, **values}
            task = d.get("task", getattr(run_cls, "task", None))
            tasks_seen.add(task)
            if "task_params" in fields and (task in task_params or "task_params" in d):
                d["task_params"] = {**(defaults.get("task_params") or {}), **task_params.get(task, {}),
                                    **(values.get("task_params") or {})}
            label = " ".join(f"{k}={_short(v)}" for k, v in values.items())
            if from_run:
                derived.append((f"{where} ({label})", values, d, from_run, b))
                continue
            cfg = _build(run_cls, d, f"{where} ({label})")
            _check_run(check_fn, cfg, f"{where} ({label})")
            h = hash_fn(cfg)
            if h in by_hash:
                continue  # identical config from another entry: one run
            r = RunSpec(index=len(runs), block=b, values=values, config=cfg, config_hash=h)
            by_hash[h] = r
            runs.append(r)
    unknown = sorted(set(task_params) - tasks_seen, key=str)
    if unknown:
        raise ValueError(f"{f}: task_params: {unknown} are not tasks of this sweep; allowed: "
                         f"{sorted(t for t in tasks_seen if t is not None)}")
    seen_derived: set[str] = set()
    for where, values, d, from_run, b in derived:
        matched = {k: v for k, v in {**d, **from_run["match"]}.items() if k not in from_run["set"]}
        mcfg = _build(run_cls, matched, f"{where}.from_run.match")
        mh = hash_fn(mcfg)
        if mh not in by_hash:
            raise ValueError(f"{where}.from_run.match {from_run['match']}: the matched run "
                             f"({by_label(values, from_run['match'])}) is not an independent run of this sweep")
        base = {k: v for k, v in d.items() if k not in from_run["set"]}
        try:  # everything but the fields taken from the matched run is checked now
            _check_run(check_fn, _build(run_cls, base, where), where)
        except ValueError as err:
            if not any(k in str(err) for k in from_run["set"]):
                raise
        key = repr((sorted(base.items()), mh, sorted(from_run["set"].items())))
        if key in seen_derived:
            continue
        seen_derived.add(key)
        runs.append(RunSpec(index=len(runs), block=b, values=values, config=None, config_hash=None, depends_on=mh,
                            set_from=dict(from_run["set"]), base=base))
    return runs, n_entries


def by_label(values: dict, match: dict) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in {**values, **match}.items())


def _check_from_run(where: str, fr: Any, fields: list[str], axes: dict) -> dict | None:
    if fr is None:
        return None
    w = f"{where}.from_run"
    if not isinstance(fr, dict) or set(fr) != set(_FROM_RUN_KEYS):
        raise ValueError(f"{w} = {fr!r} must be a mapping with exactly the keys {list(_FROM_RUN_KEYS)}")
    for key in _FROM_RUN_KEYS:
        if not isinstance(fr[key], dict) or not fr[key]:
            raise ValueError(f"{w}.{key} = {fr[key]!r} must be a non-empty mapping")
        unknown = sorted(set(fr[key]) - set(fields))
        if unknown:
            raise ValueError(f"{w}.{key}: unknown key(s) {unknown}; allowed keys: {fields}")
    for k, v in fr["set"].items():
        if not isinstance(v, str) or not v:
            raise ValueError(f"{w}.set.{k} = {v!r} must be a dotted key of the matched run's summary.json, "
                             f"e.g. 'in.mean_depth'")
        if k in axes:
            raise ValueError(f"{w}.set.{k}: {k!r} is also a sweep axis of this block; it can only come from one")
    return fr


def resolve_derived(profile: Profile, run: RunSpec, summary: dict[str, Any]) -> Any:
    """The config of a ``from_run`` run once the matched run's ``summary`` is known."""
    d = dict(run.base)
    for k, dotted in run.set_from.items():
        v: Any = summary
        for part in dotted.split("."):
            if not isinstance(v, dict) or part not in v:
                raise ValueError(f"from_run.set.{k}: the summary of run {run.depends_on} has no key {dotted!r}")
            v = v[part]
        d[k] = v
    return profile.build_config(d, where=f"{profile.path}: sweep[{run.block}] ({run.label()})")


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg)
