"""The pytorch and onnxruntime compilers run the same trials as tvm: they match PyTorch, give
the same accuracy and MACs, and the built-in rules keep out what they cannot deploy."""

from __future__ import annotations

import pytest

from dlas_dse.config import ConfigError, load_space, settings_with_defaults
from dlas_dse.objectives import OBJECTIVES
from dlas_dse.trial import TrialResult, execute

SETTINGS = settings_with_defaults({
    "evaluation": {"batch_size": 16, "max_samples": 32},
    "measurement": {"warmup_runs": 1, "min_repeats": 3, "max_repeats": 10, "min_time_s": 0.05},
    "verification": {"samples": 4, "tolerance": 1e-3}})
ONE_IMAGE = 1 / SETTINGS["evaluation"]["max_samples"]


def _config(compiler: str, technique: str = "none") -> dict:
    calibration = {"compression.calibration_images": 256} if technique == "int8" else {}
    tuning = {"software.tuning": "untuned"} if compiler == "tvm" else {}
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2,
            "dataset.split_seed": 0, "model.architecture": "mobilenet_v2", "model.epochs": 1,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            "compression.technique": technique, **calibration, "algorithm.conv": "direct",
            "algorithm.layout": "NCHW", "algorithm.format": "dense", "software.compiler": compiler, **tuning,
            "hardware.device": "host-cpu", "hardware.threads": 2}


@pytest.fixture(scope="module")
def tvm_fp32(shared_cache) -> TrialResult:
    return execute(_config("tvm"), SETTINGS, str(shared_cache))


@pytest.mark.slow
@pytest.mark.parametrize("compiler", ["pytorch", "onnxruntime"])
def test_fp32_matches_pytorch_and_tvm(compiler, tvm_fp32, shared_cache):
    result = execute(_config(compiler), SETTINGS, str(shared_cache))
    attrs, values = result.attributes, result.values
    assert values.keys() == OBJECTIVES.keys()
    assert attrs["verification"]["top1_agreement"] == 1.0
    assert attrs["verification"]["max_abs_error"] <= attrs["verification"]["allowed_error"]
    assert values["accuracy"] == pytest.approx(tvm_fp32.values["accuracy"], abs=ONE_IMAGE)
    assert attrs["macs"] == attrs["eval_build"]["macs"] == tvm_fp32.attributes["macs"]
    assert values["size_bytes"] == tvm_fp32.values["size_bytes"]  # the same float32 parameters
    assert values["latency_ms"] > 0 and attrs["build"]["build_key"] != attrs["eval_build"]["build_key"]
    again = execute(_config(compiler), SETTINGS, str(shared_cache)).attributes
    assert again["cache_hits"]["build"] and again["build"]["build_key"] == attrs["build"]["build_key"]


@pytest.mark.slow
def test_onnxruntime_int8_quantizes_within_its_tolerance(tvm_fp32, shared_cache):
    result = execute(_config("onnxruntime", "int8"), SETTINGS, str(shared_cache))
    attrs, values = result.attributes, result.values
    build, fp32_bytes = attrs["build"], tvm_fp32.values["size_bytes"]
    assert build["verified_against"] == "float32" and build["deployed"] == "model.int8.onnx"
    assert attrs["verification"]["max_abs_error"] <= attrs["verification"]["allowed_error"]
    assert attrs["accuracy_first_batch_check"]["max_abs_error"] <= attrs["accuracy_first_batch_check"]["allowed_error"]
    assert fp32_bytes / 4 < values["size_bytes"] < fp32_bytes / 3  # 1 byte per weight + scales, int32 biases
    # every convolution and the classifier on ORT's integer kernels (int8 activations left 15 in float)
    assert build["int8_layers"] == 53 and build["float_layers"] == 0
    assert attrs["macs"] == tvm_fp32.attributes["macs"]
    assert values["accuracy"] == pytest.approx(tvm_fp32.values["accuracy"], abs=0.07)


SPACE = """\
dataset:
  name: digits
model:
  architecture: mobilenet_v2
compression:
  technique: {technique}
algorithm:
  conv: {conv}
software:
  compiler: {compiler}
"""


@pytest.mark.parametrize("compiler,technique,conv,rule,reason", [
    ("pytorch", "int8", "direct", "rule:pytorch-has-no-int8", "use compiler tvm or onnxruntime"),
    ("onnxruntime", "none", "gemm", "rule:layer-4-needs-tvm", "layer-4 algorithms apply only to the tvm compiler"),
])
def test_built_in_rules_reject_what_a_compiler_cannot_deploy(project, compiler, technique, conv, rule, reason):
    path = project.write("search_spaces", "bad", SPACE.format(compiler=compiler, technique=technique, conv=conv))
    with pytest.raises(ConfigError) as caught:
        load_space(str(path))
    assert caught.value.field == "constraints"
    assert f"built-in {rule}: " in str(caught.value) and reason in str(caught.value)


def test_rules_keep_only_the_deployable_combinations(project):
    space = load_space(str(project.write("search_spaces", "mixed", SPACE.format(
        compiler="{choices: [tvm, pytorch, onnxruntime]}", technique="{choices: [none, int8]}",
        conv="{choices: [direct, gemm]}"))))
    grid = {(c["software.compiler"], c["compression.technique"], c["algorithm.conv"]) for c in space.grid()}
    assert grid == {("tvm", t, conv) for t in ("none", "int8") for conv in ("direct", "gemm")} | {
        ("pytorch", "none", "direct"), ("onnxruntime", "none", "direct"), ("onnxruntime", "int8", "direct")}
