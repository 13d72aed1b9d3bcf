"""Who is told: the contacts file, ``tenant_id,email`` CSV (SPEC 11).

An optional header row ``tenant_id,email`` is skipped; blank lines and lines starting with
``#`` are ignored; a tenant may have several lines (several recipients). Every problem names
the file and line. A file with a problem is not used: :class:`ContactsFile` keeps the last
good set and says why in the log, so a typo in an edit never silences a tenant's mail.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field

log = logging.getLogger("rater.notify")

_TENANT_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Deliberately plain: one @, no spaces or angle brackets, a dot in the domain or "localhost".
_EMAIL_RE = re.compile(r"[^@\s<>,;\"]+@(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost)")


class ContactsError(ValueError):
    """The file's problems, one ``file:line: message`` each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Contacts:
    emails: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def for_tenant(self, tenant_id: str) -> tuple[str, ...]:
        return self.emails.get(tenant_id, ())


def parse_contacts(text: str, name: str) -> Contacts:
    """Parse the file's text; ``name`` is the file name used in errors."""
    problems: list[str] = []
    emails: dict[str, list[str]] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(not c for c in cells) or cells[0].startswith("#"):
            continue
        if lineno == 1 and [c.lower() for c in cells] == ["tenant_id", "email"]:
            continue
        if len(cells) != 2:
            problems.append(f"{name}:{lineno}: expected 2 columns tenant_id,email, found {len(cells)}")
            continue
        tenant, email = cells
        if not _TENANT_RE.fullmatch(tenant):
            problems.append(f"{name}:{lineno}: tenant_id {tenant[:70]!r} must be 1 to 64 of A-Z a-z 0-9 . _ : -")
            continue
        if not _EMAIL_RE.fullmatch(email):
            problems.append(f"{name}:{lineno}: email {email[:70]!r} is not an address like name@example.com")
            continue
        addresses = emails.setdefault(tenant, [])
        if email not in addresses:
            addresses.append(email)
    if problems:
        raise ContactsError(problems)
    return Contacts({t: tuple(a) for t, a in emails.items()})


def load_contacts(path: str) -> Contacts:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ContactsError([f"{path}: no such contacts file"]) from None
    except UnicodeDecodeError as exc:
        raise ContactsError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise ContactsError([f"{path}: {exc.strerror}"]) from None
    return parse_contacts(text, path)


class ContactsFile:
    """The contacts file, read again when its modification time or size changes.

    ``current()`` is cheap (one ``stat``) and is called for every email sent, so an edit
    takes effect with the next notification. A file that does not load keeps the last good
    set and is logged once per change.
    """

    def __init__(self, path: str):
        self.path = path
        self._seen: tuple[int, int] | None = None
        self.contacts = load_contacts(path)  # the first load must succeed: a clear start-up error
        self._seen = self._stamp()
        self.loaded_problems: list[str] = []
        self.reloads = 0

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> Contacts:
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            self._seen = stamp
            try:
                self.contacts = load_contacts(self.path)
                self.loaded_problems = []
                self.reloads += 1
                log.info("contacts reloaded from %s: %d tenant(s)", self.path, len(self.contacts.emails))
            except ContactsError as exc:
                self.loaded_problems = exc.problems
                for p in exc.problems:
                    log.error("contacts not reloaded, keeping the previous ones: %s", p)
        return self.contacts
