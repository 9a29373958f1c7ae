"""Whether bf16 pays on a device.

bf16 halves memory traffic, but on a CPU without bf16 matmul kernels (AVX2-only x86, for example)
PyTorch emulates it, and a bf16 matmul there runs hundreds of times slower than fp32 (measured on
an AVX2 AMD EPYC: 0.33 GFLOP/s in bf16 against 127 in fp32 for a 2048² matmul). So every
`bf16: true` in a config means "bf16 where the device computes it natively": CUDA devices that
support it, and CPUs that advertise bf16 instructions (AVX512_BF16 or AMX-BF16) and whose oneDNN
has bf16 kernels. oneDNN alone is not enough: it also reports bf16 support on AVX-512 CPUs without
those instructions, where it converts every operand to fp32 inside its kernels (measured on an
Intel Xeon with AVX-512F/BW/VL/VNNI but no AVX512_BF16: 58 GFLOP/s for a 2048² bf16 matmul against
196 in fp32, 2 threads). Elsewhere the same run uses fp32, which there is both faster and exact.
`precision_note` says which, for the run's log.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def bf16_native(device_type: str) -> bool:
    """True if `device_type` ("cpu", "cuda", ...) has fast bf16 matmuls."""
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        if not cpu_bf16_instructions():
            return False
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


@functools.cache
def cpu_bf16_instructions() -> bool:
    """True if this CPU advertises bf16 arithmetic instructions (AVX512_BF16 or AMX-BF16; Linux flags).

    oneDNN also reports bf16 support on AVX-512 CPUs without them, where it converts to fp32 inside its
    kernels, so its bf16 results round differently from a native bf16 machine's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = {w for line in fh if line.startswith("flags") for w in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(requested: bool, device: torch.device | str = "cpu") -> bool:
    """Whether a stage that asked for bf16 (`requested`) computes in it on `device`."""
    return bool(requested) and bf16_native(torch.device(device).type)


def precision_note(requested: bool, device: torch.device | str = "cpu") -> str | None:
    """One line for the log when bf16 was asked for but fp32 is used; None otherwise."""
    if requested and not use_bf16(True, device):
        return (
            f"bf16 asked for, but this {torch.device(device).type} has no native bf16 matmul: running in fp32"
        )
    return None
