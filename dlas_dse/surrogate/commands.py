"""``python -m dlas_dse surrogate train|predict|evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dlas_dse.files import ConfigError, project_root, unknown_field

DESCRIPTION = """\
An XGBoost model of log latency over a configuration's layer parameters and static descriptors
(MACs, parameters and convolutions of the architecture at the dataset's input size, weight bits and
sparsity, deployed bytes, the device's kind, threads and measured peak), trained on measured trials.

  surrogate train --study NAME [--study NAME ...]      fit on the studies' completed trials
  surrogate evaluate --study NAME                      held-out metrics and plots (k-fold,
                                                       leave-one-model-out, leave-one-hardware-out)
  surrogate predict --study NAME --grid                predicted latency of every point of the space
  surrogate predict --study NAME --params model.architecture=resnet18 algorithm.conv=gemm
  surrogate predict --study NAME --config configs.yaml one configuration or a list of them
"""


def model_path(studies: list[str]) -> Path:
    """Where ``train`` saves (and ``predict`` looks for) the model of ``studies`` by default."""
    return project_root() / "results" / "surrogate" / f"{'+'.join(Path(s).stem for s in studies)}.json"


def add_parser(commands) -> None:
    """Add ``surrogate`` and its three actions to the CLI's sub-commands."""
    parser = commands.add_parser("surrogate", help="train, evaluate and query the XGBoost latency surrogate",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="fit the surrogate on studies' completed trials")
    evaluate = actions.add_parser("evaluate", help="metrics on held-out trials only, with plots")
    predict = actions.add_parser("predict", help="predict latency of configurations without building them")
    for action in (train, evaluate):
        action.add_argument("--study", required=True, action="append",
                            help="a study whose trials to learn from (repeat for several)")
        action.add_argument("--storage", help="SQLAlchemy URL of every study (default: each study's own)")
    train.add_argument("--out", type=Path, help="model file (default: results/surrogate/<studies>.json)")
    evaluate.add_argument("--folds", type=int, default=5, help="k of the random k-fold split (default: 5)")
    evaluate.add_argument("--out", type=Path, help="folder (default: results/surrogate/<studies>-evaluation/)")
    predict.add_argument("--study", required=True, help="the study whose space the configurations belong to")
    predict.add_argument("--model", type=Path, help="model file (default: results/surrogate/<study>.json)")
    chosen = predict.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--grid", action="store_true", help="every valid point of the study's space")
    chosen.add_argument("--config", type=Path, help="YAML: one configuration or a list (flat layer.param keys or "
                        "one block per layer); parameters left out take the space's first value")
    chosen.add_argument("--params", nargs="+", metavar="LAYER.PARAM=VALUE",
                        help="one configuration: these values, the space's first value for the others")
    predict.add_argument("--out", type=Path, help="also write the table as CSV")


def _measured(args: argparse.Namespace):
    from dlas_dse.study.opening import load_stored_study
    from dlas_dse.surrogate.data import measured_trials

    return measured_trials([load_stored_study(name, args.storage) for name in args.study])


def _train(args: argparse.Namespace) -> int:
    from dlas_dse.config import default_cache_dir
    from dlas_dse.surrogate.model import LatencySurrogate, describe

    measured = _measured(args)
    if len(measured) < 2:
        print(f"error: {len(measured)} completed trial(s) with a latency in {', '.join(args.study)}; the surrogate "
              "needs at least 2 (run more trials first)", file=sys.stderr)
        return 1
    surrogate = LatencySurrogate.train(measured.configs, measured.latencies_ms, default_cache_dir(), measured.studies)
    path = surrogate.save(args.out or model_path(args.study))
    print(f"{describe(surrogate)}\nsaved to {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dlas_dse.config import default_cache_dir
    from dlas_dse.surrogate.evaluation import evaluate

    measured = _measured(args)
    directory = args.out or model_path(args.study).with_name(model_path(args.study).stem + "-evaluation")
    table, skipped = evaluate(measured, default_cache_dir(), directory, args.folds)
    for split, reason in skipped.items():
        print(f"{split}: not computed: {reason}", file=sys.stderr)
    if table.empty:
        print("error: no split could be evaluated", file=sys.stderr)
        return 1
    print(f"held-out evaluation of {len(measured)} trials ({', '.join(measured.studies)}), written to {directory}:")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    return 0


def _completed(space, given: dict, source: str) -> dict:
    """``given`` (flat or nested by layer) on top of the space's first values; unknown names are an error."""
    flat = {}
    for key, value in given.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    known = [parameter.name for parameter in space.parameters]
    for key in flat:
        if key not in known:
            raise ConfigError(source, key, unknown_field(key, known))
    return space.representative(**flat)


def _configs(args: argparse.Namespace, space) -> list[dict]:
    if args.grid:
        return list(space.grid())
    if args.params:
        given = {}
        for item in args.params:
            key, separator, value = item.partition("=")
            if not separator:
                raise ConfigError("--params", item, "expected LAYER.PARAM=VALUE, e.g. algorithm.conv=gemm")
            given[key] = yaml.safe_load(value)
        return [_completed(space, given, "--params")]
    data = yaml.safe_load(args.config.read_text())
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise ConfigError(args.config, "(top level)", "expected a configuration mapping or a list of them")
    return [_completed(space, item, str(args.config)) for item in items]


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from dlas_dse.config import default_cache_dir, load_study
    from dlas_dse.surrogate.model import LatencySurrogate, describe

    study = load_study(args.study)
    surrogate = LatencySurrogate.load(args.model or model_path([args.study]))
    configs = _configs(args, study.space)
    table = pd.DataFrame(configs)
    table["predicted_latency_ms"] = surrogate.predict(configs, default_cache_dir())
    varying = [c for c in table.columns[:-1] if table[c].astype(str).nunique() > 1] or list(table.columns[:-1])
    table = table.sort_values("predicted_latency_ms")
    print(describe(surrogate))
    print(table[varying + ["predicted_latency_ms"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; a model that does not fit is an error that says how to retrain."""
    from dlas_dse.surrogate.features import SchemaMismatch

    try:
        return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.action](args)
    except (SchemaMismatch, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
