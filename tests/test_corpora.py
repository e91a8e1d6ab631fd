"""Several training corpora: weights that set how often each is drawn, tags that mark them."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import s2s.training.loop
from s2s.config import Config, config_from_dict
from s2s.data.batching import epoch_sample
from s2s.data.prepare import prepare
from s2s.data.store import PreparedData, data_config_hash, load_split, read_manifest
from s2s.data.vocab import Tokenizer
from s2s.errors import ConfigError, DataError
from s2s.run.checkpoint import load_checkpoint, save_atomic
from s2s.training.loop import train
from s2s.translation.translator import load_translator
from tests.conftest import config_dict, write_config

CRAWL, IN_DOMAIN = 1000, 500  # the demo corpus's 1,500 training pairs, cut in two


@pytest.fixture(scope="module")
def two_corpora(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo training pairs as a 1,000-pair "crawl" and a 500-pair "bt" corpus; bt ends
    with a copy of the crawl's first pair, a duplicate across corpora."""
    directory = tmp_path_factory.mktemp("two-corpora")
    for side in ("en", "de"):
        lines = (demo_corpus / f"train.{side}").read_text(encoding="utf-8").splitlines(True)
        (directory / f"crawl.{side}").write_text("".join(lines[:CRAWL]), encoding="utf-8")
        (directory / f"bt.{side}").write_text("".join(lines[CRAWL:] + lines[:1]),
                                              encoding="utf-8")
        for split in ("valid", "test"):
            (directory / f"{split}.{side}").write_bytes(
                (demo_corpus / f"{split}.{side}").read_bytes())
    return directory


def _config(corpora: Path, run_dir: Path, training_corpora: list, **sections: dict) -> Config:
    raw = config_dict(corpora, run_dir, **sections)
    raw["data"]["train"] = training_corpora
    return config_from_dict(raw)


def _tagged(corpora: Path, *, crawl_weight: float = 1.0, bt_weight: float = 1.0) -> list:
    return [{"path": str(corpora / "crawl"), "weight": crawl_weight},
            {"path": str(corpora / "bt"), "weight": bt_weight, "tag": "<bt>"}]


def test_the_tag_is_one_reserved_piece_before_each_tagged_source(two_corpora: Path,
                                                                 tmp_path: Path) -> None:
    result = prepare(_config(two_corpora, tmp_path / "run", _tagged(two_corpora)))
    manifest = result.manifest
    crawl, bt = manifest["corpora"]
    assert (crawl["tag"], bt["tag"]) == ("", "<bt>")
    assert crawl["pairs"] == CRAWL and bt["pairs"] == IN_DOMAIN  # bt's last pair: a duplicate
    assert bt["dropped"]["duplicate pair"] == 1 and crawl["dropped"]["duplicate pair"] == 0
    assert manifest["dropped"]["duplicate pair"] == 1
    assert manifest["splits"]["train"]["pairs"] == CRAWL + IN_DOMAIN
    source = Tokenizer.from_file(result.data_dir / "spm.src.model")
    tag = source.piece_id("<bt>")
    assert tag is not None and source.encode(["<bt>"])[0][-1] == tag
    assert Tokenizer.from_file(result.data_dir / "spm.tgt.model").piece_id("<bt>") is None
    train_split = load_split(result.data_dir, "train")
    firsts = np.array([train_split.src.sentence(index)[0] for index in range(len(train_split))])
    assert not (firsts[:CRAWL] == tag).any() and (firsts[CRAWL:] == tag).all()
    boundary = train_split.src.offsets[CRAWL]
    assert not (train_split.src.ids[:boundary] == tag).any()
    assert (train_split.src.ids[boundary:] == tag).sum() == IN_DOMAIN  # once each, first


def test_an_epoch_draws_each_corpus_as_often_as_its_weight_says(two_corpora: Path,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """One epoch of real training with weights 0.5 and 2: half the crawl's pairs once each,
    every in-domain pair exactly twice, and the in-domain sources start with their tag."""
    config = _config(two_corpora, tmp_path / "run", _tagged(two_corpora, crawl_weight=0.5,
                                                            bt_weight=2),
                     train={"max_steps": 0, "max_epochs": 1, "valid_every": 10_000})
    tag = Tokenizer.from_file(prepare(config).data_dir / "spm.src.model").piece_id("<bt>")
    seen: list[np.ndarray] = []
    collate = s2s.training.loop.collate

    def recording(split, indices):
        batch = collate(split, indices)
        seen.append(indices)
        assert torch.equal(batch.src[:, 0] == tag, torch.from_numpy(indices >= CRAWL))
        return batch

    monkeypatch.setattr(s2s.training.loop, "collate", recording)
    train(config)
    drawn = Counter(np.concatenate(seen).tolist())
    crawl = [index for index in drawn if index < CRAWL]
    assert len(crawl) == CRAWL // 2 and all(drawn[index] == 1 for index in crawl)
    assert all(drawn[index] == 2 for index in range(CRAWL, CRAWL + IN_DOMAIN))
    assert sum(drawn.values()) == CRAWL // 2 + 2 * IN_DOMAIN


def test_a_weighted_epoch_is_the_same_when_drawn_again_and_differs_next_epoch() -> None:
    first = epoch_sample([10, 4], [0.5, 2.5], seed=3, epoch=1)
    assert first is not None and np.array_equal(
        first, epoch_sample([10, 4], [0.5, 2.5], seed=3, epoch=1))
    assert not np.array_equal(first, epoch_sample([10, 4], [0.5, 2.5], seed=3, epoch=2))
    counts = Counter(first.tolist())
    assert sum(counts[index] for index in range(10)) == 5
    assert sorted(counts[index] for index in range(10, 14)) == [2, 2, 3, 3]
    assert epoch_sample([10, 4], [1, 1], seed=3, epoch=1) is None  # every pair once


def test_several_corpora_give_the_same_files_with_any_worker_count(
        two_corpora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import s2s.data.chunks
    monkeypatch.setattr(s2s.data.chunks, "CHUNK_PAIRS", 150)  # chunks of both corpora interleave
    outputs = []
    for workers in (1, 3):
        result = prepare(_config(two_corpora, tmp_path / f"w{workers}", _tagged(two_corpora),
                                 data={"workers": workers}))
        outputs.append({item.name: item.read_bytes() for item in result.data_dir.iterdir()
                        if item.name != "manifest.json"})
        outputs.append(result.manifest["corpora"])
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]


def test_one_corpus_keeps_the_hash_and_format_of_earlier_prepared_data(
        demo_corpus: Path, tmp_path: Path) -> None:
    """A single untagged corpus hashes as it did before lists of corpora existed, and data
    prepared then (a manifest without "corpora") is read as one corpus."""
    plain = config_from_dict(config_dict(demo_corpus, tmp_path / "run"))
    listed = config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                          data={"train": [str(demo_corpus / "train")]}))
    assert data_config_hash(plain) == data_config_hash(listed)
    tagged = config_from_dict(config_dict(demo_corpus, tmp_path / "run", data={
        "train": [{"path": str(demo_corpus / "train"), "tag": "<x>"}]}))
    assert data_config_hash(tagged) != data_config_hash(plain)
    prepared = prepare(plain)
    manifest = read_manifest(prepared.data_dir)
    del manifest["corpora"]
    assert PreparedData(prepared.data_dir, manifest).corpus_sizes == [1500]


def test_a_tag_found_in_the_text_is_one_error_naming_the_option_and_line(
        two_corpora: Path, tmp_path: Path) -> None:
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    for item in two_corpora.iterdir():
        (corpora / item.name).write_bytes(item.read_bytes())
    with open(corpora / "crawl.en", "a", encoding="utf-8") as source, \
            open(corpora / "crawl.de", "a", encoding="utf-8") as target:
        source.write("Read the <bt> label.\n")
        target.write("Lies das Etikett.\n")
    config = _config(corpora, tmp_path / "run", _tagged(corpora))
    with pytest.raises(DataError, match=rf"crawl\.en:{CRAWL + 1}: the text contains '<bt>', "
                                        r"the tag data\.train\[1\]\.tag sets"):
        prepare(config)
    assert not (tmp_path / "run" / "data").exists()


@pytest.mark.parametrize(("corpus", "message"), [
    ({"tag": "<b t>"}, r"data\.train\[1\]\.tag: '<b t>' has spaces"),
    ({"tag": "</s>"}, r"data\.train\[1\]\.tag: '</s>' is one of sentencepiece's special"),
    ({"weight": 0}, r"data\.train\[1\]\.weight: must be greater than 0"),
    ({"weight": "often"}, r"data\.train\[1\]\.weight: expected a number"),
    ({"tag": ""}, r"data\.train\[1\]\.tag: expected a non-empty string"),
])
def test_bad_corpus_settings_name_the_entry(two_corpora: Path, tmp_path: Path, corpus: dict,
                                            message: str) -> None:
    train = _tagged(two_corpora)
    train[1].update(corpus)
    with pytest.raises(ConfigError, match=message):
        _config(two_corpora, tmp_path / "run", train)


def test_bad_corpus_list_on_the_command_line_exits_2_with_one_line(two_corpora: Path,
                                                                   tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(two_corpora, tmp_path / "run"))
    result = subprocess.run([sys.executable, "-m", "s2s", "prepare", str(path),
                             "--set", "data.train=[]"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --set data.train=[]: data.train: expected at least one entry, got an empty list"]


def test_a_joint_vocabulary_never_translates_into_a_tag(two_corpora: Path,
                                                        tmp_path: Path) -> None:
    """Even a model whose output layer favours the tag above everything never writes it, in
    fp32 or with int8 weights, in greedy or beam search."""
    config = _config(two_corpora, tmp_path / "run", _tagged(two_corpora),
                     vocab={"joint": True}, train={"max_steps": 10, "valid_every": 10})
    prepare(config)
    train(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    tag = Tokenizer(checkpoint["vocab"]["tgt"]).piece_id("<bt>")
    assert tag is not None
    checkpoint["model"]["decoder.output.bias"][tag] = 100.0
    favouring = tmp_path / "favours-tag.pt"
    save_atomic(checkpoint, favouring)
    for settings in (["decode.beam_size=1"], ["decode.precision=int8"]):
        translator = load_translator(tmp_path / "run", str(favouring), threads=2, device="cpu",
                                     overrides=settings)
        assert torch.isneginf(translator.loaded.model.decoder.output.bias[tag])
        for result in translator.translate(["A dog runs.", "Two women sit on a bench."]):
            assert "<bt>" not in result.text and result.text


def test_validation_during_training_never_translates_into_a_tag(
        two_corpora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation decodes a copy whose tag bias is -inf, as a checkpoint decodes; the model in
    training keeps its own, finite bias."""
    config = _config(two_corpora, tmp_path / "run", _tagged(two_corpora),
                     vocab={"joint": True}, train={"max_steps": 4, "valid_every": 2})
    prepare(config)
    seen = []

    def recording_validate(translator, data):  # type: ignore[no-untyped-def]
        biases = (translator.loaded.model.decoder.output.bias,
                  translator.model.decoder.output.bias)
        seen.append([bool(torch.isneginf(bias).sum() == 1) for bias in biases])
        return real_validate(translator, data)

    real_validate = s2s.training.loop.validate
    monkeypatch.setattr(s2s.training.loop, "validate", recording_validate)
    train(config)
    assert seen == [[True, True], [True, True]]
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert torch.isfinite(trained["model"]["decoder.output.bias"]).all()
