"""Small experiment: train a tiny ResNet with and without a path-length penalty (geopath.path_penalty).

The loss is ``cross_entropy + lam * path_penalty(space, layers_of(minibatch))``, where ``layers_of`` are the
train-mode activations of the minibatch at every named layer of the network (input ... logits): the
training option ``TrainConfig.path_penalty`` (``python -m models.train --path-penalty LAM``), whose step
(:func:`models.train_state.train_step`) this script runs with its own data order. After training, the path
of a fixed probe set of test images (eval mode) is measured in angular CKA and in the angular shape metric:
its length, the direct distance input -> logits, and the straightness ``direct / length``.

Kept small on purpose (a shared CPU): ResNet-8, a few thousand CIFAR-10 images, a few epochs. Run as a
script from the repository root::

    python experiments/regularizer.py --lams 0 0.1 0.3 --epochs 4 --per-class 200

It prints one JSON line per run and a markdown table (the numbers of ``docs/regularizer.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import this checkout's geopath and models
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from flax import nnx

import geopath as gp
import models
from models import data
from models import train_state
from models.config import PATH_PENALTY_KINDS
from models.config import PATH_PENALTY_SPACES


def train_config(lam: float, args) -> models.TrainConfig:
    """The training options of one run: SGD (momentum 0.9, no Nesterov, no weight decay), cosine decay
    without warmup, no augmentation, no label smoothing, and the path penalty ``lam``."""
    return models.TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.0,
        augment=False,
        label_smoothing=0.0,
        seed=args.seed,
        path_penalty=lam,
        path_penalty_kind=args.kind,
        path_penalty_space=args.space,
    )


def run(lam: float, args, train, test) -> dict:
    cfg = train_config(lam, args)
    model = models.create_model(cfg.arch, rngs=nnx.Rngs(cfg.seed))
    model.train()
    graphdef_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    graphdef_eval = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    steps_per_epoch = len(train.labels) // cfg.batch_size
    tx, _ = train_state.make_optimizer(cfg, steps_per_epoch)
    spec = train_state.loss_spec(cfg)
    state = train_state.init_state(params, stats, tx, seed=cfg.seed)
    eval_forward = jax.jit(lambda params, stats, x: nnx.merge(graphdef_eval, params, stats).forward(x))
    # This script's own data order (kept so that docs/regularizer.md's numbers reproduce); the step is
    # the training loop's (models.train_state.train_step, the path penalty as a TrainConfig option).
    rng = np.random.default_rng(cfg.seed)
    ytr = train.labels
    step_times, ce_hist, pen_hist = [], [], []
    for _ in range(cfg.epochs):
        order = rng.permutation(len(ytr))
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            t0 = time.perf_counter()
            state, sums = train_state.train_step(
                state,
                train_state.zero_metrics(spec),
                train.images[idx],
                ytr[idx],
                graphdef=graphdef_train,
                tx=tx,
                spec=spec,
            )
            sums = np.asarray(sums)  # (ce * n, correct, n[, penalty * n])
            step_times.append(time.perf_counter() - t0)
            ce_hist.append(float(sums[0] / sums[2]))
            pen_hist.append(float(sums[3] / sums[2]) if lam > 0 else 0.0)
    params, stats = state.params, state.batch_stats
    # evaluation: accuracy on the test subset, path geometry of a probe of test images
    xte = np.asarray(data.normalize(test.images))
    correct = 0
    for i in range(0, len(xte), 500):
        out = eval_forward(params, stats, xte[i : i + 500])
        correct += int(np.sum(np.argmax(np.asarray(out["logits"]), -1) == test.labels[i : i + 500]))
    probe = eval_forward(params, stats, xte[: args.probe])
    layers = list(probe.values())
    geo = {}
    for name in PATH_PENALTY_SPACES:
        sp = train_state.penalty_space(name)
        pts = [sp.point(v) for v in layers]
        length = float(gp.path_length(sp, pts))
        direct = float(sp.distance(*sp.common(pts[0], pts[-1])))
        geo[name] = {"length": length, "direct": direct, "straightness": direct / length}
    return {
        "lam": lam,
        "space": args.space,
        "kind": args.kind,
        "test_acc": correct / len(xte),
        "final_train_ce": float(np.mean(ce_hist[-steps_per_epoch:])),
        "final_train_penalty": float(np.mean(pen_hist[-steps_per_epoch:])),
        "step_s_median": float(np.median(step_times[1:])),
        "first_step_s": float(step_times[0]),
        "geometry": geo,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet8")
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument(
        "--space", choices=PATH_PENALTY_SPACES, default="angular_cka", help="space of the training penalty"
    )
    ap.add_argument("--kind", choices=PATH_PENALTY_KINDS, default="length")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=200, help="training images per class")
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--probe", type=int, default=500, help="test images whose path is measured")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train = data.load_cifar10("train", limit_per_class=args.per_class, cache_dir=False)
    test = data.load_cifar10("test", limit_per_class=args.test_per_class, cache_dir=False)
    results = []
    for lam in args.lams:
        r = run(lam, args, train, test)
        print(json.dumps(r), flush=True)
        results.append(r)
    print()
    print(
        "| lam | test acc | train CE | train penalty | CKA length | CKA straightness | shape length | shape straightness | s/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c, s = r["geometry"]["angular_cka"], r["geometry"]["angular_shape"]
        print(
            f"| {r['lam']:g} | {r['test_acc']:.3f} | {r['final_train_ce']:.3f} | {r['final_train_penalty']:.3f} "
            f"| {c['length']:.3f} | {c['straightness']:.3f} | {s['length']:.3f} | {s['straightness']:.3f} "
            f"| {r['step_s_median']:.3f} |"
        )


if __name__ == "__main__":
    main()
