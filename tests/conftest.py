"""Suite-wide collection rules: the node ids listed in ``tests/slow_tests.txt`` are marked ``slow``; the
subprocess workers are not collected."""

from __future__ import annotations

from pathlib import Path

import pytest

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
