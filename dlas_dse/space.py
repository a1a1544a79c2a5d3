"""The DLAS search space: parameters, conditions, constraints, and their Optuna view.

A configuration is a flat mapping ``"layer.param" -> value`` (e.g. ``"model.architecture"``);
:func:`nest` turns it into ``{"model": {"architecture": ...}}`` for the stack.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import optuna

Config = dict[str, Any]


@dataclass(frozen=True)
class Parameter:
    """One parameter of the space: fixed, a set of choices, or a numeric range.

    ``when`` maps other parameter names to the values under which this one is active;
    an inactive parameter is neither sampled nor part of the configuration.
    """

    name: str
    kind: str  # "fixed" | "choices" | "range"
    values: tuple = ()  # the fixed value (1 item) or the choices
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    when: Mapping[str, tuple] = field(default_factory=dict)

    @property
    def discrete(self) -> bool:
        """True when the parameter has a finite list of values without a step."""
        return self.kind in ("fixed", "choices")

    def is_active(self, config: Config) -> bool:
        """Whether the conditions in ``when`` hold for the parameters chosen so far."""
        return all(name in config and config[name] in allowed for name, allowed in self.when.items())

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """This parameter's value for ``trial`` (the fixed value, or one Optuna suggests)."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list:
        """Every value of the parameter; a float range needs a step to be enumerable."""
        if self.discrete:
            return list(self.values)
        if self.integer:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError(f"{self.name}: a float range needs a 'step' to be enumerated on a grid")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


@dataclass(frozen=True)
class Constraint:
    """Excludes configurations: those matching ``condition`` must satisfy ``requirement``.

    Without a requirement, every configuration that matches the condition is excluded.
    """

    name: str
    condition: Mapping[str, tuple]
    requirement: Mapping[str, tuple] = field(default_factory=dict)
    reason: str = ""

    def violated_by(self, config: Config) -> bool:
        """True when ``config`` is one of the combinations this constraint excludes."""
        if not all(config.get(name) in allowed for name, allowed in self.condition.items()):
            return False
        if not self.requirement:
            return True
        return not all(config.get(name) in allowed for name, allowed in self.requirement.items())


@dataclass
class SearchSpace:
    """Ordered parameters plus constraints, loaded from ``search_spaces/<name>.yaml``."""

    name: str
    source: str
    parameters: list[Parameter]
    constraints: list[Constraint] = field(default_factory=list)
    description: str = ""

    def parameter(self, name: str) -> Parameter:
        """The parameter called ``name``."""
        return next(p for p in self.parameters if p.name == name)

    def sample(self, trial: optuna.trial.BaseTrial) -> Config:
        """Suggest every active parameter from ``trial``; fixed values are filled in directly."""
        config: Config = {}
        for param in self.parameters:
            if not param.is_active(config):
                continue
            config[param.name] = param.suggest(trial)
        return config

    def representative(self, **fixed: Any) -> Config:
        """One configuration: ``fixed`` values, else each active parameter's first value (a
        range's low end). Used to check that every selectable technique can run here."""
        config: Config = {}
        for param in self.parameters:
            if param.is_active(config):
                config[param.name] = fixed.get(param.name, param.values[0] if param.discrete else param.low)
        return config

    def violations(self, config: Config) -> list[Constraint]:
        """The constraints that exclude ``config`` (empty when it is valid)."""
        return [c for c in self.constraints if c.violated_by(config)]

    def _enumerate(self, parameters: list[Parameter]) -> Iterator[Config]:
        """Every assignment of ``parameters`` honouring their conditions (constraints not applied)."""

        def expand(index: int, config: Config) -> Iterator[Config]:
            if index == len(parameters):
                yield dict(config)
                return
            param = parameters[index]
            if not param.is_active(config):
                yield from expand(index + 1, config)
                return
            for value in param.grid_values():
                config[param.name] = value
                yield from expand(index + 1, config)
                del config[param.name]

        yield from expand(0, {})

    def grid(self) -> Iterator[Config]:
        """Every valid configuration of a space whose parameters are all enumerable."""
        for config in self._enumerate(self.parameters):
            if not self.violations(config):
                yield config

    def grid_up_to(self, limit: int) -> list[Config] | None:
        """Every valid configuration, or None when the space is not enumerable (a float range
        without a step) or has more than ``limit`` of them."""
        try:
            configs = list(itertools.islice(self.grid(), limit + 1))
        except ValueError:
            return None
        return configs if len(configs) <= limit else None

    def has_valid_configuration(self) -> bool:
        """Whether the constraints leave at least one combination of the discrete parameters."""
        discrete = [p for p in self.parameters if p.discrete]
        return any(not self.violations(c) for c in self._enumerate(discrete))

    def sampled_parameters(self) -> list[Parameter]:
        """The parameters Optuna samples (every non-fixed one)."""
        return [p for p in self.parameters if p.kind != "fixed"]


def config_key(config: Config) -> str:
    """A text key equal for equal configurations, whatever the order of their entries."""
    return json.dumps(config, sort_keys=True, default=str)


def nest(config: Config) -> dict[str, dict[str, Any]]:
    """``{"model.epochs": 2}`` → ``{"model": {"epochs": 2}}``."""
    layers: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        layer, _, param = key.partition(".")
        layers.setdefault(layer, {})[param] = value
    return layers
