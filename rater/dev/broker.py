"""A real single-node Apache Kafka 4.x broker for development and tests.

The broker runs from the jars published on Maven Central (no Docker, no tarball):

* jars: fetched on first use with Maven from ``kafka/pom.xml`` (kafka_2.13 4.1.1 plus the
  log4j2 SLF4J binding) into ``.kafka/libs`` under the repo root, or ``$RATER_KAFKA_HOME/libs``;
* mode: KRaft, one process acting as broker *and* controller, listening on 127.0.0.1 only;
* data dir (default ``.kafka/dev`` under the repo root) holds everything of one broker::

      server.properties   generated config (rewritten on every start)
      broker.json         state file: pid, ports, cluster id, bootstrap address
      data/               Kafka log.dirs (topic partitions + KRaft metadata log)
      logs/               broker logs (server.log, state-change.log), see kafka/log4j2.yaml
      kafka.out           the JVM's own stdout/stderr (normally empty)

The java process runs in its own session / process group, detached from the caller, so
``rater dev-broker start`` can exit while the broker keeps running; ``stop`` finds it
again through ``broker.json``.  Storage is formatted once per data dir; a later ``start``
on the same dir (``restart``) reuses it, and its ports, so topics and committed offsets
survive a broker restart.

Optionally a SASL_PLAINTEXT listener with SCRAM-SHA-512 is added (``scram_users``); the
credentials are written into the metadata log at format time (StorageTool ``--add-scram``).

Python API: :func:`start`, :func:`stop`, :func:`status`, :func:`restart`, :func:`ensure_jars`.
CLI: :func:`cli` (``rater dev-broker start|stop|status|restart``), also
``python -m rater.dev.broker ...``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from rater.dev import procs

__all__ = [
    "BrokerInfo",
    "DevBrokerError",
    "KAFKA_VERSION",
    "cli",
    "default_data_dir",
    "ensure_jars",
    "kafka_home",
    "restart",
    "start",
    "status",
    "stop",
]

KAFKA_VERSION = "4.1.1"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0
STATE_FILE = "broker.json"
SASL_LISTENER = "SASL"
SCRAM_MECHANISM = "SCRAM-SHA-512"
JVM_HEAP = ("-Xms256m", "-Xmx512m")

_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SCRAM_SAFE_RE = re.compile(r"^[^,\[\]=\"\s]+$")


class DevBrokerError(RuntimeError):
    """A problem the user can act on (missing tool, port in use, broker died...).

    The message is one line meant to be printed as ``rater: <message>`` without a
    traceback.
    """


@dataclasses.dataclass(frozen=True)
class BrokerInfo:
    """Where a dev broker is (or was) and whether it runs."""

    bootstrap: str | None  # "127.0.0.1:PORT" of the PLAINTEXT listener
    pid: int | None  # java process id (also its process-group id); None if stopped
    data_dir: Path | None
    running: bool = False
    port: int | None = None
    controller_port: int | None = None
    cluster_id: str | None = None
    sasl_bootstrap: str | None = None  # SASL_PLAINTEXT/SCRAM-SHA-512 listener, if any
    scram_users: tuple[str, ...] = ()
    listeners: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> host:port
    log_file: Path | None = None
    started_at: float | None = None
    managed: bool = True  # False for an external broker (e.g. RATER_TEST_BOOTSTRAP)

    def describe(self) -> str:
        if not self.running:
            where = f" (data dir {self.data_dir})" if self.data_dir else ""
            return f"kafka dev broker is stopped{where}"
        parts = [f"kafka dev broker running: bootstrap {self.bootstrap}"]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.sasl_bootstrap:
            parts.append(f"sasl {self.sasl_bootstrap} ({SCRAM_MECHANISM})")
        extra = {k: v for k, v in self.listeners.items() if k not in ("PLAINTEXT", SASL_LISTENER)}
        for name, addr in extra.items():
            parts.append(f"{name.lower()} {addr}")
        if self.data_dir:
            parts.append(f"data dir {self.data_dir}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data_dir"] = str(self.data_dir) if self.data_dir else None
        d["log_file"] = str(self.log_file) if self.log_file else None
        d["scram_users"] = list(self.scram_users)
        d["listeners"] = dict(self.listeners)
        return d


# ---------------------------------------------------------------------------- locations


def repo_root() -> Path:
    """The source tree holding ``kafka/pom.xml`` (rater is installed editable)."""
    env = os.environ.get("RATER_REPO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent.parent
    if (here / "kafka" / "pom.xml").is_file():
        return here
    cwd = Path.cwd().resolve()
    if (cwd / "kafka" / "pom.xml").is_file():
        return cwd
    return here


def kafka_home() -> Path:
    """Where the jars live: ``$RATER_KAFKA_HOME`` or ``<repo>/.kafka``."""
    env = os.environ.get("RATER_KAFKA_HOME")
    return Path(env).resolve() if env else repo_root() / ".kafka"


def default_data_dir() -> Path:
    return repo_root() / ".kafka" / "dev"


def _libs_dir() -> Path:
    return kafka_home() / "libs"


def _pom_path() -> Path:
    return repo_root() / "kafka" / "pom.xml"


def _log4j_config() -> Path:
    return repo_root() / "kafka" / "log4j2.yaml"


def _data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()


# ---------------------------------------------------------------------------- tools


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    found = shutil.which("java")
    if not found:
        raise DevBrokerError(
            "java not found; install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"
        )
    return found


def _check_java_version(java: str) -> None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        raise DevBrokerError(f"cannot run {java} -version: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if m:
        major = int(m.group(1))
        if major == 1 and m.group(2):
            major = int(m.group(2))
        if major < 17:
            raise DevBrokerError(
                f"Kafka {KAFKA_VERSION} needs Java 17+, {java} is Java {major}; "
                "install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"
            )


def _mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise DevBrokerError(
            "mvn not found; install Maven 3.8+ (apt-get install maven) to fetch the Kafka jars"
        )
    return found


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _note(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"rater: {msg}", file=sys.stderr, flush=True)


def ensure_jars(quiet: bool = False) -> Path:
    """Return the libs dir, fetching the broker jars with Maven if missing/outdated."""
    pom = _pom_path()
    if not pom.is_file():
        raise DevBrokerError(f"{pom} not found; run from the rater source tree or set RATER_REPO_ROOT")
    libs = _libs_dir()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = libs / ".complete"

    def complete() -> bool:
        return marker.is_file() and marker.read_text().strip() == digest

    if complete():
        return libs
    with _flock(kafka_home() / ".fetch.lock"):
        if complete():
            return libs
        mvn = _mvn()
        _note(f"fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} (first use)...", quiet)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=kafka_home()))
        try:
            cmd = [
                mvn, "-B", "-q", "-f", str(pom),
                "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
                detail = " | ".join(line.strip() for line in tail if line.strip())
                raise DevBrokerError(
                    f"Maven could not fetch the Kafka jars (exit {proc.returncode}): {detail}"
                )
            if not any(tmp.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
                raise DevBrokerError(f"Maven ran but kafka_2.13-{KAFKA_VERSION}.jar is missing in {tmp}")
            (tmp / ".complete").write_text(digest + "\n")
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(tmp, libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


# ---------------------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)  # a zombie child of ours still answers kill(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in (None, "Z", "X")


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """Alive and really the java of this data dir (guards against pid reuse)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    props = str(data_dir / "server.properties").encode()
    return b"kafka.Kafka" in cmdline and props in cmdline


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # java leads its own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


# ---------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int, avoid: set[int]) -> list[int]:
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            if p not in avoid and p not in ports:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


# ---------------------------------------------------------------------------- wire protocol


def _kafka_request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"rater-devbroker"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    payload = _recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", payload[:4])
    if got_corr != corr:
        raise OSError(f"correlation id mismatch {got_corr} != {corr}")
    return payload[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _probe(port: int, timeout: float = 5.0) -> tuple[bool, str]:
    """ApiVersions v0 + Metadata v4 against 127.0.0.1:port.

    Ready means: the broker answers ApiVersions without error and its Metadata response
    lists at least one broker (itself) and a cluster id, i.e. it has caught up with the
    KRaft metadata log and is unfenced.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            resp = _kafka_request(sock, 18, 0, 1, b"")  # ApiVersions v0
            (err,) = struct.unpack(">h", resp[:2])
            if err != 0:
                return False, f"ApiVersions error {err}"
            # Metadata v4: topics=[] (none), allow_auto_topic_creation=false
            resp = _kafka_request(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
            pos = 4  # throttle_time_ms
            (n_brokers,) = struct.unpack_from(">i", resp, pos)
            pos += 4
            for _ in range(max(n_brokers, 0)):
                pos += 4  # node_id
                (hl,) = struct.unpack_from(">h", resp, pos)
                pos += 2 + hl + 4  # host, port
                (rl,) = struct.unpack_from(">h", resp, pos)
                pos += 2 + max(rl, 0)  # rack (nullable)
            (cl,) = struct.unpack_from(">h", resp, pos)
            if n_brokers < 1 or cl < 0:
                return False, "metadata lists no broker yet"
            return True, "ok"
    except (OSError, struct.error) as exc:
        return False, str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------- state


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevBrokerError(f"cannot read {path}: {exc}") from None


def _write_state(data_dir: Path, state: Mapping[str, Any]) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _info(data_dir: Path, state: Mapping[str, Any] | None, running: bool) -> BrokerInfo:
    if not state:
        return BrokerInfo(bootstrap=None, pid=None, data_dir=data_dir, running=False)
    listeners = dict(state.get("listeners") or {})
    return BrokerInfo(
        bootstrap=listeners.get("PLAINTEXT"),
        pid=state.get("pid") if running else None,
        data_dir=data_dir,
        running=running,
        port=state.get("port"),
        controller_port=state.get("controller_port"),
        cluster_id=state.get("cluster_id"),
        sasl_bootstrap=listeners.get(SASL_LISTENER),
        scram_users=tuple(state.get("scram_users") or ()),
        listeners=listeners,
        log_file=data_dir / "logs" / "server.log",
        started_at=state.get("started_at") if running else None,
    )


def _kafka_uuid() -> str:
    """A Kafka cluster id, as ``StorageTool random-uuid`` makes (base64url, 22 chars)."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def _server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    sasl_port: int | None,
    extra: Mapping[str, int],
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    protocol_map = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
    if sasl_port is not None:
        listeners.append(f"{SASL_LISTENER}://127.0.0.1:{sasl_port}")
        protocol_map.append(f"{SASL_LISTENER}:SASL_PLAINTEXT")
    for name, p in extra.items():
        listeners.append(f"{name}://127.0.0.1:{p}")
        protocol_map.append(f"{name}:PLAINTEXT")
    lines = [
        "# Generated by rater/dev/broker.py on every start; edits are overwritten.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(listeners)}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={','.join(protocol_map)}",
        f"log.dirs={data_dir / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "share.coordinator.state.topic.num.partitions=1",
        "group.initial.rebalance.delay.ms=0",
        "min.insync.replicas=1",
        # frugal on a 2-core machine
        "num.network.threads=2",
        "num.io.threads=4",
        "background.threads=4",
        "num.recovery.threads.per.data.dir=1",
        "log.cleaner.threads=1",
        "log.cleaner.dedupe.buffer.size=16777216",
    ]
    if sasl_port is not None:
        lower = SASL_LISTENER.lower()
        mech = SCRAM_MECHANISM.lower()
        lines += [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.{lower}.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.{lower}.{mech}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    return "\n".join(lines) + "\n"


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [ln for ln in lines if " ERROR " in ln or "Exception" in ln] or lines
    return " | ".join(ln.strip()[:300] for ln in interesting[-n:])


# ---------------------------------------------------------------------------- API


def status(data_dir: str | os.PathLike[str] | None = None) -> BrokerInfo:
    """State of the broker of ``data_dir``: ``running`` is True only if its java lives."""
    d = _data_dir(data_dir)
    state = _read_state(d)
    pid = state.get("pid") if state else None
    running = bool(pid) and _is_our_broker(int(pid), d)
    return _info(d, state, running)


def start(
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    extra_listeners: Mapping[str, int | None] | None = None,
    *,
    scram_users: Mapping[str, str] | None = None,
    controller_port: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    die_with_parent: bool = False,
    quiet: bool = False,
) -> BrokerInfo:
    """Start (or find already running) the dev broker of ``data_dir``; wait until ready.

    * ``port``: the PLAINTEXT port; a free one if None (on a restart, the previous one).
    * ``extra_listeners``: more PLAINTEXT listeners, ``{"NAME": port or None}``; NAME is
      upper-case (not PLAINTEXT/CONTROLLER/SASL); their addresses are in ``info.listeners``.
    * ``scram_users``: ``{"user": "password"}`` adds a SASL_PLAINTEXT listener
      (``info.sasl_bootstrap``) with SCRAM-SHA-512 credentials created at format time.
    * ``die_with_parent``: the broker gets SIGTERM if the calling process dies (for test
      fixtures); otherwise it is fully detached and outlives the caller.

    Storage is formatted once; starting again on a formatted dir reuses it (and its
    controller port, which the KRaft voter record remembers).
    """
    d = _data_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_listeners or {})
    for name in extra:
        if not _NAME_RE.match(name) or name in ("PLAINTEXT", "CONTROLLER", SASL_LISTENER):
            raise DevBrokerError(f"bad extra listener name {name!r}: use an upper-case name "
                                 "other than PLAINTEXT, CONTROLLER, SASL")
    users = dict(scram_users or {})
    for user, pw in users.items():
        if not _SCRAM_SAFE_RE.match(user) or not _SCRAM_SAFE_RE.match(pw):
            raise DevBrokerError(f"SCRAM user/password for {user!r} may not contain , [ ] = \" or spaces")

    with _flock(d / ".lock"):
        state = _read_state(d) or {}
        pid = state.get("pid")
        if pid and _is_our_broker(int(pid), d):
            info = _info(d, state, True)
            if port is not None and port != info.port:
                raise DevBrokerError(
                    f"a broker already runs for {d} on port {info.port}; stop it first"
                )
            missing = set(users) - set(info.scram_users)
            if missing:
                raise DevBrokerError(f"a broker already runs for {d} without SCRAM users {sorted(missing)}; stop it first")
            _wait_ready(d, info, int(pid), timeout)
            _note(f"already running: {info.describe()}", quiet)
            return info

        java = _java()
        libs = ensure_jars(quiet=quiet)
        _check_java_version(java)

        formatted = (d / "data" / "meta.properties").is_file()
        if not formatted and (d / "data").exists():
            shutil.rmtree(d / "data")  # a half-finished format
        if formatted:
            cluster_id = state.get("cluster_id")
            controller_port = controller_port or state.get("controller_port")
            if not cluster_id or not controller_port:
                raise DevBrokerError(f"{d} holds Kafka storage but no usable {STATE_FILE}; "
                                     "delete the data dir to start afresh")
            missing = set(users) - set(state.get("scram_users") or ())
            if missing:
                raise DevBrokerError(f"storage in {d} was formatted without SCRAM users "
                                     f"{sorted(missing)}; delete the data dir to add them")
            users_known = list(state.get("scram_users") or ())
        else:
            cluster_id = _kafka_uuid()
            users_known = sorted(users)

        # Ports: explicit > previous run's > free.
        prev_listeners = state.get("listeners") or {}

        def prev_port(name: str) -> int | None:
            addr = prev_listeners.get(name)
            return int(addr.rsplit(":", 1)[1]) if addr else None

        want: dict[str, int | None] = {
            "PLAINTEXT": port if port is not None else prev_port("PLAINTEXT"),
            "CONTROLLER": controller_port,
        }
        if users_known:
            want[SASL_LISTENER] = prev_port(SASL_LISTENER)
        for name, p in extra.items():
            want[name] = p if p else prev_port(name)
        explicit = {"PLAINTEXT": port, "CONTROLLER": controller_port, **extra}
        for name, p in list(want.items()):
            if p is None:
                continue
            if not _port_free(p):
                if explicit.get(name) or (name == "CONTROLLER" and formatted):
                    raise DevBrokerError(f"port {p} ({name.lower()} listener) is in use")
                want[name] = None  # previous port taken meanwhile: pick another
        taken = {p for p in want.values() if p}
        fresh = iter(_free_ports(sum(1 for p in want.values() if not p), taken))
        ports = {name: (p or next(fresh)) for name, p in want.items()}

        props = d / "server.properties"
        props.write_text(
            _server_properties(
                d,
                ports["PLAINTEXT"],
                ports["CONTROLLER"],
                ports.get(SASL_LISTENER),
                {k: v for k, v in ports.items() if k not in ("PLAINTEXT", "CONTROLLER", SASL_LISTENER)},
            )
        )
        (d / "logs").mkdir(exist_ok=True)
        cp = f"{libs}/*"

        if not formatted:
            cmd = [java, "-Xmx256m", "-cp", cp, "kafka.tools.StorageTool", "format",
                   "--standalone", "-t", cluster_id, "-c", str(props)]
            for user in users_known:
                cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={users[user]}]"]
            _note(f"formatting Kafka storage in {d / 'data'}", quiet)
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  cwd=d, env=_java_env(d))
            if proc.returncode != 0:
                detail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
                raise DevBrokerError(f"kafka StorageTool format failed: {detail}")

        listeners = {name: f"127.0.0.1:{p}" for name, p in ports.items() if name != "CONTROLLER"}
        state = {
            "kafka_version": KAFKA_VERSION,
            "cluster_id": cluster_id,
            "port": ports["PLAINTEXT"],
            "controller_port": ports["CONTROLLER"],
            "listeners": listeners,
            "scram_users": users_known,
            "pid": None,
        }
        cmd = [
            java, *JVM_HEAP,
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_log4j_config()}",
            f"-Dkafka.logs.dir={d / 'logs'}",
            "-cp", cp, "kafka.Kafka", str(props),
        ]
        out = open(d / "kafka.out", "ab")
        try:
            child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=d,
                env=_java_env(d),
                start_new_session=True,  # own session + process group, no controlling tty
                close_fds=True,
                preexec_fn=procs.die_with_parent if die_with_parent else None,
            )
        finally:
            out.close()
        state["pid"] = child.pid
        state["started_at"] = time.time()
        _write_state(d, state)
        info = _info(d, state, True)
        try:
            _wait_ready(d, info, child.pid, timeout)
        except BaseException:
            _signal_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                child.wait(10)
            state["pid"] = None
            _write_state(d, state)
            raise
        _note(info.describe(), quiet)
        return info


def _java_env(d: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Keep stray JVM options of the caller (or of Kafka scripts) out of the broker.
    for var in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH"):
        env.pop(var, None)
    env["LOG_DIR"] = str(d / "logs")
    return env


def _wait_ready(d: Path, info: BrokerInfo, pid: int, timeout: float) -> None:
    assert info.port is not None
    deadline = time.monotonic() + timeout
    why = "not started"
    while True:
        if not _alive(pid):
            detail = _tail(d / "logs" / "server.log") or _tail(d / "kafka.out")
            raise DevBrokerError(f"kafka broker exited during startup (see {d / 'logs'}): {detail}")
        ok, why = _probe(info.port, timeout=2.0)
        if ok:
            return
        if time.monotonic() > deadline:
            raise DevBrokerError(
                f"kafka broker not ready on {info.bootstrap} after {timeout:.0f}s ({why}); "
                f"see {d / 'logs' / 'server.log'}"
            )
        time.sleep(0.25)


def stop(
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    *,
    kill: bool = False,
    quiet: bool = False,
) -> bool:
    """Stop the broker of ``data_dir``: SIGTERM, wait ``timeout``, then SIGKILL.

    ``kill=True`` sends SIGKILL at once (a crash, for fault tests). The storage and the
    state file (ports, cluster id) stay for a later :func:`start`. Returns whether a
    running broker was stopped.
    """
    d = _data_dir(data_dir)
    with _flock(d / ".lock") if d.is_dir() else contextlib.nullcontext():
        state = _read_state(d)
        pid = state.get("pid") if state else None
        if not pid or not _is_our_broker(int(pid), d):
            if state and pid:
                state["pid"] = None
                _write_state(d, state)
            _note(f"kafka dev broker is not running (data dir {d})", quiet)
            return False
        pid = int(pid)
        if kill:
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
        else:
            _signal_group(pid, signal.SIGTERM)
            if not _wait_gone(pid, timeout):
                _note(f"broker pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL", quiet)
                _signal_group(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        if _alive(pid):
            raise DevBrokerError(f"kafka broker pid {pid} does not die")
        state["pid"] = None
        state.pop("started_at", None)
        _write_state(d, state)
        _note(f"kafka dev broker stopped (pid {pid})", quiet)
        return True


def restart(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    kill: bool = False,
    down_for: float = 0.0,
    timeout: float = DEFAULT_START_TIMEOUT,
    quiet: bool = False,
) -> BrokerInfo:
    """Stop (SIGTERM, or SIGKILL with ``kill=True``) and start again on the same data dir
    and ports, reusing the formatted storage; ``down_for`` seconds of outage in between."""
    d = _data_dir(data_dir)
    before = status(d)
    stop(d, kill=kill, quiet=quiet)
    if down_for > 0:
        time.sleep(down_for)
    return start(
        d,
        port=before.port,
        extra_listeners={k: int(v.rsplit(":", 1)[1]) for k, v in before.listeners.items()
                         if k not in ("PLAINTEXT", SASL_LISTENER)},
        timeout=timeout,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------- CLI


def _parse_scram(values: Sequence[str] | None) -> dict[str, str]:
    users: dict[str, str] = {}
    for v in values or ():
        user, sep, pw = v.partition(":")
        if not sep or not user or not pw:
            raise DevBrokerError(f"--scram-user wants USER:PASSWORD, got {v!r}")
        users[user] = pw
    return users


def cli(argv: Sequence[str] | None = None, prog: str = "rater dev-broker") -> int:
    """``rater dev-broker start|stop|status|restart [--data-dir D] [--port P]``.

    ``start`` prints the bootstrap address on stdout (progress goes to stderr), so
    ``BOOTSTRAP=$(rater dev-broker start)`` works. ``status`` exits 0 if running, 3 if not.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Run a local single-node Kafka broker.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,restart}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None,
                        help=f"broker data dir (default: {default_data_dir()})")
    common.add_argument("--json", action="store_true", help="print the broker info as JSON")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p_start = sub.add_parser("start", parents=[common], help="start (or find) the broker")
    p_start.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    p_start.add_argument("--scram-user", action="append", metavar="USER:PASSWORD",
                         help="add a SASL_PLAINTEXT SCRAM-SHA-512 listener with this user")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    p_stop = sub.add_parser("stop", parents=[common], help="stop the broker")
    p_stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT)
    p_stop.add_argument("--kill", action="store_true", help="SIGKILL at once")
    sub.add_parser("status", parents=[common], help="is the broker running?")
    p_restart = sub.add_parser("restart", parents=[common], help="stop, then start on the same ports")
    p_restart.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    p_restart.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    args = parser.parse_args(argv)

    def emit(info: BrokerInfo) -> None:
        if args.json:
            print(json.dumps(info.to_dict(), sort_keys=True))
        elif args.command in ("start", "restart"):
            print(info.bootstrap)
        else:
            print(info.describe())

    try:
        if args.command == "start":
            info = start(args.data_dir, port=args.port, scram_users=_parse_scram(args.scram_user),
                         timeout=args.timeout, quiet=args.quiet)
            emit(info)
            return 0
        if args.command == "restart":
            emit(restart(args.data_dir, kill=args.kill, timeout=args.timeout, quiet=args.quiet))
            return 0
        if args.command == "stop":
            stop(args.data_dir, timeout=args.timeout, kill=args.kill, quiet=args.quiet)
            if args.json:
                emit(status(args.data_dir))
            return 0
        info = status(args.data_dir)
        emit(info)
        return 0 if info.running else 3
    except DevBrokerError as exc:
        print(f"rater: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:], prog="python -m rater.dev.broker"))
