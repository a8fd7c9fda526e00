"""No hang whatever the import order or XLA's thread settings, and no import-time side effects.

geopath used to set ``XLA_FLAGS`` at import to dodge an XLA:CPU deadlock of ``jax.vmap`` of ``project`` (a
``fori_loop`` of SVD-based Newton steps); it hung when JAX had started first. ``project`` now emits no loop
primitive at all (``test_projection.py::test_no_loop_primitives``), and these tests run the former repro in
fresh processes with the backend started before ``import geopath``.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from .conftest import ALL
from .conftest import SPECS
from .conftest import ids

_TIMEOUT_S = 300

# jit(vmap(project)) over 32 zero-padded triples, backend started first, called twice (it hung on the 2nd).
_VMAPPED_PROJECT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.devices()  # the backend starts before geopath is imported
    import geopath as gp
    sp = gp.AngularShape(alpha=1.0)
    rng = np.random.default_rng(0)
    n, widths = 48, (96, 64, 3, 16)
    pts = [sp.point(jnp.asarray(rng.standard_normal((n, w)), jnp.float32)) for w in widths]
    a, b = pts[0], pts[-1]
    cs = gp.stack_points(sp, [pts[i % 4] + 0.0 for i in range(32)])
    f = jax.jit(jax.vmap(lambda c: gp.project(sp, a, b, c).t))
    for _ in range(2):
        t = np.asarray(f(cs))
    assert np.all(np.isfinite(t)), t
    print("ok")
""")

# analyze_path under the single-threaded XLA flags users set on shared machines (it hung there too).
_SINGLE_THREAD_ANALYSIS = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.devices()
    import geopath as gp
    sp = gp.AngularShape(alpha=1.0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 30))
    layers = [x, np.tanh(x @ rng.standard_normal((30, 50))), np.maximum(x[:, :8], 0), x[:, :4]]
    y = gp.target_point(sp, np.arange(40) % 4, num_classes=4)
    for _ in range(2):
        res = gp.analyze_path(sp, [sp.point(v) for v in layers], y)
        assert np.all(np.isfinite(np.asarray(res.proj_t))), res.proj_t
    print("ok")
""")

# The AffineInvariant analysis of a 6-layer path of 100 inputs: before the fix of 5 December 2026 it hung at
# 0% CPU in 4 runs of 4 on this 2-core machine (both pool threads in lapack_dtrsm_ffi -> ParallelBatchMap ->
# BlockingCounter::Wait, seen with gdb); after it, 3 of 3 finished, in about 15 s each.
_AFFINE_ANALYSIS = textwrap.dedent("""
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import geopath as gp
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((100, 30))]
    for w in (60, 40, 50, 20, 10):
        prev = layers[-1]
        layers.append(np.tanh(prev @ rng.standard_normal((prev.shape[1], w)) / np.sqrt(prev.shape[1])))
    space = gp.AffineInvariant(eps=1e-3)
    points = [space.point(x) for x in layers]
    res = gp.analyze_path(space, points, gp.target_point(space, np.arange(100) % 10, num_classes=10))
    assert np.all(np.isfinite(np.asarray(res.proj_t))), res.proj_t
    d = np.asarray(gp.pairwise_distances(space, points))
    assert np.all(np.isfinite(d)) and np.all(d[~np.eye(6, dtype=bool)] > 0), d
    print("ok")
""")

_IMPORT_SIDE_EFFECTS = textwrap.dedent("""
    import os, jax
    env = dict(os.environ)
    cfg = {k: getattr(jax.config, k) for k in ("jax_enable_x64", "jax_platforms", "jax_default_matmul_precision")}
    import geopath, models
    assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
    assert cfg == {k: getattr(jax.config, k) for k in cfg}
    print("ok")
""")


def _run(code: str, **env_extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **env_extra)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the subprocess did not finish in {_TIMEOUT_S} s: an XLA CPU hang is back")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok"), out.stdout[-2000:]


def test_vmapped_projection_completes_with_backend_started_first():
    _run(_VMAPPED_PROJECT)


def test_analyze_path_completes_with_single_threaded_xla():
    _run(_SINGLE_THREAD_ANALYSIS, XLA_FLAGS=" ".join(gp._src.threads.SINGLE_THREAD_XLA_FLAGS))


def test_affine_invariant_analysis_completes():
    _run(_AFFINE_ANALYSIS)


def test_import_has_no_side_effects():
    _run(_IMPORT_SIDE_EFFECTS)


def test_set_cpu_threads(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_cpu_multi_thread_eigen=true")
    # set, then deleted: monkeypatch restores it either way (delenv alone records nothing when it is unset,
    # and a PJRT_NPROC=1 leaked into later subprocesses changes their float32 round-off: seen)
    monkeypatch.setenv("PJRT_NPROC", "unset")
    monkeypatch.delenv("PJRT_NPROC")
    monkeypatch.setattr("geopath._src.threads._backend_started", lambda: False)
    flags = gp.set_cpu_threads(1)
    assert flags == "--xla_foo=1 --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=1"
    assert os.environ["PJRT_NPROC"] == "1"
    assert gp.set_cpu_threads(1) == flags  # idempotent; the user's own value of a flag wins
    monkeypatch.setenv("PJRT_NPROC", "3")
    gp.set_cpu_threads(1)
    assert os.environ["PJRT_NPROC"] == "3"  # and the user's own pool size
    with pytest.raises(ValueError, match="taskset"):
        gp.set_cpu_threads(2)
    monkeypatch.setattr("geopath._src.threads._backend_started", lambda: True)
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        gp.set_cpu_threads(1)
    assert os.environ["XLA_FLAGS"] == flags


# The number of threads of XLA's intra-op pool ("tf_XLAEigen" threads), read from /proc after a computation.
_POOL_THREADS = textwrap.dedent("""
    import os, sys
    import geopath as gp
    if sys.argv[1] == "pinned":
        gp.set_cpu_threads(1)
    import jax, jax.numpy as jnp
    jax.block_until_ready(jax.jit(lambda m: jnp.linalg.svd(m)[1])(jnp.ones((64, 8, 8)) + jnp.eye(8)))
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    print(sum(n.endswith("XLAEigen") for n in names))
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_set_cpu_threads_gives_a_pool_of_one_thread():
    """The pool really has one thread after gp.set_cpu_threads(1) (the XLA flags alone leave it at the number
    of cores: that is why they did not prevent the LAPACK deadlock of docs/threads.md)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC", "NPROC")}
    env.update(JAX_PLATFORMS="cpu")
    counts = {}
    for mode in ("pinned", "default"):
        out = subprocess.run(
            [sys.executable, "-c", _POOL_THREADS, mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        counts[mode] = int(out.stdout.split()[-1])
    assert counts["pinned"] == 1, counts
    assert counts["default"] == len(os.sched_getaffinity(0)), counts


def test_backend_started_is_detected_here():
    import jax

    jax.devices()
    assert gp._src.threads._backend_started()


def _unordered_lapack_pairs(hlo: str) -> tuple[int, list]:
    """The batched LAPACK calls of an optimised HLO module, and the pairs of them that no data dependency
    orders (XLA may run those at once: with jaxlib 0.10 that can deadlock, see docs/threads.md).

    Every computation is checked (a ``while`` body, a ``conditional`` branch, ...): within it, an instruction
    that calls a computation containing LAPACK calls counts as one. Calls without a batch dimension
    (``num_batch_dims="0"``) are left out: a single matrix is never split over the thread pool, so it never
    waits for it. Returns ``(number of batched calls, [(computation, a, b), ...])``.
    """
    import re

    comps: dict = {}
    body = None
    for line in hlo.splitlines():
        inst = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        head = None if inst else re.match(r"\s*(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$", line)
        if head:
            body = comps.setdefault(head.group(1), {})
        elif line.strip() == "}":
            body = None
        elif inst and body is not None:
            lapack = 'custom_call_target="lapack' in line and 'num_batch_dims="0"' not in line
            body[inst.group(1)] = (set(re.findall(r"%([\w.\-]+)", line[inst.end() :])), lapack)
    has: dict = {}

    def has_lapack(comp: str, stack: tuple = ()) -> bool:
        if comp not in has:
            has[comp] = any(
                lapack or any(d in comps and d not in stack and has_lapack(d, stack + (comp,)) for d in deps)
                for deps, lapack in comps[comp].values()
            )
        return has[comp]

    count, bad = 0, []
    for comp, body in comps.items():
        count += sum(lapack for _, lapack in body.values())
        calls = [
            k
            for k, (deps, lapack) in body.items()
            if lapack or any(d in comps and has_lapack(d) for d in deps)
        ]
        ancestors: dict = {}
        for name, (deps, _) in body.items():  # HLO text lists every instruction after its operands
            ancestors[name] = set().union(*[{d} | ancestors.get(d, set()) for d in deps if d in body])
        bad += [(comp, a, b) for i, a in enumerate(calls) for b in calls[i + 1 :] if a not in ancestors[b]]
    return count, bad


def _check_ordered(fn, *args, at_least: int = 1) -> None:
    """``jax.jit(fn)(*args)`` compiles to a program whose batched LAPACK calls (at least ``at_least``) are
    all ordered by data dependencies."""
    import jax

    count, bad = _unordered_lapack_pairs(jax.jit(fn).lower(*args).compile().as_text())
    assert count >= at_least, f"the checker found only {count} batched LAPACK calls: it lost its teeth"
    assert not bad, f"{len(bad)} pairs of the {count} batched LAPACK calls are unordered: {bad[:5]}"


@pytest.mark.parametrize("with_input", [False, True], ids=["input_is_layer_0", "input_point"])
def test_analysis_orders_its_decompositions(with_input):
    """The regression of a real hang (the CPU report's resnet8 analysis at 0% CPU, two pool threads in
    ``lapack_dgesdd_ffi -> ParallelBatchMap -> BlockingCounter::Wait``): every pair of batched
    decompositions of the compiled analysis program is ordered by a data dependency."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from geopath._src import paths

    with jax.enable_x64(True):
        space = gp.AngularShape(alpha=1.0)
        rng = np.random.default_rng(0)
        pts = [space.point(jnp.asarray(rng.standard_normal((30, w)))) for w in (20, 12, 9, 16, 5)]
        target = space.point(jnp.asarray(rng.standard_normal((30, 10))))
        x_in = space.point(jnp.asarray(rng.standard_normal((30, 8)))) if with_input else None
        padded = paths._pad_checkpoints(space, [pts, pts[::-1]], target, x_in)
        args = (space, padded.stacked, padded.target, padded.input_point, np.int32(padded.width), np.int32(5))
        hlo = paths._analyze_batched_jit.lower(*args, num_rounds=paths._FAST_ROUNDS).compile().as_text()
    count, bad = _unordered_lapack_pairs(hlo)
    assert count >= 10, f"the checker found only {count} LAPACK calls: it lost its teeth"
    assert not bad, f"{len(bad)} of the {count} LAPACK calls' pairs are unordered: {bad[:5]}"


def test_unordered_decompositions_are_detected():
    """The checker above can fail: two independent SVDs in one program are reported."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((3, 4, 4)) + jnp.eye(4)
    hlo = (
        jax.jit(lambda a, b: (jnp.linalg.svd(a)[1], jnp.linalg.svd(2 * b)[1])).lower(x, x).compile().as_text()
    )
    assert _unordered_lapack_pairs(hlo)[1]


def test_unordered_decompositions_in_a_loop_body_are_detected():
    """... also inside a loop body (the pairwise blocks run their chunks in ``lax.map``), while single
    matrices (never split over the pool) are left out."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((2, 3, 4, 4)) + jnp.eye(4)
    two = lambda m: (jnp.linalg.svd(m)[1], jnp.linalg.cholesky(2 * m))  # noqa: E731
    hlo = jax.jit(lambda a: jax.lax.map(two, a)).lower(x).compile().as_text()
    count, bad = _unordered_lapack_pairs(hlo)
    assert count == 2 and len(bad) == 1, (count, bad)
    hlo = jax.jit(two).lower(x[0, 0]).compile().as_text()
    assert _unordered_lapack_pairs(hlo) == (0, [])


# The CI run of 2026-12-05 hung at 0% CPU in test_numerics.py::test_affine_invariant_float32_triangle_
# inequality_pairwise: the pairwise program of AffineInvariant ran the two SVDs of each vmapped chunk (and
# its two Cholesky factorisations) unordered. Every program below is checked statically.


def _points(spec, num: int = 4, dtype=np.float32):
    rng = np.random.default_rng(0)
    space = spec.space
    pts = [space.point(rng.standard_normal((12, 5 + i)).astype(dtype)) for i in range(num)]
    width = max(p.shape[-1] for p in pts)
    return space, jnp.stack([space.pad_to(p, width) if space.variable_width else p for p in pts])


_LAPACK = {"shape", "spd"}  # the families whose programs contain LAPACK calls


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_pairwise_blocks_order_their_decompositions(spec):
    """One chunk step of :func:`geopath.pairwise_distances` (prepared points, then a vmapped chunk of pairs in
    ``lax.map``), the program that hung."""
    from geopath._src import pairwise

    space, st = _points(spec)
    prep = pairwise._stack_prepare(space, tuple(st))
    i, j = jnp.array([[0, 0, 1, 2]]), jnp.array([[1, 2, 3, 3]])
    _check_ordered(
        lambda pp, i, j: pairwise._pair_rows(i, j, space, pp, pp),
        prep,
        i,
        j,
        at_least=1 if spec.family in _LAPACK else 0,
    )


# Each takes a, b, c (points) and u, w (tangent vectors at a), all batched.
_METHODS = {
    "distance": lambda sp, a, b, c, u, w: sp.distance(a, b),
    "log": lambda sp, a, b, c, u, w: sp.log(a, b),
    "exp": lambda sp, a, b, c, u, w: sp.exp(a, u),
    "geodesic": lambda sp, a, b, c, u, w: sp.geodesic(a, b, 0.3),
    "transport": lambda sp, a, b, c, u, w: sp.transport(a, b, w),
    "pair_terms": lambda sp, a, b, c, u, w: sp.pair_terms(a, b),
    "inner": lambda sp, a, b, c, u, w: sp.inner(a, u, w),
    "angle": lambda sp, a, b, c, u, w: gp.angle(sp, a, b, c),
    "alexandrov": lambda sp, a, b, c, u, w: gp.alexandrov_curvature(sp, a, b, c),
    "project": lambda sp, a, b, c, u, w: gp.project(sp, a, b, c),
}


_WITHOUT_LAPACK = {("angular_a1", "exp"), ("angular_a1", "inner")}  # closed forms on the preshape sphere


def _total(tree):
    return sum(
        jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)
    )


@pytest.mark.parametrize("spec", [SPECS["affine"], SPECS["angular_a1"]], ids=["affine", "angular_a1"])
@pytest.mark.parametrize("method", list(_METHODS))
def test_batched_methods_order_their_decompositions(spec, method):
    """Each method vmapped over triples of points, and its gradient (every argument differentiated): the
    reverse pass is ordered too. (A program that composes methods must order them itself, see
    ``linalg.after``; the checks here are of geopath's own functions.)"""
    space, st = _points(spec)
    args = (st, st[::-1], jnp.roll(st, 1, axis=0))
    args += (jax.vmap(space.log)(args[0], args[1]), jax.vmap(space.log)(args[0], args[2]))
    f = functools.partial(_METHODS[method], space)
    at_least = 0 if (spec.name, method) in _WITHOUT_LAPACK else 1
    _check_ordered(jax.vmap(f), *args, at_least=at_least)
    if method == "project":  # the implicit step's forward-mode derivative is not ordered (docs/threads.md)
        return
    g = jax.vmap(jax.grad(lambda *a: _total(f(*a)), argnums=tuple(range(5))))
    _check_ordered(g, *args, at_least=at_least)


_PATH_OPS = {
    "frechet_mean": lambda sp, s: gp.frechet_mean(sp, s, num_iters=2),
    "principal_geodesics": lambda sp, s: gp.principal_geodesics(sp, s, num_iters=2),
    "length": lambda sp, s: gp.path_penalty(sp, list(s), kind="length"),
    "excess": lambda sp, s: gp.path_penalty(sp, list(s), kind="excess"),
    "turning": lambda sp, s: gp.path_penalty(sp, list(s), kind="turning"),
}


@pytest.mark.parametrize("spec", [SPECS["affine"], SPECS["angular_a1"]], ids=["affine", "angular_a1"])
@pytest.mark.parametrize("op", list(_PATH_OPS))
def test_path_operations_order_their_decompositions(spec, op):
    space, st = _points(spec, num=5)
    f = functools.partial(_PATH_OPS[op], space)
    _check_ordered(f, st)
    if op in ("length", "excess", "turning"):  # the penalties are trained through
        _check_ordered(jax.grad(f), st)


def test_affine_invariant_analysis_orders_its_decompositions():
    """The forward analysis program of AffineInvariant (grid projections, Newton steps, frames), which had
    thousands of unordered pairs before."""
    from geopath._src import paths

    space, st = _points(SPECS["affine"])
    target = space.point(np.random.default_rng(1).standard_normal((12, 3)).astype(np.float32))
    padded = paths._pad_checkpoints(space, [list(st), list(st[::-1])], target, None)
    args = (space, padded.stacked, padded.target, padded.input_point, np.int32(padded.width), np.int32(4))
    count, bad = _unordered_lapack_pairs(
        paths._analyze_batched_jit.lower(*args, num_rounds=paths._FAST_ROUNDS).compile().as_text()
    )
    assert count >= 100, count
    assert not bad, f"{len(bad)} pairs of the {count} batched LAPACK calls are unordered: {bad[:5]}"


def test_affine_invariant_projection_intervals_order_their_decompositions():
    space, st = _points(SPECS["affine"])
    _check_ordered(
        jax.vmap(lambda a, c: gp.projection_interval(space, a, st[1], c)), st, st[::-1], at_least=100
    )


def test_after_changes_no_value_and_no_derivative():
    """``linalg.after`` is the identity on ``x`` and leaves every derivative as it was, however non-finite the
    derivatives of the other side: its link is ``select(False, ., 0)``, not ``0 * .``."""
    from geopath._src import linalg

    done = jnp.array([1.0, jnp.inf, jnp.nan])
    x, k = linalg.after(done, (jnp.array([0.5, -2.0]), jnp.array([3], jnp.int32)))
    np.testing.assert_array_equal(np.asarray(x), [0.5, -2.0])
    assert k.dtype == jnp.int32 and int(k[0]) == 3

    def f(u, v, ordered):
        w = jnp.sin(u)  # "done"
        v = linalg.after(w, v) if ordered else v
        return jnp.sum(w) + jnp.sqrt(jnp.abs(v))  # d/dv is inf at v = 0

    u, v = jnp.array([0.3, 1.1]), jnp.zeros(())
    for argnums in (0, 1, (0, 1)):
        got = jax.grad(f, argnums=argnums)(u, v, True)
        want = jax.grad(f, argnums=argnums)(u, v, False)
        jax.tree_util.tree_map(
            lambda g, w: np.testing.assert_array_equal(np.asarray(g), np.asarray(w)), got, want
        )
    np.testing.assert_array_equal(np.asarray(jax.grad(f)(u, v, True)), np.cos(np.asarray(u)))  # finite
    # forward mode: a NaN tangent of done does not reach x
    _, dx = jax.jvp(
        lambda w, v: linalg.after(w, v), (u, jnp.ones(())), (jnp.array([jnp.nan, 1.0]), jnp.ones(()))
    )
    assert float(dx) == 1.0
