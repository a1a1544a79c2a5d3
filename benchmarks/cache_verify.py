"""What checking cache entries costs: the full check (sizes + sha256) of every entry a trial reads
(checkpoint, compressed model, the two compiled libraries, the accuracy value) against the time of
the same trial when every stage is a cache hit (the project's default measurement protocol).

A trial of ``--architecture`` (default resnet18, the largest artifacts of the quickstart study;
0 training epochs, the weights do not change the sizes) runs once to fill a fresh cache, then again
with every stage a hit (a new ``ArtifactCache``, as each trial has, so each entry is checked in
full once). Each entry's full check is then timed alone, best of ``--repeats``.

    python benchmarks/cache_verify.py [--architecture resnet18] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import ResultsFile

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.config import settings_with_defaults  # noqa: E402
from dlas_dse.trial import execute  # noqa: E402

SETTINGS = settings_with_defaults({"evaluation": {"max_samples": 48}})
"""The project's default protocol (accuracy on 48 images: computed by the first trial only)."""


def config(architecture: str) -> dict:
    """A one-point configuration: digits at 32x32 with a small training split, untuned TVM."""
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.9,
            "dataset.split_seed": 0, "model.architecture": architecture, "model.epochs": 0,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            "compression.technique": "none", "algorithm.conv": "direct", "software.compiler": "tvm",
            "software.tuning": "untuned", "hardware.device": "host-cpu", "hardware.threads": os.cpu_count()}


def entries_read(attributes: dict, cache: ArtifactCache) -> dict[str, tuple[str, str]]:
    """The entries a trial read: name → (stage, key)."""
    accuracy = [path.name for path in (cache.root / "accuracy").iterdir() if path.is_dir()]
    return {"checkpoint": ("train", attributes["training"]["checkpoint"]),
            "compressed model": ("compress", attributes["compression"]["compressed"]),
            "library (batch 1)": ("build", attributes["build"]["build_key"]),
            "library (evaluation batch)": ("build", attributes["eval_build"]["build_key"]),
            "accuracy value": ("accuracy", accuracy[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5, help="timings of each entry's check (best kept)")
    args = parser.parse_args()
    out = ResultsFile("cache_verify", {}, os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="cache-verify-") as root:
        execute(config(args.architecture), SETTINGS, root)  # fills the cache
        hit_started = time.perf_counter()
        result = execute(config(args.architecture), SETTINGS, root)
        trial_s = time.perf_counter() - hit_started
        attributes = result.attributes
        assert all(attributes["cache_hits"].values()), attributes["cache_hits"]
        cache = ArtifactCache(root)
        entries = {}
        for name, (stage, key) in entries_read(attributes, cache).items():
            seconds = []
            for _ in range(args.repeats):
                begun = time.perf_counter()
                assert cache.problem(stage, key) is None
                seconds.append(time.perf_counter() - begun)
            size = sum(item["size"] for item in cache.metadata(cache.path(stage, key))["files"].values())
            entries[name] = {"stage": stage, "bytes": size, "check_s": min(seconds),
                             "mb_per_s": size / 1e6 / min(seconds)}
    check_s = sum(entry["check_s"] for entry in entries.values())
    out.results.update({"architecture": args.architecture, "entries": entries, "check_s": check_s,
                        "all_hit_trial_s": trial_s, "share_of_trial": check_s / trial_s,
                        "stage_s": {k: v for k, v in attributes.items() if k.startswith("time_") and k.endswith("_s")}})
    path = out.save()
    for name, entry in entries.items():
        print(f"{name:<28} {entry['bytes'] / 1e6:8.2f} MB  check {entry['check_s'] * 1e3:7.1f} ms")
    print(f"all checks {check_s * 1e3:.1f} ms = {100 * check_s / trial_s:.2f}% of the all-hit trial "
          f"({trial_s:.2f} s); saved {path}")


if __name__ == "__main__":
    main()
