"""The commands about this machine and project: ``list``, ``devices`` and ``cache``."""

from __future__ import annotations

import argparse
import sys


def add_parsers(commands) -> None:
    """Add ``list``, ``devices`` and ``cache`` to the CLI's sub-commands."""
    commands.add_parser(
        "list", help="list the available studies, search spaces, each layer's techniques and the samplers",
        description="The studies and search spaces by name, then what a space file may choose in each DLAS layer "
                    "(its block's selector, e.g. compression.technique) with each entry's own parameters, and "
                    "the samplers a study file may name. hardware.device lists the catalogue's names; "
                    "`python -m dlas_dse devices` says which can be reached now.").set_defaults(run=_list)


    devices = commands.add_parser(
        "devices", help="list the hardware catalogue, which devices are reachable now, and their peaks",
        description="The devices of search_spaces/hardware.yaml: kind, target, whether each can be used now "
                    "(local checks; for RPC boards the tracker's queue under the device's key), and the "
                    "measured float32 peak where known.")
    devices.add_argument("--measure-peak", action="store_true",
                         help="measure the local CPU's peak now (float32 GEMM, a few seconds) if not cached")
    devices.set_defaults(run=_devices)
    cache = commands.add_parser(
        "cache", help="check the artifact cache: `cache verify [--repair]`",
        description="Every cache entry (checkpoint, compressed model, compiled library, cached value, tuning "
                    "database) records the size and sha256 of its files when written. Trials check them before "
                    "use and rebuild a corrupt entry by themselves; `cache verify` checks the whole cache now.")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check every entry; exit code 1 if one is corrupt (unless --repair)",
        description="Check every entry of the artifact cache, tuning databases included, against the digests "
                    "recorded when it was written, and print each corrupt one with the reason. Exit code 1 if "
                    "any is corrupt. --repair moves them to <cache>/.corrupt/<stage>-<key>-<time>/ (with "
                    "reason.txt) instead, and the next trial that needs one rebuilds it. Safe while studies run: "
                    "each entry is checked under its lock.")
    verify.add_argument("--repair", action="store_true", help="move corrupt entries aside (exit code 0)")
    verify.add_argument("--cache", metavar="DIR", help="the cache folder (default: $DLAS_CACHE_DIR or results/cache)")
    cache.set_defaults(run=_cache)


def _list(args: argparse.Namespace) -> int:
    from dlas_dse.config import available

    for folder, title in (("studies", "studies (python -m dlas_dse optimize --study NAME)"),
                          ("search_spaces", "search spaces")):
        print(f"{title}:")
        for name, description in available(folder):
            print(f"  {name:<20} {description}")
    for registry in _choices():
        print(f"{registry.layer}.{registry.selector}:")
        for name in registry.names():
            entry = registry.get(name)
            own = f" [{', '.join(entry.params)}]" if entry.params else ""
            print(f"  {name:<20} {_first_sentence(entry.traits.get('description') or entry.function.__doc__)}{own}")
    return 0


def _first_sentence(text: str | None) -> str:
    """The first sentence of a docstring or description, on one line."""
    words = " ".join((text or "").split())
    end = words.find(". ")
    return words[:end + 1] if end >= 0 else words


def _choices() -> list:
    """Every registry a study or space file chooses from: the six layers, then the samplers."""
    from dlas_dse.config import space  # noqa: F401  (importing it fills the layer registries)
    from dlas_dse.registry import LAYERS
    from dlas_dse.samplers import SAMPLERS

    return [*LAYERS.values(), SAMPLERS]


def _devices(args: argparse.Namespace) -> int:
    from dlas_dse.cache import ArtifactCache
    from dlas_dse.config import default_cache_dir
    from dlas_dse.registry import DEVICES
    from dlas_dse.stack.devices import catalogue_path, create_device

    cache = ArtifactCache(default_cache_dir())
    print(f"hardware catalogue {catalogue_path()}")
    width = max(12, *(len(name) for name in DEVICES.names()))
    for name in DEVICES.names():
        device = create_device({"device": name, "threads": 0})
        usable, why = device.status()
        peak = device.peak(cache, measure=args.measure_peak)
        print(f"  {name:<{width}} {device.kind:<13} {'ready' if usable else 'NOT REACHABLE':<13} {why}")
        print(f"  {'':<{width}} target {device.target}")
        print(f"  {'':<{width}} peak " + (f"{peak['gflops']:.1f} GFLOP/s at {device.threads} threads ({peak['method']})"
                                     if peak else "unknown" + (" (measure: --measure-peak)"
                                                               if device.details["kind"] == "local-cpu" else "")))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlas_dse.cache_verify import describe, verify_cache
    from dlas_dse.config import default_cache_dir

    root = Path(args.cache or default_cache_dir())
    if not root.is_dir():
        print(f"error: no artifact cache at {root}; give its folder with --cache DIR (or set DLAS_CACHE_DIR)",
              file=sys.stderr)
        return 2
    checked, findings = verify_cache(root, repair=args.repair)
    print(describe(root, checked, findings, args.repair))
    return 1 if findings and not args.repair else 0
