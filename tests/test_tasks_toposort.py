"""`toposort` against networkx: the graph, the order and every per-token feature are recomputed
from the rendered tokens alone, with networkx or brute force, and compared record by record."""
import statistics

import networkx as nx
import pytest

from anira.tasks import make_task
from anira.tasks.base import collate
from anira.tasks.toposort import LABELS, ToposortTask

RANK = {w: k for k, w in enumerate(LABELS)}


def graph_of(task, ex):
    """DiGraph from the rendered prompt; nodes and edges inserted in label order, so networkx's
    DFS visits successors in ascending label order."""
    words = task.render(ex)
    nodes, edges, out = ToposortTask.parse(words)
    g = nx.DiGraph()
    g.add_nodes_from(sorted(nodes, key=RANK.get))
    g.add_edges_from(sorted(edges, key=lambda e: (RANK[e[0]], RANK[e[1]])))
    return g, nodes, edges, out


def reference_records(g, out):
    """Every feature recomputed independently (networkx / brute force) for the order ``out``."""
    n = g.number_of_nodes()
    # DFS forest from the sources in label order = one DFS from a virtual root above them
    rooted = g.copy()
    rooted.add_edges_from(("ROOT", v) for v in g if g.in_degree(v) == 0)
    dfs_depth = {"ROOT": -1}
    for u, v in nx.dfs_edges(rooted, source="ROOT", sort_neighbors=lambda vs: sorted(vs, key=RANK.get)):
        dfs_depth[v] = dfs_depth[u] + 1
    recs, done, prev_frontier = [], set(), set()
    for t, v in enumerate(out):
        frontier = {w for w in g if w not in done and all(p in done for p in g.predecessors(w))}
        smaller = {w for w in g if w not in done and RANK[w] < RANK[v]}
        assert not smaller & frontier  # every smaller pending node is blocked
        anc = nx.ancestors(g, v) | {v}
        recs.append({
            "n_nodes": n,
            "n_edges": g.number_of_edges(),
            "in_degree": g.in_degree(v),
            "out_degree": g.out_degree(v),
            "level": nx.dag_longest_path_length(g.subgraph(anc)),
            "smaller_blocked": len(smaller),
            "frontier_size": len(frontier),
            "difficulty": len(smaller),
            "newly_enabled": 0 if t == 0 else len(frontier - prev_frontier),
            "dfs_depth": dfs_depth[v],
            "remaining": n - t,
            "size": n,
            "is_answer": 1,
        })
        done.add(v)
        prev_frontier = frontier
    return recs


CONFIGS = [
    ("train", {}),
    ("extrap", {}),
    ("train", {"min_hubs": 1, "max_hubs": 2, "edge_prob": 0.15}),
    ("train", {"edge_prob": 0.6, "min_nodes": 2, "max_nodes": 12}),
]


@pytest.mark.parametrize("rng_name,params", CONFIGS)
def test_order_and_features_match_networkx(rng_name, params):
    task = make_task("toposort", range=rng_name, **params)
    for ex in task.generate(150, seed=3):
        g, nodes, edges, out = graph_of(task, ex)
        assert nx.is_directed_acyclic_graph(g)
        assert len(set(nodes)) == len(nodes) == ex.size
        assert len(set(edges)) == len(edges)
        assert sorted(out, key=RANK.get) == sorted(nodes, key=RANK.get)
        pos = {v: i for i, v in enumerate(out)}
        assert all(pos[a] < pos[b] for a, b in edges)  # a valid topological order
        assert out == list(nx.lexicographical_topological_sort(g, key=RANK.get))
        # scored tokens are exactly the output order
        assert [task.vocab.itos[ex.tokens[i]] for i in ex.scored] == out
        assert ex.scored == list(range(len(ex.tokens) - len(out), len(ex.tokens)))
        for rec, want, i in zip(ex.features, reference_records(g, out), ex.scored):
            assert rec["position"] == i
            assert {k: rec[k] for k in want} == want
            assert set(rec) == set(ToposortTask.feature_names())


@pytest.mark.parametrize("rng_name,params", CONFIGS[:2])
def test_floor_matches_a_frontier_guesser(rng_name, params):
    """The floor is the accuracy of a reader simulated on the rendered text that knows which nodes
    are available (every predecessor already output) and guesses one of them uniformly."""
    task = make_task("toposort", range=rng_name, **params)
    for ex in task.generate(100, seed=4):
        nodes, edges, out = ToposortTask.parse(task.render(ex))
        for t, (rec, want) in enumerate(zip(ex.features, out)):
            done = set(out[:t])
            available = {v for v in nodes if v not in done and all(a in done for a, b in edges if b == v)}
            assert want in available
            assert ToposortTask.floor(rec) == 1 / len(available)
            assert ToposortTask.multi_step(rec) == (len(available) > 1)


def test_extremes_edge_prob_zero_and_one():
    empty = ToposortTask(edge_prob=0.0, mean_degree=0.0, max_hubs=0)
    for ex in empty.generate(30, seed=0):
        _, nodes, edges, out = graph_of(empty, ex)
        assert edges == [] and out == sorted(nodes, key=RANK.get)
        assert [r["frontier_size"] for r in ex.features] == list(range(ex.size, 0, -1))
    chain = ToposortTask(edge_prob=1.0, mean_degree=0.0, max_hubs=0, max_difficulty=0)
    for ex in chain.generate(30, seed=0):
        assert [r["frontier_size"] for r in ex.features] == [1] * ex.size
        assert [r["level"] for r in ex.features] == list(range(ex.size))
        # a complete DAG: the DFS from its single source first descends to the smallest label
        assert [r["dfs_depth"] for r in ex.features][:2] == [0, 1]


def test_planted_hubs_have_high_degree():
    # hub_prob = 1: a hub is joined to every other node, whatever the base density
    task = ToposortTask(min_hubs=1, max_hubs=2, hub_prob=1.0, edge_prob=0.1)
    for ex in task.generate(100, seed=1):
        hubs = [r for r in ex.features if r["is_hub"]]
        assert 1 <= len(hubs) <= 2
        assert all(r["in_degree"] + r["out_degree"] == ex.size - 1 for r in hubs)
    # default training range: hubs clearly above the others on average, and no hubs when off
    deg = {0: [], 1: []}
    for ex in make_task("toposort").generate(400, seed=2):
        assert sum(r["is_hub"] for r in ex.features) <= 1
        for r in ex.features:
            deg[r["is_hub"]].append(r["in_degree"] + r["out_degree"])
    assert statistics.mean(deg[1]) > 1.8 * statistics.mean(deg[0])
    no_hubs = ToposortTask(max_hubs=0)
    assert all(r["is_hub"] == 0 for ex in no_hubs.generate(50, seed=0) for r in ex.features)


@pytest.mark.parametrize("n_labels", [16, 32])
def test_labels_are_relabelled_from_the_whole_pool(n_labels):
    task = make_task("toposort", n_labels=n_labels)
    exs = task.generate(300, seed=5)
    parsed = [ToposortTask.parse(task.render(ex)) for ex in exs]
    assert {w for nodes, _, _ in parsed for w in nodes} == set(LABELS[:n_labels])
    # the answer is not simply the ascending label order of the node list
    not_sorted = sum(out != sorted(nodes, key=RANK.get) for nodes, _, out in parsed)
    assert not_sorted > 0.5 * len(exs)


@pytest.mark.parametrize("rng_name", ["train", "extrap"])
def test_difficulty_zero_exactly_where_the_smallest_pending_label_is_right(rng_name):
    """A reader simulated on the rendered text that outputs the smallest label not yet output (no
    frontier computed) is right exactly on the difficulty-0 outputs."""
    task = make_task("toposort", range=rng_name)
    seen = set()
    for ex in task.generate(100, seed=5):
        nodes, edges, out = ToposortTask.parse(task.render(ex))
        for t, (rec, want) in enumerate(zip(ex.features, out)):
            guess = min((v for v in nodes if v not in out[:t]), key=RANK.get)
            assert (guess == want) == (rec["difficulty"] == 0)
            seen.add(rec["difficulty"] == 0)
    assert seen == {True, False}


def test_ranges_lengths_and_determinism():
    train, extrap = make_task("toposort"), make_task("toposort", range="extrap")
    assert train.vocab.itos == extrap.vocab.itos
    tr, ex = train.generate(300, seed=0), extrap.generate(300, seed=0)
    assert {e.size for e in tr} == set(range(6, 11)) and min(e.size for e in ex) > max(e.size for e in tr)
    assert max(len(e.tokens) for e in tr) <= 110
    assert [e.to_json() for e in train.generate(20, seed=7)] == [e.to_json() for e in train.generate(20, seed=7)]
    assert [e.tokens for e in train.generate(20, seed=7)] != [e.tokens for e in train.generate(20, seed=8)]
    b = collate(tr[:8], ToposortTask.feature_names())
    assert b.loss_mask.sum().item() == sum(e.size for e in tr[:8])
    assert (b.features["smaller_blocked"][b.loss_mask] == b.difficulty[b.loss_mask].float()).all()


@pytest.mark.parametrize(
    "params,match",
    [
        ({"min_nodes": 1}, r"min_nodes = 1 .*\[2, 32\]"),
        ({"max_nodes": 33}, r"max_nodes = 33 .*\[6, 32\]"),
        ({"min_nodes": 6, "max_nodes": 5}, r"max_nodes = 5 .*\[6, 32\]"),
        ({"edge_prob": 1.5}, r"edge_prob = 1.5 .*\[0.0, 1.0\]"),
        ({"hub_prob": -0.1}, r"hub_prob = -0.1 .*\[0.0, 1.0\]"),
        ({"min_hubs": 2, "max_hubs": 1}, r"max_hubs = 1 .*\[2, 6\]"),
        ({"max_hubs": 7}, r"max_hubs = 7 .*\[0, 6\]"),
        ({"min_hubs": -1}, r"min_hubs = -1 .*\[0, 6\]"),
        ({"n_labels": 7}, r"n_labels = 7 .*\[10, 32\]"),
        ({"max_nodes": 20}, r"n_labels = 16 .*\[20, 32\]"),
        ({"nodes": 3}, r"unknown key"),
        ({"edge_prob": "high"}, r"edge_prob"),
    ],
)
def test_bad_config_raises(params, match):
    with pytest.raises(ValueError, match=match):
        ToposortTask(**params)
