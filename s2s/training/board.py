"""TensorBoard event files of a run, written by rank 0 when ``train.tensorboard`` is on.

The scalars are exactly the records of ``metrics.jsonl`` (``<kind>/<key>`` against the step);
at each validation the attention heatmap of the first valid sentence is added as an image, so
a user can watch attention sharpen as training goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s2s.errors import ConfigError
from s2s.report import Reporter
from s2s.translation.alignment import Alignment


class Board:
    """A ``SummaryWriter`` on ``directory``; close it when training ends."""

    def __init__(self, directory: Path, reporter: Reporter) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard: true needs the tensorboard package; install "
                              "it with pip install 's2s[tensorboard]', or set "
                              "train.tensorboard: false") from None
        self.writer = SummaryWriter(log_dir=str(directory))
        self.reporter = reporter
        self.warned_about_fonts = False

    def record(self, record: dict[str, Any]) -> None:
        """One metrics record: every number in it, as ``<kind>/<key>`` at its step."""
        for key, value in record.items():
            if key in ("kind", "step") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
        self.writer.flush()

    def attention(self, attention: Alignment, step: int, title: str) -> None:
        # matplotlib loads here, not when training starts without TensorBoard (~0.8 s)
        from s2s.plots import NO_FONT, attention_figure, figure_pixels
        figure, drawable = attention_figure(attention, title)
        if not drawable and not self.warned_about_fonts:
            self.reporter.warn(NO_FONT)
            self.warned_about_fonts = True
        self.writer.add_image("valid/attention", figure_pixels(figure), step,
                              dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
