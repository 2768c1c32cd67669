"""Training objectives.

Shared objective of ``early`` and ``online`` (written once; only the source of p_n differs)::

    L_n     = CE(step_logits[n], target)                     per scored token, n = 1..S
    L_exp   = sum_n p_n L_n                                  expected loss over the depth distribution
    L_ds    = sum_n w_n L_n,  w_n = n^a / sum_m m^a            deep supervision: every step's readout
              (a = ds_power; 0: the plain mean (1/S) sum_n L_n; larger a leans on the deep steps)
    R_kl    = KL(p || q) = sum_n p_n (log p_n - log q_n)     q = truncated Geometric(prior_lambda):
              q_n = l (1-l)^{n-1} (n < S), q_S = (1-l)^{S-1}   (constant halting rate l, forced at S)
    R_depth = sum_n n p_n                                    expected depth (ACT-style ponder cost)

    step <  start:  loss = L_ds                                     (full-depth warm-up)
    step >= start:  loss = L_exp + beta_t * R + ds_weight * L_ds
    beta_t = beta * min(1, (step - start + 1) / beta_warmup_steps)  (penalty warm-up)

``start`` = ``ds_warmup_steps``, or -- when the trainer's switch waits for learning
(``RunConfig.ds_until_acc``) -- the first log step from ds_warmup_steps on at which the full-depth
read-out's training accuracy reaches that bar. Why: a penalty that starts before the task is
learned at full depth takes depth away from exactly the tokens that are not solved yet (measured
on `hops`: depth then *falls* with the hop count).

Every term is averaged over the task's scored tokens (``loss_mask``); unscored tokens have no
target, so their depth is whatever the shared decision head gives them.

Why this recipe (anti-collapse): a naive PonderNet objective lets the halting head move first: the
early steps' readouts are poor, mass moves to step 1, deeper steps get no gradient through p_n and
the model stays at chance. The deep-supervision warm-up trains every step's readout before the
halting distribution can move (the halting head and router get no gradient in the warm-up), and
``ds_weight * L_ds`` afterwards keeps the deep steps trained even where p_n is small. A halting
bias of -3 (``ModelConfig.halt_bias_init``) starts the distribution with its mass on the last step.

Why ``ds_power``: under the plain mean, 5 of 6 shares of the warm-up's gradient go to readouts
that cannot be right on a token needing the whole loop (an `addition` digit at the end of a long
carry chain), so the warm-up learns those tokens later than a `fixed` run at full depth does. The
weights are the same for every token and every example: nothing about a token's difficulty enters.

Default penalty: ``"kl"`` (PonderNet). Up to the entropy term, KL(p||q) = -H(p) + c E[n] + const
with c = -log(1 - prior_lambda): an expected-depth cost plus an entropy bonus that keeps the
distribution from collapsing onto one depth early; ``"depth"`` is the plain expected-depth cost.

For the mechanisms with an imposed depth (``fixed``, ``oracle``, ``random``) the loss is plain
cross-entropy at the used depth, ``task_loss``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from anira.config import check_choice, check_fields, check_range
from anira.model import truncated_geometric

PENALTIES = ("kl", "depth")


@dataclass
class LossConfig:
    beta: float = 0.01  # compute-penalty weight; 0.01 kept accuracy and gave aligned depths on `hops`
    penalty: Literal["kl", "depth"] = "kl"  # PonderNet KL to a geometric prior, or expected depth
    prior_lambda: float = 0.2  # halting rate of the geometric prior (PonderNet's lambda_p)
    ds_weight: float = 0.1  # deep-supervision weight after the warm-up (keeps deep steps trained)
    ds_warmup_steps: int = 300  # steps of pure deep supervision before p_n enters the loss
    beta_warmup_steps: int = 0  # linear ramp of beta after the deep-supervision warm-up (0 = none)
    ds_power: float = 0.0  # deep-supervision weights w_n ~ n**ds_power (0 = plain mean over the steps)

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("beta", self.beta, 0.0)
        check_choice("penalty", self.penalty, PENALTIES)
        if not 0.0 < self.prior_lambda < 1.0:
            raise ValueError(f"prior_lambda = {self.prior_lambda!r} is out of range; allowed: (0, 1)")
        check_range("ds_weight", self.ds_weight, 0.0)
        check_range("ds_warmup_steps", self.ds_warmup_steps, 0)
        check_range("beta_warmup_steps", self.beta_warmup_steps, 0)
        check_range("ds_power", self.ds_power, 0.0)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    expected: torch.Tensor  # L_exp (detached)
    ds: torch.Tensor  # L_ds (detached)
    penalty: torch.Tensor  # R (detached)
    beta_t: float  # penalty weight in force at this step
    step_losses: torch.Tensor  # (S,) mean L_n per step (detached)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (..., B, T) over the positions where mask (B, T) is true."""
    m = mask.to(x.dtype)
    return (x * m).sum((-2, -1)) / m.sum().clamp_min(1.0)


def token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per position. logits (..., B, T, V), targets (B, T) -> (..., B, T)."""
    V = logits.shape[-1]
    tgt = targets.expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), reduction="none").view(tgt.shape)


def task_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the used depth over the scored tokens (fixed, oracle, random)."""
    return masked_mean(token_ce(logits, targets), loss_mask)


class PonderLoss(nn.Module):
    """The shared early/online objective (module docstring); the prior q is a buffer."""

    def __init__(self, cfg: LossConfig, max_depth: int):
        super().__init__()
        check_range("max_depth", max_depth, 1)
        self.cfg, self.max_depth = cfg, max_depth
        self.register_buffer("log_prior", truncated_geometric(cfg.prior_lambda, max_depth).clamp_min(1e-30).log())
        self.register_buffer("steps", torch.arange(1, max_depth + 1, dtype=torch.float32))
        w = self.steps ** cfg.ds_power
        self.register_buffer("ds_weights", w / w.sum())  # w_n of L_ds

    def beta_at(self, step: int, start: int | None = None) -> float:
        """beta_t; ``start`` = the step the PonderNet objective starts (default ds_warmup_steps;
        the trainer passes a later one when the switch waits for learning, ``RunConfig.ds_until_acc``)."""
        c = self.cfg
        start = c.ds_warmup_steps if start is None else start
        if step < start:
            return 0.0
        if c.beta_warmup_steps == 0:
            return c.beta
        return c.beta * min(1.0, (step - start + 1) / c.beta_warmup_steps)

    def forward(
        self, step_logits: torch.Tensor, p_n: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor, step: int,
        start: int | float | None = None,
    ) -> LossOutput:
        """step_logits (S, B, T, V), p_n (B, T, S), targets/loss_mask (B, T), step = optimizer step;
        ``start`` = first step of the PonderNet objective (None: ``ds_warmup_steps``; ``math.inf``:
        not yet, the warm-up goes on)."""
        S = step_logits.shape[0]
        if S != self.max_depth or p_n.shape[-1] != S:
            raise ValueError(f"step_logits has {S} steps and p_n {p_n.shape[-1]}; the loss was built for {self.max_depth}")
        L = token_ce(step_logits, targets)  # (S, B, T)  L_n per token
        step_losses = masked_mean(L, loss_mask)  # (S,)
        # L_ds = sum_n w_n L_n (the plain mean computed as such, so a = 0 stays bit-identical to before)
        ds = step_losses.mean() if self.cfg.ds_power == 0 else (self.ds_weights * step_losses).sum()
        expected = masked_mean((p_n * L.permute(1, 2, 0)).sum(-1), loss_mask)  # sum_n p_n L_n
        if self.cfg.penalty == "kl":
            kl = (p_n * (p_n.clamp_min(1e-30).log() - self.log_prior)).sum(-1)  # KL(p || q) per token
            penalty = masked_mean(kl, loss_mask)
        else:
            penalty = masked_mean((p_n * self.steps).sum(-1), loss_mask)  # E[n]
        start = self.cfg.ds_warmup_steps if start is None else start
        beta_t = self.beta_at(step, start)
        if step < start:
            loss = ds
        else:
            loss = expected + beta_t * penalty + self.cfg.ds_weight * ds
        return LossOutput(loss, expected.detach(), ds.detach(), penalty.detach(), beta_t, step_losses.detach())
