"""What the machine runs fast (src.core.hardware): bf16 only where it is native, and one line where it is asked for
but emulated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from src.core import hardware
from src.core.errors import UserError


@pytest.mark.parametrize("native", [True, False])
def test_default_precision_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    assert hardware.native_precision("cpu") == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize(("major", "native"), [(7, False), (8, True), (9, True)])
def test_a_gpu_gets_bf16_only_from_ampere_on(monkeypatch, major: int, native: bool) -> None:
    """A V100 (7.0) or T4 (7.5) can hold bf16 tensors, which torch's default check counts as support; it emulates
    them, so it gets fp32 and its summaries say bf16_native false."""
    monkeypatch.setattr(hardware.torch.version, "hip", None)
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hardware.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(hardware.torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(hardware.torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # it can hold them
    assert hardware.gpu_has_native_bf16() is native
    assert hardware.native_precision("gpu") == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(False, False), (True, False), (False, True)])
def test_native_bf16_means_the_instructions_not_onednns_emulation(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    """oneDNN says bf16 is supported on any AVX-512 CPU, where it is emulated: the CPU's flags decide."""
    monkeypatch.setattr(hardware.torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(hardware.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    hardware.cpu_has_native_bf16.cache_clear()
    try:
        assert hardware.cpu_has_native_bf16() == (avx512_bf16 or amx)
    finally:
        hardware.cpu_has_native_bf16.cache_clear()


def test_bf16_asked_of_a_cpu_that_emulates_it_gets_one_line_with_the_slowdown(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    message = hardware.emulated_bf16_warning("bf16-mixed", "cpu")
    assert message is not None and "\n" not in message
    assert "no native bf16" in message and "several times slower" in message and "trainer.precision=32-true" in message
    assert hardware.emulated_bf16_warning("32-true", "cpu") is None
    assert hardware.emulated_bf16_warning("bf16-mixed", "cuda") is None
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.emulated_bf16_warning("bf16-mixed", "cpu") is None


@pytest.mark.parametrize(
    ("device", "cuda", "expected"),
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("gpu", True, "cuda")],
)
def test_a_device_name_becomes_the_torch_device(monkeypatch, device: str, cuda: bool, expected: str) -> None:
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: cuda)
    assert hardware.torch_device(device).type == expected


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "device=gpu, but torch sees no CUDA GPU on this machine; use device=cpu (or auto)"),
     ("tpu", "device=tpu is not one of auto, cpu, gpu, cuda")],
)  # fmt: skip
def test_a_device_this_machine_lacks_or_no_one_knows_is_one_line(monkeypatch, device: str, message: str) -> None:
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as error:
        hardware.torch_device(device)
    assert str(error.value) == message
