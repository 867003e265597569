"""Framework backends: Django's cache framework (:mod:`.django`) and
cachelib / Flask-Caching (:mod:`.cachelib`).  They only translate between
the framework's contract and :class:`herdcache.Cache`."""
