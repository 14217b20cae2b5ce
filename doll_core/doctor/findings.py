"""What ``doll doctor`` reports: findings, the steps of the resume plan, the whole report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["ok", "warning", "problem"]
Action = Literal["continue", "redo", "run", "reuse damaged", "fails"]


@dataclass
class Finding:
    """One observation about one file or folder."""

    severity: Severity
    path: str
    message: str
    stage: str | None = None


@dataclass
class Step:
    """What ``doll run --resume`` would do with one stage."""

    stage: str
    action: Action
    detail: str


@dataclass
class DoctorReport:
    """Everything ``doll doctor`` found about one path."""

    path: Path
    kind: str
    findings: list[Finding] = field(default_factory=list)
    plan: list[Step] = field(default_factory=list)
    #: Where the plan comes from: ``experiment.json`` replayed, or the folders on disk.
    planned_from: str = "stage folders"
    #: Damaged finished stage -> the stages made from it (transitively).
    dependents: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def healthy(self) -> bool:
        """No problems (warnings are allowed)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "healthy": self.healthy,
            "problems": len(self.problems),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
            "resume": {
                "planned_from": self.planned_from,
                "steps": [asdict(s) for s in self.plan],
            },
            "dependents": self.dependents,
        }
