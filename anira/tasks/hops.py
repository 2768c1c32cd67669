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

The design is a dense one. Why: a small model learns pointer chasing in a CPU
budget only when training covers its symbols densely (measured: a plain looped Transformer
learns 1-4 hops in ~2,000 steps with 8 variables named from a pool of 8 letters and 4 queries
over any variable, and is still at chance after 1,500 steps when the 8 names come from 26
letters; see docs/study.md). So:
  1. n ~ U{min_vars..max_vars} variables named with n distinct letters of the first ``n_names``
     (training: 8-12 of a pool of 20, so every name occurs in about half the examples; the pool
     covers the extrapolation range, which therefore has no unseen name).
  2. The variables are split into chains: ``n_longest`` chains of one length L drawn from
     {min_longest..min(max_hops, n // n_longest)}, each further one from {1..min(cap, left)} with
     cap = max_hops (training, min_longest = 1) or min_longest - 1, with P(L) ~ L**hop_tilt; the
     chains are then put in random order. Every variable is on a chain that ends in a digit, so
     every variable is a possible query.
  3. Digits are i.i.d. uniform over 0..n_values-1 per chain (``distinct_values=False``; True
     gives distinct digits while there are at most n_values chains).
  4. Queries: ``n_queries`` distinct variables drawn uniformly among those with at least
     ``min_hops`` hops (all of them when fewer). Queries may share a chain.
  ``size`` = the longest chain of the example (in variables; at most max_hops).

  Extrapolation needs more composition than training, and nothing else may give the answer away
  (``bounded_reader``, certified by ``anira.data.certify``): 16-20 variables from the same pool,
  exactly three chains of one length L in {5, 6} with distinct digits, every other chain at most 4
  long, and one query to a variable 5 or 6 hops deep (more than any training query). A reader that
  follows at most 4 pointers cannot reach the digit; eliminating the closed chains (<= 4 long)
  leaves the three long chains' digits, so it is at 1/3. (The second study's extrapolation set
  kept one long chain among short ones, where that elimination gave every answer away.) One query
  per example, so no earlier answer on the same chain can be reused.
  Shortcuts the denser training design opens are recorded per token, so analyses can control for
  them: ``chain_seen`` = 1 when an earlier query of the example was on the same chain (its answer
  is the same digit), ``hops_to_known`` = hops from x down its chain to the nearest variable an
  earlier query asked for (h when there is none): what is left to resolve if the earlier answer
  were reused.

Per answer token (query j of the example, variable x with h hops), with its class by the rule of
``anira.tasks.features`` (the table ``HopsTask.features``; docs/features.md):
  static   n_vars = n, n_chains (chains in the prompt, queried or not), n_queries (in this
           example), n_distinct_digits (distinct digits in the prompt);
           sweeps (below); assign_pos (derived: the prompt position of x's assignment)
  label    chain_length = h (the length of the chain followed from x, = difficulty)
  progress query_index = j (0-based): answers already written
  dynamic  chain_seen, hops_to_known (above): what earlier answers revealed
  other    distance = position of the query's ``x`` token minus position of the left-hand ``x``
               of its assignment (how far back the first lookup reaches) = 4n + 3j + 2 -
               assign_pos: static layout plus progress, so it is used through its parts
  and      sweeps = left-to-right passes over the prompt that a reader needs to know x's value
               when at each assignment ``u = w`` it records u's value if w's value is already
               known: with p_k the prompt position of the assignment of x_k (x_h = x),
               sweeps = 1 + #{k in 2..h : p_k < p_{k-1}}, in 1..h. It measures how much of the
               chain can NOT be resolved in reading order (the execution state a causal reader
               is left with at the query).

The no-composition floor (``no_composition_accuracy``): a reader that does the one lookup of a
1-hop query and guesses every other answer uniformly among the prompt's digits it cannot rule
out: all distinct digits of the prompt (``n_distinct_digits``).

The designs of the earlier reference studies (one chain per query; 8 names) are in the git history
(README, "Earlier studies").
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from anira.config import check_choice, check_range
from anira.tasks.base import Example, Task, Vocab
from anira.tasks.features import Feature, common

VAR_NAMES = tuple("abcdefghijklmnopqrstuvwxyz")  # the vocabulary covers every pool size and range
N_DIGITS = 10
ASSIGN, SEP, END, QUERY = "=", ";", "|", "?"



@dataclass
class HopsConfig:
    min_vars: int = 8  # size range (number of variables, = assignments); dense training: 8-12
    max_vars: int = 12  # 12 variables + 4 queries = 61 tokens
    min_hops: int = 1  # queries go to variables with >= min_hops hops
    max_hops: int = 4  # longest chain; 1..4 in training, 6 in extrapolation
    n_queries: int = 4  # queries per example
    n_values: int = 10  # literal digits 0..n_values-1; 10 makes chance accuracy 10 %
    hop_tilt: float = 0.0  # P(L) ~ L**hop_tilt per chain; < 0 favours 1 hop
    distinct_values: bool = False  # chains get distinct digits (while chains <= n_values); else i.i.d.
    n_names: int = 20  # name pool: the first n_names letters, covering the extrapolation range (see docstring)
    min_longest: int = 1  # the longest chain has at least this many variables (extrapolation: 5)
    n_longest: int = 1  # chains drawn at the longest length L (all the same L); with min_longest > 1
    #                     every other chain is shorter than min_longest (extrapolation: 3, see below)


# The second `cpu` reference study's design (commit 18ea01f; the hops learning diagnostic in
# data/results/hops_diagnostic was scored on it): exactly 8 variables from 8 names; extrapolation made one chain of 5-8 and left every other chain at most 3 long,
# so a reader that follows 4 pointers and eliminates the closed chains' digits answers every query.
STUDY2_DESIGN = dict(min_vars=8, max_vars=8, min_hops=1, max_hops=4, n_queries=4, n_values=10, hop_tilt=0.0,
                     distinct_values=False, n_names=8, min_longest=1, n_longest=1)
STUDY2_EXTRAP = dict(STUDY2_DESIGN, max_hops=8, min_longest=5)


class HopsTask(Task):
    name = "hops"
    Config = HopsConfig
    # Every feature's class by the rule of anira.tasks.features (docs/features.md); static = unchanged
    # when the same queries are answered in another order
    features = common(size="the longest chain of the prompt",
                      position="sequence index of the answer = 4 n_vars + 3 query_index + 3: prompt layout plus "
                               "progress",
                      difficulty="hops of the queried variable") + (
        Feature("n_vars", "static", "assignments in the prompt"),
        Feature("n_chains", "static", "chains in the prompt, queried or not"),
        Feature("n_queries", "static", "queries of the example: input, whatever order they are answered in"),
        Feature("chain_length", "label", "= difficulty (the hops followed from the queried variable)"),
        Feature("query_index", "progress", "answers already written (the output step)"),
        Feature("n_distinct_digits", "static", "distinct digits in the prompt"),
        Feature("chain_seen", "dynamic", "an earlier answer already revealed this chain's digit: the cache of a "
                                         "resolver that keeps its answers (what earlier outputs revealed)"),
        Feature("hops_to_known", "dynamic", "hops left to resolve when earlier answers are reused: that resolver's "
                                            "remaining work"),
        Feature("distance", "other", "query position - assignment position = 4 n_vars + 3 query_index + 2 - "
                                     "assign_pos: static layout plus progress, used through its parts"),
        Feature("sweeps", "static", "left-to-right passes over the prompt that resolve the queried variable: a "
                                    "function of the prompt layout and the query"),
        Feature("assign_pos", "static", "prompt position of the queried variable's assignment (where the first "
                                        "lookup lands): prompt layout",
                derived="position - 1 - distance"),
    )
    size_name = "longest chain (variables)"
    difficulty_name = "pointer hops from the queried variable to its digit"
    floor_reader = "answers a 1-hop query by one lookup, guesses any other among the digits it cannot rule out"

    @classmethod
    def floor(cls, records):
        return no_composition_accuracy(records["difficulty"], guess_pool(records))

    def __init__(self, config: HopsConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        # cumulative weights of L**hop_tilt, indexed by chain length, for a draw by bisection
        self._cum_w, acc = [0.0] * (c.max_hops + 1), 0.0
        for h in range(1, c.max_hops + 1):
            acc += h**c.hop_tilt
            self._cum_w[h] = acc

    @classmethod
    def train_config(cls) -> HopsConfig:
        return HopsConfig()

    @classmethod
    def extrap_config(cls) -> HopsConfig:
        # more variables, 3 chains of 5-6 (distinct digits, every other chain at most 4 long), one query
        # to a variable 5-6 hops deep (module docstring)
        return HopsConfig(min_vars=16, max_vars=20, min_hops=5, max_hops=6, n_queries=1, distinct_values=True,
                          min_longest=5, n_longest=3)

    def validate(self) -> None:
        c = self.config
        n_pool = len(VAR_NAMES)
        check_range("n_names", c.n_names, 2, n_pool, "the name pool: the first n_names letters")
        check_range("min_vars", c.min_vars, 2, c.n_names, f"at least 2 variables, at most the {c.n_names}-letter name pool")
        check_range("max_vars", c.max_vars, c.min_vars, c.n_names, "from min_vars to the name pool size n_names")
        check_range("min_hops", c.min_hops, 1, c.min_vars, "a query of h hops needs h variables, so at most min_vars")
        check_range("max_hops", c.max_hops, c.min_hops, c.max_vars, "from min_hops to max_vars")
        check_range("n_queries", c.n_queries, 1, c.min_vars, "distinct queried variables, so at most min_vars")
        check_range("min_longest", c.min_longest, 1, min(c.max_hops, c.min_vars), "at most max_hops and min_vars")
        check_range("n_longest", c.n_longest, 1, c.min_vars // c.min_longest,
                    "n_longest chains of min_longest variables must fit in min_vars")
        check_range("n_values", c.n_values, 1, N_DIGITS, "literal digits")
        check_range("hop_tilt", c.hop_tilt, -4.0, 4.0, "negative values favour short chains (a curriculum)")

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(list(VAR_NAMES) + [str(d) for d in range(N_DIGITS)] + [ASSIGN, SEP, END, QUERY])

    # ------------------------------------------------------------------------------------
    def _draw_length(self, rand, lo: int, hi: int) -> int:
        """L in lo..hi with P(L) ~ L**hop_tilt."""
        cum_w = self._cum_w
        return bisect_right(cum_w, cum_w[lo - 1] + rand() * (cum_w[hi] - cum_w[lo - 1]), lo, hi)

    def sample(self, rng: random.Random) -> Example:
        c = self.config
        rand = rng.random
        n = rng.randint(c.min_vars, c.max_vars)
        H = min(c.max_hops, n)
        # 2. chain lengths: n_longest chains of one length L >= min_longest, the rest fill the n
        # variables (shorter than min_longest when min_longest > 1)
        L0 = self._draw_length(rand, c.min_longest, min(H, n // c.n_longest))
        lengths = [L0] * c.n_longest
        free = n - c.n_longest * L0
        cap = H if c.min_longest == 1 else c.min_longest - 1
        while free:
            L = self._draw_length(rand, 1, min(cap, free))
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

    def bounded_reader(self, words: list[str], k: int) -> list[float]:
        """Follows at most k pointers from the queried variable (a digit or the answer of an
        earlier query of the example ends the walk: the reuse shortcut); when the walk does not
        end, it eliminates every chain it can close in k steps (chains of at most k variables) and
        guesses uniformly among the distinct digits of the others. (Generous: it is told which
        chains are longer than k.)"""
        assigns, queries = self.parse(words)
        env = dict(assigns)
        bottom, length = {}, {}
        for v in env:  # the chain (its bottom variable) of every variable, and chain lengths
            x = v
            while not env[x].isdigit():
                x = env[x]
            bottom[v] = x
            length[x] = length.get(x, 0) + 1
        long_digits = {env[b] for b, L in length.items() if L > k}
        out, revealed = [], {}
        for var, answer in queries:
            x, value = var, None
            for _ in range(k):
                rhs = env[x]
                if rhs.isdigit() or rhs in revealed:
                    value = rhs if rhs.isdigit() else revealed[rhs]
                    break
                x = rhs
            if value is not None:
                out.append(float(value == answer))
            else:
                out.append((answer in long_digits) / len(long_digits))
            revealed[var] = answer  # the model reads earlier answers off the text
        return out

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
    distinct digits (``n_distinct_digits``). ``features`` is one record (a mapping) or a DataFrame
    of records."""
    return features["n_distinct_digits"]


def no_composition_accuracy(difficulty, n_guess):
    """Expected accuracy of a reader that composes nothing, per answer token (the guessing floor).

    It answers a 1-hop query by one lookup, and guesses any other answer uniformly among the
    ``n_guess = guess_pool(features)`` digits it cannot rule out: ``1 if difficulty == 1 else
    1 / n_guess``. Exact (tests simulate the reader on the rendered text). Works
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
