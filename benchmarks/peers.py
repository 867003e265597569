"""One adapter per cache that benchmarks/cache.py compares, all with one tiny interface.

    peer.setup()          create the store (start its server, open its files)
    peer.get(key)         the value stored under key, or None
    peer.set(key, value)  store value (a dict) under key
    peer.delete(key)      remove key
    peer.teardown()       close and remove everything setup() made

and, around the forked readers of the throughput test, three hooks that do
nothing unless a peer needs them (named after os.register_at_fork's):

    peer.before_fork()        in the parent, before the readers are forked
    peer.after_fork_child()   in each reader, before its first get
    peer.after_fork_parent()  in the parent, once the readers are done

Keys are ``str``. Values are dicts; every peer but herdcache packs them with
msgpack on set and unpacks them on get, so each measurement includes the
same serialization work (herdcache does it inside, with msgpack too).

``cross_process`` says whether a write in one process is read by another:
only those peers take part in the multi-reader throughput test.
"""

from __future__ import annotations

import functools
import multiprocessing
import shutil
import tempfile
from contextlib import ExitStack

import msgpack
from _common import PeerUnavailable, load_herdcache, package_version
from servers import MemcachedServer, RedisServer, ServerUnavailable

SHM = "/dev/shm"


def _import(module: str, pip_name: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise PeerUnavailable(
            f"Python package {pip_name} is not installed (pip install {pip_name})"
        ) from None


def _unpack(packed: bytes | None):
    return None if packed is None else msgpack.unpackb(packed)


class Peer:
    name = ""  # as printed in the tables
    option = ""  # as given to --only
    cross_process = False
    version = ""

    def setup(self) -> None:
        raise NotImplementedError

    def get(self, key: str):
        raise NotImplementedError

    def set(self, key: str, value) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def before_fork(self) -> None:
        """Close what must not be open in the parent while readers fork."""

    def after_fork_child(self) -> None:
        """Reopen, in a forked reader, what must not be shared with the parent."""

    def after_fork_parent(self) -> None:
        """Reopen, in the parent, what before_fork() closed."""


class _PackedMapping(Peer):
    """A peer over a dict-like ``self.data`` holding msgpack'd bytes."""

    def get(self, key):
        return _unpack(self.data.get(key))

    def set(self, key, value):
        self.data[key] = msgpack.packb(value)

    def delete(self, key):
        self.data.pop(key, None)


class _PackedClient(Peer):
    """A peer over a ``self.client`` whose get/set/delete take msgpack'd bytes."""

    def get(self, key):
        return _unpack(self.client.get(key))

    def set(self, key, value):
        self.client.set(key, msgpack.packb(value))

    def delete(self, key):
        self.client.delete(key)


class Herdcache(Peer):
    """herdcache.Cache on an anonymous segment, shared with forked readers."""

    name = "herdcache"
    option = "herdcache"
    cross_process = True

    def __init__(self, size: str = "256MiB") -> None:
        self.size = size

    def setup(self) -> None:
        herdcache = load_herdcache("get", "set", "delete", "stats", "close")
        self.version = herdcache.__version__
        self.cache = herdcache.Cache(size=self.size)

    def get(self, key):
        return self.cache.get(key)

    def set(self, key, value):
        self.cache.set(key, value)

    def delete(self, key):
        self.cache.delete(key)

    def teardown(self):
        self.cache.close()

    def bytes_per_entry(self) -> float:
        stats = self.cache.stats()
        return stats["bytes_used"] / max(1, stats["entries"])


class DictMsgpack(_PackedMapping):
    """The floor: a dict of msgpack'd bytes in this process."""

    name = "dict+msgpack"
    option = "dict"

    def setup(self):
        self.version = f"msgpack {package_version('msgpack')}"
        self.data: dict[str, bytes] = {}


class LruCache(Peer):
    """functools.lru_cache(maxsize=None) around "look the key up in a dict of
    msgpack'd bytes and unpack it": the private per-process memo.

    get-hit measures lru_cache's own lookup, which hands back the object it
    unpacked the first time (no unpacking, no copy: the caller shares it).
    get-miss is an lru_cache miss that calls the wrapped lookup, which raises
    KeyError (exceptions are not cached, so every miss pays the call). set only
    writes the backing dict: lru_cache has no set and no per-key invalidation
    (only cache_clear()), so its set time is not reported.
    """

    name = "functools.lru_cache"
    option = "lru"
    supports_set = False

    def setup(self):
        self.version = "stdlib"
        self.backing: dict[str, bytes] = {}
        self.cached = functools.lru_cache(maxsize=None)(self._load)

    def _load(self, key):
        return msgpack.unpackb(self.backing[key])

    def get(self, key):
        try:
            return self.cached(key)
        except KeyError:
            return None

    def set(self, key, value):
        self.backing[key] = msgpack.packb(value)

    def delete(self, key):
        self.backing.pop(key, None)
        self.cached.cache_clear()


class _TempDirPeer(Peer):
    """A peer whose store lives in a fresh directory under /dev/shm."""

    def make_directory(self) -> str:
        self.directory = tempfile.mkdtemp(prefix=f"herdcache-bench-{self.name}-", dir=SHM)
        return self.directory

    def teardown(self):
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        raise NotImplementedError


class Diskcache(_PackedClient, _TempDirPeer):
    """diskcache.Cache (SQLite plus files) in a directory on /dev/shm."""

    name = "diskcache"
    option = "diskcache"
    cross_process = True

    def setup(self):
        self.diskcache = _import("diskcache", "diskcache")
        self.version = package_version("diskcache")
        self.client = self.diskcache.Cache(self.make_directory())

    def after_fork_child(self):
        # SQLite connections must not cross fork(): open the directory anew.
        self.client = self.diskcache.Cache(self.directory)

    def close(self):
        self.client.close()


class Lmdb(_TempDirPeer):
    """py-lmdb on /dev/shm: one read transaction per get, one write transaction per set."""

    name = "lmdb"
    option = "lmdb"
    cross_process = True

    def setup(self):
        self.lmdb = _import("lmdb", "lmdb")
        self.version = package_version("lmdb")
        self.env = self._open(self.make_directory())

    def _open(self, directory):
        # No fsync: /dev/shm is memory, and the other peers do not persist either.
        return self.lmdb.open(directory, map_size=1 << 30, sync=False, metasync=False)

    # LMDB forbids using an environment across fork() (and opening one twice
    # in a process): the parent closes it while its readers fork, and every
    # process opens its own.
    def before_fork(self):
        self.env.close()

    def after_fork_child(self):
        self.env = self._open(self.directory)

    after_fork_parent = after_fork_child

    def get(self, key):
        with self.env.begin() as txn:
            return _unpack(txn.get(key.encode()))

    def set(self, key, value):
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), msgpack.packb(value))

    def delete(self, key):
        with self.env.begin(write=True) as txn:
            txn.delete(key.encode())

    def close(self):
        self.env.close()


class _ServerPeer(_PackedClient):
    """A peer that talks to a local server which setup() starts."""

    server_class: type  # RedisServer or MemcachedServer
    cross_process = True

    def setup(self):
        self._stack = ExitStack()
        try:
            self.server = self._stack.enter_context(self.server_class())
        except ServerUnavailable as exc:
            raise PeerUnavailable(str(exc)) from None
        self.client = self.connect()

    def after_fork_child(self):
        self.client = self.connect()

    def connect(self):
        raise NotImplementedError

    def teardown(self):
        self.client.close()
        self._stack.close()


class Redis(_ServerPeer):
    """redis-py to a local redis-server over its unix socket."""

    name = "redis"
    option = "redis"
    server_class = RedisServer

    def setup(self):
        self.redis = _import("redis", "redis")
        super().setup()
        self.version = f"redis-py {package_version('redis')}, {self.server.version().split()[2]}"

    def connect(self):
        return self.redis.Redis(unix_socket_path=str(self.server.unix_socket))


class Memcached(_ServerPeer):
    """pymemcache to a local memcached over its unix socket."""

    name = "memcached"
    option = "memcached"
    server_class = MemcachedServer

    def setup(self):
        self.base = _import("pymemcache.client.base", "pymemcache")
        super().setup()
        self.version = f"pymemcache {package_version('pymemcache')}, {self.server.version()}"

    def connect(self):
        # Wait for memcached's answer to a set, as redis-py does (pymemcache's
        # default, noreply, would time only the send).
        return self.base.Client(str(self.server.unix_socket), default_noreply=False)


class ManagerDict(_PackedMapping):
    """multiprocessing.Manager().dict(): a dict in a server process, reached by proxy."""

    name = "Manager().dict()"
    option = "manager"
    cross_process = True

    def setup(self):
        self.version = "stdlib"
        self.manager = multiprocessing.get_context("fork").Manager()
        self.data = self.manager.dict()

    def teardown(self):
        self.manager.shutdown()


class UltraDictPeer(_PackedMapping):
    """UltraDict: every process keeps a full local dict and replays a shared
    stream of updates (full dumps when the stream buffer fills) before reads."""

    name = "UltraDict"
    option = "ultradict"
    cross_process = True

    def setup(self):
        ultradict = _import("UltraDict", "UltraDict")
        self.version = package_version("UltraDict")
        self.data = ultradict.UltraDict(buffer_size=64 << 20)

    def teardown(self):
        self.data.close()
        self.data.unlink()


ALL_PEERS: list[type[Peer]] = [
    Herdcache,
    DictMsgpack,
    LruCache,
    Diskcache,
    Redis,
    Memcached,
    ManagerDict,
    Lmdb,
    UltraDictPeer,
]
