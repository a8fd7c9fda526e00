"""Question 6: how does all-pairs (``pairwise_distances(..., mesh=)``) scale with the number of devices?

For each device count ``D`` in ``--devices``, the pair phase of ``pairwise_distances`` (points computed once,
then ``are_points=True``) runs on ``gp.device_mesh(jax.devices()[:D])``: the first call (compiles for that
mesh) and the steady time, the speed-up over ``D = 1``, the pair slots the plan allocates per real pair
(padding), and the largest difference from the ``D = 1`` matrix (must be float round-off).

On CPU the devices are forced (``XLA_FLAGS=--xla_force_host_platform_device_count``, set here before JAX
starts when the script runs as a program): they are threads sharing the SAME cores, so the table measures
the overhead of sharding, not a speed-up. On a GPU host the devices are real.

Usage: ``python -m benchmarks.bench_sharding --devices 1,2,4,8 --configs 16x500``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C


def force_cpu_devices(n: int) -> bool:
    """Asks XLA for ``n`` host devices; only possible before JAX starts. Returns whether it was set."""
    if "jax" in sys.modules:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    return True


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,2,3,4,8", help="comma-separated device counts")
    p.add_argument("--configs", default="16x500", help="comma-separated LxN")
    p.add_argument("--width-scale", type=int, default=1)
    args = p.parse_args(argv)
    if args.smoke:
        args.configs, args.width_scale = "6x24", 256
        args.repeats, args.budget = min(args.repeats, 2), min(args.budget, 10.0)
    counts = [int(v) for v in args.devices.split(",")]
    forced = force_cpu_devices(max(counts))
    info, run_mon, gp = C.begin_run(args)
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    available = jax.device_count()
    info["devices"] = f"{available} x {jax.devices()[0].device_kind} ({jax.default_backend()})"
    info["devices_forced"] = forced and jax.default_backend() == "cpu"
    counts = [d for d in counts if d <= available] or [1]
    results = []
    with C.jax_precision(args.dtype):
        space = gp.AngularShape(alpha=1.0)
        for item in args.configs.split(","):
            L, n = (int(v) for v in item.lower().split("x"))
            xs = C.make_layers(
                n, C.resnet_widths(L, scale=args.width_scale), dtype=args.dtype, seed=args.seed
            )
            pts = [jax.block_until_ready(q) for q in gp.points(space, xs)]
            ref = None
            for d in counts:
                mesh = gp.device_mesh(jax.devices()[:d])
                plan = gp.pairwise_plan(space, pts, mesh=mesh)
                t, out = C.time_call(
                    lambda: gp.pairwise_distances(space, pts, are_points=True, mesh=mesh),
                    repeats=args.repeats,
                    budget_s=args.budget,
                )
                out = np.asarray(out, np.float64)
                ref = out if ref is None else ref
                real = sum(b.pairs for b in plan.blocks)
                results.append(
                    {
                        "L": L,
                        "n": n,
                        "devices": d,
                        "timing": t,
                        "pairs": real,
                        "slots_per_pair": plan.padded_pairs / max(real, 1),
                        "max_abs_diff": float(np.max(np.abs(out - ref))),
                    }
                )
                if not args.quiet:
                    print(f"# {L}x{n} on {d} device(s): steady {C.fmt_s(t.steady_s)}", flush=True)
            del xs, pts
    base = {(r["L"], r["n"]): r["timing"].steady_s for r in results if r["devices"] == counts[0]}
    rows = [
        [
            f"{r['L']}x{r['n']}",
            r["devices"],
            C.fmt_s(r["timing"].first_s),
            C.fmt_s(r["timing"].steady_s),
            C.fmt_x(base[(r["L"], r["n"])] / r["timing"].steady_s),
            f"{r['slots_per_pair']:.2f}",
            C.fmt_e(r["max_abs_diff"]),
        ]
        for r in results
    ]
    kind = (
        "forced CPU devices sharing the same cores: overhead, not speed-up"
        if info["devices_forced"]
        else "real devices"
    )
    C.print_table(
        f"pairwise_distances pair phase vs device count ({info['devices']}; {kind}; {args.dtype})",
        [
            "LxN",
            "devices",
            "first call",
            "steady",
            f"speed-up vs {counts[0]}",
            "pair slots / pair",
            "max |diff|",
        ],
        rows,
    )
    return C.finish_run(args, info, run_mon, results=results)


if __name__ == "__main__":
    main()
