"""``python -m experiments.paths.train_one WORKDIR CONFIG_JSON``: one network of the paths experiment, trained
in a process of its own.

The experiment starts this for every network it has to train (or resume), so that the training runs with
the CPU training flags of :mod:`models.xla_cpu` (they must be in ``XLA_FLAGS`` before JAX starts, and they
slow the geometry, which runs in the experiment's own process without them). ``CONFIG_JSON`` is a
:class:`models.config.TrainConfig` as JSON (its ``to_dict()``). The exit code is 0 on success, 1 on an error
(the traceback is printed), and that of ``python -m models.train`` for a held run folder or a divergence.
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

    from models import train
    from models.config import TrainConfig

    workdir, cfg = argv[0], TrainConfig.from_dict(json.loads(argv[1]))
    try:
        train.train_and_evaluate(cfg, workdir)
    except train.RunLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except train.TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
