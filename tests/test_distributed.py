"""Data-parallel training with torchrun (gloo on CPU) equals one process on the same batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2s.config import load_config
from s2s.run.checkpoint import load_checkpoint
from s2s.rundir import RunDir
from s2s.training.loop import train
from tests.conftest import config_dict, prepare_run, write_config

REPO = Path(__file__).resolve().parents[1]
# no dropout: each process draws its own dropout masks, one process draws them in sequence
NO_DROPOUT = {"dropout": 0.0, "embed_dropout": 0.0}

pytestmark = pytest.mark.slow  # each test starts processes


def _config(tmp_path: Path, corpus: Path, name: str, cell: str = "lstm",
            **train_settings) -> Path:
    settings = {"max_steps": 6, "valid_every": 3, "batch_tokens": 300, "threads": 1,
                **train_settings}
    model = {**NO_DROPOUT, "cell": cell}
    path = write_config(tmp_path / f"{name}.yaml",
                        config_dict(corpus, tmp_path / name, train=settings, model=model))
    prepare_run(load_config(path))
    return path


def _run(command: list[str]) -> None:
    """Run a launch once. A gloo abort at shutdown ("terminate called without an active
    exception") used to need a second try; since Learner.close drops the DDP wrapper before
    the process group is left, 55 launches in a row ran clean (BENCHMARKS.md, Reliability),
    so the retry is gone and such an abort fails the test with its stderr."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _torchrun(path: Path, *overrides: str) -> None:
    sets = [item for override in overrides for item in ("--set", override)]
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          "-m", "s2s", "train", str(path), *sets])


def _assert_same_weights(first: Path, second: Path) -> None:
    expected = load_checkpoint(RunDir(load_config(first).run_dir).checkpoint("last"))["model"]
    actual = load_checkpoint(RunDir(load_config(second).run_dir).checkpoint("last"))["model"]
    for name in expected:
        assert torch.allclose(expected[name], actual[name], atol=1e-5), name


# the GRU stands for the cells whose step layers are not one nn.Linear
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_processes_equal_one_process_with_the_same_global_batch(demo_corpus: Path,
                                                                    tmp_path: Path,
                                                                    cell: str) -> None:
    single = _config(tmp_path, demo_corpus, "single", cell, accumulate=2)
    train(load_config(single))
    double = _config(tmp_path, demo_corpus, "double", cell, accumulate=1)
    _run([sys.executable, "-m", "s2s", "train", str(double), "--nproc", "2"])
    _assert_same_weights(single, double)
    run_dir = load_config(double).run_dir
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [3, 6]  # rank 0 alone writes
    assert sorted(p.name for p in RunDir(run_dir).checkpoints.glob("step-*.pt")) == [
        "step-00000003.pt", "step-00000006.pt"]


def test_resume_across_process_counts(demo_corpus: Path, tmp_path: Path) -> None:
    reference = _config(tmp_path, demo_corpus, "reference", accumulate=2)
    train(load_config(reference))
    # two processes first, then one
    path = _config(tmp_path, demo_corpus, "two-then-one", accumulate=1)
    _torchrun(path, "train.max_steps=3")
    assert load_checkpoint(RunDir(tmp_path / "two-then-one").checkpoint("last")
                           )["progress"]["step"] == 3
    train(load_config(path, ["train.accumulate=2"]))
    _assert_same_weights(reference, path)
    # one process first, then two
    path = _config(tmp_path, demo_corpus, "one-then-two", accumulate=2)
    train(load_config(path, ["train.max_steps=3"]))
    _torchrun(path, "train.accumulate=1")
    _assert_same_weights(reference, path)


def _two_nodes(paths: tuple[Path, Path], *overrides: str) -> list[subprocess.CompletedProcess]:
    """Two torchrun "nodes" of one process each on this machine, meeting through a c10d
    rendezvous on 127.0.0.1 as two machines would; each trains the config at its path."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sets = [item for override in overrides for item in ("--set", override)]
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=s2s-test",
         "-m", "s2s", "train", str(path), *sets],
        cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in paths]
    results = []
    for node in nodes:
        stdout, stderr = node.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    return results


def test_two_nodes_equal_one_process_and_only_global_rank_0_writes(demo_corpus: Path,
                                                                   tmp_path: Path) -> None:
    single = _config(tmp_path, demo_corpus, "single", accumulate=2)
    train(load_config(single))
    double = _config(tmp_path, demo_corpus, "nodes", accumulate=1, threads=0)
    for result in _two_nodes((double, double)):
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_weights(single, double)
    run_dir = load_config(double).run_dir
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [3, 6]
    assert sorted(p.name for p in RunDir(run_dir).checkpoints.glob("step-*.pt")) == [
        "step-00000003.pt", "step-00000006.pt"]
    assert not list(run_dir.glob(".shared-*"))  # the visibility check cleans up after itself


def test_a_node_that_cannot_see_the_run_directory_stops_every_node(demo_corpus: Path,
                                                                    tmp_path: Path) -> None:
    """The second node's run directory is another folder, as a local disk at the same path
    would be: both stop at once, each with one line that says why."""
    seen = _config(tmp_path, demo_corpus, "shared", accumulate=1)
    elsewhere = _config(tmp_path, demo_corpus, "elsewhere", accumulate=1)
    results = _two_nodes((seen, elsewhere))
    for result in results:
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "cannot see the run directory that process 0 writes" in (
            errors[0]), result.stderr[-3000:]
    for name in ("shared", "elsewhere"):
        assert not (tmp_path / name / "checkpoints").exists()
