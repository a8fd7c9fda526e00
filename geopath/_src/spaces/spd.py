"""The affine-invariant Riemannian metric on SPD matrices (Gram or covariance)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import kernels
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import static_space

_SPD_KINDS = ("gram", "covariance")
_SPD_SCALES = ("trace", "none")


def _eig_log(lam, floor):
    return jnp.log(jnp.maximum(lam, floor))


def _eig_pow(lam, t, floor):
    return jnp.exp(t * jnp.log(jnp.maximum(lam, floor)))


def _eig_sqrt(lam):
    return jnp.sqrt(lam)


def _eig_exp(lam):
    return jnp.exp(lam)


def _log_sq_above_one(s):
    """``(2 log s)^2`` for singular values ``s > 1``, else 0 (those are counted from the other side); NaN stays."""
    big = jnp.logical_not(s <= 1)
    return jnp.where(big, jnp.square(2.0 * jnp.log(jnp.where(big, s, 1.0))), 0.0)


def _factor(a: Array) -> Array:
    """Lower Cholesky factor ``L`` of ``a = L L^T`` ``[m, m]`` (NaN where ``a`` is not positive definite)."""
    return jnp.linalg.cholesky(linalg.sym(a))


def _factors(a: Array, b: Array) -> tuple[Array, Array]:
    """Cholesky factors of ``a`` and ``b``, the second computed after the first.

    Every method orders its LAPACK calls (:func:`linalg.after`): jaxlib 0.10 deadlocks when as many batched
    decompositions as XLA has pool threads run at once (``docs/threads.md``), as two Cholesky factorisations,
    or the two SVDs of a distance, of a vmapped pair could.
    """
    la = _factor(a)
    b = linalg.after(la, b)
    return la, _factor(b)


def _solve(la: Array, y: Array, trans: int = 0) -> Array:
    """``la^{-1} y`` (``trans=0``) or ``la^{-T} y`` (``trans=1``) for lower triangular ``la``: JAX's solve, for
    tangents (linear in ``y``)."""
    return jax.scipy.linalg.solve_triangular(la, y, lower=True, trans=trans)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _ordered_solve(la: Array, y: Array, trans: int = 0) -> Array:
    """:func:`_solve` with ONE triangular solve in its derivative, which follows the primal solve.

    ``op(la) x = y`` gives ``op(la) dx = dy - op(dla) x``: one solve, where JAX's rule solves once per
    argument (two independent LAPACK calls in the reverse pass; ``docs/threads.md``).
    """
    return _solve(la, y, trans)


@_ordered_solve.defjvp
def _ordered_solve_jvp(trans, primals, tangents):
    (la, y), (dla, dy) = primals, tangents
    x = _ordered_solve(la, y, trans)
    dla = jnp.tril(dla)  # the solve reads the lower triangle only
    op_dla = dla if trans == 0 else jnp.swapaxes(dla, -1, -2)
    # la plus an exact zero from x: the tangent's solve (and, transposed, its reverse pass) follows x's
    return x, _solve(linalg.after(x, la), dy - op_dla @ x, trans)


def _relative(la: Array, lb: Array) -> Array:
    """``la^{-1} lb`` ``[m, m]``: its singular values are the square roots of the generalised eigenvalues."""
    return _ordered_solve(la, lb)


@jax.custom_jvp
def _congruence(la: Array, v: Array) -> Array:
    """``la^{-1} v la^{-T}`` for symmetric ``v`` ``[m, m]`` (symmetrised)."""
    return linalg.sym(_solve(la, _solve(la, v).T))


@_congruence.defjvp
def _congruence_jvp(primals, tangents):
    # dC = la^{-1} dv la^{-T} - K C - C K^T with K = la^{-1} dla. JAX's rule solves once per argument of each
    # solve (independent LAPACK calls in the reverse pass); here the solves form one chain, linked by an
    # exact zero that is linear in the tangents (so the reverse pass runs them in turn as well).
    (la, v), (dla, dv) = primals, tangents
    c = _congruence(la, v)
    la = linalg.after(c, la)  # the tangent's solves (and their transposes) follow the primal ones
    k = _solve(la, jnp.tril(dla))  # the solves read the lower triangle only
    dv = dv + linalg.tangent_link(c, k).astype(dv.dtype)
    dc = linalg.sym(_solve(la, _solve(la, dv).T)) - linalg.sym(k @ c) * 2.0
    return c, dc


def _floor(m: Array) -> Array:
    """Relative floor ``eps^2 ||m||_F^2`` for the eigenvalues of ``m m^T`` (keeps ``log`` finite)."""
    eps = jnp.finfo(m.dtype).eps
    return jax.lax.stop_gradient(jnp.sum(jnp.square(m)) * (eps * eps))


def _distance_from_factors(la: Array, lb: Array) -> Array:
    """``sqrt(sum_i log^2 l_i)`` over the generalised eigenvalues ``l_i`` of ``(b, a)``; scalar.

    The eigenvalues above 1 are taken from the singular values of ``la^{-1} lb`` and those below 1 (as
    reciprocals) from ``lb^{-1} la``: each is computed where it is large, hence to full relative accuracy, and
    the result is exactly symmetric in ``a`` and ``b``.
    """
    s_ab = jnp.linalg.svd(_relative(la, lb), compute_uv=False)
    la, lb = linalg.after(s_ab, (la, lb))  # one decomposition at a time (see _factors), both passes
    s_ba = jnp.linalg.svd(_relative(lb, la), compute_uv=False)
    return linalg.safe_sqrt(jnp.sum(_log_sq_above_one(s_ab)) + jnp.sum(_log_sq_above_one(s_ba)))


@static_space
class AffineInvariant(Space):
    """Affine-invariant Riemannian metric on SPD matrices: ``d(A, B) = ||log(A^{-1/2} B A^{-1/2})||_F``.

    Args:
      eps: ridge added to the normalised matrix (its eigenvalues average 1), making it positive definite.
        It must exceed the matrix size times the machine epsilon of the data's dtype (checked by
        :meth:`point`), otherwise the ridge is lost to round-off and the point is singular.
      kind: "gram": ``n x n`` centred Gram matrix ``X_c X_c^T`` (compares layers of any width);
        "covariance": ``p x p`` covariance ``X_c^T X_c`` (only layers of equal width are comparable).
      scale: "trace" (default): the matrix is scaled to mean eigenvalue 1 before the ridge, so the metric
        ignores isotropic scaling and ``eps`` is relative. "none": repsim's convention, ``K + eps I`` (gram) or
        ``X_c^T X_c / (n - 1) + eps I`` (covariance): ``eps`` is absolute and the metric depends on the scale.
      kernel, kernel_weights, rbf_scale, rbf_sigma: the kernel of the "gram" matrix, as in
        :class:`AngularCKA` ("linear", "rbf", "laplace" or a tuple of them; default linear).

    All operations work with the Cholesky factor ``L`` of the base point (``A = L L^T``) and the singular
    values of ``L_A^{-1} L_B`` (square roots of the generalised eigenvalues), never with ``A^{-1/2} B A^{-1/2}``
    formed explicitly, so float32 keeps the small eigenvalues and the distance is exactly symmetric.

    NaN: a matrix that is not numerically positive definite (its Cholesky factorisation fails) gives NaN
    distances, e.g. a geodesic extrapolated far beyond its ends in float32.
    """

    eps: float = 1e-3
    kind: str = "gram"
    scale: str = "trace"
    kernel: str | tuple[str, ...] = "linear"
    kernel_weights: tuple[float, ...] | None = None
    rbf_scale: float = 1.0
    rbf_sigma: float | None = None

    def __post_init__(self):
        kernels.normalize_fields(self)
        kernels.check_kernel(self.kernel, self.kernel_weights, self.rbf_scale, self.rbf_sigma)
        if self.scale not in _SPD_SCALES:
            raise ValueError(f"scale must be one of {_SPD_SCALES}; got {self.scale!r}")
        if self.kind == "covariance" and self.kernel != "linear":
            raise ValueError(f"kind='covariance' needs the linear kernel; got kernel={self.kernel!r}")
        if not (self.eps > 0 and np.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive number (the SPD ridge); got {self.eps!r}")
        if self.kind not in _SPD_KINDS:
            raise ValueError(f"kind must be one of {_SPD_KINDS}; got {self.kind!r}")

    def point(self, x: ArrayLike) -> Array:
        """Regularised, trace-normalised centred Gram (``[n, n]``) or covariance (``[p, p]``) matrix.

        Dtypes and validation: as :meth:`Space.point`.

        Raises:
          ValueError: if ``eps`` is below ``m * finfo(dtype).eps`` for the ``[m, m]`` point (scale "trace"),
            and as :meth:`Space.point`.
          TypeError: complex input.
        """
        c = centered(x, "x")
        scale_free = self.scale == "trace"
        if self.kind == "gram":
            g = kernels.gram(
                c,
                self.kernel,
                weights=self.kernel_weights,
                scale=self.rbf_scale,
                sigma=self.rbf_sigma,
                scale_free=scale_free,
            )
        else:
            g = c.values.T @ c.values
            if not scale_free:
                g = c.unscale(g, 2) / (c.values.shape[0] - 1)
        m = g.shape[0]
        if scale_free:
            floor = m * float(jnp.finfo(g.dtype).eps)
            if self.eps < floor:
                raise ValueError(
                    f"eps={self.eps!r} is below the round-off of a [{m}, {m}] {g.dtype} point with mean "
                    f"eigenvalue 1 (m * eps = {floor:.3g}): the ridge would be lost and the point singular. Use "
                    "a larger eps or float64 data."
                )
            g = g * (m / jnp.trace(g))
        return linalg.sym(g) + self.eps * jnp.eye(m, dtype=g.dtype)

    def _check(self, a: Array, b: Array) -> None:
        if jnp.ndim(a) != 2 or jnp.shape(a)[0] != jnp.shape(a)[1]:
            raise ValueError(
                f"AffineInvariant points are square SPD matrices; got shape {tuple(jnp.shape(a))}"
            )
        val.check_same_shape(a, b)

    def prepare(self, a: Array) -> Array:
        """The Cholesky factor ``L`` of ``a``, computed once per point for all pairs."""
        return _factor(a)

    def prepared_distance(self, la: Array, lb: Array) -> Array:
        """:meth:`distance` from two :meth:`prepare` results; scalar."""
        return _distance_from_factors(la, lb)

    def distance(self, a: Array, b: Array) -> Array:
        """Riemannian distance ``||log(a^{-1/2} b a^{-1/2})||_F`` between ``[m, m]`` points; scalar.

        Dimensionless: the root-sum-square of the logs of the generalised eigenvalues of ``(b, a)``, computed
        from singular values of ``L_a^{-1} L_b`` and ``L_b^{-1} L_a`` (see the class docstring). Exactly
        symmetric; 0 for identical points. NaN if a point is not positive definite.
        """
        self._check(a, b)
        return _distance_from_factors(*_factors(a, b))

    def _relative_function(self, a: Array, b: Array, f, *params) -> Array:
        """``L f(C) L^T`` with ``a = L L^T`` and ``C = L^{-1} b L^{-T}`` (via the SVD of ``L^{-1} L_b``)."""
        la, lb = _factors(a, b)
        m = _relative(la, lb)
        return linalg.sym(la @ linalg.gram_function(f, m, *params, _floor(m)) @ la.T)

    def log(self, a: Array, b: Array) -> Array:
        """``a^{1/2} log(a^{-1/2} b a^{-1/2}) a^{1/2}``, a symmetric ``[m, m]`` tangent vector at ``a``."""
        self._check(a, b)
        return self._relative_function(a, b, _eig_log)

    def exp(self, a: Array, v: Array) -> Array:
        """``a^{1/2} exp(a^{-1/2} v a^{-1/2}) a^{1/2}`` for a symmetric tangent vector ``v [m, m]``."""
        self._check(a, v)
        la = _factor(a)
        return linalg.sym(la @ linalg.matrix_function(_eig_exp, _congruence(la, v)) @ la.T)

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        """``a^{1/2} (a^{-1/2} b a^{-1/2})^t a^{1/2}``; ``[m, m]``."""
        self._check(a, b)
        return self._relative_function(a, b, _eig_pow, jnp.asarray(t, a.dtype))

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """``E v E^T`` with ``E = a^{1/2} (a^{-1/2} b a^{-1/2})^{1/2} a^{-1/2}``; tangent at ``b``."""
        self._check(a, b)
        la, lb = _factors(a, b)
        m = _relative(la, lb)
        root = linalg.gram_function(_eig_sqrt, m)  # C^{1/2}, C = la^{-1} b la^{-T}
        e = la @ _ordered_solve(la, root, 1).T
        return linalg.sym(e @ v @ e.T)

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """``L^{-1} v L^{-T}`` (``a = L L^T``): coordinates in which the metric is the Frobenius inner product.

        They differ from ``a^{-1/2} v a^{-1/2}`` by a fixed rotation at each base point.
        """
        return _congruence(_factor(a), v)
