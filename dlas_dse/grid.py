"""The exhaustive grid of a space, planned before anything runs: how many points per layer and in
total, and how many times each expensive stage actually runs once the artifact cache shares it.

A stage's result depends only on some parameters (its cache key): training on the dataset and the
model, compression also on the compression, a build also on the algorithm, the software and the
device (not the thread count: threads are a run-time setting, except for a tuned build, tuned at
the thread count it runs at). Points that agree on those share the stage's artifact, whatever the
order or the worker that reaches them first.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass

import optuna

from dlas_dse.registry import LAYERS
from dlas_dse.space import Config, SearchSpace, config_key
from dlas_dse.study.storage_lock import storage_lock

CACHED_STAGES = ("trainings", "compressions", "builds")
"""The expensive stages whose artifacts are cached, in the order a trial runs them."""


def stage_inputs() -> dict[str, tuple[str, ...]]:
    """What each expensive stage's result depends on (parameter-name prefixes): the parameters of
    the layers that declare it, or an earlier stage, as theirs (see ``Registry.stage``)."""
    inputs, prefixes = {}, ()
    for stage in CACHED_STAGES:
        prefixes += tuple(f"{registry.layer}." for registry in LAYERS.values() if registry.stage == stage)
        inputs[stage] = prefixes
    return {**inputs, "measurements": ("",)}


def _run_time() -> set[str]:
    """Parameters that change how an artifact runs, not the artifact (e.g. ``hardware.threads``)."""
    return {f"{registry.layer}.{name}" for registry in LAYERS.values() for name in registry.run_time}


STAGE_NOTES = {
    "trainings": "one per (dataset, model, training recipe)",
    "compressions": "one per trained model and compression technique (none reuses the trained model)",
    "builds": "one per (compressed model, algorithm, format, tuning, target; tuned: and thread count); each build also has an "
              "evaluation build at the evaluation batch, and accuracy is computed once per evaluation build",
    "tuning runs": "builds with metaschedule; each tunes only the workloads the target's shared database lacks",
    "measurements": "every point (latency is never reused)",
}


def _key(config: Config, prefixes: tuple[str, ...], ignored: frozenset[str] = frozenset()) -> tuple:
    """What of ``config`` a stage depending on ``prefixes`` sees (the ``ignored`` names left out)."""
    return tuple(sorted((name, repr(value)) for name, value in config.items() if _counts(name, prefixes, ignored)))


@functools.cache
def _counts(name: str, prefixes: tuple[str, ...], ignored: frozenset[str]) -> bool:
    """Whether the parameter ``name`` is among ``prefixes`` and not ``ignored`` (asked once per name:
    a large grid asks it millions of times)."""
    return name not in ignored and name.startswith(prefixes)


def _build_key(config: Config, prefixes: tuple[str, ...], ignored: frozenset[str]) -> tuple:
    """A build's key: a tuned build is tuned at its run-time settings (threads), which are then part of it."""
    return _key(config, prefixes, frozenset() if config.get("software.tuning", "untuned") != "untuned" else ignored)


@dataclass
class GridPlan:
    """The valid points of a grid and what they share."""

    points: list[Config]
    per_layer: dict[str, int]
    """Distinct settings of each layer's parameters among the points."""
    stages: dict[str, int]
    """How many times each expensive stage runs for the whole grid."""
    per_platform: dict[str, int]
    """Points per hardware device."""

    def describe(self, platform_status: dict[str, tuple[bool, str]] | None = None) -> str:
        """A table a person reads before committing machines to the grid (with each platform's
        ``(usable, why)`` where given)."""
        lines = [f"{len(self.points)} grid points (every valid combination, each run once)", "",
                 "distinct settings per layer:"]
        lines += [f"  {layer:<12} {count}" for layer, count in self.per_layer.items()]
        lines += ["", "points per platform (hardware.device):"]
        for device, count in self.per_platform.items():
            usable, why = (platform_status or {}).get(device, (None, ""))
            state = "" if usable is None else f"   {'ready' if usable else 'NOT REACHABLE'}: {why}"
            lines.append(f"  {device:<12} {count:>6}{state}")
        lines += ["", "expensive stages, shared through the artifact cache:"]
        lines += [f"  {stage:<13} {count:>6}   {STAGE_NOTES[stage]}" for stage, count in self.stages.items()]
        return "\n".join(lines)


def plan_grid(space: SearchSpace) -> GridPlan:
    """Enumerate the grid of ``space`` and count its layers and shared stages (nothing runs)."""
    points = list(space.grid())
    per_layer = {layer: len({_key(point, (f"{layer}.",)) for point in points}) for layer in LAYERS}
    inputs, ignored = stage_inputs(), frozenset(_run_time())
    stages = {"trainings": len({_key(point, inputs["trainings"], ignored) for point in points}),
              "compressions": len({_key(point, inputs["compressions"], ignored) for point in points
                                   if point.get("compression.technique") != "none"}),
              "builds": len({_build_key(point, inputs["builds"], ignored) for point in points})}
    stages["tuning runs"] = len({_build_key(point, inputs["builds"], ignored) for point in points
                                 if point.get("software.tuning") == "metaschedule"})
    stages["measurements"] = len(points)
    per_platform = collections.Counter(point.get("hardware.device", "") for point in points)
    return GridPlan(points, per_layer, stages, dict(per_platform))


def enqueue_grid(study: optuna.Study, storage: optuna.storages.RDBStorage, space: SearchSpace) -> int:
    """Enqueue, once across every worker, each valid point of ``space`` the study does not hold
    yet (as a waiting trial; workers pop waiting trials atomically). Returns the number of points."""
    sampled = [p.name for p in space.sampled_parameters()]
    points = [{name: point[name] for name in sampled if name in point} for point in space.grid()]
    with storage_lock(storage, f"dlas-grid-{study.study_name}"):
        held = {config_key(t.system_attrs.get("fixed_params", t.params)) for t in study.get_trials(deepcopy=False)}
        for point in points:
            if config_key(point) not in held:
                study.enqueue_trial(point)
    return len(points)
