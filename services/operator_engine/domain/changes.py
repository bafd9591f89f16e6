"""A job's state change as the engine records and streams it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StateChange:
    job_id: str
    status: int
    end_reason: int = 0
    error_code: str = ""
    error_message: str = ""
    time: datetime = field(default_factory=now)
    results: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    results_did: str = ""
    sequence: int = 0

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies the results and
        # was a tenth of a busy engine's time; the dicts are never mutated.
        data = {f.name: getattr(self, f.name) for f in FIELDS if f.name != "sequence"}
        data["time"] = self.time.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], sequence: int) -> StateChange:
        values = dict(data)
        values["time"] = datetime.fromisoformat(values["time"])
        return cls(**values, sequence=sequence)


FIELDS = dataclasses.fields(StateChange)
