"""A deterministic percentage rollout by user id, with a kill switch.

A user's *bucket* is a hash of the salt and their id, 0 to 9,999: the same
user always lands in the same bucket, so they see the same variant on every
request and every instance, and raising the percentage only ever adds users.
A new salt reshuffles everyone (a new experiment).

Anonymous visitors have no id to hash, and splitting them at random would
flip a visitor between variants from one request to the next. They move as
one cohort, last: they get the batch page only at 100 %.
"""

from __future__ import annotations

import hashlib
import math

BUCKETS = 10_000


def _check_percentage(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"percentage must be a number between 0 and 100, not {value!r}")
    if math.isnan(value) or not 0 <= value <= 100:
        raise ValueError(f"percentage must be between 0 and 100, got {value!r}")
    return float(value)


class Rollout:
    """Which users take the new path: ``percentage`` of user ids, by a stable hash.

    ``percentage`` (0 to 100, fractions allowed) and the kill switch change at
    run time, for instance from a value polled from Redis, so that a rollback
    takes effect at once without a deploy::

        rollout = Rollout(10.0, salt="homepage-batch")
        rollout.use_batch("user-42")  # same answer on every call and instance
        rollout.set_percentage(50)
        rollout.kill()  # everyone back on the old path

    ``salt`` is fixed for the object's life. Reads and writes are single
    attribute accesses, safe across threads and tasks.
    """

    __slots__ = ("_enabled", "_percentage", "_salt")

    def __init__(
        self, percentage: float, *, salt: str = "batchpage-rollout", enabled: bool = True
    ) -> None:
        if not isinstance(salt, str):
            raise TypeError(f"salt must be a str, not {salt!r}")
        if not salt:
            raise ValueError("salt must not be empty")
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, not {enabled!r}")
        self._salt = salt.encode("utf-8", "surrogatepass") + b"\x00"
        self._percentage = _check_percentage(percentage)
        self._enabled = enabled

    @property
    def salt(self) -> str:
        """What the buckets are hashed with; another salt is another split of the users."""
        return self._salt[:-1].decode("utf-8", "surrogatepass")

    @property
    def percentage(self) -> float:
        """Share of user ids on the new path, 0 to 100 (regardless of the kill switch)."""
        return self._percentage

    @property
    def enabled(self) -> bool:
        """False once killed: nobody takes the new path, whatever the percentage."""
        return self._enabled

    def set_percentage(self, percentage: float) -> None:
        """Change the share at run time; a user in the share stays in it when it grows."""
        self._percentage = _check_percentage(percentage)

    def kill(self) -> None:
        """Send everyone to the old path until :meth:`revive`; the percentage is kept."""
        self._enabled = False

    def revive(self) -> None:
        """Undo :meth:`kill`: the percentage applies again."""
        self._enabled = True

    def bucket(self, user_id: str) -> int:
        """The user's fixed bucket, 0 to 9,999."""
        if not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, not {user_id!r}")
        digest = hashlib.blake2b(
            self._salt + user_id.encode("utf-8", "surrogatepass"), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def use_batch(self, user_id: str | None) -> bool:
        """Whether this user takes the new path now (anonymous: only at 100 %)."""
        if not self._enabled:
            return False
        percentage = self._percentage
        if user_id is None:
            return percentage >= 100
        return self.bucket(user_id) < percentage * (BUCKETS / 100)

    def __repr__(self) -> str:
        state = "" if self._enabled else ", enabled=False"
        return f"Rollout({self._percentage!r}, salt={self.salt!r}{state})"
