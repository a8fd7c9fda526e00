"""Question 4: how close does geopath's pairwise_distances get to this machine's GEMM roofline?

FLOP model of the algorithm geopath uses (``AngularShape(alpha=1)``, read from geopath/_src/spaces.py and
pairwise.py), counted from the shapes of this run:

* points, per layer ``[n, p]``: features route (``p <= n``): O(np) (centring/scaling; not counted).
  Gram route (``p > n``): ``X X^T`` = ``2 n^2 p``; ``eigh`` with eigenvectors = ``14/3 n^3`` (assumed:
  tridiagonalisation 4/3 n^3 + divide-and-conquer ~4/3 n^3 + back-transformation 2 n^3); forming
  ``W sqrt(L) W^T`` = ``2 n^3``.
* pairs, per pair in a bucket pair with padded widths ``(kp, kq)`` (buckets from the public ``gp.pairwise_plan``): cross-covariance ``a^T b`` =
  ``2 n kp kq``; singular values only (``gesdd``, Golub-Kahan bidiagonalisation) of the ``m x q`` product
  (``m >= q``) = ``4 m q^2 - 4/3 q^3``.

Reported: the model FLOPs (with padding, as executed, and without padding), the achieved GFLOP/s
(model FLOPs / measured steady time), and the fraction of the GEMM rate measured in the same run
(``jnp.dot`` of two ``m x m`` matrices). The same accounting is applied to one stand-alone SVD and one
``eigh`` at the dominant size, which shows the ceiling that LAPACK's decompositions put on this algorithm.
XLA's own ``cost_analysis`` FLOPs for the pair programs are printed as a cross-check (XLA counts the dots but
not the LAPACK custom calls).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _common as C

EIGH_C = 14.0 / 3.0


def svd_vals_flops(m: int, q: int) -> float:
    m, q = max(m, q), min(m, q)
    return 4.0 * m * q * q - 4.0 / 3.0 * q**3


def gram_route_flops(n: int, p: int) -> dict[str, float]:
    return {"gemm": 2.0 * n * n * p + 2.0 * n**3, "lapack": EIGH_C * n**3}


def plan_buckets(n: int, point_widths: list[int], ratio: float = 1.25) -> list[tuple[tuple[int, ...], int]]:
    """geopath's own bucketing of points ``[n, k]`` (public ``gp.pairwise_plan``): ``[(members, padded k)]``."""
    import jax  # noqa: PLC0415

    import geopath as gp  # noqa: PLC0415

    shapes = [jax.ShapeDtypeStruct((n, int(k)), np.float32) for k in point_widths]
    plan = gp.pairwise_plan(gp.AngularShape(alpha=1.0), shapes, bucket_ratio=ratio)
    return [(members, shape[1]) for members, shape in zip(plan.buckets, plan.shapes)]


def flop_model(n: int, raw_widths: list[int], point_widths: list[int]) -> dict[str, float]:
    pts_gemm = pts_lapack = 0.0
    for p, k in zip(raw_widths, point_widths):
        if p > n:
            f = gram_route_flops(n, p)
            pts_gemm += f["gemm"]
            pts_lapack += f["lapack"]
    buckets = plan_buckets(n, point_widths)
    pad_gemm = pad_lapack = 0.0
    for bi in range(len(buckets)):
        for bj in range(bi, len(buckets)):
            gi, ki = buckets[bi]
            gj, kj = buckets[bj]
            npairs = len(gi) * (len(gi) - 1) // 2 if bi == bj else len(gi) * len(gj)
            pad_gemm += npairs * 2.0 * n * ki * kj
            pad_lapack += npairs * svd_vals_flops(ki, kj)
    raw_gemm = raw_lapack = 0.0
    L = len(point_widths)
    for i in range(L):
        for j in range(i + 1, L):
            ki, kj = point_widths[i], point_widths[j]
            raw_gemm += 2.0 * n * ki * kj
            raw_lapack += svd_vals_flops(ki, kj)
    return {
        "points_gemm": pts_gemm,
        "points_lapack": pts_lapack,
        "pairs_gemm": pad_gemm,
        "pairs_lapack": pad_lapack,
        "pairs_gemm_unpadded": raw_gemm,
        "pairs_lapack_unpadded": raw_lapack,
        "buckets": [(len(g), k) for g, k in buckets],
    }


def alternatives(gp, n: int, widths: list[int], dtype: str, args) -> dict:
    """Diagnosis: cost and float32 accuracy of the building blocks of pairwise_distances vs alternatives.

    * points (one layer of each width ``p > n``): geopath's ``space.point`` (Gram route: ``psd_sqrt(X X^T)``)
      vs a QR route (``R^T`` from ``geqrf`` of ``X^T``; the same distances, no squared condition number);
    * pair kernel at the dominant ``k x k`` size: ``svd(a^T b, compute_uv=False)`` (geopath) vs
      ``eigvalsh(M^T M)`` in JAX (its CPU lowering computes eigenvectors too) vs SciPy's values-only
      ``eigh`` / ``svd`` on the same matrix; plus the ``a^T b`` GEMM alone.
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import scipy.linalg as sla  # noqa: PLC0415
    from jax._src.lax import linalg as lax_linalg  # noqa: PLC0415 - geqrf has no public alias in jax 0.10

    from benchmarks import baselines as B  # noqa: PLC0415

    space = gp.AngularShape(alpha=1.0)
    out = {"points": [], "pair": {}}

    @jax.jit
    def qr_point(x):
        x = x.reshape(x.shape[0], -1)
        xc = x - jnp.mean(x, axis=0, keepdims=True)
        a, _ = lax_linalg.geqrf(xc.T)  # [p, n]; R is the upper triangle of the first n rows
        r = jnp.triu(a[: x.shape[0]])
        z = r.T
        return z / jnp.linalg.norm(z)

    point = jax.jit(space.point)
    rng_layers = {}
    for p in sorted({w for w in widths if w > n}, reverse=True):
        x, y = C.make_layers(n, [p, p], dtype=dtype, seed=args.seed + 7)
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        tg, (ga, gb) = C.time_call(lambda: (point(jx), point(jy)), repeats=2, budget_s=args.budget)
        tq, (qa, qb) = C.time_call(lambda: (qr_point(jx), qr_point(jy)), repeats=2, budget_s=args.budget)
        ref = B.np_pair_distance(B.np_shape_point(x, dtype=np.float64), B.np_shape_point(y, dtype=np.float64))
        dg = float(space.prepared_distance(ga, gb))
        dq = float(space.prepared_distance(qa, qb))
        out["points"].append(
            {
                "p": p,
                "geopath_point_s": tg.steady_s / 2,
                "qr_point_s": tq.steady_s / 2,
                "geopath_err": abs(dg - ref),
                "qr_err": abs(dq - ref),
                "ref": ref,
            }
        )
        rng_layers[p] = (qa, qb)
        del x, y, jx, jy, ga, gb
    # Pair kernel at the dominant size.
    k = min(n, max(widths))
    if rng_layers:
        a, b = next(iter(rng_layers.values()))
    else:
        a, b = (jnp.asarray(v) for v in C.make_layers(n, [k, k], dtype=dtype, seed=args.seed + 8))
    svd = jax.jit(lambda a, b: jnp.sum(jnp.linalg.svd(a.T @ b, compute_uv=False)))
    gemm = jax.jit(lambda a, b: a.T @ b)
    evh = jax.jit(
        lambda a, b: jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh((a.T @ b).T @ (a.T @ b)), 0)))
    )
    m_np = np.asarray(gemm(a, b))
    mtm = m_np.T @ m_np
    res = {}
    res["gemm_aTb"], _ = C.time_call(lambda: gemm(a, b), repeats=3, budget_s=args.budget)
    res["jax_svd_vals"], v_svd = C.time_call(lambda: svd(a, b), repeats=2, budget_s=args.budget)
    res["jax_eigvalsh_MtM"], v_evh = C.time_call(lambda: evh(a, b), repeats=2, budget_s=args.budget)
    res["scipy_svd_vals"], _ = C.time_call(
        lambda: sla.svd(m_np, compute_uv=False, check_finite=False), repeats=2, budget_s=args.budget
    )
    res["scipy_eigh_vals_MtM"], v_sc = C.time_call(
        lambda: sla.eigh(mtm, eigvals_only=True, check_finite=False, driver="evd"),
        repeats=2,
        budget_s=args.budget,
    )
    nuc_ref = float(np.sum(np.linalg.svd(m_np.astype(np.float64), compute_uv=False)))
    out["pair"] = {
        "k": k,
        **{name: t.steady_s for name, t in res.items()},
        "err_svd": abs(float(v_svd) - nuc_ref),
        "err_eigvalsh_MtM": abs(float(v_evh) - nuc_ref),
        "err_scipy_eigh_MtM": abs(float(np.sum(np.sqrt(np.maximum(v_sc, 0)))) - nuc_ref),
    }
    return out


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default="20x1000", help="comma-separated LxN")
    p.add_argument("--gemm-size", type=int, default=4096)
    p.add_argument("--width-scale", type=int, default=1)
    p.add_argument(
        "--alternatives",
        action="store_true",
        help="also time geopath's building blocks against alternatives (diagnosis)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.configs, args.gemm_size, args.width_scale = "4x40", 128, 256
        args.repeats, args.budget = min(args.repeats, 2), min(args.budget, 10.0)
    info, run_mon, gp = C.begin_run(args)
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    results = []
    with C.jax_precision(args.dtype):
        dt = jnp.dtype(args.dtype)
        m = args.gemm_size
        key = jax.random.key(args.seed)
        ga = jax.random.normal(key, (m, m), dt)
        gb = jax.random.normal(jax.random.fold_in(key, 1), (m, m), dt)
        dot = jax.jit(jnp.dot)
        t_gemm, _ = C.time_call(lambda: dot(ga, gb), repeats=max(args.repeats, 3), budget_s=args.budget)
        gemm_rate = 2.0 * m**3 / t_gemm.steady_s
        del ga, gb
        if not args.quiet:
            print(
                f"# GEMM {m}x{m} {args.dtype}: {C.fmt_s(t_gemm.steady_s)} -> {gemm_rate / 1e9:.0f} GFLOP/s",
                flush=True,
            )

        for item in args.configs.split(","):
            L, n = (int(v) for v in item.lower().split("x"))
            widths = C.resnet_widths(L, scale=args.width_scale)
            xs = C.make_layers(n, widths, dtype=args.dtype, seed=args.seed)
            res = {
                "L": L,
                "n": n,
                "dtype": args.dtype,
                "gemm_s": t_gemm.steady_s,
                "gemm_gflops": gemm_rate / 1e9,
            }
            # Dominant-size LAPACK pieces on their own.
            k = min(n, max(widths))
            mk = jax.random.normal(key, (k, k), dt)
            svd = jax.jit(lambda a: jnp.linalg.svd(a, compute_uv=False))
            t_svd, _ = C.time_call(lambda: svd(mk), repeats=args.repeats, budget_s=args.budget)
            sym = mk @ mk.T
            eigh = jax.jit(jnp.linalg.eigh)
            t_eigh, _ = C.time_call(lambda: eigh(sym), repeats=args.repeats, budget_s=args.budget)
            del mk, sym
            res["svd_k"] = k
            res["svd_s"] = t_svd.steady_s
            res["svd_gflops"] = svd_vals_flops(k, k) / t_svd.steady_s / 1e9
            res["eigh_s"] = t_eigh.steady_s
            res["eigh_gflops"] = EIGH_C * k**3 / t_eigh.steady_s / 1e9
            if gp is not None:
                space = gp.AngularShape(alpha=1.0)
                t_all, _ = C.time_call(
                    lambda: gp.pairwise_distances(space, xs), repeats=args.repeats, budget_s=args.budget
                )
                t_pts, pts = C.time_call(lambda: gp.points(space, xs), repeats=1, budget_s=args.budget)
                t_pairs, _ = C.time_call(
                    lambda: gp.pairwise_distances(space, pts, are_points=True),
                    repeats=1,
                    budget_s=args.budget,
                )
                kw = [int(q.shape[1]) for q in pts]
                fm = flop_model(n, widths, kw)
                # XLA's count for the pair programs (dots only) -- cross-check of the GEMM part of the model:
                # one pair kernel per block, lowered through public API only, times the block's real pairs.
                xla_flops = 0.0
                plan = gp.pairwise_plan(space, pts)
                kernel = jax.jit(space.prepared_distance)
                for blk in plan.blocks:
                    sp, sq = (jax.ShapeDtypeStruct(plan.shapes[b], dt) for b in (blk.p, blk.q))
                    ca = kernel.lower(sp, sq).compile().cost_analysis()
                    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
                    xla_flops += blk.pairs * float(ca.get("flops", 0.0))
                del pts
                total = fm["points_gemm"] + fm["points_lapack"] + fm["pairs_gemm"] + fm["pairs_lapack"]
                useful = (
                    fm["points_gemm"]
                    + fm["points_lapack"]
                    + fm["pairs_gemm_unpadded"]
                    + fm["pairs_lapack_unpadded"]
                )
                res.update(
                    geopath=t_all,
                    points=t_pts,
                    pairs=t_pairs,
                    point_widths=kw,
                    model=fm,
                    xla_pair_flops=xla_flops,
                    model_gflop=total / 1e9,
                    useful_gflop=useful / 1e9,
                    achieved_gflops=total / t_all.steady_s / 1e9,
                    fraction=total / t_all.steady_s / gemm_rate,
                    useful_fraction=useful / t_all.steady_s / gemm_rate,
                    points_fraction=(fm["points_gemm"] + fm["points_lapack"]) / t_pts.steady_s / gemm_rate,
                    pairs_fraction=(fm["pairs_gemm"] + fm["pairs_lapack"]) / t_pairs.steady_s / gemm_rate,
                    lapack_share=(fm["points_lapack"] + fm["pairs_lapack"]) / total,
                )
            if args.alternatives and gp is not None:
                res["alternatives"] = alternatives(gp, n, widths, args.dtype, args)
            results.append(res)
            del xs

    rows = []
    for r in results:
        if "geopath" not in r:
            continue
        fm = r["model"]
        rows.append(
            [
                f"{r['L']}x{r['n']}",
                r["dtype"],
                f"{r['model_gflop']:.4g} ({r['useful_gflop']:.4g})",
                f"{100 * r['lapack_share']:.0f}%",
                C.fmt_s(r["geopath"].steady_s),
                f"{r['achieved_gflops']:.1f}",
                f"{r['gemm_gflops']:.0f}",
                f"{100 * r['fraction']:.1f}%",
                f"{100 * r['points_fraction']:.1f}%",
                f"{100 * r['pairs_fraction']:.1f}%",
                f"{r['svd_gflops']:.1f} ({100 * r['svd_gflops'] / r['gemm_gflops']:.0f}%)",
                f"{r['eigh_gflops']:.1f} ({100 * r['eigh_gflops'] / r['gemm_gflops']:.0f}%)",
            ]
        )
    C.print_table(
        f"roofline of pairwise_distances(AngularShape(1.0)) vs measured {args.gemm_size}^2 GEMM ({args.dtype})",
        [
            "LxN",
            "dtype",
            "model GFLOP (no padding)",
            "LAPACK share",
            "geopath steady",
            "achieved GFLOP/s",
            "GEMM GFLOP/s",
            "of roofline",
            "points phase",
            "pairs phase",
            "SVD k×k alone",
            "eigh k×k alone",
        ],
        rows,
    )
    for r in results:
        if "model" in r:
            fm = r["model"]
            print(
                f"# {r['L']}x{r['n']}: buckets (count, padded width) {fm['buckets']}; model GFLOP: points gemm "
                f"{fm['points_gemm'] / 1e9:.1f} + eigh {fm['points_lapack'] / 1e9:.1f}; pairs gemm "
                f"{fm['pairs_gemm'] / 1e9:.1f} + svd {fm['pairs_lapack'] / 1e9:.1f} (unpadded "
                f"{fm['pairs_gemm_unpadded'] / 1e9:.1f} + {fm['pairs_lapack_unpadded'] / 1e9:.1f}); XLA cost_analysis"
                f" of the pair programs: {r['xla_pair_flops'] / 1e9 if r['xla_pair_flops'] else float('nan'):.1f}"
                f" GFLOP; SVD {r['svd_k']}^2 alone {C.fmt_s(r['svd_s'])}, eigh alone {C.fmt_s(r['eigh_s'])};"
                f" points phase {C.fmt_s(r['points'].steady_s)}, pairs phase {C.fmt_s(r['pairs'].steady_s)}"
            )
    others = run_mon.stop()
    print(f"# other processes used {100 * others:.0f}% of the machine's CPU during this run")
    for r in results:
        alt = r.get("alternatives")
        if not alt:
            continue
        C.print_table(
            f"diagnosis {r['L']}x{r['n']} ({args.dtype}): points, one layer (distance error of a pair of "
            "such layers vs float64)",
            ["p", "geopath point (Gram+eigh)", "QR route (geqrf)", "speed-up", "gp dist err", "QR dist err"],
            [
                [
                    a["p"],
                    C.fmt_s(a["geopath_point_s"]),
                    C.fmt_s(a["qr_point_s"]),
                    C.fmt_x(a["geopath_point_s"] / a["qr_point_s"]),
                    C.fmt_e(a["geopath_err"]),
                    C.fmt_e(a["qr_err"]),
                ]
                for a in alt["points"]
            ],
        )
        pr = alt["pair"]
        C.print_table(
            f"diagnosis {r['L']}x{r['n']} ({args.dtype}): one pair kernel at k={pr['k']} (error of the nuclear "
            "norm vs float64)",
            [
                "a^T b GEMM",
                "jax svd vals (geopath)",
                "jax eigvalsh(M^T M)",
                "scipy svd vals",
                "scipy eigh vals (M^T M)",
                "err svd",
                "err jax eigvalsh",
                "err scipy eigh",
            ],
            [
                [
                    C.fmt_s(pr["gemm_aTb"]),
                    C.fmt_s(pr["jax_svd_vals"]),
                    C.fmt_s(pr["jax_eigvalsh_MtM"]),
                    C.fmt_s(pr["scipy_svd_vals"]),
                    C.fmt_s(pr["scipy_eigh_vals_MtM"]),
                    C.fmt_e(pr["err_svd"]),
                    C.fmt_e(pr["err_eigvalsh_MtM"]),
                    C.fmt_e(pr["err_scipy_eigh_MtM"]),
                ]
            ],
        )
    payload = {"machine": info, "others_cpu": others, "args": vars(args), "results": results}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
