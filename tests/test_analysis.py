"""Analyses on synthetic records whose answer is known (tests/synthetic.py)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from anira.analysis import (BootstrapConfig, alignment_table, by_size, claims_table, complexity_surprise_regression,
                            complexity_vs_surprise, generator_entropy,
                            depth_by_difficulty, depth_by_kind, evaluate_claims, example_depths, extrapolation_table,
                            beyond_training,
                            feature_importance, load_summaries, mean_by, pareto, pareto_front, run_table, select,
                            speedup_table,
                            summaries_frame, test_time_depth, timing_decomposition,
                            weighted_spearman, width_table)
from anira.analysis import claims as C
from anira.analysis._stats import resample_counts
from synthetic import DYNAMIC, STATIC, synthetic_records  # tests/synthetic.py

B = BootstrapConfig(n_boot=300, seed=0)


@pytest.fixture(scope="module")
def recs():
    return synthetic_records(tasks=("toposort", "hops"), seeds=(0, 1), n_examples=30, n_tokens=10,
                             depth_mode={"early": "static", "online": "difficulty", "random": "random",
                                         "fixed": "constant"}, eval_depths=(12,))


# --- statistics primitives ---------------------------------------------------------------------

def test_weighted_spearman_matches_scipy_unit_and_repeated_weights():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 80).astype(float), rng.normal(size=80).round(1)
    assert weighted_spearman(x, y, np.ones((1, 80)))[0] == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    W = rng.integers(0, 4, (3, 80)).astype(float)
    got = weighted_spearman(x, y, W)
    for b in range(3):
        ref = scipy.stats.spearmanr(np.repeat(x, W[b].astype(int)), np.repeat(y, W[b].astype(int)))[0]
        assert got[b] == pytest.approx(ref, abs=1e-10)


def test_contingency_fast_path_equals_token_path():
    from anira.analysis._stats import _run_spearman
    rng = np.random.default_rng(4)
    x, y = rng.integers(1, 7, 300).astype(float), rng.integers(0, 5, 300).astype(float)
    cluster = np.repeat(np.arange(30), 10)
    K = resample_counts(rng, np.zeros(30, dtype=int), 40)
    fast = _run_spearman(x, y, cluster, K, chunk=10**6)
    slow = _run_spearman(x, y, cluster, K, chunk=10**6, exact_reps=True, max_cells=0)
    assert fast[0] == pytest.approx(slow[0], abs=1e-12) and np.allclose(fast[1], slow[1], atol=1e-12)
    assert fast[0] == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    loss = x * 0.3 + rng.standard_normal(300)  # continuous: replicates on quantile bins, point exact
    coarse = _run_spearman(x, loss, cluster, K, chunk=10**6, max_cells=6 * 64)
    exact = _run_spearman(x, loss, cluster, K, chunk=10**6, exact_reps=True)
    assert coarse[0] == exact[0] == pytest.approx(scipy.stats.spearmanr(x, loss)[0], abs=1e-12)
    assert np.abs(coarse[1] - exact[1]).max() < 0.01


def test_weighted_spearman_constant_depth_is_zero_constant_target_is_nan():
    y = np.arange(10.0)
    assert weighted_spearman(np.full(10, 3.0), y, np.ones((1, 10)))[0] == 0.0
    assert np.isnan(weighted_spearman(y, np.full(10, 3.0), np.ones((1, 10)))[0])


def test_resample_counts_keep_strata_sizes_and_are_seeded():
    strata = np.array([0, 0, 0, 1, 1, 2])
    K = resample_counts(np.random.default_rng(5), strata, 50)
    assert np.all(K[:, :3].sum(1) == 3) and np.all(K[:, 3:5].sum(1) == 2) and np.all(K[:, 5] == 1)
    assert np.array_equal(K, resample_counts(np.random.default_rng(5), strata, 50))


def test_sequence_bootstrap_matches_scipy_bootstrap_of_sequence_means():
    # tokens of a sequence share its depth: the right CI is that of n_seq sequence means, far wider
    # than a token-level CI would be
    rng = np.random.default_rng(0)
    n_seq, n_tok = 60, 20
    seq_depth = rng.normal(3, 1, n_seq)
    df = pd.DataFrame(dict(run_id="r", task="t", mechanism="online", split="in",
                           example=np.repeat(np.arange(n_seq), n_tok), depth=np.repeat(seq_depth, n_tok), cell=0))
    out = mean_by(df, "depth", ["cell"], ["task", "mechanism"], BootstrapConfig(n_boot=4000, seed=1)).iloc[0]
    ref = scipy.stats.bootstrap((seq_depth,), np.mean, n_resamples=4000, method="percentile",
                                random_state=np.random.default_rng(2)).confidence_interval
    assert out["mean"] == pytest.approx(seq_depth.mean())
    assert out["ci_hi"] - out["ci_lo"] == pytest.approx(ref.high - ref.low, rel=0.12)
    assert out["ci_lo"] == pytest.approx(ref.low, abs=0.06) and out["ci_hi"] == pytest.approx(ref.high, abs=0.06)
    token_se = seq_depth.repeat(n_tok).std() / np.sqrt(n_seq * n_tok)
    assert out["ci_hi"] - out["ci_lo"] > 3 * (2 * 1.96 * token_se)


def test_mean_over_seeds_and_seed_spread():
    rows = []
    for run, off in (("a", 1.0), ("b", 3.0), ("c", 8.0)):
        rows.append(pd.DataFrame(dict(run_id=run, task="t", mechanism="early", split="in", example=np.arange(20),
                                      depth=off + np.arange(20) % 2, cell=0)))
    out = mean_by(pd.concat(rows), "depth", ["cell"], ["task", "mechanism"], B).iloc[0]
    per_run = np.array([1.5, 3.5, 8.5])
    assert out["mean"] == pytest.approx(per_run.mean())
    assert out["seed_sd"] == pytest.approx(per_run.std(ddof=1))
    assert out["n_seeds"] == 3


# --- alignment -----------------------------------------------------------------------------------

def test_alignment_known_answers(recs):
    tab = alignment_table(recs, boot=B).set_index(["task", "mechanism"])
    on = tab.loc[("toposort", "online")]
    assert on["rho"] > 0.9 and on["rho_lo"] > 0.8  # depth = difficulty + noise
    rnd = tab.loc[("toposort", "random")]
    assert rnd["rho_lo"] < 0 < rnd["rho_hi"]  # independent depth: CI covers 0
    fx = tab.loc[("toposort", "fixed")]
    assert fx["rho"] == 0 and bool(fx["depth_constant"]) and fx["mean_depth"] == 8
    assert 0.85 < on["accuracy"] < 1.0
    ref = recs[(recs.task == "toposort") & (recs.mechanism == "online") & (recs.split == "in")
               & (recs.eval_max_depth == 8)]
    assert on["mean_depth"] == pytest.approx(ref.groupby("run_id")["depth"].mean().mean())


def test_depth_by_difficulty_recovers_the_rule(recs):
    t = depth_by_difficulty(recs, boot=B)
    on = t[(t.task == "hops") & (t.mechanism == "online")].set_index("difficulty")
    # depth = clip(1 + difficulty + round(0.3 N(0,1))): mean within ~0.1 of 1 + d
    assert np.allclose(on["mean_depth"], 1 + on.index, atol=0.15)
    assert (on["ci_lo"] <= on["mean_depth"]).all() and (on["mean_depth"] <= on["ci_hi"]).all()
    assert set(on["n_seeds"]) == {2}


def test_bootstrap_is_deterministic_and_group_stable(recs):
    a = alignment_table(recs, boot=B)
    pd.testing.assert_frame_equal(a, alignment_table(recs, boot=B))
    c = alignment_table(recs, boot=BootstrapConfig(n_boot=300, seed=7))
    assert not np.allclose(a["rho_lo"].fillna(0), c["rho_lo"].fillna(0))
    only = alignment_table(recs[recs.mechanism == "online"], boot=B)
    both = a[a.mechanism == "online"].reset_index(drop=True)
    pd.testing.assert_frame_equal(only, both)  # other groups do not shift this group's CI


def test_mixed_configurations_and_bad_input_are_refused(recs):
    other = recs[recs.mechanism == "online"].assign(beta=0.1, run_id=lambda d: d.run_id + "-b")
    with pytest.raises(ValueError, match="beta"):
        alignment_table(pd.concat([recs, other]), boot=B)
    with pytest.raises(ValueError, match="depth"):
        alignment_table(recs.drop(columns="depth"), boot=B)
    with pytest.raises(ValueError, match="split"):
        select(recs, split="train")
    shallow = recs[recs.mechanism == "fixed"].assign(depth=4, run_id=lambda d: d.run_id + "-d4")
    with pytest.raises(ValueError, match="fixed-depth runs of depths"):
        alignment_table(pd.concat([recs, shallow]), boot=B)
    rt = run_table(pd.concat([recs, shallow]))
    assert sorted(rt[rt.mechanism == "fixed"]["fixed_depth"].unique()) == [4, 8]  # read at the training depth
    assert rt[rt.mechanism != "fixed"]["fixed_depth"].isna().all()


def test_language_kinds_and_complexity_vs_surprise():
    r = synthetic_records(tasks=("language",), seeds=(0,), n_examples=40, n_tokens=10,
                          depth_mode={"online": "difficulty", "early": "surprise", "fixed": "constant"})
    k = depth_by_kind(r, boot=B)
    on = k[k.mechanism == "online"]
    assert on["token_kind"].tolist()[:2] == ["grammar", "free"] and on["token_kind"].iloc[2] == "answer k=1"
    assert on.set_index("token_kind").loc["grammar", "mean_depth"] == pytest.approx(1.0, abs=0.1)
    cs = complexity_vs_surprise(r, mechanisms=("early", "online"), boot=B).set_index("mechanism")
    assert (cs["surprise_source"] == "reference").all()
    assert cs.loc["online", "follows"] == "complexity" and cs.loc["online", "rho_diff_lo"] > 0
    assert cs.loc["early", "follows"] == "surprise" and cs.loc["early", "rho_diff_hi"] < 0
    own = complexity_vs_surprise(r[r.mechanism != "fixed"], mechanisms=("online",), boot=B)
    assert own["surprise_source"].iloc[0] == "own"


@pytest.mark.parametrize("surprise", ["reference", "own", "generator"])
def test_regression_of_depth_on_complexity_and_surprise_together(surprise):
    """Depth built from difficulty is attributed to complexity, depth built from the free tokens
    (the surprising ones) to surprise, and a depth drawn at random to neither: each verdict can
    come out every way, with every surprise source."""
    r = synthetic_records(tasks=("language",), seeds=(0, 1), n_examples=40, n_tokens=10,
                          depth_mode={"online": "difficulty", "early": "surprise", "random": "random",
                                      "fixed": "constant"})
    r = r.assign(uniform=1, n_branching=np.where(r["kind"] == 1, 6, 1))
    reg = complexity_surprise_regression(r, mechanisms=("early", "online", "random"), surprise=surprise,
                                         boot=B).set_index("mechanism")
    assert (reg["surprise_source"] == surprise).all() and (reg["n_seeds"] == 2).all()
    assert reg.loc["online", "follows"] == "complexity" and reg.loc["online", "beta_complexity_lo"] > 0.5
    assert reg.loc["early", "follows"] == "surprise" and reg.loc["early", "beta_surprise_lo"] > 0.5
    assert reg.loc["random", "follows"] == "neither" and reg.loc["random", "r2"] < 0.05
    assert reg.loc["online", "r2"] > 0.5
    with pytest.raises(ValueError, match=r"surprise = 'loss' is not allowed; allowed values: \['reference'"):
        complexity_surprise_regression(r, surprise="loss")


def test_language_claims_come_out_every_way_and_the_controls_as_they_must():
    """The language rows: depth built from difficulty reads "reproduced", depth built from the
    surprising (free-choice) tokens "not reproduced"; the oracle and random sanity rows come out as
    predicted, and a random control in the oracle's place does not."""
    r = synthetic_records(tasks=("language",), seeds=(0, 1), n_examples=40, n_tokens=10,
                          depth_mode={"online": "difficulty", "early": "surprise", "oracle": "difficulty",
                                      "random": "random", "fixed": "constant"})
    r = r.assign(uniform=1, n_branching=np.where(r["kind"] == 1, 6, 1))
    inputs = C.claim_inputs(r, boot=B, n_splits=3)
    assert set(inputs["language"]["surprise_source"]) == {"reference", "own", "generator"}
    by = {c.scope: c for c in C.language_claims(inputs["language"], inputs["language_alignment"])}
    assert by["language / online"].verdict == "reproduced" and by["language / online"].ci_lo > C.LANGUAGE_MARGIN
    assert by["language / early"].verdict == "not reproduced" and "follows surprise" in by["language / early"].note
    assert by["language / oracle"].verdict == "as predicted" and by["language / random"].verdict == "as predicted"
    swapped = inputs["language"].assign(mechanism=inputs["language"]["mechanism"].replace(
        {"oracle": "random", "random": "oracle"}))
    bad = {c.scope: c for c in C.language_claims(swapped, inputs["language_alignment"])}
    assert bad["language / oracle"].verdict == "not as predicted" and bad["language / random"].verdict == "not as predicted"
    # the rows are part of the claims table; without language runs there are none
    assert any(c.scope == "language / online" for c in evaluate_claims(**inputs))
    assert not any(c.scope.startswith("language") for c in evaluate_claims(**_tables()))
    # the learning and room bars apply: a uniform depth is never "reproduced"
    learning = pd.DataFrame([dict(task="language", mechanism="online", seed=0, learned=True, room=True,
                                  depth_varies=False, depth_mean=3.0, depth_sd=0.0, max_depth=6)])
    flat = {c.scope: c for c in C.language_claims(inputs["language"], inputs["language_alignment"], learning)}
    assert flat["language / online"].verdict == "not reproduced" and "saved uniformly" in flat["language / online"].note


def test_generator_entropy_is_known_only_where_the_draw_is_uniform():
    r = pd.DataFrame({"kind": [0, 1, 1, 2], "uniform": [1, 1, 0, 0], "n_branching": [1, 6, 14, 6]})
    ent = generator_entropy(r)
    assert ent.iloc[0] == 0.0 and ent.iloc[1] == pytest.approx(np.log(6)) and np.isnan(ent.iloc[2])
    assert ent.iloc[3] == 0.0  # an answer is fixed by the story


# --- generalization ------------------------------------------------------------------------------

def test_extrapolation_compares_tokens_beyond_training_with_the_hardest_in_range():
    """tokens="beyond": in range the tokens at the largest in-range difficulty k, out of range those
    above k; acc_out_within is the out-of-range accuracy on the tokens needing at most k steps."""
    rows = []
    for split, diffs, correct in (("in", [1, 2, 3, 3], [1, 1, 1, 0]), ("out", [1, 3, 5, 6], [1, 0, 0, 0])):
        for i, (d, c) in enumerate(zip(diffs, correct)):
            rows.append(dict(run_id="r", task="hops", mechanism="online", seed=0, beta=0.1, max_depth=6,
                             eval_max_depth=6, split=split, example=i, position=5, size=4, difficulty=d,
                             is_answer=1, correct=c, depth=d + 1))
    r = pd.DataFrame(rows)
    assert beyond_training(r).tolist() == [False, False, True, True, False, False, True, True]
    e = extrapolation_table(r, boot=B).iloc[0]
    assert e["k"] == 3 and e["acc_in"] == 0.5 and e["acc_out"] == 0.0 and e["acc_out_within"] == 0.5
    assert e["depth_in"] == 4 and e["depth_out"] == 6.5
    a = extrapolation_table(r, boot=B, tokens="all").iloc[0]
    assert a["acc_in"] == 0.75 and a["acc_out"] == 0.25
    with pytest.raises(ValueError, match=r"tokens = 'some'.*'beyond', 'all'"):
        extrapolation_table(r, tokens="some")


def test_width_table_separates_alignment_from_composition():
    """`addition` records with a "wide" split: the one-column digits (floor 1: difficulty <= 1) fail
    there and the chain digits do not, so the one-column row shows the whole drop (CI above 0) and
    the chain row none; depth rises by one step on every wide digit. Records without a wide split
    give an empty table."""
    rows = []
    for seed in (0, 1):
        for split in ("in", "wide"):
            for ex in range(40):
                for pos, d in enumerate([0, 1, 2, 3]):
                    ok = 0 if (split == "wide" and d <= 1) else 1
                    rows.append(dict(run_id=f"r{seed}", task="addition", mechanism="online", seed=seed, beta=0.1,
                                     max_depth=6, eval_max_depth=6, split=split, example=ex, position=pos,
                                     size=8 if split == "in" else 12, difficulty=d, is_answer=1, correct=ok,
                                     depth=d + 1 + (split == "wide")))
    r = pd.DataFrame(rows)
    w = width_table(r, boot=B).set_index("tokens")
    assert list(w.index) == ["chain", "one-column"]
    one, chain = w.loc["one-column"], w.loc["chain"]
    assert one["acc_in"] == 1 and one["acc_wide"] == 0 and one["acc_drop"] == 1 and one["acc_drop_lo"] > 0.9
    assert chain["acc_drop"] == 0 and chain["acc_drop_lo"] == chain["acc_drop_hi"] == 0
    assert one["depth_in"] == 1.5 and one["depth_wide"] == 2.5 and one["depth_increase"] == 1
    assert (w["n_seeds"] == 2).all()
    assert width_table(r[r["split"] == "in"], boot=B).empty


def test_extrapolation_table_and_by_size(recs):
    e = extrapolation_table(recs, boot=B).set_index(["task", "mechanism"])
    row = e.loc[("toposort", "online")]
    assert row["acc_drop"] == pytest.approx(row["acc_in"] - row["acc_out"])
    assert 0.5 < row["acc_drop_lo"] <= row["acc_drop"] <= row["acc_drop_hi"]  # 0.95 -> 0.3
    assert row["depth_increase_lo"] > 0.5  # out-of-range depth + 1 (before clipping)
    fx = e.loc[("toposort", "fixed")]
    assert fx["depth_increase"] == 0 and fx["depth_increase_lo"] == 0 == fx["depth_increase_hi"]
    s = by_size(recs, boot=B)
    assert set(s["split"]) == {"in", "out"} and s[s.split == "in"]["size"].max() < s[s.split == "out"]["size"].min()


def test_test_time_depth_deltas_are_paired(recs):
    t = test_time_depth(recs, boot=B)
    deeper = t[(t.eval_max_depth == 12) & (t.mechanism == "online")]
    # same sequences, same correctness, depth + 1: paired deltas are exact
    assert (deeper["delta_acc"] == 0).all() and (deeper["delta_acc_lo"] == 0).all() and (deeper["delta_acc_hi"] == 0).all()
    assert np.allclose(deeper["delta_depth"], 1.0) and np.allclose(deeper["delta_depth_lo"], 1.0)
    assert (t[t.eval_max_depth == 8]["delta_depth"] == 0).all()


# --- decision timing -----------------------------------------------------------------------------

def test_timing_static_vs_dynamic_known_answers(recs):
    t = timing_decomposition(recs, STATIC, DYNAMIC, boot=B).set_index(["task", "mechanism"])
    e = t.loc[("toposort", "early")]  # depth = 1 + level + is_hub exactly
    assert e["r2_static"] > 0.999 and e["r2_both"] > 0.999
    assert abs(e["unique_dynamic"]) < 0.02 and e["r2_dynamic"] < 0.05
    assert e["dynamic_minus_static_hi"] < -0.9
    r = timing_decomposition(synthetic_records(depth_mode={"online": "dynamic"}, seeds=(0,)), STATIC, DYNAMIC,
                             boot=B).iloc[0]
    assert r["r2_dynamic"] > 0.999 and abs(r["unique_static"]) < 0.02 and r["dynamic_minus_static_lo"] > 0.9
    assert np.isnan(t.loc[("toposort", "fixed"), "r2_both"])  # constant depth: nothing to explain


def test_timing_parts_sum_to_total_and_cv_matches_sklearn(recs):
    t = timing_decomposition(recs, STATIC, DYNAMIC, boot=B)
    ok = t["r2_both"].notna()
    assert ok.sum() >= 4
    total = t["unique_static"] + t["unique_dynamic"] + t["shared"]
    assert np.allclose(total[ok], t["r2_both"][ok], atol=1e-12)
    per = timing_decomposition(recs, STATIC, DYNAMIC, per_run=True, boot=B)
    row = per[(per.task == "hops") & (per.mechanism == "random")].iloc[0]
    run = select(recs, run_id=row["run_id"])
    ref = cross_val_predict(LinearRegression(), run[list(STATIC)].to_numpy(float), run["depth"].to_numpy(float),
                            groups=run["example"].to_numpy(), cv=GroupKFold(5))
    assert row["r2_static"] == pytest.approx(r2_score(run["depth"], ref), abs=1e-9)


def test_feature_importance_ranks_the_true_features(recs):
    fi = feature_importance(recs, STATIC, DYNAMIC)
    e = fi[(fi.task == "toposort") & (fi.mechanism == "early")].set_index("feature")
    assert e["perm_importance"].idxmax() == "level"
    assert e.loc[["frontier_size", "remaining", "size"], "coef_std"].abs().max() < 1e-6
    assert e.loc["level", "kind"] == "static" and e.loc["frontier_size", "kind"] == "dynamic"


def test_example_depths_side_by_side(recs):
    ed = example_depths(recs, "toposort", 3, mechanisms=("early", "online"))
    assert list(ed.columns) == ["position", "target", "difficulty", "early", "online"] and len(ed) == 10
    ref = recs[(recs.task == "toposort") & (recs.mechanism == "early") & (recs.seed == 0) & (recs.example == 3)
               & (recs.split == "in") & (recs.eval_max_depth == 8)].sort_values("position")
    assert ed["early"].tolist() == ref["depth"].tolist()


# --- efficiency ------------------------------------------------------------------------------------

def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(3)
    acc, cost = rng.random(40).round(1), rng.integers(1, 9, 40).astype(float)
    brute = [not any((acc[j] >= acc[i] and cost[j] <= cost[i]) and (acc[j] > acc[i] or cost[j] < cost[i])
                     for j in range(40)) for i in range(40)]
    assert pareto_front(acc, cost).tolist() == brute
    assert pareto_front(np.array([0.9, 0.8, 0.95]), np.array([2.0, 3.0, 8.0])).tolist() == [True, False, True]


def _summaries():
    out = []
    for seed in (0, 1):
        for d, acc, wt in ((2, 0.5, 2.0), (4, 0.8, 4.0), (8, 0.9, 8.0)):
            out.append({"run_id": f"f{d}-{seed}", "accuracy": acc, "mean_depth": d, "wall_time": wt,
                        "config": {"task": "hops", "mechanism": "fixed", "seed": seed, "fixed_depth": d, "max_depth": d}})
        out.append({"run_id": f"o-{seed}", "accuracy": 0.92, "mean_depth": 3.0, "wall_time": 4.0 + seed,
                    "config": {"task": "hops", "mechanism": "online", "seed": seed, "beta": 0.01, "max_depth": 8}})
        out.append({"run_id": f"e-{seed}", "accuracy": 0.7, "mean_depth": 5.0, "wall_time": 6.0,
                    "config": {"task": "hops", "mechanism": "early", "seed": seed, "beta": 0.01, "max_depth": 8}})
    return out


def test_pareto_and_speedup_from_summaries():
    p = pareto(_summaries())
    front = set(zip(p[p.on_front]["mechanism"], p[p.on_front]["fixed_depth"].fillna(-1)))
    assert front == {("fixed", 2.0), ("online", -1)}  # online beats fixed 4 and 8; early is dominated
    assert (p["n_seeds"] == 2).all()
    s = speedup_table(_summaries(), aggregate=False).set_index(["mechanism", "seed"])
    assert s.loc[("online", 0), "ideal_speedup"] == pytest.approx(8 / 3)
    assert s.loc[("online", 1), "realized_speedup"] == pytest.approx(8.0 / 5.0)
    assert s.loc[("online", 0), "dense_source"] == "fixed run"
    agg = speedup_table(_summaries()).set_index("mechanism")
    assert agg.loc["online", "realized_speedup"] == pytest.approx((2.0 + 1.6) / 2)
    with pytest.raises(ValueError, match="accuracy"):
        summaries_frame([{"task": "hops", "mechanism": "online", "mean_depth": 2}])


def test_summaries_in_the_trainer_layout(tmp_path):
    import json
    for name, mech, fd, acc, depth in (("a", "fixed", None, 0.8, 6.0), ("b", "online", None, 0.9, 2.5)):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"run_id": name, "in": {"acc": acc, "mean_depth": depth},
                                                    "out": {"acc": 0.1}, "eval_time_s": depth}))
        (d / "config.json").write_text(json.dumps({"config": {"task": "hops", "mechanism": mech, "seed": 0,
                                                              "beta": 0.01, "max_depth": 6, "fixed_depth": fd}}))
    df = summaries_frame(load_summaries([tmp_path / "a", tmp_path / "b"])).set_index("run_id")
    assert df.loc["a", "fixed_depth"] == 6 and np.isnan(df.loc["a", "beta"])  # fixed_depth None = max_depth
    assert df.loc["b", "accuracy"] == 0.9 and df.loc["b", "wall_time"] == 2.5
    sp = speedup_table(load_summaries([tmp_path / "a", tmp_path / "b"]), aggregate=False).iloc[0]
    assert sp["ideal_speedup"] == pytest.approx(6 / 2.5) and sp["realized_speedup"] == pytest.approx(6 / 2.5)


# --- claims ----------------------------------------------------------------------------------------

def test_interval_and_aggregate_verdicts():
    v = C.interval_verdict
    assert v(0.5, 0.4, 0.6, 0.3, 0.0) == "reproduced"
    assert v(0.5, -0.1, 0.9, 0.3, 0.0) == "inconclusive"
    assert v(0.1, 0.05, 0.2, 0.3, 0.0) == "not reproduced"
    assert v(np.nan, 0, 1, 0.3) == "inconclusive"
    assert v(0.0, 0.0, 0.0, 0.0, strict=False) == "reproduced"
    a = C.aggregate_verdict
    assert a(["reproduced", "reproduced", "not reproduced"]) == "reproduced"
    assert a(["reproduced", "not reproduced", "not reproduced"]) == "not reproduced"
    assert a(["reproduced", "inconclusive", "not reproduced"]) == "inconclusive"
    assert a([]) == "inconclusive"


def _claims(depth_mode, **kw):
    r = synthetic_records(tasks=("toposort", "hops"), seeds=(0,), n_examples=20, depth_mode=depth_mode, **kw)
    return {(c.scope, c.finding.split(":")[0]): c.verdict for c in evaluate_claims(
        alignment_table(r, boot=B), extrapolation_table(r, boot=B), timing_decomposition(r, STATIC, DYNAMIC, boot=B))}


def test_claim_verdicts_flip_when_the_data_flip():
    good = _claims({"early": "static", "online": "dynamic"})
    for task in ("toposort", "hops"):  # timing is judged on every task
        assert good[(f"{task} / early", "Decision timing")] == "reproduced"
        assert good[(f"{task} / online", "Decision timing")] == "reproduced"
    assert good[("all / early", "Decision timing")] == "reproduced"
    assert good[("all / early", "No extrapolation")] == "reproduced"
    swapped = _claims({"early": "dynamic", "online": "static"})
    assert swapped[("toposort / early", "Decision timing")] == "not reproduced"
    assert swapped[("toposort / online", "Decision timing")] == "not reproduced"
    aligned = _claims({"early": "difficulty", "online": "random"})
    assert aligned[("all / early", "Alignment")] == "reproduced"
    assert aligned[("all / online", "Alignment")] == "not reproduced"
    no_collapse = _claims({"early": "difficulty", "online": "difficulty"}, acc_out=0.95)
    assert no_collapse[("all / online", "No extrapolation")] == "not reproduced"
    # out of range the multi-step tokens need 5-8 steps against 4 at most in range: a difficulty-following
    # model spends more there unless it takes 5 off (less depth than on the hardest in-range tokens)
    less_depth = _claims({"early": "difficulty", "online": "difficulty"}, out_extra_depth=-5)
    assert less_depth[("hops / online", "No extrapolation")] == "not reproduced"


def test_constant_depth_timing_is_untestable_never_a_verdict():
    """A mechanism whose depth never varies (or varies on too few tokens) has nothing for static or
    dynamic features to explain: "untestable (no depth variance)", and the aggregate leaves it out."""
    r = synthetic_records(tasks=("toposort",), seeds=(0,), n_examples=20, depth_mode={"early": "constant",
                                                                                    "online": "dynamic"})
    by = {c.scope: c for c in evaluate_claims(timing=timing_decomposition(r, STATIC, DYNAMIC, boot=B))
          if c.finding.startswith("Decision timing")}
    assert by["toposort / early"].verdict == C.DEPTH_CONSTANT and np.isnan(by["toposort / early"].value)
    assert by["toposort / early"].note.startswith("depth SD = 0.000 < 0.2")
    assert by["all / early"].verdict == C.DEPTH_CONSTANT
    assert by["toposort / online"].verdict == "reproduced" and "R^2 static" in by["toposort / online"].note
    # nearly constant: one token in 50 one step shorter (SD 0.14 < 0.2) is untestable too
    near = r.copy()
    e = near["mechanism"] == "early"
    near.loc[e, "depth"] = np.where(np.arange(e.sum()) % 50 == 0, 7, 8)
    near.loc[e & (near["example"] % 2 == 0), "depth"] -= 0  # keep the pattern; depth varies on 2% of tokens
    t = timing_decomposition(near, STATIC, DYNAMIC, boot=B).set_index("mechanism")
    assert 0 < t.loc["early", "depth_sd"] < C.TIMING_MIN_DEPTH_SD
    v, _ = C.timing_rule(t.loc["early"], -1.0)
    assert v == C.DEPTH_CONSTANT


PROGRESS = ("step",)


def _timing_known(mode: str, seed: int = 0) -> pd.DataFrame:
    """Synthetic toposort records with a progress counter ``step`` (position in the output) and depth
    a function of one class only (mode: static, dynamic, progress, random, label)."""
    r = synthetic_records(tasks=("toposort",), seeds=(0,), n_examples=40, depth_mode={"online": "constant"},
                          rng_seed=seed)
    r["step"] = r["position"] - 1
    if mode == "static":
        d = 1 + r["level"] + r["is_hub"]
    elif mode == "dynamic":
        d = 1 + r["frontier_size"]
    elif mode == "progress":
        d = 1 + r["step"] // 2
    elif mode == "label":
        d = 1 + r["difficulty"]
    else:
        d = pd.Series(np.random.default_rng(seed).integers(1, 9, len(r)), index=r.index)
    return r.assign(depth=d.astype(int))


@pytest.mark.parametrize("mode,early,online", [
    ("static", "reproduced", "not reproduced"),
    ("dynamic", "not reproduced", "reproduced"),
    ("progress", "inconclusive", "inconclusive"),  # no static/dynamic signal: progress never counts as dynamic
    ("random", "inconclusive", "inconclusive"),
])
def test_timing_rule_on_known_answers(mode, early, online):
    t = timing_decomposition(_timing_known(mode), STATIC, DYNAMIC, PROGRESS, boot=B).iloc[0]
    assert C.timing_rule(t, -1.0)[0] == early and C.timing_rule(t, 1.0)[0] == online
    if mode == "progress":
        assert t["r2_progress"] > 0.95 and t["r2_both"] < C.TIMING_MIN_R2
        assert t["unique_progress"] > 0.95
        # only with progress on the dynamic side does it look dynamic, and on the static side static
        assert t["dynamic_minus_static_pd"] > 0.9 and t["dynamic_minus_static_ps"] < -0.9
        assert abs(t["dynamic_minus_static"]) < 0.05
    if mode == "random":
        assert t["r2_all"] < C.TIMING_MIN_R2


def test_progress_cannot_carry_a_dynamic_verdict():
    """Depth = dynamic + a large progress effect correlated with nothing else: reproduced for online;
    depth = progress + a small dynamic effect: inconclusive once progress joins the static side."""
    r = _timing_known("dynamic")
    small = r.assign(depth=(1 + 4 * (r["step"] >= 5) + (r["frontier_size"] >= 4)).astype(int))
    t = timing_decomposition(small, STATIC, DYNAMIC, PROGRESS, boot=B).iloc[0]
    assert t["dynamic_minus_static"] > 0 and t["dynamic_minus_static_ps"] < 0
    v, note = C.timing_rule(t, 1.0)
    assert v != "reproduced"


def test_timing_sanity_rows_come_out_as_the_rule_predicts():
    """oracle: depth = f(label) -> its decomposition equals the label's own (rule_prediction);
    random: R^2 ~ 0 -> "as predicted", never a reproduced direction."""
    from anira.analysis.timing import rule_prediction

    r = synthetic_records(tasks=("toposort",), seeds=(0,), n_examples=40,
                          depth_mode={"oracle": "difficulty", "random": "random"}, noise=0.0)
    t = timing_decomposition(r, STATIC, DYNAMIC, boot=B)
    p = rule_prediction(r, boot=B, static=STATIC, dynamic=DYNAMIC)
    rows = {c.scope: c for c in C.timing_claims(t, prediction=p) if c.finding.startswith("Decision timing sanity")}
    assert rows["toposort / oracle"].verdict == "as predicted"
    assert rows["toposort / random"].verdict == "as predicted" and rows["toposort / random"].value < C.TIMING_MIN_R2
    # a broken pipeline (depth shuffled against the features) is caught by the oracle row
    bad = t.copy()
    bad.loc[bad["mechanism"] == "oracle", "dynamic_minus_static"] += 0.1
    rows = {c.scope: c for c in C.timing_claims(bad, prediction=p) if c.finding.startswith("Decision timing sanity")}
    assert rows["toposort / oracle"].verdict == "not as predicted"


def test_timing_linear_and_boosting_and_one_hot():
    """A categorical code (0, 1, 2 with a non-monotone effect) is explained once one-hot encoded;
    gradient boosting finds an interaction the linear model cannot."""
    from anira.analysis.timing import design_matrix

    r = _timing_known("static")
    r = r.assign(code=r["level"] % 3)
    r = r.assign(depth=(1 + 3 * (r["code"] == 1)).astype(int))
    X = design_matrix(r, ["code", "is_hub"], categorical=["code"])
    assert X.shape[1] == 3
    t = timing_decomposition(r, ["code"], DYNAMIC, boot=B).iloc[0]  # numeric code: linear fails
    assert t["r2_static"] < 0.3
    inter = r.assign(depth=(1 + 4 * (r["is_hub"] * (r["frontier_size"] >= 2))).astype(int))
    lin = timing_decomposition(inter, STATIC, DYNAMIC, boot=B).iloc[0]
    gbm = timing_decomposition(inter, STATIC, DYNAMIC, model="boosting", boot=B).iloc[0]
    assert gbm["r2_both"] > 0.95 > lin["r2_both"] + 0.1


def test_missing_data_is_inconclusive_and_table_has_every_field():
    claims = evaluate_claims()
    assert claims and all(c.verdict == "inconclusive" for c in claims)
    t = claims_table(claims)
    assert list(t.columns)[:6] == ["finding", "statistic", "threshold", "comparison", "value", "verdict"]
    assert set(t["verdict"]) <= set(C.VERDICTS)
    assert C.thresholds()["ALIGN_RHO_MIN"] == 0.3 and C.thresholds()["EXTRAP_ACC_DROP_MIN"] == 0.2
    assert set(t["verdict"]) <= set(C.VERDICTS) | set(C.SANITY_VERDICTS)


def test_tables_carry_the_tasks_trivial_floor():
    """by_size and alignment_table put the task's floor (Task.floor on the same answer tokens) beside
    accuracy: on a committed hops run it is the no-composition floor of the frozen in-range set."""
    from pathlib import Path

    from anira.analysis import alignment_table, by_size, load_records
    from anira.tasks.hops import HopsTask

    runs = Path(__file__).resolve().parents[1] / "data" / "results" / "hops_diagnostic" / "runs"
    paths = sorted(runs.glob("*/records.csv.gz"))
    if not paths:
        pytest.skip("no committed diagnostic runs in this checkout")
    rec = load_records(paths[0])
    inn = rec[(rec.split == "in") & (rec.eval_max_depth == rec.max_depth) & (rec.is_answer == 1)]
    want = HopsTask.floor(inn).mean()
    assert 0.5 < want < 0.8
    boot = BootstrapConfig(n_boot=20)
    assert alignment_table(rec, boot=boot)["floor"].iloc[0] == pytest.approx(want)
    sizes = by_size(rec, boot=boot)
    assert sizes["floor"].between(0.2, 1.0).all()
    n = inn.groupby("size").size()
    assert (sizes[sizes.split == "in"].set_index("size")["floor"] * n).sum() / n.sum() == pytest.approx(want)


# --- the learning bar in the claims -----------------------------------------------------------------

def _diagnostic_runs() -> dict[str, pd.DataFrame]:
    """The committed hops diagnostic runs by name: fixed1 (0.47 on the multi-step tokens, floor 0.35),
    fixed6, early, online (seeds 0 and 1); every run but fixed1 is at 1.0 on them."""
    from pathlib import Path

    from anira.analysis import load_records

    runs = Path(__file__).resolve().parents[1] / "data" / "results" / "hops_diagnostic" / "runs"
    paths = sorted(runs.glob("*/records.csv.gz"))
    if not paths:
        pytest.skip("no committed diagnostic runs in this checkout")
    out = {}
    for p in paths:
        r = load_records(p)
        mech, seed = r["mechanism"].iloc[0], int(r["seed"].iloc[0])
        name = f"fixed{int(r['depth'].max())}" if mech == "fixed" else mech
        out[f"{name}_s{seed}"] = r
    return out


def _as_run(rec: pd.DataFrame, run_id: str, **labels) -> pd.DataFrame:
    return rec.assign(run_id=run_id, **labels)


def _with_multi_correct(rec: pd.DataFrame, k: int) -> pd.DataFrame:
    """The run with exactly k of its in-range multi-step tokens (trained depth) correct."""
    from anira.tasks.hops import HopsTask

    rec = rec.copy()
    inn = select(rec, split="in", eval_depth="train")
    multi = inn.index[HopsTask.multi_step(inn).to_numpy()]
    rec.loc[multi, "correct"] = False
    rec.loc[multi[:k], "correct"] = True
    return rec


def test_learning_table_judges_each_run_against_floor_plus_gap():
    from anira.analysis import LEARN_FLOOR_GAP, learning_table
    from anira.analysis.learning import LEARNING_COLUMNS

    runs = _diagnostic_runs()
    t = learning_table(pd.concat(list(runs.values()), ignore_index=True))
    assert list(t.columns) == list(LEARNING_COLUMNS)
    assert LEARN_FLOOR_GAP == 0.15 and C.thresholds()["LEARN_FLOOR_GAP"] == 0.15
    assert len(t) == len(runs) and (t["n_multi"] == 1095).all()
    assert t["floor_multi"].round(3).eq(0.351).all()
    d1 = t[t["fixed_depth"] == 1].iloc[0]
    assert d1["acc_multi"] == pytest.approx(0.4703, abs=1e-4) and d1["learned"] == False  # noqa: E712
    assert d1["bar"] == pytest.approx(d1["floor_multi"] + 0.15) and d1["gap"] < 0.15
    rest = t[t["fixed_depth"] != 1]
    assert rest["acc_multi"].eq(1.0).all() and rest["learned"].all()
    # the bar is sharp: k correct of n passes exactly when k / n >= floor + 0.15
    n, fl = int(d1["n_multi"]), float(d1["floor_multi"])
    k = int(np.ceil((fl + LEARN_FLOOR_GAP) * n))
    at, below = (learning_table(_with_multi_correct(runs["early_s0"], j)).iloc[0] for j in (k, k - 1))
    assert at["learned"] == True and below["learned"] == False  # noqa: E712
    assert below["acc_multi"] < below["bar"] <= at["acc_multi"]
    # no floor (records without the task's feature columns): not judged, and said so
    syn = learning_table(synthetic_records(tasks=("hops",), seeds=(0,), n_examples=5))
    assert syn["learned"].isna().all() and syn["note"].eq("no floor").all()


def _tables(tasks=("hops", "toposort", "addition"), mechs=("early", "online")):
    """Alignment, extrapolation and timing tables in which every finding is reproduced."""
    rows = [dict(task=t, mechanism=m) for t in tasks for m in mechs]
    al = pd.DataFrame([{**r, "rho": 0.6, "rho_lo": 0.5, "rho_hi": 0.7} for r in rows])
    ex = pd.DataFrame([{**r, "acc_drop": 0.5, "acc_drop_lo": 0.4, "acc_drop_hi": 0.6, "depth_increase": 1.0,
                        "depth_increase_lo": 0.5, "depth_increase_hi": 1.5} for r in rows])
    tm = pd.DataFrame([dict(task=t, mechanism="early", dynamic_minus_static=-0.2, dynamic_minus_static_lo=-0.3,
                            dynamic_minus_static_hi=-0.1, r2_both=0.5, r2_size=0.1, r2_static=0.4, r2_dynamic=0.2,
                            unique_static=0.3, unique_dynamic=0.1, shared=0.1, depth_sd=1.0) for t in tasks]
                      + [dict(task=t, mechanism="online", dynamic_minus_static=0.2, dynamic_minus_static_lo=0.1,
                              dynamic_minus_static_hi=0.3, r2_both=0.5, r2_size=0.1, r2_static=0.2, r2_dynamic=0.4,
                              unique_static=0.1, unique_dynamic=0.3, shared=0.1, depth_sd=1.0) for t in tasks])
    return dict(alignment=al, extrapolation=ex, timing=tm)


def test_claims_untestable_exactly_where_a_run_failed_the_learning_bar():
    from anira.analysis import LEARN_FLOOR_GAP, learning_table

    runs = _diagnostic_runs()
    good = learning_table(runs["online_s1"])
    fl, n = float(good["floor_multi"].iloc[0]), int(good["n_multi"].iloc[0])
    k = int(np.ceil((fl + LEARN_FLOOR_GAP) * n))
    hops = learning_table(pd.concat([
        _as_run(runs["fixed1_s0"], "h-online-0", mechanism="online"),  # 0.47 < 0.35 + 0.15: not learned
        _as_run(runs["online_s1"], "h-online-1"),  # the other seed learned: one failing seed is enough
        _as_run(_with_multi_correct(runs["early_s0"], k), "h-early-0"),  # just above the bar: testable
    ], ignore_index=True))
    others = [good.assign(task=t, mechanism=m, run_id=f"{t}-{m}") for t in ("toposort", "addition")
              for m in ("early", "online")]
    # the committed early run is pinned at max depth; room is tested in test_pinned_or_uniform_depth_is_never_reproduced,
    # here only the learning bar is
    learning = pd.concat([hops] + others, ignore_index=True).assign(room=True, depth_varies=True)
    claims = evaluate_claims(**_tables(), learning=learning)
    by = {(c.scope, c.finding.split(":")[0]): c for c in claims}
    untestable = {k for k, c in by.items() if c.verdict == C.UNTESTABLE}
    assert untestable == {("hops / online", "Alignment"), ("hops / online", "No extrapolation"),
                          ("hops / online", "Decision timing")}
    note = by[("hops / online", "Alignment")].note
    assert "fixed" not in note and "online on hops (seed 0): acc 0.470 on 1,095 multi-step tokens < floor 0.351 + 0.15" in note
    assert by[("hops / online", "Alignment")].value == 0.6  # the measured value is still reported
    assert by[("hops / early", "Alignment")].verdict == "reproduced" and by[("hops / early", "Alignment")].note == ""
    # the untestable task counts neither for nor against: 2 of 2 testable tasks
    agg = by[("all / online", "Alignment")]
    assert agg.verdict == "reproduced" and agg.value == 1.0 and "of the 2 testable" in agg.statistic and "hops" in agg.note
    assert agg.threshold == C.TASK_FRACTION and "fraction" in agg.comparison  # a fraction against a fraction
    assert by[("all / early", "Alignment")].value == 1.0
    assert by[("toposort / online", "Decision timing")].verdict == "reproduced"
    assert set(claims_table(claims)["verdict"]) <= set(C.VERDICTS)
    # without a learning table: the old verdicts, no bar applied
    assert all(c.verdict == "reproduced" and "learning" not in c.note for c in evaluate_claims(**_tables()))
    # one below the bar: hops / early becomes untestable too
    below = learning_table(_as_run(_with_multi_correct(runs["early_s0"], k - 1), "h-early-0"))
    learning2 = pd.concat([hops[hops["mechanism"] != "early"], below] + others, ignore_index=True).assign(
        room=True, depth_varies=True)
    by2 = {(c.scope, c.finding.split(":")[0]): c for c in evaluate_claims(**_tables(), learning=learning2)}
    assert by2[("hops / early", "Alignment")].verdict == C.UNTESTABLE
    agg2 = by2[("all / early", "Alignment")]
    assert agg2.value == 1.0 and "of the 2 testable" in agg2.statistic  # the untestable task is left out


def test_aggregate_with_no_testable_task_is_untestable():
    from anira.analysis import learning_table

    failed = learning_table(_diagnostic_runs()["fixed1_s0"].assign(mechanism="online"))
    learning = pd.concat([failed.assign(task=t, run_id=t) for t in ("hops", "toposort", "addition")], ignore_index=True)
    by = {(c.scope, c.finding.split(":")[0]): c for c in evaluate_claims(**_tables(), learning=learning)}
    for finding in ("Alignment", "No extrapolation"):
        assert by[("all / online", finding)].verdict == C.UNTESTABLE
        assert np.isnan(by[("all / online", finding)].value)  # no testable task: no fraction
    assert by[("toposort / online", "Decision timing")].verdict == C.UNTESTABLE
    # early has no run in the learning table: not judged, verdicts kept
    early = by[("hops / early", "Alignment")]
    assert early.verdict == "reproduced" and early.note.startswith("learning bar not judged")


def test_learning_bar_not_judged_without_a_floor_keeps_the_verdicts():
    r = synthetic_records(tasks=("hops",), seeds=(0,), n_examples=20,
                          depth_mode={"early": "difficulty", "online": "random"})
    inputs = C.claim_inputs(r, boot=B, n_splits=3)  # hops only: no timing table
    assert set(inputs) == {"alignment", "extrapolation", "timing", "learning", "timing_prediction", "certificates",
                           "language", "language_alignment"}
    assert inputs["language"] is None and inputs["language_alignment"] is None  # no language runs
    assert inputs["learning"]["learned"].isna().all()
    with_bar = evaluate_claims(**inputs)
    without = evaluate_claims(**{k: v for k, v in inputs.items() if k != "learning"})
    assert [c.verdict for c in with_bar] == [c.verdict for c in without]
    assert C.UNTESTABLE not in [c.verdict for c in with_bar]
    task_rows = [c for c in with_bar if c.scope.startswith("hops")]
    assert task_rows and all("learning bar not judged: no floor" in c.note for c in task_rows)


def test_extrapolation_untestable_where_the_out_of_range_set_is_not_certified():
    """A task whose out-of-range set the bounded reader solves without more steps cannot test "no
    extrapolation": its rows read NOT_CERTIFIED (the note gives the reader's numbers) and the
    aggregate leaves it out; a certified task keeps its verdict; no certificate is said in the note."""
    r = synthetic_records(tasks=("toposort", "hops"), seeds=(0,), n_examples=20,
                          depth_mode={"early": "difficulty", "online": "difficulty"})
    ex = extrapolation_table(r, boot=B)
    ok = {"certified": True, "k": 4, "beyond_reader": 0.2, "n_beyond": 500, "floor_bar": 0.35, "beyond_solved": 0.0}
    bad = {**ok, "certified": False, "beyond_reader": 1.0, "beyond_solved": 1.0}
    by = {c.scope: c for c in C.extrapolation_claims(ex, certificates={"toposort": ok, "hops": bad})}
    assert by["hops / online"].verdict == C.NOT_CERTIFIED and "1.000 solved by a shortcut" in by["hops / online"].note
    assert by["toposort / online"].verdict == "reproduced"
    assert by["all / online"].verdict == "reproduced" and "left out, out-of-range set not certified: hops" in by[
        "all / online"].note
    both_bad = {c.scope: c for c in C.extrapolation_claims(ex, certificates={"toposort": bad, "hops": bad})}
    assert both_bad["all / online"].verdict == C.NOT_CERTIFIED
    unchecked = {c.scope: c for c in C.extrapolation_claims(ex)}
    assert unchecked["hops / online"].verdict == "reproduced" and "no certificate given" in unchecked["hops / online"].note


def test_extrapolation_k_and_within_accuracy_for_groups_with_a_missing_key():
    """Adaptive runs have fixed_depth NaN: k and acc_out_within are still found for their rows."""
    r = synthetic_records(tasks=("hops",), seeds=(0,), n_examples=20, depth_mode={"online": "difficulty"})
    e = extrapolation_table(r.assign(fixed_depth=np.nan), groups=["task", "mechanism", "fixed_depth"], boot=B)
    assert e["k"].tolist() == [4] and e["acc_out_within"].notna().all()


def _with_depth(rec: pd.DataFrame, depth) -> pd.DataFrame:
    """The run with its in-range answer tokens (trained depth) at ``depth`` (a scalar or, per token, an array)."""
    rec = rec.copy()
    inn = select(rec, split="in", eval_depth="train", answer_only=True)
    rec.loc[inn.index, "depth"] = depth if np.isscalar(depth) else np.asarray(depth)[: len(inn)]
    return rec


def test_pinned_or_uniform_depth_is_never_reproduced():
    """Room to allocate (issue depth-used): a run pinned near max depth makes alignment, extrapolation
    and timing "untestable (no room to allocate)"; a run that saves compute uniformly below max depth
    is a real "not reproduced" for alignment and "untestable (no depth variance)" for timing. The same
    tables with a depth that varies below the ceiling stay reproduced, so the bar can go either way."""
    from anira.analysis import learning_table
    from anira.analysis.learning import MIN_DEPTH_SD, ROOM_MAX_FRACTION

    online = _diagnostic_runs()["online_s1"]
    S = int(online["max_depth"].iloc[0])
    n = len(select(online, split="in", eval_depth="train", answer_only=True))
    varied = np.resize([2, 3, 4, 5], n)  # mean 3.5 <= 0.85 S, SD 1.1
    cases = {"pinned": float(S), "uniform": 4.0, "varied": varied}
    tables = {}
    for name, depth in cases.items():
        t = learning_table(_as_run(_with_depth(online, depth), f"h-{name}"))
        tables[name] = pd.concat([t.assign(task=task, mechanism=m) for task in ("hops", "toposort", "addition")
                                  for m in ("early", "online")], ignore_index=True)
    row = {k: v.iloc[0] for k, v in tables.items()}
    assert row["pinned"]["depth_mean"] == S and row["pinned"]["room"] == False  # noqa: E712
    assert row["uniform"]["room"] == True and row["uniform"]["depth_varies"] == False  # noqa: E712
    assert row["varied"]["room"] == True and row["varied"]["depth_varies"] == True  # noqa: E712
    assert row["varied"]["depth_sd"] >= MIN_DEPTH_SD and row["varied"]["depth_mean"] <= ROOM_MAX_FRACTION * S
    # fixed runs are not judged for room: their depth is not a decision
    fixed = learning_table(_diagnostic_runs()["fixed6_s0"])
    assert fixed["room"].isna().all() and fixed["depth_varies"].isna().all()

    def verdicts(learning):
        return {(c.scope, c.finding.split(":")[0]): c for c in evaluate_claims(**_tables(), learning=learning)}

    pinned, uniform, varied = (verdicts(tables[k]) for k in ("pinned", "uniform", "varied"))
    for finding in ("Alignment", "No extrapolation", "Decision timing"):
        assert pinned[("hops / online", finding)].verdict == C.NO_ROOM
        assert pinned[("all / online", finding)].verdict == C.NO_ROOM  # no testable task left
        assert varied[("hops / online", finding)].verdict == "reproduced"
    assert f"> {ROOM_MAX_FRACTION} x max depth {S}" in pinned[("hops / online", "Alignment")].note
    assert uniform[("hops / online", "Alignment")].verdict == "not reproduced"  # the table's rho 0.6 notwithstanding
    assert "saved uniformly" in uniform[("hops / online", "Alignment")].note
    assert uniform[("hops / online", "Decision timing")].verdict == C.DEPTH_CONSTANT
    assert uniform[("hops / online", "No extrapolation")].verdict == "reproduced"  # room to add depth out of range
    # ... but a uniform depth that stays the same out of range reproduces "more compute" only with
    # equality: never "reproduced"
    same = _tables()
    same["extrapolation"] = same["extrapolation"].assign(depth_increase=0.0, depth_increase_lo=0.0, depth_increase_hi=0.0)
    flat = {(c.scope, c.finding.split(":")[0]): c for c in evaluate_claims(**same, learning=tables["uniform"])}
    assert flat[("hops / online", "No extrapolation")].verdict == C.DEPTH_CONSTANT
    assert "not more depth out of range" in flat[("hops / online", "No extrapolation")].note
    # the learning bar comes first: a run that did not learn stays "untestable (not learned)"
    failed = learning_table(_as_run(_with_depth(_diagnostic_runs()["fixed1_s0"], float(S)), "h-f", mechanism="online"))
    both = verdicts(pd.concat([failed, tables["varied"][tables["varied"]["task"] != "hops"]], ignore_index=True))
    assert both[("hops / online", "Alignment")].verdict == C.UNTESTABLE


def test_random_control_matched_in_distribution_not_only_mean():
    """The committed cpu3 hops `random` was drawn from the online run's whole depth histogram
    (``in.depth_probs`` -> ``random_depth_probs``): the table says it is matched. A control matched
    in mean only (two adjacent depths with online's mean, as the second study's `random` was) is
    refused, and drawing again from the histogram lands within the bar."""
    import numpy as np
    import torch

    from anira.analysis.learning import RANDOM_MATCH_TV, random_match_table
    from anira.model import AniraModel, ModelConfig
    from anira.train import depth_probs

    runs = Path(__file__).resolve().parents[1] / "data" / "results" / "cpu3" / "runs"
    paths = {h: runs / h / "records.csv.gz" for h in ("29fd085dee179577", "73d0394cb4f3de59")}  # hops random, online
    if not all(p.is_file() for p in paths.values()):
        pytest.skip("the committed cpu3 study is not in this checkout")
    from anira.analysis import load_records

    rec = pd.concat([load_records(p) for p in paths.values()], ignore_index=True)
    t = random_match_table(rec).iloc[0]
    assert t["online_run_id"] == "73d0394cb4f3de59" and t["tv"] <= RANDOM_MATCH_TV and t["matched"]
    online = select(rec[rec["mechanism"] == "online"], split="in", eval_depth="train", answer_only=True)
    mean = online["depth"].mean()
    lo = int(np.floor(mean))
    two = np.where(np.random.default_rng(0).random(len(online)) < mean - lo, lo + 1, lo)  # mean only
    mean_only = pd.concat([online.assign(run_id="random-mean", mechanism="random", depth=two),
                           rec[rec["mechanism"] == "online"]], ignore_index=True)
    t1 = random_match_table(mean_only).iloc[0]
    assert abs(t1["depth_mean"] - t1["online_depth_mean"]) < 0.05 and t1["tv"] > RANDOM_MATCH_TV and not t1["matched"]
    probs = depth_probs(online["depth"].value_counts().to_dict(), 6)
    m = AniraModel(ModelConfig(vocab_size=11, max_len=64, d_model=16, n_heads=2, d_ff=32, max_depth=6,
                               mechanism="random", random_depth_probs=probs))
    ids = torch.zeros(len(online) // 32 + 1, 32, dtype=torch.long)
    with torch.no_grad():
        drawn = m(ids, exit="exit", generator=torch.Generator().manual_seed(0)).depth.flatten()[: len(online)]
    matched = pd.concat([online.assign(run_id="random-matched", mechanism="random", depth=drawn.numpy()),
                         rec[rec["mechanism"] == "online"]], ignore_index=True)
    t2 = random_match_table(matched).iloc[0]
    assert t2["tv"] <= RANDOM_MATCH_TV / 2 and t2["matched"]
    with pytest.raises(ValueError, match="max_depth = 6"):
        depth_probs({"7": 3}, 6)


def test_aggregate_untestable_for_different_reasons_says_so():
    """An aggregate whose tasks are all untestable, for different reasons, must not borrow one task's
    reason: it reads "untestable (several reasons)" and its note names each task's."""
    parts = {"hops": C.Claim("f", "s", 0.2, "c", 0.5, C.NOT_CERTIFIED),
             "toposort": C.Claim("f", "s", 0.2, "c", 0.5, C.NO_ROOM)}
    agg = C._aggregate("f", "online", parts)
    assert agg.verdict == C.UNTESTABLE_MIXED != C.UNTESTABLE and agg.verdict in C.VERDICTS
    assert "no room to allocate: toposort" in agg.note and "not certified: hops" in agg.note
    same = C._aggregate("f", "online", {t: C.Claim("f", "s", 0.2, "c", 0.5, C.NO_ROOM) for t in ("hops", "addition")})
    assert same.verdict == C.NO_ROOM
