"""The pre-shape sphere: the angular shape metric without the rotation quotient."""

from __future__ import annotations

from jax import Array
from jax.typing import ArrayLike

from geopath._src.spaces import sphere
from geopath._src.spaces.base import static_space
from geopath._src.spaces.shape import AngularShape


@static_space
class PreShape(sphere.UnitSphereSpace):
    """Pre-shape sphere: centred, partially whitened, unit-norm ``[n, p]`` matrices, compared feature by feature.

    ``d(X, Y) = arccos(<phi(X), phi(Y)>_F)`` with the preprocessing ``phi`` of :class:`AngularShape` (same
    ``alpha``, ``whiten_eps`` and ``whitening``), but no optimal rotation: it quotients out translations and
    isotropic scaling only, so it is not invariant to rotations of the features and
    ``PreShape.distance >= AngularShape.distance``, with equality once ``b`` is aligned to ``a``
    (``AngularShape().align``). Use it when the features of the two representations correspond (the same
    neurons, or one layer's units across training). Points of one space must have one shape ``[n, p]``.
    Geodesics are great circles; ``log``, ``exp`` and ``transport`` are those of the unit sphere.

    Args:
      alpha: partial-whitening weight in ``[0, 1]`` (see :class:`AngularShape`).
      whiten_eps: ridge of the whitening (see :class:`AngularShape`).
      whitening: "scale_invariant", "netrep" or "repsim" (see :class:`AngularShape`).
    """

    alpha: float = 1.0
    whiten_eps: float = 0.0
    whitening: str = "scale_invariant"

    def __post_init__(self):
        self._shape()  # validates the options

    def _shape(self) -> AngularShape:
        """The shape space whose feature-route preprocessing defines the points."""
        return AngularShape(
            alpha=self.alpha, method="features", whiten_eps=self.whiten_eps, whitening=self.whitening
        )

    def point(self, x: ArrayLike) -> Array:
        """Centred, partially whitened, unit-Frobenius-norm ``[n, p]`` matrix of ``x [n, ...]``.

        Dtypes, validation and what raises: as :meth:`Space.point`.
        """
        return self._shape().point(x)
