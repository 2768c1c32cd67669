"""CPU seconds per training step on `hops`, one thread: the reference plain looped Transformer
against the library's recipe (``fixed`` at max depth, and ``online`` under the PonderNet
objective), measured in one run on the same batches, with the ratios.

The plain loop is the reference probe's model: one ``nn.TransformerEncoderLayer`` (pre-norm, d 128,
4 heads, ReLU, d_ff 512), h = block(h + e) six times, learned positions, a linear head, AdamW.

    python scripts/step_cpu_time.py --steps 60
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.losses import PonderLoss, task_loss  # noqa: E402
from anira.tasks import collate, make_task  # noqa: E402
from anira.train import RunConfig, build, make_optimizer  # noqa: E402


def plain_step(task, d: int = 128, depth: int = 6):
    V = len(task.vocab)
    emb, pos = nn.Embedding(V, d), nn.Embedding(256, d)
    block = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
    head = nn.Linear(d, V)
    params = [p for m in (emb, pos, block, head) for p in m.parameters()]
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=0.01)

    def step(b):
        x = b.input_ids
        L = x.shape[1]
        e = emb(x) + pos(torch.arange(L))
        mask = nn.Transformer.generate_square_subsequent_mask(L)
        h = e
        for _ in range(depth):
            h = block(h + e, src_mask=mask, is_causal=True)
        y = torch.where(b.loss_mask, b.targets, -100)
        loss = F.cross_entropy(head(h).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def recipe_step(mechanism: str):
    cfg = RunConfig(mechanism=mechanism, num_threads=1, progress=False)
    _, model = build(cfg)
    opt, sched = make_optimizer(model, cfg)
    ponder = PonderLoss(cfg.loss_config(), cfg.max_depth)
    model.train()

    def step(b):
        if mechanism == "fixed":
            out = model(b.input_ids, exit="masked", readout_rows=b.loss_mask)
            loss = task_loss(out.logits, b.targets, b.loss_mask)
        else:  # past the warm-up: the full objective
            out = model(b.input_ids, exit="dense", readout_rows=b.loss_mask)
            loss = ponder(out.step_logits, out.p_n, b.targets, b.loss_mask, cfg.steps, start=0).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per model (after 10 untimed)")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.batch_size < 1:
        ap.error(f"--steps = {a.steps} and --batch-size = {a.batch_size} must be >= 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task, rng = make_task("hops"), random.Random(0)
    batches = [collate([task.sample(rng) for _ in range(a.batch_size)], feature_names=["difficulty"])
               for _ in range(a.steps + 10)]
    cpu = {}
    for name, step in (("plain loop", plain_step(task)), ("recipe fixed 6", recipe_step("fixed")),
                       ("recipe online", recipe_step("online"))):
        for b in batches[:10]:
            step(b)
        c0 = time.process_time()
        for b in batches[10:]:
            step(b)
        cpu[name] = (time.process_time() - c0) / a.steps
    for name, s in cpu.items():
        print(f"{name:15s} {s:.3f} CPU s/step   x{s / cpu['plain loop']:.2f} of the plain loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
