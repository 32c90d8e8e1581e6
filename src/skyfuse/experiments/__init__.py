"""Experiments: the config-file layer between the command line and the library.

A `TrainExperiment`, `BenchExperiment` or `ZeroShotExperiment` holds every setting of one command's
run; ``build_experiment`` reads one from YAML (flags laid over it), ``save_experiment`` writes the
resolved one into the run folder as ``config.yaml``, and ``run_train`` / ``run_bench_experiment`` /
``run_zeroshot_experiment`` run it.
"""

from skyfuse.experiments.config import (
    CONFIG_FILE,
    BenchExperiment,
    TrainExperiment,
    ZeroShotExperiment,
    build_experiment,
    save_experiment,
)

__all__ = [
    "CONFIG_FILE",
    "BenchExperiment",
    "TrainExperiment",
    "ZeroShotExperiment",
    "build_experiment",
    "save_experiment",
]
