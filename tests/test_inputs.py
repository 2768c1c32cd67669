"""Every wrong input stops before any work, names itself, and writes nothing.

Input classes x entry points:

* task parameters (unknown, out of range, wrong type) and data checks (``max_len`` against the
  frozen evaluation sets): ``RunConfig`` / ``run()``, ``python -m anira.train``, a profile
  (``load_profile`` and ``python -m anira.study``), the ``02_train`` notebook under papermill;
* wrong types (a string for a number, a bool for an int, a number for a mapping): every config
  dataclass built directly or with ``from_dict``, the train CLI, papermill parameters;
* names a notebook does not declare, injected by papermill: every notebook (a static check that
  each calls ``check_parameters`` first) and real papermill runs of 01_tasks, 02_train, 03_alignment;
* the command lines: one ``error:`` line on stderr, exit status 2, no traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from anira.analysis import BootstrapConfig
from anira.config import from_dict
from anira.losses import LossConfig
from anira.model import ModelConfig
from anira.notebook import check_injected, check_parameters
from anira.pipeline import ExecutorOptions
from anira.pipeline.profile import declared_parameters, load_profile
from anira.study import main as study_main
from anira.train import RunConfig, check_run, config_hash, run
from anira.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TINY = dict(steps=2, batch_size=4, d_model=16, n_heads=2, d_ff=32, max_depth=2, ds_warmup_steps=1, ds_until_acc=None,
            warmup_steps=1, log_every=1, eval_every=2, eval_examples=4, ckpt_every=1, num_threads=1, progress=False)

# (RunConfig fields, text the message must contain)
BAD_TASK = {
    "task_param_unknown": ({"task_params": {"nosuch": 1}}, ["task_params (hops)", "nosuch", "allowed keys", "max_vars"]),
    "task_param_range": ({"task_params": {"max_vars": 99}}, ["task_params (hops)", "max_vars = 99", "out of range",
                                                            "allowed: [8, 20]"]),
    "task_param_type": ({"task_params": {"max_vars": "8"}}, ["max_vars = '8'", "wrong type", "expected int"]),
    "task_params_not_mapping": ({"task_params": 5}, ["task_params = 5", "wrong type", "mapping"]),
    "task_params_bad_key": ({"task_params": {1: 2}}, ["task_params", "keys must be parameter names"]),
}
BAD_TYPE = {
    "str_for_int": ({"steps": "abc"}, ["steps = 'abc'", "wrong type", "expected int"]),
    "bool_for_int": ({"batch_size": True}, ["batch_size = True", "wrong type", "expected int"]),
    "str_for_float": ({"beta": "x"}, ["beta = 'x'", "wrong type", "expected float"]),
    "str_for_optional_int": ({"fixed_depth": "2"}, ["fixed_depth = '2'", "wrong type", "int | None"]),
    "int_for_tuple": ({"mechanism": "random", "random_depth_probs": 5}, ["random_depth_probs = 5", "wrong type"]),
    "unknown_choice": ({"mechanism": "nosuch"}, ["mechanism = 'nosuch'", "not allowed", "'online'"]),
}
BAD_RANGE = {
    "max_depth_huge": ({"max_depth": 500}, ["max_depth = 500", "out of range", "allowed: [1, 32]"]),
    "eval_max_depth_huge": ({"eval_max_depth": 33}, ["eval_max_depth = 33", "out of range", "allowed: [1, 32]"]),
    "task_param_nan": ({"task_params": {"hop_tilt": float("nan")}}, ["hop_tilt = nan", "out of range"]),
}
BAD_DATA = {
    "max_len_short": ({"max_len": 10}, ["max_len = 10", "out of range", "allowed: [60, inf)", "eval_in"]),
}
BAD_CONFIG = {**BAD_TASK, **BAD_TYPE, **BAD_RANGE}


def _assert_names(msg: str, parts: list[str]) -> None:
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


def _files(d: Path) -> list[Path]:
    return sorted(p for p in Path(d).rglob("*")) if Path(d).exists() else []


# ----------------------------------------------------------------------------------------------
# library
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_runconfig_refuses_bad_values_directly_and_from_dict(case):
    values, parts = BAD_CONFIG[case]
    with pytest.raises(ValueError) as direct:
        RunConfig(**values)
    _assert_names(str(direct.value), parts)
    with pytest.raises(ValueError) as built:
        from_dict(RunConfig, values, where="here")
    assert str(built.value).startswith("here: ")
    _assert_names(str(built.value), parts)


@pytest.mark.parametrize("cls, values, parts", [
    (ModelConfig, {"d_model": "x"}, ["ModelConfig.d_model = 'x'", "expected int"]),
    (LossConfig, {"beta": "x"}, ["LossConfig.beta = 'x'", "expected float"]),
    (BootstrapConfig, {"ci": "x"}, ["BootstrapConfig.ci = 'x'", "expected float"]),
    (ExecutorOptions, {"workers": "2", "kind": "local"}, ["ExecutorOptions.workers = '2'", "int | None"]),
])
def test_every_config_dataclass_names_a_wrong_type(cls, values, parts):
    with pytest.raises(ValueError) as err:
        cls(**values)
    _assert_names(str(err.value), parts)


def test_from_dict_refuses_a_non_mapping():
    with pytest.raises(ValueError, match=r"RunConfig = 5 has the wrong type; expected a mapping"):
        from_dict(RunConfig, 5)


def test_direct_construction_converts_like_from_dict_and_keeps_the_hash():
    import numpy as np

    direct = RunConfig(beta=0, steps=np.int64(10), task_params={"max_vars": 8})
    assert isinstance(direct.beta, float) and type(direct.steps) is int
    assert config_hash(direct) == config_hash(from_dict(RunConfig, {"beta": 0, "steps": 10, "task_params": {"max_vars": 8}}))


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_run_checks_data_before_writing(tmp_path, case):
    values, parts = BAD_DATA[case]
    cfg = RunConfig(**{**TINY, **values})  # the config alone is fine; the data decide
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        run(cfg, out)
    _assert_names(str(err.value), parts)
    assert not out.exists()


def test_run_refuses_a_checkpoint_of_another_config_without_touching_config_json(tmp_path):
    cfg = RunConfig(**TINY)
    out = tmp_path / "run"
    run(cfg, out, interrupt_at=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = RunConfig(**{**TINY, "seed": 1})
    with pytest.raises(ValueError, match=r"holds the checkpoint of config hash .*use another directory"):
        run(other, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_run_refuses_an_out_dir_inside_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"is a file, not a directory"):
        run(RunConfig(**TINY), tmp_path / "f" / "run")
    assert _files(tmp_path) == [tmp_path / "f"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_run_refuses_cuda_where_there_is_none(tmp_path):
    with pytest.raises(ValueError, match=r"device = 'cuda' is not available .*allowed here: \['cpu'\]"):
        check_run(RunConfig(**{**TINY, "device": "cuda"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# python -m anira.train
# ----------------------------------------------------------------------------------------------
def _overrides(values: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


CLI_CASES = {
    **{k: (_overrides(v), parts) for k, (v, parts) in {**BAD_CONFIG, **BAD_DATA}.items()
       if k not in ("task_params_bad_key", "task_param_nan")},  # JSON writes NaN, which YAML reads as a string
    "task_param_nan": (["task_params={hop_tilt: .nan}"], ["hop_tilt = nan", "out of range"]),
    "unknown_field": (["nosuch=1"], ["unknown key(s) ['nosuch'] for RunConfig", "allowed keys"]),
    "no_equals": (["steps"], ["override 'steps' must look like key=value"]),
    "bad_yaml_value": (["steps=[1"], ["override 'steps=[1'", "not valid YAML"]),
    "missing_config_file": (["--config", "nosuch.yaml"], ["--config = 'nosuch.yaml': no such file"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_train_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, case, monkeypatch):
    argv, parts = CLI_CASES[case]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert train_main(["--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    _assert_names(err, parts)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("body, parts", [
    ("steps: [1", ["malformed YAML"]),
    ("- steps: 1", ["must hold a mapping of RunConfig fields, got list"]),
    ("task_params: {max_hops: 13}", ["--config", "task_params (hops)", "max_hops = 13", "out of range"]),
])
def test_train_cli_bad_config_file(tmp_path, capsys, body, parts):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    assert train_main(["--out", str(tmp_path / "run"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    _assert_names(err, parts)
    assert _files(tmp_path) == [cfg]


def test_train_cli_process_exit_status_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "anira.train", "--out", str(tmp_path / "run"), "task_params={max_vars: 99}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "max_vars = 99" in proc.stderr
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# profiles and python -m anira.study
# ----------------------------------------------------------------------------------------------
def _profile(d: Path, defaults: dict, task_params: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "bad.yaml"
    lines = ["profile: bad", "timeout_s: 60", f"defaults: {json.dumps({**TINY, **defaults})}"]
    if task_params:
        lines.append(f"task_params: {task_params}")
    lines += ["sweep:", "  - {task: [hops], mechanism: [online], seed: [0]}", "notebooks:",
              "  - {name: 01_tasks}", "  - {name: 02_train, per_run: true}"]
    path.write_text("\n".join(lines) + "\n")
    return path


PROFILE_CASES = {k: ({k2: v2 for k2, v2 in v.items()}, parts) for k, (v, parts) in {**BAD_TASK, **BAD_DATA}.items()
                 if k not in ("task_params_bad_key",)}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_profile_with_bad_task_or_data_fails_validation_and_the_study_writes_nothing(tmp_path, capsys, case):
    values, parts = PROFILE_CASES[case]
    path = _profile(tmp_path / "profiles", values)
    with pytest.raises(ValueError) as err:
        load_profile(path)
    _assert_names(str(err.value), [str(path), *parts])
    code = study_main(["--profile", str(path), "--runs-root", str(tmp_path / "runs"),
                       "--figures-root", str(tmp_path / "figs")])
    assert code == 2
    msg = capsys.readouterr().err.strip()
    assert msg.startswith("error: ") and "\n" not in msg
    assert not (tmp_path / "runs").exists() and not (tmp_path / "figs").exists()


def test_profile_task_params_section_is_checked_against_the_task(tmp_path):
    path = _profile(tmp_path, {}, task_params="{hops: {max_hops: 99}}")
    with pytest.raises(ValueError, match=r"sweep\[0\] .*task_params \(hops\): max_hops = 99 is out of range"):
        load_profile(path)


# ----------------------------------------------------------------------------------------------
# notebooks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_checks_its_parameters_first(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    after = next(c for c in nb.cells[tagged[0] + 1:] if c.cell_type == "code")
    first = [line for line in after.source.splitlines() if line.strip() and not line.startswith(("from ", "import "))][0]
    assert first.startswith(f'check_parameters("{name}"'), first
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_check_injected_names_the_parameter_and_the_declared_ones():
    declared = {"n": "3", "x": "0.5", "flag": "False", "name": '"a"', "any": "None"}
    check_injected("nb", declared, {"n": 4, "x": 1, "flag": True, "name": "b", "any": [1], "PAPERMILL_INPUT_PATH": "i"})
    with pytest.raises(ValueError, match=r"nb: unknown parameter\(s\) \['nosuch'\]; the notebook's parameters: "
                                         r"\['any', 'flag', 'n', 'name', 'x'\]"):
        check_injected("nb", declared, {"nosuch": 1})
    for name, value, tp in (("n", "4", "int"), ("n", True, "int"), ("flag", 1, "bool"), ("x", "y", "float")):
        with pytest.raises(ValueError, match=rf"nb: parameter {name} = .* has the wrong type; expected {tp}"):
            check_injected("nb", declared, {name: value})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_declared_parameter(name):
    # papermill parses the parameters cell line by line; a comment holding "=" made it drop the line
    # ("Unable to parse line"), then warn "Passed unknown parameter" and leave it out of --help-notebook
    from papermill.inspection import inspect_notebook

    path = ROOT / "notebooks" / f"{name}.ipynb"
    assert sorted(inspect_notebook(str(path))) == sorted(declared_parameters(path))


def test_check_profile_names_the_allowed_profiles():
    from anira.notebook import check_profile

    check_profile("nb", "cpu3", "../figures/smoke")
    check_profile("nb", "mine", "/elsewhere/figures/mine")  # a profile file outside profiles/
    with pytest.raises(ValueError, match=r"nb: parameter profile = 'smok' is not a profile; allowed values: "
                                         r"\['cpu3', 'full', 'smoke'\]"):
        check_profile("nb", "smok", "../figures/smoke")


def test_check_parameters_outside_a_kernel_checks_nothing():
    check_parameters("nb")  # no IPython: nothing was injected


def _papermill(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "agg"}
    return subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(ROOT / "notebooks"), "-k", "python3", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def _error_of(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_papermill_unknown_parameter_stops_02_train_before_training(tmp_path):
    runs = tmp_path / "runs"
    text = _error_of(_papermill(tmp_path, "02_train", "-p", "runs_dir", str(runs), "-p", "mechanism", "nosuch"))
    assert ("02_train: unknown parameter(s) ['mechanism']; the notebook's parameters: "
            "['run_config', 'run_dir', 'runs_dir']") in text
    assert not runs.exists()


@pytest.mark.parametrize("run_config, parts", [
    ({"task_params": {"max_vars": 99}, **TINY}, ["task_params (hops): max_vars = 99 is out of range"]),
    ({"max_len": 10, **TINY}, ["max_len = 10 is out of range for task 'hops'"]),
    ({"steps": "abc"}, ["RunConfig.steps = 'abc' has the wrong type; expected int"]),
])
def test_papermill_bad_run_config_stops_02_train_with_no_run_folder(tmp_path, run_config, parts):
    runs = tmp_path / "runs"
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"runs_dir": str(runs), "run_config": run_config}))
    text = _error_of(_papermill(tmp_path, "02_train", "-f", str(params)))
    _assert_names(text, parts)
    assert not runs.exists()


def test_papermill_run_config_of_the_wrong_type_is_refused(tmp_path):
    runs = tmp_path / "runs"
    text = _error_of(_papermill(tmp_path, "02_train", "-p", "runs_dir", str(runs), "-p", "run_config", "5"))
    assert "02_train: parameter run_config = 5 has the wrong type; expected dict" in text
    assert not runs.exists()


@pytest.mark.parametrize("args, parts", [
    (["-p", "n_example", "3"], ["01_tasks: unknown parameter(s) ['n_example']; the notebook's parameters: "
                                "['figures_dir', 'n_stats', 'profile', 'seed']"]),
    (["-p", "n_stats", "abc"], ["01_tasks: parameter n_stats = 'abc' has the wrong type; expected int "
                                "(the notebook's default is 200)"]),
    (["-p", "profile", "smok"], ["01_tasks: parameter profile = 'smok' is not a profile; allowed values: "
                                 "['cpu3', 'full', 'smoke', 'figs']"]),
])
def test_papermill_01_tasks_refuses_before_writing_figures(tmp_path, args, parts):
    figs = tmp_path / "figs"
    text = _error_of(_papermill(tmp_path, "01_tasks", "-p", "figures_dir", str(figs), *args))
    _assert_names(text, parts)
    assert not figs.exists()


def test_papermill_analysis_notebook_refuses_an_unknown_parameter(tmp_path):
    figs = tmp_path / "figs"
    text = _error_of(_papermill(tmp_path, "03_alignment", "-p", "figures_dir", str(figs), "-p", "nboot", "10"))
    declared = sorted(declared_parameters(ROOT / "notebooks" / "03_alignment.ipynb"))
    assert f"03_alignment: unknown parameter(s) ['nboot']; the notebook's parameters: {declared}" in text
    assert not figs.exists()
