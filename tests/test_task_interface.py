"""The contract of anira.tasks.base, checked on every registered task (parametrized over TASK_NAMES)."""
import numbers

import pytest
import torch

from anira.tasks import BOS_ID, PAD_ID, TASK_NAMES, collate, make_task, task_class
from anira.tasks.base import COMMON_FEATURES

N = 40


@pytest.fixture(scope="module", params=TASK_NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module", params=["train", "extrap"])
def task_and_examples(request, name):
    task = make_task(name, range=request.param)
    return task, task.generate(N, seed=7)


def test_same_seed_same_examples_and_stream(name):
    task = make_task(name)
    a, b = task.generate(N, seed=3), task.generate(N, seed=3)
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    stream = task.stream(3)
    assert [next(stream).to_json() for _ in range(N)] == [e.to_json() for e in a]
    c = task.generate(N, seed=4)
    assert [e.tokens for e in a] != [e.tokens for e in c]


def test_tokens_and_scored_indices_valid(task_and_examples):
    task, exs = task_and_examples
    V = len(task.vocab)
    for ex in exs:
        assert ex.tokens[0] == BOS_ID
        assert all(isinstance(t, int) and 0 <= t < V for t in ex.tokens)
        assert PAD_ID not in ex.tokens
        assert ex.scored, "every example scores at least one token"
        assert ex.scored == sorted(set(ex.scored))
        assert 1 <= ex.scored[0] and ex.scored[-1] < len(ex.tokens)
        words = task.render(ex)
        assert len(words) == len(ex.tokens) and all(isinstance(w, str) for w in words)
        assert task.vocab.encode(words) == ex.tokens


def test_one_record_per_scored_token_with_all_features(task_and_examples):
    task, exs = task_and_examples
    names = task.feature_names()
    assert names[: len(COMMON_FEATURES)] == COMMON_FEATURES
    assert len(set(names)) == len(names)
    for ex in exs:
        assert len(ex.features) == len(ex.scored)
        for i, rec in zip(ex.scored, ex.features):
            assert set(names) <= set(rec), f"missing features {set(names) - set(rec)}"
            assert all(isinstance(rec[k], numbers.Real) and not isinstance(rec[k], bool) for k in names)
            assert rec["position"] == i
            assert rec["size"] == ex.size
            assert rec["is_answer"] in (0, 1)
            assert isinstance(rec["difficulty"], int) and rec["difficulty"] >= 0


def test_collate_alignment(task_and_examples):
    task, exs = task_and_examples
    names = task.feature_names()
    batch = collate(exs, names)
    B, T = batch.input_ids.shape
    assert B == len(exs) and T == max(len(e.tokens) for e in exs) - 1
    assert batch.targets.shape == batch.loss_mask.shape == (B, T)
    for b, ex in enumerate(exs):
        L = len(ex.tokens)
        assert batch.input_ids[b, : L - 1].tolist() == ex.tokens[:-1]
        for i in range(1, L):
            assert batch.targets[b, i - 1] == ex.tokens[i]
        assert (batch.targets[b, L - 1 :] == PAD_ID).all()
        want_mask = torch.zeros(T, dtype=torch.bool)
        want_mask[[i - 1 for i in ex.scored]] = True
        assert torch.equal(batch.loss_mask[b], want_mask)
        for k in names:
            got = batch.features[k][b, [i - 1 for i in ex.scored]].tolist()
            assert got == pytest.approx([float(r[k]) for r in ex.features])
    assert batch.features["difficulty"].dtype == torch.long


def test_vocab_identical_across_ranges(name):
    cls = task_class(name)
    vocabs = [make_task(name, range=r).vocab.itos for r in cls.ranges.values()]
    assert all(v == vocabs[0] for v in vocabs)
    base = cls.build_vocab().itos  # a design parameter may add tokens (addition's hints), never change one
    assert vocabs[0][: len(base)] == base


def test_extrap_examples_larger_or_harder(name):
    """Every extrapolation example is larger than any training one, or (addition and language: the
    same sizes, only the composition grows) holds a token harder than any training token."""
    train = make_task(name, range="train").generate(200, seed=0)
    extrap = make_task(name, range="extrap").generate(200, seed=0)
    size, hardest = max(e.size for e in train), max(f["difficulty"] for e in train for f in e.features)
    assert all(e.size > size or max(f["difficulty"] for f in e.features) > hardest for e in extrap)
    if name not in ("addition", "language"):
        assert min(e.size for e in extrap) > size


def test_unknown_task_lists_allowed_names():
    with pytest.raises(ValueError) as info:
        make_task("nonexistent_task")
    assert "nonexistent_task" in str(info.value)
    assert all(n in str(info.value) for n in TASK_NAMES)


def test_unknown_range_rejected(name):
    with pytest.raises(ValueError, match="range"):
        make_task(name, range="huge")


def test_unknown_parameter_is_named(name):
    with pytest.raises(ValueError, match="bogus_param"):
        make_task(name, bogus_param=1)


def test_bad_count_rejected(name):
    with pytest.raises(ValueError, match="n = -1"):
        make_task(name).generate(-1, seed=0)
