"""Day windows ``[start, end)``: the training window and the drift check window share this shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Self


@dataclass(frozen=True)
class DayWindow:
    """The calendar days ``[start, end)``, end exclusive."""

    start: date
    end: date

    @classmethod
    def ending(cls, end: date, days: int) -> Self:
        return cls(start=end - timedelta(days=days), end=end)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days)]

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"
