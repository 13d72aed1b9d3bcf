"""100,000 records through `rater rate`; the summary is checked against counts and charges
computed here independently (Fraction arithmetic, not the rater's code)."""

import math
import random
from fractions import Fraction

import orjson

from rater.cli.main import main

PLAN = """call_type,prefix,currency,rate_per_minute,connection_fee,first_increment,next_increment
international,44,USD,0.021,,60,60
international,4915,USD,0.0733,0.005,30,6
conference_dialout,1,USD,0.0133,,1,1
"""
DESTINATIONS = [  # (call_type, number, rate per minute, fee, first, next)
    ("international", "+442071234567", Fraction("0.021"), Fraction(0), 60, 60),
    ("international", "+4915112345678", Fraction("0.0733"), Fraction("0.005"), 30, 6),
    ("conference_dialout", "+12125550100", Fraction("0.0133"), Fraction(0), 1, 1),
]


def _expected_charge(seconds, rate, fee, first, nxt):
    if seconds == 0:
        return Fraction(0)
    billable = first if seconds <= first else first + math.ceil((seconds - first) / nxt) * nxt
    exact = rate * billable / 60
    micro = math.floor(exact * 1_000_000 + Fraction(1, 2))  # half up
    return fee + Fraction(micro, 1_000_000)


def test_a_hundred_thousand_records_run_and_the_summary_is_right(tmp_path, capsys):
    rng = random.Random(20261125)
    (tmp_path / "rates").mkdir()
    (tmp_path / "rates" / "vol-usd.csv").write_text(PLAN)
    lines = []
    tenants = [f"tenant-{i:03d}" for i in range(100)]
    for i, t in enumerate(tenants):
        lines.append(
            {
                "command_id": f"setup-{t}",
                "tenant_id": t,
                "command": "configure_account",
                "occurred_at": "2026-11-20T00:00:00Z",
                "rate_plan": "vol-usd",
            }
        )
        lines.append(
            {"command_id": f"funds-{t}", "tenant_id": t, "command": "add_funds", "occurred_at": "2026-11-20T00:00:00Z", "amount": "1000000"}
        )
    expected_charge = Fraction(0)
    counts = {"invalid_json": 0, "unknown_tenant": 0, "no_rate": 0, "duplicate": 0}
    cdrs = []
    while len(lines) < 100_000:
        roll = rng.random()
        if roll < 0.01:
            lines.append(b"{broken")
            counts["invalid_json"] += 1
        elif roll < 0.02:
            lines.append(
                {
                    "cdr_id": f"x{len(lines)}",
                    "tenant_id": "nobody",
                    "call_type": "international",
                    "to": "+442071234567",
                    "started_at": "2026-11-21T00:00:00Z",
                    "duration_seconds": 60,
                }
            )
            counts["unknown_tenant"] += 1
        elif roll < 0.025:
            lines.append(
                {
                    "cdr_id": f"n{len(lines)}",
                    "tenant_id": rng.choice(tenants),
                    "call_type": "toll_free",
                    "to": "+18005550100",
                    "started_at": "2026-11-21T00:00:00Z",
                    "duration_seconds": 60,
                }
            )
            counts["no_rate"] += 1
        elif roll < 0.035 and cdrs:
            lines.append(rng.choice(cdrs))
            counts["duplicate"] += 1
        else:
            call_type, number, rate, fee, first, nxt = rng.choice(DESTINATIONS)
            seconds = rng.choice([0, rng.randint(1, 30), rng.randint(1, 7200)])
            rec = {
                "cdr_id": f"c{len(lines)}",
                "tenant_id": rng.choice(tenants),
                "call_type": call_type,
                "to": number,
                "started_at": f"2026-11-21T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                "duration_seconds": seconds,
                "site": "x",
            }
            cdrs.append(rec)
            lines.append(rec)
            expected_charge += _expected_charge(seconds, rate, fee, first, nxt)
    with open(tmp_path / "in.jsonl", "wb") as f:
        for rec in lines:
            f.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
    code = main(
        [
            "rate",
            "--rates",
            str(tmp_path / "rates"),
            "--out",
            str(tmp_path / "out"),
            "--now",
            "2026-11-25T00:00:00Z",
            str(tmp_path / "in.jsonl"),
        ]
    )
    assert code == 0
    summary = capsys.readouterr().err.splitlines()
    rejected = counts["invalid_json"] + counts["unknown_tenant"] + counts["no_rate"]
    applied = 100_000 - rejected - counts["duplicate"]
    assert summary[0].startswith("100,000 records in ")
    assert summary[0].endswith(f"{applied:,} applied, {counts['duplicate']:,} duplicate, {rejected:,} rejected")
    assert summary[1] == (
        f"rejects: invalid_json {counts['invalid_json']:,}, no_rate {counts['no_rate']:,}, unknown_tenant {counts['unknown_tenant']:,}"
    )
    assert (expected_charge * 1_000_000).denominator == 1
    whole = int(expected_charge)
    micro = int((expected_charge - whole) * 1_000_000)
    assert summary[2] == f"charged: {whole}.{micro:06d} USD"
    assert summary[3] == "tenants below zero: 0"
