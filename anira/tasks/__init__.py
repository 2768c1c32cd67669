"""Task registry: ``make_task(name, range=..., **params)``."""
from __future__ import annotations

import importlib
from typing import Any

from anira.tasks.base import BOS_ID, PAD_ID, Batch, Example, Task, Vocab, collate

# name -> "module:Class"; imported lazily so one task's import cost is not paid by the others
_REGISTRY: dict[str, str] = {
    "hops": "anira.tasks.hops:HopsTask",
    "toposort": "anira.tasks.toposort:ToposortTask",
    "addition": "anira.tasks.addition:AdditionTask",
    "language": "anira.tasks.language:LanguageTask",
}
TASK_NAMES = tuple(_REGISTRY)


def task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"task = {name!r} is not a known task; allowed values: {list(TASK_NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_task(name: str, range: str = "train", **params: Any) -> Task:
    """Build task ``name`` on one of its declared ranges (training, extrapolation, or a task's own
    extra range such as ``addition``'s "wide"), with overrides."""
    cls = task_class(name)
    allowed = list(cls.ranges.values())
    if range not in allowed:
        raise ValueError(f"range = {range!r} is not allowed for task {name!r}; allowed values: {allowed}")
    return cls(getattr(cls, f"{range}_config")(), **params)


__all__ = ["make_task", "task_class", "TASK_NAMES", "Task", "Example", "Vocab", "Batch", "collate", "PAD_ID", "BOS_ID"]
