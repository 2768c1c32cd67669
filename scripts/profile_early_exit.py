"""Where the time of one inference forward goes, by part of the model (torch.profiler, CPU).

Profiles ``model(ids, exit="exit")`` of a ``random``-mechanism ANIRA model whose depths are drawn
from ``--depth-probs`` (a histogram over 1..S) or from the two-point distribution of mean
``--depth``, against the dense pass at max depth, at the study's model size by default (d 128,
4 heads, d_ff 4 d, S = 6, no prelude or coda in the loop; batch 32 of 60 tokens, the `hops` eval
batch), and prints the share of CPU time in each labelled region: the embedding + prelude, the
dense loop steps, the coda + head. The regions are ``record_function`` labels in a subclass of the
model (``LabelledModel``).

    python scripts/profile_early_exit.py --depth-probs 0.933,0.033,0.016,0.013,0.005,0   # oracle-like
    python scripts/profile_early_exit.py --depth 4 --rows 15
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.analysis.speed import dense_forward  # noqa: E402
from anira.model import AniraModel, ModelConfig  # noqa: E402


def label_forward(module: torch.nn.Module, name: str) -> None:
    """Every ``module(...)`` call (a full, dense step of the block) inside a ``record_function``
    label, through forward hooks: the module and its numbers are unchanged."""
    def enter(m, args):
        m._label = record_function(name)
        m._label.__enter__()

    def leave(m, args, out):
        m._label.__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


class LabelledModel(AniraModel):
    """AniraModel with ``record_function`` labels around its embedding, its block's dense steps
    and its read-out; the same weights and numbers as AniraModel."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        label_forward(self.core, "loop step (dense)")

    def embed(self, input_ids):
        with record_function("embed+prelude"):
            return super().embed(input_ids)

    def readout(self, *a, **k):
        with record_function("coda+head"):
            return super().readout(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=float, default=1.0, help="mean depth of the random mechanism (two-point)")
    ap.add_argument("--depth-probs", default=None, help="comma-separated depth histogram over 1..S (overrides --depth)")
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=60)
    ap.add_argument("--n-prelude", type=int, default=0)
    ap.add_argument("--n-coda", type=int, default=0)
    ap.add_argument("--rows", type=int, default=12, help="operators listed")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if a.depth_probs:
        probs = tuple(float(x) for x in a.depth_probs.split(","))
        probs = tuple(p / sum(probs) for p in probs)
        depths = dict(random_depth_probs=probs)
    else:
        depths = dict(random_mean_depth=a.depth)
    cfg = ModelConfig(vocab_size=64, max_len=a.seq_len, max_depth=a.max_depth, mechanism="random",
                      d_model=a.d_model, d_ff=4 * a.d_model, n_prelude=a.n_prelude, n_coda=a.n_coda, **depths)
    model = LabelledModel(cfg).eval()
    ids = torch.randint(0, 64, (a.batch, a.seq_len))
    gen = torch.Generator()

    def run_exit():
        gen.manual_seed(0)  # the same depth draws in every repeat
        return model(ids, exit="exit", generator=gen)

    with torch.no_grad():
        mean = float(run_exit().block_calls.float().mean())  # warm-up
        for name, call in (("exit", run_exit), ("dense", lambda: dense_forward(model, ids))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(a.repeats):
                    with record_function(f"forward ({name})"):
                        call()
            events = {e.key: e for e in prof.key_averages()}
            total = events[f"forward ({name})"].cpu_time_total
            print(f"\n== {name}, mean depth {mean:.3f} of {a.max_depth}: {total / a.repeats / 1e3:.1f} ms per forward")
            for region in ("embed+prelude", "loop step (dense)", "coda+head"):
                if region in events:
                    t = events[region].cpu_time_total
                    print(f"  {region:<20} {t / a.repeats / 1e3:8.1f} ms  {100 * t / total:5.1f} %")
            print("  (exit: the loop's per-token steps are the rest: gather, subset attention, scatter)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
