"""Extension points: registering the layers stays light, and a device kind is one registration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlas_dse.files import ConfigError
from dlas_dse.registry import Param, Registry
from dlas_dse.stack.devices import DEVICE_KINDS, CatalogueEntry, Device, register_catalogue

HEAVY = ("torch", "tvm", "sklearn", "onnx", "onnxruntime", "torchvision")


@pytest.mark.parametrize("command", [["list"], ["grid", "--study", "quickstart", "--dry-run"]])
def test_listing_and_planning_import_neither_pytorch_nor_tvm(command):
    """Once LLVM's answers for this CPU are remembered (the first run asks TVM)."""
    subprocess.run([sys.executable, "-m", "dlas_dse", *command], capture_output=True, timeout=300, check=True)
    probe = (f"import sys\nfrom dlas_dse.cli import main\nassert main({command!r}) == 0\n"
             f"print('HEAVY', [name for name in {HEAVY!r} if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_list_shows_what_each_layer_and_the_study_may_choose(capsys):
    from dlas_dse.cli import main

    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for heading, line in [("compression.technique:", "  weight_pruning       Global unstructured L1-magnitude"),
                          ("algorithm.conv:", "  winograd             F(m×m, 3×3) Winograd"),
                          ("hardware.device:", "  host-cpu             this machine's CPU"),
                          ("study.sampler:", "  nsga2                NSGA-II")]:
        assert listing.index(heading) < listing.index(line), (heading, listing)
    assert "sparsity, max_layer_sparsity]" in listing and "(local-cpu)" in listing


class _Accelerator(Device):
    """A device kind registered by a test, as a new module would."""


@pytest.fixture
def accelerator_kind():
    @DEVICE_KINDS.register("test-accelerator", traits={"tvm_only": True, "host_threads": False,
                                                       "required": ("driver",)},
                           driver=Param(str, help="the accelerator's driver"))
    def create(entry: CatalogueEntry, threads: int) -> Device:
        return _Accelerator(entry.name, entry.target or {"kind": "llvm"}, threads, entry.description,
                            entry.cores, {"kind": entry.kind, **entry.details}, entry.peak_gflops)

    yield
    del DEVICE_KINDS._entries["test-accelerator"]


def test_a_new_device_kind_is_one_registration(tmp_path, accelerator_kind):
    catalogue = tmp_path / "hardware.yaml"
    catalogue.write_text("devices:\n  npu: {kind: test-accelerator, driver: v1, cores: 1}\n")
    devices = Registry("hardware", "device")
    register_catalogue(devices, catalogue)
    device = devices.get("npu").function(0)
    assert isinstance(device, _Accelerator) and device.details == {"kind": "test-accelerator", "driver": "v1"}
    assert {rule.name for rule in devices.rules} == {"npu-runs-tvm-only", "npu-has-no-host-threads"}

    catalogue.write_text("devices:\n  npu: {kind: test-accelerator, cores: 1}\n")
    with pytest.raises(ConfigError, match="required for kind test-accelerator"):
        register_catalogue(Registry("hardware", "device"), catalogue)
    catalogue.write_text("devices:\n  npu: {kind: test-accelerator, driver: 3}\n")
    with pytest.raises(ConfigError, match="expected str"):
        register_catalogue(Registry("hardware", "device"), catalogue)


@pytest.fixture
def ternary_technique():
    from dlas_dse.registry import COMPRESSIONS

    @COMPRESSIONS.register("test_ternary", traits={"weight_bits": 2, "zeroed_weights": "zeros"},
                           zeros=Param(float, default=0.3, low=0.0, high=0.9, help="share of weights set to zero"))
    def ternary(model, dataset, params, fine_tune):
        return model, {}

    yield
    del COMPRESSIONS._entries["test_ternary"]


def test_a_compression_technique_declares_the_traits_the_surrogate_reads(ternary_technique):
    from dlas_dse.surrogate.descriptors import model_descriptors

    point = {"dataset.name": "digits", "model.architecture": "resnet18", "compression.technique": "test_ternary"}
    descriptors = model_descriptors(point)
    assert descriptors["weight_bits"] == 2 and descriptors["weight_sparsity"] == pytest.approx(0.3)
    assert model_descriptors({**point, "compression.zeros": 0.6})["weight_sparsity"] == pytest.approx(0.6)
    assert model_descriptors({**point, "compression.technique": "none"})["weight_bits"] == 32
