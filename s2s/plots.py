"""Pictures of a run: learning curves from its metrics log, and attention heatmaps.

Preparing the data (``curves_of``, ``heatmap_labels``) is kept apart from drawing it, and
drawing uses matplotlib's object-oriented API on the Agg backend: no pyplot, no global figure,
nothing that needs a display.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from s2s.errors import DataError, UsageError
from s2s.report import Reporter
from s2s.rundir import RunDir
from s2s.translation.alignment import Alignment
from s2s.translation.translator import load_translator

DPI = 120
# families that draw Chinese, Japanese and Korean, tried before searching every font
CJK_FAMILIES = ("Noto Sans CJK", "Noto Serif CJK", "Source Han Sans", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing", "AR PL UKai",
                "IPAGothic", "IPAexGothic", "TakaoGothic", "Unifont")


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: Any) -> None:
        if value is not None:
            self.steps.append(step)
            self.values.append(float(value))


@dataclass
class Curves:
    """What the learning-curve figure shows for one run, read from its metrics records."""

    label: str
    train_loss: Series = field(default_factory=Series)
    valid_loss: Series = field(default_factory=Series)
    valid_ppl: Series = field(default_factory=Series)
    bleu: Series = field(default_factory=Series)
    chrf: Series = field(default_factory=Series)
    lr: Series = field(default_factory=Series)
    minutes: Series = field(default_factory=Series)  # training minutes at each logged step
    best_step: int | None = None


def curves_of(records: Iterable[dict[str, Any]], label: str) -> Curves:
    """The series of a metrics log (``RunDir.read_metrics``); the best step is the last
    validation marked best."""
    curves = Curves(label)
    for record in records:
        step = record.get("step", 0)
        if "elapsed" in record:
            curves.minutes.add(step, record["elapsed"] / 60)
        if record.get("kind") == "train":
            curves.train_loss.add(step, record.get("loss"))
            curves.lr.add(step, record.get("lr"))
        elif record.get("kind") == "valid":
            curves.valid_loss.add(step, record.get("loss"))
            curves.valid_ppl.add(step, record.get("ppl"))
            curves.bleu.add(step, record.get("bleu"))
            curves.chrf.add(step, record.get("chrf"))
            if record.get("best"):
                curves.best_step = step
    return curves


def draw_curves(runs: list[Curves], output: Path, title: str) -> Path:
    """Four panels against steps: losses, validation perplexity, BLEU and chrF, learning
    rate; with one run, training minutes on a second axis, and the best step marked."""
    figure = Figure(figsize=(11, 7.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss, ppl, scores, rate = figure.subplots(2, 2).flat
    colours = [f"C{index}" for index in range(10)]
    for run, colour in zip(runs, colours * 10):
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        loss.plot(run.train_loss.steps, run.train_loss.values, color=colour, alpha=0.5,
                  label=f"{prefix}train (label-smoothed)")
        loss.plot(run.valid_loss.steps, run.valid_loss.values, color=colour, marker="o",
                  markersize=3, label=f"{prefix}valid")
        ppl.plot(run.valid_ppl.steps, run.valid_ppl.values, color=colour, marker="o",
                 markersize=3, label=run.label)
        scores.plot(run.bleu.steps, run.bleu.values, color=colour, marker="o", markersize=3,
                    label=f"{prefix}BLEU")
        scores.plot(run.chrf.steps, run.chrf.values, color=colour, linestyle="--",
                    label=f"{prefix}chrF")
        rate.plot(run.lr.steps, run.lr.values, color=colour, label=run.label)
        if run.best_step is not None:
            for axes in (loss, ppl, scores, rate):
                axes.axvline(run.best_step, color=colour, linestyle=":", linewidth=1)
            scores.annotate(f"best: step {run.best_step}", (run.best_step, 0),
                            xycoords=("data", "axes fraction"), xytext=(3, 4),
                            textcoords="offset points", fontsize=8, color=colour)
    loss.set(title="loss per target token", ylabel="nats")
    perplexities = [value for run in runs for value in run.valid_ppl.values]
    wide = bool(perplexities) and max(perplexities) > 10 * min(perplexities)
    ppl.set(title="validation perplexity", yscale="log" if wide else "linear")
    scores.set(title="validation BLEU and chrF", ylabel="score")
    rate.set(title="learning rate", yscale="log")
    for axes in (loss, ppl, scores, rate):
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    if len(runs) == 1 and len(runs[0].minutes.steps) > 1:
        _minutes_axis(loss, runs[0].minutes)
        loss.set_title("loss per target token", pad=32)  # above the minutes axis
    figure.suptitle(title)
    return save_figure(figure, output)


def _minutes_axis(axes: Any, minutes: Series) -> None:
    """Training minutes along the top of ``axes`` (steps and minutes rise together)."""
    steps, values = np.asarray(minutes.steps, float), np.asarray(minutes.values, float)
    order = np.argsort(steps)
    steps, values = steps[order], values[order]
    top = axes.secondary_xaxis("top", functions=(
        lambda s: np.interp(s, steps, values), lambda m: np.interp(m, values, steps)))
    top.set_xlabel("training minutes")


def heatmap_labels(attention: Alignment, drawable: bool) -> tuple[list[str], list[str]]:
    """Tick labels: the pieces (sentencepiece's word marker shown as "_"), or piece indices
    when no installed font can draw them."""
    if not drawable:
        return ([str(i) for i in range(len(attention.src_pieces))],
                [str(i) for i in range(len(attention.tgt_pieces))])
    return ([piece.replace("\u2581", "_") for piece in attention.src_pieces],
            [piece.replace("\u2581", "_") for piece in attention.tgt_pieces])


def attention_figure(attention: Alignment, title: str) -> tuple[Figure, bool]:
    """Source pieces across, target pieces down; darker is more attention. Also says whether
    the pieces could be drawn (else they are numbered: see ``NO_FONT``)."""
    font, drawable = font_for("".join(attention.src_pieces + attention.tgt_pieces + [title]))
    src_labels, tgt_labels = heatmap_labels(attention, drawable)
    rows, columns = attention.weights.shape
    width, height = max(5.0, 0.42 * columns + 2.5), max(4.0, 0.36 * rows + 2.0)
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(attention.weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    # by file, not by family name: a family matplotlib has not cached would be looked up again
    font_options = {"fontproperties": FontProperties(fname=font)} if font else {}
    axes.set_xticks(range(columns), src_labels, rotation=70, ha="right", **font_options)
    axes.set_yticks(range(rows), tgt_labels, **font_options)
    axes.set_xlabel("source pieces")
    axes.set_ylabel("target pieces")
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    axes.set_title(title if drawable else title.encode("ascii", "replace").decode(),
                   **({"fontproperties": FontProperties(fname=font, size=10)} if font
                      else {"fontsize": 10}))
    return figure, drawable


NO_FONT = ("no installed font draws these pieces' characters: the heatmap is labelled with "
           "piece indices (install a CJK font, e.g. Debian's fonts-noto-cjk)")


def font_for(text: str) -> tuple[str | None, bool]:
    """The file of a font that draws every character of ``text`` (None: matplotlib's default
    does), and whether one was found."""
    return _font_covering(frozenset(ord(c) for c in text if not c.isspace()))


@functools.lru_cache(maxsize=64)
def _font_covering(needed: frozenset[int]) -> tuple[str | None, bool]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    def covers(path: str) -> bool:
        try:
            return needed <= set(FT2Font(path).get_charmap())
        except (OSError, RuntimeError, ValueError):
            return False

    if covers(font_manager.findfont(font_manager.FontProperties())):
        return None, True
    known = sorted(font_manager.fontManager.ttflist,
                   key=lambda entry: not entry.name.startswith(CJK_FAMILIES))
    for entry in known:
        # matplotlib's Last Resort font "covers" everything with placeholder boxes
        if not entry.name.startswith("Last Resort") and covers(entry.fname):
            return entry.fname, True
    # matplotlib's font cache predates fonts installed since: look at the system's own list
    cached = {entry.fname for entry in known}
    for path in font_manager.findSystemFonts():
        if path not in cached and "LastResort" not in path and covers(path):
            return path, True
    return None, False


def next_free(directory: Path, stem: str) -> Path:
    """``directory/stem-<n>.png`` with the first n from 1 not taken."""
    number = 1
    while (directory / f"{stem}-{number}.png").exists():
        number += 1
    return directory / f"{stem}-{number}.png"


def save_figure(figure: Figure, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    return output


def figure_pixels(figure: Figure) -> np.ndarray:
    """The RGB pixels (H, W, 3) of a figure, for TensorBoard."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


# ------------------------------------------------------------------------- `s2s plot`

def plot_curves(run_dirs: list[Path], *, reporter: Reporter = Reporter()) -> Path:
    """``plots/curves.png`` in the first run directory, overlaying every run given."""
    names = [run_dir.name or str(run_dir) for run_dir in run_dirs]
    if len(set(names)) < len(names):  # runs/a/run and runs/b/run: label by the whole path
        names = [str(run_dir) for run_dir in run_dirs]
    runs = []
    for run_dir, name in zip(run_dirs, names):
        records = RunDir(run_dir).read_metrics()
        if not records:
            raise DataError(f"{RunDir(run_dir).metrics}: no metrics yet; train this run first "
                            "(the file appears after the first log line)")
        runs.append(curves_of(records, name))
    first = runs[0]
    if len(runs) == 1:
        metric = (f"best validation at step {first.best_step}" if first.best_step is not None
                  else "no validation yet")
        title = f"{run_dirs[0]}: training curves ({metric})"
    else:
        title = "training curves: " + ", ".join(run.label for run in runs)
    return draw_curves(runs, RunDir(run_dirs[0]).plots / "curves.png", title)


def plot_attention(run_dir: Path, sentence: str, *, checkpoint: str = "best",
                   device: str = "auto", reporter: Reporter = Reporter()) -> Path:
    """Translate ``sentence`` and draw where each target piece looked, into
    ``plots/attention-<n>.png``."""
    translator = load_translator(run_dir, checkpoint, device=device,
                                 check_run_vocabulary=False, reporter=reporter)
    result = translator.translate([sentence], with_attention=True)[0]
    if not result.alignments:
        raise UsageError("--attention: the sentence is empty; give a sentence to translate")
    title = (f"{run_dir.name} ({checkpoint}, step {translator.loaded.step}): "
             f"{_shortened(result.text)}")
    figure, drawable = attention_figure(result.alignments[0], title)
    if not drawable:
        reporter.warn(NO_FONT)
    return save_figure(figure, next_free(RunDir(run_dir).plots, "attention"))


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
