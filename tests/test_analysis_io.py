"""Run loading and selection for the analysis notebooks (anira.analysis.io), the measured
early-exit speed-up (anira.analysis.speed), and the plots the notebooks add on top."""
import json

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anira import plotting as P  # noqa: E402
from synthetic import synthetic_records  # tests/synthetic.py
from anira.analysis import (BootstrapConfig, by_size, example_sequence, extrapolation_table, load_study,  # noqa: E402
                            resolve_run_dirs, runs_of_beta, select_beta, test_time_depth,
                            with_fixed_depth)
from anira.analysis._stats import group_key  # noqa: E402
from anira.analysis.io import eval_examples  # noqa: E402
from anira.analysis.speed import dense_forward, measure_speedup  # noqa: E402
from anira.config import to_dict  # noqa: E402
from anira.model import AniraModel, ModelConfig  # noqa: E402
from anira.tasks import collate, task_class  # noqa: E402
from anira.train import RunConfig  # noqa: E402

B = BootstrapConfig(n_boot=60)


@pytest.fixture(scope="module")
def recs():
    r = synthetic_records(tasks=("hops",), seeds=(0, 1), n_examples=16, n_tokens=6, eval_depths=(10,),
                          depth_mode={"early": "difficulty", "online": "difficulty", "oracle": "difficulty",
                                      "random": "random"})
    fixed = [synthetic_records(tasks=("hops",), seeds=(0,), n_examples=16, n_tokens=6, eval_depths=(10,),
                               depth_mode={"fixed": "constant"}, max_depth=d, rng_seed=d)
             .assign(run_id=f"hops-fixed-d{d}", max_depth=8, eval_max_depth=lambda x, d=d: np.where(
                 x["eval_max_depth"] == d, 8, x["eval_max_depth"])) for d in (2, 8)]
    return pd.concat([r, *fixed], ignore_index=True)


# --- run directories ------------------------------------------------------------------------------

def _fake_run(root, name, finished=True, records=True):
    d = root / name
    d.mkdir(parents=True)
    if finished:
        (d / "summary.json").write_text(json.dumps({"run_id": name, "in": {"acc": 0.5, "mean_depth": 2.0}}))
        (d / "config.json").write_text(json.dumps({"config": {"task": "hops", "mechanism": "early", "seed": 0}}))
    if records:
        pd.DataFrame({"run_id": [name], "depth": [2]}).to_csv(d / "records.csv.gz", index=False)
    return d


def test_resolve_run_dirs_finished_only_and_errors_name_the_parameter(tmp_path):
    a, b = _fake_run(tmp_path, "b"), _fake_run(tmp_path, "a")
    _fake_run(tmp_path, "c", finished=False)
    assert resolve_run_dirs(tmp_path) == [b, a]  # sorted, the unfinished "c" skipped
    assert resolve_run_dirs(None, [str(a)]) == [a]
    with pytest.raises(ValueError, match=r"runs_dir = .*no finished runs.*anira.study --profile smoke"):
        resolve_run_dirs(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"run_dirs: 1 of 2 .*summary.json"):
        resolve_run_dirs(tmp_path, [a, tmp_path / "c"])
    with pytest.raises(ValueError, match=r"run_dirs = \[\]"):
        resolve_run_dirs(tmp_path, [])
    with pytest.raises(ValueError, match="must be a list"):
        resolve_run_dirs(tmp_path, str(a))


def test_load_study_concatenates_in_order_and_requires_records(tmp_path):
    a, b = _fake_run(tmp_path, "a"), _fake_run(tmp_path, "b")
    records, summaries = load_study([b, a])
    assert records["run_id"].tolist() == ["b", "a"]
    assert [s["run_id"] for s in summaries] == ["b", "a"] and summaries[0]["config"]["task"] == "hops"
    c = _fake_run(tmp_path, "c", records=False)
    with pytest.raises(ValueError, match="no records.csv.gz"):
        load_study([a, c])


# --- selection ----------------------------------------------------------------------------------

def _beta_records():
    rows = [("e1", "early", 0.01), ("e2", "early", 0.01), ("e3", "early", 0.1), ("o1", "online", 0.01),
            ("o3", "online", 0.1), ("r1", "random", 0.01), ("r3", "random", 0.1), ("f1", "fixed", 0.5),
            ("q1", "oracle", 0.3)]
    return pd.DataFrame(rows, columns=["run_id", "mechanism", "beta"])


def test_select_beta_keeps_beta_free_controls_and_picks_the_headline_beta():
    df = _beta_records()
    out, beta = select_beta(df)
    assert beta == 0.01  # three early/online runs at 0.01, two at 0.1
    assert sorted(out["run_id"]) == ["e1", "e2", "f1", "o1", "q1", "r1"]
    assert out.loc[out["mechanism"].isin(["fixed", "oracle"]), "beta"].isna().all()
    out, beta = select_beta(df, 0.1)
    assert beta == 0.1 and sorted(out["run_id"]) == ["e3", "f1", "o3", "q1", "r3"]
    with pytest.raises(ValueError, match=r"beta = 0.3: no early/online run used it; betas present: \[0.01, 0.1\]"):
        select_beta(df, 0.3)


def test_runs_of_beta_selects_directories_from_their_configs(tmp_path):
    dirs = []
    for rid, mech, beta in _beta_records().itertuples(index=False):
        d = tmp_path / rid
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"config": {"mechanism": mech, "beta": beta}}))
        dirs.append(d)
    kept, beta = runs_of_beta(dirs)
    assert beta == 0.01 and sorted(d.name for d in kept) == ["e1", "e2", "f1", "o1", "q1", "r1"]
    with pytest.raises(ValueError, match="no readable config.json"):
        runs_of_beta([tmp_path / "missing"])


def test_with_fixed_depth_tags_fixed_runs_only(recs):
    out = with_fixed_depth(recs)
    depths = out.groupby("run_id")["fixed_depth"].first()
    assert depths["hops-fixed-d2"] == 2 and depths["hops-fixed-d8"] == 8
    assert out.loc[out["mechanism"] != "fixed", "fixed_depth"].isna().all()


def test_group_key_makes_nan_keys_comparable():
    assert group_key(("hops", float("nan"))) == group_key(("hops", np.nan)) == ("hops", None)
    assert group_key("hops") == ("hops",)


def test_nan_group_keys_keep_their_paired_cis(recs):
    """Grouping on fixed_depth (NaN for adaptive runs) used to lose every CI of those groups."""
    rec = with_fixed_depth(recs)
    tab = extrapolation_table(rec, groups=["task", "mechanism", "fixed_depth"], boot=B)
    assert len(tab) == 6  # early, online, oracle, random, fixed d=2, fixed d=8
    assert tab[["acc_drop_lo", "acc_drop_hi", "depth_increase_lo", "depth_increase_hi"]].notna().all().all()
    assert (tab["acc_drop_lo"] > 0.3).all()  # synthetic: accuracy 0.95 in range, 0.3 out
    ttd = test_time_depth(rec, groups=["task", "mechanism", "fixed_depth"], boot=B)
    assert ttd.loc[ttd["eval_max_depth"] == 10, "delta_depth_lo"].notna().all()


# --- example sequences --------------------------------------------------------------------------

def _example_records(task="hops", split="in", example=0, shift=0):
    ex = eval_examples(task, split)[example]
    rows = []
    for mech, depth0 in (("early", 2), ("online", 3)):
        for i, p in enumerate(ex.scored):
            rows.append(dict(run_id=mech, task=task, mechanism=mech, seed=0, beta=0.01, max_depth=6, eval_max_depth=6,
                             split=split, example=example, position=p, target=ex.tokens[p] + shift,
                             depth=depth0 + i, difficulty=ex.features[i]["difficulty"]))
    return pd.DataFrame(rows), ex


def test_example_sequence_aligns_depths_with_the_predicted_tokens():
    rec, ex = _example_records()
    s = example_sequence(rec, "hops", 0, max_tokens=None)
    vocab = task_class("hops").build_vocab()
    assert s["tokens"] == vocab.decode(ex.tokens[1:])
    assert s["positions"] == list(range(1, len(ex.tokens)))
    for i, p in enumerate(ex.scored):
        j = s["positions"].index(p)
        assert s["depths"]["early"][j] == 2 + i and s["depths"]["online"][j] == 3 + i
    unscored = [j for j, p in enumerate(s["positions"]) if p not in ex.scored]
    assert np.isnan([s["depths"]["early"][j] for j in unscored]).all()
    short = example_sequence(rec, "hops", 0, max_tokens=5)
    assert short["positions"] == list(range(max(ex.scored) - 4, max(ex.scored) + 1))


def test_example_sequence_refuses_records_of_another_evaluation_set():
    rec, _ = _example_records(shift=1)
    with pytest.raises(ValueError, match="do not match the evaluation set"):
        example_sequence(rec, "hops", 0)


# --- speed --------------------------------------------------------------------------------------

def _model(mechanism, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(task_class("hops").build_vocab()), max_len=64, d_model=16, n_heads=2, d_ff=32,
                      max_depth=4, mechanism=mechanism, **kw)
    return AniraModel(cfg).eval()


def test_dense_forward_equals_a_fixed_depth_pass():
    model = _model("fixed")
    ids = collate(eval_examples("hops", "in")[:4]).input_ids
    with torch.no_grad():
        ref = model(ids, exit="masked").logits
        ex = model(ids, exit="exit").logits
    assert torch.allclose(dense_forward(model, ids), ref, atol=1e-5)
    assert torch.allclose(dense_forward(model, ids), ex, atol=1e-5)


def test_measure_speedup_ideal_is_max_depth_over_mean_block_calls(tmp_path):
    cfg = RunConfig(task="hops", mechanism="oracle", max_depth=4, d_model=16, n_heads=2, d_ff=32, max_len=64)
    model = AniraModel(cfg.model_config(vocab_size=len(task_class("hops").build_vocab())))
    d = tmp_path / "run-oracle"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    torch.save({"model": model.state_dict()}, d / "checkpoint.pt")
    other = tmp_path / "run-fixed"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"config": to_dict(RunConfig(task="hops", mechanism="fixed"))}))
    threads = torch.get_num_threads()
    out = measure_speedup([d, other], n_examples=6, repeats=2, num_threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert len(out) == 1 and out["mechanism"].iloc[0] == "oracle"  # the fixed run is not timed
    # independent: oracle depth = clamp(1 + difficulty, 1, 4) per position, 1 where nothing is scored
    batch = collate(eval_examples("hops", "in")[:6], feature_names=["difficulty"])
    depth = (1 + batch.features["difficulty"]).clamp(1, 4).float()
    r = out.iloc[0]
    assert r["mean_depth"] == pytest.approx(float(depth.mean()))
    assert r["ideal_speedup"] == pytest.approx(4 / float(depth.mean()))
    assert r["realized_speedup"] == pytest.approx(r["time_dense_s"] / r["time_exit_s"])
    assert r["time_exit_s"] > 0 and r["time_dense_s"] > 0 and r["time_fixed_s"] > 0
    # Amdahl: the fixed part (embedding + read-out) is paid in full, the loop's share shrinks by d/S
    d, S = float(depth.mean()), 4
    want = r["time_dense_s"] / (r["time_fixed_s"] + (r["time_dense_s"] - r["time_fixed_s"]) * d / S)
    assert r["amdahl_speedup"] == pytest.approx(want)
    assert r["efficiency_amdahl"] == pytest.approx(r["realized_speedup"] / want)


def test_measure_speedup_times_committed_weights(tmp_path):
    """A committed run (weights.pt, no checkpoint) is timed like a run trained here; a run with
    neither is skipped with a message."""
    from anira.train import WEIGHTS_FILE, config_hash, save_weights

    cfg = RunConfig(task="hops", mechanism="online", max_depth=3, d_model=16, n_heads=2, d_ff=32, max_len=64)
    model = AniraModel(cfg.model_config(vocab_size=len(task_class("hops").build_vocab())))
    d = tmp_path / "committed"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"config": to_dict(cfg), "config_hash": config_hash(cfg)}))
    save_weights(model, d / WEIGHTS_FILE, config_hash(cfg))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    out = measure_speedup([d, bare], n_examples=4, repeats=1, num_threads=1)
    assert list(out["run_id"]) == ["committed"] and out["realized_speedup"].iloc[0] > 0


# --- plots added for the notebooks ---------------------------------------------------------------

def test_fixed_baselines_get_one_line_per_depth(recs):
    size = by_size(with_fixed_depth(recs), groups=["task", "mechanism", "fixed_depth"], boot=B)
    fig = P.plot_generalization(size)
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert "fixed depth 2 (dense)" in labels and "fixed depth 8 (dense)" in labels
    plt.close(fig)


def test_example_heatmaps_one_panel_per_sequence():
    rec, _ = _example_records()
    seqs = [example_sequence(rec, "hops", 0, max_tokens=m) | {"title": f"m={m}"} for m in (6, 12)]
    fig = P.plot_example_heatmaps(seqs, max_depth=6)
    heat = [ax for ax in fig.axes if ax.get_title().startswith("m=")]
    assert [ax.get_title().split(";")[0] for ax in heat] == ["m=6", "m=12"]
    assert "white cells: tokens not scored" in heat[0].get_title()
    assert [len(ax.get_xticks()) for ax in heat] == [6, 12]
    plt.close(fig)
    with pytest.raises(ValueError, match="sequences is empty"):
        P.plot_example_heatmaps([])


def _logged_run(path, task, mechanism, seed, evals, halt_start):
    """A run folder as the trainer leaves it: config.json, log.jsonl (train rows between eval rows),
    summary.json; ``evals`` = [(step, acc, mean_depth, rho or None)]."""
    from anira.train import config_hash

    cfg = RunConfig(task=task, mechanism=mechanism, seed=seed, **({"fixed_depth": 6} if mechanism == "fixed" else {}))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": to_dict(cfg), "config_hash": config_hash(cfg)}))
    lines = []
    for step, acc, depth, rho in evals:
        lines.append({"step": step, "kind": "train", "loss": 1.0, "acc": 0.0, "mean_depth": 9.0})
        lines.append({"step": step, "kind": "eval", "split": "in", "mode": "exit", "acc": acc, "mean_depth": depth,
                      "rho": rho, "per_difficulty": {}})
    (path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (path / "summary.json").write_text(json.dumps({"halt_start": halt_start}))
    return config_hash(cfg)


def test_training_curves_read_the_logged_evaluations_and_plot_one_line_per_run(tmp_path):
    from anira.analysis import training_curves

    h_on = _logged_run(tmp_path / "on", "hops", "online", 0, [(250, 0.5, 6.0, None), (500, 0.9, 4.5, 0.6)], 300)
    h_on1 = _logged_run(tmp_path / "on1", "hops", "online", 1, [(250, 0.4, 6.0, None), (500, 0.8, 5.0, 0.3)], 250)
    h_fx = _logged_run(tmp_path / "fx", "hops", "fixed", 0, [(250, 0.7, 6.0, None)], None)
    c = training_curves([tmp_path / "fx", tmp_path / "on1", tmp_path / "on"])
    assert list(c.columns) == ["task", "mechanism", "seed", "run_id", "step", "accuracy", "mean_depth", "rho",
                               "halt_start"]
    assert list(zip(c.mechanism, c.seed, c.step)) == [("fixed", 0, 250), ("online", 0, 250), ("online", 0, 500),
                                                      ("online", 1, 250), ("online", 1, 500)]
    assert list(c.run_id) == [h_fx, h_on, h_on, h_on1, h_on1]
    assert c.accuracy.tolist() == [0.7, 0.5, 0.9, 0.4, 0.8]  # the eval rows, not the train rows
    assert c.mean_depth.tolist() == [6.0, 6.0, 4.5, 6.0, 5.0]
    assert c.rho.isna().tolist() == [True, True, False, True, False] and c.rho.iloc[2] == 0.6
    assert np.isnan(c.halt_start.iloc[0]) and c.halt_start.iloc[1:].tolist() == [300, 300, 250, 250]
    fig = P.plot_alignment_over_training(c[c.mechanism == "online"])
    axes = fig.axes
    assert len(axes) == 3 and axes[0].get_title() == "hops" and axes[2].get_xlabel() == "optimizer step"
    # 2 runs + 2 halting-start markers (+ the rho = 0 line; + the legend's halting-start entry on the first panel)
    assert [len(ax.get_lines()) for ax in axes] == [5, 4, 5]
    texts = [t.get_text() for t in fig.legends[0].texts]  # seeds told apart; halting start in the legend
    assert texts[:2] == ["online (ANIRA-O), seed 0", "online (ANIRA-O), seed 1"] and len(texts) == 3
    assert "halting" in texts[2]
    plt.close(fig)
    with pytest.raises(ValueError, match="run_dirs"):
        training_curves([tmp_path / "missing"])
