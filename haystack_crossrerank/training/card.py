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


BENCH_HEADING = "## Retrieval benchmark (measured with `crossrerank bench`)"


def record_benchmark(folder: Path, result: dict[str, Any], *, command: str, when: str) -> str:
    """
    Put a benchmark's rows for this model into its model card, under one heading per measured setting
    (data set, split, first stage, depth, queries, passage modes). A later run of the same setting replaces
    its section; other sections and the rest of the card are kept.

    :param folder: The model folder; its `README.md` must exist (a card written by training).
    :param result: What `run_benchmark` returned.
    :param command: The command line that produced it, written above the table.
    :param when: The date of the run.
    :returns: The section's heading line.
    :raises FileNotFoundError: If the folder has no `README.md`.
    """
    card = folder / "README.md"
    if not card.is_file():
        raise FileNotFoundError(f"expected a model card at {card} to record the benchmark in, but it does not exist")
    settings = result["settings"]
    rows = result["rows"]
    label = folder.name
    mine = [r for r in rows if r.get("model") == label]
    if not mine:
        raise ValueError(f"the benchmark has no row for {label!r}; its rows are {[r['row'] for r in rows]}")
    heading = (
        f"### {result['dataset']} {settings['split']}, {settings['first_stage']} top {settings['depth']}, "
        f"{rows[0]['queries']} queries, passages {'/'.join(settings['passages'])}"
    )
    shipped = settings.get("shipped_ranker") or {}
    ranker = ", ".join(
        f"{k}={shipped[k]}"
        for k in ("meta_placement", "aggregation", "aggregation_weight", "max_passages", "fusion", "fusion_weight")
        if k in shipped
    )
    lines = [
        heading,
        "",
        f"{when}: `{command}`",
        "",
        f"Ranker settings: {ranker}." if ranker else "",
        "",
        "| row | nDCG@10 | MRR@10 | recall@100 | pairs/s | ms/query p50 |",
        "|---|---|---|---|---|---|",
    ]
    for row in [rows[0], *mine]:
        cells = [row["row"], row["ndcg@10"], row["mrr@10"], row.get("recall@100", "-"), row["pairs_per_s"] or "-"]
        lines.append("| " + " | ".join(str(c) for c in [*cells, row["ms_p50"]]) + " |")
    section = "\n".join(line for i, line in enumerate(lines) if line or lines[i - 1]) + "\n"

    text = card.read_text(encoding="utf-8").rstrip("\n") + "\n"
    if BENCH_HEADING not in text:
        text += f"\n{BENCH_HEADING}\n"
    head, _, tail = text.partition(BENCH_HEADING + "\n")
    # sections under the heading, up to the next top-level heading
    ending = tail.find("\n## ")
    body, rest = (tail, "") if ending < 0 else (tail[: ending + 1], tail[ending + 1 :])
    sections = [s for s in ("\n" + body).split("\n### ") if s.strip()]
    sections = ["### " + s.strip("\n") + "\n" for s in sections]
    kept = [s for s in sections if s.splitlines()[0] != heading]
    new_body = "\n".join([*kept, section])
    card.write_text(f"{head}{BENCH_HEADING}\n\n{new_body}{rest}", encoding="utf-8")
    return heading
