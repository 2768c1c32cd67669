"""`hops` against an independent interpreter: every answer and feature is recomputed from the
rendered text alone (assignments read into a dict, resolved by repeated lookup, a left-to-right
reader simulated pass by pass)."""
import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anira.tasks import make_task
from anira.tasks.hops import HopsConfig, HopsTask, guess_pool, no_composition_accuracy


def interpret(words):
    """(assignments, per-query reference records) from the rendered words only."""
    assert words[0] == "<bos>"
    end = words.index("|")
    prompt, tail = words[1:end], words[end + 1 :]
    assert len(prompt) % 4 == 3 and len(tail) % 3 == 0
    env, lhs_pos = {}, {}
    for k in range(0, len(prompt), 4):
        lhs, eq, rhs = prompt[k : k + 3]
        assert eq == "=" and (k + 3 == len(prompt) or prompt[k + 3] == ";")
        assert lhs.isalpha() and lhs not in env, "every variable is assigned exactly once"
        env[lhs], lhs_pos[lhs] = rhs, 1 + k
    order = [prompt[k] for k in range(0, len(prompt), 4)]

    def resolve(x):
        hops = 1
        while not env[x].isdigit():  # KeyError: a variable used but never assigned
            assert hops <= len(env), "cycle"
            x, hops = env[x], hops + 1
        return env[x], hops, x  # value, hops, the chain's bottom variable

    def sweeps(x):
        known, passes = {}, 0
        while x not in known:
            passes += 1
            for v in order:
                rhs = env[v]
                if rhs.isdigit():
                    known[v] = rhs
                elif rhs in known:
                    known[v] = known[rhs]
            assert passes <= len(env)
        return passes

    bottoms = {resolve(v)[2] for v in env}
    records = []
    for j in range(0, len(tail), 3):
        q, x, ans = tail[j : j + 3]
        assert q == "?"
        value, hops, bottom = resolve(x)
        records.append({
            "answer": ans, "value": value, "bottom": bottom,
            "difficulty": hops, "chain_length": hops, "size": len(env), "n_vars": len(env),
            "n_chains": len(bottoms), "n_queries": len(tail) // 3, "query_index": j // 3,
            "distance": (1 + end + j + 1) - lhs_pos[x], "sweeps": sweeps(x), "position": 1 + end + j + 2,
            "is_answer": 1,
        })
    return env, records


def test_distinct_digits_remove_the_lucky_guess():
    """With i.i.d. digits, "answer with a digit of the prompt" is often right by luck; with
    distinct digits a uniform guess among the prompt's digits scores exactly 1 / n_chains."""
    def guess_rate(distinct):
        task = make_task("hops", distinct_values=distinct)
        exs = task.generate(2000, seed=3)
        hit = 0.0
        for ex in exs:
            words = task.render(ex)
            prompt_digits = [w for w in words[: words.index("|")] if w.isdigit()]
            for i in ex.scored:
                hit += prompt_digits.count(words[i]) / len(prompt_digits)
        return hit / sum(len(e.scored) for e in exs)

    iid, distinct = guess_rate(False), guess_rate(True)
    assert iid > distinct + 0.05, (iid, distinct)


def test_sequence_lengths():
    # dense: 8-12 assignments and 4 queries in training; 16-20 assignments and 1 query out of range
    assert {len(e.tokens) for e in make_task("hops").generate(500, seed=1)} == {1 + n * 4 + 4 * 3 for n in range(8, 13)}
    assert {len(e.tokens) for e in make_task("hops", range="extrap").generate(500, seed=1)} == {
        1 + n * 4 + 3 for n in range(16, 21)}


def test_parse_round_trip():
    task = make_task("hops")
    ex = task.generate(1, seed=0)[0]
    assigns, queries = HopsTask.parse(task.render(ex))
    assert len(assigns) == ex.features[0]["n_vars"] and len(queries) == len(ex.scored)
    assert [q[1] for q in queries] == [task.vocab.itos[ex.tokens[i]] for i in ex.scored]


@pytest.mark.parametrize("params,match", [
    ({"min_vars": 1}, r"min_vars = 1 .*allowed: \[2, 20\]"),
    ({"min_vars": -3}, r"min_vars = -3"),
    ({"min_vars": 21}, r"min_vars = 21 .*allowed: \[2, 20\].*name pool"),
    ({"max_vars": 27}, r"max_vars = 27 .*allowed: \[8, 20\]"),
    ({"n_names": 27}, r"n_names = 27 .*allowed: \[2, 26\]"),
    ({"n_names": 6}, r"min_vars = 8 .*allowed: \[2, 6\]"),
    ({"n_queries": 9}, r"n_queries = 9 .*allowed: \[1, 8\]"),
    ({"min_longest": 5}, r"min_longest = 5 .*allowed: \[1, 4\]"),
    ({"min_hops": 9}, r"min_hops = 9 .*allowed: \[1, 8\].*min_vars"),
    ({"min_hops": 0}, r"min_hops = 0"),
    ({"max_hops": 13}, r"max_hops = 13 .*allowed: \[1, 12\]"),
    ({"min_hops": 5}, r"max_hops = 4 .*allowed: \[5, 12\]"),
    ({"min_hops": 3, "max_hops": 2}, r"max_hops = 2 .*allowed: \[3, 12\]"),
    ({"min_longest": 3, "n_longest": 3}, r"n_longest = 3 .*allowed: \[1, 2\].*fit in min_vars"),
    ({"n_queries": 0}, r"n_queries = 0"),
    ({"n_queries": -1}, r"n_queries = -1"),
    ({"n_values": 11}, r"n_values = 11 .*allowed: \[1, 10\]"),
    ({"hop_tilt": -5.0}, r"hop_tilt = -5.0 .*allowed: \[-4.0, 4.0\]"),
    ({"max_vars": "8"}, r"HopsConfig.max_vars = '8' has the wrong type"),
    ({"max_var": 8}, r"unknown key.*'max_var'"),
])
def test_bad_config_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        make_task("hops", **params)


# --- the design: reference records ---------------------------------------------------------------
def interpret_dense(words):
    """Reference records of the dense design from the rendered words: the common interpreter plus
    the per-token shortcut features, found by walking each queried variable's chain."""
    env, records = interpret(words)
    path = {}  # variable -> the variables followed from it, itself first, down to the digit
    for v in env:
        walk = [v]
        while not env[walk[-1]].isdigit():
            walk.append(env[walk[-1]])
        path[v] = walk
    longest = collections.Counter(p[-1] for p in path.values())  # chain (bottom variable) -> length
    digits = {v for v in env.values() if v.isdigit()}
    end = words.index("|")
    queried = [words[end + 1 + j + 1] for j in range(0, len(records) * 3, 3)]
    for j, (x, r) in enumerate(zip(queried, records)):
        earlier_q = queried[:j]
        r["size"] = max(longest.values())
        r["n_distinct_digits"] = len(digits)
        r["chain_seen"] = int(any(path[y][-1] == path[x][-1] for y in earlier_q))
        r["hops_to_known"] = min([path[x].index(y) for y in earlier_q if y in path[x]], default=r["difficulty"])
    return env, records, path


def check_dense(task, exs):
    c = task.config
    pool = set("abcdefghijklmnopqrstuvwxyz"[: c.n_names])
    for ex in exs:
        words = task.render(ex)
        env, refs, path = interpret_dense(words)
        assert set(env) <= pool and c.min_vars <= len(env) <= c.max_vars
        assert len(refs) == len(ex.features) == min(c.n_queries, sum(len(p) >= c.min_hops for p in path.values()))
        assert [r["position"] for r in refs] == ex.scored
        queried = [words[i - 1] for i in ex.scored]
        assert len(set(queried)) == len(queried), "queried variables are distinct"
        lengths = collections.Counter(p[-1] for p in path.values())
        assert c.min_longest <= max(lengths.values()) <= c.max_hops
        if c.min_longest > 1:  # exactly n_longest chains reach min_longest, all of one length
            long = [L for L in lengths.values() if L >= c.min_longest]
            assert len(long) == c.n_longest and len(set(long)) == 1, (long, c)
        assert ex.size == max(lengths.values())
        assert all(int(v) < c.n_values for v in env.values() if v.isdigit())
        for ref, rec in zip(refs, ex.features):
            assert ref["answer"] == ref["value"], "answer token is the value at the end of the chain"
            assert c.min_hops <= ref["difficulty"] <= c.max_hops
            assert set(rec) == set(ref) - {"answer", "value", "bottom"}
            for k, v in rec.items():
                assert ref[k] == v, f"feature {k}: generator {v}, reference {ref[k]} in {' '.join(words)}"


@pytest.mark.parametrize("rng", ["train", "extrap"])
def test_dense_against_reference_interpreter(rng):
    task = make_task("hops", range=rng)
    check_dense(task, task.generate(400, seed=11))


@settings(max_examples=25, deadline=None)
@given(
    n_names=st.integers(2, 26), min_vars=st.integers(2, 26), extra_vars=st.integers(0, 10),
    max_hops=st.integers(1, 10), min_hops=st.integers(1, 4), min_longest=st.integers(1, 8),
    n_queries=st.integers(1, 8), n_values=st.integers(1, 10), hop_tilt=st.floats(-3.0, 3.0),
    distinct=st.booleans(), n_longest=st.integers(1, 4), seed=st.integers(0, 2**31),
)
def test_dense_reference_over_configs(n_names, min_vars, extra_vars, max_hops, min_hops, min_longest, n_queries,
                                      n_values, hop_tilt, distinct, n_longest, seed):
    min_vars = min(min_vars, n_names)
    max_vars = min(min_vars + extra_vars, n_names)
    max_hops = min(max_hops, max_vars)
    min_hops = min(min_hops, max_hops, min_vars)
    min_longest = min(min_longest, max_hops, min_vars)
    task = HopsTask(HopsConfig(min_vars, max_vars, min_hops, max_hops, min(n_queries, min_vars), n_values, hop_tilt,
                               distinct, n_names=n_names, min_longest=min_longest,
                               n_longest=min(n_longest, min_vars // min_longest)))
    check_dense(task, task.generate(20, seed=seed))


def test_dense_training_covers_every_name_and_hop_count():
    """Training: 8-12 names of the 20-name pool per example, every name common; every hop count 1..4
    and every query index scored. Extrapolation: 16-20 variables from the same pool, exactly three
    chains of one length L in 5..6 with distinct digits (every other chain at most 4 long), one
    query to a variable 5 or 6 hops deep."""
    task, ext = make_task("hops"), make_task("hops", range="extrap")
    exs = task.generate(2000, seed=5)
    names = collections.Counter(a for e in exs for a, _ in HopsTask.parse(task.render(e))[0])
    assert set(names) == set("abcdefghijklmnopqrst") and min(names.values()) > 0.4 * len(exs)
    hops = collections.Counter((r["difficulty"], r["query_index"]) for e in exs for r in e.features)
    assert all(hops[(h, j)] > 50 for h in range(1, 5) for j in range(4))
    xs = ext.generate(500, seed=5)
    for e in xs:
        words = ext.render(e)
        env, refs, path = interpret_dense(words)
        assert set(env) <= set("abcdefghijklmnopqrst") and 16 <= len(env) <= 20
        lengths = collections.Counter(p[-1] for p in path.values())
        long = {b: L for b, L in lengths.items() if L > 4}
        assert len(long) == 3 and len(set(long.values())) == 1 and 5 <= e.size <= 6
        assert len({env[b] for b in long}) == 3, "the long chains' digits are distinct"
        assert len(refs) == 1 and refs[0]["difficulty"] in (5, 6)
    assert {e.size for e in xs} == {5, 6}
    # the shortcut is recorded, and common enough to matter: an earlier query on the same chain
    assert 0.2 < sum(r["chain_seen"] for e in exs for r in e.features) / sum(len(e.features) for e in exs) < 0.5


def test_dense_no_composition_floor_matches_a_simulated_reader():
    """One lookup for a 1-hop query, else a uniform guess among the prompt's distinct digits:
    simulated on the rendered text, token by token, equals the floor from the features."""
    task = make_task("hops")
    n_multi = 0
    for ex in task.generate(1000, seed=11):
        words = task.render(ex)
        end = words.index("|")
        env = {words[k]: words[k + 2] for k in range(1, end, 4)}
        digits = {w for w in words[1:end] if w.isdigit()}
        for i, f in zip(ex.scored, ex.features):
            var, answer = words[i - 1], words[i]
            if env[var].isdigit():
                expected = float(env[var] == answer)
            else:
                expected, n_multi = (answer in digits) / len(digits), n_multi + 1
            assert no_composition_accuracy(f["difficulty"], guess_pool(f)) == pytest.approx(expected)
    assert n_multi > 1000
