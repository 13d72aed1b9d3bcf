"""The parts of the dev broker (``rater/dev/broker.py``) below its API: where its files live,
Java and Maven and the broker's jars, its process, free ports, a Kafka ApiVersions probe,
its state file and its ``server.properties``."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

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
        raise DevBrokerError("java not found; install OpenJDK 17 (apt-get install openjdk-17-jre-headless)")
    return found


def _check_java_version(java: str) -> None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
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
        raise DevBrokerError("mvn not found; install Maven 3.8+ (apt-get install maven) to fetch the Kafka jars")
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
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
                detail = " | ".join(line.strip() for line in tail if line.strip())
                raise DevBrokerError(f"Maven could not fetch the Kafka jars (exit {proc.returncode}): {detail}")
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
        # a deleted topic's files go after a second, not a minute: the benchmark waits for
        # them before it times its next phase (bench/run.py ``settle``)
        "log.segment.delete.delay.ms=1000",
    ]
    if sasl_port is not None:
        lower = SASL_LISTENER.lower()
        mech = SCRAM_MECHANISM.lower()
        lines += [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.{lower}.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.{lower}.{mech}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    return "\n".join(lines) + "\n"


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [ln for ln in lines if " ERROR " in ln or "Exception" in ln] or lines
    return " | ".join(ln.strip()[:300] for ln in interesting[-n:])
