"""Build the C core as the extension module herdcache._core.

All metadata lives in pyproject.toml; this file only declares the
extension, because setuptools before 74.1 cannot do that from
pyproject.toml.  HERDCACHE_DEBUG=1 builds with -O0 -g and assertions;
HERDCACHE_WERROR=1 (set by .ci/run) turns warnings into errors.
HERDCACHE_INJECTION=1 compiles in the core's fault-injection points
(inject.h), armed at run time by HERDCACHE_INJECT=point:action; a test
build only, never one to ship.
"""

import os
from glob import glob

from setuptools import Extension, setup

flags = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"]
flags += ["-O0", "-g", "-UNDEBUG"] if os.environ.get("HERDCACHE_DEBUG") else ["-O2"]
if os.environ.get("HERDCACHE_WERROR"):
    flags.append("-Werror")
macros = [("_GNU_SOURCE", "1")]
if os.environ.get("HERDCACHE_INJECTION"):
    macros.append(("HC_INJECTION", "1"))

setup(
    ext_modules=[
        Extension(
            "herdcache._core",
            sources=sorted(glob("src/herdcache/_core/*.c")),
            depends=sorted(glob("src/herdcache/_core/*.h")),
            define_macros=macros,
            extra_compile_args=flags,
        )
    ]
)
