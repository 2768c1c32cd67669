"""Where the time of one inference forward goes, by part of the model (torch.profiler, CPU).

Profiles ``model(ids, exit="exit")`` of a ``random``-mechanism ANIRA model with every token at
depth ``--depth`` (two-point distribution on one value), against the dense pass at max depth, for
the benchmark's shapes (batch 64, 100 tokens, d 128, 4 heads, d_ff 512, S = 8), and prints the
share of self CPU time in each labelled region: the embedding + prelude, the recurrent loop, the
coda + head. The regions are ``record_function`` labels in a subclass of the model (``LabelledModel``).

    python scripts/profile_early_exit.py --depth 1
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
from anira.model import AniraModel, ModelConfig, RecurrentBlock  # noqa: E402


class LabelledBlock(RecurrentBlock):
    """The library's block, each full (dense) step inside a ``record_function`` label."""

    def forward(self, *a, **k):
        with record_function("loop step (dense)"):
            return super().forward(*a, **k)


class LabelledModel(AniraModel):
    """AniraModel with ``record_function`` labels around its embedding and read-out, and the
    labelled block (``AniraModel.make_core``); the same weights and numbers as AniraModel."""

    def make_core(self, cfg: ModelConfig) -> RecurrentBlock:
        return LabelledBlock(cfg)

    def embed(self, input_ids):
        with record_function("embed+prelude"):
            return super().embed(input_ids)

    def readout(self, *a, **k):
        with record_function("coda+head"):
            return super().readout(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=float, default=1.0, help="mean depth of the random mechanism")
    ap.add_argument("--max-depth", type=int, default=8)
    ap.add_argument("--rows", type=int, default=12, help="operators listed")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, max_len=128, max_depth=a.max_depth, mechanism="random",
                      random_mean_depth=a.depth, pos_encoding="rope")
    model = LabelledModel(cfg).eval()
    ids = torch.randint(0, 64, (64, 100))
    with torch.no_grad():
        model(ids, exit="exit")  # warm-up
        for name, call in (("exit", lambda: model(ids, exit="exit")), ("dense", lambda: dense_forward(model, ids))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(a.repeats):
                    with record_function(f"forward ({name})"):
                        call()
            events = {e.key: e for e in prof.key_averages()}
            total = events[f"forward ({name})"].cpu_time_total
            print(f"\n== {name}, mean depth {a.depth:g} of {a.max_depth}: {total / a.repeats / 1e3:.1f} ms per forward")
            for region in ("embed+prelude", "loop step (dense)", "coda+head"):
                if region in events:
                    t = events[region].cpu_time_total
                    print(f"  {region:<20} {t / a.repeats / 1e3:8.1f} ms  {100 * t / total:5.1f} %")
            print("  (exit: the loop's per-token steps are the rest: gather, subset attention, scatter)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
