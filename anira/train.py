"""Model-agnostic training loop, evaluation under real early exit, per-token records.

``run(cfg, out_dir)`` trains one ``RunConfig`` (or resumes it from ``out_dir/checkpoint.pt``, or
returns the cached ``summary.json`` when it was already finished with the same config hash) and
writes into ``out_dir``:

    config.json      the config, its hash, argv and library versions
    checkpoint.pt    model, optimizer, scheduler, RNG states and data position (atomic write), every
                     ``ckpt_every`` steps and at once when asked (``CheckpointRequests``: SIGUSR2,
                     SIGTERM or a ``.checkpoint_request`` file), so a job that is stopped keeps its progress
    log.jsonl        every ``log_every`` steps: loss terms, accuracy, mean depth, depth histogram,
                     lr, elapsed; every ``eval_every`` steps an evaluation row (real early exit)
    records.csv.gz   one row per scored token of the frozen eval sets (``evaluate``)
    summary.json     accuracy / depth in and out of the training range, per difficulty, wall time

Optimisation: AdamW, linear warm-up then cosine decay to ``min_lr_ratio * lr``, gradient-norm
clipping. ``early``/``online`` minimise the shared ``PonderLoss``; ``fixed``/``oracle``/``random``
minimise cross-entropy at their imposed depth, trained on the masked path (halted states frozen,
exactly as at inference). The ``difficulty`` feature reaches the model only for ``oracle``.

Training data are ``task.sample(rng)`` draws from ``random.Random(seed)`` -- the same sequence as
``task.stream(seed)`` -- so the data position is the RNG state, saved in the checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from anira.config import (ADAPTIVE, MAX_DEPTH, MECHANISMS, check_choice, check_fields, check_range, from_dict, include_fields,
                          load_yaml, to_dict)
from anira.losses import LossConfig, PonderLoss, task_loss, token_ce
from anira.paths import portable_argv
from anira.model import AniraModel, ModelConfig
from anira.tasks import PAD_ID, TASK_NAMES, Example, Task, collate, make_task, task_class

TRAIN_MODES = ("dense", "frozen")
SUMMARY_VERSION = 1


# the ModelConfig fields a run does not set: the vocabulary comes from the task, and RoPE's base
# was never varied (a new RunConfig field would change every recorded config hash)
_MODEL_FIELDS_NOT_IN_RUN = ("vocab_size", "rope_base")
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in _MODEL_FIELDS_NOT_IN_RUN)
LOSS_FIELDS = tuple(f.name for f in dataclasses.fields(LossConfig))


@dataclass
@include_fields(ModelConfig, LossConfig, exclude=_MODEL_FIELDS_NOT_IN_RUN, after="seed")
class RunConfig:
    """One training run: the task, the model (every ``ModelConfig`` field but ``vocab_size`` and
    ``rope_base``), the objective (every ``LossConfig`` field), optimisation and evaluation.

    The model and loss fields are *generated* from ``ModelConfig``/``LossConfig``
    (``include_fields``): each name, type, default and its "why" comment lives once, in the config
    of the object it configures; ``model_config()``/``loss_config()`` build those configs from them.
    The fields stay flat (``cfg.max_depth``, ``max_depth=8`` on the command line, ``max_depth:`` in
    a profile) rather than nested (``cfg.model.max_depth``) because the flat form is the public
    interface: profiles, notebooks' run_config dicts, the committed ``config.json`` files and
    ``config_hash`` (a sha256 of the flat dict, which must not change for recorded runs) all use it.
    """

    # --- what is trained ---------------------------------------------------------------------
    task: str = "hops"  # registry name
    task_params: dict = field(default_factory=dict)  # overrides of the task's training-range config
    seed: int = 0  # model init, data stream and random-depth draws
    # --- here: the ModelConfig fields (mechanism, depth decision, size), then the LossConfig ones ---
    # --- objective (early/online), beyond LossConfig -------------------------------------------
    # halting waits for learning: after ds_warmup_steps the warm-up goes on until the training accuracy
    # of the full-depth read-out (answer tokens, i.e. every scored token but a language model's grammar
    # and free choices; mean over the last log_every steps, checked every log_every steps) reaches
    # this; None = switch at ds_warmup_steps. Deterministic given the seed.
    ds_until_acc: float | None = 0.95
    # forward path of early/online in training: "dense" (every token's state runs all S steps and
    # attends to the others' full-depth states) or "frozen" (AniraModel exit="frozen": what the other
    # tokens attend to is frozen at the depth they use, as at inference)
    train_mode: Literal["dense", "frozen"] = "dense"
    # --- optimisation ------------------------------------------------------------------------
    steps: int = 2000  # optimizer steps
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.1
    warmup_steps: int = 100  # linear lr warm-up
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm
    # --- evaluation, logging, checkpoints -----------------------------------------------------
    eval_every: int = 250  # periodic evaluation (real early exit) on the frozen in-range set
    eval_examples: int = 256  # examples used by the periodic evaluation (0 = all)
    eval_batch_size: int = 128
    eval_max_depth: int | None = None  # extra test-time depth for the final evaluation (None = off)
    # halting threshold of early/online for the final evaluation: halt_threshold as configured
    # ("fixed"), or chosen after training by the rule of ``choose_operating_point`` on a validation
    # split of its own seed ("validation"); the choice is in summary.json and used by load_model
    operating_point: Literal["fixed", "validation"] = "fixed"
    log_every: int = 50
    ckpt_every: int = 500
    device: Literal["cpu", "cuda"] = "cpu"
    num_threads: int = 2  # torch CPU threads (not part of the config hash)
    progress: bool = True  # tqdm bar (not part of the config hash)

    def __post_init__(self) -> None:
        check_fields(self)  # types first: every check below compares numbers with numbers
        check_choice("task", self.task, TASK_NAMES)
        bad_keys = [k for k in self.task_params if not isinstance(k, str)]
        if bad_keys:
            raise ValueError(f"task_params = {self.task_params!r}: keys must be parameter names (strings), got {bad_keys}")
        check_choice("mechanism", self.mechanism, MECHANISMS)
        # the task is built here, not first inside run(): an unknown or out-of-range task parameter
        # fails before a run folder exists (make_task names the parameter and its allowed range)
        try:
            task = make_task(self.task, range="train", **self.task_params)
        except ValueError as err:
            raise ValueError(f"task_params ({self.task}): {err}") from None
        if self.random_depth_probs is not None:  # ints -> floats: the recorded form (and config hash)
            self.random_depth_probs = tuple(float(p) for p in self.random_depth_probs)
        if self.ds_until_acc is not None and not (isinstance(self.ds_until_acc, (int, float)) and 0.0 < self.ds_until_acc <= 1.0):
            raise ValueError(f"ds_until_acc = {self.ds_until_acc!r} is out of range; allowed: (0, 1] or None")
        check_choice("train_mode", self.train_mode, TRAIN_MODES)
        check_choice("operating_point", self.operating_point, OPERATING_POINTS)
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        if not self.lr > 0:
            raise ValueError(f"lr = {self.lr!r} is out of range; allowed: (0, inf)")
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip = {self.grad_clip!r} is out of range; allowed: (0, inf)")
        check_range("eval_every", self.eval_every, 1)
        check_range("eval_examples", self.eval_examples, 0)
        check_range("eval_batch_size", self.eval_batch_size, 1)
        if self.eval_max_depth is not None:
            check_range("eval_max_depth", self.eval_max_depth, 1, MAX_DEPTH)
        check_range("log_every", self.log_every, 1)
        check_range("ckpt_every", self.ckpt_every, 1)
        check_choice("device", self.device, ("cpu", "cuda"))
        check_range("num_threads", self.num_threads, 1)
        # the model and loss configs validate the rest and name the field
        self.model_config(vocab_size=len(task.vocab))
        self.loss_config()

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})

    def loss_config(self) -> LossConfig:
        return LossConfig(**{k: getattr(self, k) for k in LOSS_FIELDS})

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "") -> "RunConfig":
        return from_dict(cls, values, where=where)

    @classmethod
    def from_record(cls, values: dict[str, Any], where: str = "") -> "RunConfig":
        """The config of a recorded run (``config.json``): a field added after it was recorded takes
        the behaviour it had before the field existed (``_LEGACY_VALUES``), not today's default."""
        retired = {**_RETIRED, **_RETIRED_UNHASHED}
        used = {k: values[k] for k in retired if k in values and values[k] != retired[k]}
        if used:
            raise ValueError(f"{where or 'the record'}: {used} -- a retired field (the hop-count curriculum) that this "
                             f"version no longer trains; allowed: {retired}")
        values = {k: v for k, v in values.items() if k not in retired}
        return from_dict(cls, {**{k: v for k, v in _LEGACY_VALUES.items() if k not in values}, **values}, where=where)


OPERATING_POINTS = ("fixed", "validation")
_UNHASHED = ("num_threads", "progress")
# fields added after results were recorded, with the behaviour they had before they existed: hashed
# only when they differ from it, so the cached and committed runs made before them keep their
# config hash (tests/test_train.py checks a committed record)
_LEGACY_VALUES = {"reinject": "adapter", "step_signal": True, "ds_until_acc": None,
                  "init": "gpt2", "ds_power": 0.0, "prelude_in_loop": True, "operating_point": "fixed"}


# fields removed from RunConfig, with the one value every recorded run had: the hop-count curriculum
# (no profile, script or notebook used it; its code is in the git history before the third study).
# They stay in the config hash with that value, so every recorded run keeps its hash, and a record
# that holds them is read only when it has that value.
_RETIRED = {"curriculum_param": None, "curriculum_start": 1, "curriculum_steps": 0}
_RETIRED_UNHASHED = {"curriculum_values": None}  # was hashed only when set (a legacy value)


def depth_probs(hist: dict, max_depth: int) -> tuple[float, ...]:
    """A depth histogram {depth: count} (keys may be strings, as in summary.json's ``depth_hist``)
    as the probabilities of depths 1..max_depth (summary.json's ``in.depth_probs``): what ``random``
    draws from (``random_depth_probs``) to match an adaptive run's whole depth distribution, not
    only its mean."""
    try:
        counts = {int(k): float(v) for k, v in hist.items()}
    except (TypeError, ValueError):
        raise ValueError(f"depth histogram {hist!r}: must map depths to counts") from None
    bad = sorted(k for k in counts if not 1 <= k <= max_depth)
    total = sum(counts.values())
    if bad or total <= 0 or any(v < 0 for v in counts.values()):
        raise ValueError(f"depth histogram {hist!r}: needs depths in 1..max_depth = {max_depth} "
                         f"and non-negative counts with a positive total")
    return tuple(counts.get(n, 0.0) / total for n in range(1, max_depth + 1))


def config_hash(cfg: RunConfig) -> str:
    """Stable sha256 (first 16 hex digits) of the canonical JSON of every result-relevant field."""
    d = {k: v for k, v in to_dict(cfg).items()
         if k not in _UNHASHED and not (k in _LEGACY_VALUES and v == _LEGACY_VALUES[k])} | _RETIRED
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def load_eval_sets(task: str, n_fallback: int = 512) -> dict[str, list[Example]]:
    """The frozen evaluation sets {"in": ..., "out": ..., and the task's own splits (``Task.ranges``,
    e.g. `addition`'s "wide")} of the task named ``task``; "in" and "out" are generated (with a
    warning) if missing; a task's own split is evaluated where the data folder holds it (an earlier
    design's folder, ``python -m anira.data --earlier DESIGN``, has only "in" and "out")."""
    sets: dict[str, list[Example]] = {}
    for j, (split, rng_name) in enumerate(task_class(task).ranges.items()):
        seed = 10_001 + j
        try:
            from anira.data import load_eval_set

            sets[split] = list(load_eval_set(task, split))
        except (ImportError, FileNotFoundError) as err:
            if split not in ("in", "out"):
                continue
            warnings.warn(f"frozen eval set {task}/{split} unavailable ({err}); generating {n_fallback} examples")
            sets[split] = make_task(task, range=rng_name).generate(n_fallback, seed=seed)
    return sets


_LONGEST: dict[tuple, dict[str, int]] = {}


def _longest_eval_inputs(cfg: RunConfig) -> dict[str, int]:
    """{"in": n, "out": n}: input positions of the longest example of each evaluation set of
    ``cfg.task`` (read once per task and data folder; a profile checks hundreds of runs)."""
    from anira.data import MANIFEST, default_root

    manifest = default_root() / MANIFEST
    key = (cfg.task, str(manifest), manifest.stat().st_mtime_ns if manifest.exists() else None)
    if key not in _LONGEST:
        sets = load_eval_sets(cfg.task)
        _LONGEST[key] = {split: max(len(e.tokens) - 1 for e in exs) for split, exs in sets.items()}
    return _LONGEST[key]


def eval_sets_sha256(sets: dict[str, list[Example]]) -> str:
    """sha256 of the evaluation examples' content (tokens, scored positions, features, size)."""
    h = hashlib.sha256()
    for split in sorted(sets):
        h.update(split.encode())
        for ex in sets[split]:
            h.update(json.dumps(ex.to_json(), sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def inputs_fingerprint(cfg: RunConfig) -> str:
    """What a finished run was evaluated on besides its config: the frozen sets of its task.

    Written into ``summary.json`` as ``inputs_sha256``; the study driver refuses to reuse a cached
    run whose fingerprint differs from the current data (e.g. after the sets were regenerated)."""
    return eval_sets_sha256(load_eval_sets(cfg.task))


def _difficulty(cfg_mechanism: str, batch) -> torch.Tensor | None:
    """Only the oracle ever sees the ground-truth difficulty."""
    return batch.features["difficulty"] if cfg_mechanism == "oracle" else None


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


@torch.no_grad()
def evaluate(
    model: AniraModel,
    examples: Sequence[Example],
    *,
    max_depths: Sequence[int | None] = (None,),
    mode: Literal["dense", "masked", "exit"] = "exit",
    batch_size: int = 128,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per scored token of ``examples``, for each call-time max depth in ``max_depths``.

    Columns: ``info`` keys (run id, task, ...), eval_max_depth, example, target, pred, correct,
    loss, depth, expected_depth, p_entropy (entropy of p_n), p_halt (cumulative halting
    probability at the depth used), block_calls, then every feature of the example's records.
    ``seed`` fixes the ``random`` mechanism's draws. Examples are batched by length (padding is
    on the right and attention is causal, so batching does not change any scored prediction).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    frames = []
    for md in max_depths:
        gen = torch.Generator().manual_seed(seed)
        cols: dict[str, list] = {k: [] for k in (
            "example", "target", "pred", "correct", "loss", "depth", "expected_depth", "p_entropy", "p_halt", "block_calls")}
        feats: list[dict] = []
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            exs = [examples[i] for i in idx]
            batch = collate(exs, feature_names=["difficulty"]).to(device)
            out = model(batch.input_ids, difficulty=_difficulty(model.cfg.mechanism, batch), exit=mode, max_depth=md,
                        generator=gen)
            loss = token_ce(out.logits, batch.targets)  # (B, T)
            pred = out.logits.argmax(-1)
            cum = out.p_n.cumsum(-1).gather(-1, (out.depth - 1)[..., None])[..., 0]
            if out.lambda_n is not None:  # online: raw cumulative halting probability 1 - prod_{j<=d}(1 - lambda_j)
                remain = torch.cumprod(1 - out.lambda_n, -1).gather(-1, (out.depth - 1)[..., None])[..., 0]
                cum = 1 - remain
            ent = _entropy(out.p_n)
            for b, ex in enumerate(exs):
                t = torch.as_tensor(ex.scored, device=device) - 1
                n = len(ex.scored)
                cols["example"] += [idx[b]] * n
                cols["target"] += batch.targets[b, t].tolist()
                cols["pred"] += pred[b, t].tolist()
                cols["correct"] += (pred[b, t] == batch.targets[b, t]).tolist()
                cols["loss"] += loss[b, t].tolist()
                cols["depth"] += out.depth[b, t].tolist()
                cols["expected_depth"] += out.expected_depth[b, t].tolist()
                cols["p_entropy"] += ent[b, t].tolist()
                cols["p_halt"] += cum[b, t].tolist()
                cols["block_calls"] += out.block_calls[b, t].tolist()
                feats += ex.features
        df = pd.concat([pd.DataFrame(cols), pd.DataFrame(feats)], axis=1)
        df.insert(0, "eval_max_depth", model.cfg.max_depth if md is None else md)
        frames.append(df.sort_values(["example", "position"] if "position" in df else ["example"], kind="stable"))
    df = pd.concat(frames, ignore_index=True)
    for k, v in reversed(list((info or {}).items())):
        df.insert(0, k, v)
    model.train(was_training)
    return df


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Accuracy and depth over the answer tokens (``is_answer`` when present), overall and per difficulty."""
    d = df[df["is_answer"] == 1] if "is_answer" in df else df
    per = d.groupby("difficulty").agg(acc=("correct", "mean"), depth=("depth", "mean"), n=("correct", "size"))
    hist = d["depth"].value_counts().sort_index()
    # alignment during training: Spearman rho(depth, difficulty), None where either is constant
    rho = None
    if len(d) > 2 and d["depth"].nunique() > 1 and d["difficulty"].nunique() > 1:
        rho = float(spearmanr(d["depth"], d["difficulty"]).statistic)
    return {
        "acc": float(d["correct"].mean()) if len(d) else float("nan"),
        "mean_depth": float(d["depth"].mean()) if len(d) else float("nan"),
        "n_tokens": int(len(d)),
        "depth_hist": {int(k): int(v) for k, v in hist.items()},
        "per_difficulty": {int(k): {"acc": float(r.acc), "mean_depth": float(r.depth), "n": int(r.n)} for k, r in per.iterrows()},
        "rho": rho,
    }


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def gate_counts(logits: torch.Tensor, batch) -> tuple[int, int]:
    """(right, total) of the full-depth read-out ``logits`` on the batch's answer tokens: the
    training accuracy that ``ds_until_acc`` waits for. Answers only, because a language model's
    free choices (irreducible entropy) would keep any accuracy over every scored token below the
    bar; on the algorithmic tasks every scored token is an answer."""
    answers = batch.loss_mask & (batch.features["is_answer"] > 0)
    return int(((logits.argmax(-1) == batch.targets) & answers).sum()), int(answers.sum())


def build(cfg: RunConfig) -> tuple[Task, AniraModel]:
    task = make_task(cfg.task, range="train", **cfg.task_params)
    torch.manual_seed(cfg.seed)
    model = AniraModel(cfg.model_config(vocab_size=len(task.vocab))).to(cfg.device)
    return task, model


def make_optimizer(model: AniraModel, cfg: RunConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on matrices only) and warm-up + cosine schedule."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )

    def lr_factor(step: int) -> float:  # step = number of optimizer steps taken
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record_info(cfg: RunConfig, run_id: str) -> dict[str, Any]:
    """The run's columns at the front of every record row."""
    return {"run_id": run_id, "task": cfg.task, "mechanism": cfg.mechanism, "seed": cfg.seed, "beta": cfg.beta,
            "max_depth": cfg.max_depth}


def score_split(model: AniraModel, cfg: RunConfig, split: str, examples: Sequence[Example],
                info: dict[str, Any]) -> pd.DataFrame:
    """The final records of one frozen set: real early exit at the trained depth (and at
    ``eval_max_depth``), the ``random`` draws seeded as in training's final evaluation."""
    depths = (None,) if cfg.eval_max_depth is None else (None, cfg.eval_max_depth)
    df = evaluate(model, examples, max_depths=depths, batch_size=cfg.eval_batch_size, seed=cfg.seed + 2, info=info)
    df.insert(list(df.columns).index("eval_max_depth") + 1, "split", split)
    return df


# A finished run's trained weights without the optimizer state (what is committed with a study):
# {"config_hash", "dtype", "state_dict"}. load_model reads checkpoint.pt when there is one, else this.
WEIGHTS_FILE = "weights.pt"
WEIGHT_DTYPES = ("float16", "float32")


def save_weights(model: AniraModel, out_path: str | Path, config_hash: str, dtype: str = "float16") -> Path:
    """Write ``model``'s floating-point parameters and buffers in ``dtype`` (one of WEIGHT_DTYPES) to ``out_path``."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype = {dtype!r}; allowed values: {list(WEIGHT_DTYPES)}")
    to = getattr(torch, dtype)
    state = {k: v.detach().to("cpu", to) if v.is_floating_point() else v.detach().cpu() for k, v in model.state_dict().items()}
    out_path = Path(out_path)
    _atomic_save({"config_hash": config_hash, "dtype": dtype, "state_dict": state}, out_path)
    return out_path


def load_model(out_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, AniraModel]:
    """The config and trained model of a run directory, at the halting threshold its final
    evaluation used (``operating_point`` in summary.json, when chosen). The weights come from
    ``checkpoint.pt`` (a run trained here) or, without one, from ``weights.pt`` (a committed run;
    float16 weights are cast back to float32)."""
    out_dir = Path(out_dir)
    cfg = RunConfig.from_record(json.loads((out_dir / "config.json").read_text())["config"], where=str(out_dir))
    task = make_task(cfg.task, range="train", **cfg.task_params)
    model = AniraModel(cfg.model_config(vocab_size=len(task.vocab)))
    if (out_dir / "checkpoint.pt").is_file():
        state = torch.load(out_dir / "checkpoint.pt", map_location=device, weights_only=False)["model"]
    elif (out_dir / WEIGHTS_FILE).is_file():
        saved = torch.load(out_dir / WEIGHTS_FILE, map_location=device, weights_only=True)
        if saved["config_hash"] != config_hash(cfg):
            raise ValueError(f"{out_dir / WEIGHTS_FILE} holds the weights of config hash {saved['config_hash']}, "
                             f"not {config_hash(cfg)} (this folder's config.json)")
        state = {k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()}
    else:
        raise FileNotFoundError(f"{out_dir}: no trained weights (neither checkpoint.pt nor {WEIGHTS_FILE}); "
                                f"finish the run first (python -m anira.train --out {out_dir} ...)")
    model.load_state_dict(state)
    summary = out_dir / "summary.json"
    op = json.loads(summary.read_text()).get("operating_point") if summary.is_file() else None
    if op:
        model.cfg = dataclasses.replace(model.cfg, halt_threshold=op["threshold"])
    return cfg, model.to(device).eval()


def rescore(out_dir: str | Path, model: AniraModel | None = None) -> pd.DataFrame:
    """The records of a finished run recomputed from its weights (``model``, default ``load_model``),
    in the row order of its ``records.csv.gz``: the committed weights reproduce the committed records."""
    out_dir = Path(out_dir)
    cfg, loaded = load_model(out_dir)
    model = loaded if model is None else model
    sets = load_eval_sets(cfg.task)
    h = json.loads((out_dir / "config.json").read_text())["config_hash"]
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)  # as in training's final evaluation
    try:
        return pd.concat([score_split(model, cfg, split, exs, record_info(cfg, h)) for split, exs in sets.items()],
                         ignore_index=True)
    finally:
        torch.set_num_threads(threads)


RECORD_KEYS = ("split", "eval_max_depth", "example", "target")  # a record row's identity
RECORD_DECISIONS = ("pred", "correct", "depth", "block_calls")  # what must be equal for the same result


def records_differ(committed: pd.DataFrame, recomputed: pd.DataFrame) -> str | None:
    """None when ``recomputed`` has the rows of ``committed`` in the same order with every
    prediction, correctness, depth and block count equal; else what differs, in words. (Losses and
    halting probabilities are real numbers: float16 weights move them in the fourth digit.)"""
    if len(committed) != len(recomputed):
        return f"{len(recomputed)} rows instead of {len(committed)}"
    for col in RECORD_KEYS + RECORD_DECISIONS:
        a, b = committed[col].to_numpy(), recomputed[col].to_numpy()
        if col == "correct":
            a, b = a.astype(bool), b.astype(bool)
        bad = np.flatnonzero(a != b)
        if len(bad):
            return f"{len(bad)} of {len(a)} rows differ in {col!r} (first at row {bad[0]}: {a[bad[0]]!r} vs {b[bad[0]]!r})"
    return None


# The operating-point rule, fixed before any run it was applied to (issue "depth-used"): after
# training, on VALIDATION_EXAMPLES examples of the training range drawn with VALIDATION_SEED (never
# the frozen evaluation sets, whose seeds are anira.data.eval_seed's), evaluate the adaptive model under real early
# exit at every halting threshold of OP_THRESHOLDS, and the same weights with every token at max
# depth. Keep the thresholds whose accuracy on the multi-step tokens (Task.multi_step) is within
# OP_TOLERANCE of that full-depth accuracy; choose the one with the least mean depth (ties: the
# larger threshold). If none is within it, choose the one with the highest such accuracy.
OP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OP_TOLERANCE = 0.02
VALIDATION_SEED = 30_001
VALIDATION_EXAMPLES = 512


def choose_operating_point(model: AniraModel, cfg: RunConfig) -> dict[str, Any]:
    """The halting threshold for the final evaluation, by the rule above. Returns {"threshold",
    "met" (a threshold was within OP_TOLERANCE), "acc_multi_full_depth", "grid": [{threshold,
    acc_multi, mean_depth}, ...], "n_examples", "seed", "tolerance"}; the model is left unchanged."""
    examples = make_task(cfg.task, range="train", **cfg.task_params).generate(VALIDATION_EXAMPLES, seed=VALIDATION_SEED)
    multi_step = task_class(cfg.task).multi_step
    base = model.cfg

    def acc_depth(mcfg: ModelConfig) -> tuple[float, float]:
        model.cfg = mcfg
        rec = evaluate(model, examples, batch_size=cfg.eval_batch_size, seed=cfg.seed + 3)
        multi = np.asarray(multi_step(rec), dtype=bool)
        return float(rec["correct"].to_numpy()[multi].mean()), float(rec["depth"].mean())

    try:
        full, _ = acc_depth(dataclasses.replace(base, mechanism="fixed", fixed_depth=base.max_depth))
        grid = []
        for q in OP_THRESHOLDS:
            acc, depth = acc_depth(dataclasses.replace(base, halt_threshold=q))
            grid.append({"threshold": q, "acc_multi": acc, "mean_depth": depth})
    finally:
        model.cfg = base
    ok = [g for g in grid if g["acc_multi"] >= full - OP_TOLERANCE - 1e-12]
    chosen = (min(ok, key=lambda g: (g["mean_depth"], -g["threshold"])) if ok
              else max(grid, key=lambda g: (g["acc_multi"], g["threshold"])))
    return {"threshold": chosen["threshold"], "met": bool(ok), "acc_multi_full_depth": full, "grid": grid,
            "n_examples": VALIDATION_EXAMPLES, "seed": VALIDATION_SEED, "tolerance": OP_TOLERANCE}


class NonFiniteLossError(FloatingPointError):
    pass


CHECKPOINT_REQUEST = ".checkpoint_request"  # in the run folder: save a checkpoint now (removed once saved)
TRAINING_MARK = ".training"  # in the run folder while the training loop runs: "<host> <pid>"


class CheckpointRequests:
    """Asks the training loop to save a checkpoint after the current step: a signal or a file.

    * ``SIGUSR2``: the warning Slurm sends (``--signal``, submitit's time-out/preemption signal) to every
      process of the job, the Jupyter kernel that trains included;
    * ``SIGTERM``: the process is being ended. In a Slurm job (``scontrol requeue``, preemption,
      ``scancel``) training goes on after the checkpoint until Slurm's SIGKILL ``KillWait`` seconds
      later: ending the kernel first would end the job with a failed result while Slurm requeues it.
      Elsewhere the checkpoint is followed by SIGTERM's previous meaning (``terminate``);
    * the file ``out_dir/.checkpoint_request``: written by the job process (``anira.pipeline.runs``)
      when submitit's signal handler runs there, for launchers that signal only that process; removed
      here once the checkpoint is saved, which tells the writer it may requeue the job.

    While the loop runs, ``out_dir/.training`` holds "<host> <pid>", so a requester knows whether
    anyone will answer. Handlers are installed only in the main thread (Python's rule; the kernel
    runs cells there) and the previous ones are restored on exit.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self, out_dir: Path):
        self.request = Path(out_dir) / CHECKPOINT_REQUEST
        self.mark = Path(out_dir) / TRAINING_MARK
        self.signalled: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.signalled = signum

    def __enter__(self) -> "CheckpointRequests":
        other = self.training_elsewhere()
        if other is not None:
            raise RuntimeError(f"out_dir {self.mark.parent} is being trained by process {other} on this host "
                               f"({TRAINING_MARK}); two processes must not train one run folder. Wait for it, or "
                               f"end it (its checkpoint resumes), or remove {self.mark} if that process is not training")
        self.request.unlink(missing_ok=True)  # a request left by an attempt that was killed first
        _atomic_write_text(f"{platform.node()} {os.getpid()}\n", self.mark)
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def training_elsewhere(self) -> int | None:
        """The pid of another live process of this host whose mark is in the run folder, else None
        (no mark, a mark of another host, or of a process that has ended)."""
        try:
            host, pid = self.mark.read_text().split()
            pid = int(pid)
        except (FileNotFoundError, ValueError):
            return None
        if host != platform.node() or pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return pid

    def pending(self) -> str | None:
        """Why a checkpoint is due now ("SIGUSR2", "SIGTERM", "request"), or None."""
        if self.signalled is not None:
            return signal.Signals(self.signalled).name
        return "request" if self.request.exists() else None

    def done(self) -> None:
        self.signalled = None
        self.request.unlink(missing_ok=True)

    def terminate(self) -> None:
        """After the checkpoint a SIGTERM asked for outside Slurm: deliver it as if never caught."""
        if self.signalled == signal.SIGTERM and "SLURM_JOB_ID" not in os.environ:
            self.__exit__()
            signal.raise_signal(signal.SIGTERM)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
        self.mark.unlink(missing_ok=True)
        self.request.unlink(missing_ok=True)  # nothing newer to save: the caller need not wait


def _versions() -> dict[str, str]:
    import anira

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "anira": getattr(anira, "__version__", "0")}


@dataclass
class _Checked:
    summary: dict[str, Any] | None  # out_dir's finished run of this config (run() returns it)
    checkpoint: dict[str, Any] | None  # out_dir's checkpoint of this config (run() resumes from it)


def check_run(cfg: RunConfig, out_dir: str | Path | None = None) -> None:
    """Every check of a run's inputs beyond the config itself, which ``RunConfig`` already made
    (fields, task, model and loss). Raises ValueError naming the parameter; writes nothing.

    * data: the frozen evaluation sets of the task exist (or are generated) and ``max_len`` covers
      their longest input;
    * with ``out_dir`` (a run about to happen on this machine): ``out_dir`` is not a file (nor
      inside one), a finished run or a checkpoint already there belongs to this config's hash, and,
      unless that run is finished, ``device`` is available.

    ``run()`` calls it first; the command line and the per-run notebook call it before ``run()``.
    """
    _check_run(cfg, out_dir)


def _check_run(cfg: RunConfig, out_dir: str | Path | None) -> _Checked:
    if not isinstance(cfg, RunConfig):
        raise ValueError(f"cfg = {cfg!r} must be a RunConfig, got {type(cfg).__name__}")
    for split, longest in _longest_eval_inputs(cfg).items():
        if longest > cfg.max_len:
            raise ValueError(f"max_len = {cfg.max_len} is out of range for task {cfg.task!r}; allowed: [{longest}, inf) "
                             f"(the longest eval_{split} input has {longest} positions)")
    checked = _Checked(None, None)
    if out_dir is None:
        return checked
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f"out_dir = {out_dir!r} must be a directory path")
    out_dir = Path(out_dir)
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"out_dir = {str(out_dir)!r}: {str(existing)!r} is a file, not a directory")
    h = config_hash(cfg)
    summary_path, ckpt_path = out_dir / "summary.json", out_dir / "checkpoint.pt"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("config_hash") != h:
            raise ValueError(f"out_dir = {str(out_dir)!r} holds a finished run with config hash "
                             f"{summary.get('config_hash')}, not {h}; use another directory")
        checked.summary = summary
        return checked  # finished: nothing will be trained
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' is not available on this machine (torch.cuda.is_available() is False); "
                         "allowed here: ['cpu']")
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=cfg.device, weights_only=False)
        if ckpt["config_hash"] != h:
            raise ValueError(f"out_dir = {str(out_dir)!r} holds the checkpoint of config hash {ckpt['config_hash']}, "
                             f"not {h}; use another directory")
        checked.checkpoint = ckpt
    return checked


class _Loop:
    """The state of one run between two optimizer steps (what a checkpoint holds) and the pieces of
    the loop: ``restore`` (build, or resume from a checkpoint), ``step`` (one optimizer step),
    ``log_row`` (training statistics and the learning gate), ``eval_row`` (the periodic evaluation),
    ``state`` (the checkpoint) and ``finish`` (the final evaluation on the frozen sets)."""

    def __init__(self, cfg: RunConfig, checkpoint: dict[str, Any] | None):
        self.cfg, self.h = cfg, config_hash(cfg)
        self.task, self.model = build(cfg)
        self.opt, self.sched = make_optimizer(self.model, cfg)
        self.ponder = PonderLoss(cfg.loss_config(), cfg.max_depth).to(cfg.device) if cfg.mechanism in ADAPTIVE else None
        self.data_rng = random.Random(cfg.seed)  # == task.stream(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # random-mechanism draws in training
        self.stats = _Stats(cfg.max_depth)
        self.step, elapsed, cpu_elapsed = 0, 0.0, 0.0
        # first step of the PonderNet objective: fixed, or decided by the learning gate (ds_until_acc)
        self.halt_start: float = math.inf if cfg.ds_until_acc is not None else float(cfg.ds_warmup_steps)
        self.gate_right = self.gate_total = 0  # full-depth read-out accuracy since the last gate check
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.opt.load_state_dict(checkpoint["optimizer"])
            self.sched.load_state_dict(checkpoint["scheduler"])
            torch.set_rng_state(checkpoint["torch_rng"])
            self.gen.set_state(checkpoint["gen_rng"])
            self.data_rng.setstate(checkpoint["data_rng"])
            self.step, elapsed = checkpoint["step"], checkpoint["elapsed"]
            cpu_elapsed = checkpoint.get("cpu_elapsed", 0.0)
            self.halt_start = checkpoint.get("halt_start", self.halt_start)
            if "stats" in checkpoint:  # saved between two log rows
                self.stats.load_state(checkpoint["stats"])
                self.gate_right, self.gate_total = checkpoint["gate"]
        self.model.train()
        self.t0 = time.perf_counter() - elapsed  # wall and CPU clocks that go on across resumes
        self.c0 = time.process_time() - cpu_elapsed  # CPU seconds of this process (all its threads)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def state(self) -> dict[str, Any]:
        return {"config_hash": self.h, "step": self.step, "elapsed": self.elapsed(), "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "gen_rng": self.gen.get_state(),
                "data_rng": self.data_rng.getstate(), "cpu_elapsed": time.process_time() - self.c0,
                "halt_start": self.halt_start, "gate": (self.gate_right, self.gate_total), "stats": self.stats.state()}

    def train_step(self, ckpt_path: Path) -> None:
        """One optimizer step on a fresh batch; NonFiniteLossError (naming the last good checkpoint) on a NaN."""
        cfg, model = self.cfg, self.model
        batch = collate([self.task.sample(self.data_rng) for _ in range(cfg.batch_size)],
                        feature_names=["difficulty", "is_answer"]).to(cfg.device)
        if self.ponder is not None:
            out = model(batch.input_ids, exit=cfg.train_mode, readout_rows=batch.loss_mask)
            lo = self.ponder(out.step_logits, out.p_n, batch.targets, batch.loss_mask, self.step, start=self.halt_start)
            if self.halt_start == math.inf:
                right, total = gate_counts(out.step_logits[-1], batch)
                self.gate_right += right
                self.gate_total += total
            loss, parts = lo.loss, {"expected": lo.expected.item(), "ds": lo.ds.item(),
                                    "penalty": lo.penalty.item(), "beta_t": lo.beta_t}
        else:
            out = model(batch.input_ids, difficulty=_difficulty(cfg.mechanism, batch), exit="masked", generator=self.gen,
                        readout_rows=batch.loss_mask)
            loss, parts = task_loss(out.logits, batch.targets, batch.loss_mask), {}
        if not torch.isfinite(loss):
            last = f"step {_ckpt_step(ckpt_path)}" if ckpt_path.exists() else "none yet"
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {self.step} of run {self.h}; stopped. "
                                     f"The last good checkpoint is {ckpt_path} ({last})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.stats.add(loss.item(), parts, gnorm.item(), out, batch)

    def log_row(self) -> dict[str, Any]:
        """The training row of the last ``log_every`` steps; while halting waits for learning
        (``ds_until_acc``), the full-depth accuracy since the last row, and the switch when it is reached."""
        cfg = self.cfg
        row = {"step": self.step, "kind": "train", **self.stats.flush(), "lr": self.sched.get_last_lr()[0],
               "elapsed": self.elapsed()}
        if self.halt_start == math.inf:
            row["acc_full_depth"] = self.gate_right / max(self.gate_total, 1)
            if self.step >= cfg.ds_warmup_steps and row["acc_full_depth"] >= cfg.ds_until_acc:
                self.halt_start = float(self.step)  # the PonderNet objective from the next step on
                row["halt_start"] = self.step
            self.gate_right = self.gate_total = 0
        return row

    def eval_row(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Real early exit on ``examples`` (and, for early/online, the same tokens read out of the training path)."""
        cfg, model = self.cfg, self.model
        ev = summarize(evaluate(model, examples, batch_size=cfg.eval_batch_size, seed=cfg.seed + 2))
        row = {"step": self.step, "kind": "eval", "split": "in", "mode": "exit", "acc": ev["acc"],
               "mean_depth": ev["mean_depth"], "depth_hist": ev["depth_hist"], "per_difficulty": ev["per_difficulty"],
               "rho": ev["rho"]}
        if cfg.mechanism in ADAPTIVE:  # for the gap between training and inference paths
            ev_tr = summarize(evaluate(model, examples, batch_size=cfg.eval_batch_size, mode=cfg.train_mode))
            row.update({"acc_train_path": ev_tr["acc"], "mean_depth_train_path": ev_tr["mean_depth"]})
        model.train()
        return {**row, "elapsed": self.elapsed()}

    def finish(self, eval_sets: dict[str, list[Example]], out_dir: Path) -> dict[str, Any]:
        """The operating point (when chosen), the records of the frozen sets under real early exit
        and the summary; returns the summary as written."""
        cfg, model, h = self.cfg, self.model, self.h
        train_time, train_cpu = self.elapsed(), time.process_time() - self.c0
        summary = {"config_hash": h, "run_id": h, "summary_version": SUMMARY_VERSION,
                   "inputs_sha256": eval_sets_sha256(eval_sets), "steps": cfg.steps,
                   "train_time_s": train_time, "train_cpu_s": train_cpu,
                   "steps_per_s": cfg.steps / max(train_time, 1e-9),
                   "halt_start": (None if self.halt_start == math.inf else int(self.halt_start))
                   if cfg.mechanism in ADAPTIVE else None}
        if cfg.operating_point == "validation" and cfg.mechanism in ADAPTIVE:
            summary["operating_point"] = choose_operating_point(model, cfg)
            model.cfg = dataclasses.replace(model.cfg, halt_threshold=summary["operating_point"]["threshold"])
        t_eval, frames = time.perf_counter(), []
        for split, exs in eval_sets.items():
            df = score_split(model, cfg, split, exs, record_info(cfg, h))
            frames.append(df)
            for md, d in df.groupby("eval_max_depth"):
                key = split if md == cfg.max_depth else f"{split}@{md}"
                summary[key] = summarize(d)
                if md == cfg.max_depth:  # what a `random` control draws from to match this run's depths
                    summary[key]["depth_probs"] = list(depth_probs(summary[key]["depth_hist"], cfg.max_depth))
        summary["eval_time_s"] = time.perf_counter() - t_eval
        tmp = out_dir / "records.csv.gz.tmp"
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, compression={"method": "gzip", "mtime": 0})
        os.replace(tmp, out_dir / "records.csv.gz")
        summary["wall_time_s"] = self.elapsed()
        _atomic_write_text(json.dumps(summary, indent=1), out_dir / "summary.json")
        return json.loads((out_dir / "summary.json").read_text())  # the same object a cached call returns


def run(cfg: RunConfig, out_dir: str | Path, *, interrupt_at: int | None = None) -> dict[str, Any]:
    """Train (or resume, or return the cached result of) ``cfg`` in ``out_dir``; see module docstring.

    ``interrupt_at`` is a testing aid: stop right after the checkpoint of that step, as if killed.
    """
    checked = _check_run(cfg, out_dir)  # every input check, before anything is written
    if checked.summary is not None:
        return checked.summary
    out_dir, h = Path(out_dir), config_hash(cfg)
    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "log.jsonl"
    eval_sets = load_eval_sets(cfg.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    _atomic_write_text(json.dumps({"config": to_dict(cfg), "config_hash": h, "argv": portable_argv(sys.argv),
                                   "versions": _versions()}, indent=1), out_dir / "config.json")
    loop = _Loop(cfg, checked.checkpoint)
    rows = [json.loads(l) for l in log_path.read_text().splitlines()] if log_path.exists() else []
    _atomic_write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= loop.step), log_path)  # up to the checkpoint
    subset = eval_sets["in"][: cfg.eval_examples] if cfg.eval_examples else eval_sets["in"]
    with tqdm(total=cfg.steps, initial=loop.step, disable=not cfg.progress, mininterval=2.0, desc=f"{cfg.mechanism} {h[:8]}") as bar, \
            log_path.open("a") as log, CheckpointRequests(out_dir) as requests:
        while loop.step < cfg.steps:
            loop.train_step(ckpt_path)
            bar.update(1)
            last = loop.step == cfg.steps
            if loop.step % cfg.log_every == 0 or last:
                row = loop.log_row()
                log.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}", depth=f"{row['mean_depth']:.2f}")
            if loop.step % cfg.eval_every == 0 or last:
                log.write(json.dumps(loop.eval_row(subset)) + "\n")
            log.flush()
            why = requests.pending()
            if loop.step % cfg.ckpt_every == 0 or last or why:
                _atomic_save(loop.state(), ckpt_path)
                if why:
                    tqdm.write(f"checkpoint at step {loop.step} of {cfg.steps} ({why})", file=sys.stderr)
                    requests.terminate()
                    requests.done()
                if interrupt_at is not None and interrupt_at <= loop.step < cfg.steps:
                    return {"interrupted_at": loop.step}
    return loop.finish(eval_sets, out_dir)


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


class _Stats:
    """Running training statistics between two log rows (scored tokens only)."""

    def __init__(self, M: int):
        self.M = M
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.gnorm, self.parts = 0, 0.0, 0.0, {}
        self.correct, self.tokens, self.depth_sum = 0, 0, 0
        self.all_tokens, self.all_depth = 0, 0
        self.hist = torch.zeros(self.M, dtype=torch.long)
        self.by_diff: dict[int, list[float]] = {}

    def add(self, loss: float, parts: dict, gnorm: float, out, batch) -> None:
        self.n += 1
        self.loss += loss
        self.gnorm += gnorm
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v
        m = batch.loss_mask
        with torch.no_grad():
            correct = (out.logits.argmax(-1) == batch.targets) & m
            d = out.depth[m].cpu()
            self.correct += int(correct.sum())
            self.tokens += int(m.sum())
            self.depth_sum += int(d.sum())
            self.hist += torch.bincount(d - 1, minlength=self.M)[: self.M]
            real = batch.input_ids != PAD_ID  # every real token, scored or not (their compute counts too)
            self.all_tokens += int(real.sum())
            self.all_depth += int(out.depth[real].sum())
            diff = batch.features["difficulty"][m].cpu()
            for k in diff.unique().tolist():
                sel = diff == k
                a = self.by_diff.setdefault(int(k), [0, 0, 0])
                a[0] += int(sel.sum())
                a[1] += int(correct[m].cpu()[sel].sum())
                a[2] += int(d[sel].sum())

    def state(self) -> dict[str, Any]:
        """What was gathered since the last log row (a checkpoint between two rows keeps it)."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "M"})

    def load_state(self, state: dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))

    def flush(self) -> dict[str, Any]:
        n, tok = max(self.n, 1), max(self.tokens, 1)
        row = {"loss": self.loss / n, **{k: v / n for k, v in self.parts.items()}, "grad_norm": self.gnorm / n,
               "acc": self.correct / tok, "mean_depth": self.depth_sum / tok, "depth_hist": self.hist.tolist(),
               "mean_depth_all_tokens": self.all_depth / max(self.all_tokens, 1),
               "per_difficulty": {k: {"acc": a[1] / a[0], "mean_depth": a[2] / a[0]} for k, a in sorted(self.by_diff.items())}}
        self.reset()
        return row


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m anira.train --out DIR [--config FILE.yaml] key=value ...`` (values parsed as YAML).

    Exit status: 0 done (the summary is printed), 1 the run failed, 2 bad input: one ``error:`` line
    on stderr, nothing written (as ``python -m anira.study``).
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m anira.train", description="Train and evaluate one ANIRA run.",
                                 epilog="Exit status: 0 done, 1 the run failed, 2 bad input (nothing written).")
    ap.add_argument("--out", required=True, help="run directory (resumed / reused when it exists)")
    ap.add_argument("--config", help="YAML/JSON file with RunConfig fields")
    ap.add_argument("overrides", nargs="*", help="RunConfig fields as key=value (value parsed as YAML)")
    args = ap.parse_args(argv)
    try:
        cfg = config_from_command_line(args.config, args.overrides)
        check_run(cfg, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = run(cfg, args.out)
    print(json.dumps(summary, indent=1))
    return 0


def config_from_command_line(config_file: str | None, overrides: Sequence[str]) -> RunConfig:
    """The RunConfig of ``--config FILE`` updated by ``key=value`` overrides; ValueError naming what is wrong."""
    import yaml

    values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"--config = {config_file!r}: no such file")
        try:
            doc = load_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"--config = {config_file!r}: malformed YAML: {' '.join(str(err).split())}") from None
        if doc is not None and not isinstance(doc, dict):
            raise ValueError(f"--config = {config_file!r} must hold a mapping of RunConfig fields, "
                             f"got {type(doc).__name__}")
        values.update(doc or {})
    for item in overrides:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"override {item!r} must look like key=value")
        try:
            values[k] = load_yaml(v)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML: {' '.join(str(err).split())}") from None
    where = "command line" + (f" (--config {config_file})" if config_file else "")
    return RunConfig.from_dict(values, where=where)


if __name__ == "__main__":
    sys.exit(main())
