"""Question 1: all-pairs angular shape distance matrix of L layers -- geopath vs NumPy/SciPy vs PyTorch.

For each configuration ``LxN`` (``L`` layers with a CIFAR-ResNet width profile, ``N`` probe inputs) it times

* geopath: ``gp.pairwise_distances(gp.AngularShape(alpha), xs)`` on the raw NumPy activations (first call
  = trace + compile + run; steady = median of later calls);
* (a) NumPy/SciPy netrep-style: cached per-network preprocessing + one SVD per pair in a Python loop;
* (b) PyTorch repsim-style: cached per-network Gram matrix + square root, Bures fidelity per pair;

and reports the ratios (measured in the same process, back-to-back) and the max abs difference of the
distance matrices, plus the error of each against a float64 NumPy reference on a subset of pairs.
Baselines that would exceed ``--budget`` seconds are timed on a round-robin sample of pairs from every
cost class and extrapolated (labelled "est.").

Usage: ``flock /tmp/geopath-cpu.lock python -m benchmarks.bench_pairwise --configs 20x5000``
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _common as C
from benchmarks import baselines as B

DEFAULT_CONFIGS = "8x1000,20x1000,56x1000,20x5000"
SMOKE_CONFIGS = "5x48"


def _parse_configs(s: str) -> list[tuple[int, int]]:
    out = []
    for item in s.split(","):
        L, n = item.lower().split("x")
        out.append((int(L), int(n)))
    return out


def _ref_subset(widths, n, k):
    """Indices of up to k layers covering the distinct layer widths (for the float64 reference)."""
    seen, idx = set(), []
    for i, p in enumerate(widths):
        key = p
        if key not in seen:
            seen.add(key)
            idx.append(i)
    return sorted(idx[:k])


def _literal(xs, widths, n, args):
    """Times netrep's per-pair computation as shipped on one pair per width class (widths <= max width).

    Classes above ``--literal-max-width`` are not run; their per-pair time is extrapolated from the largest
    measured class by the ``k^3`` cost of the ``k x k`` SVD (labelled as extrapolated).
    """
    classes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in C.pair_list(len(xs)):
        classes.setdefault(tuple(sorted((widths[i], widths[j]))), []).append((i, j))
    per_class = {}
    for key in sorted(classes, key=lambda k: max(k)):
        if max(key) > args.literal_max_width:
            continue
        i, j = classes[key][0]
        t0 = time.perf_counter()
        xc, yc = (B.np_centered_unit(xs[m]) for m in (i, j))  # preprocessing is per pair in netrep too
        B.np_netrep_literal_pair(xc, yc)
        per_class[key] = time.perf_counter() - t0
    measured = {k: v for k, v in per_class.items()}
    if measured:
        kref = max(measured, key=lambda k: max(k))
        tref = measured[kref]
    total, extrapolated = 0.0, 0
    for key, lst in classes.items():
        if key in measured:
            total += measured[key] * len(lst)
        elif measured:
            total += tref * (max(key) / max(kref)) ** 3 * len(lst)
            extrapolated += len(lst)
    out = {
        "per_pair_s": {f"{a}x{b}": v for (a, b), v in measured.items()},
        "total_s": total,
        "pairs_extrapolated": extrapolated,
        "pairs": sum(len(v) for v in classes.values()),
    }
    if not args.quiet:
        print(
            f"#  netrep as shipped: per-pair {out['per_pair_s']}; all pairs ~{C.fmt_s(total)} "
            f"({extrapolated} pairs extrapolated by k^3)",
            flush=True,
        )
    return out


def run_config(gp, L, n, args, info_rows):
    dtype = args.dtype
    scale = args.width_scale
    widths = C.resnet_widths(L, scale=scale)
    t0 = time.perf_counter()
    xs = C.make_layers(n, widths, dtype=dtype, seed=args.seed)
    gen_s = time.perf_counter() - t0
    nbytes = sum(x.nbytes for x in xs)
    if not args.quiet:
        print(
            f"\n# config L={L} n={n} dtype={dtype} widths={widths} data={nbytes / 2**30:.2f} GiB "
            f"(generated in {gen_s:.1f} s)",
            flush=True,
        )
    res = {"L": L, "n": n, "dtype": dtype, "widths": widths, "alpha": args.alpha}
    others = []

    # ---------------- geopath
    d_gp = None
    if gp is not None:
        import jax  # noqa: PLC0415

        space = gp.AngularShape(alpha=args.alpha)
        C.wait_for_quiet_cpu()
        with C.jax_precision(dtype):
            timing, d_gp = C.time_call(
                lambda: gp.pairwise_distances(space, xs),
                repeats=args.repeats,
                budget_s=args.budget,
                min_repeats=1,
            )
            d_gp = np.asarray(d_gp, np.float64)
            res["geopath"] = timing
            others.append(timing.others_cpu)
            if args.roofline:
                from benchmarks import bench_roofline as R  # noqa: PLC0415

                kw_ = [int(min(w, n)) for w in widths]  # point widths: Gram route (k = n) for p > n, else p
                fm = R.flop_model(n, widths, kw_)
                total = fm["points_gemm"] + fm["points_lapack"] + fm["pairs_gemm"] + fm["pairs_lapack"]
                res["model_gflop"] = total / 1e9
                res["achieved_gflops"] = total / timing.steady_s / 1e9
            if args.breakdown:
                # Same work in two halves: points (per layer), then the pair programs on the points. One call each:
                # both reuse the programs compiled by the timed calls above (jit caches per shape).
                tp, pts = C.time_call(lambda: gp.points(space, xs), repeats=0, budget_s=args.budget)
                tq, _ = C.time_call(
                    lambda: gp.pairwise_distances(space, pts, are_points=True),
                    repeats=0,
                    budget_s=args.budget,
                )
                res["geopath_points"] = tp
                res["geopath_pairs"] = tq
                res["point_widths"] = [int(p.shape[1]) for p in pts]
                del pts
            jax.clear_caches()
        gc.collect()
        if not args.quiet:
            print(
                f"#  geopath: first {C.fmt_s(timing.first_s)}, steady {C.fmt_s(timing.steady_s)} "
                f"(median of {timing.repeats})",
                flush=True,
            )

    # ---------------- (a) NumPy / SciPy
    np_dtype = np.dtype(dtype)
    kw = dict(
        prep_key=lambda i: widths[i],
        pair_key=lambda i, j: tuple(sorted((min(widths[i], n), min(widths[j], n)))),
        budget_s=args.budget,
        seed=args.seed,
    )
    runs = []
    C.wait_for_quiet_cpu()
    mon = C.CpuMonitor().start()
    for rep in range(3):
        r = B.run_pairwise_budgeted(
            xs, lambda x: B.np_shape_point(x, args.alpha, dtype=np_dtype), B.np_pair_distance, **kw
        )
        runs.append(r)
        if not (r.complete and r.total_s * 4 < args.budget):
            break
    others.append(mon.stop())
    run_a = sorted(runs, key=lambda r: r.total_s)[(len(runs) - 1) // 2]
    res["numpy"] = {
        "total_s": run_a.total_s,
        "complete": run_a.complete,
        "pairs_timed": run_a.n_pairs_done,
        "pairs": run_a.n_pairs,
        "prep_s": sum(run_a.prep_s.values()),
        "runs": len(runs),
        "classes": run_a.classes,
    }
    d_a = run_a.dist
    del runs
    gc.collect()
    if not args.quiet:
        print(
            f"#  numpy/scipy: {C.fmt_s(run_a.total_s)} [{run_a.label}], median of {res['numpy']['runs']} run(s)",
            flush=True,
        )

    # ---------------- (b) PyTorch
    d_b, run_b = None, None
    if not args.no_torch and C.torch_available():
        C.wait_for_quiet_cpu()
        mon = C.CpuMonitor().start()
        with C.torch_threads():
            runs = []
            for rep in range(3):
                r = B.run_pairwise_budgeted(
                    xs,
                    lambda x: B.torch_gram_prepare(x, args.alpha, dtype=dtype),
                    B.torch_bures_distance,
                    prep_key=lambda i: widths[i],
                    pair_key=lambda i, j: "nxn",
                    budget_s=args.budget,
                    seed=args.seed,
                )
                runs.append(r)
                if not (r.complete and r.total_s * 4 < args.budget):
                    break
            run_b = sorted(runs, key=lambda r: r.total_s)[(len(runs) - 1) // 2]
        others.append(mon.stop())
        res["torch"] = {
            "total_s": run_b.total_s,
            "complete": run_b.complete,
            "pairs_timed": run_b.n_pairs_done,
            "pairs": run_b.n_pairs,
            "prep_s": sum(run_b.prep_s.values()),
            "runs": len(runs),
        }
        d_b = run_b.dist
        del runs
        gc.collect()
        if not args.quiet:
            print(f"#  torch: {C.fmt_s(run_b.total_s)} [{run_b.label}]", flush=True)

    # ---------------- netrep as shipped (per pair: centre, zero-pad, full SVD with U and V), one pair per class
    if args.literal:
        C.wait_for_quiet_cpu()
        mon = C.CpuMonitor().start()
        res["literal"] = _literal(xs, widths, n, args)
        others.append(mon.stop())
    res["others_cpu_max"] = max([o for o in others if o == o] or [float("nan")])

    # ---------------- float64 reference on a subset
    ref_idx = _ref_subset(widths, n, args.ref_nets) if args.ref_nets > 1 else []
    err = {}
    if ref_idx:
        pts64 = {i: B.np_shape_point(xs[i], args.alpha, dtype=np.float64) for i in ref_idx}
        ref = np.full((L, L), np.nan)
        for a_ in ref_idx:
            for b_ in ref_idx:
                if a_ < b_:
                    ref[a_, b_] = ref[b_, a_] = B.np_pair_distance(pts64[a_], pts64[b_])
        del pts64
        off = ~np.eye(L, dtype=bool)
        ref = np.where(off, ref, np.nan)
        for name, d in (("geopath", d_gp), ("numpy", d_a), ("torch", d_b)):
            if d is not None:
                err[name] = C.max_abs_diff(d, ref)
        res["ref_pairs"] = len(ref_idx) * (len(ref_idx) - 1) // 2
    res["err_vs_f64_ref"] = err
    res["diff"] = {}
    if d_gp is not None:
        res["diff"]["geopath_vs_numpy"] = C.max_abs_diff(d_gp, d_a)
        if d_b is not None:
            res["diff"]["geopath_vs_torch"] = C.max_abs_diff(d_gp, d_b)
    if d_b is not None:
        res["diff"]["numpy_vs_torch"] = C.max_abs_diff(d_a, d_b)
    res["dist_range"] = [float(np.nanmin(d_a[~np.eye(L, dtype=bool)])), float(np.nanmax(d_a))]
    del xs
    gc.collect()
    return res


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default=None, help=f"comma-separated LxN (default {DEFAULT_CONFIGS})")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--width-scale", type=int, default=1, help="divide all layer widths by this")
    p.add_argument(
        "--ref-nets",
        type=int,
        default=5,
        help="layers (one per layer width) in the float64 reference subset; 0 disables",
    )
    p.add_argument("--breakdown", action="store_true", help="also time geopath's points/pairs phases")
    p.add_argument(
        "--literal",
        action="store_true",
        help="also time netrep's per-pair computation as shipped (one pair per width class)",
    )
    p.add_argument("--literal-max-width", type=int, default=4096)
    p.add_argument(
        "--roofline",
        action="store_true",
        help="also measure the GEMM rate and report geopath's achieved GFLOP/s (bench_roofline model)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.configs = args.configs or SMOKE_CONFIGS
        args.width_scale = max(args.width_scale, 256)
        args.repeats = min(args.repeats, 2)
        args.budget = min(args.budget, 10.0)
        args.ref_nets = min(args.ref_nets, 3)
    configs = _parse_configs(args.configs or DEFAULT_CONFIGS)
    info, run_mon, gp = C.begin_run(args)
    gemm = None
    if args.roofline:
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        with C.jax_precision(args.dtype):
            m = 256 if args.smoke else 4096
            ga = jax.random.normal(jax.random.key(0), (m, m), jnp.dtype(args.dtype))
            dot = jax.jit(jnp.dot)
            t_gemm, _ = C.time_call(lambda: dot(ga, ga), repeats=5, budget_s=30.0)
            gemm = 2.0 * m**3 / t_gemm.steady_s / 1e9
            del ga
        print(f"# GEMM {m}x{m} {args.dtype} (jnp.dot): {gemm:.0f} GFLOP/s")
    results = []
    for L, n in configs:
        results.append(run_config(gp, L, n, args, None))

    rows = []
    for r in results:
        g = r.get("geopath")
        a = r["numpy"]
        t = r.get("torch")
        tag = lambda d: "" if d["complete"] else f" (est. {d['pairs_timed']}/{d['pairs']})"  # noqa: E731
        rows.append(
            [
                f"{r['L']}",
                f"{r['n']}",
                r["dtype"],
                C.fmt_s(g.steady_s) if g else "-",
                C.fmt_s(g.compile_s) if g else "-",
                C.fmt_s(a["total_s"]) + tag(a),
                C.fmt_x(a["total_s"] / g.steady_s) if g else "-",
                (C.fmt_s(t["total_s"]) + tag(t)) if t else "-",
                C.fmt_x(t["total_s"] / g.steady_s) if (g and t) else "-",
                C.fmt_e(r["diff"].get("geopath_vs_numpy")),
                C.fmt_e(r["diff"].get("geopath_vs_torch")),
                C.fmt_e(r["err_vs_f64_ref"].get("geopath")),
                C.fmt_e(r["err_vs_f64_ref"].get("numpy")),
                C.fmt_e(r["err_vs_f64_ref"].get("torch")),
                f"{100 * r['others_cpu_max']:.0f}%",
            ]
        )
    C.print_table(
        f"pairwise_distances, AngularShape(alpha={args.alpha}) ({args.dtype})",
        [
            "L",
            "n",
            "dtype",
            "geopath steady",
            "geopath compile",
            "(a) numpy/scipy",
            "(a)/gp",
            "(b) torch",
            "(b)/gp",
            "max diff gp-a",
            "max diff gp-b",
            "gp err f64",
            "a err f64",
            "b err f64",
            "other procs CPU",
        ],
        rows,
    )
    if gemm:
        C.print_table(
            f"roofline (FLOP model of bench_roofline; GEMM {gemm:.0f} GFLOP/s measured in this run)",
            ["L", "n", "model GFLOP", "geopath steady", "achieved GFLOP/s", "of GEMM roofline"],
            [
                [
                    r["L"],
                    r["n"],
                    f"{r['model_gflop']:.0f}",
                    C.fmt_s(r["geopath"].steady_s),
                    f"{r['achieved_gflops']:.1f}",
                    f"{100 * r['achieved_gflops'] / gemm:.1f}%",
                ]
                for r in results
                if "model_gflop" in r
            ],
        )
    if any(r.get("literal") for r in results):
        C.print_table(
            "netrep as shipped (per pair: centre, zero-pad to the wider layer, full SVD with U, V); one"
            " pair per width class",
            [
                "L",
                "n",
                "per-pair seconds by widths",
                "all pairs",
                "pairs extrapolated (k^3)",
                "vs geopath steady",
            ],
            [
                [
                    r["L"],
                    r["n"],
                    ", ".join(f"{k}: {v:.2f}" for k, v in r["literal"]["per_pair_s"].items()),
                    C.fmt_s(r["literal"]["total_s"]),
                    f"{r['literal']['pairs_extrapolated']}/{r['literal']['pairs']}",
                    C.fmt_x(r["literal"]["total_s"] / r["geopath"].steady_s) if r.get("geopath") else "-",
                ]
                for r in results
                if r.get("literal")
            ],
        )
    if any(r.get("geopath_points") for r in results):
        C.print_table(
            "geopath phase breakdown (one call each, after the timed ones; programs already compiled)",
            ["L", "n", "gp.points(xs)", "pairwise(points, are_points=True)", "sum", "point widths"],
            [
                [
                    r["L"],
                    r["n"],
                    C.fmt_s(r["geopath_points"].first_s),
                    C.fmt_s(r["geopath_pairs"].first_s),
                    C.fmt_s(r["geopath_points"].first_s + r["geopath_pairs"].first_s),
                    ",".join(map(str, r["point_widths"])),
                ]
                for r in results
                if r.get("geopath_points")
            ],
        )
    return C.finish_run(args, info, run_mon, results=results, gemm_gflops=gemm)


if __name__ == "__main__":
    main()
