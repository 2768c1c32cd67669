"""`hops`: multi-hop variable resolution (pointer chasing).

Sequence (one example, n variables, q queries):
    <bos> a = b ; b = 3 ; c = 5 ; d = a | ? d 3 ? c 5
The prompt lists the n assignments in a shuffled order, separated by ``;``; every variable is
assigned exactly once, either a literal digit (``b = 3``) or another variable (``a = b``). After
``|`` come q queries ``? x v``; the scored tokens are the answers v only.

Structure: the assignments form disjoint chains ``x_L = x_{L-1}, ..., x_2 = x_1, x_1 = digit``.
The number of hops of a variable is the number of assignments followed to reach the digit:

    hops(x) = 1                 if x = digit
    hops(x) = 1 + hops(y)       if x = y

so in a chain x_k has k hops, and ``difficulty`` = hops of the queried variable.
``size`` = n, the number of variables.

Generator (one example):
  1. n ~ U{min_vars..max_vars}; H = min(max_hops, n).
  2. Query hops, one query at a time (at most ``n_queries``): h is drawn from the hop counts that
     still fit in the unused variables, {min_hops..min(H, unused)}, with P(h) ~ h**hop_tilt.
     Each query gets its own chain of h variables, so no two queries share a chain: an earlier
     answer is never a shortcut for a later query. The tilt compensates for long chains using
     up more variables; at hop_tilt = 1 the share of queries per hop count in the training range
     is 28/24/24/24 % for 1..4 hops (hop_tilt = 0, uniform per draw, gives 39/26/20/16 %).
  3. Every variable left over either starts a new (unqueried, distractor) chain or is put on top
     of an existing chain shorter than H (probability 1/2 each), so a queried variable is not
     always the head of its chain. No chain is longer than H.
  4. Names are n distinct letters from a fixed pool of 26 (the vocabulary covers every range).
     Chain digits are distinct (a random permutation of 0..n_values-1, a fresh one for every
     further n_values chains; queried chains come first, so their answers always differ), so
     an answer names its chain and "guess a digit of the prompt" scores only 1 / n_chains.
     With i.i.d. digits (``distinct_values=False``) chains often share a digit: a uniform guess
     among the prompt's digits then scores 0.47 instead of 0.41 (training range, 2,000 examples,
     tests/test_tasks_hops.py). Assignment and query orders are shuffled.

Per answer token (query j of the example, variable x with h hops):
  static   n_vars = n, n_chains (chains in the prompt, queried or not), n_queries (in this
           example), chain_length = h (the length of the chain followed from x, = difficulty),
           query_index = j (0-based)
  dynamic  distance = position of the query's ``x`` token minus position of the left-hand ``x``
               of its assignment (how far back the first lookup reaches),
           sweeps = left-to-right passes over the prompt that a reader needs to know x's value
               when at each assignment ``u = w`` it records u's value if w's value is already
               known: with p_k the prompt position of the assignment of x_k (x_h = x),
               sweeps = 1 + #{k in 2..h : p_k < p_{k-1}}, in 1..h. It measures how much of the
               chain can NOT be resolved in reading order (the execution state a causal reader
               is left with at the query).
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from anira.tasks.base import Example, Task, Vocab

VAR_NAMES = tuple("abcdefghijklmnopqrstuvwxyz")  # fixed pool: the vocabulary covers every range
N_DIGITS = 10
ASSIGN, SEP, END, QUERY = "=", ";", "|", "?"


@dataclass
class HopsConfig:
    min_vars: int = 4  # size range (number of variables, = assignments); training 4..8
    max_vars: int = 8  # 8 variables + 3 queries = 42 tokens at most
    min_hops: int = 1  # hop range of the queries (difficulty)
    max_hops: int = 4  # 1..4 hops is learnable by a small looped model on CPU (see STUDY.md)
    n_queries: int = 3  # at most this many queries per example (fewer when the chains fill n)
    n_values: int = 10  # literal digits 0..n_values-1; 10 makes chance accuracy 10 %
    hop_tilt: float = 1.0  # P(h) ~ h**hop_tilt per query; 1.0 balances hop counts (see above); < 0 favours 1 hop
    distinct_values: bool = True  # chains get distinct digits (while chains <= n_values): no lucky guesses


def _check(name: str, value: float, lo: float, hi: float, why: str = "") -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r} is out of range; allowed: [{lo}, {hi}]" + (f" ({why})" if why else ""))


class HopsTask(Task):
    name = "hops"
    Config = HopsConfig
    static_features = ("n_vars", "n_chains", "n_queries", "chain_length", "query_index")
    dynamic_features = ("distance", "sweeps")
    size_name = "number of variables"

    def __init__(self, config: HopsConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        # cumulative weights of h**hop_tilt, indexed by hop count, for rng.choices
        self._cum_w, acc = [0.0] * (c.max_hops + 1), 0.0
        for h in range(c.min_hops, c.max_hops + 1):
            acc += h**c.hop_tilt
            self._cum_w[h] = acc

    @classmethod
    def train_config(cls) -> HopsConfig:
        return HopsConfig()

    @classmethod
    def extrap_config(cls) -> HopsConfig:
        return HopsConfig(min_vars=10, max_vars=16, min_hops=1, max_hops=8)

    def validate(self) -> None:
        c = self.config
        n_pool = len(VAR_NAMES)
        _check("min_vars", c.min_vars, 2, n_pool, f"at least 2 variables, at most the {n_pool}-letter name pool")
        _check("max_vars", c.max_vars, c.min_vars, n_pool, "from min_vars to the name pool size")
        _check("min_hops", c.min_hops, 1, c.min_vars, "a query of h hops needs h variables, so at most min_vars")
        _check("max_hops", c.max_hops, c.min_hops, c.max_vars, "from min_hops to max_vars")
        _check("n_queries", c.n_queries, 1, n_pool)
        _check("n_values", c.n_values, 1, N_DIGITS, "literal digits")
        _check("hop_tilt", c.hop_tilt, -4.0, 4.0, "negative values favour short chains (a curriculum)")

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(list(VAR_NAMES) + [str(d) for d in range(N_DIGITS)] + [ASSIGN, SEP, END, QUERY])

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        c = self.config
        randint, rand = rng.randint, rng.random
        n = randint(c.min_vars, c.max_vars)
        H = min(c.max_hops, n)
        cum_w = self._cum_w

        # 2. query hops, one chain per query
        lengths: list[int] = []  # chain lengths; chains 0..q-1 are the queried ones
        free = n
        for _ in range(c.n_queries):
            hi = min(H, free)
            if hi < c.min_hops:
                break
            h = bisect_right(cum_w, rand() * cum_w[hi], c.min_hops, hi)  # P(h) ~ h**hop_tilt
            lengths.append(h)
            free -= h
        hops = list(lengths)  # hops of the queried variable of each queried chain
        q = len(hops)
        # 3. leftover variables: new distractor chain or one more on top of a short chain
        for _ in range(free):
            if rand() < 0.5:
                lengths.append(1)
            else:
                short = [i for i, L in enumerate(lengths) if L < H]
                if short:
                    lengths[short[int(rand() * len(short))]] += 1
                else:
                    lengths.append(1)

        # 4. names and values; chain i holds variables names[start_i : start_i + L_i], bottom first
        names = rng.sample(range(len(VAR_NAMES)), n)  # variable k (bottom-first per chain) -> letter
        assigns: list[tuple[int, int]] = []  # (variable k, rhs token id)
        starts: list[int] = []
        k = 0
        perm: list[int] = []
        for i, L in enumerate(lengths):
            starts.append(k)
            if c.distinct_values:  # a fresh permutation of the digits for every n_values chains
                if i % c.n_values == 0:
                    perm = rng.sample(range(c.n_values), c.n_values)
                digit = perm[i % c.n_values]
            else:
                digit = randint(0, c.n_values - 1)
            assigns.append((k, _ID_DIGIT0 + digit))
            for j in range(1, L):
                assigns.append((k + j, _ID_VAR0 + names[k + j - 1]))
            k += L
        rng.shuffle(assigns)

        ids = [1]
        pos = [0] * n  # prompt position of the left-hand token of each variable's assignment
        for v, rhs in assigns:
            pos[v] = len(ids)
            ids += (_ID_VAR0 + names[v], _ID_ASSIGN, rhs, _ID_SEP)
        ids[-1] = _ID_END
        value_of = {}  # bottom variable of a chain -> its digit token id
        for v, rhs in assigns:
            if rhs >= _ID_DIGIT0:
                value_of[v] = rhs

        order = list(range(q))
        rng.shuffle(order)
        scored: list[int] = []
        feats: list[dict[str, float]] = []
        n_chains = len(lengths)
        for j, i in enumerate(order):
            h, s = hops[i], starts[i]
            x = s + h - 1  # the queried variable: h hops from the chain's digit
            qpos = len(ids) + 1
            ids += (_ID_QUERY, _ID_VAR0 + names[x], value_of[s])
            sweeps = 1
            for t in range(s + 1, x + 1):
                if pos[t] < pos[t - 1]:
                    sweeps += 1
            scored.append(qpos + 1)
            feats.append({
                "difficulty": h,
                "size": n,
                "position": qpos + 1,
                "is_answer": 1,
                "n_vars": n,
                "n_chains": n_chains,
                "n_queries": q,
                "chain_length": h,
                "query_index": j,
                "distance": qpos - pos[x],
                "sweeps": sweeps,
            })
        return Example(tokens=ids, scored=scored, features=feats, size=n)

    # ------------------------------------------------------------------------------------
    @staticmethod
    def parse(words: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Split a rendered example into (assignments [(lhs, rhs)], queries [(var, answer)])."""
        i_end = words.index(END)
        body = words[1:i_end]
        assigns = [(body[k], body[k + 2]) for k in range(0, len(body), 4)]
        tail = words[i_end + 1 :]
        queries = [(tail[k + 1], tail[k + 2]) for k in range(0, len(tail), 3)]
        return assigns, queries


def no_composition_accuracy(difficulty, n_chains, query_index):
    """Expected accuracy of a reader that composes nothing, per answer token (the guessing floor).

    It answers a 1-hop query by one lookup, and guesses any other answer uniformly among the
    prompt's digits that no earlier query of the example already took:
    ``1 if difficulty == 1 else 1 / (n_chains - query_index)``. Exact with distinct chain digits
    (``distinct_values=True`` and at most ``n_values`` chains, true of the training range): the
    prompt then holds one digit per chain and the earlier queries' answers are distinct digits of
    other chains. Works elementwise on numbers, numpy arrays and pandas Series of the features.
    A model above this floor on multi-hop queries composes lookups; one at it only guesses.
    """
    guess = 1.0 / (n_chains - query_index)
    return guess + (difficulty == 1) * (1.0 - guess)


_V = HopsTask.build_vocab()
_ID_VAR0, _ID_DIGIT0 = _V.stoi[VAR_NAMES[0]], _V.stoi["0"]
_ID_ASSIGN, _ID_SEP, _ID_END, _ID_QUERY = (_V.stoi[w] for w in (ASSIGN, SEP, END, QUERY))
assert all(_V.stoi[w] == _ID_VAR0 + k for k, w in enumerate(VAR_NAMES))
assert all(_V.stoi[str(d)] == _ID_DIGIT0 + d for d in range(N_DIGITS))
assert _ID_DIGIT0 > _ID_VAR0 + len(VAR_NAMES) - 1  # rhs >= _ID_DIGIT0 <=> a literal
