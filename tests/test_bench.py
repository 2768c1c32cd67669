"""The benchmark script runs every section at tiny sizes and writes its CSV (no timing assertions:
targets belong in the benchmark's output, not in tests)."""
import csv
import sys
from pathlib import Path

import pytest
import torch

from anira import bench
from anira.model import AniraModel

TINY = ["--repeats", "2", "--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--seq-len", "10", "--ee-batch", "3",
        "--ee-max-depth", "4", "--ee-mean-depths", "1,2,4", "--train-batch", "2", "--train-depth", "2",
        "--train-steps", "1"]


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _stats(rows, case, quantity):
    (r,) = [r for r in rows if r["case"] == case and r["quantity"] == quantity]
    assert r["repeats"] and float(r["min"]) <= float(r["median"]) <= float(r["max"]), r
    return r


def test_early_exit_and_train_sections_write_their_csvs(tmp_path, capsys):
    assert bench.main(["--only", "early_exit,train", "--clock", "cpu", "--csv-dir", str(tmp_path), *TINY]) == 0
    ee = _rows(tmp_path / "bench_early_exit.csv")
    assert not any(r["error"] for r in ee)
    # spread m=1 and m=4 equal the two-point cases (every token at depth 1, resp. S) and are dropped
    assert list(dict.fromkeys(r["case"] for r in ee)) == ["two-point m=1", "two-point m=2", "spread m=2 (1..3)",
                                                          "two-point m=4"]
    for case, d in (("two-point m=1", 1.0), ("two-point m=2", 2.0), ("spread m=2 (1..3)", 2.0), ("two-point m=4", 4.0)):
        r = _stats(ee, case, "speed-up")
        assert float(r["mean_depth"]) == pytest.approx(d, abs=1e-9)  # realized block calls of the timed batch
        assert float(_stats(ee, case, "ideal S/d")["median"]) == pytest.approx(4 / d)
        ratio, sp = _stats(ee, case, "realized/ideal"), _stats(ee, case, "speed-up")
        assert float(ratio["median"]) == pytest.approx(float(sp["median"]) * d / 4)
        assert ratio["target"] == ("0.8" if d <= 2 else "")  # the target applies at d <= S/2 only
        assert float(_stats(ee, case, "time exit")["median"]) > 0
    tr = _rows(tmp_path / "bench_train.csv")
    assert not any(r["error"] for r in tr)
    for case in ("fixed S=2 (masked, CE)", "ponder S=2 (dense, S read-outs)"):
        a, ref, ratio = (_stats(tr, case, q) for q in ("tokens/s anira", "tokens/s ref", "anira/ref"))
        assert ratio["target"] == "1.0" and ratio["meets"] in ("yes", "no")
        assert ratio["threads"] == "1"
    out = capsys.readouterr().out
    assert "1 intra-op thread(s)" in out and "cpu clock" in out and "realized/ideal" in out and "anira/ref" in out


def test_early_exit_error_is_reported_not_skipped(tmp_path, monkeypatch):
    def broken(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(AniraModel, "_run_halting", broken)
    out = tmp_path / "ee.csv"
    assert bench.main(["--only", "early_exit", "--csv", str(out), *TINY]) == 1
    rows = _rows(out)
    assert rows and all("RuntimeError: boom" in r["error"] for r in rows)


def test_spread_distribution_has_the_asked_mean():
    for S in (4, 8):
        for m in range(1, S + 1):
            p = torch.tensor(bench.spread_probs(m, S))
            assert p.sum().item() == pytest.approx(1.0)
            assert (p * torch.arange(1, S + 1)).sum().item() == pytest.approx(m)
    assert bench.spread_probs(3, 8) == pytest.approx((0.2,) * 5 + (0.0,) * 3)
    with pytest.raises(ValueError, match="2.5"):
        bench.spread_probs(2.5, 8)


def test_reference_shares_one_layer_and_reads_out_every_step():
    torch.manual_seed(0)
    ref = bench.LoopedEncoderReference(vocab=11, max_len=8, d_model=16, n_heads=2, d_ff=32, depth=3)
    ids = torch.randint(0, 11, (2, 8))
    steps = ref(ids, every_step=True)
    assert steps.shape == (3, 2, 8, 11)
    torch.testing.assert_close(steps[-1], ref(ids))
    # independent reference: the shared layer applied by hand with an explicit causal mask
    causal = torch.triu(torch.full((8, 8), float("-inf")), 1)
    x = ref.tok(ids) + ref.pos(torch.arange(8))
    x = ref.prelude[0](x, src_mask=causal)
    for _ in range(3):
        x = ref.core(x, src_mask=causal)
    torch.testing.assert_close(ref(ids), ref.head(ref.ln_f(ref.coda[0](x, src_mask=causal))))
    # causality: changing the last token leaves earlier outputs alone
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] + 1) % 11
    torch.testing.assert_close(ref(ids2)[:, :-1], ref(ids)[:, :-1])
    n_layers = sum(1 for m in ref.modules() if isinstance(m, torch.nn.TransformerEncoderLayer))
    assert n_layers == 3  # prelude, the shared core, coda


def test_reference_matches_anira_width():
    """Same width/heads/d_ff: the reference's shared layer has the parameters of a plain layer of
    that size (ANIRA's block adds the adapter and the step projection)."""
    ref = bench.LoopedEncoderReference(vocab=11, max_len=8, d_model=16, n_heads=2, d_ff=32, depth=3)
    D, F = 16, 32
    core = sum(p.numel() for p in ref.core.parameters())
    assert core == 4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D  # qkv+out (+bias), MLP, two LayerNorms
    assert ref.core.norm_first and ref.core.self_attn.batch_first


def test_e2e_times_the_study_command_and_counts_runs(tmp_path, monkeypatch, capsys):
    """The real study takes minutes; a stand-in command that writes a manifest checks the plumbing."""
    def fake(profile, root):
        code = (f"import json, pathlib; p = pathlib.Path({str(root)!r}) / 'runs' / {profile!r}; p.mkdir(parents=True); "
                "(p / 'manifest.json').write_text(json.dumps({'runs': [{}, {}, {}]}))")
        return [sys.executable, "-c", code]

    monkeypatch.setattr(bench, "study_command", fake)
    out = tmp_path / "e2e.csv"
    assert bench.main(["--only", "e2e", "--e2e-runs", "2", "--e2e-profile", "toy", "--csv", str(out)]) == 0
    rows = {r["quantity"]: r for r in _rows(out)}
    assert rows["runs"]["median"] == "3.0" and rows["wall"]["repeats"] == "2" and rows["cpu"]["repeats"] == "2"
    assert float(rows["wall per run"]["median"]) == pytest.approx(float(rows["wall"]["median"]) / 3)
    assert "study --profile toy" in capsys.readouterr().out

    monkeypatch.setattr(bench, "study_command", lambda p, r: [sys.executable, "-c", "raise SystemExit(3)"])
    assert bench.main(["--only", "e2e", "--csv", str(out)]) == 1
    assert "exit status 3" in _rows(out)[0]["error"]


def test_e2e_runs_only_when_asked_and_bad_sections_fail(capsys):
    assert "e2e" not in bench.DEFAULT_SECTIONS and set(bench.DEFAULT_SECTIONS) < set(bench.SECTIONS)
    with pytest.raises(SystemExit):
        bench.main(["--only", "data,ghost"])
    assert "'ghost'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--ee-dists", "uniform", "--only", "early_exit"])
    assert "two-point, spread" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--clock", "cpu", "--threads", "2", "--only", "train"])
    assert "--threads 1" in capsys.readouterr().err


def test_fastpaths_section_times_each_fast_path_against_its_plain_formula(tmp_path):
    out = tmp_path / "fp.csv"
    assert bench.main(["--only", "fastpaths", "--csv", str(out), *TINY]) == 0
    rows = _rows(out)
    assert not any(r["error"] for r in rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    assert [c.split(" (")[0] for c in cases] == ["rope kernel", "split adapter", "dense steps", "dense steps"]
    for case in cases:
        r = _stats(rows, case, "plain/fast")
        assert r["target"] == "1.0" and float(r["median"]) > 0


def test_exit_study_times_every_distribution_and_judges_its_bar(tmp_path, capsys):
    out = tmp_path / "xs.csv"
    args = ["--only", "exit_study", "--csv", str(out), "--repeats", "2", "--n-heads", "2", "--exit-tasks", "addition",
            "--exit-widths", "16", "--exit-batch", "3"]
    assert bench.main(args) == 0
    rows = _rows(out)
    assert not any(r["error"] for r in rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    assert [c.split()[-1] for c in cases] == list(bench.EXIT_DISTS)
    for case in cases:
        r = _stats(rows, case, "speed-up")
        assert r["d_model"] == "16" and r["d_ff"] == "64" and r["max_depth"] == "6" and r["batch"] == "3"
        d = float(r["mean_depth"])
        assert float(_stats(rows, case, "ideal S/d")["median"]) == pytest.approx(6 / d, rel=1e-4)  # d: 4 decimals
        judged = [q for q in rows if q["case"] == case and q["target"]]
        if case.endswith("oracle"):
            assert [(q["quantity"], q["target"]) for q in judged] == [("realized/ideal", "0.6")]
        elif case.endswith("full"):
            assert d == 6.0 and [(q["quantity"], q["target"]) for q in judged] == [("speed-up", "0.97")]
    printed = capsys.readouterr().out
    assert "speed-up >= 0.97: " in printed and "realized/ideal >= 0.6: " in printed
    assert ("pass" in printed) or ("FAIL" in printed)


def test_exit_bar_by_ideal_distribution_and_width():
    assert bench.exit_bar(1.04, "deep", 128) == ("speed-up", "speed-up >= 0.97", 0.97)
    assert bench.exit_bar(1.1, "learned", 512)[2] == 0.97
    assert bench.exit_bar(5.3, "oracle", 128)[2] == 0.6 and bench.exit_bar(5.3, "oracle", 256)[2] == 0.6
    assert bench.exit_bar(5.3, "oracle", 512)[2] == 0.8
    assert bench.exit_bar(1.2, "learned", 128) is None  # reported, not judged


def test_exit_study_rejects_unknown_tasks_distributions_and_widths(capsys):
    for flag, value, allowed in (("--exit-dists", "uniform", "oracle, learned, deep, full"),
                                 ("--exit-tasks", "chess", "hops"), ("--exit-widths", "130", "divisible by --n-heads")):
        with pytest.raises(SystemExit):
            bench.main(["--only", "exit_study", flag, value])
        err = capsys.readouterr().err
        assert flag in err and allowed in err
