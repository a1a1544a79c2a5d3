"""One registry per DLAS layer.

Adding a technique to a layer is one decorated function::

    @COMPRESSIONS.register("weight_pruning", sparsity=Param(float, low=0.0, high=1.0))
    def weight_pruning(model, dataset, params): ...

The registry records the entry's own parameters so that configuration files can be
validated (unknown keys, wrong types, out-of-range values) before any work starts.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    """Schema of one configuration parameter: its type, bounds or allowed values, default."""

    type: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, value: Any) -> str | None:
        """Return a description of what is wrong with ``value``, or None if it is valid."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return f"expected {self.type.__name__}, got {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"unknown value {value!r}; allowed: {', '.join(map(str, self.choices))}"
        if self.low is not None and value < self.low:
            return f"{value!r} is below the minimum {self.low}"
        if self.high is not None and value > self.high:
            return f"{value!r} is above the maximum {self.high}"
        return None

    def describe(self) -> str:
        """Human-readable domain, used in error messages and ``list``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        bounds = ""
        if self.low is not None or self.high is not None:
            bounds = f" in [{self.low if self.low is not None else '-inf'}, " \
                     f"{self.high if self.high is not None else 'inf'}]"
        return f"{self.type.__name__}{bounds}"


@dataclass(frozen=True)
class Rule:
    """A built-in constraint: configurations matching ``condition`` (``{"layer.param": values}``)
    must match ``requirement``; without one they are excluded. ``reason`` says why."""

    name: str
    condition: dict[str, tuple]
    requirement: dict[str, tuple]
    reason: str


@dataclass
class Entry:
    """A registered technique: its name, the function implementing it, its own parameters."""

    name: str
    function: Callable
    params: dict[str, Param] = field(default_factory=dict)
    preflight: Callable[[dict], None] | None = None
    """Optional cheap check, given a whole configuration's layers, run before a study starts
    (e.g. that a dataset's files exist); raises :class:`PreflightError`."""
    traits: dict[str, Any] = field(default_factory=dict)
    """What generic code needs to know of the entry (e.g. a compression's weight ``bits``), declared
    beside it so that rules, descriptors and plans derive from it instead of restating it."""


class PreflightError(Exception):
    """A technique cannot run on this machine (missing data, unreachable device); the message
    says what was tried and what to do."""


class UnknownEntryError(KeyError):
    """Raised when a name is not registered in a layer's registry."""

    def __init__(self, registry: "Registry", name: str):
        self.registry, self.name = registry, name
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"unknown {self.registry.layer} {self.registry.selector} {self.name!r}; "
                f"supported: {', '.join(self.registry.names())}")


class Registry:
    """Named entries of one DLAS layer, chosen by the layer's selector parameter."""

    def __init__(self, layer: str, selector: str, common: dict[str, Param] | None = None,
                 default: str | None = None, stage: str | None = None, run_time: tuple[str, ...] = ()):
        self.layer = layer
        self.selector = selector
        self.default = default
        """The entry a configuration gets when it names none (default: the first registered)."""
        self.stage = stage
        """The first cached stage whose artifact this layer's parameters change (that stage's key and
        every later stage's include them): what the grid plan counts as shared."""
        self.run_time = run_time
        """Parameters that change no artifact, only how it runs (a device's threads)."""
        self.common = dict(common or {})
        self._rules: list[Rule] = []
        self.preflight: Callable[[dict], None] | None = None
        """Check of the layer's common parameters before a study starts (like Entry.preflight)."""
        self._entries: dict[str, Entry] = {}
        self._loader: Callable[[Registry], None] | None = None
        """Fills the registry from a file (the hardware catalogue) when it is first read, not at import."""

    def load_on_first_read(self, loader: Callable[["Registry"], None]) -> None:
        """Fill the registry with ``loader(registry)`` when it is first read (names, entries, rules)."""
        self._loader = loader

    def _load(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader(self)

    @property
    def rules(self) -> list[Rule]:
        """Combinations across layers this layer cannot run; every search space excludes them."""
        self._load()
        return self._rules

    @rules.setter
    def rules(self, rules: list[Rule]) -> None:
        self._rules = rules

    def register(self, name: str, *, preflight: Callable[[dict], None] | None = None,
                 traits: dict[str, Any] | None = None, **params: Param) -> Callable[[Callable], Callable]:
        """Decorator adding ``function`` under ``name`` with its own parameters and ``traits``;
        ``preflight`` (called with every layer's parameters) checks before a study starts that it
        can run."""

        def decorate(function: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.layer} {name!r} is registered twice")
            self._entries[name] = Entry(name, function, params, preflight, dict(traits or {}))
            return function

        return decorate

    def get(self, name: str) -> Entry:
        """The entry registered as ``name``; raises :class:`UnknownEntryError` listing the others."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntryError(self, name) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load()
        return list(self._entries)

    def trait(self, name: str, trait: str, default: Any = None) -> Any:
        """The entry ``name``'s declared ``trait`` (``default`` where it declares none)."""
        return self.get(name).traits.get(trait, default)

    def parameters(self) -> dict[str, Param]:
        """Every parameter the layer accepts: the selector, common ones and all entries' own."""
        names = self.names()
        default = self.default or (names[0] if names else None)
        schema = {self.selector: Param(str, default=default, choices=tuple(names))}
        schema.update(self.common)
        for entry in self._entries.values():
            schema.update(entry.params)
        return schema

    def owners(self, param: str) -> list[str]:
        """Entries that declare ``param`` as their own (empty for the selector and common ones)."""
        self._load()
        return [e.name for e in self._entries.values() if param in e.params]


def import_modules(package: str, path: list[str], first: tuple[str, ...] = ()) -> None:
    """Import every public module of ``package`` (``path``: its ``__path__``), each of which registers
    its entries: ``first`` in that order (the order the registry lists them), then the others by
    name, so that a new technique is a new module and nothing else."""
    others = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_") and m.name not in first)
    for name in (*first, *others):
        importlib.import_module(f"{package}.{name}")


DATASETS = Registry("dataset", "name", stage="trainings", common={
    "split_seed": Param(int, default=0, low=0, help="seed of the train/validation split and of subsets"),
})
MODELS = Registry("model", "architecture", stage="trainings", common={
    "epochs": Param(int, default=2, low=0, high=1000, help="training epochs"),
    "learning_rate": Param(float, default=0.05, low=1e-6, high=10.0, help="SGD learning rate"),
    "batch_size": Param(int, default=64, low=1, high=4096, help="training batch size"),
    "seed": Param(int, default=0, low=0, help="seed of initialisation and data order"),
    "weight_decay": Param(float, default=5e-4, low=0.0, high=0.1, help="SGD weight decay"),
    "schedule": Param(str, default="one-cycle", choices=("one-cycle", "cosine", "constant"),
                      help="learning-rate schedule: one-cycle (warm-up, then cosine annealing), cosine "
                           "(annealing from learning_rate), constant"),
    "augmentation": Param(str, default="auto", choices=("auto", "none", "crop-flip"),
                          help="training augmentation: crop-flip = random crop of the zero-padded image and "
                               "horizontal flip; auto = what the dataset declares (crop-flip for natural images, "
                               "none for digits)"),
    "weights": Param(str, default="", help="checkpoint to start from ({architecture} and {dataset} are "
                     "replaced; 'torchvision' = torchvision's pretrained ImageNet weights): used as they are "
                     "with epochs 0, fine-tuned for the epochs otherwise"),
})
COMPRESSIONS = Registry("compression", "technique", default="none", stage="compressions")
ALGORITHMS = Registry("algorithm", "conv", stage="builds", common={
    "layout": Param(str, default="NCHW", choices=("NCHW", "NHWC"), help="data layout of every convolution"),
    "format": Param(str, default="dense", choices=("dense", "sparse"),
                    help="weight format: sparse = CSR, zeros neither stored nor multiplied (weight-pruned models)"),
})
COMPILERS = Registry("software", "compiler", default="tvm", stage="builds")
DEVICES = Registry("hardware", "device", stage="builds", run_time=("threads",))

LAYERS: dict[str, Registry] = {r.layer: r for r in
                               (DATASETS, MODELS, COMPRESSIONS, ALGORITHMS, COMPILERS, DEVICES)}
"""The six DLAS layers in stack order, each with its registry."""
