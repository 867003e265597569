"""A real redis-server for the tier's tests: started on a unix socket in a
private directory, persistence off, stopped (or killed) by the test.

The binary comes from the distribution (``apt-get install redis-server``,
which ``.ci/run`` does); without it the tests that need one are skipped
with that advice.  ``HERDCACHE_REDIS_SERVER`` names another binary
(valkey-server, say).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

#: How long a server may take to start answering before the test fails.
START_DEADLINE = 20.0


def server_binary() -> str | None:
    """The redis-server (or valkey-server) to run, or None."""
    return shutil.which(os.environ.get("HERDCACHE_REDIS_SERVER", "redis-server")) or shutil.which("valkey-server")


class RedisServer:
    """One redis-server process on a unix socket, for one test or session."""

    def __init__(self) -> None:
        binary = server_binary()
        assert binary is not None, "no redis-server: apt-get install redis-server"
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="hc-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.proc: subprocess.Popen | None = None
        self._stats_client: redis.Redis | None = None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        args = [self.binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_DEADLINE
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode} at start")
            try:
                if self.client(socket_timeout=1.0).ping():
                    return self
            except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError) as exc:
                last = exc
            # An observable state (the socket answering) is what we wait for;
            # this pause only spaces out the probes.
            time.sleep(0.01)
        raise RuntimeError(f"{self.binary} did not answer PING within {START_DEADLINE} s: {last}")

    def client(self, **kwargs) -> redis.Redis:
        """A fresh client of this server (RESP3)."""
        return redis.Redis(unix_socket_path=self.socket, protocol=3, **kwargs)

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=START_DEADLINE)
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (killing a paused one) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=START_DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def commandstats(self) -> dict[str, int]:
        """calls per command name (lowercase), from INFO commandstats."""
        if self._stats_client is None:  # one connection: a new one would count a HELLO
            self._stats_client = self.client()
        info = self._stats_client.info("commandstats")
        return {name[len("cmdstat_"):]: int(v["calls"]) for name, v in info.items()}
