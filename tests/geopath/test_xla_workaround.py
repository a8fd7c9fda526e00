"""No hang whatever the import order or XLA's thread settings, and no import-time side effects.

geopath used to set ``XLA_FLAGS`` at import to dodge an XLA:CPU deadlock of ``jax.vmap`` of ``project`` (a
``fori_loop`` of SVD-based Newton steps); it hung when JAX had started first. ``project`` now emits no loop
primitive at all (``test_projection.py::test_no_loop_primitives``), and these tests run the former repro in
fresh processes with the backend started before ``import geopath``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import geopath as gp

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


def test_import_has_no_side_effects():
    _run(_IMPORT_SIDE_EFFECTS)


def test_set_cpu_threads(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_cpu_multi_thread_eigen=true")
    monkeypatch.setattr("geopath._src.threads._backend_started", lambda: False)
    flags = gp.set_cpu_threads(1)
    assert flags == "--xla_foo=1 --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=1"
    assert gp.set_cpu_threads(1) == flags  # idempotent; the user's own value of a flag wins
    with pytest.raises(ValueError, match="taskset"):
        gp.set_cpu_threads(2)
    monkeypatch.setattr("geopath._src.threads._backend_started", lambda: True)
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        gp.set_cpu_threads(1)
    assert os.environ["XLA_FLAGS"] == flags


def test_backend_started_is_detected_here():
    import jax

    jax.devices()
    assert gp._src.threads._backend_started()


def _unordered_lapack_pairs(hlo: str) -> tuple[int, list]:
    """LAPACK custom calls of an optimised HLO module's entry computation, and the pairs of them that no data
    dependency orders (XLA may run those at once: with jaxlib 0.10 that can deadlock, see docs/threads.md)."""
    import re

    entry = hlo[hlo.index("\nENTRY") :]
    deps, calls = {}, []
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if not m:
            continue
        deps[m.group(1)] = set(re.findall(r"%([\w.\-]+)", line[m.end() :]))
        if 'custom_call_target="lapack' in line:
            calls.append(m.group(1))
    ancestors: dict = {}
    for name in deps:  # HLO text lists every instruction after its operands
        ancestors[name] = set().union(*[{d} | ancestors.get(d, set()) for d in deps[name]])
    bad = [(a, b) for i, a in enumerate(calls) for b in calls[i + 1 :] if a not in ancestors[b]]
    return len(calls), bad


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
