"""What importing a file did, and the one way a file's entry is written: `upsert`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ImportReport:
    """What an import did. Entries read like ``"prompt refunds"`` or ``"repository shop"``."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    # For each entry in `updated`, the names of the fields that changed (never their values).
    changes: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [f"created {entry}" for entry in self.created]
        for entry in self.updated:
            fields = self.changes.get(entry)
            lines.append(f"updated {entry}" + (f" ({', '.join(fields)})" if fields else ""))
        lines += [f"unchanged {entry}" for entry in self.unchanged]
        lines += [f"archived {entry}" for entry in self.archived]
        return lines

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.archived)} archived"
        )


# -- Upserting -----------------------------------------------------------------------------------


# Database fields as the file calls them, for "updated prompt x (setup, title)".
FILE_NAMES = {
    "repository_id": "repository",
    "model_id": "model",
    "setup_command": "setup",
    "test_command": "test",
    "hidden_tests_commit": "hidden_tests",
    "hidden_tests_paths": "hidden_tests",
    "clarification_expected": "clarification",
    "clarification_answer": "clarification",
    "input_per_mtok": "price",
    "output_per_mtok": "price",
    "script_path": "script",
    "max_steps": "limits",
    "max_cost_usd": "limits",
    "max_processes": "limits",
    "max_memory_mb": "limits",
    "max_disk_mb": "limits",
    "max_tokens": "limits",
    "max_calls": "limits",
}


def upsert(model, lookup: dict, values: dict, label: str, report: ImportReport):
    """Create or update one row by its natural key, recording what happened in `report`."""
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        report.created.append(label)
        return obj
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    if changed:
        for name in changed:
            setattr(obj, name, values[name])
        obj.save()
        report.updated.append(label)
        report.changes[label] = list(dict.fromkeys(FILE_NAMES.get(n, n) for n in changed))
    else:
        report.unchanged.append(label)
    return obj
