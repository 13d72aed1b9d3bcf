"""The state file of ``rater rate --state``: every account in its stored form, written atomically.

The account codec itself (``to_stored``/``from_stored``) is pure and lives in ``rater/core/codec.py``.
"""

from __future__ import annotations

import os
import tempfile

import orjson

from rater.core.codec import from_stored, to_stored
from rater.core.ledger import Account

STATE_VERSION = 1


class StateError(ValueError):
    """A state file that cannot be read; the message names the file and the problem."""


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: a crash leaves the old
    file or the new one, never half of either."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_state(path: str, accounts: dict[str, Account]) -> None:
    body = {
        "version": STATE_VERSION,
        "accounts": {tid: to_stored(a) for tid, a in sorted(accounts.items())},
    }
    write_atomic(path, orjson.dumps(body))


def load_state(path: str) -> dict[str, Account]:
    """Accounts from a state file; a missing file is an empty state (the first run)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{path}: cannot read the state file ({exc.strerror})") from None
    try:
        body = orjson.loads(data)
        if body.get("version") != STATE_VERSION:
            raise StateError(f"{path}: state version {body.get('version')!r}, expected {STATE_VERSION}")
        return {tid: from_stored(d) for tid, d in body["accounts"].items()}
    except StateError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"{path}: not a rater state file ({exc})") from None
