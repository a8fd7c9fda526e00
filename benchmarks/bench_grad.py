"""Question 3: gradients -- ``jax.grad`` through geopath vs ``torch.autograd`` on the same inputs.

Two objectives, both differentiated with respect to the *raw activations*:

1. ``distance``: ``gp.distance(AngularShape(alpha), x, y)`` for one pair ``x [n, p]``, ``y [n, q]``; gradient
   w.r.t. both.
2. ``path_length``: ``gp.path_length(space, [space.point(x_l) for x_l in xs])`` over ``L`` layers with a
   (scaled) CIFAR-ResNet width profile; gradient w.r.t. every layer's activations.

geopath: ``jax.jit(jax.grad(f))`` (first call = trace + compile + run; steady = median of later calls).
PyTorch: the same objective written with ``torch.linalg`` (feature route, nuclear norm of the
cross-covariance from ``svdvals``, keeping the ``min(n - 1, p, q)`` structurally non-zero singular values so
that the gradient does not pick arbitrary null-space directions) and ``loss.backward()``.
Reported: times, speed-up, the max abs / relative difference of the gradients, and the error of each
against a float64 reference (the torch objective on float64 copies of the inputs; independent of geopath).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _common as C
from benchmarks import baselines as B


def _torch_point(x, alpha):
    return B.t_point(x.reshape(x.shape[0], -1), alpha)


def _torch_distance(xt, yt, alpha, n):
    torch = B._torch()  # noqa: SLF001
    a, b = _torch_point(xt, alpha), _torch_point(yt, alpha)
    s = torch.linalg.svdvals(a.T @ b)
    r = min(n - 1, a.shape[1], b.shape[1])
    return torch.arccos(torch.clamp(s[:r].sum(), -1.0, 1.0))


def _torch_path_length(xts, alpha, n):
    torch = B._torch()  # noqa: SLF001
    pts = [_torch_point(x, alpha) for x in xts]
    total = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        s = torch.linalg.svdvals(a.T @ b)
        r = min(n - 1, a.shape[1], b.shape[1])
        total = total + torch.arccos(torch.clamp(s[:r].sum(), -1.0, 1.0))
    return total


def _rel(d, g):
    scale = max(float(np.max(np.abs(np.concatenate([np.ravel(x) for x in g])))), 1e-300)
    return d / scale


def main(argv=None) -> dict:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="inputs for the distance gradient")
    p.add_argument("--p", type=int, default=512)
    p.add_argument("--q", type=int, default=256)
    p.add_argument("--L", type=int, default=8, help="layers for the path-length gradient")
    p.add_argument("--path-n", type=int, default=500)
    p.add_argument("--width-scale", type=int, default=16, help="divides the ResNet widths for the path")
    p.add_argument("--alpha", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.p, args.q = min(args.n, 40), min(args.p, 12), min(args.q, 8)
        args.L, args.path_n, args.width_scale = (
            min(args.L, 4),
            min(args.path_n, 32),
            max(args.width_scale, 512),
        )
        args.repeats = min(args.repeats, 2)
        args.budget = min(args.budget, 10.0)
    info, run_mon, gp = C.begin_run(args)
    if gp is None:
        return {"machine": info, "results": []}
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    x, y = C.make_layers(args.n, [args.p, args.q], dtype=args.dtype, seed=args.seed)
    widths = C.resnet_widths(args.L, scale=args.width_scale)
    xs = C.make_layers(args.path_n, widths, dtype=args.dtype, seed=args.seed + 1)
    space = gp.AngularShape(alpha=args.alpha)
    results, rows = [], []
    with C.jax_precision(args.dtype):
        f_d = jax.jit(jax.value_and_grad(lambda x, y: gp.distance(space, x, y), argnums=(0, 1)))
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        t_gd, (vd, gd) = C.time_call(lambda: f_d(jx, jy), repeats=args.repeats, budget_s=args.budget)
        gd = [np.asarray(g) for g in gd]
        f_l = jax.jit(jax.value_and_grad(lambda xs: gp.path_length(space, [space.point(x) for x in xs])))
        jxs = [jnp.asarray(v) for v in xs]
        t_gl, (vl, gl) = C.time_call(lambda: f_l(jxs), repeats=args.repeats, budget_s=args.budget)
        gl = [np.asarray(g) for g in gl]
        vd, vl = float(vd), float(vl)

    tres = {}
    if not args.no_torch and C.torch_available():
        import torch  # noqa: PLC0415

        with C.torch_threads():

            def torch_d():
                xt = torch.from_numpy(x.copy()).requires_grad_(True)
                yt = torch.from_numpy(y.copy()).requires_grad_(True)
                val = _torch_distance(xt, yt, args.alpha, args.n)
                val.backward()
                return val.item(), [xt.grad.numpy(), yt.grad.numpy()]

            def torch_l():
                xts = [torch.from_numpy(v.copy()).requires_grad_(True) for v in xs]
                val = _torch_path_length(xts, args.alpha, args.path_n)
                val.backward()
                return val.item(), [t.grad.numpy() for t in xts]

            t_td, (tvd, tgd) = C.time_call(torch_d, repeats=args.repeats, budget_s=args.budget)
            t_tl, (tvl, tgl) = C.time_call(torch_l, repeats=args.repeats, budget_s=args.budget)
            tres = {"distance": (t_td, tvd, tgd), "path_length": (t_tl, tvl, tgl)}
            # Float64 reference (independent of geopath): the same torch objectives on float64 copies.
            xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
            yt = torch.from_numpy(y.astype(np.float64)).requires_grad_(True)
            v = _torch_distance(xt, yt, args.alpha, args.n)
            v.backward()
            ref = {"distance": (v.item(), [xt.grad.numpy(), yt.grad.numpy()])}
            xts = [torch.from_numpy(v_.astype(np.float64)).requires_grad_(True) for v_ in xs]
            v = _torch_path_length(xts, args.alpha, args.path_n)
            v.backward()
            ref["path_length"] = (v.item(), [t.grad.numpy() for t in xts])

    for name, tg, val, grads, desc in (
        ("distance", t_gd, vd, gd, f"n={args.n}, p={args.p}, q={args.q}"),
        ("path_length", t_gl, vl, gl, f"L={args.L}, n={args.path_n}, widths={widths}"),
    ):
        entry = {"objective": name, "shape": desc, "geopath": tg, "value": val}
        if name in tres:
            tt, tval, tgrads = tres[name]
            dg = max(C.max_abs_diff(a, b) for a, b in zip(grads, tgrads))
            entry.update(
                torch=tt,
                torch_value=tval,
                value_diff=abs(val - tval),
                grad_max_abs_diff=dg,
                grad_rel_diff=_rel(dg, grads),
            )
            rv, rg = ref[name]
            entry.update(
                gp_value_err=abs(val - rv),
                torch_value_err=abs(tval - rv),
                gp_grad_rel_err=_rel(max(C.max_abs_diff(a, b) for a, b in zip(grads, rg)), rg),
                torch_grad_rel_err=_rel(max(C.max_abs_diff(a, b) for a, b in zip(tgrads, rg)), rg),
            )
        results.append(entry)
        rows.append(
            [
                name,
                desc,
                C.fmt_s(tg.steady_s),
                C.fmt_s(tg.compile_s),
                C.fmt_s(entry["torch"].steady_s) if "torch" in entry else "-",
                C.fmt_x(entry["torch"].steady_s / tg.steady_s) if "torch" in entry else "-",
                C.fmt_e(entry.get("value_diff")),
                C.fmt_e(entry.get("grad_max_abs_diff")),
                C.fmt_e(entry.get("grad_rel_diff")),
                f"{C.fmt_e(entry.get('gp_value_err'))} / {C.fmt_e(entry.get('torch_value_err'))}",
                f"{C.fmt_e(entry.get('gp_grad_rel_err'))} / {C.fmt_e(entry.get('torch_grad_rel_err'))}",
            ]
        )
    C.print_table(
        f"value_and_grad w.r.t. raw activations, AngularShape(alpha={args.alpha}), {args.dtype}",
        [
            "objective",
            "sizes",
            "jax.grad steady",
            "jax compile",
            "torch autograd",
            "torch/gp",
            "value diff",
            "grad max abs diff",
            "grad diff / max abs grad",
            "value err vs f64 (gp / torch)",
            "grad rel err vs f64 (gp / torch)",
        ],
        rows,
    )
    return C.finish_run(args, info, run_mon, results=results)


if __name__ == "__main__":
    main()
