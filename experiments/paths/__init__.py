"""Networks as paths through representation space: the one-command experiment (the main job).

``python -m experiments.paths --preset cpu --out results/paths``. Where things are:

- :mod:`experiments.paths.config` -- the metric registry, :class:`ExperimentConfig` (it holds a
  :class:`models.config.TrainConfig` for the training) and the experiment presets;
- :mod:`experiments.paths.cache` -- the representation cache (compact ``.npz`` per checkpoint);
- :mod:`experiments.paths.pipeline` -- train or reuse the runs, capture, analyse
  (:func:`geopath.analyze_checkpoints`), write results;
- :mod:`experiments.paths.report` -- figures and ``report.md``;
- :mod:`experiments.paths.__main__` -- the command line.
"""

from .cache import compact_representation
from .config import METRICS
from .config import PRESETS
from .config import ExperimentConfig
from .config import experiment_config
from .config import parse_metric
from .pipeline import run_pipeline

__all__ = [
    "ExperimentConfig",
    "experiment_config",
    "PRESETS",
    "METRICS",
    "parse_metric",
    "compact_representation",
    "run_pipeline",
]
