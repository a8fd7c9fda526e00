"""``python -m experiments.paths.train_one WORKDIR CONFIG_JSON``: one network of the paths experiment, trained
in a process of its own.

The experiment starts this for every network it has to train (or resume), so that the training runs with
the CPU training flags of :mod:`models.xla_cpu` (they must be in ``XLA_FLAGS`` before JAX starts, and they
slow the geometry, which runs in the experiment's own process without them). ``CONFIG_JSON`` is a
:class:`models.config.TrainConfig` as JSON (its ``to_dict()``). The exit code is that of ``python -m models.train``
(:func:`models.cli.run_training`): 0 on success, 2 for a bad option or folder, 3 for a divergence, 4 for a run
folder held by another process (1, with a traceback, for any other error).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m experiments.paths.train_one WORKDIR CONFIG_JSON", file=sys.stderr)
        return 2
    from models.xla_cpu import use_cpu_training_flags

    use_cpu_training_flags(quiet=True)  # before JAX starts its CPU backend

    from models.cli import run_training
    from models.config import TrainConfig

    return run_training(TrainConfig.from_dict(json.loads(argv[1])), argv[0])


if __name__ == "__main__":
    sys.exit(main())
