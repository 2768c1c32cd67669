"""Learning probe for `hops`: where does multi-hop composition fail?

Trains a `fixed`-depth ANIRA backbone on `hops` and prints, every ``--eval-every`` steps, the
accuracy on the first 512 frozen in-range examples per hop count *and per loop step* (each step's
read-out through the coda), so one sees which step answers which hop count. Options vary one thing
at a time against the library's earlier block (adapter re-injection, step signal, N(0, 0.02) init:
the one its patches and the issue notes were written for; the current recipe's runs go through
`python -m anira.train` and scripts/learning_diagnostic.py):

    --ds W            loss = (1 - W) * CE(last step) + W * mean_n CE(step n)   (W = 1: deep supervision)
    --tilt S:T,...    hops' hop_tilt by step (P(h) ~ h**T; -3 = 85 % 1-hop queries), e.g. 0:-3,500:0
    --switch S:JSON   other task parameters from step S on, e.g. '400:{"min_hops": 2, "max_hops": 2}'
    --stages S:JSON|S:JSON|...   task parameters by stage (instead of --tilt and --switch)
    --arch plain      no input re-injection (z = h instead of W_a [h ; e])
    --ov-init A       the shared block's value/output projections start at A * identity (a copy circuit)
    --conv-init A     the causal conv's taps on earlier tokens start as A * random orthogonal maps
    --gate B          a forget gate on the recurrent state, h = LN_s((1 - g) z + sigma + attn + MLP),
                      g = sigmoid(W_g LN_2 b), bias initialised to B (a state that can replace a pointer)
    --kv-memory       the loop's keys/values from the prelude output e, fixed over the steps (a
                      control; real early exit would then not match the dense path)
    --untied          a separate block per loop step: an ordinary deep Transformer, the control that
                      says whether weight sharing is what stops learning (dense mode only)
    --no-state-norm   no LayerNorm on e and on the state after each step (a pre-norm residual loop)
    --plain-core      the shared block is a plain pre-norm Layer: h^n = Layer(h^{n-1}) (a control)
    --core-layers K   the shared block is K layers (the recurrent block, then K-1 plain Layers), as in Huginn
    --all-queries     training prompts query every variable (more answers per example; eval unchanged)
    --coda-mlp-only   the coda's attention is switched off (W_o = 0, frozen), so every lookup must be in the loop
    --pos learned     learned absolute positions instead of RoPE
    --n-prelude/--n-coda, --lr, --batch-size, --depth, --d-model, --d-ff

The block variants are ``ProbeBlock`` (a ``RecurrentBlock`` overriding its documented pieces) and
the small cores below it, installed by ``ProbeModel`` through ``AniraModel.make_core``; every
block starts from the library's init (``init="gpt2"``, the adapter's z = h + e start).

``--diagnose`` instead loads the weights saved by a finished probe and prints, for 1-3-hop
queries, the largest per-head attention weight of the answer token at each loop step on the
right-hand side of each assignment along its chain (hop 1 = the queried variable's own assignment).
Pass the probe's own ``--arch`` and ``--n-prelude``/``--n-coda``/``--depth`` again with ``--diagnose``.

    python scripts/hops_probe.py --out /tmp/N --steps 2000 --ds 0 --ov-init 1 --tilt 0:-3,500:0
    python scripts/hops_probe.py --out /tmp/N --diagnose

One thread; about 0.4 s per step with two probes side by side on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anira.data import load_eval_set  # noqa: E402
from anira.model import AniraModel, Layer, ModelConfig, RecurrentBlock, step_embedding  # noqa: E402
from anira.tasks import make_task  # noqa: E402
from anira.tasks.base import collate  # noqa: E402


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the log (probe.jsonl) and the weights (model.pt)")
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--ds", type=float, default=1.0)
    ap.add_argument("--tilt", default="")
    ap.add_argument("--switch", default="")
    ap.add_argument("--stages", default="",
                    help="task parameters by step, 'S:JSON|S:JSON|...' (replaces --tilt/--switch), e.g. "
                         "'0:{\"max_vars\": 4, \"max_hops\": 2}|1000:{}'")
    ap.add_argument("--arch", choices=("anira", "plain"), default="anira")
    ap.add_argument("--ov-init", type=float, default=0.0)
    ap.add_argument("--conv-init", type=float, default=0.0)
    ap.add_argument("--gate", type=float, default=None,
                    help="forget gate on the recurrent state with this bias init (None = plain residual)")
    ap.add_argument("--untied", action="store_true",
                    help="a separate block per loop step (an ordinary deep Transformer; a control, dense mode only)")
    ap.add_argument("--kv-memory", action="store_true",
                    help="the loop's keys/values come from the prelude output e, fixed over steps (breaks real early exit)")
    ap.add_argument("--no-state-norm", action="store_true",
                    help="ModelConfig.state_norm=False: no LayerNorm on e and on the state after each step")
    ap.add_argument("--plain-core", action="store_true",
                    help="the shared block is a plain pre-norm Layer (no re-injection, step signal or state norm)")
    ap.add_argument("--core-layers", type=int, default=1,
                    help="layers in the shared block: the recurrent block, then K-1 plain Layers (shared over steps)")
    ap.add_argument("--all-queries", action="store_true",
                    help="training examples query every variable of the prompt (a data augmentation; eval unchanged)")
    ap.add_argument("--coda-mlp-only", action="store_true",
                    help="the coda's attention output is fixed at zero (W_o = 0, frozen): lookups must happen in the loop")
    ap.add_argument("--pos", choices=("rope", "learned"), default="rope", help="ModelConfig.pos_encoding")
    ap.add_argument("--n-prelude", type=int, default=1)
    ap.add_argument("--n-coda", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--d-ff", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: two probes side by side on 2 cores)")
    a = ap.parse_args()
    if a.untied and (a.gate is not None or a.kv_memory):
        ap.error("--untied cannot be combined with --gate or --kv-memory (they change the shared block only)")
    if a.stages and (a.tilt or a.switch):
        ap.error("--stages replaces --tilt and --switch: give one or the other")
    if a.stages and not all(x.split(":", 1)[0].strip().isdigit() and ":" in x for x in a.stages.split("|")):
        ap.error(f"--stages = {a.stages!r}: allowed form is 'S:JSON|S:JSON|...' with integer steps S")
    if a.stages and int(a.stages.split(":", 1)[0]) != 0:
        ap.error(f"--stages = {a.stages!r}: the first stage must start at step 0")
    if a.threads < 1:
        ap.error(f"--threads = {a.threads}: allowed values are integers >= 1")
    if a.core_layers < 1:
        ap.error(f"--core-layers = {a.core_layers}: allowed values are integers >= 1")
    replaced = a.untied or a.plain_core or a.core_layers > 1
    if a.plain_core and (a.untied or a.core_layers > 1 or a.gate is not None or a.kv_memory):
        ap.error("--plain-core replaces the recurrent block: "
                 "it cannot be combined with --untied, --core-layers, --gate or --kv-memory")
    if a.core_layers > 1 and (a.untied or a.gate is not None or a.kv_memory):
        ap.error("--core-layers cannot be combined with --untied, --gate or --kv-memory")
    if a.ov_init > 0 and replaced:
        ap.error("--ov-init sets the recurrent block's value/output projections: "
                 "not with --untied, --plain-core or --core-layers")
    if a.diagnose and replaced:
        ap.error("--diagnose reads the attention of the library's recurrent block: "
                 "not with --untied, --plain-core or --core-layers")
    return a


class ProbeBlock(RecurrentBlock):
    """The library's recurrent block with the probe's switches, as overrides of its documented
    pieces (``inputs``, ``finish``, ``forward``):

    * ``reinject=False`` (``--arch plain``): z = h, no input re-injection (the adapter is unused);
    * ``gate=B`` (``--gate``): h = LN_s((1 - g) z + sigma + attn + MLP(LN_2 b)), g = sigmoid(W_g LN_2 b),
      W_g = 0 and bias B at init (``init_gate``);
    * ``kv_memory=True`` (``--kv-memory``): queries from the state, keys/values from LN_1(e) at every
      step (dense mode only: real early exit reads keys/values from the state).
    """

    def __init__(self, cfg: ModelConfig, reinject: bool = True, gate: float | None = None, kv_memory: bool = False):
        super().__init__(cfg)
        self.reinject, self.kv_memory, self.gate_bias = reinject, kv_memory, gate
        self.gate = torch.nn.Linear(cfg.d_model, cfg.d_model) if gate is not None else None

    def init_gate(self) -> None:
        """W_g = 0, bias = B: the gate starts at g = sigmoid(B) everywhere (after the model's init)."""
        if self.gate is not None:
            torch.nn.init.zeros_(self.gate.weight)
            torch.nn.init.constant_(self.gate.bias, self.gate_bias)

    def inputs(self, h, e, u=None):
        return super().inputs(h, e, u) if self.reinject else h

    def finish(self, z, attn_out, n):
        if self.gate is None:
            return super().finish(z, attn_out, n)
        sig = self.step_proj(step_embedding(n, z.shape[-1], z.device))
        b = z + attn_out + sig
        x = self.ln2(b)
        g = torch.sigmoid(self.gate(x))
        return self.ln_state((1 - g) * z + sig + attn_out + self.mlp(x))

    def forward(self, h, e, n, pos, u=None, context=None):
        if not self.kv_memory:
            return super().forward(h, e, n, pos, u, context)
        z = self.inputs(h, e, u)
        q = self.attn.project_q(self.ln1(z), pos)
        k, v = self.attn.project_kv(self.ln1(e), pos)
        return self.finish(z, self.attn.attend(q, k, v), n)


class PlainCore(torch.nn.Module):
    """--plain-core: h^n = Layer(h^{n-1}), a weight-tied plain Transformer layer (dense mode)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layer = Layer(cfg)

    def inject(self, e):
        return None

    def forward(self, h, e, n, pos, u=None):
        return self.layer(h, pos)


class DeepCore(torch.nn.Module):
    """--core-layers K: h^n = Layer(...Layer(Block(h^{n-1}, e))), one shared K-layer block as in
    Huginn (dense mode)."""

    def __init__(self, cfg: ModelConfig, k: int):
        super().__init__()
        self.block, self.layers = RecurrentBlock(cfg), torch.nn.ModuleList(Layer(cfg) for _ in range(k - 1))

    def inject(self, e):
        return self.block.inject(e)

    def forward(self, h, e, n, pos, u=None):
        h = self.block(h, e, n, pos, u)
        for layer in self.layers:
            h = layer(h, pos)
        return h


class Untied(torch.nn.Module):
    """--untied: step n runs its own block, an ordinary deep Transformer (dense mode); u is
    recomputed per block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = torch.nn.ModuleList(RecurrentBlock(cfg) for _ in range(cfg.max_depth))

    def inject(self, e):
        return None

    def forward(self, h, e, n, pos, u=None):
        return self.blocks[n - 1](h, e, n, pos)


class ProbeModel(AniraModel):
    """AniraModel with the shared block chosen by the probe's options (``AniraModel.make_core``).
    Every block is initialised like the library's (``init``, the adapter's z = h + e start)."""

    def __init__(self, cfg: ModelConfig, a: argparse.Namespace):
        self.options = a  # read by make_core, which AniraModel.__init__ calls
        super().__init__(cfg)
        if isinstance(self.core, ProbeBlock):
            self.core.init_gate()

    def make_core(self, cfg: ModelConfig) -> torch.nn.Module:
        a = self.options
        if a.plain_core:
            return PlainCore(cfg)
        if a.core_layers > 1:
            return DeepCore(cfg, a.core_layers)
        if a.untied:
            return Untied(cfg)
        return ProbeBlock(cfg, reinject=a.arch != "plain", gate=a.gate, kv_memory=a.kv_memory)


def build(a: argparse.Namespace, vocab_size: int) -> AniraModel:
    torch.manual_seed(a.seed)
    cfg = ModelConfig(vocab_size=vocab_size, n_prelude=a.n_prelude, n_coda=a.n_coda, max_depth=a.depth,
                      d_model=a.d_model, d_ff=a.d_ff, pos_encoding=a.pos, mechanism="fixed",
                      state_norm=not a.no_state_norm, init="gpt2", reinject="adapter", step_signal=True)
    model = ProbeModel(cfg, a)
    D = cfg.d_model
    with torch.no_grad():
        if a.ov_init > 0:
            attn = model.core.attn
            attn.wv.weight.copy_(a.ov_init * torch.eye(D) + 0.02 * torch.randn(D, D))
            attn.wo.weight.copy_(torch.eye(D) + 0.02 * torch.randn(D, D))
        if a.conv_init > 0 and model.conv is not None:
            w = model.conv.weight  # (D_out, D_in, taps); the last tap is the current token
            for k in range(w.shape[2] - 1):
                w[:, :, k] = a.conv_init * torch.linalg.qr(torch.randn(D, D))[0]
            w[:, :, -1] = 0
    if a.coda_mlp_only:
        for layer in model.coda:
            layer.attn.wo.weight.data.zero_()
            layer.attn.wo.weight.requires_grad_(False)
    return model


def task_schedule(a: argparse.Namespace):
    """step -> task: hop_tilt stages from --tilt, then the --switch task."""
    base = make_task("hops", range="train")
    if a.stages:
        stages = [(int(st), make_task("hops", range="train", **json.loads(js)))
                  for st, js in (x.split(":", 1) for x in a.stages.split("|"))]
        return base, lambda step: [t for st, t in stages if st <= step][-1]
    tilts = [tuple(float(x) for x in kv.split(":")) for kv in a.tilt.split(",")] if a.tilt else []
    tasks = {t: make_task("hops", range="train", hop_tilt=t) for _, t in tilts}
    switch = None
    if a.switch:
        s, params = a.switch.split(":", 1)
        switch = (int(s), make_task("hops", range="train", **json.loads(params)))

    def at(step: int):
        if switch and step >= switch[0]:
            return switch[1]
        current = [t for s, t in tilts if s <= step]
        return tasks[current[-1]] if current else base

    return base, at


def query_all(task, ex):
    """The same prompt with every variable queried once, in a random order (seeded by the prompt)."""
    words = task.vocab.decode(ex.tokens)
    assigns, _ = task.parse(words)
    rhs = dict(assigns)
    value = {}
    for x in rhs:
        y, h = x, 0
        while y in rhs:
            y, h = rhs[y], h + 1
        value[x] = (y, h)
    order = sorted(rhs)
    random.Random(hash(tuple(ex.tokens))).shuffle(order)
    ids = list(ex.tokens[: words.index("|") + 1])
    scored, feats = [], []
    for x in order:
        ids += task.vocab.encode(["?", x, value[x][0]])
        scored.append(len(ids) - 1)
        feats.append({"difficulty": value[x][1]})
    return type(ex)(tokens=ids, scored=scored, features=feats, size=ex.size)


def per_step_accuracy(model: AniraModel, examples) -> tuple[float, dict[int, list[float]]]:
    model.eval()
    correct, hops = [], []
    with torch.no_grad():
        for i in range(0, len(examples), 128):
            b = collate(examples[i : i + 128], feature_names=["difficulty"])
            out = model(b.input_ids, exit="dense", readout_rows=b.loss_mask)
            pred = out.step_logits.argmax(-1)[:, b.loss_mask]  # (M, N)
            correct.append((pred == b.targets[b.loss_mask][None]).float())
            hops.append(b.difficulty[b.loss_mask])
    model.train()
    C, H = torch.cat(correct, 1), torch.cat(hops)
    table = {int(h): [round(x, 2) for x in C[:, H == h].mean(1).tolist()] for h in H.unique().tolist()}
    return C[-1].mean().item(), table


def train(a: argparse.Namespace, out: Path) -> None:
    base, task_at = task_schedule(a)
    model = build(a, len(base.vocab))
    examples = load_eval_set("hops", "in")[:512]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))  # warm-up, then constant
    rng = random.Random(a.seed)
    t0 = time.time()
    with (out / "probe.jsonl").open("w") as log:
        for step in range(a.steps + 1):
            if step % a.eval_every == 0 or step == a.steps:
                acc, table = per_step_accuracy(model, examples)
                row = {"step": step, "time_s": round(time.time() - t0), "acc_last_step": round(acc, 3),
                       "acc_by_hops_per_step": table}
                print(json.dumps(row), flush=True)
                log.write(json.dumps(row) + "\n")
            if step == a.steps:
                break
            task = task_at(step)
            batch = [task.sample(rng) for _ in range(a.batch_size)]
            if a.all_queries:
                batch = [query_all(task, ex) for ex in batch]
            b = collate(batch, feature_names=["difficulty"])
            out_ = model(b.input_ids, exit="dense", readout_rows=b.loss_mask)
            tgt = b.targets[b.loss_mask]
            losses = torch.stack([F.cross_entropy(s, tgt) for s in out_.step_logits[:, b.loss_mask]])
            loss = (1 - a.ds) * losses[-1] + a.ds * losses.mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
    torch.save(model.state_dict(), out / "model.pt")


def diagnose(a: argparse.Namespace, out: Path) -> None:
    task = make_task("hops", range="train")
    model = build(a, len(task.vocab))
    model.load_state_dict(torch.load(out / "model.pt"))
    model.eval()
    core, S = model.core, model.cfg.max_depth
    weights: dict[tuple[int, int, int], list[float]] = {}  # (hops, step, hop along the chain) -> max-head weights
    with torch.no_grad():
        for ex in load_eval_set("hops", "in")[:200]:
            words = task.vocab.decode(ex.tokens)
            ids = torch.tensor([ex.tokens[:-1]])
            e, pos = model.embed(ids)
            states = model(ids, exit="dense", return_states=True).states  # (S + 1, 1, T, D)
            T = ids.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool).triu(1)
            att = []
            for n in range(1, S + 1):
                x = core.ln1(core.inputs(states[n - 1], e))
                q = core.attn.project_q(x, pos)
                k, _ = core.attn.project_kv(x, pos)
                att.append((q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(causal, float("-inf")).softmax(-1)[0])
            lhs = {words[i]: i for i in range(1, words.index("|"), 4)}  # variable -> position of its assignment
            for f, target in zip(ex.features, ex.scored):
                qi, chain, var = target - 1, [], words[target - 1]
                while var in lhs:  # right-hand sides along the chain
                    chain.append(lhs[var] + 2)
                    var = words[lhs[var] + 2]
                for n in range(S):
                    for j, rhs in enumerate(chain):
                        weights.setdefault((f["difficulty"], n + 1, j + 1), []).append(att[n][:, qi, rhs].max().item())
    for h in (1, 2, 3):
        for n in range(1, S + 1):
            cells = [f"hop {j}: {sum(v) / len(v):.2f}" for (hh, nn, j), v in sorted(weights.items()) if (hh, nn) == (h, n)]
            print(f"{h}-hop queries, loop step {n}: " + "  ".join(cells))


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    diagnose(a, out) if a.diagnose else train(a, out)


if __name__ == "__main__":
    main()
