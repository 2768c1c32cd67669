"""The interface every task implements: seeded examples, scored positions, per-token features.

Sequence convention (next-token prediction):
    tokens   = [<bos>, prompt ..., answer ...]                 one Example
    scored   = indices i >= 1 into ``tokens`` whose value the model predicts from tokens[:i]
    features = one record per scored index, same order

``collate`` turns examples into tensors aligned on *input* positions:
    input_ids[b, t] = tokens[t]          (B, T), T = max len - 1, padded with PAD_ID
    targets[b, t]   = tokens[t + 1]      (B, T)
    loss_mask[b, t] = (t + 1) in scored  (B, T) bool
    features[k][b, t] = record value for the token predicted at t (0 where not scored)

Every record carries the common keys ``difficulty`` (int, the task's ground-truth
complexity of that token), ``size`` (the example's size parameter), ``position`` (index of the
predicted token in the sequence) and ``is_answer`` (1 when the token counts in accuracy), plus
the task's own features. Each task declares every feature in one table, ``features``: a
``Feature`` (name, class, reason) per column, with the class decided by the rule of
``anira.tasks.features`` (static: a function of the input alone; dynamic: the reference
algorithm's state at that output step; progress: a counter of output progress; label: the
difficulty or a column equal to it; other). ``static_features`` and ``dynamic_features`` are read
off that table.
"""
from __future__ import annotations

import dataclasses
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import torch

from anira.config import from_dict, to_dict

PAD, BOS = "<pad>", "<bos>"
PAD_ID, BOS_ID = 0, 1
COMMON_FEATURES = ("difficulty", "size", "position", "is_answer")
MAX_REDRAWS = 1000  # a task that redraws examples over a difficulty cap gives up (with an error) after this many


@dataclass
class Example:
    tokens: list[int]  # full sequence, tokens[0] == BOS_ID
    scored: list[int]  # indices into tokens that are predicted and scored
    features: list[dict[str, float]]  # one record per scored index
    size: int  # the task's size parameter for this example

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "scored": self.scored, "features": self.features, "size": self.size}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Example":
        return cls(tokens=list(d["tokens"]), scored=list(d["scored"]), features=list(d["features"]), size=int(d["size"]))


class Vocab:
    """A fixed token list; ids are positions. ``<pad>`` is 0 and ``<bos>`` is 1 in every task."""

    def __init__(self, words: Sequence[str]):
        words = [PAD, BOS] + [w for w in words if w not in (PAD, BOS)]
        if len(set(words)) != len(words):
            dup = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"vocabulary has duplicate tokens: {dup}")
        self.itos: list[str] = list(words)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        try:
            return [self.stoi[w] for w in words]
        except KeyError as e:
            raise ValueError(f"token {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def to_json(self) -> list[str]:
        return list(self.itos)

    @classmethod
    def from_json(cls, words: list[str]) -> "Vocab":
        return cls(words)


class Task(ABC):
    """Base class: subclasses set the class attributes and implement ``validate`` and ``sample``."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a @dataclass with the task's size and difficulty parameters
    features: ClassVar[tuple["Feature", ...]]  # every recorded (and derived) feature with its class and reason
    static_features: ClassVar[tuple[str, ...]]  # read off ``features`` (__init_subclass__)
    dynamic_features: ClassVar[tuple[str, ...]]
    size_name: ClassVar[str]  # what "size" means for this task, in words (for figures/docs)
    difficulty_name: ClassVar[str]  # what "difficulty" of a scored token means, in words (for figures)
    # The training recipe measured for this task, as RunConfig overrides of the library defaults:
    # ``recipe`` for every run, ``adaptive_recipe`` on top for early and online (objective fields that
    # the imposed-depth mechanisms do not use). The learning diagnostic trains with them; a profile
    # states its values explicitly in its sweep. Each subclass says why.
    recipe: ClassVar[dict[str, Any]] = {}
    # frozen evaluation split -> the range it is drawn from (``<range>_config``); a task may add
    # splits beside the two every task has (``addition``: "wide", where only the width grows)
    ranges: ClassVar[dict[str, str]] = {"in": "train", "out": "extrap"}
    adaptive_recipe: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "features" in cls.__dict__:
            names = [f.name for f in cls.features]
            if len(set(names)) != len(names) or not set(COMMON_FEATURES) <= set(names):
                raise TypeError(f"task {cls.__name__}: the feature table must name each feature once, "
                                f"the common ones {COMMON_FEATURES} included")
            cls.static_features = tuple(f.name for f in cls.features if f.kind == "static" and f.name != "size")
            cls.dynamic_features = tuple(f.name for f in cls.features if f.kind == "dynamic")

    @classmethod
    def feature_kinds(cls) -> dict[str, str]:
        """feature name -> its class (``anira.tasks.features.FEATURE_KINDS``)."""
        return {f.name: f.kind for f in cls.features}

    def __init__(self, config: Any | None = None, **overrides: Any):
        if config is None:
            config = self.train_config()
        if overrides:
            config = from_dict(self.Config, {**to_dict(config), **overrides}, where=f"task {self.name}")
        if not isinstance(config, self.Config):
            raise ValueError(f"task {self.name}: config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.validate()
        self.vocab = self.make_vocab()

    # --- declared ranges -------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def train_config(cls) -> Any:
        """The training range (sizes and difficulties seen in training)."""

    @classmethod
    @abstractmethod
    def extrap_config(cls) -> Any:
        """The held-out extrapolation range: strictly larger inputs than training, or inputs of the
        same size whose multi-step tokens need more steps than any training token (``addition``)."""

    # --- subclass hooks --------------------------------------------------------------------
    @abstractmethod
    def validate(self) -> None:
        """Raise ValueError naming the parameter, its value and the allowed range."""

    @classmethod
    @abstractmethod
    def build_vocab(cls) -> Vocab:
        """The task's vocabulary; identical for every config so one model covers all ranges."""

    def make_vocab(self) -> Vocab:
        """This config's vocabulary: ``build_vocab()`` unless a design parameter adds tokens
        (``addition``'s column hints); every range of one design shares it."""
        return self.build_vocab()

    @abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """One example drawn from ``self.config`` using only ``rng`` for randomness."""

    # --- the trivial floor -------------------------------------------------------------------
    floor_reader: ClassVar[str] = ""  # in words: the reader without multi-step computation

    @classmethod
    def floor(cls, records: Any) -> Any:
        """Expected accuracy, per scored token, of ``floor_reader``: the reader that does no
        multi-step computation. ``records`` is one feature record (a mapping) or a DataFrame of
        them; returns a number or a Series. A model at this floor has learned nothing that needs
        depth; one clearly above it computes in more than one step."""
        raise NotImplementedError(f"task {cls.name} defines no floor")

    @classmethod
    def multi_step(cls, records: Any) -> Any:
        """True for the scored tokens the floor reader cannot get right for sure (floor < 1):
        the tokens on which depth can pay, and on which the learning bars are judged."""
        return cls.floor(records) < 1

    def redraw_over_cap(self, draw, rng: random.Random) -> Example:
        """``draw(rng)`` until no token's difficulty exceeds ``config.max_difficulty`` (0: no cap);
        a task that caps its training range (so the extrapolation range needs more steps) uses it."""
        cap = self.config.max_difficulty
        for _ in range(MAX_REDRAWS):
            ex = draw(rng)
            if not cap or max(f["difficulty"] for f in ex.features) <= cap:
                return ex
        raise ValueError(f"max_difficulty = {cap}: {MAX_REDRAWS} examples in a row exceeded it; "
                         f"allowed: 0 (no cap) or a cap these sizes can meet")

    # --- the bounded reader (certifies an extrapolation set) -------------------------------------
    extrapolation_floor_bar: ClassVar[float] = 0.35  # the bounded reader's floor beyond k must not exceed this

    def bounded_reader(self, words: list[str], k: int) -> list[float]:
        """Expected accuracy, per scored token of one rendered example (``self.render(ex)``), of
        the task's reference algorithm limited to ``k`` steps (the unit of ``difficulty``) plus
        every elimination or reuse shortcut the design allows, guessing uniformly among the
        answers it cannot rule out. Reads the text only, never the generator's features.

        With k = the most steps any in-range token needs, it is exact in range; an extrapolation
        set whose multi-step tokens need more steps than training puts it at its guessing floor
        there (``anira.data.certify``)."""
        raise NotImplementedError(f"task {self.name} defines no bounded reader")

    # --- shared ----------------------------------------------------------------------------
    @classmethod
    def feature_names(cls) -> tuple[str, ...]:
        """The recorded features: the common ones, then the task's own in table order (derived
        features are computed by the analysis, not recorded)."""
        return COMMON_FEATURES + tuple(f.name for f in cls.features if f.name not in COMMON_FEATURES and not f.derived)

    def generate(self, n: int, seed: int) -> list[Example]:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n = {n!r} must be a non-negative integer")
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def stream(self, seed: int) -> Iterator[Example]:
        rng = random.Random(seed)
        while True:
            yield self.sample(rng)

    def render(self, ex: Example) -> list[str]:
        return self.vocab.decode(ex.tokens)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long
    loss_mask: torch.Tensor  # (B, T) bool
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # each (B, T); long for difficulty, float otherwise

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.input_ids.to(device),
            self.targets.to(device),
            self.loss_mask.to(device),
            {k: v.to(device) for k, v in self.features.items()},
        )

    @property
    def difficulty(self) -> torch.Tensor:
        return self.features["difficulty"]


def collate(examples: Sequence[Example], feature_names: Sequence[str] | None = None, pad_to: int | None = None) -> Batch:
    """Pad examples into a ``Batch`` (see module docstring for alignment)."""
    if not examples:
        raise ValueError("collate: examples is empty")
    if feature_names is None:
        feature_names = list(examples[0].features[0].keys()) if examples[0].features else list(COMMON_FEATURES)
    T = max(len(e.tokens) for e in examples) - 1
    if pad_to is not None:
        if pad_to < T:
            raise ValueError(f"pad_to = {pad_to} is shorter than the longest example ({T} input positions)")
        T = pad_to
    # Build flat Python lists and fill each tensor with one indexed write (one small tensor per
    # example and feature was the data pipeline's bottleneck).
    B, W = len(examples), T + 1
    flat = [PAD_ID] * (B * W)
    rows: list[int] = []
    cols: list[int] = []
    vals: dict[str, list[float]] = {k: [] for k in feature_names}
    for b, ex in enumerate(examples):
        flat[b * W : b * W + len(ex.tokens)] = ex.tokens
        rows += [b] * len(ex.scored)
        cols += [i - 1 for i in ex.scored]
        for k in feature_names:
            vals[k] += [r[k] for r in ex.features]
    ids = torch.tensor(flat, dtype=torch.long).view(B, W)
    r, c = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    mask[r, c] = True
    feats = {}
    for k in feature_names:
        dtype = torch.long if k == "difficulty" else torch.float32
        feats[k] = torch.zeros((B, T), dtype=dtype)
        feats[k][r, c] = torch.tensor(vals[k], dtype=dtype)
    return Batch(ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), mask, feats)
