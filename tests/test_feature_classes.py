"""The feature-class rule (anira.tasks.features), checked mechanically where it can be checked:
every recorded feature is in its task's table; label features equal the difficulty and no other
does; progress features are functions of the output step and the size; static features are
unchanged when the same input's outputs come in another valid order, dynamic ones change; and
docs/features.md is the rendering of the tables."""
import random
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from test_tasks_hops import interpret_dense
from test_tasks_toposort import RANK, graph_of, reference_records

from anira.tasks import TASK_NAMES, make_task, task_class
from anira.tasks.features import FEATURE_KINDS, features_markdown, toposort_exec_depths, with_derived_features

ROOT = Path(__file__).resolve().parents[1]
STEP = {"hops": "query_index", "toposort": None, "addition": "digit_index"}  # the output step per record


def records_of(name, n=200, seed=0, range="train"):
    task = make_task(name, range=range)
    exs = task.generate(n, seed=seed)
    rows = [dict(r, example=i, step=t, task=name) for i, e in enumerate(exs) for t, r in enumerate(e.features)]
    return task, exs, pd.DataFrame(rows)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_recorded_feature_has_a_class_and_a_reason(name):
    cls = task_class(name)
    table = {f.name: f for f in cls.features}
    assert all(f.kind in FEATURE_KINDS and f.reason for f in cls.features)
    for rng in ("train", "extrap"):
        _, _, rec = records_of(name, n=50, range=rng)
        recorded = set(rec.columns) - {"example", "step", "task"}
        assert recorded <= set(table), f"unclassified features: {recorded - set(table)}"
        assert {k for k, f in table.items() if not f.derived} <= recorded


@pytest.mark.parametrize("name", ["hops", "toposort", "addition"])
def test_label_features_equal_the_difficulty_and_no_other_does(name):
    _, _, rec = records_of(name, n=300)
    rec = with_derived_features(rec) if name != "toposort" else rec
    for f in task_class(name).features:
        if f.name not in rec:
            continue
        equal = bool((rec[f.name] == rec["difficulty"]).all())
        assert equal == (f.kind == "label"), f"{name}.{f.name}: equals difficulty {equal}, class {f.kind}"


@pytest.mark.parametrize("name", ["hops", "toposort", "addition"])
def test_progress_features_are_functions_of_the_output_step_and_size(name):
    _, _, rec = records_of(name, n=300)
    progress = [f.name for f in task_class(name).features if f.kind == "progress"]
    assert progress
    for f in progress:
        assert (rec.groupby(["step", "size"])[f].nunique() == 1).all(), f
    for f in task_class(name).features:  # and no static or dynamic feature is one
        if f.kind in ("static", "dynamic") and f.name in rec and not (rec.groupby("size")[f.name].nunique() == 1).all():
            assert not (rec.groupby(["step", "size"])[f.name].nunique() == 1).all(), f.name


def _kinds(name):
    return {f.name: f.kind for f in task_class(name).features}


def test_toposort_static_unchanged_dynamic_changed_under_another_valid_order():
    """The same graph's nodes output in a random valid order: per node, every static feature is the
    same and every dynamic or progress feature differs for some node (recomputed by networkx)."""
    task = make_task("toposort")
    kinds = _kinds("toposort")
    changed = {k: False for k, v in kinds.items() if v in ("dynamic", "progress")}
    rng = random.Random(0)
    for ex in task.generate(100, seed=5):
        g, nodes, edges, out = graph_of(task, ex)
        alt = list(nx.topological_sort(g)) if rng.random() < 0.5 else _random_order(g, rng)
        ref = {v: r for v, r in zip(out, reference_records(g, out))}
        oth = _records_for_order(g, alt)
        ed = dict(zip(out, toposort_exec_depths(nodes, edges, out)))
        ed_alt = dict(zip(alt, toposort_exec_depths(nodes, edges, alt)))
        for v in out:
            ref[v]["exec_depth"], oth[v]["exec_depth"] = ed[v], ed_alt[v]
            for k, kind in kinds.items():
                if k not in ref[v]:
                    continue
                if kind == "static":
                    assert ref[v][k] == oth[v][k], (k, v)
                elif k in changed:
                    changed[k] |= ref[v][k] != oth[v][k]
        # the generator's records are the reference for its own order
        for rec, v in zip(ex.features, out):
            assert all(rec[k] == ref[v][k] for k in ref[v] if k in rec and k != "exec_depth")
    assert all(changed.values()), changed


def _records_for_order(g, order):
    """Per node, the features recomputed for any valid order (reference_records assumes the
    lexicographically smallest one): structure from networkx, state by replaying the order."""
    lex = list(nx.lexicographical_topological_sort(g, key=RANK.get))
    static = {v: r for v, r in zip(lex, reference_records(g, lex))}
    out, done, prev = {}, set(), set()
    for t, v in enumerate(order):
        frontier = {w for w in g if w not in done and all(p in done for p in g.predecessors(w))}
        assert v in frontier
        out[v] = {k: static[v][k] for k in ("n_nodes", "n_edges", "in_degree", "out_degree", "level", "dfs_depth",
                                             "size")}
        out[v] |= {"frontier_size": len(frontier), "newly_enabled": 0 if t == 0 else len(frontier - prev),
                   "remaining": len(order) - t}
        done.add(v)
        prev = frontier - {v}
    return out


def _random_order(g, rng):
    done, order = set(), []
    while len(order) < g.number_of_nodes():
        ready = [v for v in g if v not in done and all(p in done for p in g.predecessors(v))]
        v = rng.choice(ready)
        order.append(v)
        done.add(v)
    return order


def test_toposort_exec_depth_is_the_execution_forest_depth():
    """exec_depth: 0 for sources, else 1 + that of the last-emitted predecessor; it never exceeds
    the structural level and differs from it on some nodes."""
    task = make_task("toposort")
    differs = False
    for ex in task.generate(100, seed=6):
        g, nodes, edges, out = graph_of(task, ex)
        depths = dict(zip(out, toposort_exec_depths(nodes, edges, out)))
        step = {v: t for t, v in enumerate(out)}
        for v in out:
            preds = list(g.predecessors(v))
            want = 0 if not preds else 1 + depths[max(preds, key=step.get)]
            assert depths[v] == want
            level = nx.dag_longest_path_length(g.subgraph(nx.ancestors(g, v) | {v}))
            assert depths[v] <= level
            differs |= depths[v] != level
    assert differs


def test_hops_static_unchanged_dynamic_changed_when_queries_come_in_another_order():
    task = make_task("hops")
    kinds = _kinds("hops")
    changed = {k: False for k, v in kinds.items() if v in ("dynamic", "progress")}
    rng = random.Random(1)
    for ex in task.generate(100, seed=7):
        words = task.render(ex)
        end = words.index("|")
        triples = [words[i:i + 3] for i in range(end + 1, len(words), 3)]
        perm = triples[:]
        rng.shuffle(perm)
        alt = words[:end + 1] + [w for t in perm for w in t]
        recs = {}
        for ws in (words, alt):
            _, refs, _ = interpret_dense(ws)
            df = with_derived_features(pd.DataFrame(refs).assign(task="hops"))
            qs = [ws[end + 2 + 3 * j] for j in range(len(refs))]
            recs[len(recs)] = dict(zip(qs, df.to_dict("records")))
        for x, r in recs[0].items():
            o = recs[1][x]
            for k, kind in kinds.items():
                if k not in r:
                    continue
                if kind == "static":
                    assert r[k] == o[k], (k, x)
                elif k in changed:
                    changed[k] |= r[k] != o[k]
    assert all(changed.values()), changed


def test_addition_prefix_reveals_is_what_the_written_digits_fix():
    """prefix_reveals = 1 exactly when the written prefix r_n..r_{i+1} fixes the carry into column i
    whatever the lower columns: two completions of the lower digits (all 9+9, all 0+0) give carries
    1 and 0 into column i, and the prefix tells them apart or not. Static features are functions of
    the operands alone (Python integers)."""
    task = make_task("addition")
    for ex in task.generate(200, seed=8):
        a, b, _ = task.parse(task.render(ex))
        n = len(a)
        df = with_derived_features(pd.DataFrame(ex.features).assign(task="addition"))
        for rec in df.to_dict("records"):
            i = n - int(rec["digit_index"])
            ai, bi = int(a) // 10**i, int(b) // 10**i  # the columns >= i
            hi_alt = [str((ai * 10**i + (10**i - 1)) + (bi * 10**i + (10**i - 1))).zfill(n + 1),
                      str(ai * 10**i + bi * 10**i).zfill(n + 1)]
            if 1 <= i < n:
                k = n - i  # digits r_n..r_{i+1} are the first k written
                fixed = hi_alt[0][:k] != hi_alt[1][:k]
                assert rec["prefix_reveals"] == int(fixed), (a, b, i)
            else:
                assert rec["prefix_reveals"] == 0
            assert rec["carry_in"] == int((int(a) % 10**i + int(b) % 10**i) >= 10**i)


def test_docs_page_is_the_rendering_of_the_tables():
    page = (ROOT / "docs" / "features.md").read_text()
    assert page == features_markdown(), "docs/features.md is stale: python -m anira.tasks.features > docs/features.md"
    for name in TASK_NAMES:
        for f in task_class(name).features:
            assert f"| `{f.name}` | {f.kind}" in page
