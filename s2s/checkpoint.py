"""Self-describing checkpoints, written atomically and loaded as data only.

A checkpoint holds plain data: the resolved config, both sentencepiece models, vocabulary sizes,
model/optimizer state, training progress and RNG state. It loads with
``torch.load(weights_only=True)``, so a crafted pickle cannot run code, and a model is rebuilt
from the checkpoint alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from s2s.config import Config, config_from_dict
from s2s.errors import CheckpointError, ConfigError
from s2s.model import Seq2Seq
from s2s.report import Reporter
from s2s.vocab import Tokenizer

FORMAT = "s2s-checkpoint-1"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash or a full disk at any moment leaves either the old file or the new one, never a
    half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"{path}: cannot write checkpoint: {error.strerror or error}"
                                  ) from None
        raise
    _fsync_directory(path.parent)


def link_atomic(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, or a copy), atomically."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        payload = torch.load(source, weights_only=True, map_location="cpu")
        save_atomic(payload, target)
        return
    os.replace(temporary, target)
    _fsync_directory(target.parent)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint as data, refusing anything that is not a plain s2s checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it contains code or objects that are not plain data, refused for safety"
        raise CheckpointError(f"{path}: not a readable s2s checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an s2s checkpoint (format {FORMAT} expected)")
    return payload


class LoadedModel:
    """A model with its config and tokenizers, rebuilt from one checkpoint."""

    def __init__(self, payload: dict[str, Any], path: Path, overrides: Sequence[str] = (),
                 option_names: Mapping[str, str] | None = None) -> None:
        try:
            config_from_dict(payload["config"], source=str(path))
        except ConfigError as error:
            raise CheckpointError(f"{path}: its stored config is invalid: {error}") from None
        self.config: Config = config_from_dict(payload["config"], source=str(path),
                                               overrides=overrides, option_names=option_names)
        self.path = path
        self.src_tokenizer = Tokenizer(payload["vocab"]["src"])
        self.tgt_tokenizer = Tokenizer(payload["vocab"]["tgt"])
        self.model = build_model(self.config, len(self.src_tokenizer), len(self.tgt_tokenizer),
                                 payload["vocab"]["joint"])
        try:
            self.model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise CheckpointError(f"{path}: weights do not fit the model its config describes: "
                                  f"{str(error).splitlines()[0]}") from None
        self.step: int = payload["progress"]["step"]


def build_model(config: Config, src_vocab_size: int, tgt_vocab_size: int,
                joint: bool) -> Seq2Seq:
    return Seq2Seq(config.model, src_vocab_size, tgt_vocab_size, joint)


def load_model(path: Path, overrides: Sequence[str] = (),
               option_names: Mapping[str, str] | None = None) -> LoadedModel:
    """Rebuild a model from a checkpoint; ``overrides`` change decode settings and the like
    (``option_names``: the command-line options some of them came from, for errors)."""
    return LoadedModel(load_checkpoint(path), path, overrides, option_names)


def average_checkpoints(run_dir: Path, last: int | None = None, *,
                        reporter: Reporter = Reporter()) -> Path:
    """Average the weights of the ``last`` newest step checkpoints (all when None) into
    ``checkpoints/avg.pt``; report which steps, and warn when fewer exist than asked for."""
    directory = checkpoint_dir(run_dir)
    paths = sorted(directory.glob("step-*.pt"))
    if not paths:
        raise CheckpointError(f"{directory}: no step checkpoints to average; train first")
    if last is not None and len(paths) < last:
        reporter.warn(f"asked to average the last {last} checkpoints, but {directory} keeps "
                      f"only {len(paths)} (train.keep_last sets how many are kept)")
    if last is not None:
        paths = paths[-last:]
    payloads = [load_checkpoint(path) for path in paths]
    newest = payloads[-1]
    averaged = {}
    for name, tensor in newest["model"].items():
        if tensor.is_floating_point():
            averaged[name] = sum(p["model"][name].double() for p in payloads).div(len(payloads)
                                                                               ).to(tensor.dtype)
        else:
            averaged[name] = tensor
    output = directory / "avg.pt"
    save_atomic({**newest, "model": averaged, "optimizer": {}, "averaged_from":
                 [path.name for path in paths]}, output)
    steps = ", ".join(str(payload["progress"]["step"]) for payload in payloads)
    reporter.info(f"averaged {len(paths)} checkpoints (steps {steps}) into {output}")
    return output


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
