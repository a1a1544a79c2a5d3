"""The TVM compiler's profile of a model matches PyTorch's own counts."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dlas_dse.stack.compilers import count_macs, deployed_bytes, fold_batchnorm, to_relax
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.models import build_model


@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2"])
def test_macs_and_bytes_of_the_relax_module_match_pytorch(architecture):
    dataset = load_dataset({"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0})
    model = build_model({"architecture": architecture, "seed": 0}, dataset).eval()
    mod = to_relax(model, (1, *dataset.image_shape))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *dataset.image_shape))
    assert count_macs(mod) == counter.get_total_flops() // 2
    folded = fold_batchnorm(model)
    assert deployed_bytes(mod) == 4 * sum(p.numel() for p in folded.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
