"""`s2s train`: teacher-forced training with validation, checkpoints, resume and clean stops.

Resuming reproduces an uninterrupted run: batches of an epoch come from a generator seeded by
(seed, epoch), the checkpoint records how many of them were consumed, and RNG, optimizer and
schedule state are restored. Ctrl-C or SIGTERM finishes the current update, saves, and exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from s2s.batching import Batch, collate, token_batches, training_lengths
from s2s.checkpoint import (FORMAT, build_model, checkpoint_dir, link_atomic, load_checkpoint,
                            save_atomic)
from s2s.config import Config, TrainConfig, config_to_dict
from s2s.device import autocast, check_precision, resolve_device, thread_scope
from s2s.distributed import World
from s2s.encoded import load_split
from s2s.errors import CheckpointError, DataError, Interrupted
from s2s.prepare import data_config_hash, data_dir, read_manifest, spm_paths
from s2s.report import Reporter
from s2s.runlock import RunLock
from s2s.scoring import bleu_tokenizer, score_corpus
from s2s.search import decode_corpus
from s2s.vocab import PAD_ID, Tokenizer

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "loss": False}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class TrainProgress:
    """Where training stands; saved in every checkpoint as plain data."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # batches of this epoch consumed (by all processes together)
    best_score: float | None = None
    best_step: int = 0
    bad_validations: int = 0  # for early stopping
    plateau_bad: int = 0  # for the plateau schedule
    lr_scale: float = 1.0
    seconds: float = 0.0  # training time over all sessions of this run
    target_tokens: int = 0
    validated_step: int = -1  # the step of the latest validation
    stop_reason: str = ""


def learning_rate(config: TrainConfig, step: int, lr_scale: float) -> float:
    """The rate for optimizer step ``step`` (0-based): warm-up, then the schedule."""
    rate = config.lr
    warmup = max(config.warmup_steps, 1)
    if config.lr_schedule == "inverse_sqrt":
        rate *= min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
    elif config.warmup_steps:
        rate *= min(1.0, (step + 1) / warmup)
    return max(rate * lr_scale, config.min_lr) if config.lr_schedule == "plateau" else rate


def smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL; logits (N, V), targets (N,)."""
    logits = logits.float()
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")
    if not smoothing:
        return loss, loss.detach()
    with torch.no_grad():  # the NLL is only reported: no second graph through the softmax
        nll = torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None]).squeeze(1)
    return loss, nll.sum()


class Trainer:
    """Owns the model, optimizer and data of one run directory."""

    def __init__(self, config: Config, *, reporter: Reporter = Reporter(),
                 should_stop: Callable[[TrainProgress], bool] | None = None) -> None:
        self.config = config
        self.train_config = config.train
        self.world = World.from_environment()
        self.reporter = reporter if self.world.is_main else Reporter()
        self.should_stop = should_stop
        self.device = self.world.device(resolve_device(config.train.device))
        check_precision(self.device, config.train.precision, "train.precision")
        self.world.start(self.device)
        self.manifest = _checked_manifest(config)
        directory = data_dir(config)
        self.train_data = load_split(directory, "train")
        self.valid_data = load_split(directory, "valid")
        self.valid_refs = (directory / "valid.tgt.txt").read_text(encoding="utf-8").splitlines()
        src_model, tgt_model = spm_paths(directory)
        self.spm_bytes = {"src": src_model.read_bytes(), "tgt": tgt_model.read_bytes()}
        self.tgt_tokenizer = Tokenizer(self.spm_bytes["tgt"])
        self.tokenize = bleu_tokenizer(config.data.tgt_lang, config.decode.bleu_tokenize)
        torch.manual_seed(config.train.seed)
        self.model = build_model(config, self.manifest["src_vocab_size"],
                                 self.manifest["tgt_vocab_size"], self.manifest["joint"])
        self.model.to(self.device)
        self._seed_dropout(step=0)
        self.trained_model: torch.nn.Module = self.model
        if self.world.distributed:
            self.trained_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=config.train.precision == "fp16")
        self.progress = TrainProgress()
        self._signal: int | None = None
        self._session_start = time.monotonic()
        self._seconds_at_start = 0.0

    def close(self) -> None:
        """Leave the process group, after dropping the DDP wrapper that holds it.

        A DDP wrapper still alive (its reducer is in reference cycles) keeps gloo's worker
        threads until the interpreter shuts down, where destroying them aborts the process.
        """
        self.trained_model = self.model
        gc.collect()
        self.world.stop()

    def _seed_dropout(self, step: int) -> None:
        """Processes other than rank 0 draw their own dropout masks (rank 0 keeps its stream)."""
        if self.world.rank > 0:
            torch.manual_seed(self.train_config.seed + 1000 * self.world.rank + step)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        settings = self.train_config
        kind = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
        # the fused kernel updates all parameters in one pass (CPU and CUDA)
        return kind(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                    fused=True)

    # ----------------------------------------------------------------- resume and checkpoints

    def resume_if_possible(self) -> bool:
        """Load ``last.pt`` if the run has one; check that it belongs to this config."""
        path = checkpoint_dir(self.config.run_dir) / "last.pt"
        if not path.exists():
            return False
        payload = load_checkpoint(path)
        _check_compatible(payload, self.config, self.manifest, path)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.progress = TrainProgress(**payload["progress"])
        self.progress.stop_reason = ""
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and payload["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
        self._seed_dropout(step=self.progress.step)
        self._seconds_at_start = self.progress.seconds
        _truncate_metrics(self.config.run_dir / "metrics.jsonl", self.progress.step)
        self.reporter.info(f"resuming from {path} at step {self.progress.step}, "
                           f"epoch {self.progress.epoch}")
        return True

    def save_checkpoint(self, *, best: bool = False) -> Path | None:
        """Write a step checkpoint and point ``last`` (and ``best``) at it; rank 0 only."""
        if not self.world.is_main:
            return None
        self.progress.seconds = self._elapsed()
        payload = {
            "format": FORMAT,
            "config": config_to_dict(self.config),
            "vocab": {**self.spm_bytes, "joint": self.manifest["joint"]},
            "data_hash": self.manifest["config_hash"],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device)
                    if self.device.type == "cuda" else None},
        }
        directory = checkpoint_dir(self.config.run_dir)
        path = directory / f"step-{self.progress.step:08d}.pt"
        save_atomic(payload, path)
        link_atomic(path, directory / "last.pt")
        if best:
            link_atomic(path, directory / "best.pt")
        for old in sorted(directory.glob("step-*.pt"))[:-self.train_config.keep_last]:
            old.unlink(missing_ok=True)
        return path

    # ----------------------------------------------------------------------------- the loop

    def train(self) -> TrainProgress:
        """Train until a limit is reached; returns the final progress."""
        with self._signals():
            self.model.train()
            if self._limit_reached():
                self.reporter.warn(_nothing_to_do(self.progress, self.train_config))
            while not self._limit_reached():
                self._run_epoch()
            if self.progress.stop_reason == "stopped by caller":
                self.save_checkpoint()  # an interruption: validating would change the schedule
            elif self.progress.step and self.progress.validated_step != self.progress.step:
                self._validate_and_save()
        return self.progress

    def _run_epoch(self) -> None:
        """Consume the rest of this epoch's batches, one optimizer step per global group."""
        settings, world = self.train_config, self.world
        batches = token_batches(training_lengths(self.train_data), settings.batch_tokens,
                                seed=settings.seed, epoch=self.progress.epoch)
        group_size = settings.accumulate * world.size  # batches per optimizer step, all ranks
        steps_in_epoch = len(batches) // group_size if world.distributed else math.ceil(
            len(batches) / group_size)  # ranks must take the same number of steps
        window = _Window()
        with self.reporter.progress(f"epoch {self.progress.epoch}", total=steps_in_epoch) as bar:
            bar.update(completed=self.progress.batches_done // group_size)
            while self.progress.batches_done < steps_in_epoch * group_size:
                start = self.progress.batches_done + world.rank * settings.accumulate
                mine = batches[start:start + settings.accumulate]
                loss, nll, tokens = self._update([collate(self.train_data, i) for i in mine])
                self.progress.step += 1
                self.progress.batches_done += group_size
                self.progress.target_tokens += tokens
                window.add(loss, nll, tokens)
                bar.advance(status=f"step {self.progress.step} " + window.status(self._lr()))
                if self.progress.step % settings.log_every == 0:
                    self._log_train(window.flush())
                if self.progress.step % settings.valid_every == 0:
                    self._validate_and_save()
                self._check_interrupt()
                if self._limit_reached():
                    return
        self.progress.epoch += 1
        self.progress.batches_done = 0

    def _update(self, batches: list[Batch]) -> tuple[float, float, int]:
        """One optimizer step over ``batches`` (gradient accumulation, all processes).

        Returns the summed loss, summed NLL and target tokens of the whole global batch. The
        loss is normalised by the global token count, so N processes compute exactly the
        gradient one process would on the same global batch.
        """
        local_tokens = sum(batch.target_tokens for batch in batches)
        (tokens,) = self.world.sum([float(local_tokens)], self.device)
        scale = self.world.size / tokens  # DDP averages gradients over processes
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = total_nll = 0.0
        for index, batch in enumerate(batches):
            batch = batch.to(self.device)
            positions = batch.tgt_out != PAD_ID
            last = index == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.world.distributed else (
                self.trained_model.no_sync())  # type: ignore[operator]
            with sync:
                with autocast(self.device, self.train_config.precision):
                    logits = self.trained_model(batch.src, batch.src_lengths, batch.tgt_in,
                                                positions)
                loss, nll = smoothed_loss(logits, batch.tgt_out[positions],
                                          self.train_config.label_smoothing)
                self.scaler.scale(loss * scale).backward()
            total_loss += float(loss.detach())
            total_nll += float(nll)
        self.scaler.unscale_(self.optimizer)
        if self.train_config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        total_loss, total_nll = self.world.sum([total_loss, total_nll], self.device)
        return total_loss, total_nll, int(tokens)

    def _lr(self) -> float:
        return learning_rate(self.train_config, self.progress.step, self.progress.lr_scale)

    def _limit_reached(self) -> bool:
        settings, progress = self.train_config, self.progress
        reasons = [
            (settings.max_steps and progress.step >= settings.max_steps, "max_steps"),
            (settings.max_epochs and progress.epoch > settings.max_epochs, "max_epochs"),
            (settings.max_minutes and self._elapsed() >= 60 * settings.max_minutes,
             "max_minutes"),
            (settings.patience and progress.bad_validations >= settings.patience,
             "early stopping"),
            (self.should_stop is not None and self.should_stop(progress), "stopped by caller"),
        ]
        reason = next((reason for reached, reason in reasons if reached), "")
        if self.world.any(bool(reason), self.device):  # every process stops at the same step
            progress.stop_reason = reason or "another process stopped"
            return True
        return False

    def _elapsed(self) -> float:
        return self._seconds_at_start + time.monotonic() - self._session_start

    # ----------------------------------------------------------------------------- validation

    def _validate_and_save(self) -> None:
        """Rank 0 validates and saves; every process then adopts its updated progress."""
        if not self.world.is_main:
            self.progress = self.world.share(None)
            return
        metrics = self.validate()
        improved = self._track_best(metrics)
        self.progress.validated_step = self.progress.step
        self.save_checkpoint(best=improved)
        self.world.share(self.progress)
        self._write_metrics({"kind": "valid", "step": self.progress.step,
                             "elapsed": round(self._elapsed(), 2), **metrics, "best": improved})
        mark = " (new best)" if improved else ""
        self.reporter.info(
            f"validation at step {self.progress.step}: loss {metrics['loss']:.3f}, "
            f"ppl {metrics['ppl']:.2f}, BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}"
            f"{mark}")

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss and perplexity under teacher forcing, BLEU/chrF of decoding the valid split."""
        self.model.eval()
        started = time.perf_counter()
        nll_sum, tokens = 0.0, 0
        lengths = training_lengths(self.valid_data)
        for indices in token_batches(lengths, self.train_config.batch_tokens):
            batch = collate(self.valid_data, indices).to(self.device)
            positions = batch.tgt_out != PAD_ID
            with autocast(self.device, self.train_config.precision):
                logits = self.model(batch.src, batch.src_lengths, batch.tgt_in, positions)
            _, nll = smoothed_loss(logits, batch.tgt_out[positions], 0.0)
            nll_sum += float(nll)
            tokens += int(positions.sum())
        sources = [self.valid_data.src.sentence(i) for i in range(len(self.valid_data))]
        hypotheses = decode_corpus(self.model, sources, self.config.decode, self.device,
                                   beam_size=self.train_config.valid_beam_size)
        texts = self.tgt_tokenizer.decode([h[0].tokens if h else [] for h in hypotheses])
        scores = score_corpus(texts, self.valid_refs, self.tokenize)
        self.model.train()
        for index in range(min(3, len(texts))):
            self.reporter.info(f"  ref: {self.valid_refs[index]}\n  hyp: {texts[index]}")
        loss = nll_sum / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bleu": scores.bleu,
                "chrf": scores.chrf, "bleu_signature": scores.signatures["bleu"],
                "seconds": time.perf_counter() - started}

    def _track_best(self, metrics: dict[str, Any]) -> bool:
        """Update best score, early-stopping and plateau counters; True when improved."""
        metric = self.train_config.early_stopping_metric
        score = metrics[metric] if HIGHER_IS_BETTER[metric] else -metrics[metric]
        progress = self.progress
        if progress.best_score is None or score > progress.best_score:
            progress.best_score, progress.best_step = score, progress.step
            progress.bad_validations = progress.plateau_bad = 0
            return True
        progress.bad_validations += 1
        progress.plateau_bad += 1
        if self.train_config.lr_schedule == "plateau" and (
                progress.plateau_bad > self.train_config.plateau_patience):
            progress.lr_scale *= self.train_config.plateau_factor
            progress.plateau_bad = 0
            self.reporter.info(f"no improvement in {metric}: learning rate now {self._lr():.2e}")
        return False

    # ------------------------------------------------------------------------- logs, signals

    def _log_train(self, stats: dict[str, float]) -> None:
        record = {"kind": "train", "step": self.progress.step, "epoch": self.progress.epoch,
                  "lr": self._lr(), "elapsed": round(self._elapsed(), 2), **stats}
        self._write_metrics(record)
        if not (self.reporter.console and self.reporter.console.is_terminal):
            self.reporter.info(
                f"step {record['step']} epoch {record['epoch']} loss {stats['loss']:.3f} "
                f"ppl {stats['ppl']:.2f} lr {record['lr']:.2e} "
                f"{stats['tokens_per_second']:,.0f} tok/s")

    def _write_metrics(self, record: dict[str, Any]) -> None:
        path = self.config.run_dir / "metrics.jsonl"
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM/SIGHUP into a flag checked between updates (main thread only).

        SIGHUP (a closed terminal or a dropped ssh session) saves and stops like SIGTERM.
        """
        def remember(number: int, frame: Any) -> None:
            self._signal = number
            signal.signal(number, previous[number])  # a second signal acts at once
        try:
            previous = {number: signal.signal(number, remember)
                        for number in STOP_SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _check_interrupt(self) -> None:
        """After SIGINT/SIGTERM/SIGHUP on any process: save (rank 0) and stop every process."""
        if not self.world.any(self._signal is not None, self.device):
            return
        number = self._signal or signal.SIGTERM
        path = self.save_checkpoint() if self.world.is_main else None
        self.world.barrier()
        name = signal.Signals(number).name
        raise Interrupted(f"{name} received: saved {path} at step {self.progress.step}; "
                          "run the same command again to resume", number)


class _Window:
    """Loss and throughput since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.nll = 0.0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: float, nll: float, tokens: int) -> None:
        self.loss += loss
        self.nll += nll
        self.tokens += tokens

    def stats(self) -> dict[str, float]:
        tokens = max(self.tokens, 1)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return {"loss": self.loss / tokens, "ppl": math.exp(min(self.nll / tokens, 50.0)),
                "tokens_per_second": self.tokens / seconds}

    def status(self, lr: float) -> str:
        stats = self.stats()
        return (f"loss {stats['loss']:.3f} ppl {stats['ppl']:.1f} lr {lr:.1e} "
                f"{stats['tokens_per_second']:,.0f} tok/s")

    def flush(self) -> dict[str, float]:
        stats = self.stats()
        self.reset()
        return stats


def train(config: Config, *, restart: bool = False, reporter: Reporter = Reporter(),
          should_stop: Callable[[TrainProgress], bool] | None = None) -> TrainProgress:
    """Train the run described by ``config``, resuming from its last checkpoint if any.

    Started by torchrun, every process calls this; they train one model together.
    """
    with thread_scope(config.train.threads), _own_rng(config.train.device):
        trainer = Trainer(config, reporter=reporter, should_stop=should_stop)
        # one training job per run directory: rank 0 holds the lock before touching anything
        lock = RunLock(config.run_dir) if trainer.world.is_main else contextlib.nullcontext()
        try:
            with lock:
                if trainer.world.is_main:
                    _clean_checkpoint_dir(config.run_dir, restart)
                trainer.world.barrier()
                trainer.resume_if_possible()
                progress = trainer.train()
        finally:
            trainer.close()
    trainer.reporter.info(f"training stopped ({progress.stop_reason}) at step {progress.step}; "
                          f"best {config.train.early_stopping_metric} at step "
                          f"{progress.best_step}")
    return progress


def _own_rng(device: str) -> contextlib.AbstractContextManager:
    """Training seeds torch's generators; the caller's streams are restored afterwards."""
    cuda = device != "cpu" and torch.cuda.is_available()
    return torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else [])


def _nothing_to_do(progress: TrainProgress, settings: TrainConfig) -> str:
    """Why a resumed run trains no further, and what to change."""
    reason = progress.stop_reason
    limits = {"max_steps": f"train.max_steps ({settings.max_steps})",
              "max_epochs": f"train.max_epochs ({settings.max_epochs})",
              "max_minutes": f"train.max_minutes ({settings.max_minutes:g} minutes of training, "
                             "counted over every session of the run)",
              "early stopping": f"early stopping (train.patience {settings.patience})"}
    if reason not in limits:
        return f"nothing to train ({reason}) at step {progress.step}"
    return (f"this run already reached {limits[reason]} at step {progress.step}: nothing to "
            "train; raise the limit with --set, or start over with --restart")


def _clean_checkpoint_dir(run_dir: Path, restart: bool) -> None:
    """Remove temporary files of interrupted writes; with ``restart``, everything."""
    directory = checkpoint_dir(run_dir)
    if restart:
        shutil.rmtree(directory, ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _checked_manifest(config: Config) -> dict[str, Any]:
    directory = data_dir(config)
    manifest = read_manifest(directory)
    if manifest is None:
        raise DataError(f"{directory}: no prepared data; run `s2s prepare` with this config "
                        "(and the same --set options) first")
    if manifest.get("config_hash") != data_config_hash(config):
        raise DataError(f"{directory}: prepared data no longer matches the config's data/vocab "
                        "settings; run `s2s prepare` again (with the same --set options)")
    return manifest


def _check_compatible(payload: dict[str, Any], config: Config, manifest: dict[str, Any],
                      path: Path) -> None:
    stored_model = payload["config"].get("model", {})
    current_model = config_to_dict(config.model)
    changed = [key for key in current_model if stored_model.get(key) != current_model[key]]
    if changed:
        key = changed[0]
        raise CheckpointError(f"{path}: trained with model.{key}={stored_model.get(key)!r} but the "
                              f"config says {current_model[key]!r}; use --restart to start over")
    if payload.get("data_hash") != manifest["config_hash"]:
        raise CheckpointError(f"{path}: was trained on differently prepared data; "
                              "use --restart to start over")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

