"""CIFAR-10 networks (Flax NNX), representation capture, training and checkpoints.

Quick reference::

    from flax import nnx
    import models

    model = models.create_model("resnet20", num_classes=10, rngs=nnx.Rngs(0))   # eval mode
    models.layer_names(model)        # ['input', 'stem', 'stage1.block0', ..., 'pool', 'logits']
    reps = models.capture(model, images_uint8, layers=["stage2.block0", "logits"], batch_size=500)

    summary = models.train_and_evaluate(models.TrainConfig(arch="resnet8", epochs=5), "runs/r8")
    steps = models.list_checkpoints("runs/r8")
    model, meta = models.load_checkpoint("runs/r8", steps[-1])    # or "last" / "best"

Architectures: ``resnet{6n+2}`` (resnet8, resnet20, resnet56, ...), ``vgg11/13/16/19``, and the
time-to-accuracy families ``airbench_vgg`` / ``airbench_resnet`` (:mod:`models.airbench`), each with an
optional width suffix ``_w{mult}`` (``resnet32_w2``, ``vgg16_w0.5``, ``airbench_resnet_w0.5``).
The training / checkpoint names are imported lazily (they pull in optax, orbax, tqdm).
"""

from __future__ import annotations

from typing import Any

from .airbench import AirbenchNet
from .capture import capture
from .nets import VGG
from .nets import VGG_CONFIGS
from .nets import BasicBlock
from .nets import ResNet
from .nets import available_architectures
from .nets import count_params
from .nets import create_model
from .nets import layer_names
from .nets import parse_arch
from .xla_cpu import use_cpu_training_flags

__all__ = [
    "create_model",
    "layer_names",
    "capture",
    "count_params",
    "available_architectures",
    "parse_arch",
    "use_cpu_training_flags",
    "ResNet",
    "VGG",
    "AirbenchNet",
    "BasicBlock",
    "VGG_CONFIGS",
    # lazy:
    "TrainConfig",
    "PRESETS",
    "train_and_evaluate",
    "load_checkpoint",
    "list_checkpoints",
]

_LAZY = {
    "TrainConfig": ("config", "TrainConfig"),
    "PRESETS": ("config", "PRESETS"),
    "train_and_evaluate": ("train", "train_and_evaluate"),
    "load_checkpoint": ("checkpoints", "load_checkpoint"),
    "list_checkpoints": ("checkpoints", "list_checkpoints"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
