"""The documentation a fresh clone carries: every link of the README and docs/ resolves
inside the repository, and docs/contract.md states the whole contract."""

import re
from pathlib import Path

import pytest

from rater.core.batch import Topics

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
    reasons = [
        "invalid_json",
        "invalid_record",
        "unknown_tenant",
        "unknown_rate_plan",
        "currency_mismatch",
        "no_rate",
        "too_late",
        "invalid_timestamp",
        "unknown_request",
    ]
    events = [
        "funds_added",
        "funds_expired",
        "low_balance",
        "below_zero",
        "balance_restored",
        "auto_recharge_requested",
        "auto_recharge_succeeded",
        "auto_recharge_failed",
    ]
    fields = [
        "cdr_id",
        "call_type",
        "started_at",
        "duration_seconds",
        "command_id",
        "occurred_at",
        "rate_plan",
        "low_balance_threshold",
        "included_domestic_minutes",
        "payment_method",
        "billable_seconds",
        "covered_seconds",
        "rate_prefix",
        "balance_after",
        "requested_at",
        "max_seconds",
        "raw_encoding",
        "balances.json",
        "--state",
        "/metrics",
        "/authorize",
    ]
    missing = [n for n in names + reasons + events + fields if f"`{n}" not in text and n not in text]
    assert missing == []


# A repository path in prose: README, the hand-written docs and every module docstring or
# comment of the code. docs/benchmarks.md is left out: it is rendered from recorded runs
# (bench/results/), whose profiles name the files as they were when measured.
PATH_REF = re.compile(
    r"(?<![\w./])(?:rater|tests|bench|native|scripts|schemas|rate_tables|kafka|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_]"
    r"\.(?:py|rs|md|json|toml|csv|yaml|xml|txt)\b"
)
PROSE = [p for p in DOCS if p.name != "benchmarks.md"] + [ROOT / "bench" / "analysis.md"]
CODE = sorted(p for d in ("rater", "bench", "tests", "native/src") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".rs"))


def test_every_file_path_named_in_the_docs_and_the_code_exists():
    missing = []
    for path in PROSE + CODE:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for ref in PATH_REF.findall(line):
                if re.search(r"/[A-Z]+\.", ref):  # a placeholder: schemas/NAME.json
                    continue
                if not (ROOT / ref).exists() and not (ROOT / "native" / ref).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {ref}")
    assert missing == []
