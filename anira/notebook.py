"""The notebooks' parameters: what papermill may inject into them, checked inside the kernel.

papermill runs a notebook's cell tagged ``parameters``, then the cell it injects after it (the
values given with ``-p`` / ``-y`` or by the study driver), then the rest. It injects *every* name
it is given, declared or not, and only warns about the unknown ones, so a misspelt parameter would
silently leave its default in force. Each notebook therefore calls ``check_parameters`` first in
the cell after its parameters cell: an injected name the parameters cell does not declare, or a
value whose type differs from the declared default's, stops the notebook before any work.

Without injection (nbval, JupyterLab, a notebook run top to bottom) there is nothing to check.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, NamedTuple

PAPERMILL_MARKER = "# Parameters"  # first line of the cell papermill injects
PAPERMILL_NAMES = ("PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH")  # what `papermill --inject-paths` adds
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def check_profile(notebook: str, profile: Any, figures_dir: Any = None) -> None:
    """ValueError unless ``profile`` names a profile of ``profiles/`` or the folder ``figures_dir``
    writes to (the driver passes ``figures_dir = <figures root>/<profile>``, also for a profile file
    kept elsewhere): a misspelt ``-p profile smok`` would otherwise be written into every sidecar."""
    folder = Path(str(figures_dir)).name if figures_dir else None
    if profile in known_profiles() or (folder and profile == folder):
        return
    allowed = known_profiles() + ([folder] if folder and folder not in known_profiles() else [])
    raise ValueError(f"{notebook}: parameter profile = {profile!r} is not a profile; allowed values: {allowed} "
                     f"(profiles/*.yaml, or the name of the figures_dir folder)")


def assignments(src: str, where: str = "") -> dict[str, str]:
    """name -> source text of the value, for the top-level ``name = value`` statements of ``src``."""
    try:
        tree = ast.parse(src)
    except SyntaxError as err:
        raise ValueError(f"{where or 'the cell'} is not valid Python: {err}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None)
        if isinstance(target, ast.Name):
            out[target.id] = ast.get_source_segment(src, node.value) or ""
    return out


def literal_type_ok(value: Any, default_src: str) -> tuple[bool, str]:
    """(does ``value`` have the type of the literal ``default_src``, that type's name); a default
    of None or one that is not a literal accepts anything."""
    try:
        default = ast.literal_eval(default_src)
    except (ValueError, SyntaxError):
        return True, "any"
    if default is None:
        return True, "any"
    if isinstance(default, bool):
        return isinstance(value, bool), "bool"
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), "int"
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool), "float"
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)), "list"
    return isinstance(value, type(default)), type(default).__name__


def check_injected(notebook: str, declared: dict[str, str], injected: dict[str, Any], hint: str = "") -> None:
    """ValueError for an ``injected`` name (-> value) that ``declared`` (name -> default source)
    lacks, or whose value has another type than its default."""
    unknown = sorted(set(injected) - set(declared) - set(PAPERMILL_NAMES))
    if unknown:
        raise ValueError(f"{notebook}: unknown parameter(s) {unknown}; the notebook's parameters: "
                         f"{sorted(declared)}{hint}")
    for name, value in injected.items():
        if name not in declared:
            continue
        ok, tp = literal_type_ok(value, declared[name])
        if not ok:
            default = declared[name] if len(declared[name]) <= 40 else declared[name][:37] + "..."
            raise ValueError(f"{notebook}: parameter {name} = {value!r} has the wrong type; expected {tp} "
                             f"(the notebook's default is {default})")


def check_parameters(notebook: str, hint: str = "") -> None:
    """Refuse what papermill injected into the running notebook that its parameters cell does not
    declare (see the module docstring). Call it first in the cell right after the parameters cell;
    ``notebook`` names the notebook in the message, ``hint`` is appended to the unknown-name one.

    papermill executes the parameters cell, the injected cell and this cell one after the other, so
    they are the last three entries of the kernel's input history; when the entry before this cell
    is not papermill's injected cell, nothing was injected and nothing is checked.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        return
    ip = get_ipython()
    if ip is None:
        return
    history = list(ip.history_manager.input_hist_raw)
    if len(history) < 3 or not history[-2].lstrip().startswith(PAPERMILL_MARKER):
        return
    declared = assignments(history[-3], f"{notebook}: the parameters cell")
    names = assignments(history[-2], f"{notebook}: the injected parameters")
    check_injected(notebook, declared, {k: ip.user_ns.get(k) for k in names}, hint)
    if "profile" in declared:
        check_profile(notebook, ip.user_ns.get("profile"), ip.user_ns.get("figures_dir"))


class Study(NamedTuple):
    """What the analysis notebooks 03-07 start from (``open_study``)."""

    run_dirs: list[Path]  # the finished runs analysed
    beta: float | None  # the compute penalty of the early/online/random runs analysed (None: every beta)
    records: Any  # per-token records (pandas DataFrame), beta := NaN for fixed and oracle
    summaries: Any  # one row per run (pandas DataFrame)
    boot: Any  # anira.analysis.BootstrapConfig, or None when the notebook bootstraps nothing
    figs: Path  # figures_dir
    prov: dict[str, Any]  # provenance of every figure and table the notebook writes


EVERY_BETA = "every"


def open_study(notebook: str, profile: str, figures_dir: str, runs_dir: str | None, run_dirs: list | None, *,
               beta: float | str | None = EVERY_BETA, n_boot: int | None = None, boot_seed: int = 0,
               **provenance: Any) -> Study:
    """The shared first step of the analysis notebooks: the finished runs (``anira.analysis.
    resolve_run_dirs``), for one ``beta`` of the early/online/random runs (None: the most common;
    EVERY_BETA: all of them, no selection), their records and summaries, the bootstrap settings
    (when ``n_boot`` is given), the figures folder and the provenance (``notebook``, the beta and
    n_boot when selected, then ``provenance``); prints what is analysed and shows the run table."""
    from anira import analysis as A
    from anira import plotting as P

    P.setup_style()
    run_dirs = A.resolve_run_dirs(runs_dir, run_dirs)  # finished runs only; none -> error naming the parameter
    if beta == EVERY_BETA:
        records, summaries = A.load_study(run_dirs)
        beta, label, selected = None, "every beta", {}
    else:
        run_dirs, beta = A.runs_of_beta(run_dirs, beta)  # one beta for early/online/random; fixed and oracle kept
        records, summaries = A.load_study(run_dirs)
        records, _ = A.select_beta(records, beta)  # beta := NaN for fixed and oracle (no compute penalty)
        label, selected = f"beta = {beta}", {"beta": beta, "n_boot": n_boot}
    boot = A.BootstrapConfig(n_boot=n_boot, seed=boot_seed) if n_boot is not None else None  # validates n_boot
    prov = P.make_provenance(profile, records["run_id"], notebook=notebook, **selected, **provenance)
    print(f"analysing {len(run_dirs)} finished runs ({label})")
    try:
        from IPython.display import display

        display(A.run_table(records))
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        print(A.run_table(records))
    return Study(run_dirs, beta, records, summaries, boot, Path(figures_dir), prov)
