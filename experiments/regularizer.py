"""Small experiment: train a tiny ResNet with and without a path-length penalty (geopath.path_penalty).

The loss is ``cross_entropy + lam * path_penalty(space, layers_of(minibatch))``, where ``layers_of`` are the
train-mode activations of the minibatch at every named layer of the network (input ... logits). After
training, the path of a fixed probe set of test images (eval mode) is measured in the same space: its
length, the direct distance input -> logits, and the straightness ``direct / length``.

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
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import geopath as gp
import models
from models import data


def _spaces():
    return {"cka": gp.AngularCKA(), "shape": gp.AngularShape(alpha=1.0)}


def make_steps(graphdef_train, graphdef_eval, tx, space, lam: float, kind: str):
    """Jitted ``train_step(params, stats, opt, x, y)`` and ``eval_forward(params, stats, x)``."""

    def loss_fn(params_and_stats, x, y):
        # Differentiating w.r.t. the BatchNorm statistics too keeps NNX's Variables on one trace level.
        model = nnx.merge(graphdef_train, *params_and_stats)
        out = model.forward(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean()
        pen = gp.path_penalty(space, list(out.values()), kind=kind) if lam > 0 else jnp.zeros(())
        return ce + lam * pen, (ce, pen, out["logits"], nnx.state(model, nnx.BatchStat))

    @jax.jit
    def train_step(params, stats, opt, x, y):
        (_, (ce, pen, logits, stats)), g = jax.value_and_grad(loss_fn, has_aux=True)((params, stats), x, y)
        updates, opt = tx.update(g[0], opt, params)
        params = optax.apply_updates(params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return params, stats, opt, ce, pen, acc

    @jax.jit
    def eval_forward(params, stats, x):
        return nnx.merge(graphdef_eval, params, stats).forward(x)

    return train_step, eval_forward


def run(lam: float, args, train, test) -> dict:
    space = _spaces()[args.space]
    model = models.create_model(args.arch, rngs=nnx.Rngs(args.seed))
    model.train()
    graphdef_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    graphdef_eval = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    steps_per_epoch = len(train.labels) // args.batch
    sched = optax.cosine_decay_schedule(args.lr, steps_per_epoch * args.epochs)
    tx = optax.sgd(sched, momentum=0.9)
    opt = tx.init(params)
    train_step, eval_forward = make_steps(graphdef_train, graphdef_eval, tx, space, lam, args.kind)
    rng = np.random.default_rng(args.seed)
    xtr = np.asarray(data.normalize(train.images))
    ytr = train.labels
    step_times, ce_hist, pen_hist = [], [], []
    for _ in range(args.epochs):
        order = rng.permutation(len(ytr))
        for i in range(steps_per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            t0 = time.perf_counter()
            params, stats, opt, ce, pen, acc = train_step(params, stats, opt, xtr[idx], ytr[idx])
            jax.block_until_ready(params)
            step_times.append(time.perf_counter() - t0)
            ce_hist.append(float(ce))
            pen_hist.append(float(pen))
    # evaluation: accuracy on the test subset, path geometry of a probe of test images
    xte = np.asarray(data.normalize(test.images))
    correct = 0
    for i in range(0, len(xte), 500):
        out = eval_forward(params, stats, xte[i : i + 500])
        correct += int(np.sum(np.argmax(np.asarray(out["logits"]), -1) == test.labels[i : i + 500]))
    probe = eval_forward(params, stats, xte[: args.probe])
    layers = list(probe.values())
    geo = {}
    for name, sp in _spaces().items():
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
    ap.add_argument("--space", choices=sorted(_spaces()), default="cka", help="space of the training penalty")
    ap.add_argument("--kind", choices=("length", "excess", "turning"), default="length")
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
        c, s = r["geometry"]["cka"], r["geometry"]["shape"]
        print(
            f"| {r['lam']:g} | {r['test_acc']:.3f} | {r['final_train_ce']:.3f} | {r['final_train_penalty']:.3f} "
            f"| {c['length']:.3f} | {c['straightness']:.3f} | {s['length']:.3f} | {s['straightness']:.3f} "
            f"| {r['step_s_median']:.3f} |"
        )


if __name__ == "__main__":
    main()
