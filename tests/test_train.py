"""Trainer tests at toy scale: validation, hashing, determinism, resume, NaN stop, records."""
from __future__ import annotations

import gzip
import json
import os
import signal

import pandas as pd
import pytest
import torch

import anira.train as tr
from anira.config import to_dict
from anira.tasks import make_task
from anira.train import RunConfig, config_hash, evaluate, run

TASK = "hops"
REAL_LOAD_EVAL_SETS = tr.load_eval_sets  # before the autouse fixture below replaces it


def tiny(**kw) -> RunConfig:
    base = dict(task=TASK, d_model=16, n_heads=2, d_ff=32, max_depth=3, steps=6, batch_size=4, warmup_steps=2,
                eval_every=3, eval_examples=4, ckpt_every=2, log_every=1, ds_warmup_steps=2, progress=False,
                num_threads=1, eval_batch_size=8, ds_until_acc=None)  # the gate: its own tests
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(autouse=True)
def small_eval_sets(monkeypatch):
    """Frozen-set stand-ins: 6 in-range and 4 extrapolation examples (the real files are large)."""
    cache = {}

    def fake(task, n_fallback=512):
        key = task
        if key not in cache:
            cache[key] = {"in": make_task(task, range="train").generate(6, seed=1),
                          "out": make_task(task, range="extrap").generate(4, seed=2)}
        return cache[key]

    monkeypatch.setattr(tr, "load_eval_sets", fake)


def weights(out_dir):
    return torch.load(out_dir / "checkpoint.pt", weights_only=False)["model"]


def log_rows(out_dir):
    rows = [json.loads(l) for l in (out_dir / "log.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("elapsed")
    return rows


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("max_depth", 0), ("mechanism", "sometimes"), ("beta", -0.1), ("fixed_depth", 0), ("fixed_depth", 4),
    ("lr", 0.0), ("batch_size", 0), ("steps", 0), ("eval_max_depth", 0), ("task", "chess"), ("penalty", "l1"),
    ("pos_encoding", "alibi"), ("halt_threshold", 1.5), ("prior_lambda", 0.0), ("ds_warmup_steps", -1),
    ("min_lr_ratio", 2.0), ("device", "tpu"), ("train_mode", "sparse"), ("d_model", 15),
])
def test_bad_run_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field if field != "d_model" else "d_model"):
        tiny(**{field: value})


def test_random_needs_a_mean_and_from_dict_is_strict():
    with pytest.raises(ValueError, match="random_mean_depth"):
        tiny(mechanism="random")
    with pytest.raises(ValueError, match=r"unknown key.*'betta'"):
        RunConfig.from_dict({"betta": 0.1})
    with pytest.raises(ValueError, match=r"RunConfig\.steps"):
        RunConfig.from_dict({"steps": 1.5})


def test_config_hash_is_stable_and_sensitive():
    a = tiny()
    assert config_hash(a) == config_hash(RunConfig.from_dict(json.loads(json.dumps(to_dict(a)))))
    assert config_hash(a) == config_hash(tiny(progress=True, num_threads=2))  # not result-relevant
    assert config_hash(a) != config_hash(tiny(beta=0.02))
    assert len(config_hash(a)) == 16


# ------------------------------------------------------------------------------------------
def test_same_seed_same_numbers(tmp_path):
    run(tiny(mechanism="online"), tmp_path / "a")
    run(tiny(mechanism="online"), tmp_path / "b")
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")
    ra = pd.read_csv(tmp_path / "a" / "records.csv.gz")
    rb = pd.read_csv(tmp_path / "b" / "records.csv.gz")
    pd.testing.assert_frame_equal(ra, rb)
    run(tiny(mechanism="online", seed=1), tmp_path / "c")
    wc = weights(tmp_path / "c")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("mech,kw", [
    ("online", {}), ("random", {"random_mean_depth": 1.5}), ("early", {"ds_until_acc": 0.05}),
    ("fixed", {"fixed_depth": 2}),
])
def test_resume_gives_the_same_final_weights(tmp_path, mech, kw):
    cfg = tiny(mechanism=mech, **kw)
    run(cfg, tmp_path / "full")
    part = run(cfg, tmp_path / "resumed", interrupt_at=2)
    assert part == {"interrupted_at": 2}
    assert not (tmp_path / "resumed" / "summary.json").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 2
    run(cfg, tmp_path / "resumed")
    wa, wb = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert log_rows(tmp_path / "full") == log_rows(tmp_path / "resumed")


@pytest.mark.parametrize("how", ["SIGUSR2", "SIGTERM", "request"])
def test_a_checkpoint_asked_for_between_two_log_rows_resumes_exactly(tmp_path, monkeypatch, how):
    """Slurm's warning (SIGUSR2), a requeue's SIGTERM or a request file (what the Slurm job process
    writes) makes the loop save the step it is at, not the last ``ckpt_every`` one; resuming there,
    between two log rows and before the halting gate decided, gives the uninterrupted run's weights,
    log and byte-identical records."""
    cfg = tiny(mechanism="early", ds_until_acc=0.05, ds_warmup_steps=4, steps=9, ckpt_every=100, log_every=3)
    run(cfg, tmp_path / "full")
    out = tmp_path / "cut"
    clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip_and_ask(*a, **k):  # called once per optimizer step
        calls.append(1)
        if len(calls) == 5:
            if how == "request":
                (out / ".checkpoint_request").write_text("pid 1\n")
            else:
                os.kill(os.getpid(), getattr(signal, how))  # the handler runs before the next step
        return clip(*a, **k)

    monkeypatch.setenv("SLURM_JOB_ID", "1")  # in a Slurm job SIGTERM does not end the trainer (Slurm will)
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_ask)
    assert run(cfg, out, interrupt_at=1) == {"interrupted_at": 5}  # the first checkpoint is the asked one
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5
    assert {s: signal.getsignal(s) for s in before} == before  # the trainer's handlers are gone again
    assert not (out / ".checkpoint_request").exists() and not (out / ".training").exists()
    run(cfg, out)
    wa, wb = weights(tmp_path / "full"), weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert log_rows(tmp_path / "full") == log_rows(out)
    assert (tmp_path / "full" / "records.csv.gz").read_bytes() == (out / "records.csv.gz").read_bytes()


def test_sigterm_outside_slurm_saves_the_step_then_terminates(tmp_path):
    """Outside a Slurm job SIGTERM keeps its meaning, after the trainer saved the step it was at."""
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cmd = [sys.executable, "-m", "anira.train", "--out", str(out), "task=hops", "steps=100000", "d_model=16",
           "n_heads=2", "d_ff=32", "max_depth=3", "batch_size=4", "ckpt_every=1000000", "eval_every=1000000",
           "progress=false", "num_threads=1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ((out / ".training").exists() and (out / "log.jsonl").exists()):
            assert proc.poll() is None and time.time() < deadline, "the trainer did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        err = proc.communicate()[1]
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert 1 <= step < 100000 and f"checkpoint at step {step} of 100000 (SIGTERM)" in err


def test_finished_run_is_cached_and_other_config_refused(tmp_path, monkeypatch):
    cfg = tiny(mechanism="fixed", steps=2, eval_every=2)
    first = run(cfg, tmp_path)
    monkeypatch.setattr(tr, "make_optimizer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert run(cfg, tmp_path) == first
    with pytest.raises(ValueError, match="config hash"):
        run(tiny(mechanism="fixed", steps=3), tmp_path)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = tr.task_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(tr, "task_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss.*step 3.*checkpoint.*step 2"):
        run(tiny(mechanism="fixed"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (tmp_path / "summary.json").exists()


# ------------------------------------------------------------------------------------------
def test_summary_records_the_eval_data_it_was_scored_on(tmp_path):
    cfg = tiny(steps=2, eval_every=2)
    summary = run(cfg, tmp_path)
    assert summary["inputs_sha256"] == tr.inputs_fingerprint(cfg)
    sets = tr.load_eval_sets(cfg.task)
    changed = {"in": sets["in"][:-1], "out": sets["out"]}
    assert tr.eval_sets_sha256(changed) != summary["inputs_sha256"]


def test_outputs_records_and_summary(tmp_path):
    cfg = tiny(mechanism="online", eval_max_depth=5)
    summary = run(cfg, tmp_path)
    for name in ("config.json", "checkpoint.pt", "log.jsonl", "records.csv.gz", "summary.json"):
        assert (tmp_path / name).exists()
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["config_hash"] == config_hash(cfg) and "torch" in meta["versions"] and "argv" in meta
    with gzip.open(tmp_path / "records.csv.gz") as f:
        rec = pd.read_csv(f)
    sets = tr.load_eval_sets(cfg.task)
    n_in, n_out = (sum(len(e.scored) for e in sets[s]) for s in ("in", "out"))
    assert len(rec) == 2 * (n_in + n_out)  # every scored token, at max_depth and at eval_max_depth
    assert set(rec["eval_max_depth"]) == {3, 5} and set(rec["split"]) == {"in", "out"}
    for col in ("run_id", "task", "mechanism", "seed", "beta", "max_depth", "example", "position", "target", "pred",
                "correct", "loss", "depth", "expected_depth", "p_entropy", "p_halt", "block_calls", "difficulty", "size",
                "is_answer", *make_task(TASK).feature_names()):
        assert col in rec.columns, col
    assert (rec["depth"] == rec["block_calls"]).all()
    assert (rec["correct"] == (rec["pred"] == rec["target"])).all()
    in3 = rec[(rec.split == "in") & (rec.eval_max_depth == 3)]
    assert summary["in"]["acc"] == pytest.approx(in3[in3.is_answer == 1]["correct"].mean())
    assert summary["in"]["mean_depth"] == pytest.approx(in3[in3.is_answer == 1]["depth"].mean())
    assert "in@5" in summary and "out" in summary
    rows = log_rows(tmp_path)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 7))
    assert all(sum(r["depth_hist"]) > 0 and len(r["depth_hist"]) == 3 for r in train_rows)
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [3, 6]


def test_evaluate_matches_a_direct_forward_and_extra_depth(tmp_path):
    cfg = tiny(mechanism="fixed")
    task, model = tr.build(cfg)
    exs = task.generate(5, seed=3)
    df = evaluate(model, exs, max_depths=(None, 7), batch_size=2, info={"run_id": "x"})
    assert (df[df.eval_max_depth == 7]["depth"] == 7).all() and (df[df.eval_max_depth == 3]["depth"] == 3).all()
    assert (df["run_id"] == "x").all()
    # row values equal a direct one-example forward
    from anira.tasks import collate

    b = collate(exs[:1])
    with torch.no_grad():
        out = model(b.input_ids, exit="exit")
    t = torch.tensor(exs[0].scored) - 1
    row = df[(df.example == 0) & (df.eval_max_depth == 3)]
    assert row["pred"].tolist() == out.logits[0, t].argmax(-1).tolist()


def test_config_hash_of_a_committed_run_is_unchanged():
    """Fields added later are hashed only when set: a committed run's config still hashes to the
    hash it was recorded under (else the cache and the committed results would go stale)."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "data" / "results"
    folders = sorted(p for p in results.glob("*/runs/*") if (p / "config.json").is_file())
    if not folders:
        pytest.skip("no committed results in this checkout")
    for folder in folders:
        doc = json.loads((folder / "config.json").read_text())
        assert config_hash(RunConfig.from_record(doc["config"])) == doc["config_hash"] == folder.name
    # the retired curriculum fields: read with the value every record has, refused with another
    doc = next(d for d in (json.loads((f / "config.json").read_text())["config"] for f in folders) if "curriculum_steps" in d)
    assert {"curriculum_param", "curriculum_start", "curriculum_steps"} <= set(doc)
    with pytest.raises(ValueError, match=r"'curriculum_steps': 4.*retired field"):
        RunConfig.from_record({**doc, "curriculum_steps": 4})
    with pytest.raises(ValueError, match=r"unknown .*curriculum_param"):
        RunConfig.from_dict({"curriculum_param": "max_hops"})  # not a field any more


@pytest.mark.parametrize("mech,kw", [("early", {}), ("online", {}), ("oracle", {}), ("fixed", {})])
def test_difficulty_reaches_only_the_oracle(tmp_path, monkeypatch, mech, kw):
    seen = []
    real = tr.AniraModel.forward

    def spy(self, input_ids, difficulty=None, **k):
        seen.append(difficulty is not None)
        return real(self, input_ids, difficulty=difficulty, **k)

    monkeypatch.setattr(tr.AniraModel, "forward", spy)
    run(tiny(mechanism=mech, steps=2, eval_every=2, **kw), tmp_path)
    assert seen and all(seen) == (mech == "oracle") and any(seen) == (mech == "oracle")


def test_halting_waits_for_learning(tmp_path):
    """ds_until_acc: the warm-up goes on until the full-depth read-out's training accuracy reaches
    the bar (checked at log steps from ds_warmup_steps on); until then the halting head gets no
    gradient and beta is 0; from the step after the switch on, the PonderNet objective is used."""
    never = run(tiny(mechanism="online", ds_until_acc=1.0), tmp_path / "never")
    assert never["halt_start"] is None
    w = weights(tmp_path / "never")
    assert torch.equal(w["halt.weight"], torch.zeros_like(w["halt.weight"]))
    assert all(r.get("beta_t", 0.0) == 0.0 for r in log_rows(tmp_path / "never") if r["kind"] == "train")

    cfg = tiny(mechanism="online", ds_until_acc=0.05, steps=12)
    s = run(cfg, tmp_path / "gate")
    rows = [r for r in log_rows(tmp_path / "gate") if r["kind"] == "train"]
    first = next((r["step"] for r in rows if r["step"] >= cfg.ds_warmup_steps and r["acc_full_depth"] >= 0.05), None)
    assert s["halt_start"] == first
    assert [r["step"] for r in rows if "halt_start" in r] == ([first] if first else [])
    assert all((r["beta_t"] > 0) == (first is not None and r["step"] > first) for r in rows)
    assert fixed_rule_unchanged(tmp_path)


def test_the_halting_gate_counts_answers_only():
    """The gate's accuracy is over the answer tokens: on a language batch whose every free and
    grammar token is predicted wrong and every answer right it is 1.0; on hops (every scored token
    an answer) it is the accuracy over every scored token."""
    from anira.tasks.base import collate

    for task, want_all in (("language", False), ("hops", True)):
        t = make_task(task)
        batch = collate(t.generate(4, seed=1), feature_names=["difficulty", "is_answer"])
        answers = batch.loss_mask & (batch.features["is_answer"] > 0)
        wrong = (batch.targets + 1) % len(t.vocab)
        pred = torch.where(answers, batch.targets, wrong)
        logits = torch.nn.functional.one_hot(pred, len(t.vocab)).float()
        right, total = tr.gate_counts(logits, batch)
        assert total == int(answers.sum()) > 0 and right == total
        assert (total == int(batch.loss_mask.sum())) == want_all


def fixed_rule_unchanged(tmp_path):
    """Without ds_until_acc the switch is at ds_warmup_steps, as before the gate existed."""
    run(tiny(mechanism="online"), tmp_path / "fixed_rule")
    rows = [r for r in log_rows(tmp_path / "fixed_rule") if r["kind"] == "train"]
    return all((r["beta_t"] > 0) == (r["step"] > 2) for r in rows) and "halt_start" not in str(rows)


def test_operating_point_is_chosen_on_a_validation_split_by_the_fixed_rule(tmp_path, monkeypatch):
    """operating_point="validation": after training, the halting threshold of early/online is chosen on
    examples of the training range drawn with their own seed (never the frozen sets), by the rule
    (least mean depth among the thresholds within OP_TOLERANCE of full-depth accuracy on the
    multi-step tokens); the final records use it, the summary records it and load_model restores it."""
    seen = []
    real_generate = tr.make_task("hops", range="train").__class__.generate

    def spy(self, n, seed):
        seen.append(seed)
        return real_generate(self, n, seed)

    monkeypatch.setattr(tr, "VALIDATION_EXAMPLES", 8)
    monkeypatch.setattr(type(make_task("hops", range="train")), "generate", spy)
    cfg = tiny(mechanism="online", operating_point="validation", halt_bias_init=0.0)
    assert config_hash(cfg) != config_hash(tiny(mechanism="online", halt_bias_init=0.0))
    summary = run(cfg, tmp_path / "r")
    op = summary["operating_point"]
    assert seen[-1] == tr.VALIDATION_SEED not in seen[:-1]  # the stand-in frozen sets are drawn first (fixture)
    from anira.data import eval_seed
    assert op["seed"] == tr.VALIDATION_SEED and all(eval_seed(t, sp) != tr.VALIDATION_SEED
                                                    for t in ("hops", "addition", "toposort", "language") for sp in ("in", "out"))
    assert [g["threshold"] for g in op["grid"]] == list(tr.OP_THRESHOLDS)
    ok = [g for g in op["grid"] if g["acc_multi"] >= op["acc_multi_full_depth"] - tr.OP_TOLERANCE - 1e-12]
    assert op["met"] == bool(ok)
    if ok:
        assert op["threshold"] == min(ok, key=lambda g: (g["mean_depth"], -g["threshold"]))["threshold"]
    depths = [g["mean_depth"] for g in op["grid"]]
    assert depths == sorted(depths)  # a higher threshold never halts earlier
    _, model = tr.load_model(tmp_path / "r")
    assert model.cfg.halt_threshold == op["threshold"]
    rec = pd.read_csv(tmp_path / "r" / "records.csv.gz")
    again = evaluate(model, tr.load_eval_sets(cfg.task)["in"], batch_size=cfg.eval_batch_size, seed=cfg.seed + 2)
    inn = rec[(rec.split == "in") & (rec.eval_max_depth == rec.max_depth)]
    assert inn["depth"].tolist() == again["depth"].tolist()  # the records were scored at the chosen threshold
    # fixed runs have nothing to choose; "fixed" (the default) keeps halt_threshold and hashes as before
    assert "operating_point" not in run(tiny(mechanism="fixed", fixed_depth=2, operating_point="validation"), tmp_path / "f")
    with pytest.raises(ValueError, match="operating_point"):
        tiny(operating_point="best")


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    """Two processes training one run folder would both write its checkpoint, log and records: the
    second is refused while the first (its mark: host and pid) is alive; a mark left by a process
    that has ended, or by another host, does not block a resume."""
    import platform
    import subprocess
    import sys

    cfg = tiny(mechanism="fixed", fixed_depth=2)
    out = tmp_path / "r"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / tr.TRAINING_MARK).write_text(f"{platform.node()} {alive.pid}\n")
        with pytest.raises(RuntimeError, match=rf"being trained by process {alive.pid} on this host"):
            run(cfg, out)
        assert not (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    finally:
        alive.kill()
        alive.wait()
    run(cfg, out)  # the mark of an ended process: resumed as usual
    assert (out / "summary.json").exists() and not (out / tr.TRAINING_MARK).exists()
    (out2 := tmp_path / "s").mkdir()
    (out2 / tr.TRAINING_MARK).write_text(f"another-host {os.getpid()}\n")
    run(cfg, out2)
    assert (out2 / "summary.json").exists()


# ------------------------------------------------------------------------------------------
# the trained weights alone (what a committed study ships), loaded without a checkpoint
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["online", "random"])
def test_exported_weights_load_without_a_checkpoint_and_reproduce_the_records(tmp_path, mechanism):
    from anira.pipeline.export import export_weights

    cfg = tiny(mechanism=mechanism, eval_max_depth=4, **({"random_mean_depth": 2.0} if mechanism == "random" else {}))
    run(cfg, tmp_path / "r")
    dest = tmp_path / "shipped"
    dest.mkdir()
    for name in ("config.json", "summary.json", "records.csv.gz"):
        (dest / name).write_bytes((tmp_path / "r" / name).read_bytes())
    info = export_weights(tmp_path / "r", dest)
    assert info["dtype"] in tr.WEIGHT_DTYPES and (info["float16_differs"] is None) == (info["dtype"] == "float16")
    saved = torch.load(dest / tr.WEIGHTS_FILE, weights_only=True)
    assert saved["config_hash"] == config_hash(cfg) and "optimizer" not in saved
    assert {v.dtype for v in saved["state_dict"].values() if v.is_floating_point()} == {getattr(torch, info["dtype"])}
    committed = pd.read_csv(dest / "records.csv.gz")
    assert tr.records_differ(committed, tr.rescore(dest)) is None  # from weights.pt alone: same predictions and depths
    # the check can fail: one changed prediction or one row less is reported
    changed = committed.copy()
    changed.loc[3, "pred"] = changed.loc[3, "pred"] + 1
    assert "1 of" in tr.records_differ(changed, committed) and "'pred'" in tr.records_differ(changed, committed)
    assert "rows instead of" in tr.records_differ(committed, committed.iloc[1:])
    # an exported run is exported again as it is
    again = tmp_path / "again"
    again.mkdir()
    assert export_weights(dest, again)["dtype"] == info["dtype"]
    assert (again / tr.WEIGHTS_FILE).read_bytes() == (dest / tr.WEIGHTS_FILE).read_bytes()


def test_load_model_names_what_is_missing_or_mismatched(tmp_path):
    cfg = tiny(mechanism="fixed", fixed_depth=2)
    run(cfg, tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"neither checkpoint.pt nor weights.pt"):
        tr.load_model(tmp_path / "r")
    _, other = tr.build(tiny(mechanism="fixed", fixed_depth=1))
    tr.save_weights(other, tmp_path / "r" / tr.WEIGHTS_FILE, config_hash(tiny(mechanism="fixed", fixed_depth=1)))
    with pytest.raises(ValueError, match=r"weights of config hash .* not " + config_hash(cfg)):
        tr.load_model(tmp_path / "r")
    with pytest.raises(ValueError, match=r"dtype = 'int8'; allowed values: \['float16', 'float32'\]"):
        tr.save_weights(other, tmp_path / "x.pt", "0", dtype="int8")


def test_committed_weights_reproduce_the_committed_records(monkeypatch):
    """Every committed run with trained weights (data/results/*/runs/*/weights.pt), loaded without a
    checkpoint, recomputes its committed records: the same prediction, correctness, depth and block
    count on every scored token of the frozen sets."""
    from pathlib import Path

    monkeypatch.setattr(tr, "load_eval_sets", REAL_LOAD_EVAL_SETS)  # the frozen sets, not this module's stand-ins
    runs = sorted(Path(__file__).resolve().parents[1].glob("data/results/*/runs/*/weights.pt"))
    if not runs:
        pytest.skip("no committed weights in this checkout")
    for w in runs:
        committed = pd.read_csv(w.parent / "records.csv.gz")
        assert tr.records_differ(committed, tr.rescore(w.parent)) is None, w.parent
