"""The study driver: profile validation, sweep expansion, run cache, resume, executors, end to end.

Toy notebooks (tests/notebooks/toy_*.ipynb) and a toy trainer (tests/notebooks/toy_lib.py) stand in
for the real ones; every notebook really executes through papermill and a Jupyter kernel.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import torch
import pytest

NB_DIR = Path(__file__).parent / "notebooks"
ROOT = Path(__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(NB_DIR))

import toy_lib  # noqa: E402

from anira.pipeline import driver as driver_mod  # noqa: E402
from anira.pipeline import profile as profile_mod  # noqa: E402
from anira.pipeline import (ExecutorOptions, Layout, RunJob, RunLock, StudyError, execute_run,  # noqa: E402
                            load_profile, run_state, run_study)
from anira.study import main as study_main  # noqa: E402

TOY_NOTEBOOKS = """\
notebooks:
  - {name: toy_tasks, params: {n_examples: 3}}
  - {name: toy_train, per_run: true}
  - {name: toy_analysis}
"""


def write_profile(d: Path, name: str, body: str) -> Path:
    (d / "profiles").mkdir(parents=True, exist_ok=True)
    path = d / "profiles" / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def load(path: Path, **kw):
    return load_profile(path, notebooks_dir=NB_DIR, trainer_module=toy_lib, **kw)


def study(path: Path, root: Path, **kw):
    return run_study(load(path), runs_root=root / "runs", figures_root=root / "figures", **kw)


def count_notebooks(monkeypatch) -> list[str]:
    """The names of the notebooks the driver executes from now on, in order."""
    calls: list[str] = []
    real = driver_mod.execute_notebook

    def counting(nb_path, *a, **kw):
        calls.append(Path(nb_path).stem)
        return real(nb_path, *a, **kw)

    monkeypatch.setattr(driver_mod, "execute_notebook", counting)
    monkeypatch.setattr("anira.pipeline.runs.execute_notebook", counting)
    return calls


def attempts(run_dir: Path) -> list[tuple[int, int]]:
    p = run_dir / "attempts.log"
    return [tuple(map(int, l.split())) for l in p.read_text().splitlines()] if p.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


def stream_text(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(o.get("text", "") + f"{o.get('ename', '')}: {o.get('evalue', '')}\n" for o in outs)


# ------------------------------------------------------------------------------------------------
# validation (nothing executes)
# ------------------------------------------------------------------------------------------------
GOOD = """\
profile: NAME
timeout_s: 60
defaults: {steps: 3}
sweep:
  - {task: [hops], mechanism: [online], seed: [0]}
""" + TOY_NOTEBOOKS

BAD_CASES = {
    "malformed": ("profile: [bad\n", ["malformed YAML"]),
    "not_mapping": ("- a\n- b\n", ["must be a mapping"]),
    "missing_key": ("profile: NAME\nnotebooks: []\n", ["missing required key 'timeout_s'"]),
    "unknown_top": (GOOD + "sweeps: []\n", ["unknown key(s) ['sweeps']", "allowed keys", "'sweep'"]),
    "top_type": (GOOD.replace("timeout_s: 60", "timeout_s: ten"), ["timeout_s = 'ten'", "expected int"]),
    "name_mismatch": (GOOD.replace("profile: NAME", "profile: other"), ["profile = 'other'", "file name"]),
    "defaults_key": (GOOD.replace("{steps: 3}", "{stepz: 3}"), ["defaults", "['stepz']", "allowed keys", "'steps'"]),
    "defaults_type": (GOOD.replace("{steps: 3}", "{steps: 2.5}"), ["defaults", "steps = 2.5", "expected int"]),
    "sweep_key": (GOOD.replace("mechanism: [online]", "mechanizm: [online]"), ["sweep[0]", "['mechanizm']", "'mechanism'"]),
    "unknown_task": (GOOD.replace("task: [hops]", "task: [hopz]"), ["sweep[0]", "task = 'hopz'", "'hops'", "'toposort'"]),
    "unknown_mechanism": (GOOD.replace("[online]", "[onlin]"), ["sweep[0]", "mechanism = 'onlin'", "'online'", "'early'"]),
    "sweep_type": (GOOD.replace("seed: [0]", "seed: ['0']"), ["sweep[0]", "seed = '0'", "expected int"]),
    "sweep_scalar": (GOOD.replace("seed: [0]", "seed: 0"), ["sweep[0].seed = 0", "non-empty list"]),
    "notebook_missing": (GOOD.replace("toy_analysis}", "toy_analysys}"), ["no such notebook", "toy_analysys", "toy_analysis"]),
    "notebook_key": (GOOD.replace("per_run: true", "per_rn: true"), ["notebooks[1]", "['per_rn']", "'per_run'"]),
    "nb_param": (GOOD.replace("n_examples: 3", "n_exampels: 3"), ["toy_tasks", "'n_exampels'", "n_examples", "title"]),
    "nb_param_type": (GOOD.replace("n_examples: 3", "n_examples: three"), ["n_examples = 'three'", "expected int"]),
    "nb_reserved": (GOOD.replace("n_examples: 3", "figures_dir: /tmp/x"), ["['figures_dir']", "set by the driver"]),
    "no_per_run": (GOOD.replace("  - {name: toy_train, per_run: true}\n", ""), ["no notebook has per_run"]),
    "per_run_params": (GOOD.replace(", per_run: true", ""), ["toy_train", "must declare ['figures_dir']"]),
    "task_params": (GOOD + "task_params: {toposort: {max_nodes: 4}}\n", ["task_params", "['toposort']", "allowed: ['hops']"]),
    "from_run": (GOOD.replace("  - {task: [hops]", "  - {task: [hops], mechanism: [random], seed: [0], from_run: "
                              "{match: {mechanism: early}, set: {random_mean_depth: in.mean_depth}}}\n  - {task: [hops]"),
                 ["sweep[0]", "from_run.match", "not an independent run"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_profile_errors_name_file_key_and_allowed(tmp_path, case):
    body, expected = BAD_CASES[case]
    path = write_profile(tmp_path, "bad", body.replace("NAME", "bad"))
    with pytest.raises(ValueError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for part in expected:
        assert part in msg, f"{case}: {part!r} not in {msg!r}"


def test_unknown_profile_lists_available(tmp_path):
    write_profile(tmp_path, "alpha", GOOD.replace("NAME", "alpha"))
    write_profile(tmp_path, "beta", GOOD.replace("NAME", "beta"))
    with pytest.raises(ValueError, match=r"'gamma' not found.*\['alpha', 'beta'\]"):
        load_profile("gamma", profiles_dir=tmp_path / "profiles", notebooks_dir=NB_DIR, trainer_module=toy_lib)
    assert load_profile("beta", profiles_dir=tmp_path / "profiles", notebooks_dir=NB_DIR,
                        trainer_module=toy_lib).name == "beta"


def test_cli_bad_input_exits_2_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(profile_mod, "trainer", toy_lib)  # the CLI loads profiles with the toy trainer
    path = write_profile(tmp_path, "bad", GOOD.replace("NAME", "bad").replace("[online]", "[onlin]"))
    args = ["--profile", str(path), "--notebooks-dir", str(NB_DIR), "--runs-root", str(tmp_path / "runs"),
            "--figures-root", str(tmp_path / "figures")]
    assert study_main(args) == 2
    assert "mechanism = 'onlin'" in capsys.readouterr().err
    good = write_profile(tmp_path, "good", GOOD.replace("NAME", "good"))
    assert study_main([*args[:1], str(good), *args[2:], "--workers", "2"]) == 2  # sequential + workers
    assert "workers" in capsys.readouterr().err
    assert study_main([*args[:1], str(good), *args[2:], "--only-notebooks", "toy_nothing"]) == 2
    assert "toy_nothing" in capsys.readouterr().err
    assert study_main([*args[:1], str(good), *args[2:], "--only-notebooks", "toy_analysis"]) == 2
    assert "need every run finished; 1 of 1 are not" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "figures").exists()


# ------------------------------------------------------------------------------------------------
# sweep expansion and hashing
# ------------------------------------------------------------------------------------------------
SWEEP = """\
profile: NAME
timeout_s: 60
defaults: {steps: STEPS}
task_params:
  toposort: {max_nodes: 6}
sweep:
  - {task: [hops, toposort], mechanism: [early, online], seed: [0, 1, 2], beta: [0.01]}
  - {task: [hops], mechanism: [fixed], fixed_depth: [1, 3, 6], seed: [0]}
  - {task: [hops], mechanism: [online], seed: [0], beta: [0.01]}   # duplicate of block 0
  - task: [hops]
    mechanism: [random]
    seed: [0, 1]
    from_run:
      match: {mechanism: online}
      set: {random_mean_depth: in.mean_depth}
""" + TOY_NOTEBOOKS


def sweep_profile(steps: int) -> str:
    return SWEEP.replace("NAME", "s").replace("STEPS", str(steps))


def test_sweep_expansion_count_and_configs(tmp_path):
    p = load(write_profile(tmp_path, "s", sweep_profile(3)))
    assert p.n_entries == 2 * 2 * 3 + 3 + 1 + 2
    assert len(p.runs) == 2 * 2 * 3 + 3 + 2  # the duplicate is merged
    independent = [r for r in p.runs if r.depends_on is None]
    assert len({r.config_hash for r in independent}) == len(independent) == 15
    by_task = {r.config.task: r.config.task_params for r in independent}
    assert by_task == {"hops": {}, "toposort": {"max_nodes": 6}}
    assert all(r.config.steps == 3 for r in independent)
    fixed = [r.config.fixed_depth for r in independent if r.config.mechanism == "fixed"]
    assert fixed == [1, 3, 6]
    # the matched controls point at the online hops run of their seed
    online = {(r.config.seed): r.config_hash for r in independent if r.config.mechanism == "online" and r.config.task == "hops"}
    assert [r.depends_on for r in p.runs if r.depends_on] == [online[0], online[1]]


def test_hash_stable_matches_trainer_and_changes_with_parameters(tmp_path):
    a = load(write_profile(tmp_path / "a", "s", sweep_profile(3)))
    a2 = load(write_profile(tmp_path / "a2", "s", sweep_profile(3)))
    b = load(write_profile(tmp_path / "b", "s", sweep_profile(4)))
    ha = [r.config_hash for r in a.runs if r.config_hash]
    assert ha == [r.config_hash for r in a2.runs if r.config_hash]  # stable across loads
    ref = toy_lib.ToyConfig(task="toposort", task_params={"max_nodes": 6}, mechanism="early", seed=2, beta=0.01, steps=3)
    assert toy_lib.config_hash(ref) in ha  # the trainer's own hash of an independently built config
    hb = [r.config_hash for r in b.runs if r.config_hash]
    assert len(hb) == len(ha) and not set(ha) & set(hb)  # one changed default -> every hash changes
    # an unhashed field does not change the hash; a new seed adds exactly one new hash
    c = load(write_profile(tmp_path / "c", "s", sweep_profile(3).replace(
        "{steps: 3}", "{steps: 3, num_threads: 4}").replace("seed: [0, 1, 2]", "seed: [0, 1, 2, 7]")))
    hc = [r.config_hash for r in c.runs if r.config_hash]
    assert set(ha) <= set(hc) and len(set(hc) - set(ha)) == 4


@pytest.mark.parametrize("name", ["smoke", "cpu3", "full"])
def test_shipped_profiles_validate_with_the_real_trainer(name):
    nb_dir = REPO / "notebooks"
    check = all((nb_dir / f"{nb}.ipynb").exists() for nb in ("01_tasks", "02_train"))
    p = load_profile(name, check_notebooks=check)
    assert p.name == name and p.runs and p.per_run_notebook is not None
    mechs = {r.config.mechanism for r in p.runs if r.config is not None}
    assert {"early", "online", "fixed"} <= mechs


@pytest.mark.parametrize("name", ["cpu3", "full"])
def test_study_profiles_carry_each_tasks_measured_recipe(name):
    """Every early, online, oracle and random run of the cpu3 and full profiles has its task's
    ``adaptive_recipe`` (the controls differ from online only in the decision); fixed-depth runs
    have none of it (nothing halts). The cpu3 profile also has each ``Task.recipe`` on every run;
    the full profile too, except that it trains longer and with larger batches than any recipe."""
    import dataclasses
    import types

    from anira.tasks import make_task
    from anira.train import RunConfig

    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    specs = load_profile(name, check_notebooks=False).runs
    # a random run waits for its matched online run: its config before `random_mean_depth` is `base`
    runs = [r.config if r.config is not None else types.SimpleNamespace(**{**defaults, **r.base}) for r in specs]
    assert {c.task for c in runs} >= {"hops", "addition", "toposort"}
    assert {c.mechanism for c in runs} == {"early", "online", "oracle", "random", "fixed"}
    for cfg in runs:
        task = make_task(cfg.task)
        adaptive = cfg.mechanism in ("early", "online", "oracle", "random")
        for key, value in task.adaptive_recipe.items():
            assert getattr(cfg, key) == (value if adaptive else defaults[key]), (cfg.task, cfg.mechanism, key)
        for key, value in task.recipe.items():
            if name == "cpu3":
                assert getattr(cfg, key) == value, (cfg.task, cfg.mechanism, key)
            elif key in ("steps", "batch_size"):  # paper scale: longer, and larger batches
                assert getattr(cfg, key) > value, (cfg.task, key)
            else:
                assert getattr(cfg, key) == value, (cfg.task, cfg.mechanism, key)
    assert any(make_task(c.task).adaptive_recipe for c in runs)


# ------------------------------------------------------------------------------------------------
# lock
# ------------------------------------------------------------------------------------------------
def test_lock_makes_a_second_worker_wait_then_reuse_the_result(tmp_path):
    run_dir = tmp_path / "runs" / "abc"
    job = RunJob("abc", "toy", NB_DIR / "toy_train.ipynb", tmp_path / "executed.ipynb", run_dir,
                 {"run_dir": str(run_dir), "run_config": {}}, 60)
    results = []
    with RunLock(run_dir / ".lock"):
        t = threading.Thread(target=lambda: results.append(execute_run(job)))
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not results  # blocked on the lock
        (run_dir / "summary.json").write_text(json.dumps({"config_hash": "abc"}))  # the holder finishes
    t.join(timeout=10)
    assert [r.status for r in results] == ["cached"]
    assert not (tmp_path / "executed.ipynb").exists()  # never executed


def test_notebook_that_writes_no_summary_is_a_failed_run(tmp_path):
    run_dir = tmp_path / "runs" / "abc"
    job = RunJob("abc", "toy", NB_DIR / "toy_noop.ipynb", tmp_path / "executed.ipynb", run_dir,
                 {"run_dir": str(run_dir), "run_config": {}}, 60)
    res = execute_run(job)
    assert res.status == "failed" and "wrote no" in res.error
    assert "nothing trained" in stream_text(tmp_path / "executed.ipynb")


# ------------------------------------------------------------------------------------------------
# the driver, end to end
# ------------------------------------------------------------------------------------------------
E2E = """\
profile: e2e
timeout_s: 60
defaults: {steps: 4}
sweep:
  - {task: [hops, toposort], mechanism: [online], seed: [0]}
  - {task: [hops], mechanism: [fixed], fixed_depth: [2], seed: [0], crash_once_at: [2]}
  - task: [hops]
    mechanism: [random]
    seed: [0]
    from_run:
      match: {mechanism: online}
      set: {random_mean_depth: in.mean_depth}
""" + TOY_NOTEBOOKS


def test_driver_end_to_end_failure_resume_and_cache(tmp_path, monkeypatch):
    path = write_profile(tmp_path, "e2e", E2E)
    calls = count_notebooks(monkeypatch)
    layout = Layout("e2e", tmp_path / "runs", tmp_path / "figures")
    prof = load(path)
    hashes = [r.config_hash for r in prof.runs if r.config_hash]
    crashing = next(r.config_hash for r in prof.runs if r.config is not None and r.config.crash_once_at)

    # 1) one run crashes after its step-2 checkpoint: the others finish, the analysis does not run
    with pytest.raises(StudyError, match=rf"1 of 4 runs did not finish(.|\n)*{crashing}(.|\n)*simulated crash"):
        study(path, tmp_path)
    assert calls == ["toy_tasks", "toy_train", "toy_train", "toy_train", "toy_train"]
    man = json.loads(layout.manifest.read_text())
    assert man["status"] == "failed"
    status = {r["config_hash"]: r["status"] for r in man["runs"] if r["config_hash"]}
    assert status[crashing] == "failed" and sum(s == "done" for s in status.values()) == 3
    assert json.loads((layout.run_dir(crashing) / "checkpoint.json").read_text())["step"] == 2
    assert "simulated crash" in stream_text(layout.executed("toy_train", crashing))
    assert not (layout.figures_dir / "table.csv").exists()

    # 2) rerun: only the crashed run executes, resumes from its checkpoint, then the analysis runs
    calls.clear()
    man = study(path, tmp_path)
    assert calls == ["toy_tasks", "toy_train", "toy_analysis"]
    summary = json.loads((layout.run_dir(crashing) / "summary.json").read_text())
    assert summary["config_hash"] == crashing and summary["resumed_from"] == 2
    assert len(attempts(layout.run_dir(crashing))) == 2
    assert man["status"] == "complete" and all(r["status"] == "done" for r in man["runs"])
    assert {r["config_hash"] for r in man["runs"]} >= set(hashes) and len(man["runs"]) == 4
    for r in man["runs"]:  # every run: its summary, its executed notebook with outputs and parameters
        h = r["config_hash"]
        assert json.loads((layout.run_dir(h) / "summary.json").read_text())["config_hash"] == h
        nb = layout.executed("toy_train", h)
        assert f"summary {h}" in stream_text(nb)
        injected = nbformat.read(nb, as_version=4).metadata.papermill.parameters
        assert injected["config_hash"] == h and injected["run_dir"] == str(layout.run_dir(h))
        assert r["wall_time_s"] is not None and r["seed"] == 0
    random_run = next(r for r in man["runs"] if r["mechanism"] == "random")
    cfg = nbformat.read(layout.executed("toy_train", random_run["config_hash"]), as_version=4).metadata.papermill.parameters
    online = json.loads((layout.run_dir(hashes[0]) / "summary.json").read_text())
    assert cfg["run_config"]["random_mean_depth"] == online["in"]["mean_depth"] == 2.5
    table = (layout.figures_dir / "table.csv").read_text().splitlines()
    assert len(table) == 1 + 4 and "runs 4" in stream_text(layout.executed("toy_analysis"))
    assert "3" in (layout.figures_dir / "tasks.txt").read_text()  # the profile's n_examples reached the notebook
    assert man["profile_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert man["versions"]["papermill"] and "commit" in man["git"]
    assert json.loads((layout.figures_dir / "manifest.json").read_text()) == man

    # 3) third invocation: every run is cached, nothing executes, no file is rewritten
    calls.clear()
    mtimes = {p: p.stat().st_mtime_ns for p in layout.base.rglob("*") if p.is_file() and p.name != "manifest.json"}
    man = study(path, tmp_path, only_notebooks=["toy_train"])
    assert calls == [] and man["status"] == "complete"
    assert [(n["name"], n["status"]) for n in man["notebooks"]] == [
        ("toy_tasks", "done"), ("toy_train", "done"), ("toy_analysis", "done")]  # kept from the last full run
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # 4) the data a cached run was scored on changed: the plan refuses to reuse it, naming it
    monkeypatch.setattr(toy_lib, "INPUTS", "toy-data-v2")
    with pytest.raises(ValueError, match=r"cached run .*evaluated on other data(.|\n)*delete that directory"):
        study(path, tmp_path, dry_run=True)
    monkeypatch.setattr(toy_lib, "INPUTS", "toy-data-v1")

    # 5) export the light results, then redraw the analysis from the export alone: no run trains
    from anira.pipeline.export import export_results

    stale = layout.runs_dir / "0123456789abcdef"  # a finished run of an older version of the profile
    stale.mkdir()
    (stale / "summary.json").write_text("{}")
    (layout.executed_dir / "toy_train" / f"{stale.name}.ipynb").write_text("{}")
    dest = export_results(layout, tmp_path / "export")
    assert not (dest / "executed" / "toy_train" / f"{stale.name}.ipynb").exists()
    assert len(list((dest / "executed" / "toy_train").iterdir())) == len(man["runs"])
    assert sorted(p.name for p in (dest / "runs").iterdir()) == sorted(r["config_hash"] for r in man["runs"])
    assert all((dest / "runs" / h / "summary.json").is_file() and not (dest / "runs" / h / "checkpoint.json").exists()
               for h in hashes)
    assert json.loads((dest / "manifest.json").read_text())["status"] == "complete"
    assert (dest / "executed" / "toy_analysis.ipynb").is_file()
    calls.clear()
    man2 = run_study(load(path), runs_root=tmp_path / "export", figures_root=tmp_path / "redrawn")
    assert calls == ["toy_tasks", "toy_analysis"] and man2["status"] == "complete"
    assert (tmp_path / "redrawn" / "e2e" / "table.csv").read_text() == (layout.figures_dir / "table.csv").read_text()
    with pytest.raises(ValueError, match="no finished runs"):
        export_results(Layout("empty", tmp_path / "nothing", tmp_path / "figures"), tmp_path / "export")


ORDER = """\
profile: order
timeout_s: 60
defaults: {steps: 2}
sweep:
  - {task: [hops], mechanism: [online], seed: [0]}
  - task: [hops]
    mechanism: [random]
    seed: [0]
    from_run:
      match: {mechanism: online}
      set: {random_mean_depth: in.mean_depth}
  - {task: [toposort], mechanism: [online, early], seed: [0]}
notebooks:
  - {name: toy_train, per_run: true}
"""


def test_a_matched_run_starts_as_soon_as_its_run_has_finished(tmp_path, monkeypatch):
    """The random run comes second in the profile: it starts right after the online run it is
    matched to, before the runs after it in the profile (not in a second wave after all of them)."""
    path = write_profile(tmp_path, "order", ORDER)
    started: list[str] = []
    real = driver_mod.execute_run

    def spy(job):
        started.append(job.label)
        return real(job)

    monkeypatch.setattr(driver_mod, "execute_run", spy)
    man = study(path, tmp_path)
    assert [label.split(" seed")[0] for label in started] == [
        "task=hops mechanism=online", "task=hops mechanism=random", "task=toposort mechanism=online",
        "task=toposort mechanism=early"]
    assert man["status"] == "complete" and all(r["status"] == "done" for r in man["runs"])


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(profile_mod, "trainer", toy_lib)  # the CLI loads profiles with the toy trainer
    path = write_profile(tmp_path, "e2e", E2E)
    args = ["--profile", str(path), "--notebooks-dir", str(NB_DIR), "--runs-root", str(tmp_path / "runs"),
            "--figures-root", str(tmp_path / "figures"), "--dry-run"]
    assert study_main(args) == 0
    out = capsys.readouterr().out
    prof = load(path)
    for r in prof.runs:
        if r.config_hash:
            assert f"{r.config_hash}  new" in out
    assert "4 (0 done/cached, 0 partial (resume), 3 new, 1 waiting" in out
    assert not (tmp_path / "runs").exists()


PAR = """\
profile: par
timeout_s: 60
defaults: {steps: 2, step_sleep_s: 0.2}
sweep:
  - {task: [hops, toposort], mechanism: [online], seed: [0]}
notebooks:
  - {name: toy_train, per_run: true}
"""


@pytest.mark.parametrize("kind", ["local", "submitit-local"])
def test_parallel_executors_run_every_run_in_worker_processes(tmp_path, kind):
    path = write_profile(tmp_path, "par", PAR)
    man = study(path, tmp_path, executor=ExecutorOptions(kind=kind, workers=2))
    layout = Layout("par", tmp_path / "runs", tmp_path / "figures")
    assert man["status"] == "complete" and man["executor"] == kind
    parents = set()
    for r in man["runs"]:
        assert r["status"] == "done"
        (kernel, parent), = attempts(layout.run_dir(r["config_hash"]))
        parents.add(parent)
    assert os.getpid() not in parents and len(parents) == 2  # two worker processes ran the kernels
    if kind == "submitit-local":
        assert list((layout.base / "submitit").rglob("*_result.pkl"))


KILL = """\
profile: kill
timeout_s: 60
defaults: {steps: 40, step_sleep_s: 0.1}
sweep:
  - {task: [hops], mechanism: [online], seed: [0]}
notebooks:
  - {name: toy_train, per_run: true}
"""


def toy_study_main(argv: list[str]) -> int:
    """The study CLI with the toy trainer, for a driver started in a fresh process."""
    profile_mod.trainer = toy_lib
    return study_main(argv)


@pytest.mark.parametrize("executor", ["sequential", "local"])
def test_killing_the_driver_loses_only_the_current_step(tmp_path, executor, monkeypatch):
    """SIGKILL the driver mid-run: its workers and kernel exit too (no orphan keeps executing an old
    plan), and the next invocation resumes the run.

    The driver is the CLI ``main`` in a child process started by the fork server (which already
    imported papermill, so the test does not pay for a fresh interpreter's imports)."""
    monkeypatch.setattr(profile_mod, "trainer", toy_lib)  # the CLI loads profiles with the toy trainer
    path = write_profile(tmp_path, "kill", KILL)
    layout = Layout("kill", tmp_path / "runs", tmp_path / "figures")
    argv = ["--profile", str(path), "--notebooks-dir", str(NB_DIR), "--runs-root", str(tmp_path / "runs"),
            "--figures-root", str(tmp_path / "figures"), "--executor", executor]
    argv += ["--workers", "1"] if executor == "local" else []
    h = load(path).runs[0].config_hash
    ckpt = layout.run_dir(h) / "checkpoint.json"
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["anira.pipeline.runs", "papermill"])
    proc = ctx.Process(target=toy_study_main, args=(argv,))
    proc.start()
    try:
        deadline = time.time() + 60
        while not (ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 2):
            assert time.time() < deadline and proc.is_alive(), "the run never started"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    (kernel, parent), = attempts(layout.run_dir(h))
    assert (parent == proc.pid) == (executor == "sequential")  # local: the kernel's parent is a worker
    deadline = time.time() + 15  # the worker sees the driver gone; the kernel sees its parent gone
    while alive(kernel) or alive(parent):
        assert time.time() < deadline, "a worker or kernel outlived the driver"
        time.sleep(0.1)
    step = json.loads(ckpt.read_text())["step"]
    assert 2 <= step < 40
    assert json.loads(layout.manifest.read_text())["status"] == "running"  # killed: no chance to say more

    man = study(path, tmp_path)
    summary = json.loads((layout.run_dir(h) / "summary.json").read_text())
    assert summary["config_hash"] == h and summary["resumed_from"] == step
    assert man["status"] == "complete" and len(attempts(layout.run_dir(h))) == 2


# ------------------------------------------------------------------------------------------------
# notebook selection, the summary line, the manifest's sessions, a redraw from exported results
# ------------------------------------------------------------------------------------------------
def test_only_notebooks_takes_numbers_with_or_without_the_leading_zero():
    prof = load_profile("cpu3")
    names = [nb.name for nb in driver_mod.select_notebooks(prof, ["3", "07"])]
    assert names == ["03_alignment", "07_claims"]
    assert [nb.name for nb in driver_mod.select_notebooks(prof, ["04_generalization", "4"])] == ["04_generalization"]
    with pytest.raises(ValueError, match=r"only_notebooks: '9' matches 0 notebooks of profile 'cpu3'; allowed: "):
        driver_mod.select_notebooks(prof, ["9"])


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_sessions_summary_and_a_redraw_that_writes_nothing_into_the_results(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(profile_mod, "trainer", toy_lib)  # the CLI loads profiles with the toy trainer
    path = write_profile(tmp_path, "good", GOOD.replace("NAME", "good"))
    common = ["--profile", str(path), "--notebooks-dir", str(NB_DIR),
              "--figures-root", str(tmp_path / "figures")]
    runs = ["--runs-root", str(tmp_path / "runs")]
    assert study_main(common + runs) == 0
    assert "1 runs finished, 3 notebooks executed (toy_tasks, toy_train, toy_analysis)" in capsys.readouterr().out
    assert study_main(common + runs + ["--only-notebooks", "toy_analysis"]) == 0
    assert "1 runs finished, 1 notebooks executed (toy_analysis)" in capsys.readouterr().out

    layout = Layout("good", tmp_path / "runs", tmp_path / "figures")
    man = json.loads(layout.manifest.read_text())
    first, second = man["sessions"]  # the session that trained the run is kept after the rerun of one notebook
    h = man["runs"][0]["config_hash"]
    assert first["runs_trained"] == [h] and [n["name"] for n in first["notebooks"]] == ["toy_tasks", "toy_train",
                                                                                         "toy_analysis"]
    assert second["runs_trained"] == [] and [n["name"] for n in second["notebooks"]] == ["toy_analysis"]
    assert man["argv"] == second["argv"] and not any(a.startswith(str(ROOT)) for a in second["argv"])

    assert study_main(common + runs + ["--export-to", str(tmp_path / "results")]) == 0
    results, figures_manifest = _tree(tmp_path / "results"), (layout.figures_dir / "manifest.json").read_bytes()
    capsys.readouterr()
    assert study_main(common + ["--results-from", str(tmp_path / "results"), "--runs-root", str(tmp_path / "redraw"),
                                "--only-notebooks", "toy_analysis"]) == 0
    assert "1 notebooks executed (toy_analysis)" in capsys.readouterr().out
    assert _tree(tmp_path / "results") == results  # the results read are never rewritten
    assert (layout.figures_dir / "manifest.json").read_bytes() == figures_manifest  # still the study's record
    redraw = json.loads((tmp_path / "redraw" / "good" / "manifest.json").read_text())
    assert redraw["sessions"][-1]["results_root"] == str(tmp_path / "results")
    params = nbformat.read(tmp_path / "redraw" / "good" / "executed" / "toy_analysis.ipynb", as_version=4).metadata.papermill.parameters
    assert params["run_dirs"] == [str(tmp_path / "results" / "good" / "runs" / h)]
    # a redraw needs every run finished where it reads them: it never trains
    assert study_main(common + ["--results-from", str(tmp_path / "nothing"), "--runs-root", str(tmp_path / "redraw")]) == 2
    assert "results_root: 1 of 1 runs are not finished" in capsys.readouterr().err


def test_notebook_path_parameters_are_relative_to_the_notebook_inside_the_repository():
    nb = driver_mod.NotebookSpec("03_alignment", ROOT / "notebooks" / "03_alignment.ipynb", {}, False, 60, ())
    layout = Layout("cpu3", ROOT / "runs", ROOT / "figures")
    assert driver_mod._common_params(nb, load_profile("cpu3"), layout) == {
        "profile": "cpu3", "figures_dir": "../figures/cpu3", "runs_dir": "../runs/cpu3/runs"}
    assert driver_mod._nb_path(nb, Path("/elsewhere/figures")) == "/elsewhere/figures"

# ------------------------------------------------------------------------------------------------
# Slurm time-outs and preemption, without a cluster (tests/test_slurm.py runs them on a real one)
# ------------------------------------------------------------------------------------------------
def test_cluster_options_max_requeues_and_the_signal_lead():
    assert ExecutorOptions(kind="slurm", max_requeues=0).max_requeues == 0
    with pytest.raises(ValueError, match=r"max_requeues = -1 is out of range; allowed: \[0, inf\)"):
        ExecutorOptions(kind="slurm", max_requeues=-1)
    with pytest.raises(ValueError, match="max_requeues.*only with executor 'slurm' or 'submitit-local'"):
        ExecutorOptions(kind="local", max_requeues=3)
    # a tenth of the limit, within [10, 90] s: a short job keeps most of its time
    assert [driver_mod.signal_delay_s(m) for m in (1, 2, 10, 15, 240)] == [10, 12, 60, 90, 90]


def _job_for(run_dir: Path) -> RunJob:
    return RunJob(config_hash="h", label="x", notebook=NB_DIR / "toy_train.ipynb", executed=run_dir / "x.ipynb",
                  run_dir=run_dir, params={}, timeout_s=60)


def test_a_signalled_job_gets_the_trainers_current_step_saved_before_it_is_requeued(tmp_path):
    """submitit calls ``checkpoint`` in the job process when Slurm warns the job; it asks the trainer
    (another process: the notebook's kernel) to save its step now, waits until it has, and returns
    the resubmission. The trainer's ``ckpt_every`` is beyond its steps: only the request saves."""
    import torch

    from anira.pipeline.runs import RequeueableRun

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "anira.train", "--out", str(out), "task=hops", "mechanism=online", "steps=100000",
           "d_model=16", "n_heads=2", "d_ff=32", "max_depth=3", "batch_size=4", "ckpt_every=1000000",
           "eval_every=1000000", "log_every=7", "progress=false", "num_threads=1", "ds_until_acc=null"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rr = RequeueableRun(ack_timeout_s=30)
        rr._started = time.time()  # as if this job attempt had just started (it runs the trainer)
        deadline = time.time() + 60
        while not ((out / ".training").exists() and (out / "log.jsonl").exists()):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "no start"
            time.sleep(0.1)
        t0 = time.time()
        resubmission = rr.checkpoint(_job_for(out))
        assert time.time() - t0 < 10
        step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
        assert step >= 1 and proc.poll() is None  # saved; training goes on until the job is killed
        assert not (out / ".checkpoint_request").exists()
        assert isinstance(resubmission.function, RequeueableRun) and resubmission.args == (_job_for(out),)
    finally:
        proc.kill()
        proc.wait()


def test_an_attempt_that_saved_nothing_is_not_requeued(tmp_path):
    """A job whose time limit ends before its trainer saved anything would be requeued forever (up to
    the requeue limit): the run fails at once, saying why. With nothing training, ``checkpoint``
    does not wait."""
    from anira.pipeline.runs import NoProgressError, RequeueableRun

    out = tmp_path / "run"
    out.mkdir()
    rr = RequeueableRun(ack_timeout_s=30)
    rr._started = time.time()
    t0 = time.time()
    with pytest.raises(NoProgressError, match="saved no checkpoint of run h before it was stopped.*--time"):
        rr.checkpoint(_job_for(out))
    assert time.time() - t0 < 1
    (out / "checkpoint.json").write_text("{}")  # this attempt saved something: requeue
    assert rr.checkpoint(_job_for(out)).args == (_job_for(out),)


def test_without_accounting_job_states_come_from_squeue_with_one_line(tmp_path, monkeypatch, capsys):
    """sacct fails on a cluster without accounting storage; submitit warned at every poll and never
    saw a job leave the queue. The driver's watcher says it once and asks squeue."""
    from anira.pipeline.slurm import GONE, QuietSlurmWatcher

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nprintf '7_0|RUNNING|n1\\n7_1|PENDING|\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    w = QuietSlurmWatcher()
    for j in ("7_0", "7_1", "7_2"):
        w.register_job(j)
    assert [w.get_state(j, mode="force") for j in ("7_0", "7_1", "7_2")] == ["RUNNING", "PENDING", GONE]
    assert not w.is_done("7_0", mode="cache") and w.is_done("7_2", mode="cache")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sacct does not answer (Slurm accounting storage is disabled)" in err


def test_a_study_committed_part_by_part_is_completed_not_retrained(tmp_path, monkeypatch):
    """Sitting 1 finishes some runs and exports them (--export-to --partial); on a fresh run cache,
    sitting 2 copies the exported runs that carry weights (reuse_from) and trains only the rest.
    A run exported without weights, and a dry run, copy nothing."""
    from anira.pipeline.export import export_results

    path = write_profile(tmp_path, "e2e", E2E)
    calls = count_notebooks(monkeypatch)
    first = Layout("e2e", tmp_path / "one" / "runs", tmp_path / "one" / "figures")
    crashing = next(r.config_hash for r in load(path).runs if r.config is not None and r.config.crash_once_at)
    with pytest.raises(StudyError, match="1 of 4 runs did not finish"):
        study(path, tmp_path / "one")
    finished = sorted(p.name for p in first.runs_dir.iterdir() if (p / "summary.json").is_file())
    assert len(finished) == 3 and crashing not in finished
    for h in finished[:2]:  # the toy trainer keeps no weights: two runs get a stand-in weights.pt
        torch.save({"config_hash": h, "dtype": "float32", "state_dict": {}}, first.run_dir(h) / "weights.pt")
    with pytest.raises(ValueError, match=r"unfinished runs(.|\n)*--partial"):
        export_results(first, tmp_path / "results")
    dest = export_results(first, tmp_path / "results", partial=True)
    assert sorted(p.name for p in (dest / "runs").iterdir()) == finished
    second = Layout("e2e", tmp_path / "two" / "runs", tmp_path / "two" / "figures")
    study(path, tmp_path / "two", dry_run=True, reuse_from=tmp_path / "results")
    assert not second.runs_dir.exists()  # a dry run writes nothing
    calls.clear()
    with pytest.raises(StudyError, match="1 of 4 runs did not finish"):  # the toy run crashes once per run cache
        study(path, tmp_path / "two", reuse_from=tmp_path / "results")
    assert calls.count("toy_train") == 2  # the run exported without weights and the crashing one, not the two reused
    man = study(path, tmp_path / "two", reuse_from=tmp_path / "results")
    assert man["status"] == "complete" and calls.count("toy_train") == 3
    rows = {r["config_hash"]: r for r in man["runs"]}
    for h in finished[:2]:
        assert (second.run_dir(h) / "weights.pt").read_bytes() == (first.run_dir(h) / "weights.pt").read_bytes()
        assert json.loads((second.run_dir(h) / "summary.json").read_text()) == json.loads((first.run_dir(h) / "summary.json").read_text())
        # its executed notebook came with it: a later export keeps it and the manifest its duration
        nb = second.executed("toy_train", h)
        assert nb.read_bytes() == (dest / "executed" / "toy_train" / f"{h}.ipynb").read_bytes()
        assert rows[h]["notebook_wall_s"] == json.loads(nb.read_text())["metadata"]["papermill"]["duration"] > 0
    assert driver_mod.reuse_finished(second, tmp_path / "results" / "e2e" / "runs") == []  # nothing left to copy


def test_committed_runs_of_the_third_study_are_planned_finished_and_carry_weights():
    """data/results/cpu3 holds exactly the runs profiles/cpu3.yaml plans (committed sitting by
    sitting), all finished, on the current frozen data, each with its trained weights, so the driver
    reuses them instead of training them again; its manifest records this profile file: a change
    to the profile that is not followed by a rerun (and export) of the reference study fails here."""
    root = Path(__file__).resolve().parents[1] / "data" / "results"
    if not (root / "cpu3" / "runs").is_dir():
        pytest.skip("no committed cpu3 runs in this checkout")
    layout = Layout("cpu3", runs_root=root)
    plan = driver_mod.make_plan(load_profile("cpu3"), layout)  # raises if a committed run was scored on other data
    planned = {p.config_hash for p in plan if p.config_hash}
    committed = sorted(p.name for p in layout.runs_dir.iterdir() if p.is_dir())
    assert committed and set(committed) == planned
    assert [p.spec.label() for p in plan if p.state != "done"] == []
    for h in committed:
        assert run_state(layout.run_dir(h), h) == "done" and (layout.run_dir(h) / "weights.pt").is_file(), h
    assert json.loads(layout.manifest.read_text())["profile_sha256"] == load_profile("cpu3").sha256
