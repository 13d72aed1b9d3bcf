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
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

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

from rater.dev.brokerlib import (
    _NAME_RE,
    _SCRAM_SAFE_RE,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    JVM_HEAP,
    KAFKA_VERSION,
    SASL_LISTENER,
    SCRAM_MECHANISM,
    STATE_FILE,
    BrokerInfo,
    DevBrokerError,
    _alive,
    _check_java_version,
    _data_dir,
    _flock,
    _free_ports,
    _info,
    _is_our_broker,
    _java,
    _kafka_uuid,
    _log4j_config,
    _note,
    _port_free,
    _probe,
    _read_state,
    _server_properties,
    _signal_group,
    _tail,
    _wait_gone,
    _write_state,
    default_data_dir,
    ensure_jars,
    kafka_home,
)

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
            raise DevBrokerError(f"bad extra listener name {name!r}: use an upper-case name other than PLAINTEXT, CONTROLLER, SASL")
    users = dict(scram_users or {})
    for user, pw in users.items():
        if not _SCRAM_SAFE_RE.match(user) or not _SCRAM_SAFE_RE.match(pw):
            raise DevBrokerError(f'SCRAM user/password for {user!r} may not contain , [ ] = " or spaces')

    with _flock(d / ".lock"):
        state = _read_state(d) or {}
        pid = state.get("pid")
        if pid and _is_our_broker(int(pid), d):
            info = _info(d, state, True)
            if port is not None and port != info.port:
                raise DevBrokerError(f"a broker already runs for {d} on port {info.port}; stop it first")
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
                raise DevBrokerError(f"{d} holds Kafka storage but no usable {STATE_FILE}; delete the data dir to start afresh")
            missing = set(users) - set(state.get("scram_users") or ())
            if missing:
                raise DevBrokerError(f"storage in {d} was formatted without SCRAM users {sorted(missing)}; delete the data dir to add them")
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
            cmd = [java, "-Xmx256m", "-cp", cp, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(props)]
            for user in users_known:
                cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={users[user]}]"]
            _note(f"formatting Kafka storage in {d / 'data'}", quiet)
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=d, env=_java_env(d))
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
            java,
            *JVM_HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_log4j_config()}",
            f"-Dkafka.logs.dir={d / 'logs'}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(props),
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
                f"kafka broker not ready on {info.bootstrap} after {timeout:.0f}s ({why}); see {d / 'logs' / 'server.log'}"
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
        extra_listeners={k: int(v.rsplit(":", 1)[1]) for k, v in before.listeners.items() if k not in ("PLAINTEXT", SASL_LISTENER)},
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
    common.add_argument("--data-dir", default=None, help=f"broker data dir (default: {default_data_dir()})")
    common.add_argument("--json", action="store_true", help="print the broker info as JSON")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p_start = sub.add_parser("start", parents=[common], help="start (or find) the broker")
    p_start.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    p_start.add_argument(
        "--scram-user", action="append", metavar="USER:PASSWORD", help="add a SASL_PLAINTEXT SCRAM-SHA-512 listener with this user"
    )
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
            info = start(args.data_dir, port=args.port, scram_users=_parse_scram(args.scram_user), timeout=args.timeout, quiet=args.quiet)
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
