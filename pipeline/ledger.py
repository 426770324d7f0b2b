"""`_LEDGER.json`: every job accounts for every input document, kept or dropped with a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


class LedgerError(RuntimeError):
    """The counts do not add up: a job lost or invented documents. Nothing is committed."""


@dataclass
class Ledger:
    job: str
    read: int = 0
    written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    """Job-specific figures (rounds, timings); not part of the invariant."""

    def add(self, source: str, outcome: str, reason: str | None, count: int) -> None:
        """Count `count` documents of `source` with outcome `written`, `dropped` or `quarantined`."""
        per_source = self.by_source.setdefault(source, {"read": 0, "written": 0})
        self.read += count
        per_source["read"] += count
        if outcome == "written":
            self.written += count
            per_source["written"] += count
        elif outcome in ("dropped", "quarantined"):
            if not reason:
                raise LedgerError(f"{self.job}: {count} {outcome} documents of {source!r} carry no reason")
            table = getattr(self, outcome)
            table[reason] = table.get(reason, 0) + count
        else:
            raise ValueError(f"unknown outcome {outcome!r}: use written, dropped or quarantined")

    def check(self) -> None:
        """read = written + dropped + quarantined, overall and per source; raises LedgerError if not."""
        accounted = self.written + sum(self.dropped.values()) + sum(self.quarantined.values())
        if self.read != accounted:
            raise LedgerError(
                f"{self.job}: read {self.read} documents but accounted for {accounted} "
                f"(written {self.written}, dropped {self.dropped}, quarantined {self.quarantined})"
            )
        if sum(s["read"] for s in self.by_source.values()) != self.read:
            raise LedgerError(f"{self.job}: per-source reads do not add up to {self.read}")

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("dropped", "quarantined"):
            data[key] = dict(sorted(data[key].items()))
        data["by_source"] = dict(sorted(data["by_source"].items()))
        if not data["extra"]:
            del data["extra"]
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        return cls(**json.loads(text))
