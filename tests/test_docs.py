"""The documentation a fresh clone carries: every link of the README and docs/ resolves
inside the repository, and docs/contract.md states the whole contract."""

import re
from pathlib import Path

import pytest

from rater.batch import Topics

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(doc):
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"


def test_the_readme_links_the_contract_in_docs():
    assert "](docs/contract.md)" in (ROOT / "README.md").read_text()


def test_the_contract_names_every_topic_reason_event_type_and_field():
    text = (ROOT / "docs" / "contract.md").read_text()
    topics = Topics()
    names = [topics.cdrs, topics.commands, topics.rated, topics.events, topics.requests, topics.rejects]
    reasons = ["invalid_json", "invalid_record", "unknown_tenant", "unknown_rate_plan", "currency_mismatch",
               "no_rate", "too_late", "invalid_timestamp", "unknown_request"]
    events = ["funds_added", "funds_expired", "low_balance", "below_zero", "balance_restored",
              "auto_recharge_requested", "auto_recharge_succeeded", "auto_recharge_failed"]
    fields = ["cdr_id", "call_type", "started_at", "duration_seconds", "command_id", "occurred_at",
              "rate_plan", "low_balance_threshold", "included_domestic_minutes", "payment_method",
              "billable_seconds", "covered_seconds", "rate_prefix", "balance_after", "requested_at",
              "max_seconds", "raw_encoding", "balances.json", "--state", "/metrics", "/authorize"]  # fmt: skip
    missing = [n for n in names + reasons + events + fields if f"`{n}" not in text and n not in text]
    assert missing == []
