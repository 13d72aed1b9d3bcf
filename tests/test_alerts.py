"""The alert rules in deploy/prometheus/rules/ (issue 15, item 3).

Offline, always: the rules parse, each alert the on-call runbook (docs/deploy.md) names
is there with a severity and its texts, every metric an expression names is one the
worker serves (tests/data/metric_names.txt, which tests/test_worker.py checks against a
real worker's /metrics), and the compose Prometheus loads the file.

Names that are not the worker's are allowed only as listed here: ``up`` (Prometheus'
own, per scrape target) and ``rater_notify_*``, exported by ``rater notify`` (SPEC 11),
which owns those names and checks them in its own tests.

With promtool (``make promtool`` builds it from the Prometheus Go module into
``.tools/bin``; or any promtool on PATH): ``promtool check rules`` and ``promtool test
rules`` on deploy/prometheus/tests/, where each alert is shown firing, and not firing,
on hand-made series. Without promtool those two tests skip, saying how to get it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.test_deploy import (
    COMPOSE_FILE,
    PROMETHEUS_CONFIG,
    ROOT,
    load_yaml,
    metric_names_list,
    mounts_of,
    promql_metric_names,
    resolve_in_container,
)

RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
ALERTS = {
    "RaterWorkerDown": "page",
    "RaterConsumerLagGrowing": "page",
    "RaterRejectRateHigh": "ticket",
    "RaterProcessingP99High": "ticket",
    "RaterTenantsBelowZeroRising": "ticket",
    "RaterNotificationsDeadLettered": "ticket",
}
PROMETHEUS_OWN = {"up"}
NOTIFIER_PREFIX = "rater_notify_"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.rules.yml"))


def rules() -> list[dict]:
    out = []
    for path in rule_files():
        doc = load_yaml(path)
        for group in doc["groups"]:
            out.extend(group["rules"])
    return out


def test_the_rules_parse_and_name_each_alert_once_with_severity_and_texts():
    assert rule_files(), "no *.rules.yml in deploy/prometheus/rules"
    for path in rule_files():
        doc = load_yaml(path)
        assert set(doc) == {"groups"}, path
        for group in doc["groups"]:
            assert group["name"] and group["rules"], path
    names = [r["alert"] for r in rules()]
    assert sorted(names) == sorted(ALERTS), names
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert rule["labels"]["severity"] == ALERTS[rule["alert"]]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        # Balanced brackets: a cheap guard where promtool is absent.
        for open_, close in ("()", "{}", "[]"):
            assert rule["expr"].count(open_) == rule["expr"].count(close), (rule["alert"], open_)


def test_every_metric_a_rule_names_is_served_by_the_worker_or_owned_by_the_notifier():
    served = set(metric_names_list())
    missing = []
    for rule in rules():
        for name in sorted(promql_metric_names(rule["expr"])):
            if name in served or name in PROMETHEUS_OWN or name.startswith(NOTIFIER_PREFIX):
                continue
            missing.append(f"{rule['alert']}: {name}")
    assert missing == [], "metrics the worker does not serve:\n" + "\n".join(missing)
    # The dead-letter alert is on the notifier's counter, by channel.
    dead = next(r for r in rules() if r["alert"] == "RaterNotificationsDeadLettered")
    assert promql_metric_names(dead["expr"]) == {"rater_notify_dead_lettered_total"}


def test_the_compose_prometheus_loads_the_rules():
    config = load_yaml(PROMETHEUS_CONFIG)
    patterns = config.get("rule_files") or []
    assert patterns, "prometheus.yml has no rule_files"
    prometheus = load_yaml(COMPOSE_FILE)["services"]["prometheus"]
    loaded = set()
    for pattern in patterns:
        directory = resolve_in_container(prometheus, str(PurePosixPath(pattern).parent))
        assert directory is not None, f"rule_files {pattern} is not mounted into the prometheus container"
        loaded |= {p for p in directory.iterdir() if fnmatch.fnmatch(p.name, PurePosixPath(pattern).name)}
    assert set(rule_files()) <= loaded, "a rules file the compose Prometheus does not load"
    assert not any(p.parent == RULE_TESTS_DIR for p in loaded), "rule tests must not be loaded as rules"
    for mount in mounts_of(prometheus):
        if mount["type"] == "bind":
            assert mount["read_only"], mount


def promtool() -> str:
    found = shutil.which("promtool") or str(ROOT / ".tools" / "bin" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.skip("promtool not found: `make promtool` builds it (Go and the Go module proxy, a few minutes)")
    return found


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_promtool_check_rules():
    result = run([promtool(), "check", "rules", *map(str, rule_files())])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_shows_each_alert_firing_and_not():
    tests = sorted(RULE_TESTS_DIR.glob("*.test.yml"))
    assert tests
    covered = set()
    for path in tests:
        for case in yaml.safe_load(path.read_text())["tests"]:
            covered |= {a["alertname"] for a in case.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert covered == set(ALERTS), f"alerts no rule test shows firing: {set(ALERTS) - covered}"
    result = run([promtool(), "test", "rules", *map(str, tests)])
    assert result.returncode == 0, result.stdout + result.stderr
