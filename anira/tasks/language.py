"""`language`: a synthetic English-like story language with labelled token complexity.

A story introduces a cast of people, each in a place and holding one object, then tells events
and asks questions that are answered by one token. It is trained as a language model on every
token (``scored`` = every position >= 1), and every token is labelled by ``kind``:

    0  grammar-determined   only one next token is allowed by the grammar given the prefix
    1  free choice          several tokens are allowed; the generator samples one of them
                            (irreducible entropy: no amount of computation predicts it)
    2  answer               the token after "?" ; determined by the world state of the story

Grammar (``[x]`` optional, ``a|b`` alternatives, CAST = people introduced so far):

    intro     NEW_NAME INTRO_VERB in the [PLACE_ADJ] PLACE with the [OBJECT_ADJ] NEW_OBJECT .
    move      [TIME] NAME MOVE_VERB PARTICLE(verb) the PLACE [ADVERB] .
    follow    [TIME] NAME FOLLOW_PHRASE OTHER_NAME .   (only with 3+ people, so OTHER_NAME is free)
    take      [TIME] NAME TAKE_PHRASE the OBJECT .
    give      [TIME] the OBJECT was GIVE_VERB to NAME .
    put       [TIME] the OBJECT was PUT_VERB in the PLACE .
    questions where is NAME ? PLACE | where is the OBJECT ? PLACE | who has the OBJECT ? NAME|nobody

Story: ``n_entities`` intro sentences (cast members and their objects are distinct), then
``n_sentences`` events; after each event a question follows with probability ``question_prob``,
and one always follows the last event (no question directly after the intro or after a question).
NAME / OBJECT in events and questions range over the cast and its objects; adjectives appear only
at an intro (a first mention). An answer is followed directly by the next sentence. At a
sentence start the allowed tokens are the first words of every sentence type that the story
rules and the config's ranges allow there. Every action is always legal, so no token except an
answer is constrained by the world state:

    move: loc[p] := place        follow p q: loc[p] := loc[q] (at that time)
    take / give to p: holder[o] := p          put in place: holder[o] := nobody, at place
    intro: loc[p] := place, holder[o] := p

Difficulty of an answer, k = ``steps``: the number of distinct facts (sentences) that must be
chained to derive it.
    loc_chain(p)  = [last fact setting loc[p]] + (loc_chain(q) at that time if it was "p follow q")
    where is p    -> loc_chain(p)
    who has o     -> [last fact about o]                        (k = 1)
    where is o    -> [last fact about o] + (loc_chain(holder) if o is held)
so e.g. "Mary took the apple . Mary went to the hallway ." makes "where is the apple" k = 2, and
each follow on the way adds one fact. Difficulty = k for answers, 0 for every other token.

Size = ``n_sentences`` (events; intro and questions not counted); ``n_entities`` is a parameter
with its own range (the number of objects equals it).

Per-token features (every position >= 1), with their class by the rule of ``anira.tasks.features``
(the table ``LanguageTask.features``; docs/features.md):
  static   n_entities, n_sentences
  label    steps (k for answers, 0 otherwise; = difficulty)
  dynamic  kind (what the grammar allows at this point);
           distance (answers: tokens from the end "." of the most recent fact in the chain to
             the answer; 0 otherwise);
           n_branching (number of tokens the grammar allows here given the prefix: 1 for kind 0,
             > 1 for kind 1; for an answer, the number of grammatical answers of its type:
             all places for "where", cast + "nobody" for "who")
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from anira.config import check_range
from anira.tasks.base import BOS_ID, Example, Task, Vocab
from anira.tasks.features import Feature, common

GRAMMAR, FREE, ANSWER = 0, 1, 2

NAMES = (
    "Mary", "John", "Sandra", "Daniel", "Emma", "Oliver", "Sophie", "Lucas", "Anna", "Peter",
    "Julia", "Thomas", "Laura", "David", "Grace", "Henry", "Alice", "Jack", "Chloe", "Samuel",
    "Nora", "Victor", "Ruth", "Oscar", "Clara", "Felix", "Hannah", "Leo", "Irene", "Max",
    "Paula", "Hugo", "Rosa", "Ivan", "Lena", "Adam", "Eva", "Noah", "Maya", "Simon",
)
OBJECTS = (
    "apple", "ball", "book", "key", "cup", "lamp", "hat", "box", "coin", "letter", "phone", "bottle",
    "basket", "candle", "pencil", "umbrella", "ring", "map", "bag", "clock", "knife", "glove",
    "shell", "ticket",
)
PLACES = (
    "kitchen", "garden", "hallway", "bathroom", "bedroom", "office", "cellar", "attic", "library",
    "garage", "park", "school", "market", "station", "beach", "church", "cinema", "bakery",
    "museum", "harbour",
)
OBJECT_ADJECTIVES = (
    "red", "blue", "green", "yellow", "old", "new", "small", "large", "shiny", "heavy", "wooden", "broken",
)
PLACE_ADJECTIVES = ("dark", "quiet", "sunny", "empty", "busy", "tidy", "cold", "warm")
ADVERBS = ("quickly", "slowly", "quietly", "happily", "carefully", "calmly", "eagerly", "sadly", "bravely", "silently")
TIME_PHRASES = (
    ("then",), ("later",), ("afterwards",), ("meanwhile",), ("next",),
    ("after", "that", ","), ("soon", "after", ","), ("a", "moment", "later", ","),
)
INTRO_VERBS = ("is", "stands", "waits", "sits", "starts")
TO, INTO, BACK_TO = ("to",), ("into",), ("back", "to")
MOVE_VERBS = {  # verb -> the particles it allows
    "went": (TO, INTO, BACK_TO), "walked": (TO, INTO, BACK_TO), "ran": (TO, INTO, BACK_TO),
    "moved": (TO, INTO), "travelled": (TO,), "journeyed": (TO,), "hurried": (TO, INTO, BACK_TO),
    "headed": (TO, BACK_TO), "returned": (TO,), "wandered": (INTO, TO), "strolled": (TO, INTO),
    "rushed": (TO, INTO), "dashed": (TO, INTO), "marched": (TO, INTO),
}
TAKE_PHRASES = (("picked", "up"), ("took",), ("grabbed",), ("collected",), ("fetched",), ("got",))
FOLLOW_PHRASES = (("followed",), ("joined",), ("accompanied",), ("caught", "up", "with"))
GIVE_VERBS = ("given", "handed", "passed", "brought", "sent", "tossed")
PUT_VERBS = ("left", "put", "placed", "dropped", "hidden", "stored")
NOBODY = "nobody"
FUNCTION_WORDS = ("the", ".", "?", "in", "with", "was", "where", "who", "has", NOBODY)

# event type weights (follow is left out, and the rest renormalised, with fewer than 3 people)
EVENT_WEIGHTS = {"move": 0.25, "follow": 0.35, "take": 0.2, "give": 0.1, "put": 0.1}  # follows chain facts
P_TIME = 0.25  # an event sentence starts with a time phrase
P_ADJECTIVE = 0.3  # an intro mentions a place / object with an adjective
P_ADVERB = 0.25  # a move ends with an adverb
QUESTION_WEIGHTS = {"where_person": 0.4, "where_object": 0.4, "who_has": 0.2}  # "who has" is always k = 1


def _all_words() -> list[str]:
    words: list[str] = list(FUNCTION_WORDS)
    for group in (NAMES, OBJECTS, PLACES, OBJECT_ADJECTIVES, PLACE_ADJECTIVES, ADVERBS, INTRO_VERBS,
                  GIVE_VERBS, PUT_VERBS, tuple(MOVE_VERBS)):
        words += group
    for phrases in (TIME_PHRASES, TAKE_PHRASES, FOLLOW_PHRASES, (TO, INTO, BACK_TO)):
        for ph in phrases:
            words += ph
    return list(dict.fromkeys(words))  # unique, first occurrence order


@dataclass
class LanguageConfig:
    min_sentences: int = 3  # size range: number of event sentences per story
    max_sentences: int = 6
    min_entities: int = 2  # people in the cast (each starts with one object): more to track
    max_entities: int = 3
    question_prob: float = 0.5  # P(question after an event); one always follows the last event
    n_names: int = len(NAMES)  # names, objects and places are drawn from the first n_* of each list:
    n_objects: int = len(OBJECTS)  # a smaller pool means each word is seen (and bound) more often
    n_places: int = len(PLACES)


class LanguageTask(Task):
    name = "language"
    Config = LanguageConfig
    # Every feature's class by the rule of anira.tasks.features (docs/features.md). Every token is an
    # output here (a language model): only the story's parameters are known before any output
    features = common(size="event sentences of the story", position="tokens already written (every token is an output)",
                      position_kind="progress",
                      is_answer="1 on answers (= kind == 2)", difficulty="steps for answers, 0 otherwise") + (
        Feature("kind", "dynamic", "what the grammar allows at this point of the story so far (grammar, free, "
                                   "answer)", categorical=True),
        Feature("n_entities", "static", "people in the cast (a parameter of the story)"),
        Feature("n_sentences", "static", "event sentences (= size)"),
        Feature("steps", "label", "= difficulty"),
        Feature("distance", "dynamic", "tokens back to the most recent fact the answer needs: the story so far"),
        Feature("n_branching", "dynamic", "tokens the grammar allows given the prefix"),
    )
    size_name = "number of event sentences"
    difficulty_name = "chained facts an answer needs (0: grammar or free-choice token)"
    floor_reader = ("follows the grammar, guesses free choices uniformly, answers a 1-fact question by "
                    "one lookup and guesses any other among the grammatical answers")

    @classmethod
    def floor(cls, records):
        """Grammar-determined tokens (kind 0): 1. Free choices (kind 1): ``1 / n_branching``, a
        uniform guess among the allowed tokens (no amount of computation does better than the
        generator's own weights). Answers (kind 2): 1 when one fact answers them (``steps`` = 1, a
        single lookup, like a 1-hop query), else ``1 / n_branching`` among the answers of its type."""
        kind, steps, nb = records["kind"], records["steps"], records["n_branching"]
        sure = (kind == GRAMMAR) | ((kind == ANSWER) & (steps == 1))
        return sure + (1 - sure) / nb

    @classmethod
    def multi_step(cls, records):
        """Answers that chain two or more facts: free choices stay below the floor's 1 whatever
        the depth, so they are left out."""
        return (records["kind"] == ANSWER) & (records["steps"] >= 2)

    @classmethod
    def train_config(cls) -> LanguageConfig:
        return LanguageConfig()

    @classmethod
    def extrap_config(cls) -> LanguageConfig:
        return LanguageConfig(min_sentences=8, max_sentences=12, min_entities=4, max_entities=5)

    def validate(self) -> None:
        c = self.config
        check_range("min_sentences", c.min_sentences, 1, None)
        check_range("max_sentences", c.max_sentences, c.min_sentences, None)
        check_range("min_entities", c.min_entities, 2, len(OBJECTS))
        check_range("max_entities", c.max_entities, c.min_entities, len(OBJECTS))
        check_range("question_prob", c.question_prob, 0.0, 1.0)
        check_range("n_names", c.n_names, c.max_entities, len(NAMES))
        check_range("n_objects", c.n_objects, c.max_entities, len(OBJECTS))
        check_range("n_places", c.n_places, 2, len(PLACES))

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(_all_words())

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        c = self.config
        rand, randrange = rng.random, rng.randrange
        n_e = rng.randint(c.min_entities, c.max_entities)
        n_s = rng.randint(c.min_sentences, c.max_sentences)
        n_places, n_names, n_objects = c.n_places, c.n_names, c.n_objects
        cast = [_NAME_IDS[i] for i in rng.sample(range(n_names), n_e)]  # token ids
        objs = [_OBJ_IDS[i] for i in rng.sample(range(n_objects), n_e)]

        toks: list[int] = [BOS_ID]
        kinds: list[int] = [GRAMMAR]
        nbs: list[int] = [1]
        answers: dict[int, tuple[int, int]] = {}  # position -> (steps, distance)

        def emit(tok: int, kind: int, nb: int) -> None:
            toks.append(tok)
            kinds.append(GRAMMAR if kind == FREE and nb == 1 else kind)  # small pools: one word left
            nbs.append(nb)

        loc = [0] * n_e  # place token id of each person
        loc_chain: list[tuple[int, ...]] = [()] * n_e  # facts (end positions) deriving loc[p]
        holder: list[int | None] = list(range(n_e))  # person index holding object o, or None
        obj_place = [0] * n_e  # place of an object that nobody holds
        obj_fact = [0] * n_e  # end position of the last fact about object o

        # --- intro: person i is in a place holding object i ---------------------------------
        for i in range(n_e):
            nb = n_names - i  # new names
            if i >= c.min_entities:
                nb += _N_TIME + i + 1  # events could start here instead
            emit(cast[i], FREE, nb)
            emit(_INTRO_IDS[randrange(len(_INTRO_IDS))], FREE, len(_INTRO_IDS))
            emit(_IN, GRAMMAR, 1)
            emit(_THE, GRAMMAR, 1)
            if rand() < P_ADJECTIVE:
                emit(_PADJ_IDS[randrange(len(_PADJ_IDS))], FREE, len(_PADJ_IDS) + n_places)
                place = _PLACE_IDS[randrange(n_places)]
                emit(place, FREE, n_places)
            else:
                place = _PLACE_IDS[randrange(n_places)]
                emit(place, FREE, len(_PADJ_IDS) + n_places)
            emit(_WITH, GRAMMAR, 1)
            emit(_THE, GRAMMAR, 1)
            if rand() < P_ADJECTIVE:
                emit(_OADJ_IDS[randrange(len(_OADJ_IDS))], FREE, len(_OADJ_IDS) + n_objects - i)
                emit(objs[i], FREE, n_objects - i)
            else:
                emit(objs[i], FREE, len(_OADJ_IDS) + n_objects - i)
            f = len(toks)
            emit(_DOT, GRAMMAR, 1)
            loc[i], loc_chain[i], obj_fact[i] = place, (f,), f

        # --- events and questions --------------------------------------------------------------
        can_follow = n_e >= 3
        weights = _WEIGHTS_3 if can_follow else _WEIGHTS_2
        n_verbs = _N_PERSON_VERBS + (len(FOLLOW_PHRASES) if can_follow else 0)
        n_stmt_start = _N_TIME + n_e + 1  # time phrase, a cast name or "the"
        start_nb = n_stmt_start + (n_names - n_e if n_e < c.max_entities else 0)  # after the intro
        for ev in range(1, n_s + 1):
            # sentence start (time phrase?)
            if rand() < P_TIME:
                phrase = _TIME_IDS[randrange(_N_TIME)]
                emit(phrase[0], FREE, start_nb)
                for t in phrase[1:]:
                    emit(t, GRAMMAR, 1)
                start_nb = n_e + 1
            r = rand()
            kind = next(k for k, w in weights if r < w)
            if kind in ("give", "put"):
                emit(_THE, FREE, start_nb)
                o = randrange(n_e)
                emit(objs[o], FREE, n_e)
                emit(_WAS, GRAMMAR, 1)
                if kind == "give":
                    emit(_GIVE_IDS[randrange(len(_GIVE_IDS))], FREE, _N_WAS_VERBS)
                    emit(_TO, GRAMMAR, 1)
                    p = randrange(n_e)
                    emit(cast[p], FREE, n_e)
                    holder[o] = p
                else:
                    emit(_PUT_IDS[randrange(len(_PUT_IDS))], FREE, _N_WAS_VERBS)
                    emit(_IN, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    place = _PLACE_IDS[randrange(n_places)]
                    emit(place, FREE, n_places)
                    holder[o], obj_place[o] = None, place
                obj_fact[o] = len(toks)
                emit(_DOT, GRAMMAR, 1)
            else:
                s = randrange(n_e)
                emit(cast[s], FREE, start_nb)
                if kind == "move":
                    verb, particles = _MOVE[randrange(len(_MOVE))]
                    emit(verb, FREE, n_verbs)
                    part = particles[randrange(len(particles))]
                    emit(part[0], FREE if len(particles) > 1 else GRAMMAR, len(particles))
                    for t in part[1:]:
                        emit(t, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    place = _PLACE_IDS[randrange(n_places)]
                    emit(place, FREE, n_places)
                    if rand() < P_ADVERB:
                        emit(_ADV_IDS[randrange(len(_ADV_IDS))], FREE, len(_ADV_IDS) + 1)
                        f = len(toks)
                        emit(_DOT, GRAMMAR, 1)
                    else:
                        f = len(toks)
                        emit(_DOT, FREE, len(_ADV_IDS) + 1)
                    loc[s], loc_chain[s] = place, (f,)
                elif kind == "follow":
                    phrase = _FOLLOW_IDS[randrange(len(_FOLLOW_IDS))]
                    emit(phrase[0], FREE, n_verbs)
                    for t in phrase[1:]:
                        emit(t, GRAMMAR, 1)
                    q = randrange(n_e - 1)
                    q += q >= s  # anyone but the subject
                    emit(cast[q], FREE, n_e - 1)
                    f = len(toks)
                    emit(_DOT, GRAMMAR, 1)
                    loc[s], loc_chain[s] = loc[q], (f,) + loc_chain[q]
                else:  # take
                    phrase = _TAKE_IDS[randrange(len(_TAKE_IDS))]
                    emit(phrase[0], FREE, n_verbs)
                    for t in phrase[1:]:
                        emit(t, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    o = randrange(n_e)
                    emit(objs[o], FREE, n_e)
                    obj_fact[o] = len(toks)
                    emit(_DOT, GRAMMAR, 1)
                    holder[o] = s

            # what may start the next sentence
            more = ev < c.max_sentences
            stmt_nb = n_stmt_start if (more and c.question_prob < 1.0) else 0
            q_nb = 2 if (c.question_prob > 0.0 or ev >= c.min_sentences) else 0
            start_nb = stmt_nb + q_nb
            if ev == n_s or rand() < c.question_prob:
                r = rand()
                qtype = next(k for k, w in _QUESTION_CUM if r < w)
                if qtype == "who_has":
                    emit(_WHO, FREE, start_nb)
                    emit(_HAS, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    o = randrange(n_e)
                    emit(objs[o], FREE, n_e)
                    emit(_QMARK, GRAMMAR, 1)
                    h = holder[o]
                    chain: tuple[int, ...] = (obj_fact[o],)
                    answer, nb = (_NOBODY if h is None else cast[h]), n_e + 1
                else:
                    emit(_WHERE, FREE, start_nb)
                    emit(_IS, GRAMMAR, 1)
                    if qtype == "where_person":
                        p = randrange(n_e)
                        emit(cast[p], FREE, n_e + 1)
                        chain, answer = loc_chain[p], loc[p]
                    else:
                        emit(_THE, FREE, n_e + 1)
                        o = randrange(n_e)
                        emit(objs[o], FREE, n_e)
                        h = holder[o]
                        if h is None:
                            chain, answer = (obj_fact[o],), obj_place[o]
                        else:
                            chain, answer = (obj_fact[o],) + loc_chain[h], loc[h]
                    emit(_QMARK, GRAMMAR, 1)
                    nb = n_places
                pos = len(toks)
                answers[pos] = (len(set(chain)), pos - max(chain))
                emit(answer, ANSWER, nb)
                start_nb = n_stmt_start  # no question right after a question

        feats = []
        for i in range(1, len(toks)):
            k = kinds[i]
            steps, dist = answers[i] if k == ANSWER else (0, 0)
            feats.append({
                "difficulty": steps, "size": n_s, "position": i, "is_answer": 1 if k == ANSWER else 0,
                "kind": k, "n_entities": n_e, "n_sentences": n_s,
                "steps": steps, "distance": dist, "n_branching": nbs[i],
            })
        return Example(tokens=toks, scored=list(range(1, len(toks))), features=feats, size=n_s)


# ---- token-id tables used by the generator ------------------------------------------------
_V = LanguageTask.build_vocab()
_S = _V.stoi
_NAME_IDS = [_S[w] for w in NAMES]
_OBJ_IDS = [_S[w] for w in OBJECTS]
_PLACE_IDS = [_S[w] for w in PLACES]
_OADJ_IDS = [_S[w] for w in OBJECT_ADJECTIVES]
_PADJ_IDS = [_S[w] for w in PLACE_ADJECTIVES]
_ADV_IDS = [_S[w] for w in ADVERBS]
_INTRO_IDS = [_S[w] for w in INTRO_VERBS]
_GIVE_IDS = [_S[w] for w in GIVE_VERBS]
_PUT_IDS = [_S[w] for w in PUT_VERBS]
_TIME_IDS = [tuple(_S[w] for w in ph) for ph in TIME_PHRASES]
_TAKE_IDS = [tuple(_S[w] for w in ph) for ph in TAKE_PHRASES]
_FOLLOW_IDS = [tuple(_S[w] for w in ph) for ph in FOLLOW_PHRASES]
_MOVE = [(_S[v], [tuple(_S[w] for w in part) for part in parts]) for v, parts in MOVE_VERBS.items()]
_THE, _DOT, _QMARK, _IN, _WITH, _WAS, _WHERE, _WHO, _HAS, _NOBODY = (_S[w] for w in FUNCTION_WORDS)
_IS, _TO = _S["is"], _S["to"]
_N_TIME = len(TIME_PHRASES)  # distinct first words (checked below)
_N_PERSON_VERBS = len(MOVE_VERBS) + len(TAKE_PHRASES)  # follow phrases come on top with 3+ people
_N_WAS_VERBS = len(GIVE_VERBS) + len(PUT_VERBS)


def _cumulative(weights: dict[str, float], names: tuple[str, ...]) -> list[tuple[str, float]]:
    total, acc, out = sum(weights[k] for k in names), 0.0, []
    for k in names:
        acc += weights[k] / total
        out.append((k, acc))
    out[-1] = (out[-1][0], 2.0)  # guard against rounding
    return out


_WEIGHTS_3 = _cumulative(EVENT_WEIGHTS, ("move", "follow", "take", "give", "put"))
_WEIGHTS_2 = _cumulative(EVENT_WEIGHTS, ("move", "take", "give", "put"))
_QUESTION_CUM = _cumulative(QUESTION_WEIGHTS, tuple(QUESTION_WEIGHTS))

# the branching counts above assume these first words are distinct within each slot
assert len({ph[0] for ph in TIME_PHRASES}) == _N_TIME
assert len({ph[0] for ph in TAKE_PHRASES + FOLLOW_PHRASES} | set(MOVE_VERBS)) == _N_PERSON_VERBS + len(FOLLOW_PHRASES)
assert len(set(GIVE_VERBS) | set(PUT_VERBS)) == _N_WAS_VERBS
assert all(len({p[0] for p in parts}) == len(parts) for parts in MOVE_VERBS.values())
