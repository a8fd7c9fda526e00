"""Question 5: how do time and memory of all-pairs distances scale with n (inputs) and L (layers)?

Two sweeps over the synthetic CIFAR-ResNet width profile, each timing geopath's ``pairwise_distances``
(steady state; the first call with compile time is reported separately), the NumPy/SciPy netrep-style and
the PyTorch repsim-style baselines (``benchmarks/baselines.py``):

* vs ``n`` at fixed ``L`` (``--n-list``, ``--L-fixed``);
* vs ``L`` at fixed ``n`` (``--L-list``, ``--n-fixed``).

Power-law exponents are fitted by least squares in log-log space (``np.polyfit(log x, log t, 1)``).

Peak memory: for every measurement the peak resident set size of the process *above its resident size just
before the call* (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; falls back to
``ru_maxrss``). It counts every buffer the call allocates -- XLA's, NumPy's, PyTorch's, including freed
temporaries -- but not the input arrays, which exist before the call. For geopath it is measured on a steady
(already compiled) call, so compilation memory is excluded.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _common as C
from benchmarks import baselines as B


def _fit(xs, ts):
    xs, ts = np.asarray(xs, float), np.asarray(ts, float)
    ok = np.isfinite(ts) & (ts > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs[ok]), np.log(ts[ok]), 1)[0])


def measure(gp, L, n, args):
    widths = C.resnet_widths(L, scale=args.width_scale)
    xs = C.make_layers(n, widths, dtype=args.dtype, seed=args.seed)
    out = {"L": L, "n": n}
    if gp is not None:
        import jax  # noqa: PLC0415

        space = gp.AngularShape(alpha=1.0)
        with C.jax_precision(args.dtype):
            t, _ = C.time_call(
                lambda: gp.pairwise_distances(space, xs), repeats=args.repeats, budget_s=args.budget
            )
            gc.collect()
            with C.peak_memory() as mem:
                C.block(gp.pairwise_distances(space, xs))
            jax.clear_caches()
        out["geopath"], out["geopath_mem"] = t, mem["peak_mib"]
        out["mem_method"] = mem["method"]
    gc.collect()
    with C.peak_memory() as mem:
        r = B.run_pairwise_budgeted(
            xs,
            lambda x: B.np_shape_point(x, 1.0, dtype=np.dtype(args.dtype)),
            B.np_pair_distance,
            prep_key=lambda i: widths[i],
            pair_key=lambda i, j: tuple(sorted((min(widths[i], n), min(widths[j], n)))),
            budget_s=args.budget,
            seed=args.seed,
        )
        del r.dist
    out["numpy"], out["numpy_complete"], out["numpy_mem"] = r.total_s, r.complete, mem["peak_mib"]
    del r
    gc.collect()
    if not args.no_torch and C.torch_available():
        with C.torch_threads(), C.peak_memory() as mem:
            r = B.run_pairwise_budgeted(
                xs,
                lambda x: B.torch_gram_prepare(x, 1.0, dtype=args.dtype),
                B.torch_bures_distance,
                prep_key=lambda i: widths[i],
                pair_key=lambda i, j: "nxn",
                budget_s=args.budget,
                seed=args.seed,
            )
        out["torch"], out["torch_complete"], out["torch_mem"] = r.total_s, r.complete, mem["peak_mib"]
        del r
    del xs
    gc.collect()
    return out


def _table(title, key, rows_in, fits):
    rows = []
    for r in rows_in:
        g = r.get("geopath")
        rows.append(
            [
                r[key],
                C.fmt_s(g.steady_s) if g else "-",
                C.fmt_s(g.compile_s) if g else "-",
                f"{r['geopath_mem']:.0f}" if g else "-",
                C.fmt_s(r["numpy"]) + ("" if r["numpy_complete"] else " (est.)"),
                f"{r['numpy_mem']:.0f}",
                (C.fmt_s(r["torch"]) + ("" if r["torch_complete"] else " (est.)")) if "torch" in r else "-",
                f"{r['torch_mem']:.0f}" if "torch" in r else "-",
            ]
        )
    rows.append(
        [
            "exponent",
            f"{fits.get('geopath', float('nan')):.2f}",
            "",
            "",
            f"{fits['numpy']:.2f}",
            "",
            f"{fits.get('torch', float('nan')):.2f}",
            "",
        ]
    )
    C.print_table(
        title,
        [key, "geopath steady", "gp compile", "gp peak MiB", "(a) numpy", "(a) MiB", "(b) torch", "(b) MiB"],
        rows,
    )


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n-list", default="250,500,1000,2000")
    p.add_argument("--L-fixed", type=int, default=8)
    p.add_argument("--L-list", default="4,8,16,32")
    p.add_argument("--n-fixed", type=int, default=500)
    p.add_argument("--width-scale", type=int, default=1)
    args = p.parse_args(argv)
    if args.smoke:
        args.n_list, args.L_fixed, args.L_list, args.n_fixed = "16,32", 4, "3,5", 16
        args.width_scale = max(args.width_scale, 512)
        args.repeats, args.budget = min(args.repeats, 2), min(args.budget, 10.0)
    info, run_mon, gp = C.begin_run(args)
    sweeps = {}
    for name, key, grid in (
        ("n", "n", [int(v) for v in args.n_list.split(",")]),
        ("L", "L", [int(v) for v in args.L_list.split(",")]),
    ):
        rows = []
        for v in grid:
            L, n = (args.L_fixed, v) if name == "n" else (v, args.n_fixed)
            r = measure(gp, L, n, args)
            rows.append(r)
            if not args.quiet:
                g = r.get("geopath")
                print(
                    f"# L={L} n={n}: geopath {C.fmt_s(g.steady_s) if g else '-'}, numpy {C.fmt_s(r['numpy'])}, "
                    f"torch {C.fmt_s(r.get('torch', float('nan')))}",
                    flush=True,
                )
        xs = [r[key] for r in rows]
        fits = {"numpy": _fit(xs, [r["numpy"] for r in rows])}
        if gp is not None:
            fits["geopath"] = _fit(xs, [r["geopath"].steady_s for r in rows])
        if all("torch" in r for r in rows):
            fits["torch"] = _fit(xs, [r["torch"] for r in rows])
        sweeps[name] = {"rows": rows, "exponents": fits}
        fixed = f"L={args.L_fixed}" if name == "n" else f"n={args.n_fixed}"
        _table(
            f"time and peak memory vs {key} ({fixed}, {args.dtype}; memory = peak RSS above the pre-call RSS, "
            f"MiB)",
            key,
            rows,
            fits,
        )
    return C.finish_run(args, info, run_mon, sweeps=sweeps)


if __name__ == "__main__":
    main()
