"""The path-analysis stage of the main job: time per stage and number of compilations, old vs new.

Synthetic representations of a CPU-preset-like run (``--archs`` networks x ``--ckpts`` checkpoints,
``--n`` probe inputs, layer widths from ``--widths``) are analysed with :func:`geopath.analyze_path` per
checkpoint, then compared with :func:`geopath.compare_paths` (cross distances taken from the joint matrix).

"old" is the analysis with the baseline projection when the library still offers one (looked up by the
names in ``BASELINE_PROJECTIONS``); when none is found only the current implementation is timed, and the
script says so. Timings taken while other processes share the cores are provisional: the load average is
printed with them.

Run: ``python -m benchmarks.bench_analysis --n 200 --ckpts 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import geopath as gp
from geopath._src import ops
from geopath._src import paths

BASELINE_PROJECTIONS = ("project_baseline", "_project_legacy", "project_legacy")
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    counts = {"compile": 0}

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            counts["compile"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def synthetic_runs(rng, *, archs, ckpts, n, widths):
    x0 = rng.standard_normal((n, 16))
    runs = {}
    for a in range(archs):
        ws = widths[a % len(widths)]
        mix = [rng.standard_normal((16, w)) / 4 for w in ws]
        runs[f"net{a}"] = [
            [np.tanh(x0 @ m * (1 + 0.1 * t)) + 0.3 * rng.standard_normal((n, w)) for m, w in zip(mix, ws)]
            for t in range(ckpts)
        ]
    return runs


def analysis_stage(space, runs, target):
    finals = {}
    for arch, ck in runs.items():
        for reps in ck:
            pts = [space.point(jnp.asarray(r)) for r in reps]
            jax.block_until_ready(gp.analyze_path(space, pts, target))
        finals[arch] = pts
    names = list(finals)
    joint = gp.pairwise_distances(space, [p for a in names for p in finals[a]], are_points=True)
    off = np.cumsum([0] + [len(finals[a]) for a in names])
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            cross = joint[off[i] : off[i + 1], off[j] : off[j + 1]]
            jax.block_until_ready(gp.compare_paths(space, finals[names[i]], finals[names[j]], cross=cross))


def timed(label, fn):
    with count_compiles() as c:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    steady = time.perf_counter() - t0
    print(f"{label:>14}: first {first:8.2f} s  steady {steady:8.2f} s  compilations {c['compile']}")
    return steady


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--archs", type=int, default=2)
    ap.add_argument("--ckpts", type=int, default=3)
    ap.add_argument("--x64", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", args.x64)
    print(f"load average {os.getloadavg()} on {os.cpu_count()} cores: timings PROVISIONAL if load > cores")
    rng = np.random.default_rng(0)
    widths = [(16, 32, 32, 64, 64, 10), (16, 24, 48, 10)]
    runs = synthetic_runs(rng, archs=args.archs, ckpts=args.ckpts, n=args.n, widths=widths)
    space = gp.AngularShape(alpha=1.0)
    labels = rng.integers(0, 10, args.n)
    target = gp.target_point(space, jnp.asarray(labels), num_classes=10)

    baseline = next((getattr(ops, b) for b in BASELINE_PROJECTIONS if hasattr(ops, b)), None)
    new = timed("new analysis", lambda: analysis_stage(space, runs, target))
    if baseline is None:
        looked = ", ".join(BASELINE_PROJECTIONS)
        print(f"no baseline projection in geopath._src.ops (looked for {looked}): timed the current one only")
        return
    current = paths._project_all

    def old_project_all(space, x0, target, P):
        def one(c):
            pr = baseline(space, x0, target, c)
            return pr.t, pr.distance

        return jax.vmap(one)(P)

    paths._project_all = old_project_all
    paths._analyze_jit = jax.jit(paths._analyze_impl)
    try:
        old = timed("old analysis", lambda: analysis_stage(space, runs, target))
    finally:
        paths._project_all = current
        paths._analyze_jit = jax.jit(paths._analyze_impl)
    print(f"speed-up old/new (steady): {old / new:.2f}x")


if __name__ == "__main__":
    main()
