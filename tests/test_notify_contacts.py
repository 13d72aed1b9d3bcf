"""The contacts file (rater/notify/contacts.py): tenant_id,email CSV, errors with file and
line, reloaded when it changes, a bad edit keeps the last good set."""

from __future__ import annotations

import os

import pytest

from rater.notify.contacts import ContactsError, ContactsFile, load_contacts, parse_contacts


def test_header_comments_blank_lines_and_several_recipients_per_tenant():
    text = "tenant_id,email\n# billing team\nacme,ops@acme.example\n\nacme, cfo@acme.example \nglobex,it@globex.example\n"
    contacts = parse_contacts(text, "contacts.csv")
    assert contacts.for_tenant("acme") == ("ops@acme.example", "cfo@acme.example")
    assert contacts.for_tenant("globex") == ("it@globex.example",)
    assert contacts.for_tenant("initech") == ()


def test_a_repeated_line_is_one_recipient():
    assert parse_contacts("acme,a@x.example\nacme,a@x.example\n", "c.csv").for_tenant("acme") == ("a@x.example",)


def test_every_bad_line_is_named_with_file_and_line():
    text = "acme,ops@acme.example\nglobex\nbad tenant,x@y.example\ninitech,not-an-address\nhooli,a@b.example,extra\n"
    with pytest.raises(ContactsError) as exc:
        parse_contacts(text, "contacts.csv")
    assert exc.value.problems == [
        "contacts.csv:2: expected 2 columns tenant_id,email, found 1",
        "contacts.csv:3: tenant_id 'bad tenant' must be 1 to 64 of A-Z a-z 0-9 . _ : -",
        "contacts.csv:4: email 'not-an-address' is not an address like name@example.com",
        "contacts.csv:5: expected 2 columns tenant_id,email, found 3",
    ]


def test_a_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nope.csv")
    with pytest.raises(ContactsError) as exc:
        load_contacts(path)
    assert exc.value.problems == [f"{path}: no such contacts file"]


def _write(path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_last_good_set(tmp_path):
    path = tmp_path / "contacts.csv"
    _write(path, "acme,ops@acme.example\n", 1_000_000_000_000_000_000)
    contacts = ContactsFile(str(path))
    assert contacts.current().for_tenant("acme") == ("ops@acme.example",)

    _write(path, "acme,new@acme.example\nglobex,it@globex.example\n", 1_000_000_001_000_000_000)
    assert contacts.current().for_tenant("acme") == ("new@acme.example",)
    assert contacts.current().for_tenant("globex") == ("it@globex.example",)
    assert contacts.reloads == 1

    _write(path, "acme,new@acme.example\nglobex;it@globex.example\n", 1_000_000_002_000_000_000)
    assert contacts.current().for_tenant("globex") == ("it@globex.example",)  # the last good set
    assert contacts.loaded_problems == [f"{path}:2: expected 2 columns tenant_id,email, found 1"]

    _write(path, "globex,it2@globex.example\n", 1_000_000_003_000_000_000)
    assert contacts.current().for_tenant("globex") == ("it2@globex.example",)
    assert contacts.current().for_tenant("acme") == ()
    assert contacts.loaded_problems == []
