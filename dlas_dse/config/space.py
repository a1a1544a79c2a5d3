"""Load and validate ``search_spaces/*.yaml``: each layer's block against its registry, the
constraints, and the layers' built-in rules that matter in the space."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlas_dse import stack  # noqa: F401  (importing the stack fills the layer registries)
from dlas_dse.config.locations import resolve
from dlas_dse.files import ConfigError, read_yaml, unknown_field
from dlas_dse.registry import LAYERS, Param, Registry, UnknownEntryError
from dlas_dse.space import Constraint, Parameter, SearchSpace


def _values(file: Path, where: str, raw: Any) -> tuple:
    """A condition's value or list of values, as a tuple."""
    values = tuple(raw) if isinstance(raw, list) else (raw,)
    if not values:
        raise ConfigError(file, where, "needs at least one value")
    return values


def _condition(file: Path, where: str, raw: Any, known: dict[str, Parameter]) -> dict[str, tuple]:
    """Parse ``{layer.param: value | [values]}`` against the parameters defined so far."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(file, where, "expected a mapping like {compression.technique: none}")
    condition = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(file, f"{where}.{name}", "refers to a parameter not defined before this "
                              f"point (layers are read in the order {', '.join(LAYERS)}); defined: "
                              f"{', '.join(known)}")
        param = known[name]
        if not param.discrete:
            raise ConfigError(file, f"{where}.{name}", "conditions may only name parameters given as "
                              "'choices' or a fixed value, not a range")
        values = _values(file, f"{where}.{name}", value)
        for v in values:
            if v not in param.values:
                raise ConfigError(file, f"{where}.{name}", f"{v!r} never occurs; {name} takes "
                                  f"{', '.join(map(repr, param.values))}")
        condition[name] = values
    return condition


def _per_value(file: Path, name: str, raw: dict, schema: Param, known: dict[str, Parameter]) -> list[Parameter]:
    """``{per: layer.param, values: {value: spec, ...}}``: one spec for each value of an earlier discrete
    parameter (e.g. the weights or epochs of each dataset); values not listed keep the default."""
    for key in raw:
        if key not in ("per", "values"):
            raise ConfigError(file, f"{name}.{key}", unknown_field(key, ["per", "values"]))
    by, specs = raw.get("per"), raw.get("values")
    if not isinstance(specs, dict) or not specs:
        raise ConfigError(file, f"{name}.values", f"expected a mapping from each value of {by} to {name}'s "
                          f"value, e.g. {{per: dataset.name, values: {{cifar10: ..., imagenet: ...}}}}")
    if not isinstance(by, str):
        raise ConfigError(file, f"{name}.per", f"expected the name of an earlier discrete parameter, e.g. "
                          f"dataset.name; defined: {', '.join(known)}")
    layer, _, key = by.partition(".")
    by_schema = LAYERS[layer].parameters().get(key) if layer in LAYERS else None
    taken = known[by].values if by in known and known[by].discrete else ()
    # a value this space never takes is skipped when it is a valid one (e.g. a dataset replaced on the
    # command line); anything else is reported as a value that never occurs
    wrong = [v for v in specs if v not in taken and (by_schema is None or by_schema.check(v))]
    if wrong or not taken:  # an unknown or continuous 'per', or an invalid value: _condition says which
        _condition(file, f"{name}.per", {by: wrong or list(specs)}, known)
    specs = {value: spec for value, spec in specs.items() if value in taken}
    parameters = [_parameter(file, name, spec, schema, known, {by: (value,)}) for value, spec in specs.items()]
    if sum(p.kind != "fixed" for p in parameters) > 1:  # Optuna gives one parameter name one distribution
        raise ConfigError(file, f"{name}.values", f"only one value of {by} may give {name} choices or a range; "
                          "fix it for the others, or split the study per value")
    rest = tuple(v for v in taken if v not in specs)
    if rest:
        if schema.default is None:
            raise ConfigError(file, f"{name}.values", f"no value for {by} {', '.join(map(repr, rest))}, and "
                              f"{name} has no default; give one for each")
        parameters.append(Parameter(name, "fixed", (schema.default,), when={by: rest}))
    return parameters


def _parameter(file: Path, name: str, raw: Any, schema: Param, known: dict[str, Parameter],
               when: dict[str, tuple] | None = None) -> Parameter:
    """Parse one parameter spec: a plain value, {fixed}, {choices}, or {range, step, log}; + when."""
    if not isinstance(raw, dict):
        raw = {"fixed": raw}
    allowed = ["fixed", "choices", "range", "step", "log", "when"]
    for key in raw:
        if key not in allowed:
            raise ConfigError(file, f"{name}.{key}", unknown_field(key, allowed))
    kinds = [k for k in ("fixed", "choices", "range") if k in raw]
    if len(kinds) != 1:
        raise ConfigError(file, name, f"give exactly one of fixed, choices, range (got {kinds or 'none'}); "
                          f"{name} is {schema.describe()}")
    kind = kinds[0]
    when = {**(when or {}), **(_condition(file, f"{name}.when", raw["when"], known) if "when" in raw else {})}

    def check(value: Any, where: str) -> Any:
        problem = schema.check(value)
        if problem:
            raise ConfigError(file, where, f"{problem}; {name} is {schema.describe()}")
        return float(value) if schema.type is float else value

    if kind == "fixed":
        return Parameter(name, "fixed", (check(raw["fixed"], name),), when=when)
    if kind == "choices":
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(file, f"{name}.choices", "expected a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(file, f"{name}.choices", "lists a value twice")
        values = tuple(check(v, f"{name}.choices") for v in choices)
        return Parameter(name, "choices", values, when=when)
    if schema.type not in (int, float):
        raise ConfigError(file, f"{name}.range", f"a range needs a numeric parameter; {name} is "
                          f"{schema.describe()}; use 'choices' instead")
    bounds = raw["range"]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(file, f"{name}.range", "expected [low, high]")
    low, high = (check(b, f"{name}.range") for b in bounds)
    if low >= high:
        raise ConfigError(file, f"{name}.range", f"low {low} must be below high {high}")
    step, log = raw.get("step"), raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(file, f"{name}.log", f"expected true or false, got {log!r}")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0
                             or (schema.type is int and not isinstance(step, int))):
        raise ConfigError(file, f"{name}.step", f"expected a positive {schema.type.__name__}, got {step!r}")
    if log and (low <= 0 or (step not in (None, 1))):
        raise ConfigError(file, f"{name}.log", "a log range needs low > 0 and no step")
    return Parameter(name, "range", (), low=low, high=high, step=step, log=log,
                     integer=schema.type is int, when=when)


def _layer_parameters(file: Path, registry: Registry, block: Any,
                      known: dict[str, Parameter]) -> list[Parameter]:
    """Parse one layer's block; entry-specific parameters become conditional on their entries."""
    layer = registry.layer
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(file, layer, f"expected a mapping of parameters, e.g. {registry.selector}: ...")
    schema = registry.parameters()
    for key in block:
        if key not in schema:
            raise ConfigError(file, f"{layer}.{key}", unknown_field(key, list(schema)))

    selector_name = f"{layer}.{registry.selector}"
    if registry.selector in block:
        selector = _parameter(file, selector_name, block[registry.selector],
                              Param(str, choices=None), known)
        for value in selector.values:
            try:
                registry.get(value)
            except UnknownEntryError as error:
                raise ConfigError(file, selector_name, str(error)) from None
    else:
        selector = Parameter(selector_name, "fixed", (schema[registry.selector].default,))
    known[selector_name] = selector
    selectable = set(selector.values)
    parameters = [selector]

    def conditional(key: str, parameter: Parameter) -> Parameter:
        owners = registry.owners(key)
        if not owners:
            return parameter
        active = [o for o in owners if o in selectable]
        when = {selector_name: tuple(active), **parameter.when}
        return Parameter(**{**parameter.__dict__, "when": when})

    for key, raw in block.items():
        if key == registry.selector:
            continue
        name = f"{layer}.{key}"
        owners = registry.owners(key)
        if owners and not selectable.intersection(owners):
            raise ConfigError(file, name, f"applies only to {registry.selector} "
                              f"{', '.join(owners)}, which this space never selects")
        if isinstance(raw, dict) and "per" in raw:
            each = [conditional(key, p) for p in _per_value(file, name, raw, schema[key], known)]
        else:
            each = [conditional(key, _parameter(file, name, raw, schema[key], known))]
        known[name] = _union(each)
        parameters += each

    for key, spec in schema.items():
        name = f"{layer}.{key}"
        if key in block or key == registry.selector:
            continue
        owners = [o for o in registry.owners(key) if o in selectable]
        # a default per owning entry (entries may differ, e.g. image_size 32 vs 224)
        defaults = [(registry.get(o).params[key], {selector_name: (o,)}) for o in owners] \
            if registry.owners(key) else [(spec, {})]
        for owner_spec, when in defaults:
            if owner_spec.default is None:
                raise ConfigError(file, name, f"required: {name} is {owner_spec.describe()}")
            parameter = Parameter(name, "fixed", (owner_spec.default,), when=when)
            known.setdefault(name, parameter)
            parameters.append(parameter)
    return parameters


def _union(each: list[Parameter]) -> Parameter:
    """One parameter for conditions on a parameter given per value of another: every value it takes."""
    if len(each) == 1:
        return each[0]
    if not all(p.discrete for p in each):
        return Parameter(each[0].name, "range", ())
    values = tuple({repr(v): v for p in each for v in p.values}.values())
    return Parameter(each[0].name, "choices", values)


def _constraints(file: Path, raw: Any, known: dict[str, Parameter]) -> list[Constraint]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(file, "constraints", "expected a list of {name, if, then, reason}")
    constraints = []
    for index, item in enumerate(raw):
        where = f"constraints[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(file, where, "expected a mapping with 'if' and optionally 'then', 'name', 'reason'")
        for key in item:
            if key not in ("name", "if", "then", "reason"):
                raise ConfigError(file, f"{where}.{key}", unknown_field(key, ["name", "if", "then", "reason"]))
        if "if" not in item:
            raise ConfigError(file, where, "needs an 'if' mapping (the combinations it applies to)")
        name = str(item.get("name", where))
        condition = _condition(file, f"{where}.if", item["if"], known)
        requirement = _condition(file, f"{where}.then", item["then"], known) if "then" in item else {}
        constraints.append(Constraint(name, condition, requirement, str(item.get("reason", ""))))
    return constraints


def load_space(name_or_path: str, relative_to: Path | None = None,
               overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a search space by name (``search_spaces/<name>.yaml``) or path;
    ``overrides`` (``{"hardware.device": "host-cpu"}``) replace parameters of the file."""
    path = resolve(name_or_path, "search_spaces", "space", relative_to)
    data = read_yaml(path)
    if not set(data) & set(LAYERS):
        raise ConfigError(path, "(top level)", f"no layer blocks: a search space sets at least one of "
                          f"{', '.join(LAYERS)} (e.g. 'dataset: {{name: digits}}'); see "
                          "search_spaces/quickstart.yaml")
    for name, value in (overrides or {}).items():
        layer, key = name.split(".", 1)
        block = {**(data.get(layer) or {}), key: value}
        registry = LAYERS[layer]
        if key == registry.selector:  # drop the parameters only the replaced entries had
            chosen = set(value["choices"] if isinstance(value, dict) else [value])
            block = {k: v for k, v in block.items() if not registry.owners(k) or chosen & set(registry.owners(k))}
        data[layer] = block
    allowed = ["description", *LAYERS, "constraints"]
    for key in data:
        if key not in allowed:
            raise ConfigError(path, key, unknown_field(key, allowed))
    known: dict[str, Parameter] = {}
    parameters: list[Parameter] = []
    try:
        for layer, registry in LAYERS.items():
            parameters += _layer_parameters(path, registry, data.get(layer), known)
    except ConfigError as error:  # a value given on the command line: say so
        if any(error.field == name or error.field.startswith(name + ".") for name in overrides or {}):
            raise ConfigError(f"command line (over {path})", error.field, error.problem) from None
        raise
    constraints = _constraints(path, data.get("constraints"), known) + _rules(known)
    space = SearchSpace(path.stem, str(path), parameters, constraints, str(data.get("description", "")))
    if not space.has_valid_configuration():
        rules = [c for c in constraints if c.name.startswith(RULE_PREFIX)]
        raise ConfigError(path, "constraints", "together they exclude every combination of the space; "
                          "relax a constraint or add choices"
                          + "".join(f"; built-in {c.name}: {c.reason}" for c in rules))
    return space


RULE_PREFIX = "rule:"


def _rules(known: dict[str, Parameter]) -> list[Constraint]:
    """The layers' built-in rules that can matter in a space with parameters ``known``."""
    rules = []
    for registry in LAYERS.values():
        for rule in registry.rules:
            names = {**rule.condition, **rule.requirement}
            if all(name in known for name in names) and all(
                    any(v in known[name].values for v in rule.condition[name]) for name in rule.condition):
                rules.append(Constraint(RULE_PREFIX + rule.name, rule.condition, rule.requirement, rule.reason))
    return rules


def check_grid(space: SearchSpace, file: str | os.PathLike, field_name: str) -> None:
    """A grid needs every parameter enumerable (choices, fixed, int ranges, float ranges with a step)."""
    try:
        next(iter(space.grid()))
    except ValueError as error:
        raise ConfigError(file, field_name, f"grid needs an enumerable space: {error}") from None
