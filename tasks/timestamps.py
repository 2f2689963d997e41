"""Label Studio's timestamps, parsed without the collect machinery (the collect shortcut reads only these)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str | None) -> datetime | None:
    """Label Studio's ISO timestamps (with a trailing Z) as aware UTC datetimes."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
