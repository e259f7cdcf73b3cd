"""Each kind of run's module, by the name in the kinds table (:data:`bot.rules.kinds.KINDS`).

A kind's module has ``execute(wf, run_id, user)`` and ``explain_interrupted(wf, run, env)``.
The app hands :data:`EXECUTORS` to the workflow, so :func:`bot.runs.controls.start` can start
any kind without importing the kinds (which import it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType

from bot.config import Environment
from bot.runs import migrate, resolve, rollback, terminate, undo
from bot.workflow import Executor, Workflow
from state.runs import Run

KIND_MODULES: dict[str, ModuleType] = {
    "migrate": migrate,
    "rollback": rollback,
    "undo": undo,
    "resolve": resolve,
    "terminate": terminate,
}

Explainer = Callable[[Workflow, Run, Environment], Awaitable[tuple[list[str], str]]]
EXECUTORS: dict[str, Executor] = {name: module.execute for name, module in KIND_MODULES.items()}
EXPLAINERS: dict[str, Explainer] = {name: module.explain_interrupted for name, module in KIND_MODULES.items()}
