"""`hops`: multi-hop variable resolution (pointer chasing).

Sequence (one example, n variables, q queries):
    <bos> a = b ; b = 3 ; c = 5 ; d = a | ? d 3 ? c 5 ? b 3
The prompt lists the n assignments in a shuffled order, separated by ``;``; every variable is
assigned exactly once, either a literal digit (``b = 3``) or another variable (``a = b``). After
``|`` come q queries ``? x v``; the scored tokens are the answers v only.

Structure: the assignments form disjoint chains ``x_L = x_{L-1}, ..., x_2 = x_1, x_1 = digit``.
The number of hops of a variable is the number of assignments followed to reach the digit:

    hops(x) = 1                 if x = digit
    hops(x) = 1 + hops(y)       if x = y

so in a chain x_k has k hops, and ``difficulty`` = hops of the queried variable.

Two designs (``HopsConfig.queries``); the default is the dense one.

``queries="any"`` (the default, dense design). Why: a small model learns pointer chasing in a CPU
budget only when training covers its symbols densely (measured: a plain looped Transformer
learns 1-4 hops in ~2,000 steps with 8 variables named from a pool of 8 letters and 4 queries
over any variable, and is still at chance after 1,500 steps when the 8 names come from 26
letters; see docs/study.md). So:
  1. n ~ U{min_vars..max_vars} variables named with n distinct letters of the first ``n_names``
     (training: all 8 of a pool of 8, so every name occurs in every example).
  2. The variables are split into chains: the first chain's length is drawn from
     {min_longest..min(max_hops, n)}, each further one from {1..min(max_hops, left)}, with
     P(L) ~ L**hop_tilt; the chains are then put in random order. Every variable is on a chain
     that ends in a digit, so every variable is a possible query.
  3. Digits are i.i.d. uniform over 0..n_values-1 per chain (``distinct_values=False``; True
     gives distinct digits as in the earlier design).
  4. Queries: ``n_queries`` distinct variables drawn uniformly among those with at least
     ``min_hops`` hops (all of them when fewer). Queries may share a chain.
  ``size`` = the longest chain of the example (in variables; at most max_hops). Extrapolation
  keeps the name pool and the number of variables and makes chains longer (min_longest = 5,
  max_hops = 8): every symbol of the extrapolation range occurs in training, only the chain
  length (the number of hops) is new. The number of variables is recorded as ``n_vars``.
  Shortcuts the denser design opens are recorded per token, so analyses can control for them:
  ``chain_seen`` = 1 when an earlier query of the example was on the same chain (its answer is
  the same digit), ``hops_to_known`` = hops from x down its chain to the nearest variable an
  earlier query asked for (h when there is none): what is left to resolve if the earlier
  answer were reused.

``queries="own_chain"`` (the earlier design, of the committed ``cpu`` study; ``EARLIER_DESIGN``):
  n ~ U{min_vars..max_vars} from all 26 names; at most ``n_queries`` queries, each on its own
  chain with P(h) ~ h**hop_tilt over the hop counts that still fit; leftover variables start
  distractor chains or sit on top of short chains; chain digits distinct. ``size`` = n.
  Its generator is kept unchanged, so the earlier evaluation sets regenerate exactly
  (tests/test_tasks_hops.py checks them against the committed runs' data fingerprint).

Per answer token (query j of the example, variable x with h hops):
  static   n_vars = n, n_chains (chains in the prompt, queried or not), n_queries (in this
           example), chain_length = h (the length of the chain followed from x, = difficulty),
           query_index = j (0-based); dense design only: n_distinct_digits (distinct digits in the
           prompt), chain_seen, hops_to_known (above)
  dynamic  distance = position of the query's ``x`` token minus position of the left-hand ``x``
               of its assignment (how far back the first lookup reaches),
           sweeps = left-to-right passes over the prompt that a reader needs to know x's value
               when at each assignment ``u = w`` it records u's value if w's value is already
               known: with p_k the prompt position of the assignment of x_k (x_h = x),
               sweeps = 1 + #{k in 2..h : p_k < p_{k-1}}, in 1..h. It measures how much of the
               chain can NOT be resolved in reading order (the execution state a causal reader
               is left with at the query).

The no-composition floor (``no_composition_accuracy``): a reader that does the one lookup of a
1-hop query and guesses every other answer uniformly among the prompt's digits it cannot rule
out: all distinct digits of the prompt in the dense design (``n_distinct_digits``), those no
earlier query took in the earlier design (``n_chains - query_index``; its digits are distinct per
chain).
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

from anira.config import check_choice, check_range
from anira.tasks.base import Example, Task, Vocab

VAR_NAMES = tuple("abcdefghijklmnopqrstuvwxyz")  # the vocabulary covers every pool size and range
N_DIGITS = 10
ASSIGN, SEP, END, QUERY = "=", ";", "|", "?"


QUERY_MODES = ("any", "own_chain")


@dataclass
class HopsConfig:
    min_vars: int = 8  # size range (number of variables, = assignments); dense training: exactly 8
    max_vars: int = 8  # 8 variables + 4 queries = 45 tokens
    min_hops: int = 1  # dense: queries go to variables with >= min_hops hops; own_chain: hop range of the queries
    max_hops: int = 4  # longest chain (dense) / most hops of a query; 1..4 in training, 8 in extrapolation
    n_queries: int = 4  # queries per example (own_chain: at most this many, fewer when the chains fill n)
    n_values: int = 10  # literal digits 0..n_values-1; 10 makes chance accuracy 10 %
    hop_tilt: float = 0.0  # P(L) ~ L**hop_tilt per chain (dense) or per query (own_chain); < 0 favours 1 hop
    distinct_values: bool = False  # chains get distinct digits (while chains <= n_values); dense: i.i.d.
    n_names: int = 8  # name pool: the first n_names letters; dense coverage of the symbols (see docstring)
    queries: Literal["any", "own_chain"] = "any"  # dense design, or the earlier one-chain-per-query design
    min_longest: int = 1  # dense: the longest chain has at least this many variables (extrapolation: 5)


# The earlier design (the previous `cpu` reference study, up to commit 352bed3, was made with it):
# 4-8 variables from 26 names, at most 3 queries, one chain per query, distinct digits, query hops tilted to balance 1..4.
EARLIER_DESIGN = dict(min_vars=4, max_vars=8, min_hops=1, max_hops=4, n_queries=3, n_values=10, hop_tilt=1.0,
                      distinct_values=True, n_names=26, queries="own_chain", min_longest=1)
EARLIER_EXTRAP = dict(EARLIER_DESIGN, min_vars=10, max_vars=16, max_hops=8)


class HopsTask(Task):
    name = "hops"
    Config = HopsConfig
    static_features = ("n_vars", "n_chains", "n_queries", "chain_length", "query_index",
                       "n_distinct_digits", "chain_seen", "hops_to_known")
    dynamic_features = ("distance", "sweeps")
    size_name = "longest chain (variables)"  # dense design; the earlier design's size was the number of variables
    floor_reader = "answers a 1-hop query by one lookup, guesses any other among the digits it cannot rule out"

    @classmethod
    def floor(cls, records):
        return no_composition_accuracy(records["difficulty"], guess_pool(records))

    def __init__(self, config: HopsConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        # cumulative weights of h**hop_tilt, indexed by hop count (own_chain: from min_hops; dense:
        # chain lengths from 1), for a draw by bisection
        lo = c.min_hops if c.queries == "own_chain" else 1
        self._cum_w, acc = [0.0] * (c.max_hops + 1), 0.0
        for h in range(lo, c.max_hops + 1):
            acc += h**c.hop_tilt
            self._cum_w[h] = acc

    @classmethod
    def train_config(cls) -> HopsConfig:
        return HopsConfig()

    @classmethod
    def extrap_config(cls) -> HopsConfig:
        return HopsConfig(max_hops=8, min_longest=5)  # same names and variables, longer chains

    def validate(self) -> None:
        c = self.config
        n_pool = len(VAR_NAMES)
        check_choice("queries", c.queries, QUERY_MODES)
        check_range("n_names", c.n_names, 2, n_pool, "the name pool: the first n_names letters")
        check_range("min_vars", c.min_vars, 2, c.n_names, f"at least 2 variables, at most the {c.n_names}-letter name pool")
        check_range("max_vars", c.max_vars, c.min_vars, c.n_names, "from min_vars to the name pool size n_names")
        check_range("min_hops", c.min_hops, 1, c.min_vars, "a query of h hops needs h variables, so at most min_vars")
        check_range("max_hops", c.max_hops, c.min_hops, c.max_vars, "from min_hops to max_vars")
        if c.queries == "any":
            check_range("n_queries", c.n_queries, 1, c.min_vars, "distinct queried variables, so at most min_vars")
            check_range("min_longest", c.min_longest, 1, min(c.max_hops, c.min_vars), "at most max_hops and min_vars")
        else:
            check_range("n_queries", c.n_queries, 1, n_pool)
            check_range("min_longest", c.min_longest, 1, 1, "the own_chain design has no longest-chain floor")
        check_range("n_values", c.n_values, 1, N_DIGITS, "literal digits")
        check_range("hop_tilt", c.hop_tilt, -4.0, 4.0, "negative values favour short chains (a curriculum)")

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(list(VAR_NAMES) + [str(d) for d in range(N_DIGITS)] + [ASSIGN, SEP, END, QUERY])

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        if self.config.queries == "own_chain":
            return self._sample_own_chain(rng)
        return self._sample_dense(rng)

    def _draw_length(self, rand, lo: int, hi: int) -> int:
        """L in lo..hi with P(L) ~ L**hop_tilt."""
        cum_w = self._cum_w
        return bisect_right(cum_w, cum_w[lo - 1] + rand() * (cum_w[hi] - cum_w[lo - 1]), lo, hi)

    def _sample_dense(self, rng: random.Random) -> Example:
        c = self.config
        rand = rng.random
        n = rng.randint(c.min_vars, c.max_vars)
        H = min(c.max_hops, n)
        # 2. chain lengths: the first at least min_longest, the rest fill the n variables
        lengths = [self._draw_length(rand, c.min_longest, H)]
        free = n - lengths[0]
        while free:
            L = self._draw_length(rand, 1, min(H, free))
            lengths.append(L)
            free -= L
        rng.shuffle(lengths)
        # names: variable k (bottom-first per chain) -> letter; chain i holds k in starts[i]..+L_i
        names = rng.sample(range(c.n_names), n)
        assigns: list[tuple[int, int]] = []  # (variable k, rhs token id)
        hops = [0] * n  # hops of variable k
        chain_of = [0] * n
        digit_of: list[int] = []  # per chain
        k = 0
        for i, L in enumerate(lengths):
            if c.distinct_values:
                if i % c.n_values == 0:
                    perm = rng.sample(range(c.n_values), c.n_values)
                digit = perm[i % c.n_values]
            else:
                digit = int(rand() * c.n_values)
            digit_of.append(digit)
            assigns.append((k, _ID_DIGIT0 + digit))
            for j in range(L):
                hops[k + j], chain_of[k + j] = j + 1, i
                if j:
                    assigns.append((k + j, _ID_VAR0 + names[k + j - 1]))
            k += L
        rng.shuffle(assigns)

        ids, pos = _render_prompt(assigns, names, n)

        # 4. queries: distinct variables with >= min_hops hops
        pool = [v for v in range(n) if hops[v] >= c.min_hops]
        queried = rng.sample(pool, min(c.n_queries, len(pool)))
        q, n_chains, n_distinct_digits, size = len(queried), len(lengths), len(set(digit_of)), max(lengths)
        scored: list[int] = []
        feats: list[dict[str, float]] = []
        for j, x in enumerate(queried):
            h, i = hops[x], chain_of[x]
            s = x - h + 1  # the chain's bottom variable
            qpos = len(ids) + 1
            ids += (_ID_QUERY, _ID_VAR0 + names[x], _ID_DIGIT0 + digit_of[i])
            earlier = queried[:j]
            below = [h - hops[y] for y in earlier if chain_of[y] == i and hops[y] <= h]
            scored.append(qpos + 1)
            feats.append({
                "difficulty": h,
                "size": size,
                "position": qpos + 1,
                "is_answer": 1,
                "n_vars": n,
                "n_chains": n_chains,
                "n_queries": q,
                "chain_length": h,
                "query_index": j,
                "n_distinct_digits": n_distinct_digits,
                "chain_seen": int(any(chain_of[y] == i for y in earlier)),
                "hops_to_known": min(below, default=h),
                "distance": qpos - pos[x],
                "sweeps": _sweeps(pos, s, x),
            })
        return Example(tokens=ids, scored=scored, features=feats, size=size)

    def _sample_own_chain(self, rng: random.Random) -> Example:
        """The earlier design, unchanged (its evaluation sets regenerate exactly)."""
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

        ids, pos = _render_prompt(assigns, names, n)
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
                "sweeps": _sweeps(pos, s, x),
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


def _render_prompt(assigns: list[tuple[int, int]], names: list[int], n: int) -> tuple[list[int], list[int]]:
    """``<bos> x = rhs ; ... x = rhs |`` as token ids, and the prompt position of the left-hand
    token of each variable's assignment (variables 0..n-1, ``names[v]`` its letter)."""
    ids = [1]
    pos = [0] * n
    for v, rhs in assigns:
        pos[v] = len(ids)
        ids += (_ID_VAR0 + names[v], _ID_ASSIGN, rhs, _ID_SEP)
    ids[-1] = _ID_END
    return ids, pos


def _sweeps(pos: list[int], s: int, x: int) -> int:
    """Left-to-right passes a reader needs to resolve x (chain variables s..x, bottom first):
    1 + #{t in s+1..x : pos[t] < pos[t - 1]} (module docstring)."""
    return 1 + sum(pos[t] < pos[t - 1] for t in range(s + 1, x + 1))


def guess_pool(features):
    """How many digits the no-composition reader guesses among, per answer token: the prompt's
    distinct digits (``n_distinct_digits``, dense design) or, in the earlier design (distinct
    digits, one chain per query), those no earlier query took (``n_chains - query_index``).
    ``features`` is one record (a mapping) or a DataFrame of records; where ``n_distinct_digits``
    is missing or NaN (an earlier design's record in a table with both) the earlier rule applies."""
    earlier = features["n_chains"] - features["query_index"]
    if "n_distinct_digits" not in features:
        return earlier
    nd = features["n_distinct_digits"]
    if hasattr(nd, "where"):  # pandas
        return nd.where(nd.notna(), earlier)
    return earlier if nd is None or nd != nd else nd


def no_composition_accuracy(difficulty, n_guess):
    """Expected accuracy of a reader that composes nothing, per answer token (the guessing floor).

    It answers a 1-hop query by one lookup, and guesses any other answer uniformly among the
    ``n_guess = guess_pool(features)`` digits it cannot rule out: ``1 if difficulty == 1 else
    1 / n_guess``. Exact in both designs (tests simulate the reader on the rendered text). Works
    elementwise on numbers, numpy arrays and pandas Series. A model above this floor on multi-hop
    queries composes lookups; one at it only guesses.
    """
    guess = 1.0 / n_guess
    return guess + (difficulty == 1) * (1.0 - guess)


_V = HopsTask.build_vocab()
_ID_VAR0, _ID_DIGIT0 = _V.stoi[VAR_NAMES[0]], _V.stoi["0"]
_ID_ASSIGN, _ID_SEP, _ID_END, _ID_QUERY = (_V.stoi[w] for w in (ASSIGN, SEP, END, QUERY))
assert all(_V.stoi[w] == _ID_VAR0 + k for k, w in enumerate(VAR_NAMES))
assert all(_V.stoi[str(d)] == _ID_DIGIT0 + d for d in range(N_DIGITS))
assert _ID_DIGIT0 > _ID_VAR0 + len(VAR_NAMES) - 1  # rhs >= _ID_DIGIT0 <=> a literal
