"""`addition` against Python integers: operands parsed back from the rendered tokens, the answer
checked against str(a + b), carries and carry chains recomputed from integer arithmetic."""
import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anira.tasks import make_task
from anira.tasks.addition import PLAIN_DESIGN, STUDY2_DESIGN, AdditionConfig, AdditionTask


def carry_into(a: int, b: int, i: int) -> int:
    """c_i: does the sum of the lowest i columns overflow into column i?"""
    m = 10**i
    return (a % m + b % m) // m


def chain_reference(a: int, b: int, i: int) -> int:
    """Smallest k such that the columns i-k..i-1 alone fix the carry into column i, whatever the
    carry x into column i-k (which is 0 when k = i: there is nothing below)."""
    for k in range(0, i + 1):
        m = 10**k
        wa, wb = (a // 10 ** (i - k)) % m, (b // 10 ** (i - k)) % m
        outcomes = {(wa + wb + x) // m for x in ((0,) if k == i else (0, 1))}
        if len(outcomes) == 1:
            return k
    raise AssertionError("unreachable")


def open_chain_reference(a: int, b: int, i: int, n: int) -> int:
    """Smallest k such that columns i-k..i-1, together with the answer digits above column i
    (which fix c_{i+1} when i < n), fix the carry into column i."""
    s_i = (a // 10**i) % 10 + (b // 10**i) % 10
    for k in range(0, i + 1):
        m = 10**k
        wa, wb = (a // 10 ** (i - k)) % m, (b // 10 ** (i - k)) % m
        outcomes = {(wa + wb + x) // m for x in ((0,) if k == i else (0, 1))}
        if i < n:  # the prefix: c_{i+1} = [s_i + c_i >= 10] is known
            outcomes = {c for c in outcomes if int(s_i + c >= 10) == carry_into(a, b, i + 1)}
        if len(outcomes) == 1:
            return k
    raise AssertionError("unreachable")


def check_hints(words, n, pool, order="consecutive"):
    """The hinted format read independently of ``parse``: n columns of (hint, digit, digit), "=",
    then n + 1 pairs (hint, digit); column i's hint is the same in the operands and the answer;
    consecutive: letter offset + i with 0 <= offset <= pool - n - 1; random: letters increasing with
    the column; returns the scored positions (the answer digits)."""
    letters = [chr(ord("A") + j) for j in range(pool)]
    eq = 1 + 3 * n
    assert words[0] == "<bos>" and words[eq] == "=" and len(words) == eq + 1 + 2 * (n + 1)
    op_hints, ans_hints = words[1:eq:3], words[eq + 1::2]
    assert all(h in letters for h in op_hints + ans_hints)
    idx = [letters.index(h) for h in reversed(ans_hints)]  # column 0 first
    if order == "consecutive":
        assert 0 <= idx[0] <= pool - n - 1 and idx == list(range(idx[0], idx[0] + n + 1))
    else:
        assert all(x < y for x, y in zip(idx, idx[1:]))
    assert op_hints == ans_hints[1:]
    assert all(w.isdigit() for j, w in enumerate(words[1:eq]) if j % 3) and all(w.isdigit() for w in words[eq + 2::2])
    return list(range(eq + 2, len(words), 2))


def check_examples(task, exs):
    c = task.config
    for ex in exs:
        words = task.render(ex)
        sa, sb, sr = AdditionTask.parse(words)
        n = ex.size
        assert len(sa) == len(sb) == n and c.min_digits <= n <= c.max_digits
        a, b = int(sa), int(sb)
        assert sr == str(a + b).zfill(n + 1)
        if c.hint_pool:
            assert "+" not in words and ex.scored == check_hints(words, n, c.hint_pool, c.hint_order)
        else:
            assert len(ex.scored) == n + 1 and ex.scored == list(range(len(ex.tokens) - n - 1, len(ex.tokens)))
        for k, rec in enumerate(ex.features):
            i = n - k  # column, 0 = least significant
            chain = chain_reference(a, b, i)
            want = {"difficulty": chain, "carry_chain": chain, "carry_in": carry_into(a, b, i), "digit_index": k,
                    "n_digits": n, "size": n, "is_answer": 1, "position": ex.scored[k]}
            want["difficulty"] = want["open_chain"] = open_chain_reference(a, b, i, n)
            assert rec == want, f"{sa} + {sb}, column {i}"


@pytest.mark.parametrize("rng", ["train", "extrap", "wide"])
def test_against_python_integers(rng):
    task = make_task("addition", range=rng)
    check_examples(task, task.generate(300, seed=3))


@settings(max_examples=25, deadline=None)
@given(min_digits=st.integers(1, 20), extra=st.integers(0, 12), plant_prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**31),
       hint_extra=st.one_of(st.none(), st.integers(1, 6)),
       hint_order=st.sampled_from(["consecutive", "random"]))
def test_reference_over_configs(min_digits, extra, plant_prob, seed, hint_extra, hint_order):
    max_digits = min(min_digits + extra, 32)
    hint_pool = 0 if hint_extra is None or max_digits + hint_extra > 26 else max_digits + hint_extra
    task = AdditionTask(AdditionConfig(min_digits=min_digits, max_digits=max_digits, plant_prob=plant_prob,
                                       hint_pool=hint_pool, hint_order=hint_order))
    check_examples(task, task.generate(20, seed=seed))


def test_chain_reference_on_hand_examples():
    # 999 + 001: column 0 generates, columns 1-2 propagate -> carry chains 0,1,2,3
    assert [chain_reference(999, 1, i) for i in range(4)] == [0, 1, 2, 3]
    assert [carry_into(999, 1, i) for i in range(4)] == [0, 1, 1, 1]
    # 1999 + 0001: column 3 (1 + 0) kills, so the carry out is settled by column 3 alone
    assert [chain_reference(1999, 1, i) for i in range(5)] == [0, 1, 2, 3, 1]
    # 45 + 54: both columns sum to 9, nothing below: the carry out depends on both columns
    assert [chain_reference(45, 54, i) for i in range(3)] == [0, 1, 2]


def test_planting_makes_long_chains_common():
    exs = make_task("addition", **STUDY2_DESIGN).generate(3000, seed=1)
    diff = collections.Counter(r["difficulty"] for e in exs for r in e.features)
    assert set(diff) == set(range(0, 9))  # the carry out of 8 digits depends on up to 8 columns
    assert sum(v for d, v in diff.items() if d >= 4) / sum(diff.values()) > 0.05
    plain = make_task("addition", **{**STUDY2_DESIGN, "plant_prob": 0.0}).generate(3000, seed=1)
    diff0 = collections.Counter(r["difficulty"] for e in plain for r in e.features)
    assert sum(v for d, v in diff0.items() if d >= 4) / sum(diff0.values()) < 0.005
    # the carry entering a long chain is 1 about as often as 0
    long_in = [r["carry_in"] for e in exs for r in e.features if r["carry_chain"] >= 4]
    assert 0.35 < sum(long_in) / len(long_in) < 0.65


def test_several_short_runs_give_more_digits_that_need_the_chain():
    def hard_share(**params):
        exs = make_task("addition", **params).generate(1500, seed=2)
        return sum(r["difficulty"] >= 2 for e in exs for r in e.features) / sum(len(e.features) for e in exs)

    one = hard_share()
    several = hard_share(n_runs=3, max_run=3, plant_prob=1.0)
    assert several > one + 0.05
    exs = make_task("addition", n_runs=3, max_run=3, plant_prob=1.0).generate(300, seed=2)
    check_examples(make_task("addition", n_runs=3, max_run=3, plant_prob=1.0), exs)  # still exact


def test_sizes_cover_ranges_and_lengths():
    tr = make_task("addition").generate(2000, seed=0)
    ex = make_task("addition", range="extrap").generate(2000, seed=0)
    wide = make_task("addition", range="wide").generate(2000, seed=0)
    assert {e.size for e in tr} == set(range(4, 9)) and {e.size for e in ex} == {8}
    assert {e.size for e in wide} == set(range(10, 17))
    assert all(len(e.tokens) == 5 * e.size + 4 for e in tr + ex + wide)  # hint a b per column, hint r per answer digit
    plain = AdditionTask(AdditionConfig(**PLAIN_DESIGN)).generate(500, seed=0)
    assert {e.size for e in plain} == {8}
    assert all(len(e.tokens) == 3 * e.size + 4 for e in plain)


def test_hints_cover_the_pool_in_training():
    """Every hint letter and every pair of neighbouring letters that a 16-digit example uses is seen
    in training (4-8 digits, random increasing subsets), so the wide split asks for no unseen symbol;
    and a column's letter does not name the letter of the column below (random order)."""
    def pairs(exs, task):
        out = set()
        for e in exs:
            words = task.render(e)
            hints = words[1:words.index("="):3]
            out |= set(zip(hints, hints[1:]))
        return out
    tr_task, wide_task = make_task("addition"), make_task("addition", range="wide")
    tr, wide = tr_task.generate(2000, seed=4), wide_task.generate(500, seed=4)
    assert pairs(wide, wide_task) <= pairs(tr, tr_task)
    below = collections.defaultdict(set)
    for upper, lower in pairs(tr, tr_task):
        below[upper].add(lower)
    assert min(len(v) for k, v in below.items() if k > "E") >= 4  # several letters can sit below any one
    assert len(tr_task.vocab) == len(wide_task.vocab) == len(make_task("addition", range="extrap").vocab)
    assert len(AdditionTask(AdditionConfig(**PLAIN_DESIGN)).vocab) == len(tr_task.vocab) - 20


def test_wide_keeps_the_training_chains():
    """The wide range grows the width only: open chains <= 4 as in training, and long ones as common."""
    def share(exs, d):
        return sum(r["difficulty"] >= d for e in exs for r in e.features) / sum(len(e.features) for e in exs)
    tr = make_task("addition").generate(2000, seed=6)
    wide = make_task("addition", range="wide").generate(2000, seed=6)
    assert max(r["difficulty"] for e in wide for r in e.features) == 4
    assert share(wide, 2) > 0.05 and share(tr, 2) > 0.05


@pytest.mark.parametrize("params,match", [
    ({"min_digits": 0}, r"min_digits = 0 .*allowed: \[1, 32\]"),
    ({"min_digits": -2}, r"min_digits = -2"),
    ({"max_digits": 33}, r"max_digits = 33"),
    ({"min_digits": 5, "max_digits": 4}, r"max_digits = 4 .*allowed: \[5, 32\]"),
    ({"plant_prob": 1.5}, r"plant_prob = 1.5 .*allowed: \[0.0, 1.0\]"),
    ({"plant_prob": -0.1}, r"plant_prob = -0.1"),
    ({"max_digits": 8.0}, r"AdditionConfig.max_digits = 8.0 has the wrong type"),
    ({"digits": 8}, r"unknown key.*'digits'"),
    ({"n_runs": -1}, r"n_runs = -1 .*allowed: \[0, 32\]"),
    ({"max_run": 40}, r"max_run = 40 .*allowed: \[0, 32\]"),
    ({"hint_pool": 5}, r"hint_pool = 5 .*allowed: \[9, 26\]"),
    ({"hint_pool": 27}, r"hint_pool = 27 .*allowed: \[9, 26\]"),
    ({"max_digits": 20}, r"hint_pool = 20 .*allowed: \[21, 26\]"),
    ({"hint_order": "shuffled"}, r"hint_order = 'shuffled' .*'consecutive', 'random'"),
])
def test_bad_config_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        make_task("addition", **params)


@pytest.mark.parametrize("rng", ["train", "extrap", "wide"])
def test_floor_matches_a_one_column_reader(rng):
    """The floor is the expected accuracy of a reader simulated on the rendered text: it adds its
    own column and takes the carry from the column right below or from the answer digit just
    written (c_{i+1} = r_{i+1} - s_{i+1}, which is c_i when s_i = 9), and guesses it when neither
    settles it. It is right for sure where difficulty <= 1, and half the time elsewhere."""
    task = make_task("addition", range=rng, plant_prob=0.8)
    n_guessed = 0
    for ex in task.generate(200, seed=11):
        sa, sb, sr = AdditionTask.parse(task.render(ex))
        n = ex.size
        col = lambda s, i: int(s[n - 1 - i]) if i < n else 0  # noqa: E731  (column i, 0 = least significant)
        for k, rec in enumerate(ex.features):
            i = n - k
            if i == 0:
                carries = {0}
            else:
                s_below = col(sa, i - 1) + col(sb, i - 1)
                carries = {0, 1} if s_below == 9 and i - 1 > 0 else {int(s_below >= 10)}
            if i < n:  # the digit just written reveals c_{i+1}
                s_i, s_up = col(sa, i) + col(sb, i), col(sa, i + 1) + col(sb, i + 1)
                c_up = (int(sr[k - 1]) - s_up) % 10
                carries = {c for c in carries if int(s_i + c >= 10) == c_up}
            digits = {(col(sa, i) + col(sb, i) + c) % 10 for c in carries}
            assert int(sr[k]) in digits
            assert AdditionTask.floor(rec) == 1 / len(digits), (sa, sb, i)
            assert AdditionTask.multi_step(rec) == (len(digits) > 1)
            n_guessed += len(digits) > 1
    assert n_guessed > 150  # planted runs make guessed digits common


def test_training_caps_the_open_chain_and_extrapolation_goes_past_it():
    """Training keeps every open chain <= 4 (runs of at most 3 nine-sums, longer examples redrawn);
    the extrapolation range has the same width and one digit per example needing 5-8 columns, so
    only the composition grows (every other digit needs <= 4, as in training)."""
    tr = make_task("addition").generate(3000, seed=3)
    diff = collections.Counter(r["difficulty"] for e in tr for r in e.features)
    assert set(diff) == set(range(0, 5)) and diff[4] > 100
    ex = make_task("addition", range="extrap").generate(1000, seed=3)
    for e in ex:
        d = sorted(r["difficulty"] for r in e.features)
        assert 5 <= d[-1] <= 8 and d[-2] <= 4, d
    check_examples(make_task("addition", range="extrap"), ex[:300])
    check_examples(make_task("addition"), tr[:300])


@pytest.mark.parametrize("params,match", [
    ({"min_run": 0}, r"min_run = 0 .*allowed: \[1, 7\]"),
    ({"min_run": 8}, r"min_run = 8 .*allowed: \[1, 7\]"),
    ({"min_run": 4, "max_run": 3}, r"max_run = 3 .*allowed: \[4, 32\]"),
    ({"max_difficulty": -1}, r"max_difficulty = -1"),
])
def test_new_bad_config_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        make_task("addition", **params)
