"""The section a sweep (or undo) report gains for each kind of synced object it enforces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.authority.objects import Kind

__all__ = ["KindReport", "not_reached", "outcome_fields"]


def outcome_fields(report: Any) -> dict[str, Any]:
    """The counts every report section shares, mailboxes' and each kind's, by their JSON names."""
    return {
        "candidates": report.candidates,
        "changed": report.changed,
        "excluded": report.excluded,
        "failed": report.failed,
        "unknown": report.unknown,
        "notAttempted": report.not_attempted,
        "brakeEngaged": report.brake_engaged,
        "maxChanges": report.max_changes,
        "complete": report.complete,
        "interrupted": report.interrupted,
    }


@dataclass
class KindReport:
    """The outcome of one kind's part of a run, in the shape docs/contracts.md "Sweep report" documents."""

    kind: Kind
    mode: str
    max_changes: int
    scanned: int = 0
    already_cloud_managed: int = 0
    excluded: int = 0
    candidates: int = 0
    levels: int = 0
    changed: int = 0
    failed: int = 0
    unknown: int = 0
    not_attempted: int = 0
    brake_engaged: bool = False
    complete: bool = True
    interrupted: bool = False
    error: str | None = None  # the kind could not be read at all
    requests: int = 0
    out_of_scope_list: list[dict[str, Any]] = field(default_factory=list)
    held_back_list: list[dict[str, Any]] = field(default_factory=list)
    candidate_list: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    unknowns: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # An undo's own fields: what the run changed, what changed since, and rollbacks blocked by cloud-only members.
    undoes: str | None = None
    changed_by_run: int = 0
    changed_since: list[dict[str, str]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)

    def hold(self, item: dict[str, Any]) -> None:
        self.held_back_list.append(item)

    def to_json(self) -> dict[str, Any]:
        outcomes = {
            **outcome_fields(self),
            "error": self.error,
            "requests": self.requests,
            "candidateList": self.candidate_list,
            "failures": self.failures,
            "unknowns": self.unknowns,
            "notes": self.notes,
        }
        if self.undoes is not None:
            return {
                "kind": self.kind.name,
                "changedByRun": self.changed_by_run,
                "changedSince": self.changed_since,
                "blocked": self.blocked,
                "levels": self.levels,
                **outcomes,
                "heldBackList": self.held_back_list,
            }
        return {
            "kind": self.kind.name,
            "preview": self.kind.preview,
            "mode": self.mode,
            "scanned": self.scanned,
            "alreadyCloudManaged": self.already_cloud_managed,
            "outOfScope": len(self.out_of_scope_list),
            "heldBack": len(self.held_back_list),
            "levels": self.levels,
            **outcomes,
            "outOfScopeList": self.out_of_scope_list,
            "heldBackList": self.held_back_list,
        }


def not_reached(kind: Kind, mode: str, max_changes: int, why: str, undoes: str | None = None) -> KindReport:
    """The section of a kind the run stopped before (Ctrl-C, the time budget): incomplete, and saying so."""
    report = KindReport(kind, mode, max_changes, complete=False, undoes=undoes)
    report.notes.append(f"{why}; the {kind.name} were not read, so none was changed")
    return report
