"""Time as the tables store it: naive UTC, alike on every backend."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime | None) -> datetime | None:
    """An aware time as the naive UTC the tables store; naive times are taken as UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def aware(value: datetime | None) -> datetime | None:
    """A stored (naive UTC) time with its zone, for answers."""
    return None if value is None else value.replace(tzinfo=UTC)
