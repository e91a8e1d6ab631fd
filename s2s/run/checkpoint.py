"""The checkpoint format: self-describing files, written atomically and loaded as data only.

A checkpoint holds plain data: the resolved config, both sentencepiece models, the digest of
the prepared data, model/optimizer/loss-scaler state, training progress and RNG state. It loads
with ``torch.load(weights_only=True)``, so a crafted pickle cannot run code, and a model is
rebuilt from the checkpoint alone. This module alone writes and reads that layout: training
saves and resumes through ``TrainingCheckpoints``, everyone else loads a ``LoadedModel``.
Where the files live is s2s.rundir's business.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from s2s.config import Config, ModelConfig, Overrides, config_from_dict, config_to_dict
from s2s.data.store import prepared_vocabularies
from s2s.data.vocab import Tokenizer
from s2s.errors import CheckpointError, ConfigError
from s2s.files import sync_directory, written_whole
from s2s.model.seq2seq import Seq2Seq
from s2s.report import Reporter
from s2s.rundir import NAMED_CHECKPOINTS, RunDir

FORMAT = "s2s-checkpoint-1"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash or a full disk at any moment leaves either the old file or the new one, never a
    half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with written_whole(path, durable=True) as stream:
            torch.save(payload, stream)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot write checkpoint: {error.strerror or error}"
                              ) from None


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
    sync_directory(target.parent)


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


def remove_partial_writes(directory: Path) -> None:
    """Delete the temporary files that writes interrupted by a crash left behind."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


@dataclass
class TrainingState:
    """What resuming restores: weights, optimizer and loss-scaler state, progress, RNG."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    progress: dict[str, Any]
    rng: dict[str, torch.Tensor | None]


def _model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model settings that say what its weights are: resuming and averaging
    compare these. A setting added after the checkpoint was written has its default there;
    ``init_range`` only decided the first weights, so it does not part one model from another."""
    identity = {**config_to_dict(ModelConfig()), **model}
    del identity["init_range"]
    return identity


@dataclass(frozen=True)
class TrainingCheckpoints:
    """Saves and resumes the checkpoints of one training run, on behalf of rank 0."""

    run: RunDir
    config: Config
    vocabularies: dict[str, bytes]  # the sentencepiece models, "src" and "tgt"
    joint: bool
    data_hash: str  # the prepared data's config hash: resuming on other data is refused

    def save(self, state: TrainingState, *, best: bool = False) -> Path:
        """Write a step checkpoint, point ``last`` (and ``best``) at it, drop old ones: those
        beyond ``train.keep_last``, and any older one off the ``train.valid_every`` grid (a
        stop's checkpoint, once training has gone past it)."""
        payload = {
            "format": FORMAT,
            "config": config_to_dict(self.config),
            "vocab": {**self.vocabularies, "joint": self.joint},
            "data_hash": self.data_hash,
            # the fields as they are: asdict would deep-copy every tensor (the whole
            # optimizer state, once more in memory) and untie tied weights, which the file
            # would then hold twice
            **{field.name: getattr(state, field.name) for field in fields(state)},
        }
        path = self.run.step_checkpoint(state.progress["step"])
        save_atomic(payload, path)
        link_atomic(path, self.run.checkpoint("last"))
        if best:
            link_atomic(path, self.run.checkpoint("best"))
        every = self.config.train.valid_every
        # one a stop wrote off the validation grid is there to resume from: once a newer one
        # exists it goes, so that keep_last and average_last count the run's regular steps
        for old in self.run.step_checkpoints()[:-1]:
            if _step_of(old) % every:
                old.unlink(missing_ok=True)
        for old in self.run.step_checkpoints()[:-self.config.train.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def resume(self) -> tuple[TrainingState, Path] | None:
        """The state in ``last.pt``, checked to belong to this config and data; None if the
        run has no checkpoint yet."""
        path = self.run.checkpoint("last")
        if not path.exists():
            return None
        payload = load_checkpoint(path)
        self._check_compatible(payload, path)
        return TrainingState(payload["model"], payload["optimizer"], payload["scaler"],
                             payload["progress"], payload["rng"]), path

    def start_over(self) -> None:
        """Delete every checkpoint of the run (``s2s train --restart``)."""
        shutil.rmtree(self.run.checkpoints, ignore_errors=True)

    def _check_compatible(self, payload: dict[str, Any], path: Path) -> None:
        stored_model = _model_identity(payload["config"].get("model", {}))
        current_model = _model_identity(config_to_dict(self.config.model))
        changed = [key for key in current_model if stored_model.get(key) != current_model[key]]
        if changed:
            key = changed[0]
            raise CheckpointError(f"{path}: trained with model.{key}={stored_model.get(key)!r} "
                                  f"but the config says {current_model[key]!r}; use --restart "
                                  "to start over")
        if payload.get("data_hash") != self.data_hash:
            raise CheckpointError(f"{path}: was trained on differently prepared data; "
                                  "use --restart to start over")


@dataclass(frozen=True)
class LoadedModel:
    """A model with its config and tokenizers: rebuilt from a checkpoint, or a live one."""

    config: Config
    model: Seq2Seq
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    step: int
    path: Path | None = None  # the checkpoint file, if it came from one
    best_score: float | None = None  # of train.early_stopping_metric (negated for loss)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path, overrides: Overrides = ()
                     ) -> "LoadedModel":
        try:
            config_from_dict(payload["config"], source=str(path))
        except ConfigError as error:
            raise CheckpointError(f"{path}: its stored config is invalid: {error}") from None
        config = config_from_dict(payload["config"], source=str(path), overrides=overrides)
        src_tokenizer = Tokenizer(payload["vocab"]["src"])
        tgt_tokenizer = Tokenizer(payload["vocab"]["tgt"])
        model = Seq2Seq(config.model, len(src_tokenizer), len(tgt_tokenizer),
                        payload["vocab"]["joint"])
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise CheckpointError(f"{path}: weights do not fit the model its config describes: "
                                  f"{str(error).splitlines()[0]}") from None
        model.never_produce(target_tag_ids(config, tgt_tokenizer))
        progress = payload["progress"]
        return cls(config, model, src_tokenizer, tgt_tokenizer, progress["step"], path,
                   progress.get("best_score"))

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"the model at step {self.step}"


def target_tag_ids(config: Config, tgt_tokenizer: Tokenizer) -> list[int]:
    """The target ids of the corpus tags: only a joint vocabulary has them, and a translation
    must never produce one (``Seq2Seq.never_produce``)."""
    tags = [tgt_tokenizer.piece_id(tag) for tag in config.data.tags]
    return [token for token in tags if token is not None]


def save_model(loaded: LoadedModel, path: Path) -> None:
    """Write ``loaded`` as a checkpoint for decoding (weights, config, vocabularies; no
    optimizer or RNG state): the format for a model trained outside `s2s train`."""
    save_atomic({"format": FORMAT, "config": config_to_dict(loaded.config),
                 "vocab": {"src": loaded.src_tokenizer.model_proto,
                           "tgt": loaded.tgt_tokenizer.model_proto,
                           "joint": loaded.model.joint_vocab},
                 "model": loaded.model.state_dict(), "optimizer": {},
                 "progress": {"step": loaded.step, "best_score": loaded.best_score}}, path)


def load_model(path: Path, overrides: Overrides = ()) -> LoadedModel:
    """Rebuild a model from a checkpoint; ``overrides`` change decode settings and the like."""
    return LoadedModel.from_payload(load_checkpoint(path), path, overrides)


def resolve_checkpoint(run_dir: Path, checkpoint: str, *,
                       reporter: Reporter = Reporter()) -> Path:
    """``best``, ``last`` or ``avg`` inside a run directory, or a checkpoint file path.

    ``avg`` is made (from every step checkpoint kept) when the run has none yet.
    """
    if checkpoint not in NAMED_CHECKPOINTS:
        return Path(checkpoint)
    run = RunDir(run_dir)
    path = run.checkpoint(checkpoint)
    if checkpoint == "avg" and not path.exists():
        return average_checkpoints(run_dir, reporter=reporter)
    if not path.exists():
        found = sorted(p.name for p in run.checkpoints.glob("*.pt"))
        listing = ", ".join(found) if found else "none; train first"
        raise CheckpointError(f"{path}: no {checkpoint} checkpoint in this run "
                              f"(checkpoints: {listing})")
    return path


def check_vocabulary(loaded: LoadedModel, run_dir: Path) -> None:
    """Refuse a checkpoint whose vocabulary is not the one ``run_dir`` was prepared with."""
    prepared = prepared_vocabularies(run_dir)
    if prepared is None:
        return
    for side, name, tokenizer in (("src", "source", loaded.src_tokenizer),
                                  ("tgt", "target", loaded.tgt_tokenizer)):
        if prepared[side] != tokenizer.model_proto:
            raise CheckpointError(f"{loaded.name}: its {name} vocabulary is not the one of the "
                                  f"run in {run_dir} (another run's checkpoint?); use that "
                                  "run's --run directory or one of this run's checkpoints")


def _step_of(path: Path) -> int:
    """The step of a step checkpoint's file name (step-00001000.pt: 1000)."""
    return int(path.stem.removeprefix("step-"))


def average_checkpoints(run_dir: Path, last: int | None = None, *,
                        reporter: Reporter = Reporter()) -> Path:
    """Average the weights of the ``last`` newest step checkpoints (all when None) into
    ``avg.pt``; report which steps, and warn when fewer exist than asked for."""
    run = RunDir(run_dir)
    paths = run.step_checkpoints()
    if not paths:
        raise CheckpointError(f"{run.checkpoints}: no step checkpoints to average; train first")
    if last is not None and len(paths) < last:
        reporter.warn(f"asked to average the last {last} checkpoints, but {run.checkpoints} "
                      f"keeps only {len(paths)} (train.keep_last sets how many are kept)")
    if last is not None:
        paths = paths[-last:]
    payloads = [load_checkpoint(path) for path in paths]
    newest = payloads[-1]
    for path, payload in zip(paths, payloads):
        if (_model_identity(payload["config"].get("model", {}))
                != _model_identity(newest["config"].get("model", {}))):
            raise CheckpointError(f"{path}: another model than {paths[-1].name} (its model "
                                  "settings differ); average checkpoints of one model only")
    averaged: dict[str, torch.Tensor] = {}
    shared: dict[tuple[Any, ...], torch.Tensor] = {}  # tied weights (one storage) stay one
    for name, tensor in newest["model"].items():
        storage = (tensor.data_ptr(), tensor.shape, tensor.dtype) if tensor.numel() else (name,)
        if storage in shared:
            averaged[name] = shared[storage]
        elif tensor.is_floating_point():
            total = sum(payload["model"][name].double() for payload in payloads)
            averaged[name] = (total / len(payloads)).to(tensor.dtype)
        else:
            averaged[name] = tensor
        shared.setdefault(storage, averaged[name])
    output = run.checkpoint("avg")
    save_atomic({**newest, "model": averaged, "optimizer": {}, "averaged_from":
                 [path.name for path in paths]}, output)
    steps = ", ".join(str(payload["progress"]["step"]) for payload in payloads)
    reporter.info(f"averaged {len(paths)} checkpoints (steps {steps}) into {output}")
    return output
