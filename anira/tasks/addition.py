"""`addition`: multi-digit addition, answer written most-significant digit first.

Sequence (one example, n digits), with column hints (the design; ``hint_pool`` > 0):
    <bos> H_{n-1} a_{n-1} b_{n-1} ... H_0 a_0 b_0 = H_n r_n H_{n-1} r_{n-1} ... H_0 r_0
or plain (``hint_pool`` = 0, the earlier designs):
    <bos> a_{n-1} ... a_0 + b_{n-1} ... b_0 = r_n r_{n-1} ... r_0
Both operands are written with exactly n digits (leading zeros allowed) and the answer with
exactly n + 1 digits, so r_n is the carry out (0 or 1) and ``r = str(a + b).zfill(n + 1)``.
The fixed width makes every answer position a function of its own column and the carry into
it, and makes the sequence length a function of n alone. ``size`` = n (digits per operand).
H_i is the hint letter of column i (letters increasing with the column, a random subset of the
pool; see "Why column hints" below); the answer's hints are given, only the digits r_i are scored.

Carries, with column sums s_i = a_i + b_i (i = 0 is the least significant column; s_n = 0):

    c_0 = 0,   c_{i+1} = 1 if s_i + c_i >= 10 else 0,   r_i = (s_i + c_i) mod 10

Column i-1 decides c_i alone unless s_{i-1} = 9 (it "propagates": c_i = c_{i-1}). So the carry
into column i depends on a chain of columns below it, and its length is

    carry_chain(0) = 0
    carry_chain(i) = 1                       if s_{i-1} != 9   (generate: s >= 10, or kill: s <= 8)
                   = 1 + carry_chain(i - 1)  if s_{i-1} == 9   (propagate)

i.e. carry_chain(i) = number of columns below i that must be read to know c_i: the run of
9-sums directly below i plus the column that ends it (or the run alone when it reaches column
0, where the carry in is 0). The equivalent integer definition (used by the tests): carry_chain(i)
is the smallest k such that the digits in columns i-k..i-1 fix c_i whatever the lower digits.

What is left to compute once the digits above are written (``difficulty``). The model predicts
r_i after r_n..r_{i+1}, and those reveal c_{i+1} = (r_{i+1} - s_{i+1}) mod 10. When s_i = 9,
c_{i+1} = c_i, so the digit just written gives the carry away and no column below need be read;
otherwise c_{i+1} says nothing about c_i (s_i >= 10 carries whatever c_i, s_i <= 8 never does):

    open_chain(i) = 0               if i < n and s_i == 9     (the written prefix fixes c_i)
                  = carry_chain(i)  otherwise

i.e. the smallest k such that columns i-k..i-1 together with the digits already written fix c_i.
``difficulty`` = open_chain: 0 for the last digit and for a digit inside a run of 9-sums (once the
digit above the run is written), 1 for a digit whose carry the column right below settles, L + 1
for the digit right above a run of L 9-sums: the one digit of a run that needs the whole chain.
(Without the prefix term, the first study's difficulty, the digits inside a run counted as hard
although a causal model reads their carry off the previous answer digit: in that study they were
its best digits, its difficulty-0 digits its worst.)

Generator: digits are uniform (P(s = 9) = 0.1, so long chains would be rare); with probability
``plant_prob`` one propagate run is planted: length L ~ U{1..n-1} in columns start..start+L-1,
start ~ U{1..n-L}; every column in the run gets a random pair with sum 9 and the column right
below it a random pair with sum != 9. So the run is exactly L long, the chain above it is L + 1,
and the carry entering it is 1 (sum >= 10) or 0 (sum <= 8) equally often (45 pairs each): the
length of a run of 9s says nothing about the carry. Runs are planted only for n >= 2.
``n_runs`` > 1 repeats the planting (each attempt with ``plant_prob``; a later run may overwrite
or join an earlier one) and ``max_run`` caps L: several short runs put more digits right above a
run, the digits that need the chain. The features are computed from the final digits, so they stay
exact whatever the planting did.

Ranges: each out-of-range split changes one thing. Training: 4-8 digits; it plants runs of at most 3
nine-sums (``max_run``) and redraws every example with an open chain longer than 4
(``max_difficulty``: a run of natural 9-sums may extend a planted one), so no training digit needs
more than 4 columns. ``extrap`` (split "out"): only the composition grows. It keeps a training
width (8 digits) and plants one run of 4-7 nine-sums (``min_run``) in every example, so one digit
per example needs a chain of 5-8 columns and every other digit at most 4: a reader that reads at
most 4 columns is exact in range and guesses that digit's carry out of range (``bounded_reader``;
anira.data.certify). ``wide`` (split "wide"): only the width grows, 10-16 digits with training's
chains, so the same reader stays exact there; its one-column digits are the alignment diagnostic
(``anira.analysis.width_table``). (The second study's extrapolation to 10-16 digits changed the
width and the composition at once, and its format moved every column: even its carry-free digits
failed.)

Per answer token (r_i, written at digit_index n - i), with its class by the rule of
``anira.tasks.features`` (the table ``AdditionTask.features``; docs/features.md):
  static   n_digits = n, carry_in = c_i, carry_chain = carry_chain(i): functions of the operands,
           the same whatever order the answer is written in
  progress digit_index = n - i (0 = the carry-out digit, from the most significant)
  label    open_chain = open_chain(i) (= difficulty)
  dynamic  prefix_reveals (derived by the analysis) = 1 when the digit just written fixes c_i
           (s_i = 9, 1 <= i < n): what the earlier outputs revealed. So
           open_chain = carry_chain * (1 - prefix_reveals): the label is a static x dynamic product.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from anira.config import check_choice, check_range
from anira.tasks.base import Example, Task, Vocab
from anira.tasks.features import Feature, common

MAX_DIGITS = 32  # largest supported operand width
PLUS, EQUALS = "+", "="


@dataclass
class AdditionConfig:
    min_digits: int = 8  # size range (digits per operand): training uses 8 only, see below
    max_digits: int = 8  # 8 digits = 28 tokens; carry chains up to 8 columns
    plant_prob: float = 0.8  # P(plant one propagate run): uniform digits alone rarely chain past 2
    n_runs: int = 1  # planting attempts per example, each with plant_prob; a later run may overwrite an earlier
    max_run: int = 3  # longest planted run (0: up to n - 1); training: 3, so open chains stay <= 4
    min_run: int = 1  # shortest planted run (extrapolation: runs longer than any carry chain in training)
    max_difficulty: int = 4  # > 0: examples with a longer open chain are redrawn (training: 4; see below)
    hint_pool: int = 0  # > 0: every column carries a hint letter from a pool this size (see below); 0: plain format
    hint_order: str = "consecutive"  # "random" increasing subset of the pool (the design), or "consecutive" from a random offset


HINTS = tuple(chr(ord("A") + j) for j in range(26))  # column hint symbols (hint_pool <= 26)
HINT_ORDERS = ("consecutive", "random")


# Why column hints. With n varying, the offset from an answer digit back to its column (2n + 2 tokens
# to a_i, n + 1 to b_i in the plain format) changes with n, and the model must first find n before it
# can add. At d 128 that alignment, not the carry chain, is what it failed to learn: the previous `cpu`
# study (n = 1..8, plain) scored 0.54 on the difficulty-0 digits, which need no carry at all. Trained
# at one width (the plain design below) every column sits at a fixed offset, but then an unseen width
# moves every column at once: the second study's 10-16 digit set scored 0.07 on its carry-free digits.
# The hinted format names every column by a symbol instead (index hints, as in the length-generalization
# literature on addition): column i's two digits and its answer digit carry the same hint, so an
# answer digit finds its column by content at any width. The widths vary in training (4-8), so the
# offsets between positions do not give the column away either.
#
#     plain (hint_pool 0): <bos> a_{n-1} .. a_0 + b_{n-1} .. b_0 = r_n .. r_0
#     hinted:              <bos> H_{n-1} a_{n-1} b_{n-1} .. H_0 a_0 b_0 = H_n r_n H_{n-1} r_{n-1} .. H_0 r_0
#
# The answer's hints are given (the model predicts each digit r_i at its hint H_i, never a hint); the
# carry rule, the chains and the features are those of the plain format. Which letters (``hint_order``):
#   "random" (the design): H_0 < H_1 < .. < H_n, an increasing random subset of the pool. The letter of
#       the column below is not known from a column's own letter, so the direct way to it is through
#       that column (whose causal convolution holds the letter above it), one column per step.
#   "consecutive": H_i = HINTS[offset + i], offset ~ U{0 .. hint_pool - n - 1}. Every letter names its
#       neighbours, so one attention step can read several columns below at once.
# Measured (README "`addition` design"): fixed depth 1 reaches 0.998 on the chain digits with
# consecutive letters and still 0.914 with random subsets (0.759 in the one-width design), so under
# either the learning bar on depth 1 fails with this backbone's 4 heads. With 2 heads (random subsets,
# 3,000 steps) depth 1 falls to 0.823 while depth 6 is exact (1.000), which passes it, and so do the
# adaptive runs of the `cpu3` study (within 0.011 of depth 6 at depth 1.6-2.1): 2 heads is the recipe.
#
# Three ranges (``AdditionTask.ranges``): training (4-8 digits, planted runs of at most 3 nine-sums,
# open chains capped at 4); ``extrap``, where only the composition grows (8 digits, one run of 4-7
# nine-sums: one digit per example needs a chain of 5-8 columns); ``wide``, where only the width grows
# (10-16 digits, the training rules for chains: no digit needs more than 4 columns, so the bounded
# reader stays exact there and the carry-free digits measure the alignment alone).
#
# The plain single-width design (the third study's first addition design; README "`addition`"):
PLAIN_DESIGN = dict(min_digits=8, max_digits=8, plant_prob=0.8, n_runs=1, max_run=3, min_run=1, max_difficulty=4,
                    hint_pool=0)
PLAIN_EXTRAP = dict(PLAIN_DESIGN, plant_prob=1.0, min_run=4, max_run=0, max_difficulty=0)
# The second `cpu` reference study's design (commit 18ea01f; the addition learning diagnostic in
# data/results/addition_diagnostic was scored on it): carry chains up to 8 in training; extrapolation to
# 10-16 digits changed the width and the positions at once. (The first study's designs, 1-8 digits and
# difficulty = carry_chain, are in the git history: README, "Earlier studies".)
STUDY2_DESIGN = dict(min_digits=8, max_digits=8, plant_prob=0.8, n_runs=1, max_run=0, min_run=1, max_difficulty=0,
                     hint_pool=0)
STUDY2_EXTRAP = dict(STUDY2_DESIGN, min_digits=10, max_digits=16)


class AdditionTask(Task):
    name = "addition"
    Config = AdditionConfig
    # Every feature's class by the rule of anira.tasks.features (docs/features.md); static = unchanged
    # for a column when the answer is written in another order (least significant digit first)
    features = common(size="digits per operand", position="sequence index of the digit = 3 n + 3 + 2 digit_index "
                                                          "(hinted; plain: 2 n + 3 + digit_index): layout plus progress",
                      difficulty="open_chain (docstring)") + (
        Feature("n_digits", "static", "digits per operand (= size)"),
        Feature("digit_index", "progress", "answer digits already written (the output step)"),
        Feature("carry_in", "static", "the carry into this column: a function of the operand columns below it, "
                                      "the same whatever order the answer is written in"),
        Feature("carry_chain", "static", "columns below that fix the carry without the written prefix (the run "
                                         "of 9-sums and the column ending it): operand structure"),
        Feature("open_chain", "label", "= difficulty"),
        Feature("prefix_reveals", "dynamic", "the digit just written fixes this column's carry (s_i = 9, "
                                             "1 <= i < n): what the earlier outputs revealed",
                derived="open_chain == 0 and carry_chain > 0"),
    )
    # 5,000 steps and deep supervision leaning on the deep steps (w_n ~ n^2): on the 543 in-range chain
    # digits `early` reached 0.825 at 3,000 steps with the plain mean, 0.867 / 0.890 / 0.891 with
    # ds_power 1 / 2 / 4, and 0.989 at 5,000 steps with 2 (fixed depth 6: 0.974 at 3,000; README)
    # No position encoding: the hints align every digit with its column by content, so nothing ties the
    # model to the training widths (with RoPE the same design scored 0.38 on 10-16 digits at step 1,500
    # against 0.92 without: README "`addition` design"). Two heads: with four, one attention step read
    # most of a 4-column chain (depth 1 0.914 on the chain digits); with two, depth 1 0.823 and depth 6
    # 1.000 at 3,000 steps (19.6 CPU-minutes), so 3,000 steps (the 5,000 above were for the plain design)
    recipe = {"steps": 3000, "pos_encoding": "none", "n_heads": 2}
    adaptive_recipe = {"ds_power": 2.0}
    size_name = "number of digits per operand"
    difficulty_name = "columns below still needed to fix the digit's carry (open carry chain)"
    # a digit whose carry chain is out of the reader's reach is one of two values (the carry is one bit),
    # so the bounded reader's floor beyond k is 1/2 in every two-operand design (not the usual 0.35)
    extrapolation_floor_bar = 0.5
    floor_reader = ("adds its own column, takes the carry from the column below or the digit just written, "
                    "and guesses it behind a 9-sum")

    @classmethod
    def floor(cls, records):
        """One-column reader: digit r_i is (s_i + c_i) mod 10; it reads c_i off column i - 1 or off
        the digit just written, which settles it unless difficulty >= 2 (a 9-sum below, and no
        prefix that gives the carry away); then it guesses c_i in {0, 1}, and exactly one guess is
        right: ``1 if difficulty <= 1 else 0.5``."""
        d = records["difficulty"]
        return 0.5 + 0.5 * (d <= 1)

    ranges = {"in": "train", "out": "extrap", "wide": "wide"}

    @classmethod
    def train_config(cls) -> AdditionConfig:
        return AdditionConfig(min_digits=4, max_digits=8, hint_pool=20, hint_order="random")

    @classmethod
    def extrap_config(cls) -> AdditionConfig:
        # only the composition grows: 8 digits, one run of 4-7 nine-sums, so one digit per example
        # needs a chain of 5-8 columns
        return AdditionConfig(min_digits=8, max_digits=8, plant_prob=1.0, min_run=4, max_run=0, max_difficulty=0,
                              hint_pool=20, hint_order="random")

    @classmethod
    def wide_config(cls) -> AdditionConfig:
        # only the width grows: 10-16 digits, chains as in training (no digit needs more than 4 columns)
        return AdditionConfig(min_digits=10, max_digits=16, hint_pool=20, hint_order="random")

    def validate(self) -> None:
        c = self.config
        check_range("min_digits", c.min_digits, 1, MAX_DIGITS)
        check_range("max_digits", c.max_digits, c.min_digits, MAX_DIGITS, "from min_digits to MAX_DIGITS")
        check_range("plant_prob", c.plant_prob, 0.0, 1.0, "a probability")
        check_range("n_runs", c.n_runs, 0, MAX_DIGITS)
        check_range("max_run", c.max_run, 0, MAX_DIGITS)
        check_range("min_run", c.min_run, 1, max(1, c.max_digits - 1), "a run fits below the top column: at most max_digits - 1")
        if c.max_run:
            check_range("max_run", c.max_run, c.min_run, MAX_DIGITS, "0 (up to n - 1) or at least min_run")
        check_range("max_difficulty", c.max_difficulty, 0, MAX_DIGITS, "0 (no cap) or the longest open chain kept")
        check_choice("hint_order", c.hint_order, HINT_ORDERS)
        if c.hint_pool:
            check_range("hint_pool", c.hint_pool, c.max_digits + 1, len(HINTS),
                        "0 (plain format) or from max_digits + 1 (one hint per answer column) to 26")

    @classmethod
    def build_vocab(cls, hint_pool: int = 0) -> Vocab:
        return Vocab([str(d) for d in range(10)] + [PLUS, EQUALS] + list(HINTS[:hint_pool]))

    def make_vocab(self) -> Vocab:
        return self.build_vocab(self.config.hint_pool)

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        return self.redraw_over_cap(self._sample_once, rng)

    def _sample_once(self, rng: random.Random) -> Example:
        c = self.config
        randint = rng.randint
        n = randint(c.min_digits, c.max_digits)
        # column digits, least significant first (one 10**n draw per operand: cheaper than n)
        a = [int(ch) for ch in reversed(str(rng.randrange(10**n)).zfill(n))]
        b = [int(ch) for ch in reversed(str(rng.randrange(10**n)).zfill(n))]
        for _ in range(c.n_runs):
            if not (n > c.min_run and rng.random() < c.plant_prob):
                continue
            L = randint(c.min_run, min(n - 1, c.max_run or n))
            start = randint(1, n - L)
            for i in range(start, start + L):
                x = randint(0, 9)
                a[i], b[i] = x, 9 - x
            while True:
                x, y = randint(0, 9), randint(0, 9)
                if x + y != 9:
                    break
            a[start - 1], b[start - 1] = x, y

        # carries and chains, least significant first
        digits, carry_in, chain = [0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
        carry = length = 0
        for i in range(n):
            s = a[i] + b[i]
            digits[i] = (s + carry) % 10
            carry_in[i], chain[i] = carry, length
            length = length + 1 if s == 9 else 1
            carry = 1 if s + carry >= 10 else 0
        digits[n], carry_in[n], chain[n] = carry, carry, length

        ids = [1]
        if c.hint_pool:  # H_i a_i b_i per column, then H_i r_i per answer digit (scored: the r_i)
            if c.hint_order == "consecutive":
                h0 = _ID_HINT0 + randint(0, c.hint_pool - n - 1)
                hint = [h0 + i for i in range(n + 1)]
            else:  # an increasing random subset: the letter of the column below is not known from this one
                hint = [_ID_HINT0 + j for j in sorted(rng.sample(range(c.hint_pool), n + 1))]
            for i in reversed(range(n)):
                ids += [hint[i], a[i] + _ID_DIGIT0, b[i] + _ID_DIGIT0]
            ids.append(_ID_EQUALS)
            scored = []
            for i in reversed(range(n + 1)):
                ids.append(hint[i])
                scored.append(len(ids))
                ids.append(digits[i] + _ID_DIGIT0)
        else:
            ids += [d + _ID_DIGIT0 for d in reversed(a)]
            ids.append(_ID_PLUS)
            ids += [d + _ID_DIGIT0 for d in reversed(b)]
            ids.append(_ID_EQUALS)
            scored = list(range(len(ids), len(ids) + n + 1))
            ids += [d + _ID_DIGIT0 for d in reversed(digits)]

        feats = []
        for k in range(n + 1):  # k = digit_index, column i = n - k
            i = n - k
            open_chain = 0 if i < n and a[i] + b[i] == 9 else chain[i]
            rec = {
                "difficulty": open_chain,
                "size": n,
                "position": scored[k],
                "is_answer": 1,
                "n_digits": n,
                "digit_index": k,
                "carry_in": carry_in[i],
                "carry_chain": chain[i],
                "open_chain": open_chain,
            }
            feats.append(rec)
        return Example(tokens=ids, scored=scored, features=feats, size=n)

    def bounded_reader(self, words: list[str], k: int) -> list[float]:
        """Adds its own column and finds the carry into it: off the digit just written when its own
        column sums to 9 (the carry passes through unchanged), else by reading the columns below one
        per step until one settles it (a sum other than 9, or column 0). Out of steps, it guesses the
        carry: right with probability 1/2 (the carry is one bit, so no two-operand design can put
        this reader lower)."""
        a, b, ans = (list(map(int, x)) for x in self.parse(words))
        n = len(a)
        s = [a[n - 1 - i] + b[n - 1 - i] for i in range(n)] + [0]  # column sums, least significant first
        res = []
        for kk, r in enumerate(ans):  # answer digit kk is column i = n - kk
            i = n - kk
            if i < n and s[i] == 9 and kk > 0:  # the written digit above gives the carry away
                c = (ans[kk - 1] - s[i + 1] % 10) % 10 if i + 1 < n else ans[kk - 1]
                res.append(float((s[i] + c) % 10 == r))
                continue
            j, steps = i - 1, 0
            while j >= 0:
                steps += 1
                if s[j] != 9:
                    break
                j -= 1
            if steps > k:
                res.append(0.5 * ((s[i] % 10 == r) + ((s[i] + 1) % 10 == r)))
                continue
            c = 0  # the carry into column i, computed upward from column j (or from 0 at the bottom)
            for col in range(max(j, 0), i):
                c = 1 if s[col] + c >= 10 else 0
            res.append(float((s[i] + c) % 10 == r))
        return res

    # ------------------------------------------------------------------------------------
    @staticmethod
    def parse(words: list[str]) -> tuple[str, str, str]:
        """Split a rendered example into the digit strings (a, b, answer), most significant first
        (either format: the hints are dropped)."""
        i_eq = words.index(EQUALS)
        if PLUS in words:
            i_plus = words.index(PLUS)
            return "".join(words[1:i_plus]), "".join(words[i_plus + 1 : i_eq]), "".join(words[i_eq + 1 :])
        cols, ans = words[1:i_eq], words[i_eq + 1 :]
        return "".join(cols[1::3]), "".join(cols[2::3]), "".join(ans[1::2])


_V = AdditionTask.build_vocab(len(HINTS))
_ID_DIGIT0, _ID_PLUS, _ID_EQUALS, _ID_HINT0 = _V.stoi["0"], _V.stoi[PLUS], _V.stoi[EQUALS], _V.stoi[HINTS[0]]
assert all(_V.stoi[str(d)] == _ID_DIGIT0 + d for d in range(10))
assert all(_V.stoi[h] == _ID_HINT0 + j for j, h in enumerate(HINTS))
