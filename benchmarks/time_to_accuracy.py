"""Time to accuracy of the training presets: trains each preset over seeds and prints one table per network.

Every run is ``python -m models.train --preset P --seed S`` in a process of its own (so it starts with the
XLA:CPU training flags of ``models.xla_cpu``, as a user's run does), one after another, never two at once.
A run whose ``summary.json`` says it finished is reused, and an interrupted one is resumed (``--resume``),
so the script continues where it stopped. Per run the table gives:

* seed, epochs, wall time of the whole process (data loading, compilation, training, checkpoints and the
  final, test-time-augmented evaluation);
* FLOPs: XLA's count for the compiled training step (``cost_analysis()`` of ``models.train_state.train_step``
  lowered for the preset's network, batch and optimiser) times the number of steps;
* achieved GFLOP/s: that step count per image times the run's steady training throughput (compilation and
  evaluation excluded);
* plain and TTA test accuracy (the preset's ``tta`` level), and the 1-minute load average before and after
  the run.

The machine block (CPU, cores, versions, ``XLA_FLAGS`` of the runs) is printed first. Accuracy is on the
CIFAR-10 copy the runs load (``$GEOPATH_CIFAR10_DIR`` or ``../shared/data/cifar10-jpeg``: JPEG, quality 75,
4:2:0 chroma, about 3 points below the original data under the same recipe).

Usage::

    python benchmarks/time_to_accuracy.py --presets quick-vgg quick-resnet --seeds 0 1 2 --runs runs/tta
    python benchmarks/time_to_accuracy.py --presets fast-vgg --seeds 0 --runs runs/tta --json tta.json
    python benchmarks/time_to_accuracy.py --smoke      # tiny runs on 200 images (seconds; the test suite)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import CpuMonitor  # noqa: E402
from benchmarks._common import base_parser  # noqa: E402
from benchmarks._common import finish_run  # noqa: E402
from benchmarks._common import machine_info  # noqa: E402
from benchmarks._common import print_machine_info  # noqa: E402
from benchmarks._common import print_table  # noqa: E402

# The smoke run: each preset's recipe on a quarter-width network, 200 images, one epoch.
_SMOKE_FLAGS = ("--train-subset", "200", "--test-subset", "100", "--epochs", "1", "--batch-size", "50")


def step_flops(config: Any) -> float:
    """XLA's FLOP count of one compiled training step of ``config`` (a ``models.TrainConfig``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import models
    from models import train as T
    from models import train_state as TS

    model = models.create_model(config.arch, num_classes=config.num_classes, rngs=nnx.Rngs(0))
    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    steps_per_epoch = 50_000 // config.batch_size
    tx, _ = T._optimizer(config, steps_per_epoch)
    spec = TS.loss_spec(config, steps_per_epoch * config.epochs)
    state = TS.init_state(params, stats, tx, seed=0, lookahead=config.lookahead)
    b = config.batch_size
    images = jax.ShapeDtypeStruct((b, 32, 32, 3), jnp.uint8)
    labels = jax.ShapeDtypeStruct((b,), jnp.int32)
    flips = jax.ShapeDtypeStruct((b,), jnp.bool_) if config.flip == "alternating" else None
    lowered = TS.train_step.lower(
        state, TS.zero_metrics(spec), images, labels, flips, graphdef=graphdef, tx=tx, spec=spec
    )
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(np.asarray(cost["flops"]))


def _load1() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _finished(workdir: Path) -> dict[str, Any] | None:
    path = workdir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return None if summary.get("interrupted") else summary


def run_one(preset: str, seed: int, workdir: Path, extra: tuple[str, ...], log) -> dict[str, Any]:
    """Trains (or resumes, or reuses) one run; returns its summary plus the load before and after."""
    done = _finished(workdir)
    if done is not None:
        print(f"# {preset} seed {seed}: reusing the finished run in {workdir}", file=log, flush=True)
        return dict(done, reused=True, load_before=None, load_after=None)
    resume = (workdir / "checkpoints").is_dir()
    cmd = [sys.executable, "-m", "models.train", "--preset", preset, "--seed", str(seed)]
    cmd += ["--workdir", str(workdir), "--no-progress", "--resume" if resume else "--overwrite", *extra]
    print(f"# {preset} seed {seed}: {' '.join(cmd[1:])}", file=log, flush=True)
    load_before = _load1()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{preset} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((workdir / "summary.json").read_text())
    return dict(
        summary, reused=False, load_before=load_before, load_after=_load1(), process_s=time.time() - t0
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["quick-vgg", "quick-resnet"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--runs", default=str(ROOT / "runs" / "time_to_accuracy"), help="folder of the run folders"
    )
    args = p.parse_args(argv)

    from models.config import PRESETS
    from models.config import TrainConfig
    from models.xla_cpu import use_cpu_training_flags

    use_cpu_training_flags(quiet=True)  # the runs' flags; also those of the FLOP count's compilation
    extra: tuple[str, ...] = ()
    runs = Path(args.runs)
    if args.smoke:
        args.seeds = args.seeds[:1]
        extra = _SMOKE_FLAGS
        runs = runs / "smoke"
    info = machine_info() if args.quiet else print_machine_info()
    monitor = CpuMonitor().start()
    log = sys.stderr if args.quiet else sys.stdout
    tables: dict[str, Any] = {}
    for preset in args.presets:
        fields = dict(PRESETS[preset])
        arch = fields["arch"]
        if args.smoke:
            fields["arch"] = arch = arch.split("_w")[0] + "_w0.25"
            extra = (*_SMOKE_FLAGS, "--arch", arch)
            fields.update(epochs=1, batch_size=50)
        config = TrainConfig(**fields)
        flops = step_flops(config)
        rows, results = [], []
        for seed in args.seeds:
            r = run_one(preset, seed, runs / f"{preset}-s{seed}", extra, log)
            per_image = flops / config.batch_size
            steps = r["final_step"]
            gflops = per_image * r["train_images_per_s"] / 1e9 if r.get("train_images_per_s") else None
            r.update(step_flops=flops, train_flops=flops * steps, gflop_per_s=gflops)
            results.append(r)
            rows.append(
                [
                    seed,
                    r["epochs_completed"],
                    f"{r['wall_time_s'] / 60:.1f}",
                    f"{flops * steps:.2e}",
                    "-" if gflops is None else f"{gflops:.0f}",
                    f"{r['train_images_per_s']:.0f}" if r.get("train_images_per_s") else "-",
                    _pct(r["final_test_acc"]),
                    _pct(r.get("final_test_acc_tta")),
                    "reused" if r["reused"] else f"{r['load_before']} / {r['load_after']}",
                ]
            )
        accs = [100 * r["final_test_acc"] for r in results]
        ttas = [100 * r["final_test_acc_tta"] for r in results if r.get("final_test_acc_tta") is not None]
        walls = [r["wall_time_s"] / 60 for r in results]
        rows.append(["mean +- sd", "", _mean_sd(walls), "", "", "", _mean_sd(accs), _mean_sd(ttas), ""])
        print_table(
            f"{preset}: {arch}, batch {config.batch_size}, {config.epochs} epochs, "
            f"{flops / config.batch_size / 1e9:.3f} GFLOP per training image (XLA count)",
            [
                "seed",
                "epochs",
                "wall (min)",
                "train FLOPs",
                "GFLOP/s",
                "img/s",
                "test acc",
                "TTA acc",
                "load 1m",
            ],
            rows,
        )
        tables[preset] = results
    return finish_run(args, info, monitor, runs=tables)


if __name__ == "__main__":
    main()
