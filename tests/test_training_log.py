"""What a training run writes: one line per evaluation, no per-step dicts, no transformers bars or loading tables."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.conftest import build_tiny_cross_encoder
from tests.test_training import write_small_stsb

HEAD_LINE = (
    "new classification head initialised: classifier.weight, classifier.bias (expected when training from a base model)"
)
EVALUATION_LINE = re.compile(
    r"^epoch \d+\.\d\d step (\d+)/3: stsb-validation spearman -?\d\.\d{4}, pearson -?\d\.\d{4} "
    r"\(loss \d\.\d{4}, \d+\.\ds\)$"
)
# What transformers and its Trainer print by default, and what this project must not.
NOISE = ("{'loss'", "'eval_", "Writing model shards", "Loading weights", "LOAD REPORT", "MISSING", "newly initialized")


@pytest.fixture(scope="module")
def headless_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved without a classification head, as base models are: training puts a new one on."""
    import torch
    from transformers import BertConfig, BertModel

    folder = build_tiny_cross_encoder(tmp_path_factory.mktemp("headless-base"))
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder)
    return folder


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("haystack_crossrerank") and r.levelno == level]


def test_training_logs_one_line_per_evaluation_and_prints_no_dicts_bars_or_tables(
    tmp_path: Path, headless_base: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.training import TrainConfig, train_sts

    caplog.set_level(logging.INFO, logger="haystack_crossrerank")
    config = TrainConfig(
        base_model=str(headless_base),
        output_dir=str(tmp_path / "model"),
        epochs=1,
        batch_size=8,
        eval_steps=2,
        logging_steps=1,
        precision="fp32",
    )
    result = train_sts(config, data=write_small_stsb(tmp_path / "data"))
    printed = capfd.readouterr()
    infos = _messages(caplog)

    evaluations = [e["step"] for e in result.log if "eval_stsb-validation_spearman" in e]
    assert evaluations == [2, 3]
    lines = [m for m in infos if m.startswith("epoch ")]
    matches = [EVALUATION_LINE.match(m) for m in lines]
    assert [int(match.group(1)) for match in matches if match] == evaluations
    assert len(lines) == len(evaluations)
    # the evaluator's and the scorer's own lines are folded into those: one line per evaluation, and one at the end
    assert [m for m in infos if "stsb-validation" in m and not m.startswith("epoch ")] == [
        m for m in infos if m.startswith("final model: stsb-validation spearman")
    ]
    assert not [m for m in infos if m.startswith("Loaded cross-encoder")]
    assert infos.count(HEAD_LINE) == 1
    for noise in NOISE:
        assert noise not in printed.out + printed.err, noise
    assert [m for m in _messages(caplog, logging.WARNING)] == []


def test_a_model_with_its_head_loads_without_a_head_line_or_a_table(
    tiny_model: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.training.base_model import load_for_training

    caplog.set_level(logging.DEBUG, logger="haystack_crossrerank")
    model, _ = load_for_training(str(tiny_model))
    printed = capfd.readouterr()
    assert model.config.num_labels == 1
    assert _messages(caplog) == []
    assert printed.out + printed.err == ""


def test_a_head_with_another_label_count_is_replaced_with_one_line(
    tiny_model_two_labels: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.training.base_model import load_for_training

    caplog.set_level(logging.INFO, logger="haystack_crossrerank")
    model, _ = load_for_training(str(tiny_model_two_labels))
    printed = capfd.readouterr()
    assert model.classifier.weight.shape[0] == 1
    assert _messages(caplog) == [HEAD_LINE]
    for noise in NOISE:
        assert noise not in printed.out + printed.err, noise


def test_a_failed_load_still_shows_transformers_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held back only when the load succeeds: an error that points at "the above report" must have it above."""
    from haystack_crossrerank.training.base_model import load_for_training

    def failing_report(model: object, pretrained_model_name_or_path: str, *args: object, **kwargs: object) -> None:
        logging.getLogger("transformers.modeling_utils").warning("Model LOAD REPORT from: %s", "somewhere")
        raise RuntimeError("look at the above report")

    monkeypatch.setattr("transformers.modeling_utils.log_state_dict_report", failing_report)
    folder = build_tiny_cross_encoder(tmp_path / "model")
    caplog.set_level(logging.WARNING, logger="haystack_crossrerank")
    with pytest.raises(RuntimeError, match="above report"):
        load_for_training(str(folder))
    assert _messages(caplog, logging.WARNING) == ["Model LOAD REPORT from: somewhere"]


def test_transformers_bars_are_off_inside_the_block_and_back_after(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    from haystack_crossrerank.utils.progress import transformers_bars_off

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as it is unless HF_HUB_DISABLE_PROGRESS_BARS is set
    try:
        with transformers_bars_off():
            assert list(hf_logging.tqdm(range(3), desc="Writing model shards")) == [0, 1, 2]
        assert "Writing model shards" not in capfd.readouterr().err
        for _ in hf_logging.tqdm(range(3), desc="Writing model shards"):
            pass
        assert "Writing model shards" in capfd.readouterr().err
    finally:
        if not shown:
            hf_logging.disable_progress_bar()


def test_the_training_bar_shows_the_running_loss_and_the_last_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from transformers import TrainerControl, TrainerState, TrainingArguments

    from haystack_crossrerank.training.reporting import TrainingProgress

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    callback = TrainingProgress("stsb-validation_spearman", show_bar=True)
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    state.max_steps = 4
    callback.on_train_begin(args, state, control)
    for step in (1, 2):
        state.global_step, state.epoch = step, step / 4
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 0.5 / step, "grad_norm": 1.0, "learning_rate": 1e-5})
    callback.on_evaluate(
        args, state, control, metrics={"eval_stsb-validation_spearman": 0.75, "eval_stsb-validation_pearson": 0.7}
    )
    callback.on_train_end(args, state, control)
    assert callback.bar_postfix() == "loss=0.2500, spearman=0.7500"
    assert "loss=0.2500, spearman=0.7500" in stream.getvalue()
    assert "{" not in stream.getvalue()
