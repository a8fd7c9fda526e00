"""Metric spaces of representations, one module per family.

* :mod:`.base` -- :class:`Space`, the contract every space implements, and shared helpers;
* :mod:`.sphere` -- unit-sphere geodesics shared by the angular spaces;
* :mod:`.shape` -- generalised shape metrics (:class:`AngularShape`, :class:`EuclideanShape`);
* :mod:`.cka` -- :class:`AngularCKA`;
* :mod:`.kernels` -- kernel matrices shared by CKA, SPD and Stress;
* :mod:`.preshape` -- :class:`PreShape`, the pre-shape sphere (no rotation quotient);
* :mod:`.spd` -- the affine-invariant SPD metric (:class:`AffineInvariant`);
* :mod:`.stress` -- :class:`Stress`.
"""

from geopath._src.spaces.base import Space
from geopath._src.spaces.cka import AngularCKA
from geopath._src.spaces.preshape import PreShape
from geopath._src.spaces.shape import AngularShape
from geopath._src.spaces.shape import EuclideanShape
from geopath._src.spaces.spd import AffineInvariant
from geopath._src.spaces.stress import Stress

__all__ = ("AffineInvariant", "AngularCKA", "AngularShape", "EuclideanShape", "PreShape", "Space", "Stress")
