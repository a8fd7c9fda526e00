"""Train-step and inference throughput of the JAX models vs. equivalent PyTorch models on CPU.

For each architecture (default: resnet20 and vgg11) this measures, at one batch size:

* JAX train step: the exact jitted step of ``models.train`` (uint8 batch in; random
  crop + flip + normalisation on device; forward, backward, SGD-Nesterov update with
  weight decay; buffers donated);
* JAX forward: eval-mode logits of a normalised uint8 batch (jitted);
* PyTorch train step / forward of the same architecture (same layers, widths,
  shortcuts, BatchNorm, same augmentation and optimiser), in both NCHW and
  channels-last memory formats; the faster format is used for the ratio.

Each number is the median over ``--repeats`` timed rounds of ``--steps`` steps,
after ``--warmup`` untimed steps (which include JAX compilation). CPU time of the
process is reported next to wall time: on a shared machine the ratio of CPU time
to wall time shows whether other processes were competing for the cores.

Usage::

    flock /tmp/geopath-cpu.lock python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --smoke        # tiny CI run (seconds)
    python benchmarks/train_throughput.py --xla-flags="--xla_cpu_use_onednn=true"
    python benchmarks/train_throughput.py --conv-impl barrier xla   # one JAX row per conv_impl
    python benchmarks/train_throughput.py --no-training-flags --no-torch   # JAX without models.xla_cpu's flags
    python benchmarks/train_throughput.py --devices 8 --no-torch     # data-parallel JAX step on 8 devices
    python benchmarks/train_throughput.py --devices 8 --no-torch \
        --xla-flags=--xla_force_host_platform_device_count=8         # ... on 8 forced CPU devices (overhead)

With ``--devices D`` the JAX rows run the step data-parallel exactly as ``models.train`` does with
``devices=D`` (batch split over the first D devices, state replicated; each host batch is placed on the
devices inside the timed loop, as in training). Forced CPU devices share the same cores: that measures the
overhead of partitioning, not a speed-up.

PyTorch is optional: without it the JAX numbers are printed and the comparison is
skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_model  # noqa: E402
from benchmarks._common import usable_cores  # noqa: E402


def _time_rounds(run_round, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds per round."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        run_round()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


# ------------------------------------------------------------------------------------------------
# JAX
# ------------------------------------------------------------------------------------------------


def bench_jax(
    arch: str,
    batch_size: int,
    steps: int,
    warmup: int,
    repeats: int,
    conv_impl: str = "auto",
    devices: int | None = None,
) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from models.capture import eval_view
    from models.config import TrainConfig
    from models.data import normalize
    from models.nets import count_params
    from models.nets import create_model
    from models.train import data_parallel
    from models.train_state import init_state
    from models.train_state import loss_spec
    from models.train_state import make_optimizer
    from models.train_state import train_step as jitted_train_step

    if arch.startswith("airbench"):  # the time-to-accuracy recipe's step (groups, Lookahead, flips)
        from models.config import PRESETS

        fields = dict(PRESETS["fast-vgg"], arch=arch, batch_size=batch_size, epochs=1, devices=devices)
        cfg = TrainConfig(**fields, progress=False)
    else:
        cfg = TrainConfig(arch=arch, batch_size=batch_size, epochs=1, progress=False, devices=devices)
    dp = data_parallel(cfg.devices)  # None on one device

    def place(tree, sharding):  # host arrays stay on the host on one device, as in models.train
        return tree if dp is None else jax.device_put(tree, sharding)

    model = create_model(arch, rngs=nnx.Rngs(0), conv_impl=conv_impl)
    graphdef_eval, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    graphdef_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    groups = arch.startswith("airbench")
    tx, _ = make_optimizer(cfg, steps_per_epoch=100, groups=groups)
    state = place(init_state(params, stats, tx, seed=0, lookahead=cfg.lookahead), dp and dp.replicated)
    spec = loss_spec(cfg, total_steps=100)
    flips = np.arange(batch_size) % 2 == 0 if cfg.flip == "alternating" else None

    def train_step(st, m, x, y):
        x, y, f = place((x, y, flips), dp and dp.batch)
        return jitted_train_step(st, m, x, y, f, graphdef=graphdef_train, tx=tx, spec=spec)

    rng = np.random.default_rng(0)
    nb = 4  # a few distinct host batches, as in training
    xs = [rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8) for _ in range(nb)]
    ys = [rng.integers(0, 10, (batch_size,), dtype=np.int32) for _ in range(nb)]
    metrics = place(jnp.zeros(3, jnp.float32), dp and dp.replicated)
    holder = {"state": state, "metrics": metrics}

    def train_round(n):
        st, m = holder["state"], holder["metrics"]
        for i in range(n):
            st, m = train_step(st, m, xs[i % nb], ys[i % nb])
        jax.block_until_ready(m)
        holder["state"], holder["metrics"] = st, m

    t0 = time.perf_counter()
    train_round(1)
    compile_s = time.perf_counter() - t0
    train_round(max(warmup - 1, 0))
    wall, cpu = _time_rounds(lambda: train_round(steps), repeats)
    train_ips = batch_size * steps / wall

    # (the training state above was donated; use a fresh model for inference)
    gd, st_eval = nnx.split(eval_view(create_model(arch, rngs=nnx.Rngs(0), conv_impl=conv_impl)))
    st_eval = place(st_eval, dp and dp.replicated)

    @jax.jit
    def forward(state, x):
        return nnx.merge(gd, state)(normalize(x))

    def fwd_round(n):
        out = None
        for i in range(n):
            out = forward(st_eval, place(xs[i % nb], dp and dp.batch))
        jax.block_until_ready(out)

    fwd_round(max(warmup, 1))
    fwall, fcpu = _time_rounds(lambda: fwd_round(steps), repeats)
    return dict(
        params=count_params(model),
        train_ips=train_ips,
        train_cpu_per_wall=cpu / wall,
        forward_ips=batch_size * steps / fwall,
        forward_cpu_per_wall=fcpu / fwall,
        compile_s=compile_s,
    )


# ------------------------------------------------------------------------------------------------
# PyTorch (same architectures)
# ------------------------------------------------------------------------------------------------


def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from models.nets import VGG_CONFIGS
    from models.nets import parse_arch

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            s = x
            if self.stride != 1 or self.extra:  # option A: subsample + zero-pad channels
                s = x[:, :, :: self.stride, :: self.stride]
                lo = self.extra // 2
                s = F.pad(s, (0, 0, 0, 0, lo, self.extra - lo))
            return F.relu(y + s)

    class ResNet(nn.Module):
        def __init__(self, depth, width=1.0, num_classes=10):
            super().__init__()
            n = (depth - 2) // 6
            widths = [max(1, round(16 * 2**s * width)) for s in range(3)]
            self.conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(widths[0])
            blocks, cin = [], widths[0]
            for s, w in enumerate(widths):
                for b in range(n):
                    blocks.append(Block(cin, w, 2 if s > 0 and b == 0 else 1))
                    cin = w
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = F.relu(self.bn(self.conv(x)))
            return self.fc(self.blocks(x).mean((2, 3)))

    class VGG(nn.Module):
        def __init__(self, depth, width=1.0, num_classes=10):
            super().__init__()
            layers, cin = [], 3
            for item in VGG_CONFIGS[depth]:
                if item == "M":
                    layers.append(nn.MaxPool2d(2))
                else:
                    c = max(1, round(item * width))
                    layers += [
                        nn.Conv2d(cin, c, 3, 1, 1, bias=False),
                        nn.BatchNorm2d(c),
                        nn.ReLU(inplace=True),
                    ]
                    cin = c
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    class Group(nn.Module):  # models.airbench.ConvGroup
        def __init__(self, cin, cout, residual):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
            self.norm1 = nn.BatchNorm2d(cout, eps=1e-12, momentum=0.4)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(cout, eps=1e-12, momentum=0.4)
            for bn in (self.norm1, self.norm2):
                bn.weight.requires_grad = False
            self.residual = residual

        def forward(self, x):
            y = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
            z = F.gelu(self.norm2(self.conv2(y)))
            return y + z if self.residual else z

    class Airbench(nn.Module):  # models.airbench.AirbenchNet
        def __init__(self, family, width=1.0, num_classes=10):
            super().__init__()
            widths = [max(1, round(w * width)) for w in (64, 256, 256)]
            self.whiten = nn.Conv2d(3, 24, 2, 1, 0, bias=True)
            self.whiten.weight.requires_grad = False
            groups, cin = [], 24
            for w in widths:
                groups.append(Group(cin, w, family == "airbench_resnet"))
                cin = w
            self.groups = nn.Sequential(*groups)
            self.head = nn.Linear(cin, num_classes, bias=False)

        def forward(self, x):
            x = self.groups(F.gelu(self.whiten(x)))
            return self.head(F.max_pool2d(x, 3).flatten(1)) / 9.0

    def build(arch):
        family, depth, width = parse_arch(arch)
        width = 1.0 if width is None else width
        if family.startswith("airbench"):
            return Airbench(family, width)
        return ResNet(depth, width) if family == "resnet" else VGG(depth, width)

    return torch, F, build


def bench_torch(
    arch: str,
    batch_size: int,
    steps: int,
    warmup: int,
    repeats: int,
    channels_last: bool,
    bf16: bool = False,
) -> dict:
    """PyTorch train / forward throughput; ``bf16``: under ``torch.autocast("cpu", torch.bfloat16)``."""
    import numpy as np

    torch, F, build = _torch_models()
    from models.data import CIFAR10_MEAN
    from models.data import CIFAR10_STD

    torch.manual_seed(0)
    model = build(arch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    smoothing = 0.2 if arch.startswith("airbench") else 0.0
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    nb = 4
    xs = [torch.from_numpy(rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)) for _ in range(nb)]
    ys = [torch.from_numpy(rng.integers(0, 10, (batch_size,), dtype=np.int64)) for _ in range(nb)]
    ar = torch.arange(32)
    bidx = torch.arange(batch_size)[:, None, None]

    def to_input(x_u8):  # NHWC uint8 -> normalised NCHW float in the chosen memory format
        x = x_u8.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - mean) / std
        return x.contiguous(memory_format=fmt)

    def augment(x_u8):  # per-image random crop of the 4-padded image + random horizontal flip
        xp = F.pad(x_u8.permute(0, 3, 1, 2), (4, 4, 4, 4)).permute(0, 2, 3, 1)
        off = torch.randint(0, 9, (batch_size, 2))
        flip = torch.rand(batch_size) < 0.5
        cols = off[:, 1, None] + ar[None, :]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        rows = off[:, 0, None] + ar[None, :]
        return xp[bidx, rows[:, :, None], cols[:, None, :]]

    def train_round(n):
        model.train()
        for i in range(n):
            x = to_input(augment(xs[i % nb]))
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(x), ys[i % nb], label_smoothing=smoothing)
            loss.backward()
            opt.step()
        loss.item()

    train_round(warmup)
    wall, cpu = _time_rounds(lambda: train_round(steps), repeats)

    def fwd_round(n):
        model.eval()
        with torch.inference_mode(), autocast():
            for i in range(n):
                out = model(to_input(xs[i % nb]))
            out.sum().item()

    fwd_round(warmup)
    fwall, fcpu = _time_rounds(lambda: fwd_round(steps), repeats)
    return dict(
        params=sum(p.numel() for p in model.parameters()),
        train_ips=batch_size * steps / wall,
        train_cpu_per_wall=cpu / wall,
        forward_ips=batch_size * steps / fwall,
        forward_cpu_per_wall=fcpu / fwall,
    )


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--archs", nargs="+", default=["resnet20", "vgg11"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (JAX: includes compilation)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported")
    p.add_argument(
        "--threads", type=int, default=None, help="PyTorch intra-op threads (default: usable cores)"
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--xla-flags", default=None, help="extra XLA_FLAGS for this run (set before JAX starts)")
    p.add_argument(
        "--no-training-flags",
        action="store_true",
        help="leave out models.xla_cpu.CPU_TRAINING_FLAGS, which the training command lines add by default "
        "(the speed of a Python-API user who sets no XLA_FLAGS)",
    )
    p.add_argument(
        "--conv-impl",
        nargs="+",
        default=["auto"],
        help="models.nets conv_impl option(s) for the JAX rows, e.g. 'barrier xla' (one row each)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="JAX rows data-parallel over this many devices (TrainConfig.devices; CPU: add "
        "--xla-flags=--xla_force_host_platform_device_count=N)",
    )
    p.add_argument(
        "--torch-bf16",
        action="store_true",
        help="also a PyTorch channels_last row under bfloat16 autocast (not part of the float32 ratio)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny CI run: resnet8_w0.25, vgg11_w0.125 and airbench_vgg_w0.125, batch 16, 1 round",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.archs = ["resnet8_w0.25", "vgg11_w0.125", "airbench_vgg_w0.125"]
        args.batch_size, args.steps, args.warmup, args.repeats = 16, 2, 1, 1
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    if not args.no_training_flags:
        from models.xla_cpu import use_cpu_training_flags

        use_cpu_training_flags(quiet=True)  # as python -m models.train does; flags given above win

    import flax
    import jax

    from models.nets import check_conv_impl

    for impl in args.conv_impl:
        check_conv_impl(impl)
    cores = usable_cores()
    try:
        import torch

        torch.set_num_threads(args.threads or cores)
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = None
    if args.no_torch:
        torch = None

    print(f"load    : {os.getloadavg()} (1, 5, 15 min) at start")
    print(f"machine : {cpu_model()}, {cores} usable cores ({platform.machine()}, {platform.system()})")
    print(
        f"versions: python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"flax {flax.__version__}, torch {torch_version or 'not installed'}"
    )
    print(
        f"settings: batch {args.batch_size}, {args.steps} steps x {args.repeats} rounds (median), "
        f"{args.warmup} warm-up steps; XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}; "
        f"conv_impl {' '.join(args.conv_impl)}; JAX devices {args.devices or 1} of {jax.device_count()}; "
        f"torch threads {torch.get_num_threads() if torch else '-'}"
    )
    if torch is None and not args.no_torch:
        print("PyTorch is not importable: skipping the PyTorch comparison.")
    if os.getloadavg()[0] > cores + 0.5:
        print(
            f"warning: load average {os.getloadavg()[0]:.1f} on {cores} cores; other processes may skew timings"
        )

    results = {}
    for arch in args.archs:
        r = {
            f"jax:{impl}": bench_jax(
                arch, args.batch_size, args.steps, args.warmup, args.repeats, impl, args.devices
            )
            for impl in args.conv_impl
        }
        r["jax"] = max((r[f"jax:{impl}"] for impl in args.conv_impl), key=lambda v: v["train_ips"])
        if torch is not None:
            r["torch_nchw"] = bench_torch(arch, args.batch_size, args.steps, args.warmup, args.repeats, False)
            r["torch_cl"] = bench_torch(arch, args.batch_size, args.steps, args.warmup, args.repeats, True)
            if args.torch_bf16:
                r["torch_cl_bf16"] = bench_torch(
                    arch, args.batch_size, args.steps, args.warmup, args.repeats, True, bf16=True
                )
        results[arch] = r

    head = (
        f"{'arch':<14}{'params':>10}  {'framework':<22}{'train img/s':>12}{'fwd img/s':>11}{'cpu/wall':>10}"
    )
    print()
    print(head)
    print("-" * len(head))
    for arch, r in results.items():
        for name, label in (
            *((f"jax:{impl}", f"JAX/Flax NNX {impl}") for impl in args.conv_impl),
            ("torch_nchw", "PyTorch NCHW"),
            ("torch_cl", "PyTorch channels_last"),
            ("torch_cl_bf16", "PyTorch cl bf16 autocast"),
        ):
            if name not in r:
                continue
            v = r[name]
            print(
                f"{arch:<14}{v['params']:>10,}  {label:<22}{v['train_ips']:>12.0f}{v['forward_ips']:>11.0f}"
                f"{v['train_cpu_per_wall']:>10.2f}"
            )
        if "torch_cl" in r:
            best_train = max(r["torch_nchw"]["train_ips"], r["torch_cl"]["train_ips"])
            best_fwd = max(r["torch_nchw"]["forward_ips"], r["torch_cl"]["forward_ips"])
            r["ratio_train"] = r["jax"]["train_ips"] / best_train
            r["ratio_forward"] = r["jax"]["forward_ips"] / best_fwd
            print(
                f"{arch:<14}{'':>10}  {'JAX / best PyTorch':<22}{r['ratio_train']:>12.2f}{r['ratio_forward']:>11.2f}"
            )
    print(f"load    : {os.getloadavg()} (1, 5, 15 min) at end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    cpu=cpu_model(),
                    cores=cores,
                    batch_size=args.batch_size,
                    xla_flags=os.environ.get("XLA_FLAGS", ""),
                    devices=args.devices or 1,
                    results=results,
                ),
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
