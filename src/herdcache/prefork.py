"""Notice the prefork trap: an anonymous cache made inside a worker.

An anonymous segment is shared with the ``fork()`` children of the process
that made it, and with nobody else.  A server that forks its workers
first and imports the application in each of them afterwards (gunicorn
without ``--preload``, uWSGI without ``master`` preloading, a Celery
prefork pool) therefore gives every worker a private cache: memory and
work N times over, and no single flight between workers, silently.

:func:`warn_if_worker_private` spots that case where it can: the process
is a child of a known prefork server's master, so anything anonymous it
makes now is its own.  With ``--preload`` the cache is made in the master
and inherited, and nothing is said.
"""

from __future__ import annotations

import os
import warnings

#: Master processes whose children are workers (their argv mentions one).
PREFORK_SERVERS = ("gunicorn", "uwsgi", "celery")


class PrivateCacheWarning(UserWarning):
    """An anonymous cache was made in a worker: no other worker shares it."""


def _parent_command() -> str:
    """The parent's command line, as text ('' if it cannot be read)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def prefork_master() -> str | None:
    """The prefork server whose worker this process is, or None."""
    parent = _parent_command()
    for server in PREFORK_SERVERS:
        if server in parent:
            return server
    return None


def warn_if_worker_private(what: str = "an anonymous herdcache.Cache") -> None:
    """Warn (:class:`PrivateCacheWarning`) if this process is a prefork
    server's worker: ``what``, made now, is this worker's alone."""
    server = prefork_master()
    if server is not None:
        warnings.warn(
            f"{what} was made inside a {server} worker (pid {os.getpid()}): no other worker "
            f"shares it. Give the cache a name (Cache('myapp'), or a Django LOCATION / "
            f"CACHE_HERDCACHE_NAME) so that every worker attaches to one segment, or make it "
            f"before the workers fork (gunicorn --preload)",
            PrivateCacheWarning,
            stacklevel=3,
        )
