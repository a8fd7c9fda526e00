"""The path-analysis stage of the main job, old vs new in the same run: time per stage, compilations, answers.

Synthetic representations shaped like the CPU preset's (``--archs`` networks x ``--ckpts`` checkpoints,
``--n`` probe inputs, per-network layer widths) go through the three stages of the main job's analysis:

* ``points``: ``gp.points`` of every layer of every checkpoint;
* ``analysis``: per network, all checkpoints at once (``gp.analyze_checkpoints``);
* ``joint``: the joint distance matrix of the final paths and the pairwise ``gp.compare_paths``.

"old" is the analysis before issue 15: one independent ``space.distance`` / ``space.log`` call per quantity,
projections by ``gp.project(method="grid")`` (dense grid + Newton, the earlier algorithm), no shape buckets,
and ``compare_paths`` recomputing the cross distances, run one checkpoint at a time (see
:func:`old_analyze_checkpoints`). "new" is the library as it is. The script prints, per
stage, the first-call and steady-state times and the number of XLA compilations, then the largest
differences between the two answers (``max |dt|`` of the projections, ``max |d|`` over every distance
field), the machine, the versions and the load average. Timings taken while other processes share the cores
are provisional (the load average is printed with them). Optionally (``--floor``) the time of the
decompositions alone (the SVDs of ``k x k`` matrices the analysis cannot avoid) is measured on the same
shapes, for the decomposition floor.

Run: ``python -m benchmarks.bench_analysis --n 300 --ckpts 20 --x64`` (``--quick``: tiny sizes, a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

import geopath as gp

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
WIDTHS = {  # features per layer, like the CPU preset's flattened conv maps (capped at 1024 to save memory): at
    # n = 300 most layers are n wide after the point map, as in the real networks (e.g. 300 x 300 points of
    # resnet14's 16 x 32 x 32 maps); the last layer is the 10 logits
    "resnet": (1024, 1024, 1024, 512, 512, 256, 64, 10),
    "vgg": (1024, 512, 512, 256, 10),
    "mlp": (512, 256, 128, 10),
}


@contextlib.contextmanager
def count_compiles():
    counts = {"compile": 0}

    def listener(event, duration, **kwargs):
        del duration, kwargs
        if event == _COMPILE_EVENT:
            counts["compile"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def synthetic_runs(rng, *, archs, ckpts, n):
    """``{arch: [checkpoint: [layer: activations [n, p]]]}``: tanh features of one input, drifting in time."""
    x0 = rng.standard_normal((n, 16))
    runs = {}
    names = list(WIDTHS)
    for a in range(archs):
        ws = WIDTHS[names[a % len(names)]]
        mix = [rng.standard_normal((16, w)) / 4 for w in ws]
        runs[f"net{a}"] = [
            [np.tanh(x0 @ m * (1 + 0.1 * t)) + 0.3 * rng.standard_normal((n, w)) for m, w in zip(mix, ws)]
            for t in range(ckpts)
        ]
    return runs


# ------------------------------------------------------------------------------------------------------
# the old analysis (before issue 15), kept here as the baseline


def _old_analyze_impl(space, P, target):
    """The analysis before issue 15: independent calls per quantity, ``method="grid"`` projections."""
    L = P.shape[0]
    x0 = P[0]
    dist = jax.vmap(space.distance)
    steps = dist(P[:-1], P[1:])
    length = jnp.sum(steps)
    direct = space.distance(x0, target)
    chord = space.distance(P[0], P[-1]) if L > 1 else jnp.zeros((), steps.dtype)
    straightness = jnp.where(length > 0, direct / jnp.where(length > 0, length, 1.0), 1.0)
    if L >= 3:
        bwd = jax.vmap(space.log)(P[1:-1], P[:-2])
        fwd = jax.vmap(space.log)(P[1:-1], P[2:])
        turning = jnp.pi - jax.vmap(space.angle_at)(P[1:-1], bwd, fwd)
        tol = np.sqrt(2.0 * jnp.finfo(steps.dtype).eps * P.shape[-1]) * jnp.maximum(jnp.max(steps), 1.0)
        turning = jnp.where((steps[:-1] > tol) & (steps[1:] > tol), turning, 0.0)
    else:
        turning = jnp.zeros((0,), steps.dtype)
    dist_to_target = jax.vmap(lambda p: space.distance(p, target))(P)
    zero = jnp.zeros((1,), steps.dtype)
    rest = P[1:]
    dist_to_input = jnp.concatenate([zero, jax.vmap(lambda p: space.distance(x0, p))(rest)])
    pr = jax.vmap(lambda c: gp.project(space, x0, target, c, method="grid"))(rest)
    total = dist_to_input + dist_to_target
    return gp.PathAnalysis(
        length=length,
        direct=direct,
        straightness=straightness,
        chord=chord,
        steps=steps,
        turning=turning,
        dist_to_input=dist_to_input,
        dist_to_target=dist_to_target,
        proj_t=jnp.concatenate([zero, pr.t]),
        proj_residual=jnp.concatenate([zero, pr.distance]),
        proj_gap=jnp.concatenate([zero, pr.gap]),  # NaN: the grid search certifies nothing
        position=jnp.where(total > 0, dist_to_input / jnp.where(total > 0, total, 1.0), 0.5),
    )


_old_single = jax.jit(_old_analyze_impl)


def old_analyze_checkpoints(space, points_per_ckpt, target):
    """The old analysis of every checkpoint, one checkpoint at a time (one compiled program per network).

    The old code vmapped its analysis over the checkpoints; that program (grid + unrolled Newton projections
    with SVD gradients, vmapped twice) did not finish compiling within 15 minutes here at n = 100, so the
    baseline runs the same per-checkpoint analysis in a Python loop and stacks the results.
    """
    flat = [p for ck in points_per_ckpt for p in ck]
    stacked = gp.stack_points(space, flat)
    stacked = stacked.reshape((len(points_per_ckpt), -1) + stacked.shape[1:])
    per_ckpt = [_old_single(space, stacked[t], target) for t in range(stacked.shape[0])]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_ckpt)


# ------------------------------------------------------------------------------------------------------
# stages


def stage_points(space, runs):
    return {a: [gp.points(space, reps) for reps in ck] for a, ck in runs.items()}


def stage_analysis(space, pts, target, *, old):
    fn = (
        old_analyze_checkpoints if old else (lambda s, p, t: gp.analyze_checkpoints(s, p, t, are_points=True))
    )
    return {a: jax.block_until_ready(fn(space, ck, target)) for a, ck in pts.items()}


def stage_joint(space, pts, target, *, old):
    finals = {a: ck[-1] for a, ck in pts.items()}
    names = list(finals)
    joint = gp.pairwise_distances(space, [p for a in names for p in finals[a]] + [target], are_points=True)
    joint_np = np.asarray(joint)
    off = np.cumsum([0] + [len(finals[a]) for a in names])
    out = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            cross = None if old else joint_np[off[i] : off[i + 1], off[j] : off[j + 1]]
            c = gp.compare_paths(space, finals[names[i]], finals[names[j]], cross=cross)
            out[(names[i], names[j])] = jax.block_until_ready(c)
    return joint_np, out


def timed(label, fn):
    with count_compiles() as c:
        t0 = time.perf_counter()
        result = fn()
        first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    steady = time.perf_counter() - t0
    print(f"  {label:<16} first {first:8.2f} s   steady {steady:8.2f} s   compilations {c['compile']:4d}")
    return result, first, steady


def _svd_eqns(jaxpr):
    """Every ``svd`` equation of a jaxpr, nested jaxprs included: ``(compute_uv, batch, (m, n), dtype)``."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "svd":
            shape = eqn.invars[0].aval.shape
            yield (
                eqn.params["compute_uv"],
                int(np.prod(shape[:-2])),
                tuple(shape[-2:]),
                eqn.invars[0].aval.dtype,
            )
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _svd_eqns(sub)


def analysis_decompositions(space, ck, target, *, num_rounds=None):
    """The SVDs of :func:`gp.analyze_checkpoints` of one network, counted in its traced program (eager calls
    run the fast projection budget): ``{(compute_uv, (m, n), dtype): number of matrices}``."""
    from geopath._src import paths

    rounds = paths._FAST_ROUNDS if num_rounds is None else num_rounds
    padded = paths._pad_checkpoints(space, [list(c) for c in ck], target, None)
    args = (padded.stacked, space, padded.target, None, np.int32(padded.width), np.int32(padded.num_layers))
    jaxpr = jax.make_jaxpr(lambda *a: paths._analyze_local(*a, num_rounds=rounds))(*args).jaxpr
    counts = {}
    for uv, batch, mn, dtype in _svd_eqns(jaxpr):
        counts[(uv, mn, dtype)] = counts.get((uv, mn, dtype), 0) + batch
    return counts


def decomposition_floor(space, pts, target, reps=3):
    """Seconds of the SVDs alone that the new analysis of every checkpoint of every network performs (counted
    in its traced program), each kind batched as one call; and the counts per layer, for the printout."""
    f_vals = jax.jit(lambda x: jnp.linalg.svd(x, compute_uv=False))
    f_full = jax.jit(lambda x: jnp.linalg.svd(x))
    total, per_layer = 0.0, {}
    rng = np.random.default_rng(0)
    for name, ck in pts.items():
        layers = len(ck) * len(ck[0])
        for (uv, mn, dtype), count in analysis_decompositions(space, ck, target).items():
            key = ("full" if uv else "values", mn)
            per_layer[key] = per_layer.get(key, 0) + count / layers / len(pts)
            m = jnp.asarray(rng.standard_normal((count,) + mn), dtype)
            f = f_full if uv else f_vals
            jax.block_until_ready(f(m))
            total += min(timeit_once(lambda: jax.block_until_ready(f(m))) for _ in range(reps))
            del m
    return total, per_layer


def timeit_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report_differences(new, old):
    """Prints the largest differences between the two answers and the steady-state speed-ups."""
    archs = list(new["ana"])
    dt = max(
        float(np.max(np.abs(np.asarray(new["ana"][a].proj_t) - np.asarray(old["ana"][a].proj_t))))
        for a in archs
    )
    fields = (
        "length",
        "direct",
        "chord",
        "steps",
        "turning",
        "dist_to_input",
        "dist_to_target",
        "proj_residual",
    )
    dd = max(
        float(
            np.max(
                np.abs(np.asarray(getattr(new["ana"][a], f)) - np.asarray(getattr(old["ana"][a], f))),
                initial=0.0,
            )
        )
        for a in archs
        for f in fields
    )
    dc = max(
        (
            float(np.max(np.abs(np.asarray(new["comps"][k].aligned) - np.asarray(old["comps"][k].aligned))))
            for k in new["comps"]
        ),
        default=0.0,
    )
    print(f"max |dt| old vs new: {dt:.3g}   max |distance difference|: {dd:.3g}   compare: {dc:.3g}")
    for i, name in enumerate(("analysis", "joint+compare")):
        o, nw = old["times"][i + 1][1], new["times"][i + 1][1]
        print(f"speed-up {name} old/new (steady): {o / max(nw, 1e-12):.2f}x")
    return dt, dd, dc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="probe inputs")
    ap.add_argument("--archs", type=int, default=3, help="networks")
    ap.add_argument("--ckpts", type=int, default=4, help="checkpoints per network")
    ap.add_argument("--x64", action="store_true", help="float64 (the main job's default precision)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (n=40, 2 networks, 2 checkpoints)")
    ap.add_argument("--no-old", action="store_true", help="time the new implementation only")
    ap.add_argument("--floor", action="store_true", help="also time the decompositions alone")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.archs, args.ckpts = 40, 2, 2
    jax.config.update("jax_enable_x64", args.x64)
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; python {platform.python_version()}, jax {jax.__version__}, "
        f"numpy {np.__version__}, backend {jax.default_backend()}"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}: timings PROVISIONAL if load > cores")
    print(f"n={args.n} archs={args.archs} ckpts={args.ckpts} dtype={'float64' if args.x64 else 'float32'}")
    rng = np.random.default_rng(0)
    runs = synthetic_runs(rng, archs=args.archs, ckpts=args.ckpts, n=args.n)
    space = gp.AngularShape(alpha=1.0)
    target = gp.target_point(space, jnp.asarray(rng.integers(0, 10, args.n)), num_classes=10)

    results = {}
    for label in ("new",) + (() if args.no_old else ("old",)):
        old = label == "old"
        print(f"{label}:")
        pts, *t_pts = timed("points", lambda: stage_points(space, runs))
        ana, *t_ana = timed("analysis", lambda: stage_analysis(space, pts, target, old=old))
        (joint, comps), *t_joint = timed("joint+compare", lambda: stage_joint(space, pts, target, old=old))
        results[label] = dict(pts=pts, ana=ana, comps=comps, times=(t_pts, t_ana, t_joint))
    new = results["new"]
    if "old" in results:
        report_differences(new, results["old"])
    gaps = np.concatenate([np.ravel(np.asarray(a.proj_gap)) for a in new["ana"].values()])
    print(
        f"new: largest certificate gap of the projections {np.nanmax(gaps):.3g} (converged if <= 1e-6 / 1e-3)"
    )
    if args.floor:
        floor, per_layer = decomposition_floor(space, new["pts"], target)
        steady = new["times"][1][1]
        counts = ", ".join(f"{v:.1f} {kind} {mn[0]}x{mn[1]}" for (kind, mn), v in sorted(per_layer.items()))
        print(f"SVDs per layer of the analysis program (mean over networks): {counts}")
        print(
            f"decomposition floor (those SVDs alone, batched per kind): {floor:.3f} s = "
            f"{100 * floor / max(steady, 1e-12):.0f}% of the new analysis stage (steady)"
        )


if __name__ == "__main__":
    main()
