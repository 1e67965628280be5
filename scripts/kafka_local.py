"""Run a real, single-node Apache Kafka broker (KRaft, broker+controller) on loopback.

Stdlib only, so it runs with any ``python3 >= 3.11`` (no venv needed). Used by
``scripts/kafka-local`` (CLI) and by ``tests/integration/conftest.py`` (pytest).

The broker is the genuine Apache Kafka 3.9.1 from Maven Central: ``ensure_jars()`` resolves
the jars listed by ``scripts/kafka/pom.xml`` once into
``${CRM_KAFKA_CACHE:-~/.cache/crm-triggers}/kafka-3.9.1/libs`` (re-resolved when pom.xml
changes). Needs Java 17 and Maven on PATH; if either is missing or the download fails this
raises ``KafkaLocalError``; there is no fake fallback.

CLI::

    scripts/kafka-local start [--fresh]   # background broker; prints KAFKA_BOOTSTRAP=...
    scripts/kafka-local status            # exit 0 when running, 1 when not
    scripts/kafka-local env               # eval "$(scripts/kafka-local env)"
    scripts/kafka-local stop
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
POM = SCRIPTS_DIR / "kafka" / "pom.xml"
LOG4J_CONFIG = SCRIPTS_DIR / "kafka" / "log4j.properties"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
STATE_DIR = REPO_ROOT / ".cache" / "kafka-local"
HOST = "127.0.0.1"
STARTED_LINE = "Kafka Server started"
STAMP_NAME = ".pom-sha256"
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


class KafkaLocalError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def kafka_version(pom: Path = POM) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise KafkaLocalError(f"no <kafka.version> property in {pom}")
    return match.group(1).strip()


def cache_root() -> Path:
    configured = os.environ.get("CRM_KAFKA_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "crm-triggers"


def _tail(text: str, lines: int = 40) -> str:
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(clean.rstrip().splitlines()[-lines:])


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home, "bin", "java"), os.X_OK):
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise KafkaLocalError(
            "java not found (JAVA_HOME unset and no java on PATH): the local Kafka broker "
            "needs a Java 17 runtime, e.g. `apt-get install openjdk-17-jre-headless`"
        )
    return found


def _libs_ok(libs: Path, digest: str, version: str) -> bool:
    stamp = libs / STAMP_NAME
    return (
        stamp.is_file()
        and stamp.read_text().strip() == digest
        and (libs / f"kafka_2.13-{version}.jar").is_file()
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(pom: Path = POM) -> Path:
    """Return the folder of Kafka's runtime jars, resolving them with Maven on first use."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    version = kafka_version(pom)
    base = cache_root() / f"kafka-{version}"
    libs = base / "libs"
    if _libs_ok(libs, digest, version):
        return libs
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if _libs_ok(libs, digest, version):  # another process resolved them meanwhile
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaLocalError(
                "mvn not found on PATH: Maven is needed once to fetch the Apache Kafka jars "
                "from Maven Central, e.g. `apt-get install maven`"
            )
        _java()
        _say(f"fetching Apache Kafka {version} from Maven Central (first run only)...")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="resolve-", dir=base))
        try:
            shutil.copyfile(pom, work / "pom.xml")
            cmd = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={work / 'libs'}",
                "-DincludeScope=runtime",
            ]
            try:
                proc = subprocess.run(
                    cmd, cwd=work, capture_output=True, text=True, timeout=900, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise KafkaLocalError(f"timed out after 900 s: {' '.join(cmd)}") from exc
            if proc.returncode != 0:
                raise KafkaLocalError(
                    f"fetching Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                    + _tail(proc.stdout + proc.stderr)
                )
            resolved = work / "libs"
            if not (resolved / f"kafka_2.13-{version}.jar").is_file():
                raise KafkaLocalError(
                    f"`{' '.join(cmd)}` succeeded but kafka_2.13-{version}.jar is missing "
                    f"from {resolved}\n" + _tail(proc.stdout + proc.stderr)
                )
            (resolved / STAMP_NAME).write_text(digest + "\n")
            stale = base / f"libs.old-{os.getpid()}"
            if libs.exists():
                libs.rename(stale)
            resolved.rename(libs)
            shutil.rmtree(stale, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        jars = list(libs.glob("*.jar"))
        size_mb = sum(j.stat().st_size for j in jars) / 1e6
        _say(
            f"fetched {len(jars)} jars ({size_mb:.0f} MB) into {libs} "
            f"in {time.monotonic() - started:.1f} s"
        )
    return libs


def free_ports(count: int) -> list[int]:
    """Ports that were free on loopback just now (all bound at once, so they are distinct)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def random_cluster_id() -> str:
    """16 random bytes, url-safe base64 without padding (what StorageTool random-uuid does)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return cid


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    return f"""\
# written by scripts/kafka_local.py: one combined broker+controller node on loopback
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# a single node can only hold one replica of the internal topics; transactions need these
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
num.network.threads=2
num.io.threads=4
"""


def _log_tail(log_dir: Path, lines: int = 40) -> str:
    parts = []
    for name in ("server.log", "kafka.out"):
        path = log_dir / name
        if path.is_file() and path.stat().st_size:
            text = path.read_text(errors="replace")
            parts.append(f"--- last {lines} lines of {path} ---\n{_tail(text, lines)}")
    return "\n".join(parts) or f"(no log output in {log_dir})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); treat it as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def terminate_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the broker's process group, SIGKILL after ``timeout``; for a pid not our child."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


class Broker:
    """One Kafka broker+controller JVM on 127.0.0.1.

    ``start()`` picks two free ports on first use and keeps them, so ``stop()`` followed by
    ``start()`` (or ``restart()``) brings the broker back on the same bootstrap address with
    the same data dir. With ``detach=False`` (the default) the JVM gets SIGTERM when the
    Python process exits, even if it dies without running cleanup.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        detach: bool = False,
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.detach = detach
        self.data_dir: Path | None = None
        self.log_dir: Path | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise KafkaLocalError("broker has not been started yet")
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, data_dir: Path, log_dir: Path, *, timeout: float = 60.0) -> str:
        """Start the broker and block until it serves clients; return the bootstrap address."""
        if self.running:
            raise KafkaLocalError(f"broker already running (pid {self.pid})")
        libs = ensure_jars()
        java = _java()
        data_dir, log_dir = Path(data_dir).resolve(), Path(log_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None or self.controller_port is None:
            self.port, self.controller_port = free_ports(2)
        self.data_dir, self.log_dir = data_dir, log_dir
        props = log_dir / "server.properties"
        props.write_text(server_properties(self.port, self.controller_port, data_dir))
        jvm = [
            java,
            *JVM_OPTS,
            f"-Dkafka.logs.dir={log_dir}",
            f"-Dlog4j.configuration=file:{LOG4J_CONFIG}",
            "-cp",
            f"{libs}/*",
        ]
        began = time.monotonic()
        if not (data_dir / "meta.properties").is_file():
            self._format(jvm, props, log_dir)
        server_log = log_dir / "server.log"
        log_offset = server_log.stat().st_size if server_log.is_file() else 0
        cmd = [*jvm, "kafka.Kafka", str(props)]
        setpriv = shutil.which("setpriv")
        if not self.detach and setpriv is not None and sys.platform == "linux":
            cmd = [setpriv, "--pdeathsig", "SIGTERM", *cmd]  # exec()s java: same pid
        with (log_dir / "kafka.out").open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=log_dir,
                start_new_session=True,
            )
        if not self.detach and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        try:
            self._wait_ready(server_log, log_offset, timeout)
        except BaseException:
            self.stop(timeout=5)
            raise
        self.start_seconds = time.monotonic() - began
        return self.bootstrap

    def _format(self, jvm: list[str], props: Path, log_dir: Path) -> None:
        cmd = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            random_cluster_id(),
            "-c",
            str(props),
            "--ignore-formatted",
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, cwd=log_dir
        )
        if proc.returncode != 0:
            raise KafkaLocalError(
                f"formatting KRaft storage failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                + _tail(proc.stdout + proc.stderr)
            )

    def _wait_ready(self, server_log: Path, offset: int, timeout: float) -> None:
        assert self._proc is not None and self.port is not None and self.log_dir is not None
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            code = self._proc.poll()
            if code is not None:
                raise KafkaLocalError(
                    f"Kafka broker exited with code {code} during startup\n"
                    + _log_tail(self.log_dir)
                )
            if not logged and server_log.is_file():
                with server_log.open("rb") as handle:
                    if handle.seek(0, os.SEEK_END) < offset:
                        offset = 0  # log was truncated or replaced
                    handle.seek(offset)
                    logged = STARTED_LINE.encode() in handle.read()
            if logged and port_open(self.port):
                return
            if time.monotonic() > deadline:
                raise KafkaLocalError(
                    f"Kafka broker not ready after {timeout:.0f} s "
                    f"(logged {STARTED_LINE!r}: {logged}, port {self.port} open: "
                    f"{port_open(self.port)})\n" + _log_tail(self.log_dir)
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps the JVM."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        else:  # the JVM is gone; still clear anything left in its group
            _signal_group(proc.pid, signal.SIGKILL)

    def restart(self, *, stop_timeout: float = 15.0, start_timeout: float = 60.0) -> str:
        """Stop, then start again on the same ports and data dir."""
        if self.data_dir is None or self.log_dir is None:
            raise KafkaLocalError("restart() before start()")
        self.stop(timeout=stop_timeout)
        return self.start(self.data_dir, self.log_dir, timeout=start_timeout)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=10)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------
# CLI: one background broker per checkout, state in <repo>/.cache/kafka-local/


def _read_state() -> dict[str, object] | None:
    path = STATE_DIR / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(state: dict[str, object]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_DIR / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(STATE_DIR / "state.json")


def _state_int(state: dict[str, object], key: str) -> int | None:
    value = state.get(key)
    return value if isinstance(value, int) else None


def _running_pid(state: dict[str, object] | None) -> int | None:
    """The pid from the state file, if it is still our Kafka JVM."""
    if state is None:
        return None
    pid = _state_int(state, "pid")
    if pid is None or not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    if cmdline and ("kafka.Kafka" not in cmdline or str(state.get("config")) not in cmdline):
        return None  # pid was reused by something else
    return pid


def cmd_start(fresh: bool) -> int:
    state = _read_state()
    pid = _running_pid(state)
    if state is not None and pid is not None:
        print(f"kafka-local: already running (pid {pid})", file=sys.stderr)
        print(f"KAFKA_BOOTSTRAP={state['bootstrap']}")
        return 0
    data_dir, log_dir = STATE_DIR / "data", STATE_DIR / "logs"
    if fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    port = controller_port = None
    if state is not None and data_dir.is_dir():  # reuse the last ports if still free
        old = (_state_int(state, "port"), _state_int(state, "controller_port"))
        if all(p is not None and not port_open(p) for p in old):
            port, controller_port = old
    broker = Broker(port=port, controller_port=controller_port, detach=True)
    bootstrap = broker.start(data_dir, log_dir)
    state = {
        "pid": broker.pid,
        "bootstrap": bootstrap,
        "port": broker.port,
        "controller_port": broker.controller_port,
        "data_dir": str(data_dir),
        "log_dir": str(log_dir),
        "config": str(log_dir / "server.properties"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_state(state)
    print(
        f"kafka-local: started Kafka {kafka_version()} (pid {broker.pid}) in "
        f"{broker.start_seconds:.1f} s; data {data_dir}, logs {log_dir}",
        file=sys.stderr,
    )
    print(f"KAFKA_BOOTSTRAP={bootstrap}")
    return 0


def cmd_status() -> int:
    state = _read_state()
    pid = _running_pid(state)
    if state is None or pid is None:
        print("kafka-local: not running")
        return 1
    port = _state_int(state, "port")
    if port is None or not port_open(port):
        print(f"kafka-local: pid {pid} is alive but port {port} does not accept connections")
        return 1
    print(f"kafka-local: running (pid {pid}), KAFKA_BOOTSTRAP={state['bootstrap']}")
    print(f"  data {state.get('data_dir')}, logs {state.get('log_dir')}")
    return 0


def cmd_env() -> int:
    state = _read_state()
    if state is None or _running_pid(state) is None:
        print("kafka-local: not running (start it with scripts/kafka-local start)", file=sys.stderr)
        return 1
    print(f"export KAFKA_BOOTSTRAP={state['bootstrap']}")
    return 0


def cmd_stop(timeout: float) -> int:
    state = _read_state()
    pid = _running_pid(state)
    if pid is None:
        print("kafka-local: not running")
    else:
        terminate_pid(pid, timeout)
        if _pid_alive(pid):
            print(f"kafka-local: pid {pid} did not exit", file=sys.stderr)
            return 1
        print(f"kafka-local: stopped (pid {pid})")
    if state is not None:  # keep ports and data so the next start reuses KAFKA_BOOTSTRAP
        _write_state({**state, "pid": None})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kafka-local", description="Run a local Apache Kafka broker on 127.0.0.1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a background broker (idempotent)")
    start.add_argument("--fresh", action="store_true", help="wipe the data and logs first")
    sub.add_parser("status", help="exit 0 if running and accepting connections, else 1")
    sub.add_parser("env", help="print `export KAFKA_BOOTSTRAP=...` for eval")
    stop = sub.add_parser("stop", help="stop the broker (idempotent)")
    stop.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return cmd_status()
        if args.command == "env":
            return cmd_env()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with _locked(STATE_DIR / ".lock"):  # one start/stop at a time per checkout
            if args.command == "start":
                return cmd_start(args.fresh)
            return cmd_stop(args.timeout)
    except KafkaLocalError as exc:
        print(f"kafka-local: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
