"""Bad input raises ValueError with a helpful message (eagerly) or a runtime error (under jit)."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

import geopath as gp

from .conftest import ALL
from .conftest import SPECS
from .conftest import N
from .conftest import ids
from .conftest import rand_rep


def _nan_rep(rng, n=N, p=5, value=np.nan):
    x = rand_rep(rng, n, p)
    x[3, 2] = value
    return x


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_mismatched_n(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = rand_rep(rng, N + 1, 5)
    a, b = space.point(x), space.point(y)
    pat = rf"(?s)({N}\D.*{N + 1}\D|{N + 1}\D.*{N}\D)"  # names both sizes (both shapes)
    with pytest.raises(ValueError, match=pat):
        space.distance(a, b)
    with pytest.raises(ValueError, match=pat):
        gp.distance(space, x, y)
    with pytest.raises(ValueError, match=pat):
        space.geodesic(a, b, 0.5)
    with pytest.raises(ValueError, match=pat):
        space.log(a, b)


def test_mismatched_n_message_names_both_shapes(rng):
    space = gp.AngularShape()
    a = space.point(rand_rep(rng, N, 5))
    b = space.point(rand_rep(rng, N + 1, 7))
    with pytest.raises(ValueError) as ei:
        space.distance(a, b)
    msg = str(ei.value)
    assert f"({N}, 5)" in msg and f"({N + 1}, 7)" in msg, msg


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_too_few_inputs(spec, rng):
    space = spec.space
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        space.point(rand_rep(rng, 2, 5))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        space.point(np.ones((1, 3)))
    space.point(rand_rep(rng, 4, 5))  # n = 4 is fine everywhere


def test_unbiased_cka_needs_four_inputs(rng):
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        gp.AngularCKA(unbiased=True).point(rand_rep(rng, 3, 5))


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_input(spec, value, rng):
    space = spec.space
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        space.point(_nan_rep(rng, value=value))


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_constant_and_zero_representation(spec, rng):
    space = spec.space
    row = rng.standard_normal((1, 5))
    with pytest.raises(ValueError, match=r"(?i)constant"):
        space.point(np.repeat(row, N, axis=0))
    with pytest.raises(ValueError, match=r"(?i)zero|constant"):
        space.point(np.zeros((N, 5)))
    # constant up to rounding noise (a unit or two in the last place) is still constant; larger variation
    # on a big offset is kept (tests/geopath/test_numerics.py::test_large_offset_keeps_variation)
    with pytest.raises(ValueError, match=r"(?i)constant"):
        space.point(np.repeat(row, N, axis=0) * (1 + 1e-16 * rng.standard_normal((N, 1))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_constant_check_agrees_with_the_float64_definition(dtype):
    """The eager check's shortcut (column ranges) never changes its verdict: it raises exactly when the
    documented float64 definition (centred values within 4 round-off units of the magnitude) says constant,
    across variations from 0 to 100 units of round-off on offsets of several magnitudes, in a few columns."""
    from geopath._src import validation as val

    rng = np.random.default_rng(7)
    eps = float(np.finfo(dtype).eps)
    checked = {True: 0, False: 0}
    for offset in (1.0, -3e5, 7e-20, 1e30):
        for ulps in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 9.0, 16.0, 32.0, 100.0):
            x = np.full((N, 4), offset, dtype=np.float64)
            x[:, rng.integers(4)] += ulps * eps * abs(offset) * rng.choice([-1.0, 1.0], size=N)
            x = x.astype(dtype)
            x64 = x.astype(np.float64)
            constant = bool(np.all(val._constant_columns(x64, val.shift_center(x64), eps)))
            checked[constant] += 1
            if constant:
                with pytest.raises(ValueError, match=r"(?i)constant"):
                    val.check_values(x, name="layer")
            else:
                assert val.check_values(x, name="layer") is x
    assert checked[True] >= 4 and checked[False] >= 4  # both verdicts were exercised


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_wrong_rank(spec, rng):
    space = spec.space
    with pytest.raises(ValueError, match=rf"\({N},\)"):
        space.point(rng.standard_normal(N))
    with pytest.raises(ValueError):
        space.point(np.float64(3.0))
    # a point of the wrong rank passed to distance
    a = space.point(rand_rep(rng, N, 5))
    with pytest.raises(ValueError, match=rf"\({N},\)"):
        space.distance(a, np.asarray(a).ravel()[:N])


@pytest.mark.parametrize("cls", [gp.AngularShape, gp.EuclideanShape])
@pytest.mark.parametrize("alpha", [1.5, -0.1, float("nan")])
def test_alpha_outside_unit_interval(cls, alpha):
    with pytest.raises(ValueError, match=r"alpha.*" + re.escape(repr(alpha))):
        cls(alpha=alpha)


def test_other_bad_configuration():
    with pytest.raises(ValueError, match="foo"):
        gp.AngularShape(method="foo")
    with pytest.raises(ValueError, match="poly"):
        gp.AngularCKA(kernel="poly")
    with pytest.raises(ValueError, match="eps"):
        gp.AffineInvariant(eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        gp.AffineInvariant(eps=-1e-3)


def test_pairwise_errors_name_the_layer(rng):
    space = gp.AngularShape()
    xs = [rand_rep(rng, N, 5), rand_rep(rng, N, 7), rand_rep(rng, N + 2, 5)]
    with pytest.raises(ValueError, match=rf"layer 2.*\({N + 2}, 5\)"):
        gp.pairwise_distances(space, xs)
    xs = [rand_rep(rng, N, 5), _nan_rep(rng, N, 7)]
    with pytest.raises(ValueError, match=r"layer 1.*(?i:nan|inf)"):
        gp.pairwise_distances(space, xs)


# --------------------------------------------------------------------------
# under jit: a runtime error, never a silent NaN
# --------------------------------------------------------------------------


def _raises_nonfinite(fn, *args):
    with pytest.raises(Exception) as ei:
        out = fn(*args)
        jax.block_until_ready(out)
        # if we get here no error was raised: show what came back
        pytest.fail(f"no error raised under jit; returned {np.asarray(out)!r}")
    msg = str(ei.value)
    assert re.search(r"(?i)\b(nan|inf|infinite|non-?finite|finite)\b", msg), msg  # not "info", "infer"


JIT_SPECS = [SPECS[k] for k in ("angular_a1", "angular_a05", "cka", "affine", "stress")]


@pytest.mark.parametrize("spec", JIT_SPECS, ids=ids(JIT_SPECS))
def test_nan_under_jit_raises(spec, rng):
    space = spec.space
    x = _nan_rep(rng)
    y = rand_rep(rng, N, 6)
    _raises_nonfinite(jax.jit(space.point), x)
    _raises_nonfinite(jax.jit(lambda x, y: space.distance(space.point(x), space.point(y))), x, y)
    _raises_nonfinite(jax.jit(lambda x, y: space.distance(space.point(x), space.point(y))), y, x)


def test_constant_under_jit_raises(rng):
    space = gp.AngularShape()
    x = np.repeat(rng.standard_normal((1, 5)), N, axis=0)
    with pytest.raises(Exception, match=r"(?i)constant"):
        jax.block_until_ready(jax.jit(space.point)(x))
