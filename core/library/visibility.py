"""Who sees what in a shared deployment: each user's collections are theirs alone.

A user's collections are stored under a name in their own namespace (`~alice/uploads`); the
operator's collections (indexed from the command line, from FRAMESCOPE_ROOTS) have plain names and
are seen by everyone. A `Visibility` turns the names a user knows into stored names and back, and
adds the SQL condition that keeps other users' collections out of every query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import AccessDenied, LibraryError

USER_PREFIX = "~"
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def check_user(user: str) -> str:
    """A user name as an authenticating proxy sends it: letters, digits and . _ @ + - only."""
    user = (user or "").strip()
    if not _USER.match(user):
        raise AccessDenied(
            "the signed-in user name from the proxy is missing or not a plain name "
            "(letters, digits, . _ @ + -, at most 64)"
        )
    return user


@dataclass(frozen=True)
class Visibility:
    """What one user may see: `user` None is everyone (local mode, the operator's command line)."""

    user: str | None = None

    @property
    def prefix(self) -> str:
        return f"{USER_PREFIX}{self.user}/"

    def stored_name(self, name: str) -> str:
        """Where a collection this user writes to is stored (their own namespace)."""
        name = name.strip()
        if name.startswith(USER_PREFIX):
            raise LibraryError(f"collection names cannot start with {USER_PREFIX!r}")
        return self.prefix + name if self.user is not None else name

    def stored_names(self, names: Sequence[str] | None) -> list[str] | None:
        """The stored collections a list of names the user chose means: their own of that name,
        and the shared one of that name."""
        if names is None or self.user is None:
            return None if names is None else list(names)
        return [stored for n in names for stored in (self.prefix + n, n)]

    def shown_name(self, stored: str) -> str:
        """The name a user sees for a stored collection."""
        if self.user is not None and stored.startswith(self.prefix):
            return stored[len(self.prefix) :]
        return stored

    def sql(self, column: str = "c.name") -> tuple[str, list]:
        """` AND ...` keeping only the collections this user may see (nothing for everyone)."""
        if self.user is None:
            return "", []
        return (
            f" AND (substr({column}, 1, 1) != ? OR substr({column}, 1, ?) = ?)",
            [USER_PREFIX, len(self.prefix), self.prefix],
        )

    def sees(self, stored: str) -> bool:
        return (
            self.user is None
            or not stored.startswith(USER_PREFIX)
            or stored.startswith(self.prefix)
        )

    def check(self, stored: str, what: str) -> None:
        if not self.sees(stored):
            raise AccessDenied(f"{what} belongs to another user")


EVERYONE = Visibility()
