"""Per-op profile of the convolutions of a CIFAR network: forward, input gradient, weight gradient.

Two questions, one script:

* ``--ops`` (default): for every distinct convolution of ``--arch`` (shapes taken from
  ``models.nets``), the median time of the forward convolution, the input gradient (dX) and the
  weight gradient (dW), for

  - ``xla``: what ``jax.grad`` of ``lax.conv_general_dilated`` compiles to (XLA's own dX / dW
    convolutions);
  - ``gemm``: dW as an explicit GEMM over gathered patches (``patches^T @ g``, one
    ``dot_general``) and, as candidates, dW as nine per-tap GEMMs (``gemm9``) and the forward as a
    GEMM over patches;
  - ``flip``: dX as a forward convolution of the flipped, in/out-transposed kernel over the
    (stride-dilated) output gradient;
  - PyTorch (``F.conv2d`` and ``aten.convolution_backward`` with one output mask at a time), in
    channels-last and NCHW memory formats.

  Every JAX candidate is checked against ``xla`` before it is timed. The totals weight each shape by
  how often it occurs in the network (milliseconds per training step spent in convolutions).
* ``--step``: the whole training step (forward, backward, SGD-momentum update) of ``--arch`` built
  with each ``conv_impl`` of ``models.nets.CONV_IMPLS``, timed side by side in one process
  (alternating rounds); wall and process CPU time per step.

Variants are alternated round by round and the median is reported, so that a change in machine load
hits all of them alike; the load average is printed before and after. On a shared machine compare
ratios, not absolute times.

Usage::

    python benchmarks/bench_conv.py --arch resnet20                # per-op table, JAX vs PyTorch
    python benchmarks/bench_conv.py --arch vgg11 --no-torch
    python benchmarks/bench_conv.py --arch resnet20 --step         # conv_impl options, whole step
    python benchmarks/bench_conv.py --smoke                        # tiny run (seconds)
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks._common import cpu_model  # noqa: E402
from benchmarks._common import usable_cores  # noqa: E402

_DIMS = ("NHWC", "HWIO", "NHWC")


# ------------------------------------------------------------------------------------------------
# The convolutions of a network: (H, C_in, C_out, kernel, stride, padding) -> count
# ------------------------------------------------------------------------------------------------


def conv_layers(arch: str, *, input_size: int = 32) -> Counter:
    """Distinct convolutions of ``arch`` (square ``H x H`` inputs) and how often each occurs."""
    from flax import nnx

    from models.nets import VGG_CONFIGS
    from models.nets import create_model
    from models.nets import parse_arch

    family, depth, _ = parse_arch(arch)
    model = nnx.eval_shape(lambda: create_model(arch))
    out: Counter = Counter()

    def add(conv, h):
        out[(h, conv.in_features, conv.out_features, conv.kernel_size, conv.stride, conv.padding)] += 1
        return (h + 2 * conv.padding - conv.kernel_size) // conv.stride + 1

    h = input_size
    if family == "resnet":
        h = add(model.stem_conv, h)
        for block in model.blocks:
            if block.proj_conv is not None:
                add(block.proj_conv, h)
            h = add(block.conv2, add(block.conv1, h))
    else:
        convs = iter(model.convs)
        for item in VGG_CONFIGS[depth]:
            h = h // 2 if item == "M" else add(next(convs), h)
    return out


# ------------------------------------------------------------------------------------------------
# JAX candidates: f(x, g, w) -> forward output, dX or dW
# ------------------------------------------------------------------------------------------------


def _conv(x, w, s, p):
    return lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=_DIMS)


def fwd_xla(x, g, w, s, p):
    return _conv(x, w, s, p)


def dx_xla(x, g, w, s, p):
    return jax.vjp(lambda x_: _conv(x_, w, s, p), x)[1](g)[0]


def dw_xla(x, g, w, s, p):
    return jax.vjp(lambda w_: _conv(x, w_, s, p), w)[1](g)[0]


def _taps(x, k, s, p, ho, wo):
    """The k*k strided views of the padded input, one per kernel tap, each ``[N, Ho, Wo, C]``."""
    n, _, _, c = x.shape
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return [
        lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c), (1, s, s, 1))
        for i in range(k)
        for j in range(k)
    ]


def fwd_gemm(x, g, w, s, p):
    k, _, cin, cout = w.shape
    n, ho, wo, _ = g.shape
    patches = jnp.concatenate(_taps(x, k, s, p, ho, wo), -1).reshape(-1, k * k * cin)
    return (patches @ w.reshape(k * k * cin, cout)).reshape(n, ho, wo, cout)


def dw_gemm(x, g, w, s, p):
    k, _, cin, cout = w.shape
    _, ho, wo, _ = g.shape
    patches = jnp.concatenate(_taps(x, k, s, p, ho, wo), -1).reshape(-1, k * k * cin)
    dw = lax.dot_general(patches, g.reshape(-1, cout), (((0,), (0,)), ((), ())))
    return dw.reshape(k, k, cin, cout)


def dw_gemm9(x, g, w, s, p):
    k, _, cin, cout = w.shape
    _, ho, wo, _ = g.shape
    g2 = g.reshape(-1, cout)
    dims = (((0,), (0,)), ((), ()))
    return jnp.stack(
        [lax.dot_general(t.reshape(-1, cin), g2, dims) for t in _taps(x, k, s, p, ho, wo)]
    ).reshape(k, k, cin, cout)


def dx_flip(x, g, w, s, p):
    k = w.shape[0]
    _, h, wd, _ = x.shape
    _, ho, wo, _ = g.shape
    w_flip = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    lo = k - 1 - p
    pads = ((lo, h - 1 - (ho - 1) * s + p), (lo, wd - 1 - (wo - 1) * s + p))
    return lax.conv_general_dilated(g, w_flip, (1, 1), pads, lhs_dilation=(s, s), dimension_numbers=_DIMS)


JAX_VARIANTS = {
    "fwd": {"xla": fwd_xla, "gemm": fwd_gemm},
    "dX": {"xla": dx_xla, "flip": dx_flip},
    "dW": {"xla": dw_xla, "gemm": dw_gemm, "gemm9": dw_gemm9},
}


def _torch_ops(torch, x_np, g_np, w_np, s, p, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    g = torch.from_numpy(g_np).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    w = torch.from_numpy(w_np).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
    back = torch.ops.aten.convolution_backward

    def bwd(mask):
        return lambda: back(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

    return {
        "fwd": lambda: torch.nn.functional.conv2d(x, w, None, s, p),
        "dX": bwd([True, False, False]),
        "dW": bwd([False, True, False]),
    }


def profile_ops(arch: str, batch: int, repeats: int, use_torch: bool) -> None:
    torch = None
    if use_torch:
        try:
            import torch

            torch.set_num_threads(usable_cores())
        except ImportError:
            print("PyTorch is not importable: JAX only.")
    rng = np.random.default_rng(0)
    layers = conv_layers(arch)
    cols = [(op, name) for op, vs in JAX_VARIANTS.items() for name in vs]
    tcols = [(op, fmt) for op in JAX_VARIANTS for fmt in ("torch_cl", "torch_nchw")] if torch else []
    totals: Counter = Counter()
    print(f"{arch}, batch {batch}: median ms per call over {repeats} alternated rounds")
    print("layer (H, Cin, Cout, k, s, p) x count | " + " ".join(f"{op}:{n}" for op, n in cols + tcols))
    for (h, cin, cout, k, s, p), count in layers.items():
        ho = (h + 2 * p - k) // s + 1
        x = rng.standard_normal((batch, h, h, cin), dtype=np.float32)
        w = rng.standard_normal((k, k, cin, cout), dtype=np.float32)
        g = rng.standard_normal((batch, ho, ho, cout), dtype=np.float32)
        xj, wj, gj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
        fns = {}
        for op, name in cols:
            f = jax.jit(functools.partial(JAX_VARIANTS[op][name], s=s, p=p))
            out = f(xj, gj, wj)
            ref = JAX_VARIANTS[op]["xla"](xj, gj, wj, s, p)
            scale = float(jnp.max(jnp.abs(ref)))
            err = float(jnp.max(jnp.abs(out - ref))) / scale
            if not err < 1e-5:
                raise AssertionError(
                    f"{op}:{name} differs from XLA's by {err:.2e} (relative) at {h, cin, cout}"
                )
            fns[(op, name)] = functools.partial(lambda f: f(xj, gj, wj).block_until_ready(), f)
        for op, fmt in tcols:
            fns[(op, fmt)] = _torch_ops(torch, x, g, w, s, p, fmt == "torch_cl")[op]
        for fn in fns.values():  # warm-up (JAX: compiled above; PyTorch: first-call set-up)
            fn()
        times = {key: [] for key in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        med = {key: statistics.median(v) for key, v in times.items()}
        for key, t in med.items():
            totals[key] += count * t
        label = f"({h}, {cin}, {cout}, {k}, {s}, {p}) x{count}"
        print(f"{label:<37} | " + " ".join(f"{1e3 * med[key]:.1f}" for key in cols + tcols), flush=True)
    print("total ms/step (count-weighted):")
    for op in JAX_VARIANTS:
        row = [f"{name} {1e3 * totals[(o, name)]:.0f}" for o, name in cols + tcols if o == op]
        print(f"  {op:<4} " + ", ".join(row))


# ------------------------------------------------------------------------------------------------
# Whole training step, one per conv_impl
# ------------------------------------------------------------------------------------------------


def _train_step_runner(arch: str, batch: int, conv_impl: str):
    import optax
    from flax import nnx

    from models.nets import create_model

    model = create_model(arch, rngs=nnx.Rngs(0), conv_impl=conv_impl)
    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = optax.sgd(0.05, momentum=0.9, nesterov=True)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x, y):
        params, stats, opt = state

        def loss_fn(params_and_stats):
            m = nnx.merge(graphdef, *params_and_stats)
            loss = optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)((params, stats))
        updates, opt = tx.update(grads[0], opt, params)
        return (optax.apply_updates(params, updates), new_stats, opt), loss

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 32, 32, 3), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    holder = {"state": (params, stats, tx.init(params))}

    def run(n):
        loss = None
        for _ in range(n):
            holder["state"], loss = step(holder["state"], x, y)
        return float(jax.block_until_ready(loss))

    return run


def profile_step(arch: str, batch: int, steps: int, repeats: int) -> None:
    from models.nets import CONV_IMPLS

    impls = [i for i in CONV_IMPLS if i != "auto"]
    runs = {impl: _train_step_runner(arch, batch, impl) for impl in impls}
    first = {impl: run(2) for impl, run in runs.items()}  # compile + one step; losses must agree
    print(f"{arch}, batch {batch}: loss after 2 steps " + ", ".join(f"{k} {v:.6f}" for k, v in first.items()))
    wall = {impl: [] for impl in impls}
    cpu = {impl: [] for impl in impls}
    for _ in range(repeats):
        for impl, run in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            run(steps)
            wall[impl].append((time.perf_counter() - w0) / steps)
            cpu[impl].append((time.process_time() - c0) / steps)
    for impl in impls:
        w, c = statistics.median(wall[impl]), statistics.median(cpu[impl])
        print(
            f"  conv_impl={impl:<8} wall {1e3 * w:8.1f} ms/step ({batch / w:6.0f} img/s)  cpu {1e3 * c:8.1f} ms/step"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="alternated timed rounds; the median is reported")
    p.add_argument("--steps", type=int, default=3, help="--step: training steps per timed round")
    p.add_argument("--step", action="store_true", help="time the whole training step per conv_impl")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns of the per-op table")
    p.add_argument("--smoke", action="store_true", help="tiny run: resnet8_w0.25, batch 8, 1 round")
    args = p.parse_args(argv)
    if args.smoke:
        args.arch, args.batch_size, args.repeats, args.steps = "resnet8_w0.25", 8, 1, 1
    print(
        f"machine : {cpu_model()}, {usable_cores()} usable cores; jax {jax.__version__} ({jax.default_backend()})"
    )
    print(f"load    : {os.getloadavg()}")
    if args.step:
        profile_step(args.arch, args.batch_size, args.steps, args.repeats)
    else:
        profile_ops(args.arch, args.batch_size, args.repeats, not args.no_torch)
    print(f"load    : {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
