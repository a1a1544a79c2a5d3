"""The accuracy a user should expect from the training recipe, per model, epochs and recipe variant.

Trains each model (the project's `trained_model`: SGD with Nesterov momentum, weight decay, the
schedule and augmentation named) on CIFAR-10 where its files are in the data directory, else on
digits, and reports the top-1 accuracy of the eval-mode PyTorch model on the whole validation split
(CIFAR-10: the 10,000 test images) for two seeds, so the spread between repeats is shown. The
compiled artifacts a study deploys are checked against this PyTorch model, so their accuracy is
the same up to the precision's tolerance.

    python benchmarks/recipe.py [--dataset cifar10] [--models resnet18 mobilenet_v2] [--epochs 2 8]
        [--variants one-cycle cosine crop-flip] [--seeds 0 1] [--name recipe]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from common import ROOT, ResultsFile, succeeded

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.datasets import DatasetError, check_cifar10, load_dataset  # noqa: E402
from dlas_dse.stack.models import augmentation, trained_model  # noqa: E402

DATASETS = {"cifar10": {"name": "cifar10", "download": False, "train_samples": 50000, "val_samples": 10000,
                        "split_seed": 0},
            "digits": {"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0}}
VARIANTS = {"one-cycle": {"schedule": "one-cycle", "augmentation": "auto"},
            "cosine": {"schedule": "cosine", "augmentation": "auto"},
            "no-augmentation": {"schedule": "one-cycle", "augmentation": "none"},
            "crop-flip": {"schedule": "one-cycle", "augmentation": "crop-flip"}}


def available_dataset(wanted: str | None) -> str:
    """CIFAR-10 where its files are present (or asked for), else digits."""
    if wanted:
        return wanted
    try:
        check_cifar10({"dataset": DATASETS["cifar10"]})
        return "cifar10"
    except DatasetError:
        return "digits"


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the eval-mode model over every image."""
    with torch.no_grad():
        predictions = torch.cat([model(torch.from_numpy(images[i:i + 256])).argmax(1)
                                 for i in range(0, len(images), 256)])
    return float((predictions.numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), help="default: cifar10 where present, else digits")
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[2, 8])
    parser.add_argument("--variants", nargs="+", default=["one-cycle", "cosine"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--cache", default=str(ROOT / "results" / "cache"))
    parser.add_argument("--name", default="recipe", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    name = available_dataset(args.dataset)
    dataset_params = DATASETS[name]
    dataset = load_dataset(dataset_params)
    cache = ArtifactCache(args.cache)
    rows: dict = {}
    out = ResultsFile(args.name, {"dataset": name, "train_images": len(dataset.train_y),
                                  "validation_images": len(dataset.val_y), "rows": rows}, os.cpu_count())

    def run(architecture: str, epochs: int, variant: str, seed: int) -> dict:
        params = {"architecture": architecture, "epochs": epochs, "learning_rate": args.learning_rate,
                  "batch_size": 64, "seed": seed, "weights": "", "weight_decay": 5e-4, **VARIANTS[variant]}
        started = time.perf_counter()
        model, record = trained_model(params, dataset, dataset_params, cache)
        row = {"model": architecture, "epochs": epochs, "variant": variant, "seed": seed,
               "augmentation": augmentation(params, dataset), "schedule": params["schedule"],
               "accuracy": accuracy(model, dataset.val_x, dataset.val_y), "train_accuracy": record["train_accuracy"],
               "train_seconds": record["train_seconds"], "cached": record["hit"],
               "wall_seconds": time.perf_counter() - started}
        print(f"{architecture:<13} {epochs:>3} epochs {variant:<16} seed {seed}: accuracy {row['accuracy']:.3f} "
              f"(train {row['train_accuracy']:.3f}, {row['train_seconds']:.0f} s)", flush=True)
        return row

    for architecture in args.models:
        for epochs in args.epochs:
            for variant in args.variants:
                for seed in args.seeds:
                    out.attempt(rows, f"{architecture} {epochs} {variant} {seed}",
                                lambda a=architecture, e=epochs, v=variant, s=seed: run(a, e, v, s))
    path = out.save()
    measured = succeeded(rows)
    print(f"\n{name}: {len(dataset.train_y)} training, {len(dataset.val_y)} validation images\n"
          "| model | epochs | recipe | accuracy (seeds) | spread |\n|---|---|---|---|---|")
    for architecture in args.models:
        for epochs in args.epochs:
            for variant in args.variants:
                scores = [r["accuracy"] for r in measured.values()
                          if (r["model"], r["epochs"], r["variant"]) == (architecture, epochs, variant)]
                if scores:
                    print(f"| {architecture} | {epochs} | {variant} | {', '.join(f'{s:.3f}' for s in scores)} | "
                          f"{max(scores) - min(scores):.3f} |")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
