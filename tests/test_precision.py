"""bf16 only where the device computes it natively (rmtension.model.precision)."""

from __future__ import annotations

import torch

from rmtension.model import precision
from rmtension.model.scoring import autocast
from tiny import tiny_causal_lm


def _native(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda device_type: value)


def test_autocast_is_bf16_only_where_native(monkeypatch):
    x = torch.randn(3, 4)
    w = torch.randn(4, 2)
    _native(monkeypatch, True)
    with autocast(True, "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    _native(monkeypatch, False)
    with autocast(True, "cpu"):
        assert (x @ w).dtype == torch.float32
    with autocast(False, "cpu"):
        assert (x @ w).dtype == torch.float32


def test_precision_note_names_the_fallback(monkeypatch):
    _native(monkeypatch, False)
    assert "fp32" in precision.precision_note(True, "cpu")
    assert precision.precision_note(False, "cpu") is None
    _native(monkeypatch, True)
    assert precision.precision_note(True, "cpu") is None


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        return {w for line in fh if line.startswith("flags") for w in line.split()}


def test_bf16_native_needs_onednn_and_the_cpu_instructions():
    precision.bf16_native.cache_clear()
    precision.cpu_bf16_instructions.cache_clear()
    has_instructions = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.cpu_bf16_instructions() is has_instructions
    assert precision.bf16_native("cpu") is (has_instructions and onednn)
    assert precision.bf16_native("meta") is False


def test_trunk_cache_stores_bf16_only_where_native(monkeypatch):
    from rmtension.model.trunk import compute_trunk

    model = tiny_causal_lm("llama", layers=2)
    seqs = [[1, 2, 3], [4, 5]]
    _native(monkeypatch, False)
    assert {h.dtype for h in compute_trunk(model, seqs, 1, 0, bf16=True)} == {torch.float32}
    _native(monkeypatch, True)
    assert {h.dtype for h in compute_trunk(model, seqs, 1, 0, bf16=True)} == {torch.bfloat16}
