"""The run directory: every path under RUN_DIR, and the metrics log kept there.

    RUN_DIR/
      config.yaml        the resolved config of the last `s2s prepare`
      data/              prepared data (its contents: s2s.data.store)
      data.partial/      `s2s prepare` at work; renamed to data/ when complete
      checkpoints/       step-00001000.pt ..., last.pt, best.pt, avg.pt (format: s2s.run.checkpoint)
      metrics.jsonl      one JSON record per training log line and per validation
      train.lock         held by the one training process (s2s.run.lock)
      eval/              <split>.<checkpoint>.hyp, .json (and .align) from `s2s evaluate`
      plots/             curves.png and attention-<n>.png from `s2s plot`
      tensorboard/       event files, with train.tensorboard: true

No other module spells a name inside RUN_DIR; they ask a ``RunDir``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# checkpoints a user names instead of giving a path
NAMED_CHECKPOINTS = ("best", "last", "avg")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def data_partial(self) -> Path:
        return self.root / "data.partial"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "train.lock"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def checkpoint(self, name: str) -> Path:
        """``best``, ``last`` or ``avg``: the checkpoint of that name."""
        if name not in NAMED_CHECKPOINTS:
            raise ValueError(f"not a checkpoint name: {name}")
        return self.checkpoints / f"{name}.pt"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}.pt"

    def step_checkpoints(self) -> list[Path]:
        """Every step checkpoint, oldest first."""
        return sorted(self.checkpoints.glob("step-*.pt"))

    def eval_file(self, label: str, checkpoint: str, suffix: str) -> Path:
        """Where `s2s evaluate` keeps its output for a split (or input file) and checkpoint."""
        name = checkpoint if checkpoint in NAMED_CHECKPOINTS else Path(checkpoint).stem
        return self.root / "eval" / f"{label}.{name}{suffix}"

    # ------------------------------------------------------------------------ the metrics log

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records written so far (a line being written right now is skipped)."""
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def trim_metrics(self, step: int) -> None:
        """Drop records written after ``step``: a resumed run writes them again."""
        if self.metrics.exists():
            kept = [record for record in self.read_metrics() if record.get("step", 0) <= step]
            self.metrics.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n"
                                            for record in kept), encoding="utf-8")

    def remove_metrics(self) -> None:
        self.metrics.unlink(missing_ok=True)
