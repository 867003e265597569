"""Flask-Caching on herdcache: one cache for every worker of a host.

::

    from herdcache.contrib.flask import Cache

    app.config.update(
        CACHE_TYPE="herdcache.contrib.flask.HerdcacheCache",
        CACHE_HERDCACHE_NAME="myapp",       # the segment: every worker attaches to it
        CACHE_HERDCACHE_SIZE="256MiB",
        CACHE_DEFAULT_TIMEOUT=300,
    )
    cache = Cache(app)

    @cache.memoize(60)
    def report(day): ...                    # computed once for all workers

``CACHE_TYPE`` works with Flask-Caching's own ``flask_caching.Cache`` too
(``cached``, ``memoize`` and the rest, with cachelib's semantics: see
:mod:`herdcache.contrib.cachelib`).  This module's :class:`Cache` adds one
thing: its ``memoize`` computes a missing result in one caller of the whole
host while the others, in every worker, wait for it and get its value,
through :meth:`~herdcache.contrib.cachelib.HerdcacheCache.get_or_set`.
Flask-Caching's own memoize calls the function in every worker that
misses.  With ``forced_update``, ``is_stale``, ``response_filter`` or
``cache_none``, whose checks need Flask-Caching's own flow, it uses it.

Config: ``CACHE_HERDCACHE_NAME`` (None: anonymous, shared only by workers
forked after it was made, as with gunicorn ``--preload``),
``CACHE_HERDCACHE_SIZE``, ``CACHE_KEY_PREFIX``, ``CACHE_DEFAULT_TIMEOUT``;
``CACHE_OPTIONS`` for the rest (``lease``, ``wait_timeout``,
``max_value_size``, ``evict``, ``dir``...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flask_caching
from flask import Flask
from flask_caching.backends.base import BaseCache as FlaskBaseCache
from flask_caching.utils import function_namespace, normalize_timeout

from . import cachelib as _cachelib

#: memoize() options that need Flask-Caching's own get-call-set flow.
_OWN_FLOW = ("forced_update", "is_stale", "response_filter", "cache_none")


class HerdcacheCache(FlaskBaseCache, _cachelib.HerdcacheCache):
    """The Flask-Caching backend (``CACHE_TYPE``): cachelib's
    :class:`~herdcache.contrib.cachelib.HerdcacheCache` made from the app's
    config by :meth:`factory`."""

    def __init__(self, *args: Any, **kwargs: Any):
        """See :class:`herdcache.contrib.cachelib.HerdcacheCache`."""
        _cachelib.HerdcacheCache.__init__(self, *args, **kwargs)

    @classmethod
    def factory(cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> HerdcacheCache:
        """Flask-Caching's constructor hook: the cache the config describes."""
        kwargs.setdefault("name", config.get("CACHE_HERDCACHE_NAME"))
        kwargs.setdefault("size", config.get("CACHE_HERDCACHE_SIZE", "64MiB"))
        kwargs.setdefault("key_prefix", config.get("CACHE_KEY_PREFIX") or "")
        return cls(*args, **kwargs)


class Cache(flask_caching.Cache):
    """``flask_caching.Cache`` whose :meth:`memoize` computes each missing
    result once for every worker (with ``CACHE_TYPE`` a herdcache backend)."""

    # Ignored override: Flask-Caching's memoize spells out its options and
    # returns a _MemoizedFunction (a Protocol); this one passes them on as
    # **options (its defaults stay Flask-Caching's, whichever version) and
    # returns a plain wrapper with the same attributes.
    def memoize(  # type: ignore[override]
        self, timeout: Any = None, make_name: Any = None, unless: Any = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Flask-Caching's ``memoize``; a miss is computed in one caller of
        the host while the others wait for its value (see the module
        docstring for the options that keep Flask-Caching's own flow)."""
        decorate = super().memoize(timeout, make_name, unless, **options)
        if any(options.get(name) for name in _OWN_FLOW):
            return decorate

        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            memoized = decorate(f)

            @functools.wraps(f)
            def computed_once(*args: Any, **kwargs: Any) -> Any:
                backend = self.cache
                if not hasattr(backend, "get_or_set"):  # another CACHE_TYPE
                    return memoized(*args, **kwargs)
                if self._bypass_cache(unless, f, *args, **kwargs):
                    return self._call_fn(f, *args, **kwargs)
                key = memoized.make_cache_key(f, *args, **kwargs)
                ttl = normalize_timeout(computed_once.cache_timeout)  # type: ignore[attr-defined]
                return backend.get_or_set(key, lambda: self._call_fn(f, *args, **kwargs), ttl)

            for name in ("uncached", "cache_timeout", "make_cache_key"):
                setattr(computed_once, name, getattr(memoized, name))
            # attr-defined: a function attribute, as Flask-Caching sets; arg-type:
            # computed_once has the memoized attributes (set above) but mypy
            # sees a plain wrapper, not Flask-Caching's _MemoizedFunction.
            computed_once.delete_memoized = (  # type: ignore[attr-defined]
                lambda: self.delete_memoized(computed_once)  # type: ignore[arg-type]
            )
            return computed_once

        return decorator

    # Ignored override: Flask-Caching's spells out reset, delete, refresh,
    # timeout and args_to_ignore; this one takes them as **options and
    # passes them on unchanged (keeping Flask-Caching's defaults).
    def _memoize_version(  # type: ignore[override]
        self, f: Callable[..., Any], args: Any = None, kwargs: Any = None, **options: Any
    ) -> tuple[str, str] | tuple[str, None]:
        """Flask-Caching's version of a memoized function (part of its
        keys), created race-free: a first call in every worker at once would
        each make its own, store it, and compute under its own key; here
        the first to ``add`` it wins and the others read it."""
        if not any(options.get(name) for name in ("reset", "delete", "refresh")):
            fname, instance_fname = function_namespace(f, args=args)
            if "self" in (options.get("args_to_ignore") or []):
                instance_fname = None
            for name in filter(None, (fname, instance_fname)):
                version_key = self._memvname(name)
                if self.cache.get(version_key) is None:
                    self.cache.add(version_key, self._memoize_make_version_hash(), timeout=options.get("timeout", 0))
        return super()._memoize_version(f, args, kwargs, **options)
