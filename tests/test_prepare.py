"""`s2s prepare`: alignment and UTF-8 checks, filtering, vocabularies, encoding, re-runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from s2s.config import config_from_dict, load_config
from s2s.data.prepare import prepare
from s2s.data.store import load_split, spm_paths
from s2s.data.text import normalize
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from s2s.errors import DataError
from s2s.rundir import RunDir
from tests.conftest import config_dict, write_config

REPO = Path(__file__).resolve().parents[1]


def _copy_corpus(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _config(corpus: Path, run: Path, **sections):
    return config_from_dict(config_dict(corpus, run, **sections))


def test_prepare_writes_encoded_splits_and_summary(demo_corpus: Path, tmp_path: Path) -> None:
    config = _config(demo_corpus, tmp_path / "run")
    result = prepare(config)
    assert not result.up_to_date
    splits = result.manifest["splits"]
    assert splits["valid"]["pairs"] == 60 and splits["test"]["pairs"] == 60
    assert splits["train"]["pairs"] == 1500
    assert all(stats["unknown_tokens"] == 0 for stats in splits.values())
    train = load_split(result.data_dir, "train")
    assert len(train) == 1500
    assert train.src.ids.dtype == np.uint16
    assert (tmp_path / "run" / "config.yaml").exists()


def test_special_token_ids_are_fixed(demo_corpus: Path, tmp_path: Path) -> None:
    directory = prepare(_config(demo_corpus, tmp_path / "run")).data_dir
    for path in spm_paths(directory):
        processor = spm.SentencePieceProcessor(model_file=str(path))
        assert (processor.pad_id(), processor.unk_id(), processor.bos_id(),
                processor.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


def test_valid_split_round_trips_through_the_vocabulary(demo_corpus: Path, tmp_path: Path) -> None:
    directory = prepare(_config(demo_corpus, tmp_path / "run")).data_dir
    valid = load_split(directory, "valid")
    tokenizer = Tokenizer.from_file(spm_paths(directory)[1])
    decoded = tokenizer.decode([valid.tgt.sentence(i).tolist() for i in range(len(valid))])
    original = (demo_corpus / "valid.de").read_text(encoding="utf-8").splitlines()
    assert decoded == [normalize(line, "nfkc") for line in original]


def test_byte_fallback_leaves_no_unknown_characters(demo_corpus: Path, tmp_path: Path) -> None:
    directory = prepare(_config(demo_corpus, tmp_path / "run")).data_dir
    tokenizer = Tokenizer.from_file(spm_paths(directory)[0])
    ids = tokenizer.encode(["日本語 ✓ ok"])[0]
    assert UNK_ID not in ids
    assert tokenizer.decode([ids]) == ["日本語 ✓ ok"]


def test_filtering_counts_each_rule_on_training_pairs_only(demo_corpus: Path,
                                                          tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    extra_src = ["", "Hello there.", "A dog.", "A dog.", "x " * 300,
                 "One two three four five six seven eight nine ten eleven twelve.",
                 "A translator's note: 字幕", "A bell\x7f rings.", "Plain again."]
    extra_tgt = ["Leer.", "", "Ein Hund.", "Ein Hund.", "lang", "Eins.", "Eine Notiz.",
                 "Eine Glocke läutet.", "Wieder schlicht."]
    for lang, lines in (("en", extra_src), ("de", extra_tgt)):
        for split in ("train", "valid"):
            with open(corpus / f"{split}.{lang}", "a", encoding="utf-8") as stream:
                stream.write("".join(line + "\n" for line in lines))
    config = _config(corpus, tmp_path / "run", data={"max_chars": 200, "max_length_ratio": 3.0})
    manifest = prepare(config).manifest
    assert manifest["dropped"] == {"empty side": 2, "too many characters": 1,
                                   "wrong script": 1, "control characters": 1,
                                   "duplicate pair": 1, "too many tokens": 0, "length ratio": 1}
    assert manifest["splits"]["train"]["pairs"] == 1500 + 2
    assert set(manifest["pass_seconds"]) == {"filter", "vocabulary sample",
                                             "vocabulary training", "encode", "valid and test"}
    assert manifest["splits"]["valid"]["pairs"] == 60 + len(extra_src)  # never filtered


def test_line_count_mismatch_names_both_files(demo_corpus: Path, tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    with open(corpus / "valid.de", "a", encoding="utf-8") as stream:
        stream.write("Eine Zeile zu viel.\n")
    with pytest.raises(DataError) as caught:
        prepare(_config(corpus, tmp_path / "run"))
    assert str(caught.value) == (f"{corpus / 'valid.en'} has 60 lines but {corpus / 'valid.de'} "
                                 "has 61; parallel files must align line by line")


def test_invalid_utf8_is_reported_with_line_number_or_replaced(demo_corpus: Path,
                                                               tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    lines = (corpus / "test.en").read_bytes().split(b"\n")
    lines[4] = b"caf\xe9 latin-1"
    (corpus / "test.en").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"^{corpus / 'test.en'}:5: invalid UTF-8"):
        prepare(_config(corpus, tmp_path / "run"))
    result = prepare(_config(corpus, tmp_path / "run", data={"invalid_utf8": "replace"}))
    test_src = (result.data_dir / "test.src.txt").read_text(encoding="utf-8").splitlines()
    assert test_src[4] == "caf\ufffd latin-1"


def test_rerun_is_up_to_date_until_inputs_or_settings_change(demo_corpus: Path,
                                                            tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    config = _config(corpus, tmp_path / "run")
    assert not prepare(config).up_to_date
    assert prepare(config).up_to_date
    assert not prepare(_config(corpus, tmp_path / "run", vocab={"src_size": 380})).up_to_date
    config = _config(corpus, tmp_path / "run")
    assert not prepare(config).up_to_date
    with open(corpus / "train.en", "a", encoding="utf-8") as stream:
        stream.write("A new sentence.\n")
    with open(corpus / "train.de", "a", encoding="utf-8") as stream:
        stream.write("Ein neuer Satz.\n")
    result = prepare(config)
    assert not result.up_to_date
    assert result.manifest["splits"]["train"]["pairs"] == 1501


def test_interrupted_prepare_leaves_no_trusted_data(demo_corpus: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    config = _config(demo_corpus, tmp_path / "run")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("s2s.data.prepare.save_split", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(config)
    assert not RunDir(config.run_dir).data.exists()
    assert not RunDir(config.run_dir).data_partial.exists()
    monkeypatch.undo()
    assert not prepare(config).up_to_date


def test_vocabulary_too_large_suggests_a_size(demo_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"vocabulary size 50000 is larger than the training data "
                                        r"allows .* \(at most \d+\); set the vocab size to \d+"):
        prepare(_config(demo_corpus, tmp_path / "run", vocab={"src_size": 50000}))


def test_missing_empty_and_directory_inputs(demo_corpus: Path, tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    (corpus / "test.de").unlink()
    with pytest.raises(DataError, match=rf"^{corpus / 'test.de'}: data file not found$"):
        prepare(_config(corpus, tmp_path / "run"))
    (corpus / "test.de").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        prepare(_config(corpus, tmp_path / "run"))
    (corpus / "test.de").rmdir()
    (corpus / "test.de").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="data file is empty"):
        prepare(_config(corpus, tmp_path / "run"))


def test_a_split_empty_after_filtering_is_an_error(demo_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no training pairs left after filtering"):
        prepare(_config(demo_corpus, tmp_path / "run", data={"max_chars": 3}))


def test_vocabulary_too_small_says_how_many_pieces_are_needed(demo_corpus: Path,
                                                              tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"vocabulary size 100 is too small for spm\.src: its "
                                        r"characters and special pieces alone need \d+"):
        prepare(_config(demo_corpus, tmp_path / "run", vocab={"src_size": 100}))


PREPARE_ON_A_MACHINE = """
import os, sys
cores, reported = int(sys.argv[3]), int(sys.argv[4])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
os.cpu_count = lambda: reported  # what a machine with that many cores would say
from s2s.config import load_config
from s2s.data.prepare import prepare
prepare(load_config(sys.argv[1], [f"run_dir={sys.argv[2]}"]))
"""


def test_the_same_corpus_gives_identical_files_on_any_core_count(demo_corpus: Path,
                                                                  tmp_path: Path) -> None:
    """sentencepiece's scores depend on its thread count: prepare must not take it from the
    machine. Three "machines": 1 core, all cores here, and one that reports 16 cores."""
    path = write_config(tmp_path / "c.yaml", config_dict(demo_corpus, tmp_path / "unused"))
    outputs = []
    for cores, reported in ((1, 1), (os.cpu_count() or 1, os.cpu_count() or 1), (64, 16)):
        run_dir = tmp_path / f"machine-{cores}-{reported}"
        subprocess.run([sys.executable, "-c", PREPARE_ON_A_MACHINE, str(path), str(run_dir),
                        str(cores), str(reported)], cwd=REPO, check=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        directory = RunDir(load_config(path, [f"run_dir={run_dir}"]).run_dir).data
        outputs.append({item.name: item.read_bytes() for item in sorted(directory.iterdir())
                        if item.suffix in (".model", ".npy", ".txt")})
    assert len(outputs[0]) == 2 + 12 + 4  # two models, 3 splits x 2 sides x 2 arrays, texts
    assert outputs[0] == outputs[1] == outputs[2]


def test_workers_change_nothing_in_the_files(demo_corpus: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The training pairs go through the workers in chunks (here 100 pairs, so 16 chunks,
    with duplicates and filtered pairs across chunk boundaries); every file but the manifest
    (which records the seconds) is the same for 1, 2 and 3 workers."""
    import s2s.data.chunks
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    with open(corpus / "train.en", "a", encoding="utf-8") as src, \
            open(corpus / "train.de", "a", encoding="utf-8") as tgt:
        for number in range(50):  # duplicates of the first pairs, and pairs to filter
            src.write(["The dog.", "", "x " * 300, "A cat."][number % 4] + "\n")
            tgt.write(["Der Hund.", "Leer.", "lang", "Eine Katze."][number % 4] + "\n")
    monkeypatch.setattr(s2s.data.chunks, "CHUNK_PAIRS", 100)
    outputs, manifests = [], []
    for workers in (1, 2, 3):
        result = prepare(_config(corpus, tmp_path / f"workers-{workers}",
                                 data={"workers": workers, "max_chars": 200}))
        outputs.append({item.name: item.read_bytes() for item in sorted(result.data_dir.iterdir())
                        if item.name != "manifest.json"})
        manifests.append((result.manifest["splits"], result.manifest["dropped"]))
    assert len(outputs[0]) == 2 + 12 + 4 and outputs[0] == outputs[1] == outputs[2]
    assert manifests[0] == manifests[1] == manifests[2]
    dropped = manifests[0][1]
    assert dropped["duplicate pair"] >= 23 and dropped["empty side"] == 13
    assert dropped["too many characters"] >= 12


def test_manifest_records_versions_and_every_setting_that_shapes_the_data(
        demo_corpus: Path, tmp_path: Path) -> None:
    manifest = prepare(_config(demo_corpus, tmp_path / "run")).manifest
    assert manifest["versions"]["sentencepiece"] == spm.__version__
    assert manifest["settings"]["vocab"]["threads"] == 4
    assert manifest["settings"]["data"]["normalization"] == "auto"
    assert manifest["normalization"] == {"src": "nfkc", "tgt": "nfkc"}


def test_chinese_and_japanese_targets_keep_full_width_punctuation(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    english = [f"Is this number {i} yours, Tom?" for i in range(300)]
    chinese = [f"这是你的第{i}号吗，汤姆？" for i in range(300)]
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.en").write_text("\n".join(english) + "\n", encoding="utf-8")
        (corpus / f"{split}.zh").write_text("\n".join(chinese) + "\n", encoding="utf-8")
    raw = config_dict(corpus, tmp_path / "run", vocab={"src_size": 300, "tgt_size": 300})
    raw["data"].update(src_lang="en", tgt_lang="zh", max_length_ratio=50.0)
    result = prepare(config_from_dict(raw))
    assert result.manifest["normalization"] == {"src": "nfkc", "tgt": "nfc"}
    valid = (result.data_dir / "valid.tgt.txt").read_text(encoding="utf-8").splitlines()
    assert valid == chinese  # ，and ？ stay full-width
    # sentencepiece's own NFKC rule would fold them again in the vocabulary
    tokenizer = Tokenizer.from_file(spm_paths(result.data_dir)[1])
    assert tokenizer.decode(tokenizer.encode(chinese[:3])) == chinese[:3]
    raw["data"]["normalization"] = "nfkc"
    folded = prepare(config_from_dict(raw)).data_dir / "valid.tgt.txt"
    assert folded.read_text(encoding="utf-8").splitlines()[0] == "这是你的第0号吗,汤姆?"


def test_gzip_and_xz_corpora_are_read_as_they_come(demo_corpus: Path, tmp_path: Path) -> None:
    """A prefix finds ``train.en.gz`` or ``train.de.xz`` where no plain file exists; the prepared
    files equal those of the plain corpus, and the split is mapped, not read."""
    import gzip
    import lzma
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    for name, module in (("train.en", gzip), ("train.de", lzma), ("test.de", gzip)):
        plain = corpus / name
        (corpus / f"{name}.{'gz' if module is gzip else 'xz'}").write_bytes(
            module.compress(plain.read_bytes()))
        plain.unlink()
    compressed = prepare(_config(corpus, tmp_path / "compressed")).data_dir
    reference = prepare(_config(demo_corpus, tmp_path / "plain")).data_dir
    for path in reference.glob("*.npy"):
        assert path.read_bytes() == (compressed / path.name).read_bytes(), path.name
    assert isinstance(load_split(compressed, "train").src.ids, np.memmap)


def test_a_truncated_gzip_corpus_is_one_error_line_and_keeps_the_prepared_data(
        demo_corpus: Path, tmp_path: Path) -> None:
    import gzip
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    path = write_config(tmp_path / "c.yaml", config_dict(corpus, tmp_path / "run"))
    assert subprocess.run([sys.executable, "-m", "s2s", "prepare", str(path)], cwd=REPO,
                          capture_output=True).returncode == 0
    manifest = (tmp_path / "run" / "data" / "manifest.json").read_bytes()
    whole = gzip.compress((corpus / "train.de").read_bytes())
    (corpus / "train.de").unlink()
    (corpus / "train.de.gz").write_bytes(whole[:len(whole) // 2])  # a download cut short
    result = subprocess.run([sys.executable, "-m", "s2s", "prepare", str(path)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert line.startswith(f"error: {corpus / 'train.de.gz'}:")
    assert "the compressed data is damaged or cut short after line" in line
    lines_before = int(line.split(":")[2])  # file:LINE: ...
    assert 100 < lines_before < 1500
    assert (tmp_path / "run" / "data" / "manifest.json").read_bytes() == manifest
    assert not (tmp_path / "run" / "data.partial").exists()  # nothing half-built is left


def test_training_sides_that_differ_only_at_the_end_name_the_file_and_line(
        demo_corpus: Path, tmp_path: Path) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    with open(corpus / "train.de", "a", encoding="utf-8") as stream:
        stream.write("Noch eine.\n")  # line 1501, the only one without a partner
    with pytest.raises(DataError) as caught:
        prepare(_config(corpus, tmp_path / "run"))
    assert str(caught.value) == (f"{corpus / 'train.en'}: ends after line 1500 but "
                                 f"{corpus / 'train.de'} goes on; parallel files must align "
                                 "line by line")


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_utf8_in_the_training_pairs_names_the_line_whoever_reads_it(
        demo_corpus: Path, tmp_path: Path, workers: int) -> None:
    corpus = _copy_corpus(demo_corpus, tmp_path / "corpus")
    lines = (corpus / "train.en").read_bytes().split(b"\n")
    lines[1233] = b"The d\xe9g."  # line 1234
    (corpus / "train.en").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"^{corpus / 'train.en'}:1234: invalid UTF-8 \(byte 6 "):
        prepare(_config(corpus, tmp_path / "run", data={"workers": workers}))


def test_a_terminal_sees_pairs_per_second_while_prepare_runs(demo_corpus: Path,
                                                             tmp_path: Path) -> None:
    """prepare's bars count pairs and show their rate; the rate column computes it."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from s2s.report import RateColumn, Reporter

    screen = io.StringIO()
    config = config_from_dict(config_dict(demo_corpus, tmp_path / "run"))
    prepare(config, reporter=Reporter(Console(file=screen, force_terminal=True, width=200)))
    assert "encode" in screen.getvalue()
    # the first pass's total (unknown until the end) is estimated from the bytes read, so
    # its bar has an end, a percentage and a time left, and ends at the true count
    filter_line = [line for line in screen.getvalue().splitlines()
                   if "filter" in line and "seconds per pass" not in line][-1]
    assert "1500/1500" in filter_line and "100%" in filter_line

    now = [0.0]
    bars = Progress(RateColumn("pairs"), get_time=lambda: now[0], auto_refresh=False,
                    console=Console(file=io.StringIO()))
    task = bars.add_task("encode", total=10_000)
    for second in (1.0, 2.0, 3.0):  # 2,500 pairs a second
        now[0] = second
        bars.advance(task, 2_500)
    assert str(RateColumn("pairs").render(bars.tasks[0])) == "2,500 pairs/s"
    assert str(RateColumn("").render(bars.tasks[0])) == ""
