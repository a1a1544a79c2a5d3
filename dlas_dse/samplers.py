"""The samplers a study can use: one registry entry each (its Optuna sampler and the options it
accepts), feeding the study file's validation, the command line's choices and construction.

Adding a sampler is one function here::

    @SAMPLERS.register("cmaes", sigma0=Param(float, default=None, low=0.0, help="initial step size"))
    def cmaes(study, seed, **options):
        return optuna.samplers.CmaEsSampler(seed=seed, **options)
"""

from __future__ import annotations

import optuna

from dlas_dse.files import ConfigError
from dlas_dse.objectives import OBJECTIVES
from dlas_dse.registry import Param, Registry

SAMPLERS = Registry("study", "sampler")
"""Every sampler by name; an entry's function takes ``(study, seed, **options)``."""


@SAMPLERS.register("nsga2", population_size=Param(int, default=None, low=2, help="individuals per generation"))
def nsga2(study, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """NSGA-II, the multi-objective genetic algorithm (Optuna's default for several objectives)."""
    return optuna.samplers.NSGAIISampler(seed=seed, **options)


@SAMPLERS.register("tpe", n_startup_trials=Param(int, default=None, low=0, help="random trials before TPE"))
def tpe(study, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """The tree-structured Parzen estimator."""
    return optuna.samplers.TPESampler(seed=seed, **options)


@SAMPLERS.register("random")
def random(study, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """Uniform random configurations."""
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("grid")
def grid(study, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """Every point of a finite space once: the study enqueues the points before sampling starts, so
    the sampler itself only fills in (randomly) what a point leaves open."""
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("surrogate", startup_trials=Param(int, default=8, low=2,
                                                     help="random trials before the surrogate chooses"))
def surrogate(study, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """The project's XGBoost latency surrogate choosing the next configuration (all three objectives)."""
    from dlas_dse.surrogate.sampler import SurrogateSampler

    if set(study.objectives) != set(OBJECTIVES):
        raise ConfigError(study.source, "objectives", f"the surrogate sampler optimises all of "
                          f"{', '.join(OBJECTIVES)}; this study has {', '.join(study.objectives)}")
    return SurrogateSampler(study.space, study.cache_dir, seed, **options)
