"""Shared fixtures: tiny corpora and configs the tests generate themselves (no network)."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from s2s.config import Config
from s2s.data.demo import write_demo_corpus
from s2s.data.prepare import prepare
from s2s.data.store import data_config_hash, inputs_hash
from s2s.rundir import RunDir

# Every test runs with this many CPU threads, whatever the machine (1 core or 16), so that its
# numbers are the same everywhere; a test (or the library code it calls) must leave it so.
TEST_THREADS = 2
# CPU unless a test says otherwise: results must not depend on whether CUDA is present.
TEST_DEVICE = "cpu"

TINY_MODEL = {"embed_size": 32, "encoder_layers": 1, "encoder_hidden": 32,
              "decoder_layers": 1, "decoder_hidden": 64, "dropout": 0.0, "embed_dropout": 0.0}


def config_dict(corpus: Path, run_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small valid config for a corpus written by ``write_demo_corpus``."""
    config: dict[str, Any] = {
        "run_dir": str(run_dir),
        "data": {"src_lang": "en", "tgt_lang": "de", "train": str(corpus / "train"),
                 "valid": str(corpus / "valid"), "test": str(corpus / "test")},
        "vocab": {"src_size": 400, "tgt_size": 400, "character_coverage": 1.0},
        "model": dict(TINY_MODEL),
        "train": {"batch_tokens": 600, "lr": 0.005, "max_steps": 20, "log_every": 10,
                  "valid_every": 10, "seed": 7, "device": TEST_DEVICE, "threads": TEST_THREADS},
        "decode": {"beam_size": 3, "batch_tokens": 2000},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


_PREPARED: dict[tuple[str, str], Path] = {}  # (inputs hash, data settings hash) -> a copy
_PREPARED_HOME = tempfile.TemporaryDirectory(prefix="s2s-prepared-")  # gone at exit


def prepare_run(config: Config) -> Path:
    """``s2s prepare`` for ``config``, sharing work across the session: data prepared once
    for the same corpus and data/vocab settings is copied into the run (``prepare`` then
    checks the copy against the config and finds it up to date), so sentencepiece trains
    once per corpus and settings, not once per test. Returns the run's data directory."""
    key = (inputs_hash(config), data_config_hash(config))
    target = RunDir(config.run_dir).data
    copied = key in _PREPARED and not target.exists()
    if copied:
        shutil.copytree(_PREPARED[key], target)
    result = prepare(config)
    assert result.up_to_date or not copied, "a shared copy must be up to date"
    if key not in _PREPARED:
        copy = Path(_PREPARED_HOME.name) / str(len(_PREPARED))
        _PREPARED[key] = Path(shutil.copytree(target, copy))
    return target


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def process_state_is_left_alone() -> Iterator[None]:
    """Set the thread count for the test; fail a test that leaks threads, signal handlers or
    the quantised engine."""
    previous = torch.get_num_threads()
    engine = torch.backends.quantized.engine
    handlers = {number: signal.getsignal(number) for number in WATCHED_SIGNALS}
    torch.set_num_threads(TEST_THREADS)
    try:
        yield
        assert torch.get_num_threads() == TEST_THREADS, "the test changed torch's thread count"
        assert torch.backends.quantized.engine == engine, "the test changed the int8 engine"
        changed = [signal.Signals(number).name for number in WATCHED_SIGNALS
                   if signal.getsignal(number) != handlers[number]]
        assert not changed, f"the test left signal handlers changed: {changed}"
    finally:
        torch.set_num_threads(previous)


WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    write_demo_corpus(directory, train=1500, valid=60, test=60, seed=5)
    return directory


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> Path:
    """Config path of a tiny run that has been prepared and trained for 150 steps."""
    from s2s.config import load_config
    from s2s.training.loop import train

    directory = tmp_path_factory.mktemp("trained")
    config_path = write_config(directory / "config.yaml", config_dict(
        demo_corpus, directory / "run", train={"max_steps": 150, "valid_every": 75}))
    config = load_config(config_path)
    prepare_run(config)
    train(config)
    return config_path


@pytest.fixture(scope="session")
def copy_translator(tmp_path_factory: pytest.TempPathFactory):
    """A model trained to copy sentences of up to LIMIT tokens (about 98% exactly)."""
    from tests.tasks import copy, word_task_translator
    with torch.random.fork_rng():
        return word_task_translator(tmp_path_factory.mktemp("copy"), copy)


@pytest.fixture(scope="session")
def reversal_translator(tmp_path_factory: pytest.TempPathFactory):
    """A model trained to write sentences' words in reverse order, without full stops."""
    from tests.tasks import reverse, word_task_translator
    with torch.random.fork_rng():
        return word_task_translator(tmp_path_factory.mktemp("reverse"), reverse,
                                    full_stops=False, steps=400)
