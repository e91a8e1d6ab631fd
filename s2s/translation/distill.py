"""`s2s distill`: sequence-level knowledge distillation's corpus (Kim and Rush 2016). A
teacher (a model or an ensemble) translates the source side of the training corpora with beam
search; a smaller student trained on those translations learns the teacher's mode.

The corpora are streamed in parts of ``PART_LINES`` lines. Each part is translated, filtered
and written whole (a temporary file renamed into place, its record last), so a stopped
distillation (Ctrl-C, SIGTERM, a kill) resumes at the first missing part and never reads a
half-written line. The output folder describes its distillation in ``distill.json`` (teachers,
search, corpora, filters); a folder that holds another distillation is refused. When every
part is there they are joined into ``train.<src_lang>`` and ``train.<tgt_lang>``, which a
student's config names as ``data.train: OUTPUT/train``; those two files appear only then.

Without filters N source lines give N pairs: the source line as it is, and the teacher's
translation (an empty line gives an empty translation). Filters drop pairs the teacher
translated badly and count each rule, as `s2s prepare` does.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from sacrebleu.metrics import CHRF

from s2s.config import Config
from s2s.data.chunks import read_chunks
from s2s.data.text import count_lines, decode_line, parallel_paths
from s2s.errors import UsageError
from s2s.files import write_text_whole
from s2s.report import Reporter, make_table
from s2s.translation.translator import ModelRef, Translator, load_translator

PART_LINES = 5000  # lines translated and written as one part: what a stop can lose
RECORD = "distill.json"
DROP_RULES = ("empty translation", "low chrF", "length ratio")


@dataclass(frozen=True)
class DistillFilters:
    """Which teacher translations are dropped; 0 turns a rule off."""

    min_chrf: float = 0.0  # sentence chrF against the original target below this
    max_ratio: float = 0.0  # longer / shorter of translation and original target, in characters


@dataclass(frozen=True)
class DistillResult:
    directory: Path
    lines: int  # source lines read
    pairs: int  # pairs written
    dropped: dict[str, int]
    parts_resumed: int  # parts found finished from an earlier run


def distill(config: Config, teachers: Sequence[ModelRef], output: Path, *,
            corpora: Sequence[int] = (), filters: DistillFilters = DistillFilters(),
            weights: Sequence[float] | None = None, device: str = "auto",
            reporter: Reporter = Reporter()) -> DistillResult:
    """Translate the source side of ``config.data.train`` (the corpora at ``corpora``, every
    one when empty) with ``teachers`` decoding as one ensemble, with ``config.decode``'s
    search, into ``output`` (module docstring)."""
    if not teachers:
        raise UsageError("--teacher: name at least one teacher run (RUN[:CHECKPOINT])")
    selected = _selected_corpora(config, corpora)
    translator = _teacher(config, teachers, weights, device, reporter)
    identity = _identity(config, teachers, translator, selected, filters, weights)
    parts = output / "parts"
    _claim(output, identity)
    parts.mkdir(exist_ok=True)
    total = sum(count_lines(parallel_paths(config.data.train[index].path,
                                           config.data.src_lang, config.data.tgt_lang)[0])
                for index in selected)
    dropped, lines, resumed, names = dict.fromkeys(DROP_RULES, 0), 0, 0, []
    with reporter.progress("distill", total=total, unit="lines") as bar:
        for name, sources, targets in _parts(config, selected):
            names.append(name)
            record = parts / f"{name}.json"
            if record.exists():
                counts = json.loads(record.read_text(encoding="utf-8"))
                resumed += 1
            else:
                counts = _distill_part(translator, sources, targets, filters, parts / name)
            for rule in DROP_RULES:
                dropped[rule] += counts["dropped"][rule]
            lines += len(sources)
            bar.advance(len(sources))
    pairs = _join(output, names, config.data.src_lang, config.data.tgt_lang)
    result = DistillResult(output, lines, pairs, dropped, resumed)
    _write_json(output / RECORD, {**identity, "complete": True, "lines": lines,
                                  "pairs": pairs, "dropped": dropped})
    _report(result, config, reporter)
    return result


def _selected_corpora(config: Config, corpora: Sequence[int]) -> list[int]:
    count = len(config.data.train)
    for index in corpora:
        if not 0 <= index < count:
            raise UsageError(f"--corpus {index}: data.train has {count} corpora, numbered "
                             f"0 to {count - 1}")
    return sorted(set(corpora)) if corpora else list(range(count))


def _teacher(config: Config, teachers: Sequence[ModelRef], weights: Sequence[float] | None,
             device: str, reporter: Reporter) -> Translator:
    """The teachers as one translator, searching as ``config.decode`` says (one best
    translation, the whole vocabulary), after checking they translate the config's pair."""
    decode = replace(config.decode, nbest=1, sampling=False, shortlist=0)
    first, *others = teachers
    translator = load_translator(first.run_dir, first.checkpoint, decode=decode,
                                 threads=config.train.threads, device=device,
                                 check_run_vocabulary=False, ensemble=others, weights=weights,
                                 reporter=reporter)
    for member, ref in zip(translator.members, teachers):
        data = member.config.data
        if (data.src_lang, data.tgt_lang) != (config.data.src_lang, config.data.tgt_lang):
            raise UsageError(f"--teacher {ref.run_dir}: it translates {data.src_lang}→"
                             f"{data.tgt_lang}, but the config's corpus is "
                             f"{config.data.src_lang}→{config.data.tgt_lang}")
    return translator


def _identity(config: Config, teachers: Sequence[ModelRef], translator: Translator,
              selected: list[int], filters: DistillFilters,
              weights: Sequence[float] | None) -> dict[str, Any]:
    """What makes one distillation the same as another: resuming into a folder must not mix
    two of them."""
    decode = translator.decode
    corpora = []
    for index in selected:
        paths = parallel_paths(config.data.train[index].path, config.data.src_lang,
                               config.data.tgt_lang)
        corpora.append({"path": str(config.data.train[index].path),
                        "bytes": [path.stat().st_size for path in paths]})
    return {
        "teachers": [{"run": str(ref.run_dir.resolve()), "checkpoint": str(member.path),
                      "step": member.step} for ref, member in zip(teachers, translator.members)],
        "weights": None if weights is None else list(weights),
        "search": {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty,
                   "alpha": decode.alpha, "max_len_a": decode.max_len_a,
                   "max_len_b": decode.max_len_b, "precision": decode.precision,
                   "ensemble_combine": decode.ensemble_combine},
        "languages": [config.data.src_lang, config.data.tgt_lang],
        "corpora": corpora, "filters": asdict(filters), "part_lines": PART_LINES,
    }


def _claim(output: Path, identity: dict[str, Any]) -> None:
    """Make ``output`` this distillation's folder, or check that it already is."""
    record = output / RECORD
    if record.exists():
        stored = json.loads(record.read_text(encoding="utf-8"))
        differing = [key for key in identity if stored.get(key) != identity[key]]
        if differing:
            raise UsageError(f"--output {output}: it holds a different distillation (its "
                             f"{', '.join(differing)} differ); choose another folder or "
                             "delete it")
        return
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"--output {output}: exists and is not a distillation folder "
                         f"(no {RECORD}); choose a new folder")
    output.mkdir(parents=True, exist_ok=True)
    _write_json(record, {**identity, "complete": False})


def _parts(config: Config, selected: list[int]) -> Iterator[tuple[str, list[str], list[str]]]:
    """(name, source lines, original target lines) of every part, in corpus order."""
    data = config.data
    for index in selected:
        paths = parallel_paths(data.train[index].path, data.src_lang, data.tgt_lang)
        part = 0
        for chunk in read_chunks(paths):
            lines = [[decode_line(raw.rstrip(b"\r\n"), path, chunk.first_line + number,
                                  "replace")[0] for number, raw in enumerate(side)]
                     for side, path in ((chunk.sources, paths[0]), (chunk.targets, paths[1]))]
            for start in range(0, len(lines[0]), PART_LINES):
                yield (f"{index:02d}-{part:06d}", lines[0][start:start + PART_LINES],
                       lines[1][start:start + PART_LINES])
                part += 1


def _distill_part(translator: Translator, sources: list[str], targets: list[str],
                  filters: DistillFilters, stem: Path) -> dict[str, Any]:
    """Translate one part, filter it, and write it whole: its two text files, then its
    record (the mark that it is finished)."""
    translations = [result.text for result in translator.translate(sources)]
    kept_sources, kept_translations = [], []
    dropped = dict.fromkeys(DROP_RULES, 0)
    chrf = CHRF()
    for source, target, translation in zip(sources, targets, translations):
        rule = _failed_rule(source, target, translation, filters, chrf)
        if rule:
            dropped[rule] += 1
            continue
        kept_sources.append(source)
        kept_translations.append(translation)
    _write_lines(stem.with_suffix(".src"), kept_sources)
    _write_lines(stem.with_suffix(".tgt"), kept_translations)
    counts = {"lines": len(sources), "pairs": len(kept_sources), "dropped": dropped}
    _write_json(stem.with_suffix(".json"), counts)
    return counts


def _failed_rule(source: str, target: str, translation: str, filters: DistillFilters,
                 chrf: CHRF) -> str | None:
    """The first filter rule a pair fails, or None."""
    if source.strip() and not translation.strip():
        return "empty translation"
    if filters.min_chrf and chrf.sentence_score(translation, [target]).score < filters.min_chrf:
        return "low chrF"
    if filters.max_ratio:
        shorter, longer = sorted((len(translation), len(target)))
        if longer > filters.max_ratio * max(shorter, 1):
            return "length ratio"
    return None


def _join(output: Path, names: list[str], src_lang: str, tgt_lang: str) -> int:
    """Concatenate the parts into train.<src_lang> and train.<tgt_lang> (each renamed into
    place when whole); return the pairs."""
    pairs = 0
    for suffix, language in ((".src", src_lang), (".tgt", tgt_lang)):
        final = output / f"train.{language}"
        partial = final.with_name(final.name + ".partial")
        with open(partial, "wb") as joined:
            for name in names:
                with open(output / "parts" / f"{name}{suffix}", "rb") as part:
                    shutil.copyfileobj(part, joined)
        os.replace(partial, final)
    for name in names:
        pairs += json.loads((output / "parts" / f"{name}.json").read_text("utf-8"))["pairs"]
    return pairs


def _write_lines(path: Path, lines: list[str]) -> None:
    write_text_whole(path, "".join(line.replace("\n", " ") + "\n" for line in lines))


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_text_whole(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _report(result: DistillResult, config: Config, reporter: Reporter) -> None:
    rows = [["source lines", result.lines]]
    rows += [[f"dropped: {rule}", count] for rule, count in result.dropped.items()]
    rows.append(["kept", result.pairs])
    reporter.table(make_table("distilled pairs", ["", "pairs"], rows))
    if result.parts_resumed:
        reporter.info(f"{result.parts_resumed} parts were already done and kept")
    reporter.info(f"wrote {result.directory}/train.{config.data.src_lang} and "
                  f"train.{config.data.tgt_lang}: name {result.directory}/train in a student's "
                  "data.train")
