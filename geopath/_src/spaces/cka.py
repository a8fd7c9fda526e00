"""Angular CKA: the angle between centred, unit-norm kernel matrices."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import kernels
from geopath._src.spaces import sphere
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import static_space

_UNBIASED = (False, True, "u_statistic", "zero_diagonal")


def _double_center(k: Array) -> Array:
    return k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True) + jnp.mean(k)


def _u_center(k: Array) -> Array:
    """U-centring (Szekely & Rizzo 2014); its inner products give the unbiased HSIC estimator."""
    n = k.shape[0]
    k = k * (1.0 - jnp.eye(n, dtype=k.dtype))
    rows = jnp.sum(k, axis=1, keepdims=True)
    cols = jnp.sum(k, axis=0, keepdims=True)
    tot = jnp.sum(k)
    u = k - rows / (n - 2) - cols / (n - 2) + tot / ((n - 1) * (n - 2))
    return u * (1.0 - jnp.eye(n, dtype=k.dtype))


def _zero_diagonal_center(k: Array) -> Array:
    """repsim's "unbiased" point: the double-centred kernel with its diagonal set to zero."""
    return _double_center(k) * (1.0 - jnp.eye(k.shape[0], dtype=k.dtype))


@static_space
class AngularCKA(sphere.UnitSphereSpace):
    """Angular CKA: ``arccos(CKA(X, Y))`` on centred, unit-norm ``n x n`` kernel matrices (a unit sphere).

    Args:
      unbiased: which HSIC estimator the cosine is. ``False`` (default): the biased (V-statistic) HSIC of
        the double-centred kernel ``H K H`` (Kornblith et al. 2019), distances in ``[0, pi/2]``.
        ``True`` or ``"u_statistic"``: U-centred kernels with zeroed diagonal, whose inner product is the
        unbiased HSIC estimator of Song et al. (2012); the cosine can be negative, so distances lie in
        ``[0, pi]``; needs ``n >= 4``. ``"zero_diagonal"``: repsim's convention (its default since 2023):
        ``H K H`` with its diagonal set to zero. It removes the ``k(x_i, x_i)`` terms but is not an unbiased
        estimator (the centring has already mixed them into the off-diagonal), which is why ``True`` means
        the U-statistic here.
      kernel: "linear" (``X X^T``), "rbf" (``exp(-|x_i - x_j|^2 / (2 s^2))``), "laplace"
        (``exp(-|x_i - x_j| / s)``), or a tuple of these names for their (weighted) sum.
      kernel_weights: positive weights of the kernels of a tuple ``kernel`` (default: all 1).
      rbf_scale: the radial length ``s`` (of "rbf" and "laplace") is ``rbf_scale`` times the median pairwise
        distance (``s^2 = rbf_scale^2 * median_{i<j} |x_i - x_j|^2``), unless ``rbf_sigma`` is given. repsim's
        squared exponential is ``exp(-|x_i - x_j|^2 / l^2)`` with ``l`` the median distance: the same kernel
        as ``rbf_scale = 1 / sqrt(2)`` here (its Laplace kernel equals ours at ``rbf_scale = 1``).
      rbf_sigma: a fixed radial length ``s`` (in the units of the features) instead of the median heuristic.

    Points are ``[n, n]``; geodesics, ``log``, ``exp`` and ``transport`` are those of the unit sphere in the
    space of symmetric matrices.
    """

    unbiased: bool | str = False
    kernel: str | tuple[str, ...] = "linear"
    rbf_scale: float = 1.0
    rbf_sigma: float | None = None
    kernel_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        kernels.normalize_fields(self)
        kernels.check_kernel(self.kernel, self.kernel_weights, self.rbf_scale, self.rbf_sigma)
        if self.unbiased not in _UNBIASED:
            raise ValueError(f"unbiased must be one of {_UNBIASED}; got {self.unbiased!r}")

    def point(self, x: ArrayLike) -> Array:
        """Centred, unit-Frobenius-norm kernel matrix ``[n, n]`` of ``x [n, ...]``.

        Dtypes, validation and what raises: as :meth:`Space.point`. Unbiased CKA (``unbiased=True``) needs ``n >= 4``.
        """
        u_stat = self.unbiased is True or self.unbiased == "u_statistic"
        x = val.as_matrix(x, name="x", min_inputs=4 if u_stat else 3)
        k = kernels.gram(
            centered(x, "x"),
            self.kernel,
            weights=self.kernel_weights,
            scale=self.rbf_scale,
            sigma=self.rbf_sigma,
            scale_free=True,
        )
        if u_stat:
            kc = _u_center(k)
        elif self.unbiased == "zero_diagonal":
            kc = _zero_diagonal_center(k)
        else:
            kc = _double_center(k)
        return kc / linalg.safe_norm(kc)
