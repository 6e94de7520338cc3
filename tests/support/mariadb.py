"""Real MariaDB servers for the record store tests (Debian's ``mariadb-server``).

Each server gets its own data directory under a temp dir (``mariadb-install-db``,
about half a second), listens on a free loopback port only, keeps its socket in
that temp dir, and has a real test user with a password: the adapter connects
over TCP the way production does. Root, with no password, is reachable only
through the server's own socket; tests use it to make one database per test.

``stop`` and ``start`` again keep the data directory and the port, so a test can
take a shard server down and bring the same server back.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port, require_binary, stop_process, wait_for_port

USER = "pinhole"
PASSWORD = "pinhole-test-password"
# The test user may create and use every database whose name starts with this.
DATABASE_PREFIX = "pinhole_t"
_databases = itertools.count()

# Small buffers and redo log (26 MB of data directory, not 114): many servers at
# once on a shared 2-core machine.
_SIZES = ("--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M")
_SERVER_OPTIONS = (
    *_SIZES,
    "--skip-log-bin",
    "--skip-name-resolve",
    "--performance-schema=OFF",
    "--max-connections=200",
)


def _as_user() -> list[str]:
    """mariadbd refuses to run as root unless told to; as anyone else it runs as them."""
    return ["--user=root"] if os.geteuid() == 0 else []


def _server_binary() -> str:
    # Debian puts mariadbd in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mariadbd", path="/usr/sbin:/sbin") or require_binary("mariadbd")


@dataclass
class MariaDbServer:
    """One ``mariadbd`` we started, with its data directory under ``workdir``."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.workdir / "mariadb.sock"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mariadb.log"

    def url(self, database: str) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server on its port and wait until it answers SQL."""
        if self.running:
            return
        self.proc = subprocess.Popen(
            [
                _server_binary(),
                "--no-defaults",
                f"--datadir={self.datadir}",
                *_as_user(),
                "--bind-address=127.0.0.1",
                f"--port={self.port}",
                f"--socket={self.socket_path}",
                f"--pid-file={self.workdir / 'mariadb.pid'}",
                f"--log-error={self.log_path}",
                *_SERVER_OPTIONS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout, proc=self.proc)
            # Listening comes a moment before the grant tables are loaded.
            deadline = time.monotonic() + timeout
            while True:
                done = self._client("SELECT 1", check=False)
                if done.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mariadb never answered: {done.stderr!r}")
                time.sleep(0.1)
        except BaseException as exc:
            self.kill()
            raise RuntimeError(f"mariadb did not start:\n{self.log_tail()}") from exc

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            stop_process(self.proc, timeout=30)
            self.proc = None

    def kill(self) -> None:
        """What a crashed server looks like to its clients (SIGKILL)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self, timeout: float = 10.0) -> None:
        """A hung server (SIGSTOP): connections are accepted by the kernel, never
        answered. Returns once every thread has stopped: a signal is delivered
        asynchronously, and a query sent just after kill() could still be answered."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + timeout
        while not all(_stopped(task) for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"mariadbd {self.proc.pid} did not stop")
            time.sleep(0.01)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def sql(self, statements: str) -> str:
        """Run SQL as root through the server's own socket; its output, tab-separated."""
        done = self._client(statements, check=True)
        return done.stdout

    def create_database(self) -> str:
        """A new, empty database only the caller uses; its name."""
        name = f"{DATABASE_PREFIX}{next(_databases)}"
        self.sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        self.databases.append(name)
        return name

    def _client(self, statements: str, *, check: bool) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                require_binary("mariadb"),
                "--no-defaults",
                f"--socket={self.socket_path}",
                "--user=root",
                "--batch",
                "--skip-column-names",
                "-e",
                statements,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"mariadb client failed: {done.stderr.strip()}")
        return done


def _stopped(task: Path) -> bool:
    try:
        stat = (task / "stat").read_text()
    except FileNotFoundError:  # the thread exited
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def start_mariadb() -> MariaDbServer:
    """A fresh server with the test user, listening on 127.0.0.1 only."""
    workdir = Path(tempfile.mkdtemp(prefix="pinhole-mariadb-"))
    server = MariaDbServer(free_port(), workdir)
    try:
        install = subprocess.run(
            [
                require_binary("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={server.datadir}",
                *_as_user(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *_SIZES,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{install.stdout}\n{install.stderr}")
        server.start()
        server.sql(
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            f" GRANT ALL PRIVILEGES ON `{DATABASE_PREFIX}%`.* TO '{USER}'@'127.0.0.1';"
        )
    except BaseException:
        server.remove()
        raise
    return server
