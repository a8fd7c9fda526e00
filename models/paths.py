"""Deprecated alias: the paths experiment moved to :mod:`experiments.paths`.

``python -m models.paths ...`` forwards to ``python -m experiments.paths ...`` (same flags) with a
:class:`DeprecationWarning`; use the new command.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    warnings.warn(
        "python -m models.paths is deprecated; use python -m experiments.paths",
        DeprecationWarning,
        stacklevel=2,
    )
    from experiments.paths.__main__ import main as experiment_main

    return experiment_main(argv)


if __name__ == "__main__":
    sys.exit(main())
