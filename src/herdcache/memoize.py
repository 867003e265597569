"""@cache.memoize: functools.lru_cache for every process of a host.

::

    @cache.memoize(ttl=60)
    def price(sku: str, currency: str = "EUR") -> dict: ...

    price("X1")                 # computed by one process, shared by all
    price.invalidate("X1")      # forget that call's result, everywhere
    price.cache_key("X1")       # the cache key it uses

Keys must be equal in every process, so they are never built from
Python's ``hash()`` (salted per process): the arguments are bound to the
signature (so ``price("X1")``, ``price("X1", "EUR")`` and
``price(sku="X1")`` are one call), serialized with msgpack (sets and
dicts in a canonical order, so equal ones are one call whatever order
they iterate in), and hashed with BLAKE2b, behind the function's
qualified name.  Arguments must therefore be msgpack-serializable (str,
bytes, numbers, tuples, lists, dicts, sets, datetimes...); pass ``key=``
(a function of the same arguments returning a str) for anything else.

Closures: functions made by one factory share a qualified name, so the
values they captured (their closure cells, as they are when the decorator
runs) are part of the key's prefix: ``make_fetcher("a")`` and
``make_fetcher("b")`` never share results.  A captured function, class or
module counts by its qualified name; any other captured value must encode
with msgpack, or the decorator raises a TypeError asking for ``key=``.
With ``key=``, captured values are not looked at: the key function must
tell the closures apart itself if they differ.

Methods: ``self`` (or ``cls``) is left out of the key, so all instances
share results, unless the instance defines ``__cache_key__()``, whose
value is used for it.  ``staticmethod`` and ``classmethod`` work when
``@cache.memoize`` is applied under them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

import msgpack

from .errors import SerializationError
from .serializers import MsgpackSerializer

if TYPE_CHECKING:
    from .cache import Cache
    from .compute import ComputeOptions

_codec = MsgpackSerializer()
_KEY_PREFIX_MAX = 180

# msgpack extension codes used in key payloads only (never in stored values).
_KEY_SET, _KEY_FROZENSET, _KEY_DICT = 64, 65, 66


class CacheInfo(NamedTuple):
    """Like functools.lru_cache's: hits and misses are this process's."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


def _instance_part(first: Any) -> Any:
    own = getattr(first, "__cache_key__", None)
    # A classmethod's cls: the instances' __cache_key__, looked up on the
    # class, is an unbound function that cannot speak for the class.
    if isinstance(first, type) and not inspect.ismethod(own):
        return None
    return own() if callable(own) else None


def _canonical(obj: Any) -> Any:
    """``obj`` with every set and dict replaced by its encoded members in
    sorted order.  A set of str iterates in an order that depends on the
    process's hash seed, and a dict in insertion order (``**kwargs`` in the
    order of the call): neither may change the key of an equal argument.
    msgpack encodings are self-delimiting, so joining them is unambiguous."""
    if isinstance(obj, (list, tuple)):
        members = [_canonical(item) for item in obj]
        return tuple(members) if isinstance(obj, tuple) else members
    if isinstance(obj, (set, frozenset)):
        code = _KEY_FROZENSET if isinstance(obj, frozenset) else _KEY_SET
        return msgpack.ExtType(code, b"".join(sorted(_codec.dumps(_canonical(item)) for item in obj)))
    if isinstance(obj, dict):
        pairs = (_codec.dumps(_canonical(k)) + _codec.dumps(_canonical(v)) for k, v in obj.items())
        return msgpack.ExtType(_KEY_DICT, b"".join(sorted(pairs)))
    return obj


def _captured(fn: Callable[..., Any], seen: set[int]) -> list[Any]:
    """What tells ``fn`` apart from other closures of the same code: its
    cells' contents, functions by name (and their own cells), recursively.
    ``__class__`` (the cell ``super()`` uses) is named by the qualname."""
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    names = code.co_freevars if code is not None else ()
    parts: list[Any] = []
    for name, cell in zip(names, cells):
        if name == "__class__":
            continue
        try:
            value = cell.cell_contents
        except ValueError:  # not yet bound (the function's own name, say)
            parts.append([name])
            continue
        parts.append([name, _captured_value(value, name, seen)])
    return parts


def _captured_value(value: Any, name: str, seen: set[int]) -> Any:
    if inspect.ismethod(value):
        return [_captured_value(value.__func__, name, seen), _captured_value(value.__self__, name, seen)]
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value) or inspect.isbuiltin(value):
        label = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value.__name__)}"
        nested = _captured(value, seen) if inspect.isfunction(value) and id(value) not in seen else []
        return [label, nested]
    try:
        return _codec.dumps(_canonical(value))
    except SerializationError:
        raise TypeError(
            f"memoize cannot tell this closure apart from others made by the same code: "
            f"its variable {name!r} holds a {type(value).__name__}, which cannot be part of a "
            "cache key. Pass memoize(key=...) returning a str that identifies the call "
            "(and the closure)"
        ) from None


def _prefix(fn: Callable[..., Any], key: Callable[..., str] | None) -> str:
    """``module.qualname``, tagged with a digest of what a closure captured."""
    base = f"{fn.__module__}.{fn.__qualname__}"
    captured = _captured(fn, set()) if key is None else []
    if not captured:
        return base[:_KEY_PREFIX_MAX]
    tag = "@" + hashlib.blake2b(_codec.dumps(captured), digest_size=6).hexdigest()
    return base[: _KEY_PREFIX_MAX - len(tag)] + tag


class KeyMaker:
    """Builds the cache key of one call of a memoized function."""

    def __init__(self, fn: Callable[..., Any], key: Callable[..., str] | None):
        """Prepare the signature and the key prefix of ``fn``."""
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters)
        self.skips_first = bool(params) and params[0] in ("self", "cls")
        self.prefix = _prefix(fn, key)
        self.custom = key

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        """The key of the call ``fn(*args, **kwargs)``."""
        if self.custom is not None:
            part = self.custom(*args, **kwargs)
            if not isinstance(part, str):
                raise TypeError(f"memoize key= must return a str, it returned {type(part).__name__}")
            return self._finish(part.encode())
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        items = list(bound.arguments.items())
        if self.skips_first:
            items[0] = (items[0][0], _instance_part(items[0][1]))
        try:
            payload = _codec.dumps(_canonical(items))
        except SerializationError as exc:
            raise TypeError(
                f"cannot build a cache key for {self.prefix}: {exc}. Pass memoize(key=...) "
                "returning a str that identifies the call"
            ) from exc
        return self._finish(payload)

    def _finish(self, payload: bytes) -> str:
        return f"{self.prefix}:{hashlib.blake2b(payload, digest_size=16).hexdigest()}"


P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class BoundMemoized(Protocol[R_co]):
    """A memoized method, looked up on an instance or class."""

    def __call__(self, *args: Any, **kwargs: Any) -> R_co:
        """The method's result, computed once for every process."""

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forget the result of this call, in every process."""

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of this call."""

    def cache_clear(self) -> int:
        """Forget every result of the function; return how many."""

    def cache_info(self) -> CacheInfo:
        """This process's hits and misses, and the results stored now."""


class Memoized(Protocol[P, R_co]):
    """What ``@cache.memoize(...)`` makes of a function: the function, with
    its signature and return type, plus ``invalidate(*args, **kwargs)``,
    ``cache_key(*args, **kwargs)``, ``cache_clear()`` and ``cache_info()``
    (as ``functools.lru_cache`` has)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """The function's result, computed once for every process."""

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the result of this call, in every process."""

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of this call."""

    def cache_clear(self) -> int:
        """Forget every result of the function; return how many."""

    def cache_info(self) -> CacheInfo:
        """This process's hits and misses, and the results stored now."""

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Memoized[P, R_co]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> BoundMemoized[R_co]: ...


def memoize(
    cache: Cache, options: ComputeOptions, key: Callable[..., str] | None = None
) -> Callable[[Callable[P, R]], Memoized[P, R]]:
    """The decorator behind :meth:`herdcache.Cache.memoize`."""

    def decorator(fn: Callable[P, R]) -> Memoized[P, R]:
        make_key = KeyMaker(fn, key)
        counts = {"hits": 0, "misses": 0}
        counts_lock = threading.Lock()

        def count(computed: list[bool]) -> None:
            with counts_lock:
                counts["misses" if computed else "hits"] += 1

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:  # R is the coroutine
                computed: list[bool] = []

                async def compute() -> Any:
                    computed.append(True)
                    return await fn(*args, **kwargs)

                value = await cache.aget_or_compute(make_key(*args, **kwargs), compute, options=options)
                count(computed)
                return value

        else:

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                computed: list[bool] = []

                def compute() -> Any:
                    computed.append(True)
                    return fn(*args, **kwargs)

                value = cache.get_or_compute(make_key(*args, **kwargs), compute, options=options)
                count(computed)
                return value

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            """Forget the result of this call, in every process."""
            return cache.delete(make_key(*args, **kwargs))

        def cache_clear() -> int:
            """Forget every result of this function; return how many."""
            mine = [k for k in cache.keys() if isinstance(k, str) and k.startswith(make_key.prefix + ":")]
            return cache.delete_many(mine)

        def cache_info() -> CacheInfo:
            """This process's hits and misses, and the results stored now."""
            size = sum(1 for k in cache.keys() if isinstance(k, str) and k.startswith(make_key.prefix + ":"))
            return CacheInfo(counts["hits"], counts["misses"], None, size)

        wrapper.cache_key = make_key  # type: ignore[attr-defined]
        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        return cast("Memoized[P, R]", wrapper)

    return decorator
