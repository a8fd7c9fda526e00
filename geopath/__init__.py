"""geopath: representational geometry of deep networks in JAX.

A network maps a fixed set of inputs through its layers; each layer's representation is a point in a metric
space of representations, so the network is a path. geopath provides the spaces (shape metrics, angular CKA,
affine-invariant SPD, stress), their geodesic operations, and batched all-pairs distances; everything is
jit-compiled, vmap-able and differentiable.

Where jit happens: the kernels (every ``Space`` method and the operations ``angle``, ``project``,
``geodesic``, ``frechet_mean``, ...) are plain pure functions that the caller may ``jit``/``vmap``/``grad``
(as in optax). The batch drivers that orchestrate many points (``points``, ``pairwise_distances``,
``cross_distances``, ``analyze_path``, ``analyze_checkpoints``, ``compare_paths``) group their inputs in
Python and run jitted programs internally, compiled once per group shape.

Example:
  >>> import jax, geopath as gp
  >>> space = gp.AngularShape(alpha=1.0)
  >>> x = jax.random.normal(jax.random.key(0), (100, 32))
  >>> a, b = space.point(x), space.point(jax.nn.relu(x))
  >>> d = space.distance(a, b)   # radians
"""

from geopath._src.embedding import MDSResult
from geopath._src.embedding import classical_mds
from geopath._src.embedding import spherical_mds
from geopath._src.linalg import Procrustes
from geopath._src.linalg import bures_similarity
from geopath._src.linalg import matrix_function
from geopath._src.linalg import nuclear_norm
from geopath._src.linalg import orthogonal_procrustes
from geopath._src.linalg import polar_factor
from geopath._src.linalg import psd_sqrt
from geopath._src.linalg import safe_arccos
from geopath._src.linalg import safe_norm
from geopath._src.linalg import solve_sylvester
from geopath._src.linalg import trace_function
from geopath._src.ops import AlexandrovCurvature
from geopath._src.ops import FrechetMean
from geopath._src.ops import Projection
from geopath._src.ops import alexandrov_curvature
from geopath._src.ops import angle
from geopath._src.ops import distance
from geopath._src.ops import frechet_mean
from geopath._src.ops import midpoint
from geopath._src.ops import path_length
from geopath._src.ops import project
from geopath._src.ops import stack_points
from geopath._src.ops import step_lengths
from geopath._src.ops import subdivide
from geopath._src.pairwise import PairBlock
from geopath._src.pairwise import PairwisePlan
from geopath._src.pairwise import cross_distances
from geopath._src.pairwise import pairwise_distances
from geopath._src.pairwise import pairwise_plan
from geopath._src.pairwise import points
from geopath._src.paths import PathAnalysis
from geopath._src.paths import PathComparison
from geopath._src.paths import ProjectionInterval
from geopath._src.paths import analyze_checkpoints
from geopath._src.paths import analyze_path
from geopath._src.paths import compare_paths
from geopath._src.paths import projection_interval
from geopath._src.paths import projection_intervals
from geopath._src.paths import target_point
from geopath._src.pga import PrincipalGeodesics
from geopath._src.pga import principal_geodesics
from geopath._src.regularize import path_penalty
from geopath._src.sharding import device_mesh
from geopath._src.spaces import AffineInvariant
from geopath._src.spaces import AngularCKA
from geopath._src.spaces import AngularShape
from geopath._src.spaces import EuclideanShape
from geopath._src.spaces import PreShape
from geopath._src.spaces import Space
from geopath._src.spaces import Stress
from geopath._src.threads import set_cpu_threads

__version__ = "0.1.0"

__all__ = (
    "AffineInvariant",
    "AlexandrovCurvature",
    "AngularCKA",
    "AngularShape",
    "EuclideanShape",
    "FrechetMean",
    "MDSResult",
    "PairBlock",
    "PairwisePlan",
    "PathAnalysis",
    "PathComparison",
    "PreShape",
    "PrincipalGeodesics",
    "Procrustes",
    "Projection",
    "ProjectionInterval",
    "Space",
    "Stress",
    "alexandrov_curvature",
    "analyze_checkpoints",
    "analyze_path",
    "angle",
    "bures_similarity",
    "classical_mds",
    "compare_paths",
    "cross_distances",
    "device_mesh",
    "distance",
    "frechet_mean",
    "matrix_function",
    "midpoint",
    "nuclear_norm",
    "orthogonal_procrustes",
    "pairwise_distances",
    "pairwise_plan",
    "path_length",
    "path_penalty",
    "points",
    "polar_factor",
    "principal_geodesics",
    "project",
    "projection_interval",
    "projection_intervals",
    "psd_sqrt",
    "safe_arccos",
    "safe_norm",
    "set_cpu_threads",
    "solve_sylvester",
    "spherical_mds",
    "stack_points",
    "step_lengths",
    "subdivide",
    "target_point",
    "trace_function",
)
