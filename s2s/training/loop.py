"""`s2s train`: the training loop, with validation, checkpoints, resume and clean stops.

``train`` sets a session up and ``_train_loop`` runs it; every event of a step (learning rate,
update, log, validation, signals, limits) is visible in that loop, in order. The update itself
is ``Learner.step`` (s2s.training.learner), validation is
``s2s.evaluation.validation.validate`` (the same numbers `s2s evaluate` reports), the checkpoint
format is s2s.run.checkpoint's and the files are where s2s.rundir says.

Resuming reproduces an uninterrupted run: batches of an epoch come from a generator seeded by
(seed, epoch), the checkpoint records how many of them were consumed, and RNG, optimizer and
schedule state are restored. Ctrl-C, SIGTERM or SIGHUP finishes the current update, saves,
and exits.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from s2s.config import Config, DecodeConfig, TrainConfig, dump_config
from s2s.data.batching import Batch, collate, epoch_sample, token_batches, training_lengths
from s2s.data.resegment import Resegmentation, ResegmentedBatches
from s2s.data.store import EncodedSplit, PreparedData, write_text
from s2s.data.vocab import Tokenizer
from s2s.device import (
    check_precision,
    decode_dtype,
    resolve_device,
    thread_scope,
    with_resolved_precision,
)
from s2s.errors import Interrupted
from s2s.evaluation.scoring import Scorer
from s2s.evaluation.validation import (
    BACKWARDS,
    EvaluationSet,
    Validation,
    attention_direction,
    validate,
)
from s2s.report import Reporter
from s2s.run.checkpoint import (
    LoadedModel,
    TrainingCheckpoints,
    TrainingState,
    average_checkpoints,
    link_atomic,
    load_checkpoint,
    remove_partial_writes,
    target_tag_ids,
)
from s2s.run.lock import RunLock
from s2s.rundir import RunDir
from s2s.training.board import Board
from s2s.training.distributed import World
from s2s.training.learner import Learner, StepResult
from s2s.training.schedule import guidance, learning_rate, planned_steps
from s2s.training.signals import StopSignals
from s2s.translation.translator import Translator

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "loss": False}


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
    planned_steps: int = 0  # where the linear schedule ends, as far as known
    seconds: float = 0.0  # training time over all sessions of this run
    target_tokens: int = 0
    validated_step: int = -1  # the step of the latest validation
    stop_reason: str = ""


def train(config: Config, *, restart: bool = False, reporter: Reporter = Reporter(),
          should_stop: Callable[[TrainProgress], bool] | None = None) -> TrainProgress:
    """Train the run described by ``config``, resuming from its last checkpoint if any.

    Started by torchrun, every process calls this; they train one model together.
    ``should_stop`` (for tests and embedding) is asked after every step.
    """
    with thread_scope(config.train.threads), _own_rng(config.train.device):
        world = World.from_environment()
        reporter = reporter if world.is_main else Reporter()
        device = world.device(resolve_device(config.train.device))
        config = with_resolved_precision(config, device)
        check_precision(device, config.train.precision, "train.precision")
        world.start(device)
        learner = session = None
        try:
            world.check_shared(config.run_dir)  # before reading it: a node may not see it
            prepared = PreparedData.of(config)
            learner = Learner(config, *prepared.vocab_sizes, prepared.joint, device=device,
                              world=world)
            session = _Session.open(config, prepared, learner, reporter, should_stop)
            # one training job per run directory: rank 0 holds the lock before touching anything
            lock = RunLock(config.run_dir) if world.is_main else contextlib.nullcontext()
            with lock, StopSignals() as signals:
                progress = _start(session, restart)
                progress = _train_loop(session, progress, signals)
        finally:
            if session is not None and session.board is not None:
                session.board.close()
            if session is not None and session.resegmenter is not None:
                session.resegmenter.close()
            if learner is not None:
                learner.close()
            world.stop()
    reporter.info(f"training stopped ({progress.stop_reason}) at step {progress.step}; "
                  f"best {config.train.early_stopping_metric} at step {progress.best_step}")
    return progress


@dataclass(frozen=True)
class _Session:
    """What one training session works with. Nothing here changes while it trains: the
    changing state is the learner's weights and the ``TrainProgress``."""

    config: Config
    run: RunDir
    world: World
    learner: Learner
    checkpoints: TrainingCheckpoints
    train_data: EncodedSplit
    corpus_sizes: list[int]  # training pairs per corpus of data.train, in the split's order
    valid_data: EvaluationSet | None  # rank 0 validates
    valid_decode: DecodeConfig  # the config's decode train_config with train.valid_beam_size
    valid_dtype: torch.dtype  # the weights' dtype for validation's decoding
    tokenizers: tuple[Tokenizer, Tokenizer]
    reporter: Reporter
    clock: "_Clock"
    should_stop: Callable[[TrainProgress], bool] | None
    board: Board | None  # TensorBoard, on rank 0 with train.tensorboard
    resegmenter: ResegmentedBatches | None  # with subword regularisation (vocab.sampling_*)

    @classmethod
    def open(cls, config: Config, prepared: PreparedData, learner: Learner, reporter: Reporter,
             should_stop: Callable[[TrainProgress], bool] | None) -> "_Session":
        vocabularies = prepared.vocabularies()
        run = RunDir(config.run_dir)
        if learner.world.is_main:  # what this training ran with, --set overrides included
            write_text(run.config_file, dump_config(config))
        checkpoints = TrainingCheckpoints(run, config, vocabularies, prepared.joint,
                                          prepared.config_hash)
        valid = EvaluationSet.of_run(config, "valid") if learner.world.is_main else None
        tokenizers = (Tokenizer(vocabularies["src"]), Tokenizer(vocabularies["tgt"]))
        board = Board(run.tensorboard, reporter) if (
            config.train.tensorboard and learner.world.is_main) else None
        # validation decodes over the whole vocabulary, the shortlist being a deployment choice
        valid_decode = replace(config.decode, beam_size=config.train.valid_beam_size, nbest=1,
                               shortlist=0)
        valid_dtype = decode_dtype(valid_decode, config.train.precision, learner.device,
                                   config.model.decoder_hidden)
        corpora = config.data.train
        if len(corpora) > 1:
            reporter.info("each epoch draws " + ", ".join(
                f"{round(corpus.weight * size):,} pairs of {corpus.path.name} ({size:,} x "
                f"{corpus.weight:g})" for corpus, size in zip(corpora, prepared.corpus_sizes)))
        vocab = config.vocab
        resegmenter = ResegmentedBatches(prepared.directory, Resegmentation(
            vocab.sampling_alpha, vocab.sampling_nbest, config.data.tags),
            config.train.seed) if vocab.sampling_alpha else None
        return cls(config, run, learner.world, learner, checkpoints, prepared.split("train"),
                   prepared.corpus_sizes, valid, valid_decode, valid_dtype, tokenizers,
                   reporter, _Clock(), should_stop, board, resegmenter)

    @property
    def device(self) -> torch.device:
        return self.learner.device


def _train_loop(session: _Session, progress: TrainProgress, signals: "StopSignals"
                ) -> TrainProgress:
    """Train until a limit is reached; returns the final progress."""
    train_config, learner = session.config.train, session.learner
    group_size = train_config.accumulate * session.world.size  # batches per step, all processes
    reason = _stop_reason(session, progress)
    if reason:
        session.reporter.warn(_nothing_to_do(progress, reason, train_config))
    first_step = progress.step
    pace = _Pace(progress.step, session.clock.elapsed())
    while not reason:
        steps_in_epoch, my_batches = _epoch_batches(session, progress)
        _plan(session, progress, steps_in_epoch, pace)
        window = _Window()
        with session.reporter.progress(f"epoch {progress.epoch}", total=steps_in_epoch) as bar:
            bar.update(completed=progress.batches_done // group_size)
            for batches in _step_batches(session, my_batches, progress.epoch):
                lr = learning_rate(train_config, progress.step, progress.lr_scale,
                                   progress.planned_steps)
                result = learner.step(batches, lr, guidance(train_config, progress.step))
                progress.step += 1
                progress.batches_done += group_size
                progress.target_tokens += result.target_tokens
                window.add(result)
                bar.advance(status=f"step {progress.step} " + window.status(lr))
                if progress.step % train_config.log_every == 0:
                    _log_train(session, progress, window.flush(), lr)
                    _plan(session, progress, steps_in_epoch, pace)
                if progress.step % train_config.valid_every == 0:
                    progress = _validate_and_save(session, progress)
                _stop_if_signalled(session, progress, signals)
                reason = _stop_reason(session, progress)
                if reason:
                    break
            else:
                progress.epoch += 1
                progress.batches_done = 0
                reason = _stop_reason(session, progress)
    progress.stop_reason = reason
    if reason == "stopped by caller":
        _save(session, progress)  # an interruption: validating would change the schedule
    elif progress.step and progress.validated_step != progress.step:
        progress = _validate_and_save(session, progress)
    trained = progress.step > first_step and reason != "stopped by caller"
    if trained and train_config.average_last > 1:
        progress = _average_at_the_end(session, progress)
    return progress


class _Pace:
    """Seconds per optimizer step in this session, validations included."""

    def __init__(self, step: int, elapsed: float) -> None:
        self.step, self.elapsed = step, elapsed

    def seconds_per_step(self, step: int, elapsed: float) -> float:
        return (elapsed - self.elapsed) / (step - self.step) if step > self.step else 0.0


def _plan(session: _Session, progress: TrainProgress, steps_per_epoch: int, pace: _Pace
          ) -> None:
    """Set where the linear schedule ends: rank 0's projection, on every process. A resumed
    run keeps its plan until this session's pace is measured."""
    train_config = session.config.train
    if train_config.lr_schedule != "linear":
        return
    elapsed = session.clock.elapsed()
    seconds_per_step = pace.seconds_per_step(progress.step, elapsed)
    if train_config.max_minutes and not seconds_per_step and progress.planned_steps:
        return
    plan = planned_steps(train_config, steps_per_epoch=steps_per_epoch, step=progress.step,
                         elapsed=elapsed, seconds_per_step=seconds_per_step)
    progress.planned_steps = session.world.share(plan)


def _step_batches(session: _Session, steps: list[list[np.ndarray]], epoch: int
                  ) -> Iterator[list[Batch]]:
    """Each step's batches: the prepared pairs, or with subword regularisation the pairs
    segmented anew (made ahead in a worker process)."""
    if session.resegmenter is None:
        return ([collate(session.train_data, indices) for indices in step] for step in steps)
    return session.resegmenter.steps(steps, epoch)


def _epoch_batches(session: _Session, progress: TrainProgress
                   ) -> tuple[int, list[list[np.ndarray]]]:
    """The number of steps in this epoch, and this process's batches (its share of each
    step's global group) for every step the run has not taken yet."""
    train_config, world = session.config.train, session.world
    lengths = training_lengths(session.train_data)
    sample = epoch_sample(session.corpus_sizes, [corpus.weight for corpus in
                                                 session.config.data.train],
                          seed=train_config.seed, epoch=progress.epoch)
    if sample is None:
        batches = token_batches(lengths, train_config.batch_tokens, seed=train_config.seed,
                                epoch=progress.epoch)
    else:  # batches of positions in the sample, turned into pairs of the split
        batches = [sample[batch] for batch in token_batches(
            lengths[sample], train_config.batch_tokens, seed=train_config.seed,
            epoch=progress.epoch)]
    group_size = train_config.accumulate * world.size
    # with several processes, every one must take the same number of steps: drop the rest
    steps = (len(batches) // group_size if world.distributed
             else math.ceil(len(batches) / group_size))
    mine = []
    for step in range(progress.batches_done // group_size, steps):
        start = step * group_size + world.rank * train_config.accumulate
        mine.append(batches[start:start + train_config.accumulate])
    return steps, mine


# ------------------------------------------------------------------- start, resume, save

def _start(session: _Session, restart: bool) -> TrainProgress:
    """Clean the run directory (rank 0), then resume from ``last.pt`` if the run has one."""
    if session.world.is_main:
        if restart:
            session.checkpoints.start_over()
            session.run.remove_metrics()
        remove_partial_writes(session.run.checkpoints)
    session.world.barrier()
    resumed = session.checkpoints.resume()
    if resumed is None:
        return TrainProgress()
    state, path = resumed
    session.learner.load_state(state.model, state.optimizer, state.scaler)
    progress = replace(TrainProgress(**state.progress), stop_reason="")
    torch.set_rng_state(state.rng["torch"])
    if session.device.type == "cuda" and state.rng.get("cuda") is not None:
        torch.cuda.set_rng_state(state.rng["cuda"], session.device)
    session.learner.seed_dropout(step=progress.step)
    session.clock.resume_from(progress.seconds)
    if session.world.is_main:
        session.run.trim_metrics(progress.step)
    session.reporter.info(f"resuming from {path} at step {progress.step}, "
                          f"epoch {progress.epoch}")
    return progress


def _save(session: _Session, progress: TrainProgress, *, best: bool = False) -> str:
    """Rank 0 writes a checkpoint; returns its path (for messages)."""
    if not session.world.is_main:
        return "a checkpoint"
    progress.seconds = session.clock.elapsed()
    device = session.device
    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    state = TrainingState(**session.learner.state(), progress=asdict(progress), rng=rng)
    return str(session.checkpoints.save(state, best=best))


# ----------------------------------------------------------------------------- validation

def _validate_and_save(session: _Session, progress: TrainProgress) -> TrainProgress:
    """Rank 0 validates and saves; every process then adopts its updated progress."""
    if not session.world.is_main:
        return session.world.share(None)
    validation = _validate(session, progress.step)
    metrics = _metrics(validation)
    direction = _attention_direction(session)
    improved = _track_best(session, progress, metrics)
    progress.validated_step = progress.step
    _save(session, progress, best=improved)
    session.world.share(progress)
    record = {"kind": "valid", "step": progress.step,
              "elapsed": round(session.clock.elapsed(), 2), **metrics,
              "attention_direction": direction,
              "bleu_signature": validation.scores.signatures["bleu"],
              "seconds": validation.seconds, "best": improved}
    session.run.append_metrics(record)
    if session.board is not None:
        session.board.record(record)
    mark = " (new best)" if improved else ""
    tokenized = validation.scores.tokenized_bleu
    session.reporter.info(
        f"validation at step {progress.step}: loss {validation.loss:.3f}, "
        f"ppl {validation.ppl:.2f}, BLEU {validation.scores.bleu:.2f}, "
        f"chrF {validation.scores.chrf:.2f}"
        + (f", BLEU (tok) {tokenized:.2f}" if tokenized is not None else "")
        + (f", attention {direction:+.2f}" if direction is not None else "") + mark)
    if direction is not None and direction < BACKWARDS:
        session.reporter.warn(
            f"step {progress.step}: the attention runs backwards (direction {direction:+.2f}; "
            "forwards is about +1): this run started badly and may stay far below its "
            "seed's usual BLEU; train again with another train.seed, or with "
            "train.guided_attention_steps (BENCHMARKS.md, \"Attention that runs backwards\")")
    return progress


def _attention_direction(session: _Session) -> float | None:
    """Which way the model's attention runs on the validation pairs (``attention_direction``)."""
    assert session.valid_data is not None
    if session.valid_data.encoded is None:
        return None
    return attention_direction(session.learner.model, session.valid_data.encoded,
                               session.device)


def _metrics(validation: Validation) -> dict[str, float]:
    """What a validation records in the metrics log (and what early stopping reads)."""
    scores = validation.scores
    metrics = {"loss": validation.loss, "ppl": validation.ppl, "bleu": scores.bleu,
               "chrf": scores.chrf}
    if scores.tokenized_bleu is not None:
        metrics["tokenized_bleu"] = scores.tokenized_bleu
    return metrics  # type: ignore[return-value]


def _average_at_the_end(session: _Session, progress: TrainProgress) -> TrainProgress:
    """Rank 0 averages the newest ``train.average_last`` step checkpoints into avg.pt and
    validates it; when it beats the best validation so far, best.pt becomes the average."""
    if not session.world.is_main:
        return session.world.share(None)
    train_config = session.config.train
    path = average_checkpoints(session.run.root, train_config.average_last,
                               reporter=session.reporter)
    averaged = load_checkpoint(path)
    model = session.learner.model
    training_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(averaged["model"])
    try:
        validation = _validate(session, progress.step)
    finally:
        model.load_state_dict(training_weights)
    metrics = _metrics(validation)
    metric = train_config.early_stopping_metric
    score = metrics[metric] if HIGHER_IS_BETTER[metric] else -metrics[metric]
    improved = progress.best_score is None or score > progress.best_score
    if improved:
        link_atomic(path, session.run.checkpoint("best"))
        progress.best_score, progress.best_step = score, progress.step
        _save(session, progress)  # last.pt remembers the new best score
    session.world.share(progress)
    session.run.append_metrics({"kind": "average", "step": progress.step,
                                "averaged_from": averaged["averaged_from"], **metrics,
                                "bleu_signature": validation.scores.signatures["bleu"],
                                "best": improved})
    verdict = "now best.pt" if improved else "best.pt stays"
    session.reporter.info(
        f"validation of {path.name}: loss {validation.loss:.3f}, BLEU "
        f"{validation.scores.bleu:.2f}, chrF {validation.scores.chrf:.2f} ({verdict})")
    return progress


def _validate(session: _Session, step: int) -> Validation:
    """Validate the weights as they are now, decoding as `s2s evaluate` would with
    ``train.valid_beam_size`` beams (the translator leaves the training model as it is)."""
    config = session.config
    model = session.learner.model
    tags = target_tag_ids(config, session.tokenizers[1])
    if tags:  # as a checkpoint decodes: never a tag; the training model keeps learning its bias
        model = copy.deepcopy(model)
        model.never_produce(tags)
    loaded = LoadedModel(config, model, *session.tokenizers, step=step)
    translator = Translator(loaded, decode=session.valid_decode, device=session.device,
                            dtype=session.valid_dtype, threads=config.train.threads)
    assert session.valid_data is not None
    validation = validate(translator, session.valid_data)
    if session.board is not None and session.valid_data.sources:
        # the same sentence every time: watch its attention sharpen
        result = translator.translate(session.valid_data.sources[:1], with_attention=True)[0]
        if result.alignments:
            session.board.attention(result.alignments[0], step,
                                    f"step {step}: {result.text[:60]}")
    # the references as scored: plain text where they are written the Moses way
    shown = Scorer.of(config).detokenized([session.valid_data.references[0][:3]])[0]
    for index in range(min(3, len(validation.hypotheses))):
        session.reporter.info(f"  ref: {shown[index]}\n  hyp: {validation.hypotheses[index]}")
    return validation


def _track_best(session: _Session, progress: TrainProgress, metrics: dict[str, float]
                ) -> bool:
    """Update best score, early-stopping and plateau counters; True when improved."""
    train_config = session.config.train
    metric = train_config.early_stopping_metric
    score = metrics[metric] if HIGHER_IS_BETTER[metric] else -metrics[metric]
    if progress.best_score is None or score > progress.best_score:
        progress.best_score, progress.best_step = score, progress.step
        progress.bad_validations = progress.plateau_bad = 0
        return True
    progress.bad_validations += 1
    progress.plateau_bad += 1
    if (train_config.lr_schedule == "plateau"
            and progress.plateau_bad > train_config.plateau_patience):
        progress.lr_scale *= train_config.plateau_factor
        progress.plateau_bad = 0
        rate = learning_rate(train_config, progress.step, progress.lr_scale)
        session.reporter.info(f"no improvement in {metric}: learning rate now {rate:.2e}")
    return False


# ------------------------------------------------------------------- limits, logs, signals

def _stop_reason(session: _Session, progress: TrainProgress) -> str:
    """Why training stops now ("" to go on); every process stops at the same step."""
    train_config = session.config.train
    reasons = [
        (train_config.max_steps and progress.step >= train_config.max_steps, "max_steps"),
        (train_config.max_epochs and progress.epoch > train_config.max_epochs, "max_epochs"),
        (train_config.max_minutes and session.clock.elapsed() >= 60 * train_config.max_minutes,
         "max_minutes"),
        (train_config.patience and progress.bad_validations >= train_config.patience,
         "early stopping"),
        (session.should_stop is not None and session.should_stop(progress),
         "stopped by caller"),
    ]
    reason = next((reason for reached, reason in reasons if reached), "")
    if session.world.any(bool(reason), session.device):
        return reason or "another process stopped"
    return ""


def _log_train(session: _Session, progress: TrainProgress, stats: dict[str, float],
               lr: float) -> None:
    if not session.world.is_main:
        return
    record = {"kind": "train", "step": progress.step, "epoch": progress.epoch, "lr": lr,
              "elapsed": round(session.clock.elapsed(), 2), **stats}
    session.run.append_metrics(record)
    if session.board is not None:
        session.board.record(record)
    console = session.reporter.console
    if not (console and console.is_terminal):  # a terminal has the progress bar instead
        session.reporter.info(
            f"step {record['step']} epoch {record['epoch']} loss {stats['loss']:.3f} "
            f"ppl {stats['ppl']:.2f} lr {lr:.2e} {stats['tokens_per_second']:,.0f} tok/s")


def _stop_if_signalled(session: _Session, progress: TrainProgress,
                       signals: "StopSignals") -> None:
    """After SIGINT/SIGTERM/SIGHUP on any process: save (rank 0) and stop every process."""
    if not session.world.any(signals.received is not None, session.device):
        return
    number = signals.received or signal.SIGTERM
    path = _save(session, progress)
    session.world.barrier()
    raise Interrupted(f"{signal.Signals(number).name} received: saved {path} at step "
                      f"{progress.step}; run the same command again to resume", number)


class _Clock:
    """Training time of the whole run: earlier sessions' seconds plus this session's."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.before = 0.0

    def resume_from(self, seconds: float) -> None:
        self.before = seconds

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started


class _Window:
    """Loss and throughput since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.nll = 0.0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, result: StepResult) -> None:
        self.loss += result.loss
        self.nll += result.nll
        self.tokens += result.target_tokens

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


def _own_rng(device: str) -> contextlib.AbstractContextManager:
    """Training seeds torch's generators; the caller's streams are restored afterwards."""
    cuda = device != "cpu" and torch.cuda.is_available()
    return torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else [])


def _nothing_to_do(progress: TrainProgress, reason: str, train_config: TrainConfig) -> str:
    """Why a resumed run trains no further, and what to change."""
    limits = {"max_steps": f"train.max_steps ({train_config.max_steps})",
              "max_epochs": f"train.max_epochs ({train_config.max_epochs})",
              "max_minutes": f"train.max_minutes ({train_config.max_minutes:g} minutes of "
                             "training, counted over every session of the run)",
              "early stopping": f"early stopping (train.patience {train_config.patience})"}
    if reason not in limits:
        return f"nothing to train ({reason}) at step {progress.step}"
    return (f"this run already reached {limits[reason]} at step {progress.step}: nothing to "
            "train; raise the limit with --set, or start over with --restart")
