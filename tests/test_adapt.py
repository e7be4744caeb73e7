"""`crossrerank adapt`: pseudo-queries from a corpus, their negatives, user queries, the time budget, and short real
runs on the tiny model that read no judgment file."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from haystack_crossrerank.evaluation.rerank import document_text
from haystack_crossrerank.training.pseudo_queries import (
    MIN_REST_WORDS,
    SPAN_WORDS,
    PseudoQuery,
    make_pseudo_queries,
    normalized,
    pseudo_examples,
    read_user_queries,
    user_pseudo_queries,
)
from tests.conftest import WORDS

# Files opened while `OPENED["active"]` holds: an audit hook sees every open(), gzip.open() and Path.open().
OPENED: dict[str, Any] = {"active": False, "paths": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if OPENED["active"] and event == "open" and isinstance(args[0], (str, Path)):
        OPENED["paths"].append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only inside `recording_opens`


def toy_corpus(documents: int = 40, seed: int = 0) -> dict[str, dict[str, str]]:
    """Documents in the tiny model's words: a three-word title and four sentences of six to nine words."""
    rng = random.Random(seed)
    vocabulary = WORDS[30:]
    corpus = {}
    for i in range(documents):
        sentences = [" ".join(rng.choices(vocabulary, k=rng.randint(6, 9))) + " ." for _ in range(4)]
        corpus[f"d{i}"] = {"title": " ".join(rng.choices(vocabulary, k=3)), "text": " ".join(sentences)}
    return corpus


def test_title_queries_pair_the_title_with_the_body_alone() -> None:
    corpus = toy_corpus(5)
    queries = make_pseudo_queries(corpus, list(corpus), title_share=1.0, keep_span=0.0, seed=1)
    assert [q.doc_id for q in queries] == list(corpus)
    for query in queries:
        doc = corpus[query.doc_id]
        assert query.kind == "title" and query.text == doc["title"]
        assert query.positive == {"title": "", "text": doc["text"]}


def test_span_queries_cut_a_sentence_out_of_the_body_and_keep_the_title() -> None:
    corpus = toy_corpus(8)
    queries = make_pseudo_queries(corpus, list(corpus), title_share=0.0, keep_span=0.0, seed=1)
    assert len(queries) == 8
    for query in queries:
        doc = corpus[query.doc_id]
        sentences = [s.strip() + " ." for s in doc["text"].split(" .") if s.strip()]
        assert query.kind == "span" and query.text in sentences
        assert query.positive["title"] == doc["title"]
        rest = [s for s in sentences if s != query.text]
        assert query.positive["text"] == " ".join(rest) and query.text not in query.positive["text"]
    kept = make_pseudo_queries(corpus, list(corpus), title_share=0.0, keep_span=1.0, seed=1)
    assert all(q.positive["text"] == " ".join(corpus[q.doc_id]["text"].split()) for q in kept)


def test_pseudo_queries_are_seeded_mixed_in_the_asked_share_and_never_empty() -> None:
    corpus = toy_corpus(40)
    first = make_pseudo_queries(corpus, list(corpus), title_share=0.3, keep_span=0.1, seed=7)
    assert first == make_pseudo_queries(corpus, list(corpus), title_share=0.3, keep_span=0.1, seed=7)
    assert first != make_pseudo_queries(corpus, list(corpus), title_share=0.3, keep_span=0.1, seed=8)
    titles = sum(q.kind == "title" for q in first)
    assert 5 <= titles <= 20 and all(q.text.strip() for q in first)
    odd = {
        "untitled-short": {"title": "", "text": "too short ."},  # neither a title nor a body to cut: no query
        "blank-title": {"title": "   ", "text": "too short ."},
        "one-long-sentence": {"title": "", "text": " ".join(WORDS[:40])},  # no usable sentence: a run of words
    }
    made = make_pseudo_queries(odd, list(odd), title_share=1.0, keep_span=0.0, seed=0)
    assert [q.doc_id for q in made] == ["one-long-sentence"]
    (run,) = made
    assert len(run.text.split()) == SPAN_WORDS and run.text in odd["one-long-sentence"]["text"]
    assert len(run.positive["text"].split()) == 40 - SPAN_WORDS >= MIN_REST_WORDS
    with pytest.raises(ValueError, match=r"`title_share` must be in \[0, 1\], but got 1.5"):
        make_pseudo_queries(odd, list(odd), title_share=1.5, keep_span=0.0, seed=0)


def test_no_document_is_a_negative_of_its_own_query_nor_a_same_title_or_duplicate_one() -> None:
    corpus = toy_corpus(12)
    corpus["same-title"] = {"title": corpus["d0"]["title"].upper(), "text": "other words entirely here ."}
    span = PseudoQuery(corpus["d1"]["text"].split(" .")[0] + " .", "d1", "span", {"title": "t", "text": "rest"})
    corpus["duplicate"] = dict(corpus["d1"])
    title = PseudoQuery(corpus["d0"]["title"], "d0", "title", {"title": "", "text": corpus["d0"]["text"]})
    ranked = ["d0", "d1", "same-title", "duplicate", *[f"d{i}" for i in range(2, 12)]]
    examples, stats = pseudo_examples([title, span], [ranked, ranked], corpus, negatives=3, skip_top=2, seed=0)
    assert stats["examples"] == 2 and stats["by_kind"] == {"title": 1, "span": 1, "user": 0}
    title_docs, span_docs = examples[0]["documents"], examples[1]["documents"]
    assert title_docs[0] == corpus["d0"]["text"] and span_docs[0] == "t\nrest"  # the positive first
    bare = {d: document_text({**corpus[d], "title": ""}) for d in corpus}
    full = {d: document_text(corpus[d]) for d in corpus}
    # title query: not d0 nor the same-title document; the two highest others (d1, duplicate) skipped; no titles
    assert not {bare["d0"], bare["same-title"], bare["d1"], bare["duplicate"]} & set(title_docs[1:])
    assert set(title_docs[1:]) <= set(bare.values())
    # span query: not d1 nor its duplicate; the two highest others (d0, same-title) skipped
    assert not {full["d1"], full["duplicate"], full["d0"], full["same-title"]} & set(span_docs[1:])
    assert len(set(span_docs[1:])) == 3


def test_too_few_candidates_are_padded_with_random_allowed_documents() -> None:
    corpus = toy_corpus(6)
    query = PseudoQuery("anything", "d0", "user", dict(corpus["d0"]))
    examples, stats = pseudo_examples([query], [["d0", "d1"]], corpus, negatives=3, skip_top=1, seed=0)
    assert stats["padded_with_random_negatives"] == 1
    negatives = examples[0]["documents"][1:]
    assert len(set(negatives)) == 3 and document_text(corpus["d0"]) not in negatives
    with pytest.raises(ValueError, match="needs 9 negatives, but the corpus has only 5"):
        pseudo_examples([query], [["d0"]], corpus, negatives=9, skip_top=0, seed=0)


def test_user_queries_are_read_as_lines_or_json_lines(tmp_path: Path) -> None:
    corpus = toy_corpus(3)
    plain = tmp_path / "queries.txt"
    plain.write_text("what is the  risk\n\n  a second query \n", encoding="utf-8")
    assert read_user_queries(plain, corpus) == [("what is the risk", None), ("a second query", None)]
    rows = tmp_path / "queries.jsonl"
    rows.write_text('{"text": "q one", "doc_id": "d2"}\n{"query": "q two"}\n', encoding="utf-8")
    assert read_user_queries(rows, corpus) == [("q one", "d2"), ("q two", None)]
    bad = {
        '{"text": "q", "doc_id": "nope"}': r":1: `doc_id` 'nope' is not a document of the corpus",
        '{"text": "  "}': r":1: expected a non-empty `text` \(or `query`\)",
        '{"text": "q"}\n{broken': r":2: not valid JSON",
        "\n\n": r"expected at least one query, but the file holds none",
    }
    for text, message in bad.items():
        rows.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            read_user_queries(rows, corpus)
    with pytest.raises(FileNotFoundError, match="queries file .* does not exist"):
        read_user_queries(tmp_path / "missing.txt", corpus)


def test_a_user_query_takes_its_named_document_else_the_first_stage_top() -> None:
    corpus = toy_corpus(4)
    made = user_pseudo_queries([("a", "d3"), ("b", None), ("c", None)], [["d1"], ["d2", "d0"], []], corpus)
    assert [(q.text, q.doc_id, q.kind, found) for q, found in made] == [
        ("a", "d3", "user", ["d1"]),
        ("b", "d2", "user", ["d2", "d0"]),
    ]  # "c" has neither a named document nor a candidate: left out


def test_the_time_budget_stops_at_the_step_that_would_pass_the_deadline() -> None:
    from transformers import TrainerControl

    from haystack_crossrerank.training.adapt import TimeBudget

    now = [0.0]
    budget = TimeBudget(deadline=35.0, clock=lambda: now[0])
    args = SimpleNamespace(eval_strategy="steps", save_strategy="steps")
    state = SimpleNamespace(global_step=0, max_steps=100)
    budget.on_train_begin(args, state, TrainerControl())
    for step in range(1, 4):  # 10 s a step: after step 3 (30 s) another step would end at 40 s > 35 s
        now[0], state.global_step = step * 10.0, step
        control = budget.on_step_end(args, state, TrainerControl())
        assert control.should_training_stop == (step == 3)
    assert budget.stopped_at == 3 and control.should_evaluate and control.should_save
    last = TimeBudget(deadline=0.0, clock=lambda: 5.0)  # the planned last step is not counted as a budget stop
    last.on_train_begin(args, SimpleNamespace(global_step=0, max_steps=1), TrainerControl())
    last.on_step_end(args, SimpleNamespace(global_step=1, max_steps=1), TrainerControl())
    assert last.stopped_at is None


def test_bad_adapt_settings_are_refused() -> None:
    from haystack_crossrerank.training.adapt import AdaptOptions

    cases = {
        "first_stage": ("faiss", "`first_stage` must be 'bm25' or 'hybrid', but got 'faiss'"),
        "minutes": (0.0, "`minutes` must be > 0, but got 0.0"),
        "heldout": (0, "`heldout` must be > 0, but got 0"),
        "skip_top": (-1, "`skip_top` must be >= 0, but got -1"),
        "base_share": (1.0, "`base_share` must be in [0, 1), but got 1.0"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            AdaptOptions(corpus="x", **{name: value}).validate()


def write_beir_bait(folder: Path, corpus: dict[str, dict[str, str]]) -> Path:
    """A BEIR folder: the corpus, and the queries and judgments that `adapt` must never open."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id, doc in corpus.items():
            out.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    (folder / "queries.jsonl").write_text('{"_id": "q0", "text": "paris"}\n', encoding="utf-8")
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n", encoding="utf-8")
    return folder


def recorded_run(argv: list[str]) -> tuple[int, list[str]]:
    from haystack_crossrerank.commands.cli import main

    OPENED.update(active=True, paths=[])
    try:
        status = main(argv)
    finally:
        OPENED["active"] = False
    return status, list(OPENED["paths"])


def tiny_adapt_flags(model: Path) -> list[str]:
    """`crossrerank adapt` flags for a quick run of a tiny model on a toy corpus."""
    return ["--base", str(model), "--max-length", "64", "--heldout", "4", "--eval-steps", "2"]


def assert_complete_model(folder: Path) -> None:
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "adaptation.json"):
        assert (folder / name).is_file(), name
    scores = CrossEncoderScorer(folder, precision="fp32", backend="torch").score([("paris city", "the city of paris")])
    assert len(scores) == 1


def test_adapt_end_to_end_reads_the_corpus_and_no_judgment(tmp_path: Path, tiny_model: Path) -> None:
    data = write_beir_bait(tmp_path / "beir", toy_corpus(24))
    queries = tmp_path / "mine.txt"
    queries.write_text("paris city museum\nriver wall tower\n", encoding="utf-8")
    out = tmp_path / "adapted"
    common = [*tiny_adapt_flags(tiny_model), "--base-share", "0.5", "--seed", "7"]
    argv = ["adapt", "--corpus", str(data), "--output", str(out), "--queries", str(queries), *common]
    status, opened = recorded_run([*argv, "--json", str(tmp_path / "summary.json")])
    assert status == 0
    inside = {Path(p).resolve() for p in opened if Path(p).resolve().is_relative_to(data.resolve())}
    assert inside == {(data / "corpus.jsonl").resolve()}  # not queries.jsonl, not qrels/*
    assert not [p for p in opened if "qrels" in p]
    assert_complete_model(out)
    facts = json.loads((out / "adaptation.json").read_text())
    assert facts["examples"]["by_kind"]["user"] == 2 and facts["corpus"]["documents"] == 24
    assert facts["examples"]["examples"] == 20 + 2 and facts["heldout_documents"] == 4
    assert facts["result"]["stopped_by_budget"] is False and facts["result"]["kept"] in ("adapted", "base")
    assert set(facts["result"]["heldout"]) == {"first_stage", "base", "trained", "adapted"}
    assert facts["options"]["base_share"] == 0.5
    assert facts["seed"] == 7  # with the options, what it takes to make the same model again
    # the trainer's record and the collator use the same length
    assert json.loads((out / "training_log.json").read_text())["config"]["max_length"] == 64
    card = (out / "README.md").read_text()
    assert "task: adapt" in card and "## Adaptation" in card and "no relevance judgments read" in card
    assert "corpus.jsonl (24 documents, sha256 " in card and "| first_stage |" in card and "| trained |" in card
    assert "- weights: 0.5 × the base model's + 0.5 × the trained ones" in card
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["output"] == str(out) and summary["steps"] == facts["result"]["steps"] == 3
    status, _ = recorded_run([*argv])  # the folder exists: refused before any work
    assert status == 2


def test_a_spent_budget_stops_training_and_a_better_base_is_kept_whole(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from haystack_crossrerank.training import adapt

    data = write_beir_bait(tmp_path / "beir", toy_corpus(24))
    real = adapt._evaluate_base
    monkeypatch.setattr(adapt, "_evaluate_base", lambda *a: {k: v + 2.0 for k, v in real(*a).items()})
    options = adapt.AdaptOptions(corpus=str(data), minutes=0.001, heldout=4, max_length=64)
    config = adapt.adapt_config(  # no warm-up and a large step: the one step changes the weights
        str(tiny_model), str(tmp_path / "adapted"), eval_steps=2, max_length=64, warmup_ratio=0.0, learning_rate=1e-2
    )
    result = adapt.adapt_reranker(config, options)
    assert result.stopped_by_budget and result.training.steps == 1 and result.facts["result"]["planned_steps"] == 3
    assert result.kept == "base"
    assert_complete_model(result.output_dir)
    kept, base = load_file(result.output_dir / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert kept.keys() == base.keys() and all(bool((kept[k] == base[k]).all()) for k in base)
    card = (result.output_dir / "README.md").read_text()
    assert "1 of 3 planned steps; stopped by the time budget" in card and "Kept: the base model" in card


def test_averaging_with_the_base_mixes_every_weight_in_the_given_share(tmp_path: Path, tiny_model: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from haystack_crossrerank.training.weights import interpolate_with_base

    trained = tmp_path / "trained"
    shutil.copytree(tiny_model, trained)
    base = load_file(tiny_model / "model.safetensors")
    save_file({k: v + 1.0 if v.is_floating_point() else v for k, v in base.items()}, trained / "model.safetensors")
    assert interpolate_with_base(str(tiny_model), trained, 0.25)
    mixed = load_file(trained / "model.safetensors")
    assert mixed.keys() == base.keys()
    for key, value in base.items():
        expected = value + 0.75 if value.is_floating_point() else value
        assert torch.allclose(mixed[key], expected, atol=1e-5), key
    with pytest.raises(ValueError, match=r"`base_share` must be in \(0, 1\), but got 1.0"):
        interpolate_with_base(str(tiny_model), trained, 1.0)


def test_the_averaged_model_not_the_trained_one_is_compared_with_the_base(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haystack_crossrerank.training import adapt

    data = write_beir_bait(tmp_path / "beir", toy_corpus(24))
    real = adapt._evaluate_model
    offsets = {"the base model": -5.0, "the averaged model": -10.0}  # trained (0..1) > base > averaged

    def shifted(model_dir: str, evaluator: Any, label: str) -> dict[str, float]:
        return {k: v + offsets[label] for k, v in real(model_dir, evaluator, label).items()}

    monkeypatch.setattr(adapt, "_evaluate_model", shifted)
    options = adapt.AdaptOptions(corpus=str(data), heldout=4, max_length=64, base_share=0.5)
    result = adapt.adapt_reranker(adapt.adapt_config(str(tiny_model), str(tmp_path / "out"), eval_steps=2), options)
    assert (
        result.heldout["trained"]["ndcg@10"] > result.heldout["base"]["ndcg@10"] > result.heldout["adapted"]["ndcg@10"]
    )
    assert result.kept == "base"  # the trained weights would have won; the averaged ones are what would be written


def test_a_base_without_a_one_logit_head_is_not_averaged_with(
    tmp_path: Path, tiny_model: Path, tiny_model_two_labels: Path
) -> None:
    import shutil

    from haystack_crossrerank.training.weights import interpolate_with_base

    trained = tmp_path / "trained"
    shutil.copytree(tiny_model, trained)
    before = (trained / "model.safetensors").read_bytes()
    assert not interpolate_with_base(str(tiny_model_two_labels), trained, 0.5)
    assert (trained / "model.safetensors").read_bytes() == before


def test_normalized_ignores_case_and_spacing() -> None:
    assert normalized("  Bell's\tPalsy \n") == "bell's palsy"


def quality_script() -> Any:
    """benchmarks/adapt_quality.py, loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "adapt_quality", Path(__file__).parents[1] / "benchmarks" / "adapt_quality.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_quality_benchmark_picks_the_shipped_rows_and_says_where_the_adapted_model_is_worse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = quality_script()
    rows = [
        {"row": "bm25", "ndcg@10": 0.6},
        {"row": "+ CrossEncoderRanker (a, sentences)", "ndcg@10": 0.1},
        {"row": "+ a, sentences, minmax fusion", "ndcg@10": 0.7},
    ]
    ranker = {"passages": "sentences", "fusion": "minmax"}
    assert script.pipeline_row(rows, "models/a", ranker) is rows[2]
    assert script.pipeline_row(rows, "models/a", {"passages": "sentences"}) is rows[1]
    assert script.shipped_ranker("bm25")["meta_fields_to_embed"] == ["title"]
    same = {"first_stage": "bm25", "depth": 20, "queries": 3, "base": {"ndcg@10": 0.5}}
    worse = {**same, "dataset": "medquad", "first_stage_alone": {"ndcg@10": 0.6}, "adapted": {"ndcg@10": 0.55}}
    better = {**same, "dataset": "scifact", "first_stage_alone": {"ndcg@10": 0.6}, "adapted": {"ndcg@10": 0.65}}
    worse.update(adapted_minus_first_stage=-0.05, adapted_worse_than_first_stage=True)
    better.update(adapted_minus_first_stage=0.05, adapted_worse_than_first_stage=False)
    warnings = script.print_table([better, worse])
    assert warnings == [
        "WORSE: on medquad test, bm25_rerank with the adapted model ranks below its first stage alone (0.5500 < 0.6000)"
    ]
    assert "scifact | bm25_rerank (top 20) | 3 | 0.6000 | 0.5000 | 0.6500 | +0.0500" in capsys.readouterr().out
    assert script.parse_adapted(["scifact=models/x"]) == {"scifact": "models/x"}
    assert script.training_seed(str(tmp_path)) is None  # a folder without a training log
    (tmp_path / "training_log.json").write_text(json.dumps({"config": {"seed": 43}}), encoding="utf-8")
    assert script.training_seed(str(tmp_path)) == 43


def test_the_quality_benchmark_can_run_only_the_recorded_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.commands import benchmark

    script = quality_script()
    runs: list[Any] = []

    def fake_benchmark(options: Any) -> dict[str, Any]:
        runs.append(options)
        first = {"row": "hybrid", "queries": 3, "ndcg@10": 0.6, "mrr@10": 0.5, "recall@100": 0.9}
        fused = {"row": "+ m-adapted, sentences, zscore fusion", "ndcg@10": 0.64, "gain_ci90": [-0.01, 0.09]}
        return {"rows": [first, fused]}

    monkeypatch.setattr(benchmark, "run_benchmark", fake_benchmark)
    recipe = {"passages": "sentences", "fusion": "zscore", "fusion_weight": 0.1}
    found = script.compare(
        "d", "scifact", "hybrid", "m", "models/m-adapted", sample_queries=3, recipe=recipe, recorded_only=True
    )
    assert [r.models for r in runs] == [["models/m-adapted"]]  # neither the base model nor the shipped settings
    assert found["base"] is None and found["adapted"] is None
    assert found["adapted_recorded"]["gain_ci90"] == [-0.01, 0.09]
    assert found["adapted_recorded_minus_first_stage"] == 0.04 and found["queries"] == 3
    script.print_table([found])
    assert "scifact | hybrid_rerank (top 20) | 3 | 0.6000 | - | - | - | 0.6400 | +0.0400 (90%: -0.0100 to +0.0900)" in (
        capsys.readouterr().out
    )
    with pytest.raises(ValueError, match="recorded_only needs"):
        script.compare("d", "scifact", "hybrid", "m", "models/m-adapted", sample_queries=3, recorded_only=True)


def _adapted_folder(folder: Path, settings: Any) -> Path:
    folder.mkdir()
    (folder / "adaptation.json").write_text(json.dumps({"ranker_settings": settings}), encoding="utf-8")
    return folder


def test_recorded_ranker_settings_are_read_per_pipeline_and_explicit_settings_win(tmp_path: Path) -> None:
    from haystack_crossrerank.utils.adapted import recorded_ranker_settings, with_recorded_settings

    folder = _adapted_folder(tmp_path / "adapted", {"hybrid_rerank": {"fusion": "zscore", "fusion_weight": 0.1}})
    assert recorded_ranker_settings(folder, "hybrid_rerank") == {"fusion": "zscore", "fusion_weight": 0.1}
    assert recorded_ranker_settings(folder, "bm25_rerank") == {}
    assert recorded_ranker_settings("org/some-model", "hybrid_rerank") == {}  # a hub id records nothing
    assert recorded_ranker_settings(tmp_path, "hybrid_rerank") == {}  # a folder without the file
    given = {"fusion_weight": 0.5, "backend": "torch"}
    merged = with_recorded_settings(folder, "hybrid_rerank", given)
    assert merged == {"fusion": "zscore", "fusion_weight": 0.5, "backend": "torch"}
    assert with_recorded_settings(tmp_path, "hybrid_rerank", None) == {}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adaptation.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a JSON object written by `crossrerank adapt`"):
        recorded_ranker_settings(broken, "hybrid_rerank")
    odd = _adapted_folder(tmp_path / "odd", {"hybrid_rerank": ["zscore"]})
    with pytest.raises(ValueError, match="must map pipeline names to ranker settings, but got"):
        recorded_ranker_settings(odd, "hybrid_rerank")


def test_the_shipped_recipe_is_the_one_the_recipe_benchmark_chose() -> None:
    from haystack_crossrerank.ranker import CrossEncoderRanker
    from haystack_crossrerank.training.adapt import ADAPTED_RANKER_SETTINGS

    result = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "adapt_recipe.json").read_text())
    assert result["results"]["recipe"] == ADAPTED_RANKER_SETTINGS

    for settings in ADAPTED_RANKER_SETTINGS.values():  # each one a ranker configuration that init accepts
        ranker = CrossEncoderRanker(model="some/model", **settings)
        assert {k: getattr(ranker, k) for k in settings} == settings


def test_the_recipe_picks_the_best_worst_case_across_data_sets() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "adapt_recipe", Path(__file__).parents[1] / "benchmarks" / "adapt_recipe.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def row(weight: float, gain: float, lcb: float) -> dict[str, Any]:
        fixed = {"passages": "sentences", "meta_placement": "passage", "aggregation": "max"}
        fixed |= {"aggregation_weight": 0.5, "fusion": "rrf", "max_passages": None, "depth": 20}
        return {**fixed, "fusion_weight": weight, "ndcg@10": 0.5 + gain, "gain": gain, "gain_lcb": lcb}

    # 0.1 is best on a, 0.9 best on b; 0.5 holds on both and wins
    a = [row(0.1, 0.05, 0.04), row(0.5, 0.02, 0.01), row(0.9, -0.03, -0.05)]
    b = [row(0.1, -0.01, -0.02), row(0.5, 0.03, 0.015), row(0.9, 0.08, 0.06)]
    best, rows = script.joint_choice({"a": a, "b": b})
    assert best["settings"]["fusion_weight"] == 0.5 and best["worst_gain_lcb"] == 0.01 and len(rows) == 3
    assert best["a"] == {"ndcg@10": 0.52, "gain": 0.02, "gain_lcb": 0.01}
    with pytest.raises(ValueError, match="share no setting"):
        script.joint_choice({"a": a[:1], "b": b[1:]})


def test_an_adapted_model_records_and_prints_the_recipe_and_a_kept_base_records_none(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from haystack_crossrerank.training import adapt
    from haystack_crossrerank.utils.adapted import recorded_ranker_settings

    data = write_beir_bait(tmp_path / "beir", toy_corpus(24))
    real = adapt._evaluate_base
    monkeypatch.setattr(adapt, "_evaluate_base", lambda *a: {k: v - 2.0 for k, v in real(*a).items()})
    out = tmp_path / "adapted"
    common = tiny_adapt_flags(tiny_model)
    status, _ = recorded_run(["adapt", "--corpus", str(data), "--output", str(out), *common])
    assert status == 0
    facts = json.loads((out / "adaptation.json").read_text())
    assert facts["result"]["kept"] == "adapted"
    assert facts["ranker_settings"] == adapt.ADAPTED_RANKER_SETTINGS
    assert recorded_ranker_settings(out, "hybrid_rerank") == adapt.ADAPTED_RANKER_SETTINGS["hybrid_rerank"]
    card = (out / "README.md").read_text()
    hybrid = adapt.ADAPTED_RANKER_SETTINGS["hybrid_rerank"]
    assert "### Ranker settings" in card and f"`fusion={hybrid['fusion']}`" in card
    printed = capsys.readouterr().out
    assert f"hybrid_rerank: --set passages={hybrid['passages']}" in printed and "--set max_passages=" in printed
    # a kept base model records no settings: it runs as shipped
    monkeypatch.setattr(adapt, "_evaluate_base", lambda *a: {k: v + 2.0 for k, v in real(*a).items()})
    status, _ = recorded_run(["adapt", "--corpus", str(data), "--output", str(out), "--overwrite", *common])
    assert status == 0
    facts = json.loads((out / "adaptation.json").read_text())
    assert facts["result"]["kept"] == "base" and facts["ranker_settings"] == {}
    assert "### Ranker settings" not in (out / "README.md").read_text()
    assert recorded_ranker_settings(out, "hybrid_rerank") == {}


def test_a_query_longer_than_max_length_is_cut_instead_of_stopping_training(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from haystack_crossrerank.training.retrieval import RetrievalCollator

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    collator = RetrievalCollator(tokenizer, 16, "listwise", micro_batches=False)
    long_query = " ".join(WORDS[:40])
    batch = collator([{"query": long_query, "documents": ["paris city museum", " ".join(WORDS[40:80])]}])
    ids = [chunk["input_ids"] for chunk in batch["chunks"]]
    assert ids and all(t.shape[-1] <= 16 for t in ids)
    # an ordinary query: the collator cuts only the text, giving the ids it gave before
    text = " ".join(WORDS[40:80])
    batch = collator([{"query": "paris", "documents": ["paris city museum", text]}])
    rows = [
        [t for t, keep in zip(ids, mask, strict=True) if keep]
        for chunk in batch["chunks"]
        for ids, mask in zip(chunk["input_ids"].tolist(), chunk["attention_mask"].tolist(), strict=True)
    ]
    assert tokenizer("paris", text, truncation="only_second", max_length=16)["input_ids"] in rows
