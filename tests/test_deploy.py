"""Offline checks of the deployment files: Dockerfile, docker-compose.yml,
Prometheus config, Grafana provisioning and dashboards.

No network and no Docker engine is needed.

(a) docker-compose.yml is valid Compose:
    * always: JSON-Schema validation against the Compose Specification schema
      vendored in tests/data/compose-spec.json (see its "$comment" for where
      it comes from), plus structural checks of what the stack needs;
    * when installed: ``docker-compose config -q`` (Debian's docker-compose
      package) and ``docker compose config -q`` (the docker CLI's compose
      plugin). Each of these skips, saying why, when its tool is absent.
(b) every build context, Dockerfile, COPY source and bind mount refers to a
    path that exists in the repository.
(c) every metric name used in a dashboard expression is listed in
    tests/data/metric_names.txt (the sample names the worker serves on
    /metrics; the worker's own tests check that list against real output).
(d) the Prometheus config and the Grafana provisioning files parse and point
    at services, mounts and files that exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = DATA / "compose-spec.json"
METRIC_NAMES_FILE = DATA / "metric_names.txt"
DASHBOARDS_DIR = ROOT / "dashboards"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

RATER_TOPICS = {
    "cdrs",
    "tenant-commands",
    "rated-cdrs",
    "balance-events",
    "recharge-requests",
    "rater-rejects",
    "notify-dead-letter",
}
REQUIRED_WORKER_HOST_PORTS = {"rater-1": 6066, "rater-2": 6067}
WORKER_ENV = {
    "RATER_BROKER": "kafka:9092",
    "RATER_PARTITIONS": "8",
    "RATER_RATES_DIR": "/app/rate_tables",
    "RATER_STATE_DIR": "/var/lib/rater",
    "RATER_WEB_HOST": "0.0.0.0",
    "RATER_WEB_PORT": "6066",
    "RATER_LOG_FORMAT": "json",
}


# --------------------------------------------------------------------------
# helpers


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def workers(services) -> list[str]:
    """Services running `rater worker` (rater-1, rater-2 and any added to scale out)."""
    return sorted(
        name
        for name, s in services.items()
        if (s.get("command") if isinstance(s.get("command"), list) else str(s.get("command")).split()) == ["worker"]
    )


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = item.partition("=")
            out[key] = value
        return out
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def is_bind_source(source: str) -> bool:
    """Short-syntax volume source: a path (bind mount) rather than a volume name."""
    return source.startswith((".", "/", "~"))


def mounts_of(service: dict) -> list[dict]:
    """Normalise a service's volumes to dicts with type/source/target/read_only."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) == 1:
                out.append({"type": "volume", "source": None, "target": parts[0], "read_only": False})
                continue
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append(
                {
                    "type": "bind" if is_bind_source(source) else "volume",
                    "source": source,
                    "target": target,
                    "read_only": "ro" in mode.split(","),
                }
            )
        else:
            out.append(
                {
                    "type": vol.get("type", "volume"),
                    "source": vol.get("source"),
                    "target": vol["target"],
                    "read_only": bool(vol.get("read_only", False)),
                }
            )
    return out


def host_path(source: str) -> Path:
    path = Path(source).expanduser()
    return path if path.is_absolute() else (ROOT / path)


def resolve_in_container(service: dict, container_path: str) -> Path | None:
    """Map a path inside a service's container to the repo path bind-mounted there."""
    target = PurePosixPath(container_path)
    best = None
    for mount in mounts_of(service):
        if mount["type"] != "bind":
            continue
        mount_target = PurePosixPath(mount["target"])
        if target == mount_target or mount_target in target.parents:
            if best is None or len(mount_target.parts) > len(PurePosixPath(best["target"]).parts):
                best = mount
    if best is None:
        return None
    rel = target.relative_to(PurePosixPath(best["target"]))
    return host_path(best["source"]) / Path(*rel.parts) if rel.parts else host_path(best["source"])


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


def container_ports(service: dict) -> dict[int, int]:
    """host port -> container port for short-syntax and long-syntax ports."""
    out = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out[int(port["published"])] = int(port["target"])
            continue
        parts = str(port).split(":")
        if len(parts) < 2:
            continue
        out[int(parts[-2])] = int(parts[-1].split("/")[0])
    return out


# --------------------------------------------------------------------------
# (a) docker-compose.yml is valid Compose


@pytest.fixture(scope="module")
def compose_validator():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The schema declares draft 2019-09 as "http://json-schema.org/draft/2019-09/schema#",
    # a spelling jsonschema does not map to its meta-schema; name the draft outright.
    cls = jsonschema.Draft201909Validator
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(validator, document) -> list[str]:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_compose_matches_vendored_compose_spec_schema(compose, compose_validator):
    errors = schema_errors(compose_validator, compose)
    assert not errors, "docker-compose.yml violates the Compose spec:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c["services"]["kafka"].update(imagee="typo"), id="unknown-service-key"),
        pytest.param(lambda c: c.update(servics={}), id="unknown-top-level-key"),
        pytest.param(
            lambda c: c["services"]["rater-1"]["depends_on"]["kafka"].update(condition="service_up"),
            id="bad-depends-on-condition",
        ),
        pytest.param(lambda c: c["services"]["kafka"].update(ports="29092:29092"), id="ports-not-a-list"),
    ],
)
def test_vendored_schema_rejects_broken_compose(compose, compose_validator, mutate):
    """Guard against a vacuous schema: known-bad variants must fail validation."""
    broken = json.loads(json.dumps(compose))
    mutate(broken)
    assert schema_errors(compose_validator, broken)


def _run_compose_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*argv, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_compose_config_with_debian_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (Debian: apt-get install docker-compose); schema validation still ran")
    result = _run_compose_cli([exe])
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stdout}\n{result.stderr}"


def test_compose_config_with_docker_compose_plugin():
    exe = shutil.which("docker")
    if exe is None:
        pytest.skip("docker CLI not installed; schema validation still ran")
    probe = subprocess.run([exe, "compose", "version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin (`docker compose version` failed); schema validation still ran")
    result = _run_compose_cli([exe, "compose"])
    assert result.returncode == 0, f"docker compose config failed:\n{result.stdout}\n{result.stderr}"


def test_compose_has_the_stack_services(services, workers):
    assert set(services) >= {"kafka", "kafka-init", "simulator", "prometheus", "grafana"}
    assert set(workers) >= set(REQUIRED_WORKER_HOST_PORTS)


def test_host_ports_are_unique(services):
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host_port in container_ports(service):
            assert host_port not in seen, f"host port {host_port} used by {seen[host_port]} and {name}"
            seen[host_port] = name


def test_depends_on_refers_to_existing_services(services):
    for name, service in services.items():
        for dep in depends_on(service):
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name


def test_kafka_is_single_node_kraft(services):
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = env_of(kafka)
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised
    host_listener = [l for l in advertised if l.endswith("://localhost:29092")]  # noqa: E741
    assert host_listener, "no listener advertised as localhost:29092 for host clients"
    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listener_names = {l.split("://")[0] for l in env["KAFKA_LISTENERS"].split(",")}  # noqa: E741
    assert listener_names <= set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listener_names
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert value == "1", f"{key} must be 1 on a single node"
    assert container_ports(kafka).get(29092) == 29092
    assert "healthcheck" in kafka and not kafka["healthcheck"].get("disable")


def test_init_service_creates_the_rater_topics(services):
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert depends_on(init) == {"kafka": "service_healthy"}
    script = (
        " ".join(init.get("entrypoint") or []) + " " + " ".join(init["command"] if isinstance(init["command"], list) else [init["command"]])
    )
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    assert "--create" in script and "--if-not-exists" in script
    env = env_of(init)
    assert set(env["TOPICS"].split()) == RATER_TOPICS
    # cdrs and tenant-commands are co-partitioned with the workers' tables.
    assert env["PARTITIONS"] == WORKER_ENV["RATER_PARTITIONS"]


def test_workers(services, workers, compose):
    state_volumes = set()
    for name in workers:
        worker = services[name]
        assert worker["build"]["context"] == "."
        env = env_of(worker)
        for key, value in WORKER_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, expected {value!r}"
        deps = depends_on(worker)
        assert deps.get("kafka-init") == "service_completed_successfully"
        ports = container_ports(worker)
        assert list(ports.values()) == [int(WORKER_ENV["RATER_WEB_PORT"])], f"{name}: {ports}"
        if name in REQUIRED_WORKER_HOST_PORTS:
            assert list(ports) == [REQUIRED_WORKER_HOST_PORTS[name]], f"{name}: {ports}"
        mounts = {m["target"]: m for m in mounts_of(worker)}
        rates = mounts[env["RATER_RATES_DIR"]]
        assert rates["type"] == "bind" and rates["read_only"]
        assert host_path(rates["source"]).resolve() == (ROOT / "rate_tables").resolve()
        state = mounts[env["RATER_STATE_DIR"]]
        assert state["type"] == "volume", f"{name}: state dir must be a named volume"
        assert state["source"] in (compose.get("volumes") or {}), f"undeclared volume {state['source']}"
        state_volumes.add(state["source"])
    assert len(state_volumes) == len(workers), "each worker needs its own state volume"


def test_every_worker_advertises_its_own_host_so_queries_are_forwarded(services, workers):
    """Without RATER_ADVERTISED_HOST every worker advertises its web host, 0.0.0.0, which
    the worker turns into 127.0.0.1: each would answer from its own store (issue 13)."""
    advertised = {}
    for name in workers:
        env = env_of(services[name])
        host = env.get("RATER_ADVERTISED_HOST")
        assert host, f"{name}: no RATER_ADVERTISED_HOST"
        assert host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"), f"{name}: {host}"
        # The name other containers resolve: the service name or its hostname.
        assert host in (name, services[name].get("hostname")), f"{name}: advertises {host}"
        advertised[name] = host
    assert len(set(advertised.values())) == len(workers) >= 2, advertised


def test_simulator(services):
    sim = services["simulator"]
    command = sim["command"] if isinstance(sim["command"], list) else sim["command"].split()
    assert command == ["simulate", "--broker", "kafka:9092", "--tenants", "200", "--rate", "200"]
    assert depends_on(sim).get("kafka-init") == "service_completed_successfully"
    assert sim.get("image") == services["rater-1"].get("image")
    # The image's HEALTHCHECK probes a worker's /healthz, which the simulator lacks.
    assert sim.get("healthcheck", {}).get("disable") is True


def test_notify_sends_to_mailpit_with_the_repository_contacts(services, compose):
    notify = services["notify"]
    command = notify["command"] if isinstance(notify["command"], list) else notify["command"].split()
    assert command == ["notify"]
    assert notify.get("image") == services["rater-1"].get("image")
    env = env_of(notify)
    assert env["RATER_BROKER"] == "kafka:9092"
    assert env["RATER_NOTIFY_SMTP_HOST"] in services
    mailpit = services[env["RATER_NOTIFY_SMTP_HOST"]]
    assert mailpit["image"].startswith("axllent/mailpit:")
    assert env["RATER_NOTIFY_SMTP_PORT"] == "1025"  # Mailpit's SMTP port
    assert resolve_in_container(notify, env["RATER_NOTIFY_CONTACTS"]) == ROOT / "deploy" / "notify" / "contacts.csv"
    # The image's HEALTHCHECK probes RATER_WEB_PORT (6066): notify serves /healthz there.
    assert env["RATER_NOTIFY_WEB_PORT"] == "6066" and env["RATER_NOTIFY_WEB_HOST"] == "0.0.0.0"
    assert list(container_ports(notify).values()) == [6066]
    state = {m["target"]: m for m in mounts_of(notify)}[env["RATER_NOTIFY_STATE_DIR"]]
    assert state["type"] == "volume" and state["source"] in (compose.get("volumes") or {})
    assert depends_on(notify).get("kafka-init") == "service_completed_successfully"
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert [t for sc in jobs["rater-notify"]["static_configs"] for t in sc["targets"]] == ["notify:6066"]


def test_the_compose_contacts_file_names_the_simulated_tenants():
    from rater.notify.contacts import load_contacts
    from rater.sim.traffic import tenant_id_of

    contacts = load_contacts(str(ROOT / "deploy" / "notify" / "contacts.csv"))
    assert sorted(contacts.emails) == sorted(tenant_id_of(i, 200) for i in range(200))


def test_named_volumes_are_declared(services, compose):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount["type"] == "volume" and mount["source"]:
                assert mount["source"] in declared, f"{name}: undeclared volume {mount['source']}"


# --------------------------------------------------------------------------
# (b) referenced files exist


def test_build_contexts_and_dockerfiles_exist(services):
    built = [name for name, s in services.items() if "build" in s]
    assert built, "no service is built from the Dockerfile"
    for name in built:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        context_dir = host_path(context)
        assert context_dir.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (context_dir / dockerfile).is_file(), f"{name}: {dockerfile} missing"


def test_bind_mount_sources_exist(services):
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount["type"] == "bind":
                assert host_path(mount["source"]).exists(), f"{name}: bind source {mount['source']} missing"


def test_stack_files_exist():
    for rel in [
        "rate_tables",
        "dashboards/rater.json",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/provisioning/datasources",
        "deploy/grafana/provisioning/dashboards",
    ]:
        assert (ROOT / rel).exists(), f"{rel} missing"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            keyword, _, args = buf.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def test_dockerfile_copy_sources_exist():
    copies = [args for kw, args in dockerfile_instructions() if kw in ("COPY", "ADD")]
    assert copies
    for args in copies:
        if args.startswith("["):
            parts = json.loads(args)
        else:
            parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_dockerfile_shape():
    instructions = dockerfile_instructions()
    by_kw: dict[str, list[str]] = {}
    for kw, args in instructions:
        by_kw.setdefault(kw, []).append(args)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    # Dependencies from the pins, before the code is copied (issue 13): a code change
    # does not rebuild the dependency layer, and the versions are those of CI.
    kinds = [kw + " " + args for kw, args in instructions]
    deps = next(i for i, k in enumerate(kinds) if k.startswith("RUN") and "pip install -c constraints.txt ." in k)
    code = next(i for i, k in enumerate(kinds) if k.startswith("COPY rater "))
    pkg = next(i for i, k in enumerate(kinds) if k.startswith("RUN") and "pip install --no-deps ." in k)
    assert deps < code < pkg
    assert "constraints.txt" in next(k for k in kinds[:deps] if k.startswith("COPY"))
    users = by_kw.get("USER", [])
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert json.loads(by_kw["ENTRYPOINT"][-1]) == ["rater"]
    assert "6066" in by_kw["EXPOSE"][-1].split()
    health = by_kw["HEALTHCHECK"][-1]
    assert "urllib" in health and "127.0.0.1" in health and "/healthz" in health and "6066" in health
    assert "curl" not in health


def test_pyproject_provides_what_the_image_uses():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    assert "rater" in project["scripts"], "ENTRYPOINT rater needs the console script"
    # RocksDB is the default store: a plain `pip install` must bring it (issue 13).
    assert any(d.split("==")[0] == "rocksdict" for d in project["dependencies"]), project["dependencies"]
    readme = project.get("readme")
    if isinstance(readme, str):
        assert (ROOT / readme).is_file(), f"pyproject readme {readme} is missing: pip install . fails"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".kafka", ".rater-state"} <= ignored
    # Nothing the Dockerfile copies is ignored.
    for kw, args in dockerfile_instructions():
        if kw == "COPY":
            for source in args.split()[:-1]:
                assert source not in ignored, source


def test_the_licence_file_is_the_declared_licence():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not name==version"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_constraints_pin_every_dependency_the_package_declares_at_its_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _constraints()
    declared = list(project["dependencies"]) + [d for ds in project["optional-dependencies"].values() for d in ds]
    for dep in declared:
        name, _, version = dep.partition("==")
        assert pins.get(name.lower()) == version, (dep, pins.get(name.lower()))
    # The transitive ones the issue names are pinned too.
    assert {"mode-streaming", "aiohttp", "yarl", "multidict", "venusian", "croniter"} <= set(pins)


def test_make_test_installs_with_the_constraints_and_without_the_bench_extras():
    makefile = (ROOT / "Makefile").read_text()
    venv_rule = makefile[makefile.index("$(STAMP): ") : makefile.index("@touch $(STAMP)")]
    assert "-c $(CONSTRAINTS)" in venv_rule and "'.[test]'" in venv_rule and "bench" not in venv_rule
    bench_rule = makefile[makefile.index("$(BENCH_STAMP): ") :]
    assert "-c $(CONSTRAINTS) -e '.[bench]'" in bench_rule.split("\n\n")[0]
    # make bench builds what make test builds (the native engine included: without it the
    # benchmark would measure the Python engine) and the bench extras besides.
    assert "\nbench: venv bench-venv\n" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# --------------------------------------------------------------------------
# (c) dashboard metric names are ones the worker serves

PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced in a PromQL expression (a careful approximation)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    # A selector written as {__name__="..."} names its metric in a string.
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", text):
        name = match.group(1)
        following = text[match.end() :].lstrip()
        if following.startswith("("):  # function or aggregation
            continue
        if name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


@pytest.mark.parametrize(
    "expr, expected",
    [
        ('sum by (outcome) (rate(rater_records_total{topic="cdrs"}[1m]))', {"rater_records_total"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(rater_processing_seconds_bucket[1m])))",
            {"rater_processing_seconds_bucket"},
        ),
        ("sum(rate(a_sum[5m])) by (x) / ignoring(y) sum(rate(a_count[5m] offset 1h))", {"a_sum", "a_count"}),
        ("time() - min(rater_rate_tables_loaded_timestamp_seconds)", {"rater_rate_tables_loaded_timestamp_seconds"}),
        ('sum(rater_tenants{state="negative", x=~"by|sum"}) * 1e3 > bool 0', {"rater_tenants"}),
        ('{__name__="rater_consumer_lag"}', {"rater_consumer_lag"}),
    ],
)
def test_promql_metric_name_extraction(expr, expected):
    assert promql_metric_names(expr) == expected


def metric_names_list() -> list[str]:
    lines = METRIC_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def iter_panels(panels):
    for panel in panels or []:
        yield panel
        yield from iter_panels(panel.get("panels"))


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in iter_panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                out.append((panel.get("title", "?"), target["expr"]))
    for var in (dashboard.get("templating") or {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            inner = re.search(r"\((.*)\)", query)
            if inner:
                out.append((f"${var.get('name')}", inner.group(1).split(",")[0]))
    return out


def test_metric_names_file_is_well_formed():
    names = metric_names_list()
    assert names and len(names) == len(set(names)), "metric_names.txt is empty or has duplicates"
    for name in names:
        assert re.fullmatch(r"rater_[a-z0-9_]+", name), f"bad metric name {name!r}"
    # prometheus_client serves a histogram as _bucket, _sum and _count together.
    for name in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                assert {f"{base}_bucket", f"{base}_sum", f"{base}_count"} <= set(names), base


def test_dashboard_metric_names_are_served():
    served = set(metric_names_list())
    files = dashboard_files()
    assert files, "no dashboards"
    missing = []
    for path in files:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        exprs = dashboard_exprs(dashboard)
        assert exprs, f"{path.name} has no PromQL expressions"
        for title, expr in exprs:
            for name in sorted(promql_metric_names(expr) - served):
                missing.append(f"{path.name} [{title}] {name} in {expr}")
    assert not missing, "metrics not in tests/data/metric_names.txt:\n" + "\n".join(missing)


REQUIRED_EXPRS = [
    'sum by (outcome) (rate(rater_records_total{topic="cdrs", instance=~"$instance"}[1m]))',
    'sum by (currency) (rate(rater_charged_total{instance=~"$instance"}[5m]))',
    'sum by (reason) (rate(rater_rejects_total{instance=~"$instance"}[5m]))',
    'sum by (type) (rate(rater_balance_events_total{instance=~"$instance"}[5m]))',
    'sum(rater_tenants{state="negative", instance=~"$instance"})',
    'sum by (topic, partition) (rater_consumer_lag{instance=~"$instance"})',
    'histogram_quantile(0.99, sum by (le) (rate(rater_processing_seconds_bucket{instance=~"$instance"}[1m])))',
    'histogram_quantile(0.50, sum by (le) (rate(rater_processing_seconds_bucket{instance=~"$instance"}[1m])))',
]


def test_rater_dashboard():
    dashboard = json.loads((DASHBOARDS_DIR / "rater.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "rater"
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = list(iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs = {" ".join(e.split()) for _, e in dashboard_exprs(dashboard)}
    for expr in REQUIRED_EXPRS:
        assert expr in exprs, f"dashboard lacks {expr}"
    used = set().union(*(promql_metric_names(e) for e in exprs))
    for family in ("rater_billable_seconds_total", "rater_rate_tables_info"):
        assert family in used, f"dashboard shows no {family}"
    types = {p["type"] for p in panels}
    assert {"timeseries", "stat"} <= types
    for panel in panels:
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert refs and len(refs) == len(set(refs)), f"panel {panel['title']}: bad refIds"


# --------------------------------------------------------------------------
# (d) Prometheus and Grafana configuration


def test_prometheus_config_scrapes_the_workers(services, workers):
    prometheus = services["prometheus"]
    mounts = {m["target"]: m for m in mounts_of(prometheus)}
    config_target = "/etc/prometheus/prometheus.yml"
    command = prometheus.get("command") or []
    if isinstance(command, str):
        command = command.split()
    for arg in command:
        if arg.startswith("--config.file="):
            config_target = arg.split("=", 1)[1]
    assert resolve_in_container(prometheus, config_target) == PROMETHEUS_CONFIG
    assert mounts[config_target]["read_only"]

    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    rater = jobs["rater"]
    assert rater.get("metrics_path", "/metrics") == "/metrics"
    assert rater["scrape_interval"] == "5s"
    targets = [t for sc in rater["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == sorted(f"{w}:{WORKER_ENV['RATER_WEB_PORT']}" for w in workers)
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, f"scrape target {target} is not a compose service"
        assert env_of(services[host])["RATER_WEB_PORT"] == port
    # Any file the config refers to must be mounted from the repo.
    for key in ("rule_files",):
        for pattern in config.get(key) or []:
            assert resolve_in_container(prometheus, pattern) is not None, f"{key} {pattern} not mounted"


def grafana_provisioning(kind: str) -> list[tuple[Path, dict]]:
    files = sorted((GRAFANA_PROVISIONING / kind).glob("*.y*ml"))
    assert files, f"no Grafana {kind} provisioning files"
    return [(path, load_yaml(path)) for path in files]


def test_grafana_mounts_provisioning_and_dashboards(services):
    grafana = services["grafana"]
    assert resolve_in_container(grafana, "/etc/grafana/provisioning") == GRAFANA_PROVISIONING
    assert resolve_in_container(grafana, "/var/lib/grafana/dashboards") == DASHBOARDS_DIR
    env = env_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert container_ports(grafana).get(3000) == 3000
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        resolved = resolve_in_container(grafana, home)
        assert resolved is not None and resolved.is_file(), f"home dashboard {home} not mounted"


def test_grafana_datasource_provisioning(services):
    datasources = []
    for path, doc in grafana_provisioning("datasources"):
        assert doc.get("apiVersion") == 1, path
        datasources.extend(doc.get("datasources") or [])
    prom = [ds for ds in datasources if ds.get("uid") == "prometheus"]
    assert len(prom) == 1, "exactly one datasource with uid 'prometheus'"
    ds = prom[0]
    assert ds["type"] == "prometheus"
    url = urlsplit(ds["url"])
    assert url.hostname in services, f"datasource url {ds['url']} is not a compose service"
    assert container_ports(services[url.hostname]).get(url.port) == url.port


def test_grafana_dashboard_provider_points_at_mounted_dashboards(services):
    grafana = services["grafana"]
    providers = []
    for path, doc in grafana_provisioning("dashboards"):
        assert doc.get("apiVersion") == 1, path
        providers.extend(doc.get("providers") or [])
    assert providers
    for provider in providers:
        assert provider.get("type", "file") == "file"
        container_dir = provider["options"]["path"]
        repo_dir = resolve_in_container(grafana, container_dir)
        assert repo_dir is not None, f"provider path {container_dir} is not mounted into grafana"
        assert repo_dir.is_dir() and list(repo_dir.glob("*.json")), f"no dashboards in {repo_dir}"


def test_dashboards_use_provisioned_datasources():
    provisioned = {ds.get("uid") for _, doc in grafana_provisioning("datasources") for ds in doc.get("datasources") or []}
    builtin = {"-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"}
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        # A datasource variable of the dashboard stands for any Prometheus datasource; its
        # default must be a provisioned one.
        variables = set()
        for var in (dashboard.get("templating") or {}).get("list", []):
            if var.get("type") == "datasource":
                assert var["query"] == "prometheus", path.name
                assert var["current"]["value"] in provisioned, f"{path.name}: default {var['current']} not provisioned"
                variables |= {f"${var['name']}", f"${{{var['name']}}}"}
        provisioned_or_var = provisioned | variables
        holders = list(iter_panels(dashboard.get("panels")))
        holders += [t for p in holders for t in p.get("targets") or []]
        holders += (dashboard.get("annotations") or {}).get("list", [])
        holders += (dashboard.get("templating") or {}).get("list", [])
        for holder in holders:
            ds = holder.get("datasource")
            if ds is None:
                continue
            uid = ds.get("uid") if isinstance(ds, dict) else ds
            assert uid in provisioned_or_var | builtin, f"{path.name}: unknown datasource {ds!r}"


def test_rater_dashboard_has_datasource_and_instance_variables_used_by_every_query():
    dashboard = json.loads((DASHBOARDS_DIR / "rater.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["datasource"]["uid"] == "${datasource}"
    assert instance["includeAll"] and instance["multi"] and instance["allValue"] == ".*"
    assert "instance" in instance["definition"]
    for panel in iter_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            expr = target["expr"]
            # Every selector of a worker metric is narrowed to the chosen workers.
            selectors = re.findall(r"\b(rater_[a-z0-9_]+)(\{[^}]*\})?", expr)
            assert selectors, expr
            for name, matchers in selectors:
                assert 'instance=~"$instance"' in matchers, f"{panel['title']}: {name} in {expr}"
