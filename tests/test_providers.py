import pytest

from serve.runtime.providers import CPU, CUDA, TENSORRT, ProviderPlan, check_session_providers, plan_providers

ALL = [TENSORRT, CUDA, CPU]


def test_cpu_machine_gets_cpu_only_with_threads_matching_cpus():
    plan = plan_providers("auto", gpu_ids=[], num_cpus=2, available=ALL)
    assert plan.names == [CPU] and plan.intra_op_threads == 2 and not plan.uses_gpu


def test_fractional_cpu_still_gets_one_thread():
    assert plan_providers("auto", [], 0.5, [CPU]).intra_op_threads == 1


def test_gpu_replica_orders_tensorrt_cuda_cpu():
    plan = plan_providers("auto", gpu_ids=[3], num_cpus=1, available=ALL, tensorrt_present=True)
    assert plan.names == [TENSORRT, CUDA, CPU]
    assert plan.providers[1][1] == {"device_id": 0}


def test_gpu_without_tensorrt_libraries_skips_it():
    assert plan_providers("auto", [0], 1, ALL, tensorrt_present=False).names == [CUDA, CPU]


def test_cpu_requested_on_gpu_replica():
    assert plan_providers("cpu", [0], 1, ALL).names == [CPU]


def test_fp16_on_cuda_converts_the_graph_and_tensorrt_uses_its_flag():
    assert plan_providers("cuda", [0], 1, ALL, precision="fp16").half_precision_model
    assert not plan_providers("tensorrt", [0], 1, ALL, precision="fp16", tensorrt_present=True).half_precision_model
    assert not plan_providers("auto", [0], 1, ALL).half_precision_model


def test_fp16_enables_tensorrt_half_precision():
    plan = plan_providers("tensorrt", [0], 1, ALL, precision="fp16", tensorrt_present=True)
    assert plan.providers[0] == (TENSORRT, {"device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True})


@pytest.mark.parametrize(
    "requested, gpus, available, precision, message",
    [
        ("cuda", [], ALL, "fp32", "needs a GPU"),
        ("cuda", [0], [CPU], "fp32", "needs a GPU"),
        ("tensorrt", [0], [CUDA, CPU], "fp32", "TensorRT"),
        ("auto", [], ALL, "fp16", "fp16"),
    ],
)
def test_impossible_requests_fail_loudly(requested, gpus, available, precision, message):
    with pytest.raises(RuntimeError, match=message):
        plan_providers(requested, gpus, 1, available, precision)


def test_silent_fallback_is_an_error_only_when_gpu_was_demanded():
    plan = ProviderPlan([(CUDA, {}), (CPU, {})], 1)
    check_session_providers(plan, [CPU], "auto")  # warns only
    with pytest.raises(RuntimeError, match="fell back"):
        check_session_providers(plan, [CPU], "cuda")


@pytest.mark.parametrize("spin_wait", [False, True])
def test_sessions_spin_only_when_the_config_says_so(spin_wait):
    """The replica's session carries the model's spin_wait (default off: the cores are shared)."""
    from pathlib import Path

    from serve.config import ModelDeployment
    from serve.runtime.inference import create_session

    assert ModelDeployment(name="m").spin_wait is False
    model = next(Path(__file__).resolve().parent.parent.glob("models/*/*/model.onnx"))
    session = create_session(str(model), ProviderPlan([(CPU, {})], 1), "cpu", spin_wait=spin_wait)
    entry = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == ("1" if spin_wait else "0")
