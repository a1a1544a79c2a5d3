"""Load and validate ``studies/*.yaml``: the space, objectives, sampler, budget, storage, and the
settings sections that tune how a trial evaluates, measures and verifies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlas_dse.config.locations import default_cache_dir, resolve
from dlas_dse.config.space import check_grid, load_space
from dlas_dse.files import ConfigError, project_root, read_yaml, unknown_field
from dlas_dse.objectives import OBJECTIVES
from dlas_dse.registry import Param
from dlas_dse.samplers import SAMPLERS
from dlas_dse.space import SearchSpace
from dlas_dse.study.storage import parse_url

SETTINGS: dict[str, dict[str, Param]] = {
    "evaluation": {
        "batch_size": Param(int, default=32, low=1, high=4096,
                            help="batch of the build that computes accuracy"),
        "max_samples": Param(int, default=None, low=1,
                             help="evaluate accuracy on a stratified subset of this many images"),
    },
    "measurement": {
        "warmup_runs": Param(int, default=2, low=0, help="untimed runs before measuring"),
        "min_repeats": Param(int, default=5, low=1, help="fewest timed runs"),
        "max_repeats": Param(int, default=200, low=1, help="most timed runs"),
        "min_time_s": Param(float, default=1.0, low=0.0, help="timed seconds, split over the rounds"),
        "rounds": Param(int, default=5, low=1, high=1000,
                        help="timed windows; the latency is the most repeatable statistic over them"),
        "max_interference": Param(float, default=0.25, low=0.0,
                                  help="a window in which other processes used more CPU than this "
                                       "(cores' worth, 1.0 = one busy core) is discarded and retimed"),
        "max_discarded": Param(int, default=10, low=0,
                               help="busy windows retimed at most; beyond, the measurement is flagged noisy"),
        "cooldown_s": Param(float, default=0.0, low=0.0, help="idle seconds before warming up"),
        "cpu_affinity": Param(str, default="compact", choices=("compact", "none"),
                              help="compact: a local-CPU trial measures on its first `threads` cores only; "
                                   "none: wherever the OS schedules it"),
    },
    "tuning": {
        "max_total_s": Param(float, default=None, low=0.0,
                             help="cap on auto-tuning seconds summed over the study's trials; once spent, "
                                  "metaschedule trials build from the tuning database without measuring more"),
    },
    "workers": {
        "heartbeat_interval_s": Param(int, default=20, low=1, high=3600,
                                      help="seconds between a running trial's heartbeats in the storage"),
        "grace_period_s": Param(int, default=60, low=2, high=86400,
                                help="a running trial without a heartbeat for this long is failed and retried "
                                     "(its worker is gone)"),
    },
    "verification": {
        "samples": Param(int, default=4, low=1, help="validation images compared with PyTorch"),
        "tolerance": Param(float, default=1e-3, low=0.0,
                           help="max |compiled - PyTorch| relative to max(1, max |PyTorch|)"),
    },
}
"""Study sections that tune how a trial evaluates, measures and verifies."""


@dataclass
class StudyConfig:
    """A validated study: its space, objectives, sampler, budget, storage and settings."""

    name: str
    source: str
    space: SearchSpace
    objectives: dict[str, str]
    sampler: str = "nsga2"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 10
    seed: int = 0
    storage: str = ""
    trial_timeout_s: float = 1800.0
    cache_dir: str = ""
    description: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        """Optuna directions in objective order."""
        return list(self.objectives.values())


def _section(file: Path, section: str, raw: Any) -> dict[str, Any]:
    """Validate a settings section against :data:`SETTINGS` and fill in its defaults."""
    schema = SETTINGS[section]
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(file, section, f"expected a mapping with {', '.join(schema)}")
    values = {}
    for key, spec in schema.items():
        value = raw.get(key, spec.default)
        if value is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(file, f"{section}.{key}", f"{problem}; {key} is {spec.describe()}")
        values[key] = value
    for key in raw:
        if key not in schema:
            raise ConfigError(file, f"{section}.{key}", unknown_field(key, list(schema)))
    return values


def settings_with_defaults(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Trial settings for code that runs trials without a study file: ``raw``'s sections and
    values, validated, every other one at its default."""
    return {section: _section(Path("(settings given in code)"), section, raw.get(section)) for section in SETTINGS}


def _check(file: Path, field_name: str, value: Any, spec: Param) -> Any:
    problem = spec.check(value)
    if problem:
        raise ConfigError(file, field_name, f"{problem}; {field_name} is {spec.describe()}")
    return value


def load_study(name_or_path: str, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study by name (``studies/<name>.yaml``) or path, with its space
    (``overrides`` replace parameters of the space, see :func:`load_space`)."""
    path = resolve(name_or_path, "studies", "study")
    data = read_yaml(path)
    allowed = ["description", "space", "objectives", "sampler", "n_trials", "seed", "storage",
               "trial_timeout_s", "cache_dir", *SETTINGS]
    for key in data:
        if key not in allowed:
            raise ConfigError(path, key, unknown_field(key, allowed))
    if "space" not in data:
        raise ConfigError(path, "space", "required: the name of a file in search_spaces/")
    try:
        space = load_space(str(data["space"]), relative_to=path.resolve().parent.parent, overrides=overrides)
    except ConfigError as error:
        if error.field == "space":
            raise ConfigError(path, "space", error.problem) from None
        raise

    objectives = data.get("objectives", dict(OBJECTIVES))
    if isinstance(objectives, list):
        objectives = {name: OBJECTIVES.get(name) for name in objectives}
    if not isinstance(objectives, dict) or not objectives:
        raise ConfigError(path, "objectives", f"expected a mapping like {OBJECTIVES}")
    for name, direction in objectives.items():
        if name not in OBJECTIVES:
            raise ConfigError(path, f"objectives.{name}", unknown_field(name, list(OBJECTIVES)).replace(
                "field", "objective"))
        if direction not in ("maximize", "minimize"):
            raise ConfigError(path, f"objectives.{name}", f"direction {direction!r}; allowed: maximize, minimize")

    sampler = data.get("sampler", "nsga2")
    options: dict[str, Any] = {}
    if isinstance(sampler, dict):
        options = {k: v for k, v in sampler.items() if k != "name"}
        sampler = sampler.get("name", "nsga2")
    if sampler not in SAMPLERS.names():
        raise ConfigError(path, "sampler", f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS.names())}")
    for key, value in options.items():
        accepted = SAMPLERS.get(sampler).params
        if key not in accepted:
            raise ConfigError(path, f"sampler.{key}", unknown_field(key, ["name", *accepted]))
        _check(path, f"sampler.{key}", value, accepted[key])
    if sampler == "grid":
        check_grid(space, path, "sampler")

    name = path.stem
    storage = data.get("storage") or f"sqlite:///{project_root() / 'results' / f'{name}.db'}"
    parse_url(storage, path, "storage")
    return StudyConfig(
        name=name, source=str(path), space=space, objectives=objectives,
        sampler=sampler, sampler_options=options,
        n_trials=_check(path, "n_trials", data.get("n_trials", 10), Param(int, low=1)),
        seed=_check(path, "seed", data.get("seed", 0), Param(int, low=0)),
        storage=storage,
        trial_timeout_s=float(_check(path, "trial_timeout_s", data.get("trial_timeout_s", 1800.0),
                                     Param(float, low=1.0))),
        cache_dir=str(data.get("cache_dir") or default_cache_dir()),
        description=str(data.get("description", "")),
        settings={section: _section(path, section, data.get(section)) for section in SETTINGS},
    )
