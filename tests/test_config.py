"""Config loading: every problem reported at once, by file and dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2s.config import (
    Override,
    TrainingCorpus,
    config_from_dict,
    dump_config,
    load_config,
    parse_yaml,
)
from s2s.errors import ConfigError
from tests.conftest import config_dict, write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_with_every_value_it_sets(path: Path) -> None:
    config = load_config(path)
    assert config.data.src_lang != config.data.tgt_lang
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    assert config.run_dir == Path(raw.pop("run_dir")).absolute()  # paths: from where s2s runs
    for section, values in raw.items():  # nothing the file says is dropped or changed
        for key, value in values.items():
            loaded = getattr(getattr(config, section), key)
            if key == "train" and section == "data":  # corpora: paths, or {path, weight, tag}
                corpora = value if isinstance(value, list) else [value]
                expected = tuple(
                    TrainingCorpus(Path(item).absolute()) if isinstance(item, str)
                    else TrainingCorpus(**{**item, "path": Path(item["path"]).absolute()})
                    for item in corpora)
            elif isinstance(loaded, tuple):  # lists load as tuples, of paths where declared
                items = value if isinstance(value, list) else [value]
                expected = tuple(Path(item).absolute() if loaded and isinstance(loaded[0], Path)
                                 else item for item in items)
            else:
                expected = Path(value).absolute() if isinstance(loaded, Path) else value
            assert loaded == expected, f"{section}.{key}"


def _errors(tmp_path: Path, raw: dict, overrides: tuple[str, ...] = ()) -> list[str]:
    path = write_config(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    return [line[len(f"{path}: "):] for line in lines]


def test_misspelt_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run", model={"decoder_hiden": 64})
    assert _errors(tmp_path, raw) == [
        "model.decoder_hiden: unknown key — did you mean decoder_hidden?"]


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run", model={"attention": "dott", "dropout": 1.5},
                      train={"lr": "fast", "max_steps": 2.5, "batch_tokens": 0})
    del raw["data"]["src_lang"]
    errors = _errors(tmp_path, raw)
    assert "data.src_lang: required key is missing" in errors
    assert ("model.attention: 'dott' is not allowed; choose one of general, dot, bahdanau"
            " — did you mean dot?") in errors
    assert "model.dropout: must be at most 0.95, got 1.5" in errors
    assert "train.lr: expected a number, got string 'fast'" in errors
    assert "train.max_steps: expected an integer, got number 2.5" in errors
    assert "train.batch_tokens: must be at least 16, got 0" in errors
    assert len(errors) == 6


def test_unknown_section_and_non_mapping_section(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run")
    raw["modle"] = {}
    raw["train"] = [1, 2]
    errors = _errors(tmp_path, raw)
    assert "modle: unknown key — did you mean model?" in errors
    assert "train: expected a mapping, got list" in errors


def test_scientific_notation_is_a_number_and_only_true_false_are_booleans() -> None:
    assert parse_yaml("lr: 1e-3\nb: 5E+2\nflag: on\nlang: no\nok: true", "x") == {
        "lr": 0.001, "b": 500.0, "flag": "on", "lang": "no", "ok": True}


def test_norwegian_is_a_language_not_false(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run")
    raw["data"]["tgt_lang"] = "no"
    path = tmp_path / "nb.yaml"
    path.write_text(dump_config(config_from_dict(raw)), encoding="utf-8")
    assert load_config(path).data.tgt_lang == "no"


def test_contradictory_values(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run", decode={"beam_size": 2, "nbest": 3},
                      model={"attention": "dot", "encoder_hidden": 32, "decoder_hidden": 48})
    errors = _errors(tmp_path, raw)
    assert any(e.startswith("decode.nbest: 3 is larger than decode.beam_size (2)") for e in errors)
    assert any(e.startswith("model.attention: dot attention needs decoder_hidden") for e in errors)


def test_overrides_are_typed_and_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path, tmp_path / "run"))
    config = load_config(path, ["train.lr=5e-4", "model.input_feeding=false",
                                "decode.beam_size=7"])
    assert config.train.lr == 0.0005
    assert config.model.input_feeding is False
    assert config.decode.beam_size == 7
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["train.lr"])


def test_errors_name_the_override_or_option_a_value_came_from(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path, tmp_path / "run",
                                                         model={"dropout": 2.0}))
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["train.lrr=1", "train.lr=fast",
                           Override.option("decode.nbest", 3, "--nbest"),
                           Override.option("decode.beam_size", 2, "--beam")])
    assert sorted(str(caught.value).splitlines()) == sorted([
        "--set train.lrr=1: train.lrr: unknown key — did you mean lr?",
        "--set train.lr=fast: train.lr: expected a number, got string 'fast'",
        f"{path}: model.dropout: must be at most 0.95, got 2.0",
    ])
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml", ["model.dropout=0",
                                          Override.option("decode.nbest", 3, "--nbest"),
                                          Override.option("decode.beam_size", 2, "--beam")])
    assert str(caught.value).startswith("--nbest 3: decode.nbest: 3 is larger than "
                                        "decode.beam_size (2)")


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a YAML mapping of sections, not a list"):
        load_config(bad)


def test_paths_resolve_against_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = config_dict(Path("corpus"), Path("runs/x"))
    config = config_from_dict(raw)
    assert config.run_dir == tmp_path / "runs" / "x"
    assert config.data.train[0].path == tmp_path / "corpus" / "train"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = config_from_dict(config_dict(tmp_path, tmp_path / "run"))
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config
