"""`language`: a synthetic English-like story language with labelled token complexity.

A story introduces a cast of people, each in a place and holding one object, then tells events
and asks questions that are answered by one token. It is trained as a language model on every
token (``scored`` = every position >= 1), and every token is labelled by ``kind``:

    0  grammar-determined   only one next token is allowed by the grammar given the prefix
    1  free choice          several tokens are allowed; the generator samples one of them
                            (irreducible entropy: no amount of computation predicts it)
    2  answer               the token after "?" ; determined by the world state of the story

Grammar (``[x]`` optional, ``a|b`` alternatives, CAST = people introduced so far). In every fact the
word a question asks for comes after the word it asks about (the place after the person, the
holder after the object): a causal model reads each answer off the token itself. (With the holder
before the object, "Mary took the apple" and "Mary is in the kitchen with the apple", a depth-6
model answered "who has the apple" at 0.52 and 0.27 after 1,000 steps, against 0.77 for "the
apple was given to Mary" and 0.99 for "where is Mary".)

    intro     the [OBJECT_ADJ] NEW_OBJECT INTRO_VERB with NEW_NAME in the [PLACE_ADJ] NEW_PLACE .
    move      [TIME] NAME MOVE_VERB PARTICLE(verb) the PLACE [ADVERB] .
    follow    [TIME] NAME FOLLOW_PHRASE OTHER_NAME .   (only with 3+ people, so OTHER_NAME is free)
    give      [TIME] the OBJECT was GIVE_VERB to NAME .
    put       [TIME] the OBJECT was PUT_VERB in the PLACE .
    questions where is NAME ? PLACE | where is the OBJECT ? PLACE | who has the OBJECT ? NAME|nobody

Story: ``n_entities`` intro sentences (cast members, their starting places and their objects are
distinct), then ``n_sentences`` events; after each event a question follows with probability
``question_prob``, and one always follows the last event; another may follow an answer, each with
``question_prob``, up to ``max_questions`` in a row (none directly after the intro).
NAME / OBJECT in events and questions range over the cast and its objects; adjectives appear only
at an intro (a first mention). An answer is followed directly by the next sentence. At a
sentence start the allowed tokens are the first words of every sentence type that the story
rules and the config's ranges allow there. Every action is always legal, so no token except an
answer is constrained by the world state:

    move: loc[p] := place        follow p q: loc[p] := loc[q] (at that time)
    give to p: holder[o] := p                 put in place: holder[o] := nobody, at place
    intro: loc[p] := place, holder[o] := p

Difficulty of an answer, k = ``steps``: the number of distinct facts (sentences) that must be
chained to derive it.
    loc_chain(p)  = [last fact setting loc[p]] + (loc_chain(q) at that time if it was "p follow q")
    where is p    -> loc_chain(p)
    who has o     -> [last fact about o]                        (k = 1)
    where is o    -> [last fact about o] + (loc_chain(holder) if o is held)
so e.g. "the apple was given to Mary . Mary went to the hallway ." makes "where is the apple" k = 2, and
each follow on the way adds one fact. An earlier answer to the same question counts as one fact
while it still holds (a reader may copy it): "where is p ? X" holds until p next moves or follows,
"where is the o ? X" until the next fact about o or the next move or follow of its holder. So a
question repeated with nothing changed in between has k = 1, and a follow of q after "where is q"
was answered chains two. Difficulty = k for answers, 0 for every other token.

Size = ``n_sentences`` (events; intro and questions not counted); ``n_entities`` is a parameter
with its own range (the number of objects equals it).

Ranges: only the facts chained grow. Training stories (3 people, 2-4 events, names, objects and
places drawn from pools of 6 that training covers densely, three questions after every event) are
redrawn when an answer chains more than 3 facts (``max_difficulty``); extrapolation stories are
drawn from the same grammar and sizes and kept only when an answer chains at least 4
(``min_difficulty``), so the positions and the vocabulary are those of training and the answers
beyond k = 3 need facts no training answer chained. A reader that chains at most 3 facts is exact
in range and guesses among the places the story mentioned beyond it (``bounded_reader``;
anira.data.certify): at most 1/3 per answer, since the three people start in places of their own.

Per-token features (every position >= 1), with their class by the rule of ``anira.tasks.features``
(the table ``LanguageTask.features``; docs/features.md):
  static   n_entities, n_sentences
  label    steps (k for answers, 0 otherwise; = difficulty)
  dynamic  kind (what the grammar allows at this point);
           distance (answers: tokens from the end "." of the most recent fact in the chain to
             the answer; 0 otherwise);
           n_branching (number of tokens the grammar allows here given the prefix: 1 for kind 0,
             > 1 for kind 1; for an answer, the number of grammatical answers of its type:
             all places for "where", cast + "nobody" for "who");
           n_candidates (answers: the answers a reader cannot rule out without the facts, the
             places mentioned so far for "where", cast + "nobody" for "who"; = n_branching
             otherwise): the floor's and the bounded reader's guess;
           uniform (1 when the generator drew the token uniformly among the n_branching allowed:
             its entropy is ln n_branching, the bar for the free choices' cross-entropy)
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from anira.config import check_range
from anira.tasks.base import BOS_ID, MAX_REDRAWS, Example, Task, Vocab
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
FOLLOW_PHRASES = (("followed",), ("joined",), ("accompanied",), ("caught", "up", "with"))
GIVE_VERBS = ("given", "handed", "passed", "brought", "sent", "tossed")
PUT_VERBS = ("left", "put", "placed", "dropped", "hidden", "stored")
NOBODY = "nobody"
FUNCTION_WORDS = ("the", ".", "?", "in", "with", "was", "where", "who", "has", NOBODY)

# event type weights (follow is left out, and the rest renormalised, with fewer than 3 people)
EVENT_WEIGHTS = {"move": 0.25, "follow": 0.35, "give": 0.3, "put": 0.1}  # follows chain facts
P_TIME = 0.25  # an event sentence starts with a time phrase
P_ADJECTIVE = 0.3  # an intro mentions a place / object with an adjective
P_ADVERB = 0.25  # a move ends with an adverb
QUESTION_WEIGHTS = {"where_person": 0.4, "where_object": 0.4, "who_has": 0.2}  # "who has" is always k = 1


def _all_words() -> list[str]:
    words: list[str] = list(FUNCTION_WORDS)
    for group in (NAMES, OBJECTS, PLACES, OBJECT_ADJECTIVES, PLACE_ADJECTIVES, ADVERBS, INTRO_VERBS,
                  GIVE_VERBS, PUT_VERBS, tuple(MOVE_VERBS)):
        words += group
    for phrases in (TIME_PHRASES, FOLLOW_PHRASES, (TO, INTO, BACK_TO)):
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
    max_questions: int = 1  # questions in a row after an event (each further one again with question_prob)
    max_difficulty: int = 0  # redraw a story with an answer that chains more facts than this (0: no cap)
    min_difficulty: int = 0  # redraw a story with no answer that chains at least this many facts (0: none)
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
        Feature("uniform", "dynamic", "1 when the generator drew the token uniformly from the n_branching the "
                                      "grammar allows (entropy ln n_branching; grammar tokens too)"),
        Feature("n_candidates", "dynamic", "answers a reader cannot rule out without the facts: on a 'where' "
                                           "answer the places the story has mentioned, on 'who' the cast and "
                                           "nobody, else n_branching"),
    )
    size_name = "number of event sentences"
    difficulty_name = "chained facts an answer needs (0: grammar or free-choice token)"
    floor_reader = ("follows the grammar, guesses free choices uniformly, answers a 1-fact question by "
                    "one lookup and guesses any other among the answers of its type the story has mentioned")

    @classmethod
    def floor(cls, records):
        """Grammar-determined tokens (kind 0): 1. Free choices (kind 1): ``1 / n_branching``, a
        uniform guess among the allowed tokens (no amount of computation does better than the
        generator's own weights). Answers (kind 2): 1 when one fact answers them (``steps`` = 1, a
        single lookup, like a 1-hop query), else ``1 / n_candidates``: a guess among the answers of
        its type that the story has mentioned (the bounded reader's guess, ``bounded_reader``)."""
        kind, steps = records["kind"], records["steps"]
        sure = (kind == GRAMMAR) | ((kind == ANSWER) & (steps == 1))
        n = records["n_candidates"] * (kind == ANSWER) + records["n_branching"] * (kind != ANSWER)
        return sure + (1 - sure) / n

    @classmethod
    def multi_step(cls, records):
        """Answers that chain two or more facts: free choices stay below the floor's 1 whatever
        the depth, so they are left out."""
        return (records["kind"] == ANSWER) & (records["steps"] >= 2)

    # measured (README, "language"): fixed depth 6 learns every answer type in 3,000 steps of batch 16
    # at learning rate 2e-3 (batch 32 learned per step about as fast at twice the cost; lr 1e-3 slower)
    recipe = {"steps": 3000, "batch_size": 16, "lr": 0.002}
    # halting waits for 0.9 on the answers; deep supervision leans on the deep steps (w_n ~ n**2), as on
    # addition and toposort: under the plain mean the two cpu3 online runs (seeds 0, 1) reached only
    # 0.64 / 0.80 on multi-fact answers at 3,000 steps, against 0.97 for fixed depth 6 (README)
    adaptive_recipe = {"ds_power": 2.0, "ds_until_acc": 0.9}

    @classmethod
    def train_config(cls) -> LanguageConfig:
        return LanguageConfig(min_sentences=2, max_sentences=4, min_entities=3, max_entities=3, question_prob=1.0,
                              max_questions=3, max_difficulty=3, n_names=6, n_objects=6, n_places=6)

    @classmethod
    def extrap_config(cls) -> LanguageConfig:
        return LanguageConfig(min_sentences=2, max_sentences=4, min_entities=3, max_entities=3, question_prob=1.0,
                              max_questions=3, min_difficulty=4, n_names=6, n_objects=6, n_places=6)

    def validate(self) -> None:
        c = self.config
        check_range("min_sentences", c.min_sentences, 1, None)
        check_range("max_sentences", c.max_sentences, c.min_sentences, None)
        check_range("min_entities", c.min_entities, 2, len(OBJECTS))
        check_range("max_entities", c.max_entities, c.min_entities, len(OBJECTS))
        check_range("question_prob", c.question_prob, 0.0, 1.0)
        check_range("max_questions", c.max_questions, 1, None)
        check_range("max_difficulty", c.max_difficulty, 0, None)
        check_range("min_difficulty", c.min_difficulty, 0, None)
        if c.max_difficulty and c.min_difficulty > c.max_difficulty:
            raise ValueError(f"min_difficulty = {c.min_difficulty}: must be at most max_difficulty = "
                             f"{c.max_difficulty} (or max_difficulty 0, no cap)")
        check_range("n_names", c.n_names, c.max_entities, len(NAMES))
        check_range("n_objects", c.n_objects, c.max_entities, len(OBJECTS))
        check_range("n_places", c.n_places, max(2, c.max_entities), len(PLACES))

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(_all_words())

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        """One story; with ``max_difficulty`` / ``min_difficulty`` set, stories are redrawn until
        no answer chains more facts than the cap and at least one chains the minimum (the grammar,
        and so every token's ``kind`` and ``n_branching``, is unchanged: only which stories are kept)."""
        c = self.config
        if not (c.max_difficulty or c.min_difficulty):
            return self._story(rng)
        for _ in range(MAX_REDRAWS):
            ex = self._story(rng)
            k = max(f["steps"] for f in ex.features)
            if (not c.max_difficulty or k <= c.max_difficulty) and k >= c.min_difficulty:
                return ex
        raise ValueError(f"max_difficulty = {c.max_difficulty}, min_difficulty = {c.min_difficulty}: {MAX_REDRAWS} "
                         f"stories in a row missed the range; allowed: a range these story sizes can meet")

    def _story(self, rng: random.Random) -> Example:
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
        uniforms: list[bool] = [True]
        answers: dict[int, tuple[int, int, int]] = {}  # position -> (steps, distance, candidates)

        def emit(tok: int, kind: int, nb: int, uniform: bool = False) -> None:
            """``uniform``: drawn uniformly from the nb allowed tokens (entropy ln nb; a grammar token
            is, with nb = 1); False where the draw mixes weighted choices (a sentence start, the verb
            after a subject, an optional adjective or adverb) and on answers."""
            toks.append(tok)
            kinds.append(GRAMMAR if kind == FREE and nb == 1 else kind)  # small pools: one word left
            nbs.append(nb)
            uniforms.append(kind != ANSWER and (kind == GRAMMAR or nb == 1 or uniform))

        loc = [0] * n_e  # place token id of each person
        loc_chain: list[tuple[int, ...]] = [()] * n_e  # facts (end positions) deriving loc[p]
        holder: list[int | None] = list(range(n_e))  # person index holding object o, or None
        obj_place = [0] * n_e  # place of an object that nobody holds
        obj_fact = [0] * n_e  # end position of the last fact about object o
        loc_ver = [0] * n_e  # moves and follows of person p so far (an answer about p holds until the next)
        seen_places: set[int] = set()  # places the story has mentioned (the candidates of a "where" answer)
        obj_answer: dict[int, tuple[int, int, int]] = {}  # o -> (answer position, obj_fact, holder's loc_ver)

        # --- intro: object i is with person i, in a place of their own ---------------------------
        for i in range(n_e):
            events_may_start = i >= c.min_entities
            # "the" starts an intro, and a give or put event too (with a time phrase or a name instead)
            emit(_THE, FREE, 1 + (_N_TIME + i if events_may_start else 0))
            n_new = n_objects - i  # new objects; once events may start, the cast's objects too
            if rand() < P_ADJECTIVE:
                emit(_OADJ_IDS[randrange(len(_OADJ_IDS))], FREE, len(_OADJ_IDS) + n_new + (i if events_may_start else 0))
                emit(objs[i], FREE, n_new, uniform=True)
            else:
                emit(objs[i], FREE, len(_OADJ_IDS) + n_new + (i if events_may_start else 0))
            emit(_INTRO_IDS[randrange(len(_INTRO_IDS))], FREE, len(_INTRO_IDS), uniform=True)
            emit(_WITH, GRAMMAR, 1)
            emit(cast[i], FREE, n_names - i, uniform=True)  # a new name
            emit(_IN, GRAMMAR, 1)
            emit(_THE, GRAMMAR, 1)
            free = [q for q in _PLACE_IDS[:n_places] if q not in seen_places]  # everyone starts apart
            if rand() < P_ADJECTIVE:
                emit(_PADJ_IDS[randrange(len(_PADJ_IDS))], FREE, len(_PADJ_IDS) + len(free))
                place = free[randrange(len(free))]
                emit(place, FREE, len(free), uniform=True)
            else:
                place = free[randrange(len(free))]
                emit(place, FREE, len(_PADJ_IDS) + len(free))
            seen_places.add(place)
            f = len(toks)
            emit(_DOT, GRAMMAR, 1)
            loc[i], loc_chain[i], obj_fact[i] = place, (f,), f

        # --- events and questions --------------------------------------------------------------
        can_follow = n_e >= 3
        weights = _WEIGHTS_3 if can_follow else _WEIGHTS_2
        n_verbs = _N_PERSON_VERBS + (len(FOLLOW_PHRASES) if can_follow else 0)
        n_stmt_start = _N_TIME + n_e + 1  # time phrase, a cast name or "the" (an intro's "the" too)
        start_nb = n_stmt_start
        for ev in range(1, n_s + 1):
            # after the intro, another intro could still start with "the" (then a new object)
            intro_open = ev == 1 and n_e < c.max_entities
            # sentence start (time phrase?)
            if rand() < P_TIME:
                phrase = _TIME_IDS[randrange(_N_TIME)]
                emit(phrase[0], FREE, start_nb)
                for t in phrase[1:]:
                    emit(t, GRAMMAR, 1)
                start_nb, intro_open = n_e + 1, False
            r = rand()
            kind = next(k for k, w in weights if r < w)
            if kind in ("give", "put"):
                emit(_THE, FREE, start_nb)
                o = randrange(n_e)
                extra = len(_OADJ_IDS) + n_objects - n_e if intro_open else 0
                emit(objs[o], FREE, n_e + extra, uniform=not extra)
                emit(_WAS, GRAMMAR, 1)
                if kind == "give":
                    emit(_GIVE_IDS[randrange(len(_GIVE_IDS))], FREE, _N_WAS_VERBS, uniform=_WAS_UNIFORM)
                    emit(_TO, GRAMMAR, 1)
                    p = randrange(n_e)
                    emit(cast[p], FREE, n_e, uniform=True)
                    holder[o] = p
                else:
                    emit(_PUT_IDS[randrange(len(_PUT_IDS))], FREE, _N_WAS_VERBS, uniform=_WAS_UNIFORM)
                    emit(_IN, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    place = _PLACE_IDS[randrange(n_places)]
                    seen_places.add(place)
                    emit(place, FREE, n_places, uniform=True)
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
                    emit(part[0], FREE if len(particles) > 1 else GRAMMAR, len(particles), uniform=True)
                    for t in part[1:]:
                        emit(t, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    place = _PLACE_IDS[randrange(n_places)]
                    seen_places.add(place)
                    emit(place, FREE, n_places, uniform=True)
                    if rand() < P_ADVERB:
                        emit(_ADV_IDS[randrange(len(_ADV_IDS))], FREE, len(_ADV_IDS) + 1)
                        f = len(toks)
                        emit(_DOT, GRAMMAR, 1)
                    else:
                        f = len(toks)
                        emit(_DOT, FREE, len(_ADV_IDS) + 1)
                    loc[s], loc_chain[s] = place, (f,)
                    loc_ver[s] += 1
                elif kind == "follow":
                    phrase = _FOLLOW_IDS[randrange(len(_FOLLOW_IDS))]
                    emit(phrase[0], FREE, n_verbs)
                    for t in phrase[1:]:
                        emit(t, GRAMMAR, 1)
                    q = randrange(n_e - 1)
                    q += q >= s  # anyone but the subject
                    emit(cast[q], FREE, n_e - 1, uniform=True)
                    f = len(toks)
                    emit(_DOT, GRAMMAR, 1)
                    loc[s], loc_chain[s] = loc[q], (f,) + loc_chain[q]
                    loc_ver[s] += 1

            # what may start the next sentence
            more = ev < c.max_sentences
            stmt_nb = n_stmt_start if (more and c.question_prob < 1.0) else 0
            q_nb = 2 if (c.question_prob > 0.0 or ev >= c.min_sentences) else 0
            start_nb = stmt_nb + q_nb
            n_q = 0
            while n_q < c.max_questions and ((ev == n_s and n_q == 0) or rand() < c.question_prob):
                n_q += 1
                r = rand()
                qtype = next(k for k, w in _QUESTION_CUM if r < w)
                if qtype == "who_has":
                    emit(_WHO, FREE, start_nb)
                    emit(_HAS, GRAMMAR, 1)
                    emit(_THE, GRAMMAR, 1)
                    o = randrange(n_e)
                    emit(objs[o], FREE, n_e, uniform=True)
                    emit(_QMARK, GRAMMAR, 1)
                    h = holder[o]
                    chain: tuple[int, ...] = (obj_fact[o],)
                    answer, nb = (_NOBODY if h is None else cast[h]), n_e + 1
                    cands = nb
                else:
                    emit(_WHERE, FREE, start_nb)
                    emit(_IS, GRAMMAR, 1)
                    if qtype == "where_person":
                        p = randrange(n_e)
                        emit(cast[p], FREE, n_e + 1)
                        chain, answer = loc_chain[p], loc[p]
                        loc_chain[p] = (len(toks) + 1,)  # from now on this answer tells where p is
                    else:
                        emit(_THE, FREE, n_e + 1)
                        o = randrange(n_e)
                        emit(objs[o], FREE, n_e, uniform=True)
                        h = holder[o]
                        if h is None:
                            chain, answer = (obj_fact[o],), obj_place[o]
                        else:
                            chain, answer = (obj_fact[o],) + loc_chain[h], loc[h]
                        state = (obj_fact[o], -1 if h is None else loc_ver[h])
                        if o in obj_answer and obj_answer[o][1:] == state:  # asked before, nothing moved since
                            chain = obj_answer[o][:1]
                        obj_answer[o] = (len(toks) + 1, *state)  # the answer's position (after "?")
                    emit(_QMARK, GRAMMAR, 1)
                    nb, cands = n_places, len(seen_places)
                pos = len(toks)
                answers[pos] = (len(set(chain)), pos - max(chain), cands)
                emit(answer, ANSWER, nb)
                # what may follow an answer: another question while max_questions allows (forced when
                # question_prob is 1), else the next event (none after the last event)
                q_more = n_q < c.max_questions and c.question_prob > 0.0
                stmt_nb = n_stmt_start if (more and not (q_more and c.question_prob >= 1.0)) else 0
                start_nb = stmt_nb + (2 if q_more else 0)

        feats = []
        for i in range(1, len(toks)):
            k = kinds[i]
            steps, dist, cands = answers[i] if k == ANSWER else (0, 0, nbs[i])
            feats.append({
                "difficulty": steps, "size": n_s, "position": i, "is_answer": 1 if k == ANSWER else 0,
                "kind": k, "n_entities": n_e, "n_sentences": n_s,
                "steps": steps, "distance": dist, "n_branching": nbs[i], "n_candidates": cands,
                "uniform": int(uniforms[i]),
            })
        return Example(tokens=toks, scored=list(range(1, len(toks))), features=feats, size=n_s)

    # ------------------------------------------------------------------------------------
    def bounded_reader(self, words: list[str], k: int) -> list[float]:
        """Per scored token: NaN on every token but an answer (only answers need facts chained);
        on an answer, 1 when it chains at most ``k`` facts (``steps``, with the reuse of an earlier
        answer that still holds), else a uniform guess among the answers of its type the story
        has mentioned before the question (``n_candidates``). Reads the words only: it parses each
        sentence and searches the facts backwards."""
        facts: list[tuple[int, tuple[str, ...]]] = []  # (end position, fact)
        asked: list[tuple[int, tuple[str, ...], str]] = []  # (answer position, question words, answer)
        places: set[str] = set()
        out = [float("nan")] * (len(words) - 1)

        def last_move(p: str, before: int) -> tuple[int, tuple[str, ...] | None]:
            return next(((e, f) for e, f in reversed(facts) if e < before and f[0] in ("intro", "move", "follow")
                         and f[1] == p), (-1, None))

        def last_answer(question: tuple[str, ...], before: int) -> tuple[int, str | None]:
            return next(((a, ans) for a, q, ans in reversed(asked) if a < before and q == question), (-1, None))

        def where(p: str, before: int) -> tuple[str, list[int]]:
            a, ans = last_answer(("where", "is", p), before)
            e, f = last_move(p, before)
            if a > e:
                return ans, [a]
            if f[0] == "follow":
                place, chain = where(f[2], e)
                return place, [e] + chain
            return f[2], [e]

        sentence: list[str] = []
        for i in range(1, len(words)):
            sentence.append(words[i])
            if words[i] == ".":
                fact = _parse_statement(sentence)
                facts.append((i, fact))
                places.update(w for w in fact if w in _PLACES)
                sentence = []
            elif len(sentence) >= 2 and sentence[-2] == "?":
                q = tuple(sentence[:-2])
                if q[0] == "who":  # who has the o: the last fact about o
                    ans, chain = sentence[-1], [0]
                else:
                    if q[2] == "the":
                        o = q[3]
                        e, f = next((e, f) for e, f in reversed(facts) if o in f[1:] and f[0] != "follow")
                        holder = {"intro": f[1], "give": f[2]}.get(f[0])
                        if holder is None:  # put in a place
                            ans, chain = f[2], [e]
                        else:
                            ans, rest = where(holder, i)
                            chain = [e] + rest
                        a, _ = last_answer(q, i)
                        if a > e and (holder is None or a > last_move(holder, i)[0]):
                            chain = [a]
                    else:
                        ans, chain = where(q[2], i)
                    assert ans == sentence[-1], f"answer {sentence[-1]!r} at {i}, the facts say {ans!r}"
                out[i - 1] = 1.0 if len(set(chain)) <= k else (ans in places) / len(places)
                asked.append((i, q, sentence[-1]))
                sentence = []
        return out


def _parse_statement(s: list[str]) -> tuple[str, ...]:
    """A statement's words as a fact: (intro, person, place, object), (move, person, place),
    (follow, person, other), (give, object, person), (put, object, place)."""
    if s[0] in _TIME_FIRST:  # a time phrase: its first word alone, or up to ","
        s = s[s.index(",") + 1:] if "," in s[:5] else s[1:]
    if s[0] == "the":
        obj = s[1] if s[1] in _OBJECTS else s[2]  # after an intro's adjective
        if "with" in s:
            return ("intro", s[s.index("with") + 1], s[-2], obj)
        return ("give", obj, s[-2]) if s[-3] == "to" else ("put", obj, s[-2])
    if s[1] in _FOLLOW_FIRST:
        return ("follow", s[0], s[-2])
    return ("move", s[0], s[s.index("the") + 1])


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
_FOLLOW_IDS = [tuple(_S[w] for w in ph) for ph in FOLLOW_PHRASES]
_MOVE = [(_S[v], [tuple(_S[w] for w in part) for part in parts]) for v, parts in MOVE_VERBS.items()]
_THE, _DOT, _QMARK, _IN, _WITH, _WAS, _WHERE, _WHO, _HAS, _NOBODY = (_S[w] for w in FUNCTION_WORDS)
_IS, _TO = _S["is"], _S["to"]
_N_TIME = len(TIME_PHRASES)  # distinct first words (checked below)
_N_PERSON_VERBS = len(MOVE_VERBS)  # follow phrases come on top with 3+ people
_N_WAS_VERBS = len(GIVE_VERBS) + len(PUT_VERBS)
# after "the OBJECT was" the verb is uniform among all twelve only when give and put are equally likely
_WAS_UNIFORM = EVENT_WEIGHTS["give"] / len(GIVE_VERBS) == EVENT_WEIGHTS["put"] / len(PUT_VERBS)


def _cumulative(weights: dict[str, float], names: tuple[str, ...]) -> list[tuple[str, float]]:
    total, acc, out = sum(weights[k] for k in names), 0.0, []
    for k in names:
        acc += weights[k] / total
        out.append((k, acc))
    out[-1] = (out[-1][0], 2.0)  # guard against rounding
    return out


_WEIGHTS_3 = _cumulative(EVENT_WEIGHTS, ("move", "follow", "give", "put"))
_WEIGHTS_2 = _cumulative(EVENT_WEIGHTS, ("move", "give", "put"))
_QUESTION_CUM = _cumulative(QUESTION_WEIGHTS, tuple(QUESTION_WEIGHTS))

# the branching counts above assume these first words are distinct within each slot
assert len({ph[0] for ph in TIME_PHRASES}) == _N_TIME
assert len({ph[0] for ph in FOLLOW_PHRASES} | set(MOVE_VERBS)) == _N_PERSON_VERBS + len(FOLLOW_PHRASES)
assert len(set(GIVE_VERBS) | set(PUT_VERBS)) == _N_WAS_VERBS
assert all(len({p[0] for p in parts}) == len(parts) for parts in MOVE_VERBS.values())

_PLACES, _OBJECTS = frozenset(PLACES), frozenset(OBJECTS)
_TIME_FIRST = frozenset(ph[0] for ph in TIME_PHRASES)
_FOLLOW_FIRST = frozenset(ph[0] for ph in FOLLOW_PHRASES)
