"""Command line of the training loop: ``python -m models.train`` (or ``python -m models.cli``).

Every :class:`~models.config.TrainConfig` field is a flag, generated from the dataclass: the name
(``lr_decay`` -> ``--lr-decay``), the type (int, float, str, ``X | None``, tuples, bools), the help and
the choices come from the field and its metadata. Booleans take ``--name``, ``--name true|false`` and
``--no-name``; ``X | None`` fields take ``none``; ``model_kwargs`` takes ``KEY=VALUE`` pairs.
Precedence: TrainConfig defaults < ``--preset`` (or the saved run with ``--resume``) < explicit flags.
:func:`add_config_flags` and :func:`config_overrides` are reused by other command lines (the paths
experiment) so that no training option is declared twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import PRESETS
from .config import TrainConfig

__all__ = ["add_config_flags", "config_overrides", "build_parser", "config_from_args", "main"]


def parse_bool(v: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` -> bool."""
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def _optional(kind: type):
    def parse(v: str):
        return None if v.lower() == "none" else kind(v)

    parse.__name__ = kind.__name__
    return parse


def _key_values(v: str) -> tuple[str, Any]:
    key, sep, value = v.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {v!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_config_flags(
    parser: argparse.ArgumentParser, *, exclude: Iterable[str] = (), title: str = "training (TrainConfig)"
) -> None:
    """Adds one flag per :class:`TrainConfig` field (except ``exclude``) to ``parser``.

    Every flag defaults to ``argparse.SUPPRESS``: only flags given on the command line appear in the
    parsed namespace (read them with :func:`config_overrides`).
    """
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group(title)
    skip = set(exclude)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), kind) if optional else kind
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        helptext = f"{f.metadata.get('help', '')} (default: {default})"
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=helptext)
        if base is bool:
            group.add_argument(flag, nargs="?", const=True, type=parse_bool, metavar="BOOL", **common)
            off = f.metadata.get("flags", ()) or ("--no-" + f.name.replace("_", "-"),)
            for name in off:
                group.add_argument(
                    name,
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=f"same as {flag} false",
                )
        elif typing.get_origin(base) is tuple:
            (item, *_) = typing.get_args(base)
            group.add_argument(flag, nargs="+", type=item, **common)
        elif typing.get_origin(base) is dict:
            group.add_argument(flag, nargs="+", type=_key_values, metavar="KEY=VALUE", **common)
        else:
            choices = f.metadata.get("choices")
            group.add_argument(flag, type=_optional(base) if optional else base, choices=choices, **common)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields given explicitly on the command line, as a dict."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {k: v for k, v in vars(args).items() if k in names}
    if "milestones" in out:
        out["milestones"] = tuple(out["milestones"])
    if "model_kwargs" in out:
        out["model_kwargs"] = dict(out["model_kwargs"])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description="Train a CIFAR-10 ResNet/VGG (Flax NNX + optax) with orbax checkpoints over training.",
    )
    p.add_argument("--workdir", required=True, help="run directory (config, metrics.jsonl, checkpoints/)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="starting configuration (models/config.py); explicit flags override it. quick-vgg, "
        "quick-resnet: airbench-style half-width nets, Muon, 5 epochs (about 12 min on 2 CPU cores); "
        "fast-vgg, fast-resnet: full width, 8 epochs; airbench94: its SGD + Lookahead recipe; cpu: resnet20 "
        "on all 50k images, 30 epochs; cpu-small: resnet8 on 10k images, minutes on 2 CPU cores; "
        "paper: ResNet-20 recipe of He et al. (GPU scale); tiny: seconds",
    )
    add_config_flags(p)
    g = p.add_argument_group("model shorthands")
    g.add_argument("--shortcut", choices=("A", "B"), default=None, help="model_kwargs shortcut=A|B (ResNets)")
    g.add_argument(
        "--vgg-head", choices=("avg", "flatten"), default=None, help="model_kwargs head=... (VGGs)"
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed flags: defaults < preset (or the saved run with --resume) < explicit flags.

    The run-control fields (``max_steps``, ``resume``, ``overwrite``, ``progress``) are never taken
    from a saved run.
    """
    fields: dict[str, Any] = {}
    saved_path = Path(args.workdir) / "config.json"
    explicit = config_overrides(args)
    if explicit.get("resume") and saved_path.exists():
        with open(saved_path) as f:
            fields.update(json.load(f))
        for name in ("max_steps", "resume", "overwrite", "progress"):
            fields.pop(name, None)
    elif args.preset:
        fields.update(PRESETS[args.preset])
    fields.update(explicit)
    model_kwargs = dict(fields.get("model_kwargs", {}))
    if args.shortcut:
        model_kwargs["shortcut"] = args.shortcut
    if args.vgg_head:
        model_kwargs["head"] = args.vgg_head
    fields["model_kwargs"] = model_kwargs
    return TrainConfig.from_dict(fields)


def run_training(cfg: TrainConfig, workdir: str) -> int:
    """Trains ``cfg`` in ``workdir`` and prints the "done" line; returns the exit code of ``python -m
    models.train``: 0, 2 for a bad option or folder, 3 for a divergence, 4 for a run folder held by another
    process. The CPU training flags must already be in ``XLA_FLAGS`` (:func:`main` sets them)."""
    from .train import RunLockedError
    from .train import TrainingDiverged
    from .train import train_and_evaluate

    try:
        summary = train_and_evaluate(cfg, workdir)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except RunLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    acc, tta = summary["final_test_acc"], summary.get("final_test_acc_tta")
    print(
        f"done: {summary['arch']} step {summary['final_step']}/{summary['total_steps']} "
        f"({summary['epochs_completed']} epochs) test acc "
        f"{'n/a' if acc is None else f'{acc:.4f}'}"
        f"{'' if tta is None else f' (TTA {tta:.4f})'} best {summary['best_test_acc']} "
        f"| {summary['train_images_per_s'] or float('nan'):.0f} img/s | {summary['wall_time_s']:.0f} s "
        f"| checkpoints: {len(summary['checkpoints'])} in {summary['workdir']}/checkpoints"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .xla_cpu import use_cpu_training_flags

    use_cpu_training_flags(quiet=True)  # before JAX's backend starts (models/xla_cpu.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return run_training(cfg, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
