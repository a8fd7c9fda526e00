"""Suite-wide collection rules: the node ids listed in ``tests/slow_tests.txt`` are marked ``slow``; the
subprocess workers are not collected."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache per test session (JAX reads the variables when it is first imported,
# after this file), shared with the processes the tests start: the tiny training runs, the CLI runs and the
# sharding workers compile the same programs again and again, and a fresh process otherwise recompiles
# every one. The folder is new for each session and removed at its end, so no test sees programs of an
# earlier run; a JAX_COMPILATION_CACHE_DIR set by the caller is used as given.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="geopath-tests-xla-cache-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

# The suite compiles over a thousand small programs and runs most of them once, so LLVM's optimisation of the
# generated code costs more than it saves: at level 0 the default run takes about a fifth less time (measured
# on 2 cores: 184 -> 141 s for the training-heavy files, 103 -> 83 s for angles and geodesics). The numbers
# are not bit-identical to level 3 (round-off: at most 4.4e-16 on the float64 path analysis of AngularShape,
# measured), which every tolerance of the suite allows. A level set by the caller wins, e.g.
# XLA_FLAGS=--xla_backend_optimization_level=3 to run the suite as users' programs compile.
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()

_LIST = Path(__file__).with_name("slow_tests.txt")

# The default run collects every module for doctests (--doctest-modules, for geopath/'s examples). The
# subprocess workers are programs, not test modules: importing one would patch models.train_state's steps
# (data_parallel_worker) or change JAX's configuration (sharding_worker) in the test process.
collect_ignore_glob = ["*_worker.py"]


def _listed() -> frozenset[str]:
    lines = (line.strip() for line in _LIST.read_text().splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def pytest_collection_modifyitems(config, items):
    listed = _listed()
    root = Path(config.rootpath)
    seen, files = set(), set()
    for item in items:
        node = item.nodeid
        files.add(node.split("::")[0])
        if node in listed:
            item.add_marker(pytest.mark.slow)
            seen.add(node)
    # A stale entry would silently move a test back into the default run: refuse it, but only for
    # files that were collected in full (running one test by id must not fail on the others).
    whole = {f for f in files if not any(a.startswith(f + "::") for a in config.args)}
    stale = sorted(
        n for n in listed - seen if n.split("::")[0] in whole and (root / n.split("::")[0]).exists()
    )
    if stale and not config.option.keyword and not config.option.deselect:
        raise pytest.UsageError(f"{_LIST.name} lists tests that do not exist: {stale}")
