"""`language` against two independent references that read only the rendered words:

* an interpreter that parses each sentence with simple keyword rules, keeps the story as a list
  of facts and answers each question by searching backwards through the facts (the generator
  instead keeps running state), giving the answer, k and the distance;
* an enumerator that matches the partial sentence against the grammar's sentence frames (a small
  NFA over word sets) and lists every word the grammar allows next; a grammar-determined token
  must have exactly one, a free one several (= n_branching).
Only the word lists (the lexicon) are shared with the module.
"""
import collections

import numpy as np
import pytest
from scipy import stats

from anira.tasks import make_task
from anira.tasks import language as L
from anira.tasks.base import collate
from anira.tasks.language import LanguageTask

NAMES, OBJECTS, PLACES = set(L.NAMES), set(L.OBJECTS), set(L.PLACES)
SINGLE_TIME = {ph[0] for ph in L.TIME_PHRASES if len(ph) == 1}
FOLLOW_FIRST = {ph[0] for ph in L.FOLLOW_PHRASES}


# ---- reference 1: interpreter ------------------------------------------------------------
def split_sentences(words):
    """[(kind, words_of_sentence, start, end)]; a question's end is its answer position."""
    out, cur, start = [], [], 1
    for i in range(1, len(words)):
        cur.append(words[i])
        if words[i] == "." or (len(cur) >= 2 and cur[-2] == "?"):
            out.append(("question" if cur[-2:-1] == ["?"] else "statement", cur, start, i))
            cur, start = [], i + 1
    assert cur == [], f"unterminated sentence {cur}"
    return out


def strip_time(s):
    if s[0] in SINGLE_TIME:
        return s[1:]
    if s[0] in ("after", "soon"):
        assert s[2] == ","
        return s[3:]
    if s[0] == "a":
        assert s[1:4] == ["moment", "later", ","]
        return s[4:]
    return s


def parse_fact(s):
    """A statement as a fact tuple, from keywords."""
    s = strip_time(s)
    if s[0] == "the":  # object first: an intro (with), given to, put in
        obj = next(w for w in s if w in OBJECTS)
        if "with" in s:
            return ("intro", s[s.index("with") + 1], s[-2], obj)
        return ("give", obj, s[-2]) if s[-3] == "to" else ("put", obj, s[-2])
    subj = s[0]
    if s[1] in FOLLOW_FIRST:
        return ("follow", subj, s[-2])
    place = s[s.index("the") + 1]
    assert place in PLACES
    return ("move", subj, place)


def interpret(words):
    """[(answer position, answer, k, distance)] for every question of a rendered story. An earlier
    answer to the same question is one fact while nothing it depends on has happened since."""
    facts, out = [], []  # facts: (end position, fact)
    asked = []  # (answer position, question words, answer)

    def last_answer(question, before):
        return next(((pos, ans) for pos, q, ans in reversed(asked) if pos < before and q == question), (-1, None))

    def last_move(p, before):
        return max((end for end, f in facts if end < before and f[1] == p and f[0] in ("intro", "move", "follow")),
                   default=-1)

    def where_person(p, before):
        a, ans = last_answer(("where", "is", p), before)
        if a > last_move(p, before):
            return ans, [a]
        for end, f in reversed(facts):
            if end < before and f[1] == p and f[0] in ("intro", "move", "follow"):
                if f[0] == "follow":
                    place, chain = where_person(f[2], end)
                    return place, [end] + chain
                return f[2], [end]
        raise AssertionError(f"{p} has no location")

    def last_object_fact(o, before):
        for end, f in reversed(facts):
            if end < before and ((f[0] == "intro" and f[3] == o) or (f[0] in ("give", "put") and o in f[1:])):
                return end, f
        raise AssertionError(f"{o} never mentioned")

    for kind, s, start, end in split_sentences(words):
        if kind == "statement":
            facts.append((end, parse_fact(s)))
            continue
        pos = end
        if s[0] == "who":  # who has the O ?
            fend, f = last_object_fact(s[3], pos)
            holder = {"intro": f[1], "give": f[2], "put": "nobody"}[f[0]]
            ans, chain = holder, [fend]
        elif s[2] == "the":  # where is the O ?
            fend, f = last_object_fact(s[3], pos)
            a, a_ans = last_answer(tuple(s[:4]), pos)
            if f[0] == "put":
                ans, chain = f[2], [fend]
                if a > fend:
                    chain = [a]
            else:
                holder = f[2] if f[0] == "give" else f[1]  # give: (give, o, p); intro: (intro, p, place, o)
                ans, rest = where_person(holder, pos)
                chain = [fend] + rest
                if a > fend and a > last_move(holder, pos):
                    chain = [a]
            assert chain != [a] or a_ans == ans  # a reused answer still holds
        else:  # where is P ?
            ans, chain = where_person(s[2], pos)
        out.append((pos, ans, len(set(chain)), pos - max(chain)))
        asked.append((pos, tuple(s[:-2]), ans))
    return out


# ---- reference 2: frame enumerator --------------------------------------------------------
def frames(st, cfg):
    """Sentence frames (lists of word sets) allowed at a sentence start in story state ``st``."""
    one = lambda w: frozenset([w])  # noqa: E731
    cast, objs = frozenset(st["cast"]), frozenset(st["objects"])
    NAMES, OBJECTS = frozenset(L.NAMES[: cfg.n_names]), frozenset(L.OBJECTS[: cfg.n_objects])
    PLACES = frozenset(L.PLACES[: cfg.n_places])
    out = []
    if st["events"] == 0 and len(cast) < cfg.max_entities:  # another intro
        for padj in (False, True):
            for oadj in (False, True):
                out.append([one("the")] + ([frozenset(L.OBJECT_ADJECTIVES)] if oadj else [])
                           + [frozenset(OBJECTS - objs), frozenset(L.INTRO_VERBS), one("with"),
                              frozenset(NAMES - cast), one("in"), one("the")]
                           + ([frozenset(L.PLACE_ADJECTIVES)] if padj else [])
                           + [frozenset(PLACES - set(st["places"])), one(".")])
    if st["last"] == "intro":
        statements, questions = len(cast) >= cfg.min_entities, False
    elif st["last"] == "event":
        c = st["events"]
        statements = c < cfg.max_sentences and cfg.question_prob < 1
        questions = cfg.question_prob > 0 or c >= cfg.min_sentences
    else:  # after a question: another one while max_questions allows (forced when question_prob is 1)
        questions = st["in_row"] < cfg.max_questions and cfg.question_prob > 0
        statements = st["events"] < cfg.max_sentences and not (questions and cfg.question_prob >= 1)
    if statements:
        body = []
        for particle in (("to",), ("into",), ("back", "to")):
            verbs = frozenset(v for v, parts in L.MOVE_VERBS.items() if particle in parts)
            for adverb in (False, True):
                body.append([cast, verbs] + [one(w) for w in particle] + [one("the"), frozenset(PLACES)]
                            + ([frozenset(L.ADVERBS)] if adverb else []) + [one(".")])
        if len(cast) >= 3:
            for subj in cast:
                for ph in L.FOLLOW_PHRASES:
                    body.append([one(subj)] + [one(w) for w in ph] + [cast - {subj}, one(".")])
        body.append([one("the"), objs, one("was"), frozenset(L.GIVE_VERBS), one("to"), cast, one(".")])
        body.append([one("the"), objs, one("was"), frozenset(L.PUT_VERBS), one("in"), one("the"), frozenset(PLACES),
                     one(".")])
        for prefix in [()] + list(L.TIME_PHRASES):
            out += [[one(w) for w in prefix] + b for b in body]
    if questions:
        where_ans, who_ans = ("answer", frozenset(PLACES)), ("answer", cast | {"nobody"})
        out.append([one("where"), one("is"), cast, one("?"), where_ans])
        out.append([one("where"), one("is"), one("the"), objs, one("?"), where_ans])
        out.append([one("who"), one("has"), one("the"), objs, one("?"), who_ans])
    return out


def check_story(task, ex, draws=None):
    """Walk the story token by token; return the number of tokens checked. ``draws`` (a list)
    collects (n allowed, rank of the word among them) for every free token flagged ``uniform``."""
    cfg, words = task.config, task.render(ex)
    st = {"cast": [], "places": [], "objects": [], "events": 0, "last": "intro", "in_row": 0}
    live, m, sentence = frames(st, cfg), 0, []
    for i in range(1, len(words)):
        rec, w = ex.features[i - 1], words[i]
        allowed = set().union(*(f[m] for f in live if len(f) > m and not isinstance(f[m], tuple)))
        answer_slots = [f[m][1] for f in live if len(f) > m and isinstance(f[m], tuple)]
        if answer_slots:
            assert not allowed and len(set(answer_slots)) == 1
            assert rec["kind"] == 2 and rec["is_answer"] == 1 and w in answer_slots[0], (i, w)
            assert rec["n_branching"] == len(answer_slots[0])
        else:
            assert w in allowed, f"{i}: {w!r} not allowed after {words[max(0, i - 8):i]}; allowed {sorted(allowed)}"
            assert rec["kind"] == (0 if len(allowed) == 1 else 1), (i, w, sorted(allowed))
            assert rec["n_branching"] == len(allowed), (i, w, sorted(allowed))
            assert rec["is_answer"] == 0 and rec["steps"] == 0 and rec["difficulty"] == 0
            if rec["kind"] == 1 and rec["uniform"] and draws is not None:
                draws.append((len(allowed), sorted(allowed).index(w)))
        live = [f for f in live if len(f) > m and w in (f[m][1] if isinstance(f[m], tuple) else f[m])]
        assert live
        sentence.append(w)
        m += 1
        done = [len(f) == m for f in live]
        if any(done):
            assert all(done)
            if sentence[-2:-1] == ["?"]:
                st["last"] = "question"
                st["in_row"] += 1
            else:
                fact = parse_fact(sentence)
                if fact[0] == "intro":
                    st["cast"].append(fact[1])
                    st["places"].append(fact[2])
                    st["objects"].append(fact[3])
                else:
                    st["events"] += 1
                    st["last"], st["in_row"] = "event", 0
            live, m, sentence = frames(st, cfg), 0, []
    assert m == 0
    assert len(st["cast"]) == ex.features[0]["n_entities"] and st["events"] == ex.size
    return len(words) - 1


CONFIGS = [
    ("train", {}),
    ("extrap", {}),
    ("train", {"question_prob": 0.0}),
    ("train", {"question_prob": 1.0, "min_entities": 3, "max_entities": 3}),
    ("train", {"min_entities": 2, "max_entities": 2, "min_sentences": 1, "max_sentences": 1}),
    ("train", {"n_names": 5, "n_objects": 3, "n_places": 4, "max_entities": 3}),
    ("train", {"question_prob": 1.0, "max_questions": 3}),
    ("train", {"question_prob": 0.6, "max_questions": 2, "min_entities": 2, "max_entities": 4}),
]


@pytest.mark.parametrize("rng_name,params", CONFIGS)
def test_grammar_labels_match_enumerator(rng_name, params):
    task = make_task("language", range=rng_name, **params)
    n = sum(check_story(task, ex) for ex in task.generate(60, seed=11))
    assert n > 60 * 10


@pytest.mark.parametrize("rng_name,params", CONFIGS)
def test_answers_match_interpreter(rng_name, params):
    task = make_task("language", range=rng_name, **params)
    n_answers = 0
    for ex in task.generate(200, seed=4):
        words = task.render(ex)
        got = [(i, words[i], r["steps"], r["distance"]) for i, r in zip(ex.scored, ex.features) if r["is_answer"]]
        assert got == interpret(words)
        assert all(r["difficulty"] == r["steps"] for r in ex.features)
        assert all((r["kind"] == 2) == (r["is_answer"] == 1) for r in ex.features)
        assert words[-2] == "?"  # every story ends with a question
        n_answers += len(got)
    assert n_answers >= 200


def test_difficulty_spread_and_answer_types():
    exs = make_task("language").generate(1500, seed=0)
    steps = collections.Counter(r["steps"] for ex in exs for r in ex.features if r["is_answer"])
    assert {1, 2, 3} <= set(steps) and steps[2] > 0.1 * sum(steps.values())
    itos = make_task("language").vocab.itos
    answers = {itos[ex.tokens[i]] for ex in exs for i, r in zip(ex.scored, ex.features) if r["is_answer"]}
    assert "nobody" in answers and answers & NAMES and answers & PLACES
    kinds = collections.Counter(r["kind"] for ex in exs for r in ex.features)
    assert min(kinds.values()) > 0 and kinds[0] > 0.25 * sum(kinds.values()) and kinds[1] > 0.25 * sum(kinds.values())


def test_vocabulary_and_templates_like_a_language():
    """With the full pools (the study's ranges draw from the first 6 of each) every word is reachable."""
    full = {"n_names": len(L.NAMES), "n_objects": len(L.OBJECTS), "n_places": len(L.PLACES)}
    task = make_task("language", **full)
    assert 150 <= len(task.vocab) <= 300
    exs = task.generate(3000, seed=1) + make_task("language", range="extrap", **full).generate(300, seed=1)
    used = {w for ex in exs for w in task.render(ex)}
    assert used == set(task.vocab.itos) - {"<pad>"}  # every word is reachable
    # sentence templates: content words abstracted away, function words and verbs kept
    cat = {**{w: "NAME" for w in NAMES}, **{w: "OBJ" for w in OBJECTS}, **{w: "PLACE" for w in PLACES}}
    sentences = [s for ex in exs for _, s, _, _ in split_sentences(task.render(ex))]
    templates = {tuple(cat.get(w, w) for w in s) for s in sentences}
    assert len(templates) >= 300
    # every move verb is seen with every particle it allows
    pairs = {(s[i], s[i + 1]) for s in sentences for i in range(len(s) - 1)}
    assert all((v, p[0]) in pairs for v, parts in L.MOVE_VERBS.items() for p in parts)


def test_ranges_scoring_and_determinism():
    train, extrap = make_task("language"), make_task("language", range="extrap")
    assert train.vocab.itos == extrap.vocab.itos
    tr, ex = train.generate(300, seed=0), extrap.generate(300, seed=0)
    c = train.config
    assert {e.size for e in tr} == set(range(c.min_sentences, c.max_sentences + 1)) == {e.size for e in ex}
    assert {e.features[0]["n_entities"] for e in tr} == {3}
    for e in tr[:50]:
        assert e.scored == list(range(1, len(e.tokens)))
        assert [r["position"] for r in e.features] == e.scored
        assert all(set(r) == set(LanguageTask.feature_names()) for r in e.features)
        assert all(r["size"] == e.size == r["n_sentences"] for r in e.features)
    assert [e.to_json() for e in train.generate(20, seed=7)] == [e.to_json() for e in train.generate(20, seed=7)]
    assert [e.tokens for e in train.generate(20, seed=7)] != [e.tokens for e in train.generate(20, seed=8)]
    b = collate(tr[:8], LanguageTask.feature_names())
    assert b.loss_mask.sum().item() == sum(len(e.tokens) - 1 for e in tr[:8])
    assert (b.features["is_answer"][b.loss_mask] == (b.features["kind"][b.loss_mask] == 2).float()).all()


@pytest.mark.parametrize(
    "params,match",
    [
        ({"min_sentences": 0}, r"min_sentences = 0 .*\[1, inf\]"),
        ({"min_sentences": 5, "max_sentences": 4}, r"max_sentences = 4 .*\[5, inf\]"),
        ({"min_entities": 1}, r"min_entities = 1 .*\[2, 24\]"),
        ({"max_entities": 25}, r"max_entities = 25 .*\[3, 24\]"),
        ({"question_prob": 1.2}, r"question_prob = 1.2 .*\[0.0, 1.0\]"),
        ({"n_people": 3}, r"unknown key"),
        ({"min_sentences": 2.5}, r"min_sentences"),
    ],
)
def test_bad_config_raises(params, match):
    with pytest.raises(ValueError, match=match):
        LanguageTask(**params)


# ---- the difficulty range and the bounded reader -------------------------------------------------
@pytest.mark.parametrize("rng_name,params", [("train", {}), ("extrap", {}), ("train", {"question_prob": 0.5})])
def test_candidates_are_the_places_mentioned_and_set_the_floor(rng_name, params):
    task = make_task("language", range=rng_name, **params)
    for ex in task.generate(100, seed=3):
        words = task.render(ex)
        for i, r in zip(ex.scored, ex.features):
            if not r["is_answer"]:
                assert r["n_candidates"] == r["n_branching"]
                continue
            if words[i - 4] == "who" or words[i - 5] == "who":
                assert r["n_candidates"] == r["n_entities"] + 1 and r["steps"] == 1
            else:
                # an answer is never a place no statement mentioned (answers repeat statements)
                mentioned = {w for w in words[1:i] if w in PLACES}
                assert words[i] in mentioned and r["n_candidates"] == len(mentioned)
            assert LanguageTask.floor(r) == (1.0 if r["steps"] == 1 else 1 / r["n_candidates"])


def test_training_range_caps_the_facts_and_the_extrapolation_range_needs_more():
    train, extrap = make_task("language"), make_task("language", range="extrap")
    cap = train.config.max_difficulty
    assert cap >= 3 and extrap.config.min_difficulty == cap + 1
    tr, ex = train.generate(300, seed=5), extrap.generate(200, seed=5)
    steps_tr = collections.Counter(r["steps"] for e in tr for r in e.features if r["is_answer"])
    assert set(steps_tr) == set(range(1, cap + 1))  # every k up to the cap is in range
    assert all(max(r["steps"] for r in e.features) > cap for e in ex)
    # the same story sizes: the shift is in the facts chained, not in positions
    assert {e.size for e in ex} == {e.size for e in tr}
    assert max(len(e.tokens) for e in ex) <= 1.15 * max(len(e.tokens) for e in tr)


def test_bounded_reader_guesses_among_mentioned_places_beyond_k():
    """With k facts the reader is exact on answers that chain at most k and guesses 1/|places
    mentioned| on the others (read here off the words, independently of the generator's count)."""
    task = make_task("language", range="extrap")
    n_beyond = 0
    for ex in task.generate(100, seed=6):
        words = task.render(ex)
        for k in (1, 3):
            got = task.bounded_reader(words, k)
            for g, i, r in zip(got, ex.scored, ex.features):
                if not r["is_answer"]:
                    continue
                if r["steps"] <= k:
                    assert g == 1.0
                else:
                    mentioned = {w for w in words[1:i] if w in PLACES}
                    assert g == pytest.approx(1 / len(mentioned))
                    n_beyond += k == 3
    assert n_beyond >= 100


@pytest.mark.parametrize("params,match", [
    ({"min_difficulty": 4, "max_difficulty": 3}, r"min_difficulty = 4: must be at most max_difficulty = 3"),
    ({"max_questions": 0}, r"max_questions = 0 .*\[1, inf\]"),
    ({"n_places": 2, "max_entities": 3}, r"n_places = 2 .*\[3, 20\]"),
])
def test_bad_range_raises(params, match):
    with pytest.raises(ValueError, match=match):
        LanguageTask(**params)


def test_tokens_flagged_uniform_are_drawn_uniformly_from_what_the_grammar_allows():
    """For every number of allowed words, the rank (in the enumerator's sorted allowed set) of the
    free words the generator flags ``uniform`` is uniform: a chi-square test per group. So their
    entropy is ln n_branching, the bar the free-choice cross-entropy is judged against."""
    task = make_task("language")
    draws = []
    for ex in task.generate(600, seed=21):
        check_story(task, ex, draws)
    by_n = collections.defaultdict(list)
    for n, rank in draws:
        by_n[n].append(rank)
    tested = 0
    for n, ranks in by_n.items():
        if len(ranks) >= 20 * n:
            counts = np.bincount(ranks, minlength=n)
            assert stats.chisquare(counts).pvalue > 1e-4, (n, counts)
            tested += len(ranks)
    assert tested >= 0.8 * len(draws) and len(draws) > 5000
    # and the flag is not everywhere: sentence starts and optional words mix weighted choices
    free = [r for ex in task.generate(100, seed=2) for r in ex.features if r["kind"] == 1]
    assert 0.2 < np.mean([r["uniform"] for r in free]) < 0.9
