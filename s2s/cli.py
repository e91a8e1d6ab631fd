"""The `s2s` command line: thin wrappers over the library, and the one place errors become exits.

Heavy modules (torch above all) are imported inside the commands, so `s2s --help` is instant.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from s2s.errors import Interrupted, S2SError, UsageError

app = typer.Typer(help="Neural machine translation: prepare data, train, evaluate, translate.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)

ConfigArg = Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config file.",
                                           show_default=False)]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.lr=5e-4 (repeatable).")]

BeamOption = Annotated[Optional[int], typer.Option(metavar="K", help="Beam size.")]
SamplingOption = Annotated[bool, typer.Option(
    "--sampling", help="Draw each token from the model's distribution instead of searching "
                       "(--nbest N: N samples per line).")]
TemperatureOption = Annotated[Optional[float], typer.Option(
    metavar="T", help="Sampling temperature: below 1 sharper, above 1 flatter (default 1).")]
TopKOption = Annotated[Optional[int], typer.Option(
    "--top-k", min=1, metavar="K", help="Sample among the K likeliest tokens.")]
TopPOption = Annotated[Optional[float], typer.Option(
    "--top-p", metavar="P", help="Sample among the fewest likeliest tokens whose probability "
                                 "reaches P, in (0, 1].")]
SeedOption = Annotated[Optional[int], typer.Option(
    metavar="N", help="Sampling seed (default 1): a line's samples depend on it and the line "
                      "alone.")]
DeviceOption = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N.")]
RunConfigArg = Annotated[Optional[Path], typer.Argument(
    metavar="CONFIG", help="Config of the run (or use --run).", show_default=False)]
RunOption = Annotated[Optional[Path], typer.Option(metavar="RUN_DIR", help="Run directory.")]
CheckpointOption = Annotated[str, typer.Option(metavar="NAME",
                                               help="best, last, avg or a path.")]
ModelOption = Annotated[Optional[list[str]], typer.Option(
    "--model", metavar="RUN[:CHECKPOINT]",
    help="Another model to decode with as an ensemble (repeatable; CHECKPOINT: best, last, avg "
         "or a path; best when left out). Models must share both vocabularies.")]
WeightsOption = Annotated[Optional[str], typer.Option(
    metavar="W,W,...", help="Ensemble weights, one per model, the main model first "
                            "(default: equal). decode.ensemble_combine says how they combine.")]
AlignmentOption = Annotated[str, typer.Option(
    metavar="hard|soft", help="Add word alignments: hard as src-tgt pairs, soft as a JSON "
                              "matrix (target words x source words).")]


def _show_version(value: bool) -> None:
    if value:
        from s2s import __version__
        print(f"s2s {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Neural machine translation: prepare data, train, evaluate, translate."""


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print an S2SError as one line on stderr and exit with its code; no traceback."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except S2SError as error:
            prefix = "" if isinstance(error, Interrupted) else "error: "
            _print_error("\n".join(f"{prefix}{line}" for line in
                                   str(error).splitlines() or [type(error).__name__]))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader of our stdout went away (`| head`): stop quietly
            from s2s.report import point_at_devnull
            point_at_devnull(sys.stdout)
            raise typer.Exit(0) from None
    return wrapper


def _print_error(message: str) -> None:
    """Best effort: with stderr gone (a closed pipe or terminal) the exit code still tells."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        from s2s.report import point_at_devnull
        point_at_devnull(sys.stderr)


def _reporter(quiet: bool = False):
    from s2s.report import Reporter
    return Reporter() if quiet else Reporter.to_stderr()


def _load(config: Path, overrides: Optional[list]):
    from s2s.config import load_config
    return load_config(config, overrides or [])


@app.command()
@_handle_errors
def prepare(config: ConfigArg, overrides: SetOption = None,
            force: Annotated[bool, typer.Option(help="Rebuild even if up to date.")] = False
            ) -> None:
    """Clean the corpus, train sentencepiece vocabularies and encode all splits."""
    from s2s.data.prepare import prepare as run_prepare
    run_prepare(_load(config, overrides), force=force, reporter=_reporter())


@app.command()
@_handle_errors
def train(config: ConfigArg, overrides: SetOption = None,
          restart: Annotated[bool, typer.Option(help="Delete checkpoints and start over.")] = False,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --restart.")
                         ] = False,
          nproc: Annotated[int, typer.Option(min=1, metavar="N", help=(
              "Train with N processes on this machine (one per GPU, or gloo on CPU) via "
              "torchrun."))] = 1) -> None:
    """Train (or resume training) the model of a prepared run."""
    experiment = _load(config, overrides)
    if restart and not yes and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise UsageError("--restart under torchrun needs --yes: every process would ask")
    if restart and not yes and not typer.confirm(
            f"Delete the checkpoints in {experiment.run_dir} and start over?", err=True):
        raise typer.Exit(1)
    if nproc > 1:
        raise typer.Exit(_launch_processes(nproc, config, overrides or [], restart))
    from s2s.training.loop import train as run_train
    run_train(experiment, restart=restart, reporter=_reporter())


def _launch_processes(nproc: int, config: Path, overrides: list[str], restart: bool) -> int:
    """Run ``s2s train`` in ``nproc`` processes under torchrun; return its exit code."""
    import subprocess
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "s2s", "train", str(config)]
    command += [item for override in overrides for item in ("--set", override)]
    command += ["--restart", "--yes"] if restart else []
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:  # torchrun passes the signal on to every process
        return 130


@app.command()
@_handle_errors
def evaluate(config: ConfigArg, overrides: SetOption = None,
             split: Annotated[str, typer.Option(metavar="SPLIT", help="valid or test.")
                              ] = "test",
             checkpoint: Annotated[str, typer.Option(
                 metavar="NAMES", help="Comma-separated: best, last, avg or checkpoint paths.")
                                   ] = "best",
             src: Annotated[Optional[Path], typer.Option(
                  metavar="FILE", help="Source file instead of a split.")
                            ] = None,
             ref: Annotated[Optional[list[Path]], typer.Option(
                  metavar="FILE", help="Reference file for --src; repeat it for several "
                                       "references per line.")] = None,
             beam: BeamOption = None, device: DeviceOption = "auto",
             sampling: SamplingOption = False, temperature: TemperatureOption = None,
             top_k: TopKOption = None, top_p: TopPOption = None, seed: SeedOption = None,
             ter: Annotated[bool, typer.Option(help="Also report TER.")] = False,
             alignment: AlignmentOption = "none", model: ModelOption = None,
             weights: WeightsOption = None,
             baseline: Annotated[Optional[Path], typer.Option(
                 metavar="FILE", help="Hypotheses of the same split (another run's .hyp) to "
                                      "test the checkpoints against.")] = None,
             significance: Annotated[str, typer.Option(
                 metavar="bs|ar|none", help="Paired test of each system against the first "
                                            "(with two or more): bootstrap resampling, "
                                            "approximate randomisation, or none.")] = "bs"
             ) -> None:
    """Translate a split and report sacrebleu BLEU and chrF with their signatures (and, for
    several systems, their significance)."""
    from s2s.evaluation.evaluate import evaluate as run_evaluate
    changes = list(overrides or []) + _decode_overrides(beam, None, None) + _sampling_overrides(
        sampling, beam, temperature, top_k, top_p, seed)
    run_evaluate(_load(config, changes), split=split, checkpoints=checkpoint.split(","),
                 src_file=src, ref_files=ref or (), device=device, with_ter=ter,
                 alignment=alignment, ensemble=_model_refs(model), weights=_weights(weights),
                 baseline=baseline, significance=significance, reporter=_reporter())


@app.command()
@_handle_errors
def distill(config: ConfigArg,
            teacher: Annotated[list[str], typer.Option(
                metavar="RUN[:CHECKPOINT]",
                help="A teacher model (repeat it for an ensemble; CHECKPOINT: best, last, avg "
                     "or a path, best when left out).")],
            output: Annotated[Path, typer.Option(
                metavar="DIR", help="Folder of the distilled corpus (resumed when it holds "
                                    "this distillation).")],
            overrides: SetOption = None,
            corpus: Annotated[Optional[list[int]], typer.Option(
                metavar="N", help="Only corpus N of data.train (0 first; repeatable); "
                                  "default: every one.")] = None,
            beam: BeamOption = None, device: DeviceOption = "auto",
            weights: WeightsOption = None,
            min_chrf: Annotated[float, typer.Option(
                metavar="X", help="Drop pairs whose translation has a sentence chrF below X "
                                  "against the original target (0: keep all).")] = 0.0,
            max_ratio: Annotated[float, typer.Option(
                metavar="R", help="Drop pairs whose translation is over R times longer or "
                                  "shorter than the original target, in characters (0: keep "
                                  "all).")] = 0.0) -> None:
    """Translate the training corpus's source side with a teacher's beam search into a corpus
    a smaller student trains on (sequence-level knowledge distillation)."""
    from s2s.translation.distill import DistillFilters
    from s2s.translation.distill import distill as run_distill
    from s2s.translation.translator import ModelRef
    changes = list(overrides or []) + _decode_overrides(beam, None, None)
    run_distill(_load(config, changes),
                [ModelRef.parse(text, "--teacher") for text in teacher], output,
                corpora=corpus or (), filters=DistillFilters(min_chrf, max_ratio),
                weights=_weights(weights), device=device, reporter=_reporter())


@app.command()
@_handle_errors
def translate(config: RunConfigArg = None, run: RunOption = None,
              checkpoint: CheckpointOption = "best",
              input: Annotated[Optional[Path], typer.Option(
                  metavar="FILE", help="Read this file, not stdin.")
                               ] = None,
              output: Annotated[Optional[Path], typer.Option(
                  metavar="FILE", help="Write here, not stdout.")
                                ] = None,
              beam: BeamOption = None,
              nbest: Annotated[Optional[int], typer.Option(metavar="K",
                                                           help="Hypotheses per line.")] = None,
              sampling: SamplingOption = False, temperature: TemperatureOption = None,
              top_k: TopKOption = None, top_p: TopPOption = None, seed: SeedOption = None,
              batch_tokens: Annotated[Optional[int], typer.Option(
                  metavar="N", help="Source tokens x beam per batch.")] = None,
              alignment: AlignmentOption = "none", model: ModelOption = None,
              weights: WeightsOption = None,
              prefix: Annotated[bool, typer.Option(
                  "--prefix", help="Each line is the source, a tab and a prefix: the "
                                   "translation starts with the prefix exactly and continues "
                                   "it.")] = False,
              constraints: Annotated[bool, typer.Option(
                  "--constraints", help="Each line is the source and, after tabs, phrases "
                                        "that every translation contains (after the prefix "
                                        "with --prefix).")] = False,
              device: DeviceOption = "auto", overrides: SetOption = None) -> None:
    """Translate stdin (or --input) line by line to stdout (or --output)."""
    from s2s.translation.output import OutputFormat
    from s2s.translation.stream import translate_stream
    changes = list(overrides or []) + _decode_overrides(beam, nbest, batch_tokens) + (
        _sampling_overrides(sampling, beam, temperature, top_k, top_p, seed))
    OutputFormat(alignment=alignment)  # a bad --alignment fails before the model loads
    translator, _ = _translator(config, run, checkpoint, changes, device, model, weights)
    if constraints and translator.decode.sampling:
        raise UsageError("--constraints needs beam search; --sampling (decode.sampling) cannot "
                         "keep them: leave one out")
    output_format = OutputFormat(translator.decode.nbest, alignment)
    with _open_input(input) as source, _open_output(output) as target:
        total = _count_lines(input) if input is not None else None
        translate_stream(translator, source, target, output_format, progress_total=total,
                         prefix=prefix, constraints=constraints)


@app.command()
@_handle_errors
def serve(config: RunConfigArg = None, run: RunOption = None,
          checkpoint: CheckpointOption = "best",
          host: Annotated[str, typer.Option(metavar="HOST", help=(
              "Address to listen on; 0.0.0.0 exposes the server to the network."))
                          ] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, metavar="PORT")] = 8080,
          device: DeviceOption = "auto",
          max_batch_sentences: Annotated[int, typer.Option(
              min=1, metavar="N", help="Close a batch at N lines.")] = 64,
          max_wait_ms: Annotated[float, typer.Option(
              min=0, metavar="MS", help="Close a batch MS after its first request.")] = 10.0,
          max_lines: Annotated[int, typer.Option(
              min=1, metavar="N", help="Most lines in one request.")] = 256,
          max_chars: Annotated[int, typer.Option(
              min=1, metavar="N", help="Most characters in one request.")] = 100_000,
          model: ModelOption = None, weights: WeightsOption = None,
          overrides: SetOption = None) -> None:
    """Serve translations over HTTP (JSON API and a web page) until Ctrl-C or SIGTERM."""
    try:
        from s2s.serve.app import Limits, create_app
        from s2s.serve.app import serve as run_server
    except ImportError as error:
        raise UsageError(f"s2s serve needs the serve extra ({error.name} is missing): "
                         "pip install 's2s[serve]'") from None
    translator, run_dir = _translator(config, run, checkpoint, list(overrides or []), device,
                                      model, weights)
    application = create_app(translator, max_batch_sentences=max_batch_sentences,
                             max_wait_ms=max_wait_ms,
                             limits=Limits(max_lines=max_lines, max_chars=max_chars))
    run_server(application, host, port,
               on_ready=lambda url: print(f"serving {run_dir} at {url}", flush=True))


@app.command()
@_handle_errors
def average(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory.")],
            last: Annotated[int, typer.Option(min=1, metavar="N",
                                              help="How many newest checkpoints.")] = 3
            ) -> None:
    """Average the newest step checkpoints of a run into checkpoints/avg.pt."""
    from s2s.run.checkpoint import average_checkpoints
    average_checkpoints(run_dir, last, reporter=_reporter())


@app.command()
@_handle_errors
def export(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory.")],
           checkpoint: CheckpointOption = "best",
           int8: Annotated[bool, typer.Option(
               "--int8", help="Quantise the graphs' matmuls to int8 (onnxruntime).")] = False,
           output: Annotated[Optional[Path], typer.Option(
               metavar="DIR", help="The folder to write (default RUN_DIR/export/CHECKPOINT); "
                                   "it must not exist.")] = None) -> None:
    """Export a checkpoint as ONNX graphs with a reader that translates without PyTorch."""
    from s2s.export.graphs import export_run
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a run directory")
    folder = export_run(run_dir, checkpoint, output=output, int8=int8, reporter=_reporter())
    print(folder)


@app.command()
@_handle_errors
def plot(run_dirs: Annotated[list[Path], typer.Argument(
             metavar="RUN_DIR...", help="Run directories; several are overlaid.",
             show_default=False)],
         attention: Annotated[Optional[str], typer.Option(
             metavar="SENTENCE", help="Translate SENTENCE and draw its attention heatmap.")
                              ] = None,
         checkpoint: CheckpointOption = "best", device: DeviceOption = "auto") -> None:
    """Draw learning curves (RUN_DIR/plots/curves.png) or an attention heatmap; print the path."""
    from s2s.plots import plot_attention, plot_curves
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UsageError(f"{run_dir}: not a run directory")
    if attention is None:
        path = plot_curves(run_dirs, reporter=_reporter())
    else:
        if len(run_dirs) > 1:
            raise UsageError("--attention draws one run's model: give one RUN_DIR")
        path = plot_attention(run_dirs[0], attention, checkpoint=checkpoint, device=device,
                              reporter=_reporter())
    print(path)


@app.command("demo-data")
@_handle_errors
def demo_data(directory: Annotated[Path, typer.Argument(
        metavar="DIRECTORY", help="Where to write the corpus.")
                                   ] = Path("data/demo-en-de")) -> None:
    """Write the built-in English→German demo corpus (no download needed)."""
    from s2s.data.demo import write_demo_corpus
    counts = write_demo_corpus(directory)
    _reporter().info(f"wrote {directory}/{{train,valid,test}}.{{en,de}}: " +
                     ", ".join(f"{split} {count}" for split, count in counts.items()))


def _translator(config: Optional[Path], run: Optional[Path], checkpoint: str,
                overrides: list, device: str, models: Optional[list[str]] = None,
                weights: Optional[str] = None):
    """The translator of a run's checkpoint (with ``models``: of an ensemble), decoding as
    CONFIG (or, with --run, as stored in the checkpoint) and ``overrides`` say; and the run
    directory."""
    from s2s.translation.translator import load_translator
    experiment = _translation_config(config, run, overrides)
    ensemble = {"ensemble": _model_refs(models), "weights": _weights(weights)}
    if experiment is None:
        assert run is not None
        translator = load_translator(run, checkpoint, overrides=overrides, device=device,
                                     reporter=_reporter(), **ensemble)
        return translator, run
    translator = load_translator(experiment.run_dir, checkpoint, decode=experiment.decode,
                                 threads=experiment.train.threads, device=device,
                                 reporter=_reporter(), **ensemble)
    return translator, experiment.run_dir


def _model_refs(models: Optional[list[str]]):
    from s2s.translation.translator import ModelRef
    return [ModelRef.parse(text) for text in models or []]


def _weights(text: Optional[str]) -> Optional[list[float]]:
    """--weights 2,1 -> [2.0, 1.0]; each a positive number."""
    if text is None:
        return None
    try:
        weights = [float(item) for item in text.split(",")]
    except ValueError:
        weights = []
    if not weights or not all(0 < weight < float("inf") for weight in weights):
        raise UsageError(f"--weights {text}: expected positive numbers separated by commas, "
                         "one per model (the main model first), e.g. --weights 2,1")
    return weights


def _translation_config(config: Optional[Path], run: Optional[Path], overrides: list[str]):
    """The config, changed by ``overrides``, whose decode and threads settings translate; or
    None with --run, where ``overrides`` change those stored in the checkpoint."""
    if (config is None) == (run is None):
        raise UsageError("give a CONFIG or --run RUN_DIR (one of them)")
    if run is not None:
        if not run.is_dir():
            raise UsageError(f"--run {run}: not a directory")
        return None
    return _load(config, overrides)


def _decode_overrides(beam: Optional[int], nbest: Optional[int],
                      batch_tokens: Optional[int]) -> list:
    """The decode options given, as typed overrides that errors name as the user typed them."""
    from s2s.config import Override
    options = (("decode.beam_size", beam, "--beam"), ("decode.nbest", nbest, "--nbest"),
               ("decode.batch_tokens", batch_tokens, "--batch-tokens"))
    return [Override.option(key, value, name) for key, value, name in options
            if value is not None]


def _sampling_overrides(sampling: bool, beam: Optional[int], temperature: Optional[float],
                        top_k: Optional[int], top_p: Optional[float], seed: Optional[int]
                        ) -> list:
    """--sampling and its settings as typed decode overrides; --sampling without --beam sets
    the beam to 1 (a --beam above 1 is then an error, from the config's check)."""
    from s2s.config import Override
    options = (("decode.temperature", temperature, "--temperature"),
               ("decode.top_k", top_k, "--top-k"), ("decode.top_p", top_p, "--top-p"),
               ("decode.seed", seed, "--seed"))
    changes = [Override.option(key, value, name) for key, value, name in options
               if value is not None]
    if not sampling:
        return changes
    return [Override.option("decode.sampling", True, "--sampling"),
            *([] if beam is not None else [Override.option("decode.beam_size", 1, "--sampling")]),
            *changes]


def _open_input(path: Optional[Path]):
    import contextlib
    if path is None:
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as error:
        from s2s.errors import DataError
        raise DataError(f"{path}: cannot read: {error.strerror}") from None


def _open_output(path: Optional[Path]):
    import contextlib
    if path is None:
        return contextlib.nullcontext(sys.stdout)
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as error:
        from s2s.errors import DataError
        raise DataError(f"{path}: cannot write: {error.strerror}") from None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as stream:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))


def main() -> None:
    """The ``s2s`` command's entry point: the process's own settings, then the app."""
    from s2s.allocator import keep_freed_memory

    keep_freed_memory()
    app()
