"""Frozen evaluation sets: committed files are exactly what the generators produce, the gzip
stream is byte-reproducible, and loading is strict."""
import csv
import gzip
import json
import math
from pathlib import Path

import pytest

from anira import bench, data
from anira.config import to_dict
from anira.tasks import TASK_NAMES, make_task

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def hops_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.write_eval_sets(root, tasks=("hops",))
    return root


@pytest.mark.parametrize("task", TASK_NAMES)
def test_committed_sets_regenerate_byte_identical(task, tmp_path):
    """Fails (never skips) when data/ lacks a task: run `python -m anira.data` and commit."""
    committed = json.loads((REPO_DATA / data.MANIFEST).read_text())
    fresh = data.write_eval_sets(tmp_path, tasks=(task,))
    rels = sorted(fresh["files"])
    assert rels == sorted([data.set_file(task, s) for s in data.task_splits(task)] + [f"{task}/vocab.json"])
    for rel in rels:
        assert (REPO_DATA / rel).exists(), f"data/{rel} is missing"
        assert (REPO_DATA / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"data/{rel} differs from a regeneration"
        assert committed["files"][rel] == fresh["files"][rel]
    assert [e for e in committed["sets"] if e["task"] == task] == fresh["sets"]
    got = fresh["sets"]
    assert [e["count"] for e in got] == [data.EVAL_COUNT] * len(data.task_splits(task))


def test_gzip_header_fixed_and_rewrite_identical(hops_root, tmp_path):
    raw = (hops_root / "hops/eval_in.jsonl.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"  # magic, mtime 0
    assert raw[10:24] == b"eval_in.jsonl\x00"  # FNAME: fixed, independent of the output path
    data.write_eval_sets(tmp_path, tasks=("hops",))
    for rel in ("hops/eval_in.jsonl.gz", "hops/eval_out.jsonl.gz", "hops/vocab.json", data.MANIFEST):
        assert (tmp_path / rel).read_bytes() == (hops_root / rel).read_bytes()


def test_load_equals_generator_with_recorded_seed(hops_root):
    manifest = json.loads((hops_root / data.MANIFEST).read_text())
    for e in manifest["sets"]:
        exs = data.load_eval_set("hops", e["split"], root=hops_root)
        task = make_task("hops", range=data.SPLITS[e["split"]])
        assert e["params"] == to_dict(task.config)
        assert e["seed"] == data.eval_seed("hops", e["split"])
        assert [x.to_json() for x in exs] == [x.to_json() for x in task.generate(e["count"], seed=e["seed"])]
    lines = gzip.decompress((hops_root / "hops/eval_out.jsonl.gz").read_bytes()).decode().splitlines()
    # extrapolation: every example has a chain longer than any of the training range (<= 4 variables)
    assert len(lines) == data.EVAL_COUNT and all(json.loads(s)["size"] >= 5 for s in lines)
    assert data.load_vocab("hops", root=hops_root).itos == make_task("hops").vocab.itos


def test_seeds_differ_per_task_and_split():
    seeds = [data.eval_seed(t, s) for t in TASK_NAMES for s in data.task_splits(t)]
    assert len(set(seeds)) == len(seeds) and min(seeds) > 10_000


def test_write_subset_keeps_other_entries(tmp_path):
    data.write_eval_sets(tmp_path, tasks=("hops",))
    m = data.write_eval_sets(tmp_path, tasks=("addition",))
    assert {e["task"] for e in m["sets"]} == {"hops", "addition"}
    assert json.loads((tmp_path / data.MANIFEST).read_text()) == m


def test_env_var_sets_default_root(hops_root, monkeypatch):
    monkeypatch.setenv("ANIRA_DATA", str(hops_root))
    assert data.default_root() == hops_root
    assert len(data.load_eval_set("hops", "in")) == data.EVAL_COUNT


def test_load_errors(hops_root, tmp_path):
    with pytest.raises(ValueError, match=r"split = 'test'.*\['in', 'out'\]"):
        data.load_eval_set("hops", "test", root=hops_root)
    with pytest.raises(ValueError, match="task = 'nope'.*hops"):
        data.load_eval_set("nope", "in", root=hops_root)
    with pytest.raises(FileNotFoundError, match="python -m anira.data"):
        data.load_eval_set("addition", "in", root=hops_root)
    with pytest.raises(FileNotFoundError):
        data.load_vocab("hops", root=tmp_path)


def test_tampered_file_rejected_and_check_fails(tmp_path):
    data.write_eval_sets(tmp_path, tasks=("hops",))
    assert data.check(tmp_path, ["hops"]) == []
    assert data.main(["--check", "--root", str(tmp_path), "--tasks", "hops"]) == 0
    path = tmp_path / "hops/eval_in.jsonl.gz"
    exs = data.load_eval_set("hops", "in", root=tmp_path)
    exs[0].tokens[-1] = exs[0].tokens[-2]  # one wrong answer
    content = b"".join(json.dumps(x.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n" for x in exs)
    path.write_bytes(data._gzip(content, "eval_in.jsonl"))
    with pytest.raises(ValueError, match="sha256 does not match"):
        data.load_eval_set("hops", "in", root=tmp_path)
    assert len(data.load_eval_set("hops", "in", root=tmp_path, verify=False)) == data.EVAL_COUNT
    problems = data.check(tmp_path, ["hops"])
    assert any("hops/eval_in.jsonl.gz" in p and "differs" in p for p in problems)
    assert data.main(["--check", "--root", str(tmp_path), "--tasks", "hops"]) == 1


def test_check_reports_changed_generator(tmp_path, monkeypatch):
    data.write_eval_sets(tmp_path, tasks=("hops",))
    from anira.tasks.hops import HopsConfig, HopsTask

    # a changed training range: the committed set no longer matches the generator
    monkeypatch.setattr(HopsTask, "train_config", classmethod(lambda cls: HopsConfig(n_values=9)))
    problems = data.check(tmp_path, ["hops"])
    assert any("params differs" in p for p in problems) and any("content sha256" in p for p in problems)


def test_missing_task_module_raises(tmp_path, monkeypatch):
    import anira.tasks as tasks

    monkeypatch.setitem(tasks._REGISTRY, "hops", "anira.tasks.not_written_yet:HopsTask")
    with pytest.raises(ImportError, match="'hops' could not be imported"):
        data.write_eval_sets(tmp_path, tasks=("addition", "hops"))
    assert not (tmp_path / data.MANIFEST).exists(), "nothing is written when a task is missing"
    with pytest.raises(ValueError, match="task = 'ghost'"):
        data.write_eval_sets(tmp_path, tasks=("ghost",))


def test_bench_data_section_runs_and_reports_errors(tmp_path, monkeypatch, capsys):
    out = tmp_path / "b.csv"
    argv = ["--only", "data", "--repeats", "2", "--n-examples", "64", "--batch-size", "16", "--csv", str(out)]
    assert bench.main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["task"], r["op"]) for r in rows] == [(t, op) for t in TASK_NAMES for op in ("generate", "collate(batch=16)")]
    for r in rows:
        assert float(r["min"]) <= float(r["median"]) <= float(r["max"]) and r["repeats"] == "2" and not r["error"]
    import anira.tasks as tasks

    monkeypatch.setitem(tasks._REGISTRY, "addition", "anira.tasks.not_written_yet:AdditionTask")
    assert bench.main(argv) == 1
    rows = {r["task"]: r for r in csv.DictReader(out.open())}
    assert "ModuleNotFoundError" in rows["addition"]["error"] and rows["hops"]["median"]


def test_earlier_design_sets_written_apart_and_refused_on_the_repository(tmp_path):
    """--earlier writes the hops sets of an earlier design (what the second cpu reference study and
    the hops learning diagnostic were scored on) under another root; on the repository's data/ it
    is refused before anything is written."""
    from anira.tasks.hops import STUDY2_DESIGN, HopsConfig, HopsTask

    assert data.main(["--earlier", "v2", "--root", str(tmp_path), "--tasks", "hops"]) == 0
    exs = data.load_eval_set("hops", "in", root=tmp_path)
    assert [e.to_json() for e in exs] == [
        e.to_json() for e in HopsTask(HopsConfig(**STUDY2_DESIGN)).generate(data.EVAL_COUNT, data.eval_seed("hops", "in"))]
    before = (REPO_DATA / data.MANIFEST).read_bytes()
    with pytest.raises(SystemExit) as exc:
        data.main(["--earlier", "v2", "--root", str(REPO_DATA), "--tasks", "hops"])
    assert exc.value.code == 2 and (REPO_DATA / data.MANIFEST).read_bytes() == before


def test_v3_design_regenerates_the_plain_addition_sets(tmp_path):
    """``--earlier v3`` writes `addition` at one width without hints: byte for byte the sets the
    addition diagnostic runs were scored on (the committed manifest before the hinted design)."""
    assert data.main(["--earlier", "v3", "--root", str(tmp_path), "--tasks", "addition"]) == 0
    m = json.loads((tmp_path / data.MANIFEST).read_text())
    got = {e["split"]: e["content_sha256"] for e in m["sets"] if e["task"] == "addition"}
    assert got == {"in": "995a1b1ba7a73dfd243f7972aeb5c0c9092ad710b0a2e958dfd697aee82d5541",
                   "out": "abcb9fe528f285df380b6ce99eae95018aa7e013aae26adb559db96cf51d75e3"}
    assert "A" not in make_task("addition", **data.earlier_params("v3")["addition"]["train"]).vocab.itos  # no hints


# --- the extrapolation certificate -------------------------------------------------------------
@pytest.mark.parametrize("task", data.CERTIFIED)
def test_extrapolation_set_needs_more_steps_than_training(task):
    """The task's bounded reader, given as many steps as the hardest in-range token needs, is exact
    on the frozen in-range set and at its guessing floor on every out-of-range token that needs more
    (none solved by a shortcut; the floor at most the task's bar: 0.35, or 1/2 for a one-bit carry)."""
    c = data.certify(task)
    assert c["certified"], c
    assert c["in_reader"] == 1.0 and c["beyond_solved"] == 0.0 and c["n_beyond"] >= 256
    assert c["beyond_reader"] <= c["floor_bar"] <= 0.5
    assert data.main(["--certify", "--tasks", task]) == 0


@pytest.mark.parametrize("task", data.CERTIFIED)
def test_bounded_reader_with_enough_steps_solves_both_sets(task):
    """The reader is a correct solver when its steps are not bounded: every answer of both frozen
    sets right. So a reader at the floor beyond k fails for lack of steps, not by a bug."""
    t = make_task(task)
    for split in data.task_splits(task):
        for ex in data.load_eval_set(task, split):
            got = t.bounded_reader(t.render(ex), 99)
            assert len(got) == len(ex.scored)
            answers = [g for g, f in zip(got, ex.features) if f["is_answer"]]
            assert answers and answers == [1.0] * len(answers)
            # a language model's other tokens chain no facts: the reader leaves them out (NaN)
            assert all(math.isnan(g) for g, f in zip(got, ex.features) if not f["is_answer"])


def test_hops_certificate_fails_on_the_second_studys_extrapolation_set():
    """The certificate can come out the other way: on the second study's design (one long chain,
    every other chain at most 3 long) the 4-step reader answers every out-of-range query by
    eliminating the closed chains' digits."""
    params = data.earlier_params("v2")["hops"]
    sets = {s: make_task("hops", range=r, **params[r]).generate(data.EVAL_COUNT, data.eval_seed("hops", s))
            for s, r in (("in", "train"), ("out", "extrap"))}
    c = data.certify("hops", sets=sets)
    assert not c["certified"] and c["beyond_solved"] == 1.0 and c["n_beyond"] > 500


def test_hops_reader_beyond_k_guesses_among_the_three_long_chains():
    """Out of range the 4-step reader cannot reach a digit: it guesses among the three long chains'
    (distinct) digits, 1/3 on every query; one more step than the longest chain and it is exact."""
    t = make_task("hops", range="extrap")
    for ex in data.load_eval_set("hops", "out")[:100]:
        words = t.render(ex)
        assert t.bounded_reader(words, 4) == [pytest.approx(1 / 3)]
        assert t.bounded_reader(words, ex.size) == [1.0]
        assert t.bounded_reader(words, ex.features[0]["difficulty"] - 1) == [pytest.approx(1 / 3)]


def test_addition_wide_set_grows_only_the_width():
    """`addition`'s "wide" split (10-16 digits; 4-8 in training) keeps training's carry chains: the
    4-column reader is exact on it, so a model that fails there fails at the width, not the carries.
    The check can fail: the same split drawn without the cap on chains puts the reader below 1."""
    c = data.certify("addition")
    assert c["wide_reader"] == 1.0 and c["certified"]
    wide = data.load_eval_set("addition", "wide")
    assert min(e.size for e in wide) > max(e.size for e in data.load_eval_set("addition", "in"))
    uncapped = make_task("addition", range="wide", max_run=0, max_difficulty=0).generate(data.EVAL_COUNT, seed=5)
    sets = {"in": data.load_eval_set("addition", "in"), "out": data.load_eval_set("addition", "out"), "wide": uncapped}
    c = data.certify("addition", sets=sets)
    assert c["wide_reader"] < 0.99 and not c["certified"]


def test_certify_refuses_a_task_without_a_reader(monkeypatch):
    monkeypatch.setattr(data, "CERTIFIED", ("hops",))
    with pytest.raises(ValueError, match=r"task = 'language' has no bounded reader; allowed values: \['hops'\]"):
        data.certify("language")
