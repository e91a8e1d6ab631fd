"""Threads and precision: chosen per command, restored afterwards, refused when unsupported."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

import s2s.device
from s2s.config import DecodeConfig, load_config
from s2s.device import (
    autocast,
    check_precision,
    decode_dtype,
    resolve_precision,
    resolve_threads,
    thread_scope,
)
from s2s.errors import DeviceError
from s2s.run.checkpoint import load_checkpoint
from s2s.training.loop import train
from tests.conftest import TEST_THREADS, config_dict, prepare_run, write_config


def test_threads_zero_shares_the_cores_among_the_processes_on_this_machine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s2s.device, "available_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_threads(0) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node=4
    assert resolve_threads(0) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert resolve_threads(0) == 1
    assert resolve_threads(3) == 3  # an explicit count is taken as it is


def test_thread_scope_restores_the_count_even_after_an_error() -> None:
    with pytest.raises(RuntimeError):
        with thread_scope(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == TEST_THREADS


def test_training_leaves_threads_signals_and_random_streams_as_it_found_them(
        demo_corpus: Path, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", config_dict(
        demo_corpus, tmp_path / "run", train={"threads": 1, "max_steps": 2, "valid_every": 2})))
    prepare_run(config)
    handlers = {number: signal.getsignal(number)
                for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    train(config)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream, untouched
    assert torch.get_num_threads() == TEST_THREADS
    assert {number: signal.getsignal(number) for number in handlers} == handlers


def test_bf16_where_the_cpu_has_no_bf16_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """On AVX2-only CPUs torch's bf16 LSTM fails inside oneDNN: refuse it in one line, and
    decode a bf16-trained model in fp32 when asked for auto (and int8 does not pay)."""
    monkeypatch.setattr(s2s.device, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr("s2s.device.cpu_supports_bf16", lambda: False)
    cpu = torch.device("cpu")
    with pytest.raises(DeviceError, match="train.precision: bf16 needs a CPU with AVX-512 "
                                          "BF16 or AMX.*use --set train.precision=fp32"):
        check_precision(cpu, "bf16", "train.precision")
    check_precision(cpu, "fp32", "train.precision")
    assert decode_dtype(DecodeConfig(precision="auto"), "bf16", cpu, 64) == torch.float32
    with pytest.raises(DeviceError, match="decode.precision: bf16"):
        decode_dtype(DecodeConfig(precision="bf16"), "fp32", cpu, 512)
    with pytest.raises(DeviceError, match="fp16 needs CUDA"):
        check_precision(cpu, "fp16", "train.precision")


def test_auto_precision_is_bf16_only_where_the_device_has_bf16_kernels(
        monkeypatch: pytest.MonkeyPatch, demo_corpus: Path, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(s2s.device, "cpu_supports_bf16", lambda: supported)
        assert resolve_precision(cpu, "auto") == expected
        assert resolve_precision(cpu, "fp32") == "fp32"
    # from here on, a CPU without bf16 kernels
    monkeypatch.setattr("s2s.device.cpu_supports_bf16", lambda: False)
    with autocast(cpu, resolve_precision(cpu, "auto")):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="resolve it first"):
        autocast(cpu, "auto")

    config = load_config(write_config(tmp_path / "c.yaml", config_dict(
        demo_corpus, tmp_path / "run",
        train={"precision": "auto", "max_steps": 2, "valid_every": 2})))
    prepare_run(config)
    train(config)
    stored = load_checkpoint(config.run_dir / "checkpoints" / "last.pt")["config"]
    assert stored["train"]["precision"] == "fp32"  # what auto became, for decoding and resume
