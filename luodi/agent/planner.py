"""A visible task list (AutoGPT-style): the model restates its remaining steps every turn; we track them.

Each agent turn carries `"plan": [remaining steps]`. `Plan.update` diffs it against the previous list:
steps that disappeared are done, new ones are added, the first remaining one is the current step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PLAN_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4}


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


@dataclass
class Task:
    text: str
    status: str = "pending"  # pending | doing | done


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    revisions: int = 0

    def update(self, remaining: list[str] | None) -> bool:
        """Apply the model's list of remaining steps; True when the plan changed."""
        remaining = [r.strip() for r in (remaining or []) if isinstance(r, str) and r.strip()][:8]
        if not remaining:
            return False
        keys = [_norm(r) for r in remaining]
        before = [(t.text, t.status) for t in self.tasks]
        for t in self.tasks:
            if t.status != "done" and _norm(t.text) not in keys:
                t.status = "done"
        known = {_norm(t.text): t for t in self.tasks if t.status != "done"}
        for text, key in zip(remaining, keys, strict=True):
            if key not in known:
                task = Task(text)
                self.tasks.append(task)
                known[key] = task
        for t in self.tasks:
            if t.status == "doing":
                t.status = "pending"
        known[keys[0]].status = "doing"
        changed = before != [(t.text, t.status) for t in self.tasks]
        if changed and before:
            self.revisions += 1
        return changed

    def finish(self) -> None:
        for t in self.tasks:
            t.status = "done"

    def render(self) -> str:
        mark = {"done": "[x]", "doing": "[>]", "pending": "[ ]"}
        return "\n".join(f"{mark[t.status]} {t.text}" for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": [{"text": t.text, "status": t.status} for t in self.tasks],
            "revisions": self.revisions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Plan:
        d = d or {}
        return cls(
            [Task(t["text"], t.get("status", "pending")) for t in d.get("tasks", [])], d.get("revisions", 0)
        )
