"""Subprocess half of tests/geopath/test_sharding.py: sharded == unsharded on forced CPU devices.

Run as ``python -m tests.geopath.sharding_worker CASE:SPACES:DEVICES ...`` (e.g. ``pairwise:cka,affine:1,3``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set by the caller (XLA reads it once, at start). Prints
one JSON object: for every (case, space, device count) the largest absolute difference from the
single-device result, the device count the mesh really had, and how the result was placed.
"""

from __future__ import annotations

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
if len(sys.argv) > 1 and sys.argv[1].startswith("--distributed="):
    # Several processes on this machine, as on several hosts: gloo collectives on the CPU backend.
    _pid, _nproc, _port = (int(v) for v in sys.argv[1].split("=")[1].split(","))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{_port}", num_processes=_nproc, process_id=_pid
    )

import numpy as np  # noqa: E402

import geopath as gp  # noqa: E402

SPACES = {
    "angular_a1": lambda: gp.AngularShape(alpha=1.0),
    "angular_a05": lambda: gp.AngularShape(alpha=0.5),
    "euclid_a05": lambda: gp.EuclideanShape(alpha=0.5),
    "cka": lambda: gp.AngularCKA(),
    "affine": lambda: gp.AffineInvariant(eps=1e-3),
    "stress": lambda: gp.Stress(),
}
N = 12


def layers(seed: int, widths) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((N, 6))
    return [x0 @ rng.standard_normal((6, p)) + 0.8 * rng.standard_normal((N, p)) for p in widths]


def run_case(case: str, space, mesh):
    """The result of ``case`` on ``mesh`` (None: unsharded) as a NumPy pytree."""
    if case == "pairwise":
        # 7 layers, 3 width buckets: blocks of 1, 2, 3, 6 ... pairs, none a multiple of 8 or 3.
        out = gp.pairwise_distances(space, layers(0, (3, 4, 7, 8, 9, 16, 5)), mesh=mesh, chunk_size=2)
    elif case == "cross":
        # From points (computed once, on the default device): only the pair phase differs between meshes.
        xs, ys = (gp.points(space, layers(seed, w)) for seed, w in ((1, (3, 8, 16)), (2, (4, 9, 7, 5))))
        out = gp.cross_distances(space, xs, ys, are_points=True, mesh=mesh)
    elif case == "checkpoints":
        reps = [layers(10 + t, (3, 5, 8, 4)) for t in range(5)]  # T = 5 checkpoints
        target = gp.target_point(space, np.arange(N) % 3, num_classes=3)
        out = gp.analyze_checkpoints(space, reps, target, mesh=mesh)._asdict()
    else:
        raise ValueError(case)
    return jax.tree_util.tree_map(np.asarray, out), out


def main(jobs: list[str]) -> None:
    res = {"device_count": jax.device_count(), "process_count": jax.process_count(), "results": []}
    for job in jobs:
        case, spaces, devices = job.split(":")
        run_job(res, case, spaces, devices)
    print(json.dumps(res))


def _absent(got, ref):
    """Boolean masks, one per leaf: True where the unsharded result is NaN by design (``proj_gap`` only)."""
    if isinstance(ref, dict):
        return {k: np.isnan(v) if k == "proj_gap" else np.zeros(np.shape(v), bool) for k, v in ref.items()}
    return jax.tree_util.tree_map(lambda v: np.zeros(np.shape(v), bool), ref)


def run_job(res: dict, case: str, spaces: str, devices: str) -> None:
    for name in spaces.split(","):
        space = SPACES[name]()
        ref, _ = run_case(case, space, None)
        for d in (int(v) for v in devices.split(",")):
            mesh = gp.device_mesh(jax.devices()[:d])  # all processes' devices when d = jax.device_count()
            got, raw = run_case(case, space, mesh)
            shapes_ok = jax.tree_util.tree_all(
                jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, got, ref)
            )
            # PathAnalysis.proj_gap is NaN where a projection has no certificate (e.g. AffineInvariant): there
            # the sharded result must be NaN too; everywhere else every number is finite and compared
            absent = _absent(got, ref)
            diffs = jax.tree_util.tree_map(
                lambda a, b, m: float(np.max(np.abs(a - b)[~m], initial=0.0)), got, ref, absent
            )
            finite = all(
                np.all(np.isfinite(a[~m])) and np.all(np.isnan(a[m]))
                for a, m in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(absent))
            )
            leaf = jax.tree_util.tree_leaves(raw)[0]
            res["results"].append(
                {
                    "case": case,
                    "space": name,
                    "devices": d,
                    "mesh_size": int(mesh.devices.size),
                    "max_abs_diff": max(jax.tree_util.tree_leaves(diffs)),
                    "finite": bool(finite),
                    "shapes_ok": bool(shapes_ok),
                    "result_devices": len(leaf.sharding.device_set),
                    "ref_scale": max(
                        float(np.max(np.abs(a), initial=0.0)) for a in jax.tree_util.tree_leaves(ref)
                    ),
                }
            )


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("--")])
