"""`toposort`: lexicographically smallest topological order of a random DAG.

Sequence (one example, n nodes, m edges):
    <bos> v_1 ... v_n : a > b c > d ... = o_1 o_2 ... o_n
The node list v (shuffled) is given so that isolated nodes are visible; each edge triple
``a > b`` (shuffled order) says ``a`` must come before ``b``. The scored tokens are the n output
nodes ``o``, the unique lexicographically smallest topological order, where "smaller" means a
lower index in the fixed label pool ``n0 < n1 < ... < n31`` (Kahn's algorithm with a min-heap):

    F_t = {v not emitted : every predecessor of v is in o_1..o_{t-1}}       (the frontier)
    o_t = min F_t

Generator: n nodes in a hidden random order 0..n-1; each pair i < j gets the edge i -> j with
probability ``edge_prob``; ``n_hubs`` planted hubs get an edge to or from every other node with
probability ``hub_prob`` (direction from the hidden order, so the graph stays acyclic). Labels
are then drawn at random from the pool, so the label order is unrelated to the hidden order.
With ``mean_degree`` > 0 (the default, 1.75) the pair probability is mean_degree / (n - 1), so
every size has the same expected degree and size is the only shift out of range (``edge_prob`` is
per pair: with it, larger graphs are also denser, as in the second study's design, whose 11-16-node
extrapolation graphs had mean degree 4.2 against 2.2 in range).

Ranges: training draws 6-10 nodes and redraws a graph whose order has a step with more than 4
``smaller_blocked`` nodes (``max_difficulty``); extrapolation draws 11-16 nodes at the same mean
degree and the same hubs, uncapped, so about a tenth of its steps need 5-15 checks: a reader that
rules out at most 4 candidates per step is exact in range and near its guessing floor there
(``bounded_reader``; anira.data.certify).

Ground-truth complexity (``difficulty``) of output step t is ``smaller_blocked``: the nodes not
yet output whose label is smaller than o_t. Each is blocked (it has a predecessor not yet output,
else it would be o_t), and a reader that takes the smallest label not yet output -- one lookup per
candidate, no frontier computed -- is right exactly when there is none. Choosing o_t by a
smallest-first scan means ruling out these ``smaller_blocked`` candidates, each by finding one of
its predecessors still pending. Why not the frontier size |F_t| (the difficulty of the earlier
design, still recorded): on the 6-10-node design a fixed-depth-1 model's accuracy *rises* with
|F_t| (0.73 at |F_t| = 1, 0.94 at >= 5: with many nodes available, the smallest pending label is
almost always one of them) and falls with ``smaller_blocked`` (0.90 at 0, 0.75 / 0.63 / 0.55 at
1 / 2 / 3, 0.47 at >= 4; README, "Learning the other tasks"). That choice was made after seeing a
depth-1 model's errors, so the frontier size stays recorded beside it for the analyses to test.

Per output token (emitted node v at step t = 0..n-1), with its class by the rule of
``anira.tasks.features`` (the table ``ToposortTask.features``; docs/features.md):
  static  n_nodes, n_edges, in_degree(v), out_degree(v), is_hub(v) (1 if planted as a hub),
          level(v) = length of the longest path from any source to v (sources: 0),
          dfs_depth = depth of v in the depth-first forest that starts from the sources in
              ascending label order and visits successors in ascending label order (a node's
              depth is fixed when first discovered; roots have depth 0): the structural DFS
              depth, fixed by the input graph whatever the output order
  label   smaller_blocked = nodes not yet output with a smaller label than o_t (the difficulty)
  dynamic frontier_size = |F_t| (>= 1),
          newly_enabled = nodes whose last unemitted predecessor was o_{t-1} (0 at t = 0),
          exec_depth (derived by the analysis) = depth of v in the forest the execution grows,
              each node released by its last emitted predecessor: the algorithm-state version
              of the DFS depth the paper names
  progress remaining = n - t (nodes not yet emitted, v included)
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from anira.config import check_range
from anira.tasks.base import BOS_ID, Example, Task, Vocab
from anira.tasks.features import Feature, common

N_LABELS = 32  # size of the node-label pool; fixes the vocabulary for every config
LABELS = tuple(f"n{i}" for i in range(N_LABELS))
SEP_NODES, ARROW, SEP_OUT = ":", ">", "="


@dataclass
class ToposortConfig:
    min_nodes: int = 6  # size range (number of nodes): large enough that one step does not suffice
    max_nodes: int = 10  # sequence <= ~100 tokens at edge_prob 0.25
    edge_prob: float = 0.25  # P(i -> j) per pair in the hidden order: controls density
    mean_degree: float = 1.75  # > 0: P(i -> j) = mean_degree / (n - 1) instead of edge_prob: the same density at every size
    max_difficulty: int = 4  # > 0: graphs with a step of more smaller_blocked nodes are redrawn (training: 4)
    min_hubs: int = 0  # planted hubs per graph, drawn uniformly in [min_hubs, max_hubs]:
    max_hubs: int = 1  # hub structure is a controlled factor (static cue for early decisions)
    hub_prob: float = 0.8  # P(edge between a hub and each other node); > edge_prob makes hubs
    n_labels: int = 16  # labels are drawn from the first n_labels of the pool: fewer = each seen more often


# Why 16 labels, not all 32: the minimum of a frontier needs the order of the labels, which the
# model learns from the examples it sees them in. From 16 (still enough for the largest
# extrapolation graph) every label occurs in twice as many examples, and the same model learns the
# task faster: training accuracy 0.75 against 0.63 at step 500 (README, "Learning the other
# tasks"). The designs of the first study (all 32 labels, 4-8 nodes, difficulty = frontier size) are in
# the git history (README, "Earlier studies").
# The second `cpu` reference study's design (commit 18ea01f; the toposort learning diagnostic in
# data/results/toposort_diagnostic was scored on it): a per-pair edge probability, so the 11-16-node
# extrapolation graphs were about twice as dense (and had up to 2 hubs).
STUDY2_DESIGN = dict(min_nodes=6, max_nodes=10, edge_prob=0.25, mean_degree=0.0, min_hubs=0, max_hubs=1, hub_prob=0.8,
                     n_labels=16, max_difficulty=0)
STUDY2_EXTRAP = dict(STUDY2_DESIGN, min_nodes=11, max_nodes=16, max_hubs=2)


class ToposortTask(Task):
    name = "toposort"
    Config = ToposortConfig
    # Every feature's class by the rule of anira.tasks.features (docs/features.md); static = unchanged
    # for a node when the same graph's nodes are output in another valid order
    features = common(size="number of nodes", position="sequence index of the output = prompt length + output "
                                                        "step: layout plus progress",
                      difficulty="smaller_blocked (docstring)") + (
        Feature("n_nodes", "static", "nodes of the input graph (= size)"),
        Feature("n_edges", "static", "edges of the input graph"),
        Feature("in_degree", "static", "predecessors of the emitted node in the input graph"),
        Feature("out_degree", "static", "successors of the emitted node in the input graph"),
        Feature("is_hub", "static", "the emitted node was planted as a hub (a controlled factor of the generator)"),
        Feature("level", "static", "longest path from a source to the emitted node in the input graph"),
        Feature("smaller_blocked", "label", "= difficulty"),
        Feature("frontier_size", "dynamic", "nodes available at this step (Kahn's heap)"),
        Feature("newly_enabled", "dynamic", "nodes the previous emission made available"),
        Feature("dfs_depth", "static", "structural DFS depth: the emitted node's depth in a fixed DFS forest of the "
                                       "input graph, the same whatever the output order (exec_depth is the "
                                       "algorithm-state version)"),
        Feature("remaining", "progress", "outputs remaining, n - t"),
        Feature("exec_depth", "dynamic", "algorithm-state depth: the emitted node's depth in the forest the "
                                         "execution grows (released by its last emitted predecessor)",
                derived="the evaluation example (anira.tasks.features.toposort_exec_depths)"),
    )
    # halting waits for 0.90 training accuracy, not 0.95: fixed depth 6 itself tops out at 0.94 in
    # 2,000 steps (about 21 CPU-minutes), so a 0.95 gate would never open and early/online would
    # stay two full-depth models; ds_power 2 as on `addition` (README)
    adaptive_recipe = {"ds_power": 2.0, "ds_until_acc": 0.9}
    size_name = "number of nodes"
    difficulty_name = "pending nodes with a smaller label that a smallest-first scan must rule out"
    floor_reader = "knows which nodes are available (the frontier) and guesses one of them"

    @classmethod
    def floor(cls, records):
        """Frontier guesser: o_t is one of the |F_t| available nodes, so a uniform guess among
        them is right with probability ``1 / frontier_size`` (1 when only one node is available).
        Finding the minimum among them is the step it leaves out."""
        return 1.0 / records["frontier_size"]

    @classmethod
    def train_config(cls) -> ToposortConfig:
        return ToposortConfig()

    @classmethod
    def extrap_config(cls) -> ToposortConfig:
        # more nodes at the same mean degree and hubs; no cap, so steps need up to 15 smaller_blocked checks
        return ToposortConfig(min_nodes=11, max_nodes=16, max_difficulty=0)

    def validate(self) -> None:
        c = self.config
        check_range("min_nodes", c.min_nodes, 2, N_LABELS)
        check_range("max_nodes", c.max_nodes, c.min_nodes, N_LABELS)
        check_range("edge_prob", c.edge_prob, 0.0, 1.0)
        check_range("hub_prob", c.hub_prob, 0.0, 1.0)
        check_range("mean_degree", c.mean_degree, 0.0, float(N_LABELS - 1), "0 (use edge_prob) or a mean degree; P(edge) is capped at 1")
        check_range("min_hubs", c.min_hubs, 0, c.min_nodes)
        check_range("max_hubs", c.max_hubs, c.min_hubs, c.min_nodes)
        check_range("n_labels", c.n_labels, c.max_nodes, N_LABELS)
        check_range("max_difficulty", c.max_difficulty, 0, N_LABELS, "0 (no cap) or the most smaller_blocked nodes kept")

    @classmethod
    def build_vocab(cls) -> Vocab:
        return Vocab(list(LABELS) + [SEP_NODES, ARROW, SEP_OUT])

    # ------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Example:
        return self.redraw_over_cap(self._sample_once, rng)

    def _sample_once(self, rng: random.Random) -> Example:
        c = self.config
        rand = rng.random
        n = rng.randint(c.min_nodes, c.max_nodes)
        n_hubs = rng.randint(c.min_hubs, c.max_hubs)
        hubs = set(rng.sample(range(n), n_hubs)) if n_hubs else set()
        # edges in the hidden order i < j (acyclic by construction)
        p, ph = (min(1.0, c.mean_degree / max(n - 1, 1)) if c.mean_degree else c.edge_prob), c.hub_prob
        succ: list[list[int]] = [[] for _ in range(n)]
        pred: list[list[int]] = [[] for _ in range(n)]
        edges: list[tuple[int, int]] = []
        for i in range(n):
            hi = i in hubs
            for j in range(i + 1, n):
                q = ph if (hi or j in hubs) else p
                if rand() < q:
                    succ[i].append(j)
                    pred[j].append(i)
                    edges.append((i, j))
        labels = rng.sample(range(c.n_labels), n)  # hidden node -> label index (its rank)
        m = len(edges)

        # level: longest path from a source, in the hidden (topological) order
        level = [0] * n
        for j in range(n):
            for i in pred[j]:
                if level[i] + 1 > level[j]:
                    level[j] = level[i] + 1

        # Kahn with a min-heap on labels
        indeg = [len(pr) for pr in pred]
        heap = [(labels[v], v) for v in range(n) if indeg[v] == 0]
        heapq.heapify(heap)
        order: list[int] = []
        smaller_blocked: list[int] = []  # pending nodes with a smaller label than the one output
        frontier: list[int] = []
        newly: list[int] = []
        enabled = 0
        while heap:
            frontier.append(len(heap))
            newly.append(enabled)
            _, v = heapq.heappop(heap)
            smaller_blocked.append(sum(labels[w] < labels[v] for w in range(n) if indeg[w] > 0))
            order.append(v)
            enabled = 0
            for w in succ[v]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(heap, (labels[w], w))
                    enabled += 1

        # DFS forest from sources in label order, successors in label order
        depth = [-1] * n
        sorted_succ = [sorted(s, key=labels.__getitem__) for s in succ]
        for r in sorted((v for v in range(n) if not pred[v]), key=labels.__getitem__):
            depth[r] = 0
            stack = [(r, iter(sorted_succ[r]))]
            while stack:
                u, it = stack[-1]
                for w in it:
                    if depth[w] < 0:
                        depth[w] = depth[u] + 1
                        stack.append((w, iter(sorted_succ[w])))
                        break
                else:
                    stack.pop()

        # tokens
        off = 2  # label index k has token id k + 2 (after <pad>, <bos>)
        ids = [BOS_ID]
        nodes = list(range(n))
        rng.shuffle(nodes)
        ids.extend(labels[v] + off for v in nodes)
        ids.append(_ID_SEP_NODES)
        rng.shuffle(edges)
        for i, j in edges:
            ids += (labels[i] + off, _ID_ARROW, labels[j] + off)
        ids.append(_ID_SEP_OUT)
        start = len(ids)
        ids.extend(labels[v] + off for v in order)

        scored = list(range(start, start + n))
        feats = [
            {
                "difficulty": smaller_blocked[t],
                "size": n,
                "position": start + t,
                "is_answer": 1,
                "n_nodes": n,
                "n_edges": m,
                "in_degree": len(pred[v]),
                "out_degree": len(succ[v]),
                "is_hub": 1 if v in hubs else 0,
                "level": level[v],
                "smaller_blocked": smaller_blocked[t],
                "frontier_size": frontier[t],
                "newly_enabled": newly[t],
                "dfs_depth": depth[v],
                "remaining": n - t,
            }
            for t, v in enumerate(order)
        ]
        return Example(tokens=ids, scored=scored, features=feats, size=n)

    def bounded_reader(self, words: list[str], k: int) -> list[float]:
        """Kahn's smallest-first choice with at most k checks per output step: it walks the nodes
        not yet output in ascending label order and rules out each blocked one (a predecessor not
        yet output) with one check; the first unblocked one it reaches within k checks is the
        answer. Out of checks, it guesses uniformly among the pending nodes it has not ruled out.
        (Earlier outputs are read off the text for free.)"""
        nodes, edges, out = self.parse(words)
        rank = {w: LABELS.index(w) for w in nodes}
        pred: dict[str, set[str]] = {v: set() for v in nodes}
        for a, b in edges:
            pred[b].add(a)
        done: set[str] = set()
        res = []
        for answer in out:
            pending = sorted((v for v in nodes if v not in done), key=rank.__getitem__)
            blocked = 0
            for v in pending:
                if not pred[v] - done:
                    break
                blocked += 1
            if blocked <= k:
                res.append(float(v == answer))
            else:
                rest = pending[k:]
                res.append((answer in rest) / len(rest))
            done.add(answer)
        return res

    # ------------------------------------------------------------------------------------
    @staticmethod
    def parse(words: list[str]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
        """Split a rendered example into (nodes, edges, output order); for tests and notebooks."""
        i_nodes, i_out = words.index(SEP_NODES), words.index(SEP_OUT)
        nodes = words[1:i_nodes]
        body = words[i_nodes + 1 : i_out]
        edges = [(body[k], body[k + 2]) for k in range(0, len(body), 3)]
        return nodes, edges, words[i_out + 1 :]


_V = ToposortTask.build_vocab()
_ID_SEP_NODES, _ID_ARROW, _ID_SEP_OUT = (_V.stoi[w] for w in (SEP_NODES, ARROW, SEP_OUT))
assert all(_V.stoi[w] == k + 2 for k, w in enumerate(LABELS))
