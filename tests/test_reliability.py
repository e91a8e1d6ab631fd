"""Bad input gets one clear line and a non-zero exit; interrupted work resumes; nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import Config, config_from_dict, load_config
from s2s.errors import CheckpointError
from s2s.run.checkpoint import load_checkpoint
from s2s.run.lock import RunLock
from s2s.rundir import RunDir
from s2s.training.loop import train
from tests.conftest import config_dict, prepare_run, write_config

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _one_error_line(result, exit_code: int, fragment: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def corpus(demo_corpus: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_corpus, tmp_path / "corpus"))


def _config_file(tmp_path: Path, corpus: Path, **sections) -> Path:
    return write_config(tmp_path / "config.yaml", config_dict(corpus, tmp_path / "run",
                                                              **sections))


CONFIG_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing": (lambda p: "", "config file not found"),
    "not YAML": (lambda p: "data: [oops\n", "not valid YAML"),
    "not a mapping": (lambda p: "- a\n- b\n", "must be a YAML mapping"),
    "unknown key": (lambda p: p.read_text() + "extra: 1\n", "extra: unknown key"),
    "wrong type": (lambda p: p.read_text().replace("max_steps: 20", "max_steps: many"),
                   "train.max_steps: expected an integer, got string 'many'"),
    "out of range": (lambda p: p.read_text().replace("beam_size: 3", "beam_size: 0"),
                     "decode.beam_size: must be at least 1, got 0"),
    "contradictory": (lambda p: p.read_text().replace("beam_size: 3", "beam_size: 3\n  nbest: 4"),
                      "decode.nbest: 4 is larger than decode.beam_size (3)"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_problems_exit_2_with_one_line(case: str, tmp_path: Path, demo_corpus: Path
                                              ) -> None:
    path = _config_file(tmp_path, demo_corpus)
    make_text, fragment = CONFIG_CASES[case]
    text = make_text(path)
    if text:
        path.write_text(text, encoding="utf-8")
    else:
        path.unlink()
    _one_error_line(runner.invoke(app, ["prepare", str(path)]), 2, fragment)


def _break_data(corpus: Path, case: str, monkeypatch) -> str:
    """Damage the corpus as ``case`` says; return a fragment the error must contain."""
    target = corpus / "valid.de"
    if case == "missing":
        target.unlink()
        return "valid.de: data file not found"
    if case == "empty":
        target.write_text("", encoding="utf-8")
        return "valid.de: data file is empty"
    if case == "directory":
        target.unlink()
        target.mkdir()
        return "valid.de: is a directory"
    if case == "unreadable":
        real_read = Path.read_bytes

        def refuse(path: Path) -> bytes:
            if path == target:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_read(path)
        monkeypatch.setattr(Path, "read_bytes", refuse)
        return "valid.de: cannot read: Permission denied"
    if case == "line counts":
        target.write_text(target.read_text(encoding="utf-8") + "Noch eine.\n", encoding="utf-8")
        return "valid.en has 60 lines but"
    if case == "invalid UTF-8":
        target.write_bytes(target.read_bytes().replace(b"Der", b"D\xe9r", 1))
        return "invalid UTF-8"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "unreadable", "line counts",
                                  "invalid UTF-8"])
def test_data_problems_exit_2_with_one_line(case: str, corpus: Path, tmp_path: Path,
                                            monkeypatch) -> None:
    fragment = _break_data(corpus, case, monkeypatch)
    result = runner.invoke(app, ["prepare", str(_config_file(tmp_path, corpus))])
    _one_error_line(result, 2, fragment)


def test_empty_after_filtering_and_vocabulary_too_large(corpus: Path, tmp_path: Path) -> None:
    path = _config_file(tmp_path, corpus, data={"max_chars": 2})
    _one_error_line(runner.invoke(app, ["prepare", str(path)]), 2,
                    "no training pairs left after filtering")
    path = _config_file(tmp_path, corpus, vocab={"tgt_size": 90000})
    _one_error_line(runner.invoke(app, ["prepare", str(path)]), 2,
                    "vocabulary size 90000 is larger than the training data allows")


def test_run_directory_not_writable(corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    path = write_config(tmp_path / "c.yaml", config_dict(corpus, blocker / "run"))
    _one_error_line(runner.invoke(app, ["prepare", str(path)]), 2,
                    "cannot create the run directory")


def test_train_on_data_prepared_for_other_settings(corpus: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["prepare", str(_config_file(tmp_path, corpus))]).exit_code == 0
    changed = _config_file(tmp_path, corpus, data={"max_chars": 500})
    _one_error_line(runner.invoke(app, ["train", str(changed)]), 2,
                    "prepared data no longer matches the config")


def test_translate_with_another_runs_checkpoint(trained_run: Path, corpus: Path,
                                                tmp_path: Path) -> None:
    other = _config_file(tmp_path, corpus, vocab={"src_size": 380, "tgt_size": 380})
    assert runner.invoke(app, ["prepare", str(other)]).exit_code == 0
    foreign = RunDir(load_config(trained_run).run_dir).checkpoint("best")
    result = runner.invoke(app, ["translate", str(other), "--checkpoint", str(foreign)],
                           input="A dog.\n")
    _one_error_line(result, 1, "vocabulary is not the one of the run")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not s2s"])
def test_damaged_checkpoints_are_refused(trained_run: Path, tmp_path: Path, damage: str) -> None:
    source = RunDir(load_config(trained_run).run_dir).checkpoint("best")
    broken = tmp_path / "broken.pt"
    if damage == "truncated":
        broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif damage == "garbage":
        broken.write_bytes(os.urandom(4096))
    else:
        torch.save({"weights": torch.zeros(3)}, broken)
    result = runner.invoke(app, ["translate", "--run", str(tmp_path), "--checkpoint",
                                 str(broken)], input="x\n")
    fragment = "not an s2s checkpoint" if damage == "not s2s" else "not a readable s2s checkpoint"
    _one_error_line(result, 1, fragment)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pt"
    with open(path, "wb") as stream:
        pickle.dump({"format": "s2s-checkpoint-1", "payload": exploit}, stream, protocol=2)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)
    result = runner.invoke(app, ["translate", "--run", str(tmp_path), "--checkpoint", str(path)],
                           input="x\n")
    _one_error_line(result, 1, "refused for safety")
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run), "--device", "cuda"], input="x\n")
    _one_error_line(result, 1, "CUDA is not available")
    result = runner.invoke(app, ["train", str(trained_run), "--set", "train.device=cuda:1"])
    _one_error_line(result, 1, "device 'cuda:1' was requested but CUDA is not available")


def test_second_train_on_the_same_run_is_refused(trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    with RunLock(run_dir):
        result = runner.invoke(app, ["train", str(trained_run), "--set", "train.max_steps=200"])
    _one_error_line(result, 1, f"another s2s train (PID {os.getpid()}) is already using")


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
        demo_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    config = config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                          train={"max_steps": 4, "valid_every": 2}))
    prepare_run(config)
    train(config, should_stop=lambda p: p.step == 2)
    last = RunDir(config.run_dir).checkpoint("last")
    before = last.read_bytes()
    real_save = torch.save

    def full_disk(payload, stream, *args, **kwargs):
        real_save(payload, stream, *args, **kwargs)
        stream.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("s2s.run.checkpoint.torch.save", full_disk)
    with pytest.raises(CheckpointError, match="cannot write checkpoint: No space left on device"):
        train(config)
    assert last.read_bytes() == before
    assert load_checkpoint(last)["progress"]["step"] == 2
    assert not list(RunDir(config.run_dir).checkpoints.glob(".*.tmp"))


def _train_process(config_path: Path, log: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "s2s", "train", str(config_path)],
                            cwd=REPO, env=environment, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunDir(run_dir).checkpoint("last"))["model"]


def _last_step(directory: Path) -> int:
    try:
        return load_checkpoint(directory / "last.pt")["progress"]["step"]
    except CheckpointError:
        return -1


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(
        demo_corpus: Path, tmp_path: Path) -> None:
    # a checkpoint every 4 steps, so kills land in writes too; six kills take some 60 steps
    sections = {"train": {"max_steps": 200, "valid_every": 4, "batch_tokens": 300,
                          "threads": 1}, "model": {"dropout": 0.2}}
    straight_path = write_config(tmp_path / "straight.yaml",
                                 config_dict(demo_corpus, tmp_path / "straight", **sections))
    straight = load_config(straight_path)
    prepare_run(straight)
    # the uninterrupted run trains on the other core meanwhile (one thread each)
    uninterrupted = _train_process(straight_path, tmp_path / "straight.log")
    path = write_config(tmp_path / "killed.yaml",
                        config_dict(demo_corpus, tmp_path / "killed", **sections))
    killed = load_config(path)
    prepare_run(killed)
    directory = RunDir(killed.run_dir).checkpoints
    chance = random.Random(1234)
    steps_seen, torn_writes = [], 0
    for _ in range(6):
        process = _train_process(path, tmp_path / "train.log")
        before, deadline = _last_step(directory), time.monotonic() + 120
        while _last_step(directory) <= before and process.poll() is None:
            assert time.monotonic() < deadline, "no progress after a restart"
            time.sleep(0.02)
        time.sleep(chance.uniform(0.0, 0.4))  # anywhere: a step, a validation, a save
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        torn_writes += len(list(directory.glob(".*.tmp")))
        for checkpoint in directory.glob("*.pt"):
            load_checkpoint(checkpoint)  # every checkpoint on disk loads
        steps_seen.append(_last_step(directory))
    assert len(steps_seen) >= 4, "training finished before the kills"
    assert steps_seen == sorted(steps_seen), f"step went backwards: {steps_seen}"
    final = _train_process(path, tmp_path / "train.log")
    assert final.wait(timeout=300) == 0, (tmp_path / "train.log").read_text()[-2000:]
    assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-2000:]
    expected, actual = _final_weights(straight.run_dir), _final_weights(killed.run_dir)
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, (f"after {len(steps_seen)} kills the weights differ from the "
                           f"uninterrupted run in {different}")
    print(f"kills survived: {len(steps_seen)}, of them during a checkpoint write: "
          f"{torn_writes}; last checkpoint step after each kill: {steps_seen}")


DIE_IN_THIRD_SAVE = """
import os, signal, sys, torch
real_save, saves = torch.save, []
def dying_save(payload, stream, *args, **kwargs):
    saves.append(1)
    real_save(payload, stream, *args, **kwargs)
    if len(saves) == 3:  # the third checkpoint: half written, then the process dies
        stream.flush()
        stream.truncate(stream.tell() // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
from s2s.cli import main
sys.argv = ["s2s", "train", sys.argv[1]]
main()
"""


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_loses_nothing(demo_corpus: Path,
                                                         tmp_path: Path) -> None:
    sections = {"train": {"max_steps": 20, "valid_every": 4, "batch_tokens": 300}}
    straight = config_from_dict(config_dict(demo_corpus, tmp_path / "straight", **sections))
    prepare_run(straight)
    train(straight)
    path = write_config(tmp_path / "c.yaml", config_dict(demo_corpus, tmp_path / "run",
                                                         **sections))
    config = load_config(path)
    prepare_run(config)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    died = subprocess.run([sys.executable, "-c", DIE_IN_THIRD_SAVE, str(path)], cwd=REPO,
                          env=environment, capture_output=True, timeout=300)
    assert died.returncode == -signal.SIGKILL
    directory = RunDir(config.run_dir).checkpoints
    assert len(list(directory.glob(".*.tmp"))) == 1  # the torn write, never renamed
    assert _last_step(directory) == 8  # the second checkpoint is intact
    final = _train_process(path, tmp_path / "train.log")
    assert final.wait(timeout=300) == 0
    assert not list(directory.glob(".*.tmp"))
    expected, actual = _final_weights(straight.run_dir), _final_weights(config.run_dir)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number,exit_code", [(signal.SIGINT, 130),
                                                     (signal.SIGTERM, 143),
                                                     (signal.SIGHUP, 129)])
def test_sigint_sigterm_and_sighup_save_and_exit_cleanly(demo_corpus: Path, tmp_path: Path,
                                                         signal_number: int,
                                                         exit_code: int) -> None:
    """SIGHUP is a closed terminal or a dropped ssh session: it must not lose training."""
    path, config = _prepared(demo_corpus, tmp_path, max_steps=100_000, valid_every=5,
                             log_every=2)
    log = tmp_path / "train.log"
    process = _train_process(path, log)
    last = RunDir(config.run_dir).checkpoint("last")
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)  # a few more steps: logged, not yet checkpointed
    process.send_signal(signal_number)
    assert process.wait(timeout=120) == exit_code
    message = log.read_text()
    assert f"{signal.Signals(signal_number).name} received: saved" in message
    assert "Traceback" not in message
    step = load_checkpoint(last)["progress"]["step"]
    assert step >= 5
    # resuming finds the log no further than the checkpoint, and continues it
    train(load_config(path, [f"train.max_steps={step + 4}"]))
    steps = [record["step"] for record in _metrics(config.run_dir) if record["kind"] == "train"]
    assert steps == list(range(2, step + 5, 2))  # each logged step once, none missing


def _prepared(corpus: Path, tmp_path: Path, **train_settings) -> tuple[Path, Config]:
    path = write_config(tmp_path / "c.yaml", config_dict(corpus, tmp_path / "run",
                                                         train=train_settings))
    config = load_config(path)
    prepare_run(config)
    return path, config


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_a_closed_log_pipe_stops_the_output_not_the_training(demo_corpus: Path,
                                                             tmp_path: Path) -> None:
    """`s2s train CONFIG 2>&1 | head -3`: once head exits, training goes on to the end."""
    path, config = _prepared(demo_corpus, tmp_path, max_steps=40, valid_every=20, log_every=1)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        f"{sys.executable} -m s2s train {path} 2>&1 | head -n 3; echo \"exit ${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", cwd=REPO, env=environment, capture_output=True,
        text=True, timeout=300)
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "exit 0", result.stdout + result.stderr
    assert load_checkpoint(RunDir(config.run_dir).checkpoint("last"))["progress"]["step"] == 40
    assert [r["step"] for r in _metrics(config.run_dir) if r["kind"] == "valid"] == [20, 40]


@pytest.mark.slow
def test_translate_into_a_closed_pipe_exits_quietly(trained_run: Path, tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("The dog sees a cat.\n" * 5000, encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        f"{sys.executable} -m s2s translate {trained_run} --input {source} | head -n 2",
        shell=True, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
