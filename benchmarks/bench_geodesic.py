"""Question 2: geodesic points, angles and projections for a batch of triples -- geopath (vmap + jit) vs PyTorch.

For ``B`` triples of angular-shape points ``(a, b, c)`` (``n`` inputs, width ``p``) it times

* geopath: ``jax.jit(jax.vmap(op))`` for ``op`` in ``space.point`` (per representation),
  ``space.geodesic(a, b, t)``, ``gp.angle(space, a, b, c)``, ``gp.project(space, a, b, c)``;
* torch loop: the same operations (``benchmarks.baselines.t_*``, written from the math) in a Python loop
  over the triples (how one would write it with repsim-style per-pair code);
* torch batched: the same torch functions called once on ``[B, n, p]`` tensors (batched ``torch.linalg``),
  the strongest PyTorch baseline.

Both frameworks start from the *same* points (geopath's, converted) so the differences measure only the
operation. Reported: first call (compile for JAX), steady median, speed-up, max abs difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _common as C
from benchmarks import baselines as B


def _make_batch(batch, n, p, dtype, seed):
    xs = [C.make_layers(n, [p, p, p], dtype=dtype, seed=seed + k, drift=0.6) for k in range(batch)]
    return [np.stack([t[i] for t in xs]) for i in range(3)]  # 3 x [B, n, p]


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--p", type=int, default=256)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--t", type=float, default=0.3, help="geodesic fraction")
    p.add_argument("--iters", type=int, default=6, help="Newton steps of project (both frameworks)")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.n, args.p = min(args.batch, 4), min(args.n, 24), min(args.p, 8)
        args.repeats = min(args.repeats, 2)
        args.budget = min(args.budget, 10.0)
    info, run_mon, gp = C.begin_run(args)
    if gp is None:
        print("# geopath does not import: nothing to compare")
        return {"machine": info, "results": []}
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    xa, xb, xc = _make_batch(args.batch, args.n, args.p, args.dtype, args.seed)
    space = gp.AngularShape(alpha=args.alpha)
    rows, results = [], []
    with C.jax_precision(args.dtype):
        dt = jnp.dtype(args.dtype)
        t_frac = args.t
        f_point = jax.jit(jax.vmap(space.point))
        f_geo = jax.jit(jax.vmap(lambda a, b: space.geodesic(a, b, jnp.asarray(t_frac, dt))))
        f_ang = jax.jit(jax.vmap(lambda a, b, c: gp.angle(space, a, b, c)))
        f_proj = jax.jit(jax.vmap(lambda a, b, c: gp.project(space, a, b, c, num_iters=args.iters)))
        X = [jnp.asarray(x) for x in (xa, xb, xc)]
        tim = {}
        tim["point"], pts = C.time_call(
            lambda: [f_point(x) for x in X], repeats=args.repeats, budget_s=args.budget
        )
        A, Bp, Cp = pts
        tim["geodesic"], g_geo = C.time_call(lambda: f_geo(A, Bp), repeats=args.repeats, budget_s=args.budget)
        tim["angle"], g_ang = C.time_call(
            lambda: f_ang(A, Bp, Cp), repeats=args.repeats, budget_s=args.budget
        )
        tim["project"], g_proj = C.time_call(
            lambda: f_proj(A, Bp, Cp), repeats=args.repeats, budget_s=args.budget
        )
        gres = {
            "point": np.asarray(A),
            "geodesic": np.asarray(g_geo),
            "angle": np.asarray(g_ang),
            "project_t": np.asarray(g_proj.t),
            "project_d": np.asarray(g_proj.distance),
        }
        pts_np = [np.array(x) for x in pts]

    tt = {}
    diffs = {}
    if not args.no_torch and C.torch_available():
        import torch  # noqa: PLC0415

        with C.torch_threads(), torch.no_grad():
            XT = [torch.from_numpy(x) for x in (xa, xb, xc)]
            TA, TB, TC = (torch.from_numpy(x) for x in pts_np)
            nb = args.batch
            tf = torch.tensor(t_frac, dtype=TA.dtype)

            def loop(fn, *args_):
                return [fn(*(a[k] for a in args_)) for k in range(nb)]

            ops = {
                "point": (
                    lambda: (
                        loop(lambda x: B.t_point(x, args.alpha), XT[0])
                        + loop(lambda x: B.t_point(x, args.alpha), XT[1])
                        + loop(lambda x: B.t_point(x, args.alpha), XT[2])
                    ),
                    lambda: [B.t_point(x, args.alpha) for x in XT],
                ),
                "geodesic": (
                    lambda: loop(lambda a, b: B.t_geodesic(a, b, tf), TA, TB),
                    lambda: B.t_geodesic(TA, TB, tf),
                ),
                "angle": (lambda: loop(B.t_angle, TA, TB, TC), lambda: B.t_angle(TA, TB, TC)),
                "project": (
                    lambda: loop(lambda a, b, c: B.t_project(a, b, c, args.iters), TA, TB, TC),
                    lambda: B.t_project(TA, TB, TC, args.iters),
                ),
            }
            for name, (f_loop, f_batch) in ops.items():
                tl, out_l = C.time_call(f_loop, repeats=args.repeats, budget_s=args.budget)
                tb, out_b = C.time_call(f_batch, repeats=args.repeats, budget_s=args.budget)
                tt[name] = (tl, tb)
                if name == "point":
                    d = max(
                        C.max_abs_diff(gres["point"], out_b[0].numpy()),
                        C.max_abs_diff(gres["point"], np.stack([o.numpy() for o in out_l[:nb]])),
                    )
                elif name == "geodesic":
                    d = max(
                        C.max_abs_diff(gres["geodesic"], out_b.numpy()),
                        C.max_abs_diff(gres["geodesic"], np.stack([o.numpy() for o in out_l])),
                    )
                elif name == "angle":
                    d = max(
                        C.max_abs_diff(gres["angle"], out_b.numpy()),
                        C.max_abs_diff(gres["angle"], np.stack([o.numpy() for o in out_l])),
                    )
                else:
                    d = max(
                        C.max_abs_diff(gres["project_t"], out_b[0].numpy()),
                        C.max_abs_diff(gres["project_d"], out_b[2].numpy()),
                        C.max_abs_diff(gres["project_t"], np.stack([o[0].numpy() for o in out_l])),
                        C.max_abs_diff(gres["project_d"], np.stack([o[2].numpy() for o in out_l])),
                    )
                diffs[name] = d

    for name in ("point", "geodesic", "angle", "project"):
        g = tim[name]
        tl, tb = tt.get(name, (None, None))
        rows.append(
            [
                name,
                C.fmt_s(g.steady_s),
                C.fmt_s(g.compile_s),
                C.fmt_s(tl.steady_s) if tl else "-",
                C.fmt_x(tl.steady_s / g.steady_s) if tl else "-",
                C.fmt_s(tb.steady_s) if tb else "-",
                C.fmt_x(tb.steady_s / g.steady_s) if tb else "-",
                C.fmt_e(diffs.get(name)),
            ]
        )
        results.append(
            {"op": name, "geopath": g, "torch_loop": tl, "torch_batched": tb, "max_abs_diff": diffs.get(name)}
        )
    C.print_table(
        f"{args.batch} triples, n={args.n}, p={args.p}, AngularShape(alpha={args.alpha}), {args.dtype}"
        f" (point row: {3 * args.batch} representations)",
        [
            "op",
            "geopath vmap+jit",
            "gp compile",
            "torch loop",
            "loop/gp",
            "torch batched",
            "batched/gp",
            "max abs diff",
        ],
        rows,
    )
    return C.finish_run(args, info, run_mon, results=results)


if __name__ == "__main__":
    main()
