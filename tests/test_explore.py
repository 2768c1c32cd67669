"""anira.explore (notebook 08): picking a run, reading an input, and a trace that agrees with the
evaluation the records come from."""
from __future__ import annotations

import numpy as np
import pytest

import anira.train as tr
from anira import explore as X
from anira.tasks import make_task


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = dict(task="hops", d_model=16, n_heads=2, d_ff=32, max_depth=3, steps=4, batch_size=4, warmup_steps=1,
                eval_every=4, eval_examples=4, ckpt_every=4, log_every=2, ds_warmup_steps=1, progress=False,
                num_threads=1, eval_batch_size=8, ds_until_acc=None, halt_bias_init=0.0)
    dirs = {}
    for mech in ("online", "early", "oracle"):
        cfg = tr.RunConfig(mechanism=mech, **base)
        dirs[mech] = root / mech
        tr.run(cfg, dirs[mech])
    return dirs


def test_pick_run_finds_by_task_mechanism_seed_and_names_what_exists(finished):
    dirs = list(finished.values())
    assert X.pick_run(dirs, "hops", "early", 0) == finished["early"]
    assert X.pick_run(dirs, "hops", "online", None) == finished["online"]
    with pytest.raises(ValueError, match=r"no finished run .*seed = 1.*allowed .*hops/early/seed 0"):
        X.pick_run(dirs, "hops", "early", 1)
    with pytest.raises(ValueError, match=r"mechanism = 'late'; allowed values"):
        X.pick_run(dirs, "hops", "late", 0)


def test_read_input_typed_and_generated():
    ids, ex = X.read_input("hops", "a = 3 | ? a")
    vocab = make_task("hops").vocab
    assert ex is None and vocab.decode(ids) == ["<bos>", "a", "=", "3", "|", "?", "a"]
    ids, ex = X.read_input("hops", None, example_seed=5)
    assert ex is not None and ids == ex.tokens == make_task("hops").generate(1, seed=5)[0].tokens
    with pytest.raises(ValueError, match=r"text: \['A', 'x1'\] not in the 'hops' vocabulary; allowed words"):
        X.read_input("hops", "A = x1")


@pytest.mark.parametrize("mech", ["online", "early", "oracle"])
def test_trace_agrees_with_the_evaluation_of_the_same_example(finished, mech):
    cfg, model = tr.load_model(finished[mech])
    ids, ex = X.read_input("hops", None, example_seed=3)
    t = X.trace(model, ids, make_task("hops").vocab.itos, ex)
    rec = tr.evaluate(model, [ex])
    sc = t.table[t.table["scored"]]
    assert sc["depth"].tolist() == rec["depth"].tolist()
    assert sc["correct"].tolist() == rec["correct"].tolist()
    assert sc["difficulty"].tolist() == rec["difficulty"].tolist()
    assert np.allclose(t.p_n.sum(-1), 1.0, atol=1e-5) and t.p_n.shape == (len(ids) - 1, cfg.max_depth)
    assert t.threshold == model.cfg.halt_threshold
    low = X.trace(model, ids, make_task("hops").vocab.itos, ex, threshold=0.05)
    if mech != "oracle":  # a lower threshold never halts later (oracle's depth is its label)
        assert (low.table["depth"] <= t.table["depth"]).all()
    assert model.cfg.halt_threshold == t.threshold  # the override does not stick
    with pytest.raises(ValueError, match=r"threshold = 1.5; allowed values"):
        X.trace(model, ids, make_task("hops").vocab.itos, ex, threshold=1.5)


def test_typed_text_predicts_after_the_last_word_and_oracle_refuses_it(finished):
    _, model = tr.load_model(finished["online"])
    ids, _ = X.read_input("hops", "a = 3 | ? a")
    t = X.trace(model, ids, make_task("hops").vocab.itos)
    assert len(t.table) == len(ids) and t.table["next"].iloc[-1] == "" and t.table["word"].iloc[-1] == "a"
    _, oracle = tr.load_model(finished["oracle"])
    with pytest.raises(ValueError, match="oracle.*generated example"):
        X.trace(oracle, ids, make_task("hops").vocab.itos)
