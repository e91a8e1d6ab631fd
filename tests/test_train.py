"""Training: checkpoints, exact resume, schedules, and device errors."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest
import torch

from s2s.config import TrainConfig, config_from_dict, load_config
from s2s.errors import CheckpointError, ConfigError, DataError, DeviceError
from s2s.files import write_text_whole
from s2s.model.loss import guided_attention_loss
from s2s.run.checkpoint import average_checkpoints, load_checkpoint, load_model, save_atomic
from s2s.rundir import RunDir
from s2s.training.loop import train
from s2s.training.schedule import guidance, learning_rate, planned_steps
from tests.conftest import config_dict, prepare_run, write_config

CUDA = torch.cuda.is_available()


def _prepared(corpus: Path, run: Path, **sections):
    config = config_from_dict(config_dict(corpus, run, **sections))
    prepare_run(config)
    return config


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_checkpoint_round_trip_rebuilds_the_same_model(trained_run: Path) -> None:
    config = load_config(trained_run)
    path = RunDir(config.run_dir).checkpoint("last")
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["progress"]["step"] == 150
    loaded = load_model(path)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, payload["model"][name]), name
    assert loaded.config == config
    assert len(loaded.src_tokenizer) == 400


def test_run_directory_has_best_last_metrics_and_resolved_config(trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    names = {p.name for p in RunDir(run_dir).checkpoints.glob("*.pt")}
    assert {"best.pt", "last.pt", "step-00000075.pt", "step-00000150.pt"} <= names
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [75, 150]
    assert all("bleu" in r and "ppl" in r and "nrefs:1" in r["bleu_signature"] for r in valid)
    assert (run_dir / "config.yaml").exists()


# the LSTM in the quick loop; the other cells in the full suite
@pytest.mark.parametrize("cell", ["lstm", pytest.param("gru", marks=pytest.mark.slow),
                                  pytest.param("rnn", marks=pytest.mark.slow)])
def test_resumed_run_ends_with_the_same_weights(demo_corpus: Path, tmp_path: Path,
                                                cell: str) -> None:
    sections = {"train": {"max_steps": 24, "valid_every": 8, "batch_tokens": 300},
                "model": {"dropout": 0.3, "embed_dropout": 0.1, "cell": cell}}
    straight = _prepared(demo_corpus, tmp_path / "straight", **sections)
    train(straight)
    resumed = _prepared(demo_corpus, tmp_path / "resumed", **sections)
    progress = train(resumed, should_stop=lambda p: p.step == 13)  # mid-epoch, between saves
    assert progress.step == 13
    assert load_checkpoint(RunDir(resumed.run_dir).checkpoint("last"))["progress"]["step"] == 13
    train(resumed)
    # the stop's checkpoint went once training passed it: the kept ones are the regular steps
    steps = [path.name for path in RunDir(resumed.run_dir).step_checkpoints()]
    assert steps == [path.name for path in RunDir(straight.run_dir).step_checkpoints()]
    assert "step-00000013.pt" not in steps
    expected = _weights(RunDir(straight.run_dir).checkpoint("last"))
    actual = _weights(RunDir(resumed.run_dir).checkpoint("last"))
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_guided_attention_changes_the_updates_and_resumes_exactly(demo_corpus: Path,
                                                                  tmp_path: Path) -> None:
    guided = {"train": {"max_steps": 6, "valid_every": 3, "batch_tokens": 300,
                        "guided_attention_steps": 4}}
    straight = _prepared(demo_corpus, tmp_path / "straight", **guided)
    train(straight)
    resumed = _prepared(demo_corpus, tmp_path / "resumed", **guided)
    train(resumed, should_stop=lambda p: p.step == 2)  # while the guidance is fading
    train(resumed)
    unguided = _prepared(demo_corpus, tmp_path / "unguided",
                         train={**guided["train"], "guided_attention_steps": 0})
    train(unguided)
    expected = _weights(RunDir(straight.run_dir).checkpoint("last"))
    actual = _weights(RunDir(resumed.run_dir).checkpoint("last"))
    plain = _weights(RunDir(unguided.run_dir).checkpoint("last"))
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert not torch.equal(expected["decoder.attention.key_projection.weight"],
                           plain["decoder.attention.key_projection.weight"])


def test_gradient_accumulation_and_restart(demo_corpus: Path, tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run",
                       train={"max_steps": 6, "accumulate": 2, "valid_every": 3})
    progress = train(config)
    assert progress.step == 6
    progress = train(config, restart=True)
    assert progress.step == 6
    records = (config.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records if '"valid"' in r] == [3, 6]


def test_training_refuses_data_prepared_for_other_settings(demo_corpus: Path,
                                                           tmp_path: Path) -> None:
    _prepared(demo_corpus, tmp_path / "run")
    changed = config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                           vocab={"src_size": 380}))
    with pytest.raises(DataError, match="prepared data no longer matches"):
        train(changed)
    unprepared = config_from_dict(config_dict(demo_corpus, tmp_path / "other"))
    with pytest.raises(DataError, match="no prepared data; run `s2s prepare`"):
        train(unprepared)


def test_resume_refuses_a_checkpoint_of_another_model(demo_corpus: Path, tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", train={"max_steps": 2, "valid_every": 2})
    train(config)
    bigger = config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                          model={"decoder_hidden": 48}))
    with pytest.raises(CheckpointError, match=r"trained with model\.decoder_hidden=64 but the "
                                              r"config says 48; use --restart"):
        train(bigger)
    gru = config_from_dict(config_dict(demo_corpus, tmp_path / "run", model={"cell": "gru"}))
    with pytest.raises(CheckpointError, match=r"trained with model\.cell='lstm' but the config "
                                              r"says 'gru'; use --restart"):
        train(gru)


def test_resume_and_average_go_on_whatever_init_range_says(demo_corpus: Path,
                                                          tmp_path: Path) -> None:
    """``model.init_range`` only decides the first weights: a run goes on from trained ones,
    and its checkpoints from both sides of the change are one model to average."""
    config = _prepared(demo_corpus, tmp_path / "run", train={"max_steps": 2, "valid_every": 2})
    train(config)
    train(config_from_dict(config_dict(demo_corpus, tmp_path / "run", model={"init_range": 0.0},
                                       train={"max_steps": 4, "valid_every": 2})))
    run = RunDir(config.run_dir)
    assert load_checkpoint(run.checkpoint("last"))["progress"]["step"] == 4
    first, second = run.step_checkpoints()
    assert [load_checkpoint(path)["config"]["model"]["init_range"]
            for path in (first, second)] == [0.1, 0.0]
    average_checkpoints(config.run_dir)
    payload = load_checkpoint(first)  # a setting that does shape the weights still parts them
    payload["config"]["model"]["decoder_hidden"] = 48
    save_atomic(payload, first)
    with pytest.raises(CheckpointError, match="another model than step-00000004.pt"):
        average_checkpoints(config.run_dir)


def test_checkpoints_get_the_mode_a_plain_open_gives(trained_run: Path, tmp_path: Path
                                                     ) -> None:
    """Written under a temporary name and renamed, files must not keep mkstemp's 0600: a
    group that shares a run directory, or a server under another user, reads them."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x", encoding="utf-8")
    expected = stat.S_IMODE(plain.stat().st_mode)
    write_text_whole(tmp_path / "whole.txt", "x")
    assert stat.S_IMODE((tmp_path / "whole.txt").stat().st_mode) == expected
    last = RunDir(load_config(trained_run).run_dir).checkpoint("last")
    assert stat.S_IMODE(last.stat().st_mode) == expected


def test_checkpoints_from_before_the_cell_setting_are_lstms(demo_corpus: Path,
                                                            tmp_path: Path) -> None:
    """Checkpoints written before ``model.cell`` existed have no such key: they are LSTMs."""
    config = _prepared(demo_corpus, tmp_path / "run", train={"max_steps": 2, "valid_every": 2})
    train(config)
    path = RunDir(config.run_dir).checkpoint("last")
    payload = load_checkpoint(path)
    del payload["config"]["model"]["cell"]
    save_atomic(payload, path)
    assert load_model(path).config.model.cell == "lstm"
    train(config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                       train={"max_steps": 3, "valid_every": 2})))
    assert load_checkpoint(path)["progress"]["step"] == 3


def test_learning_rate_schedules() -> None:
    inverse = TrainConfig(lr=1.0, lr_schedule="inverse_sqrt", warmup_steps=100)
    assert learning_rate(inverse, 0, 1.0) == pytest.approx(0.01)
    assert learning_rate(inverse, 99, 1.0) == pytest.approx(1.0)
    assert learning_rate(inverse, 399, 1.0) == pytest.approx(0.5)
    plateau = TrainConfig(lr=1e-3, lr_schedule="plateau", min_lr=1e-4)
    assert learning_rate(plateau, 50, 0.5) == pytest.approx(5e-4)
    assert learning_rate(plateau, 50, 0.01) == pytest.approx(1e-4)
    warm = TrainConfig(lr=1e-3, lr_schedule="constant", warmup_steps=10)
    assert learning_rate(warm, 4, 1.0) == pytest.approx(5e-4)


def test_the_linear_schedule_falls_to_min_lr_at_the_planned_step() -> None:
    linear = TrainConfig(lr=1e-3, min_lr=1e-5, lr_schedule="linear", warmup_steps=10)
    rates = [learning_rate(linear, step, 1.0, planned_steps=110) for step in (0, 10, 60, 110, 500)]
    assert rates == pytest.approx([1e-4, 1e-3, 5.05e-4, 1e-5, 1e-5])
    assert learning_rate(linear, 60, 1.0, planned_steps=0) == pytest.approx(1e-3)  # not known yet
    late = TrainConfig(lr=1e-3, min_lr=0.0, lr_schedule="linear", anneal_fraction=0.25)
    rates = [learning_rate(late, step, 1.0, planned_steps=400) for step in (0, 299, 300, 350, 400)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 0.0])


def test_the_planned_steps_are_the_first_limit_the_run_reaches() -> None:
    def plan(seconds_per_step: float, **limits) -> int:
        config = TrainConfig(lr_schedule="linear", **{"max_epochs": 0, **limits})
        return planned_steps(config, steps_per_epoch=40, step=100, elapsed=300.0,
                             seconds_per_step=seconds_per_step)

    assert plan(2.0, max_steps=500) == 500
    assert plan(2.0, max_steps=500, max_epochs=3) == 120
    assert plan(2.0, max_minutes=10) == 100 + 150  # 300 of 600 seconds left at 2 s a step
    assert plan(2.0, max_minutes=10, max_steps=200) == 200
    assert plan(0.0, max_minutes=10) == 0  # the pace is not measured yet
    assert plan(2.0, max_minutes=4) == 100  # the budget is spent


def test_a_linear_run_falls_to_min_lr_at_max_steps_and_resumes_exactly(demo_corpus: Path,
                                                                       tmp_path: Path) -> None:
    linear = {"train": {"max_steps": 12, "valid_every": 6, "log_every": 3, "batch_tokens": 300,
                        "lr": 0.01, "min_lr": 0.0, "lr_schedule": "linear"}}
    straight = _prepared(demo_corpus, tmp_path / "straight", **linear)
    train(straight)
    resumed = _prepared(demo_corpus, tmp_path / "resumed", **linear)
    train(resumed, should_stop=lambda p: p.step == 5)
    train(resumed)
    records = RunDir(straight.run_dir).read_metrics()
    assert [record["lr"] for record in records if record["kind"] == "train"] == pytest.approx(
        [0.01 * (1 - step / 12) for step in (2, 5, 8, 11)])  # logged after steps 3, 6, 9, 12
    expected = _weights(RunDir(straight.run_dir).checkpoint("last"))
    actual = _weights(RunDir(resumed.run_dir).checkpoint("last"))
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.parametrize(("lr", "average_wins"), [(0.02, False), (0.05, True)])
def test_the_average_of_the_last_checkpoints_becomes_best_only_when_it_validates_better(
        demo_corpus: Path, tmp_path: Path, lr: float, average_wins: bool) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", train={
        "max_steps": 9, "valid_every": 3, "batch_tokens": 300, "lr": lr, "average_last": 2,
        "early_stopping_metric": "loss"})
    train(config)
    run = RunDir(config.run_dir)
    records = run.read_metrics()
    [average] = [record for record in records if record["kind"] == "average"]
    assert average["averaged_from"] == ["step-00000006.pt", "step-00000009.pt"]
    best_valid = min(record["loss"] for record in records if record["kind"] == "valid")
    assert average["best"] == (average["loss"] < best_valid) == average_wins
    avg, best = _weights(run.checkpoint("avg")), _weights(run.checkpoint("best"))
    six, nine = _weights(run.step_checkpoint(6)), _weights(run.step_checkpoint(9))
    name = "decoder.attention.key_projection.weight"
    assert torch.allclose(avg[name], (six[name] + nine[name]) / 2)
    assert torch.equal(best[name], (avg if average_wins else nine)[name])
    train(config)  # a finished run trains nothing, and averages nothing again
    kinds = [record["kind"] for record in records]
    assert [record["kind"] for record in run.read_metrics()] == kinds


def test_the_average_needs_the_checkpoints_it_averages() -> None:
    with pytest.raises(ConfigError, match="train.average_last: 5 .* keeps only 3"):
        config_from_dict(config_dict(Path("corpus"), Path("run"), train={"average_last": 5}))


def test_a_linear_schedule_needs_a_limit_to_fall_to() -> None:
    with pytest.raises(ConfigError, match="train.lr_schedule: linear .* set train.max_steps"):
        config_from_dict(config_dict(Path("corpus"), Path("run"), train={
            "lr_schedule": "linear", "max_steps": 0, "max_epochs": 0, "max_minutes": 0}))


def test_the_guided_attention_loss_fades_out_linearly() -> None:
    fading = TrainConfig(guided_attention_steps=200)
    strengths = [guidance(fading, step) for step in (0, 50, 199, 200, 5000)]
    assert strengths == pytest.approx([1.0, 0.75, 0.005, 0.0, 0.0])
    assert guidance(TrainConfig(), 0) == 0.0


def test_guided_attention_loss_is_zero_on_the_diagonal_and_counts_real_positions_only() -> None:
    eye = torch.eye(10)[None]  # target position t attends source position t: S = T = 10
    everywhere = torch.ones(1, 10, dtype=torch.bool)
    assert float(guided_attention_loss(eye, torch.tensor([10]), everywhere)) == pytest.approx(0)
    # all mass on the reversed diagonal: distance |2t - 9| / 10 at target position t
    reversed_ = eye.flip(-1)
    distances = (2 * torch.arange(10) - 9).abs() / 10
    expected = float((1 - torch.exp(-distances.square() / 0.08)).sum())
    assert float(guided_attention_loss(reversed_, torch.tensor([10]), everywhere)) == (
        pytest.approx(expected))
    # a sentence of 5 target positions in a batch 10 wide: relative to its own lengths
    short = torch.zeros(1, 10, 10)
    short[0, torch.arange(5), 2 * torch.arange(5)] = 1  # t of 5 -> s = 2t of 10: 0.05 off
    first_five = torch.arange(10)[None] < 5
    assert float(guided_attention_loss(short, torch.tensor([10]), first_five)) == (
        pytest.approx(5 * (1 - math.exp(-0.05 ** 2 / 0.08))))
    assert float(guided_attention_loss(reversed_, torch.tensor([10]), first_five)) < expected


def test_early_stopping_stops_after_patience(demo_corpus: Path, tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", train={
        "max_steps": 200, "valid_every": 2, "patience": 2, "lr": 1e-9, "min_lr": 1e-9,
        "early_stopping_metric": "loss"})
    progress = train(config)
    assert progress.stop_reason == "early stopping"
    assert progress.step < 200


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_requested_but_absent_is_a_clear_error(demo_corpus: Path, tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", train={"device": "cuda"})
    with pytest.raises(DeviceError, match="device 'cuda' was requested but CUDA is not available"):
        train(config)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_smoke(demo_corpus: Path, tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", train={
        "device": "cuda", "precision": "bf16", "max_steps": 10, "valid_every": 5})
    progress = train(config)
    assert progress.step == 10
    loaded = load_model(RunDir(config.run_dir).checkpoint("best"))
    assert next(loaded.model.parameters()).device.type == "cpu"  # checkpoints load anywhere


def test_resuming_a_finished_run_says_why_nothing_happens(demo_corpus: Path,
                                                         tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from s2s.cli import app
    path = write_config(tmp_path / "c.yaml", config_dict(
        demo_corpus, tmp_path / "run", train={"max_steps": 4, "valid_every": 4}))
    prepare_run(load_config(path))
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0
    assert "this run already reached train.max_steps (4) at step 4: nothing to train" in \
        " ".join(result.stderr.split())
