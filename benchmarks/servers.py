"""Local redis-server and memcached for the benchmarks, as context managers.

Each server runs as a child of the benchmark, in a fresh temporary directory,
reachable only from this machine: redis-server on a unix socket and on
127.0.0.1 at a random free port, memcached on a unix socket only (memcached's
``-s`` turns its network listener off). Nothing is persisted: redis-server
runs with ``--save '' --appendonly no``. Leaving the ``with`` block stops the
server and removes the directory.

    with RedisServer() as redis_server:
        client = redis.Redis(unix_socket_path=redis_server.unix_socket)

If the server's binary is not installed, entering raises
:class:`ServerUnavailable`, whose message says what to install; the
benchmarks print it and skip that peer.

Run ``python benchmarks/servers.py`` to start both, print where they listen,
and stop them again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class ServerUnavailable(RuntimeError):
    """A peer server cannot be started here (missing binary, failed start)."""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unix_socket_answers(path: Path, request: bytes, expected: bytes) -> bool:
    """True if a server on the unix socket ``path`` answers ``request`` with ``expected``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(path))
            conn.sendall(request)
            return conn.recv(64).startswith(expected)
    except OSError:
        return False


class _LocalServer:
    """A server process in its own temporary directory, started and stopped by ``with``."""

    binary = ""
    apt_package = ""
    # A request sent on the unix socket and the start of the answer that
    # shows the server is ready.
    probe_request = b""
    probe_answer = b""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.unix_socket: Path | None = None
        self.process: subprocess.Popen | None = None

    def arguments(self) -> list[str]:
        """The server's command-line arguments (after the binary)."""
        raise NotImplementedError

    def version(self) -> str:
        """The server's version line (``ServerUnavailable`` if it is not installed)."""
        out = subprocess.run(
            [self._binary_path(), "--version"], capture_output=True, text=True, check=False
        )
        return (out.stdout or out.stderr).strip()

    def _binary_path(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise ServerUnavailable(
                f"{self.binary} is not installed (apt-get install -y {self.apt_package}, "
                "or run benchmarks/install-peers.sh)"
            )
        return path

    def __enter__(self):
        binary = self._binary_path()
        self.directory = Path(tempfile.mkdtemp(prefix=f"herdcache-bench-{self.binary}-"))
        self.unix_socket = self.directory / f"{self.binary}.sock"
        log = open(self.directory / "server.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [binary, *self.arguments()],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
        )
        self._log = log
        try:
            self._wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(
                    f"{self.binary} exited with {self.process.returncode} at start: "
                    + self._log_tail()
                )
            if _unix_socket_answers(self.unix_socket, self.probe_request, self.probe_answer):
                return
            time.sleep(0.02)
        raise ServerUnavailable(f"{self.binary} did not answer within {START_TIMEOUT_S} s")

    def _log_tail(self) -> str:
        log_path = self.directory / "server.log"
        return log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer(_LocalServer):
    """redis-server on a unix socket and 127.0.0.1:<random port>, without persistence."""

    binary = "redis-server"
    apt_package = "redis-server"
    probe_request = b"PING\r\n"
    probe_answer = b"+PONG"

    def __init__(self) -> None:
        super().__init__()
        self.host = "127.0.0.1"
        self.port = free_loopback_port()

    def arguments(self) -> list[str]:
        return [
            "--bind", self.host,
            "--port", str(self.port),
            "--unixsocket", str(self.unix_socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip

    def url(self) -> str:
        """A redis-py URL for the unix socket."""
        return f"unix://{self.unix_socket}"


class MemcachedServer(_LocalServer):
    """memcached on a unix socket only (no TCP or UDP listener)."""

    binary = "memcached"
    apt_package = "memcached"
    probe_request = b"version\r\n"
    probe_answer = b"VERSION"

    def __init__(self, memory_mib: int = 1024) -> None:
        super().__init__()
        self.memory_mib = memory_mib

    def arguments(self) -> list[str]:
        arguments = [
            "--unix-socket", str(self.unix_socket),
            "--unix-mask", "700",
            "--memory-limit", str(self.memory_mib),
        ]  # fmt: skip
        if os.geteuid() == 0:
            arguments += ["--user", "root"]  # memcached refuses to run as root otherwise
        return arguments


def main() -> None:
    for server_class in (RedisServer, MemcachedServer):
        try:
            with server_class() as server:
                where = f"unix socket {server.unix_socket}"
                if isinstance(server, RedisServer):
                    where += f" and {server.host}:{server.port}"
                print(f"{server.version()}: up on {where}; stopping")
        except ServerUnavailable as exc:
            print(f"{server_class.binary}: skipped: {exc}")


if __name__ == "__main__":
    main()
