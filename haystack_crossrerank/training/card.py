"""The model card (`README.md`) written into every trained model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_model_card(folder: Path, facts: dict[str, Any]) -> None:
    """
    Write `README.md` in the form of the seed model's card: base model, data, loss, hyperparameters,
    training log, final metrics, hardware and software versions.

    :param folder: The model folder.
    :param facts: The run's facts (as `train_cross_encoder` collects them), plus `data` (a description of the
        training data), `loss` (its name) and `evaluation` (a description of the evaluation data).
    """
    config = facts["config"]
    name = str(facts.get("name", folder.name))
    metrics = facts["final_metrics"]
    task = config.get("task", "sts")
    pipeline_tag = "text-ranking"
    lines = [
        "---",
        f"base_model: {config['base_model']}",
        "library_name: sentence-transformers",
        f"pipeline_tag: {pipeline_tag}",
        "tags: [sentence-transformers, cross-encoder, reranker, haystack]",
        "---",
        "",
        f"# Cross-encoder: {name}",
        "",
        f"A cross-encoder fine-tuned from `{config['base_model']}` with haystack-crossrerank "
        f"(task: {task}). It outputs one logit per (text, text) pair; the sigmoid of it is the score.",
        "",
        "## Model details",
        f"- **Base model:** `{config['base_model']}`",
        f"- **Training data:** {facts.get('data', 'n/a')} ({facts['train_rows']} rows)",
        f"- **Loss:** {facts.get('loss', 'binary cross-entropy on the logit')}",
        f"- **Evaluation data:** {facts.get('evaluation', 'n/a')}",
        "- **Output:** 1 label; activation `torch.nn.modules.activation.Sigmoid`",
        "",
        "## Use",
        "```python",
        "from haystack import Document",
        "from haystack_crossrerank import CrossEncoderRanker",
        "",
        f'ranker = CrossEncoderRanker(model="{name}")',
        'print(ranker.run(query="A man is eating food.", documents=[Document(content="A man eats.")]))',
        "",
        "# or with sentence-transformers",
        "from sentence_transformers import CrossEncoder",
        f'print(CrossEncoder("{name}").predict([("A man is eating food.", "A man eats.")]))',
        "```",
        "",
        f"## Evaluation (final model, {facts.get('final_precision', 'fp32')})",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    lines += [
        "",
        "## Training hyperparameters",
        f"- epochs: {config['epochs']}",
        f"- batch size: {config['batch_size']}",
        f"- learning rate: {config['learning_rate']}",
        f"- schedule: linear, warm-up ratio {config['warmup_ratio']}",
        f"- weight decay: {config['weight_decay']}",
        f"- seed: {config['seed']}",
        f"- precision: {facts['precision']}",
        f"- evaluation every {config['eval_steps']} steps; best checkpoint kept: {config['select_best']}",
        f"- random pair order (swap) augmentation: {config['swap_pairs']}",
    ]
    lines += [f"- {key}: {value}" for key, value in (config.get("extra") or {}).items()]
    lines += [
        f"- steps: {facts['steps']}; training wall time: {facts['train_seconds']:.0f} s",
        "",
        "## Training log",
        "| epoch | step | training loss | " + " | ".join(_metric_columns(facts["log"])) + " |",
        "|---|---|---|" + "---|" * len(_metric_columns(facts["log"])),
    ]
    lines += _log_rows(facts["log"])
    lines += [
        "",
        "## Hardware and software",
        f"- hardware: {facts['hardware']}",
    ]
    lines += [f"- {name}: {version}" for name, version in facts["versions"].items()]
    lines.append("")
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _metric_columns(log: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for entry in log:
        for key in entry:
            if key.startswith("eval_") and key not in columns and not key.endswith(("runtime", "per_second")):
                columns.append(key)
    return columns


def _log_rows(log: list[dict[str, Any]]) -> list[str]:
    """One row per evaluation, with the most recent training loss before it."""
    columns = _metric_columns(log)
    rows = []
    last_loss: float | None = None
    for entry in log:
        if "loss" in entry:
            last_loss = float(entry["loss"])
        if any(c in entry for c in columns):
            loss = f"{last_loss:.4f}" if last_loss is not None else "-"
            values = " | ".join(f"{entry[c]:.4f}" if c in entry else "-" for c in columns)
            rows.append(f"| {entry.get('epoch', 0):.2f} | {entry.get('step', '-')} | {loss} | {values} |")
    return rows
