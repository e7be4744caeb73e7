"""The search page of `crossrerank serve` in a real browser (headless Chromium driven by Playwright), and the API
options it calls (`first_stage`, `judgments`), against one real server process for the module (tiny model, a
random corpus, judgments for one query).

The browser is Debian's `chromium` (or the one `CROSSRERANK_CHROMIUM` names), never one that Playwright downloads.
Without it, or without Playwright, the browser tests skip with a message naming both; `.ci/run` installs them and
sets `CROSSRERANK_BROWSER_TESTS=required`, so that in CI they fail instead of skipping.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving_server import Server, start_server, write_corpus

pytest.importorskip("hayhooks")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

JUDGED = "paris capital city museum"
JUDGED_ID = "q1"
UNJUDGED = "protein gene cancer trial"
# Judgments for q1: every corpus document, graded 0, 1 or 2 in turn (grade 0: judged not relevant).
RELEVANCE = {f"d{i}": i % 3 for i in range(40)}
BROWSER_PACKAGES = (
    "install Debian's `chromium` package (`apt-get install -y chromium`) and the `playwright` pip package "
    "(in the `dev` extra); the tests drive that Chromium, not a browser downloaded by Playwright"
)
WAIT_MS = 30_000


# ---------------------------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def judged_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("search-data")
    write_corpus(folder / "corpus.jsonl")
    queries = [{"_id": JUDGED_ID, "text": JUDGED}, {"_id": "q2", "text": "a query without judgments"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    rows = "".join(f"{JUDGED_ID}\t{doc}\t{grade}\n" for doc, grade in RELEVANCE.items())
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server(judged_folder: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One request scored at a time and one waiting: a third gets 503, which the busy test makes happen for real.
    # The torch backend in fp32 starts at once (the page does not depend on the backend; the default one exports first).
    started = start_server(
        tmp_path_factory.mktemp("search-server"),
        judged_folder / "corpus.jsonl",
        tiny_model,
        *("--qrels", str(judged_folder / "qrels.tsv"), "--queries", str(judged_folder / "queries.jsonl")),
        *("--max-queue", "1", "--max-batch-requests", "1", "--set", "backend=torch", "--set", "precision=fp32"),
    )
    yield started
    started.stop()


def ask(server: Server, **body: Any) -> httpx.Response:
    return httpx.post(server.run_url, json=body, timeout=60)


def ndcg10(ranking: list[str], relevance: dict[str, int]) -> float:
    """trec_eval's nDCG@10 (linear gains, log2 discounts), written out independently of the server's."""
    dcg = sum(relevance.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:10]))
    ideal = sorted((grade for grade in relevance.values() if grade > 0), reverse=True)[:10]
    return dcg / sum(grade / math.log2(i + 2) for i, grade in enumerate(ideal))


# ---------------------------------------------------------------------------------------------- the API
def test_without_the_options_the_answer_is_the_plain_list_and_first_stage_adds_the_ranking(server: Server) -> None:
    plain = ask(server, query=UNJUDGED)
    assert plain.status_code == 200, plain.text
    assert list(plain.json()) == ["result"] and isinstance(plain.json()["result"], list)
    compared = ask(server, query=UNJUDGED, first_stage=True)
    assert compared.status_code == 200, compared.text
    result = compared.json()["result"]
    assert sorted(result) == ["documents", "first_stage", "timings_ms"]
    assert result["documents"] == plain.json()["result"]
    first_ids = [doc["id"] for doc in result["first_stage"]]
    assert len(first_ids) == len(set(first_ids)) == 20  # the pipeline's depth
    assert {doc["id"] for doc in result["documents"]} <= set(first_ids)
    assert all("crossrerank_passage" not in doc["meta"] for doc in result["first_stage"])
    timings = result["timings_ms"]
    assert sorted(timings) == ["first_stage", "ranker", "total"]
    assert timings["first_stage"] > 0 and timings["ranker"] > 0
    assert timings["first_stage"] + timings["ranker"] <= timings["total"]
    assert ask(server, query=UNJUDGED, first_stage=False).json() == plain.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": JUDGED, "first_stage": "yes"}, "first_stage"),
        ({"query": JUDGED, "first_stage": 1}, "first_stage"),
        ({"query": JUDGED, "judgments": None}, "judgments"),
    ],
)
def test_an_option_that_is_not_a_boolean_gets_a_422_naming_it(server: Server, body: dict, field: str) -> None:
    response = httpx.post(server.run_url, json=body, timeout=60)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field] and error["msg"] == "Input should be a valid boolean"


def test_judgments_give_the_relevance_and_ndcg10_of_both_rankings(server: Server) -> None:
    result = ask(server, query="  Paris CAPITAL city   museum ", judgments=True).json()["result"]
    assert sorted(result) == ["documents", "judgments"]
    with_first_stage = ask(server, query=JUDGED, first_stage=True, judgments=True).json()["result"]
    assert with_first_stage["judgments"] == result["judgments"]
    judgments = result["judgments"]
    assert judgments["query_id"] == JUDGED_ID and judgments["relevance"] == RELEVANCE
    reranked = [doc["id"] for doc in with_first_stage["documents"]]
    first_stage = [doc["id"] for doc in with_first_stage["first_stage"]][: len(reranked)]
    assert judgments["ndcg@10"]["reranked"] == pytest.approx(ndcg10(reranked, RELEVANCE), abs=1e-4)
    assert judgments["ndcg@10"]["first_stage"] == pytest.approx(ndcg10(first_stage, RELEVANCE), abs=1e-4)
    assert ask(server, query=UNJUDGED, judgments=True).json()["result"]["judgments"] is None


def test_the_page_its_files_and_its_config_are_served(server: Server) -> None:
    page = httpx.get(f"{server.base}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    linked = re.findall(r'(?:href|src)="([^"]+)"', page.text)
    assert linked == ["data:,", "search/static/search.css", "search/static/search.js"], "nothing from elsewhere"
    for name, kind in (("search.css", "text/css"), ("search.js", "text/javascript")):
        response = httpx.get(f"{server.base}/search/static/{name}", timeout=30)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    missing = httpx.get(f"{server.base}/search/static/other.js", timeout=30)
    assert missing.status_code == 404 and "expected one of ['search.css', 'search.js']" in missing.text
    config = httpx.get(f"{server.base}/search/config", timeout=30).json()
    assert config == {"pipelines": [{"name": "bm25_rerank", "judged": True, "judged_queries": [JUDGED]}]}


# ---------------------------------------------------------------------------------------------- in process
def test_judgments_match_queries_by_text_and_score_as_in_the_docstring() -> None:
    from haystack_crossrerank.commands.search_page import Judgments

    judgments = Judgments({"q1": {"d1": 1, "d3": 2}}, {"q1": "Capital of France", "q2": "unjudged"})
    found = judgments.evaluate("capital  of france", reranked=["d3", "d1", "d2"], first_stage=["d2", "d1", "d3"])
    assert found is not None and found["query_id"] == "q1"
    assert found["ndcg@10"] == pytest.approx({"first_stage": 0.6199, "reranked": 1.0}, abs=1e-4)
    assert judgments.evaluate("capital of germany", reranked=["d1"], first_stage=["d1"]) is None
    assert judgments.evaluate("unjudged", reranked=["d1"], first_stage=["d1"]) is None
    with pytest.raises(ValueError, match=r"none of the 1 judged queries has a text among the 1 queries given"):
        Judgments({"q1": {"d1": 1}}, {"q9": "other"})


def test_judgment_files_take_the_corpus_folders_queries_and_say_what_is_missing(tmp_path: Path) -> None:
    from haystack_crossrerank.commands.search_page import judgment_files
    from haystack_crossrerank.commands.serving import ServeSettings

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\td1\t1\n", encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n', encoding="utf-8")
    assert judgment_files(None, None, str(tmp_path)) is None
    assert judgment_files(str(qrels), None, str(tmp_path)) == (qrels, tmp_path / "queries.jsonl")
    with pytest.raises(ValueError, match=r"give `queries` \(a BEIR queries.jsonl\) or a BEIR folder as the corpus"):
        judgment_files(str(qrels), None, str(tmp_path / "corpus.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"qrels '.*missing.tsv' do not exist"):
        judgment_files(str(tmp_path / "missing.tsv"), None, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"queries '.*nowhere.jsonl' do not exist"):
        judgment_files(str(qrels), str(tmp_path / "nowhere.jsonl"), None)
    with pytest.raises(ValueError, match=r"`queries` go with `qrels`, but got queries='q.jsonl' and no qrels"):
        ServeSettings(corpus="c.jsonl", queries="q.jsonl")


def test_options_are_checked_and_judgments_need_qrels() -> None:
    from fastapi import HTTPException

    from haystack_crossrerank.commands.search_page import check_options

    check_options(first_stage=True, judgments=True, judged=True)
    with pytest.raises(HTTPException) as raised:
        check_options(first_stage=False, judgments=True, judged=False)
    assert raised.value.status_code == 422
    assert raised.value.detail == "`judgments` needs a server started with qrels (`--qrels`), but it has none"
    with pytest.raises(HTTPException, match="`first_stage` must be true or false, but got 'yes'"):
        check_options(first_stage="yes", judgments=False, judged=True)


# ---------------------------------------------------------------------------------------------- the browser
def chromium_path() -> str | None:
    """The Chromium to drive: `CROSSRERANK_CHROMIUM`, else Debian's `chromium` (or another Chrome) on the PATH."""
    named = os.environ.get("CROSSRERANK_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright is not installed"
    else:
        named = os.environ.get("CROSSRERANK_CHROMIUM")
        problem = (
            None
            if path is not None
            else f"no browser at CROSSRERANK_CHROMIUM={named}"
            if named
            else "no Chromium found"
        )
    if problem is not None:
        if os.environ.get("CROSSRERANK_BROWSER_TESTS") == "required":
            pytest.fail(f"{problem}, and CROSSRERANK_BROWSER_TESTS=required: {BROWSER_PACKAGES}")
        pytest.skip(f"{problem}: {BROWSER_PACKAGES}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh page at a desktop width; `page.requested` lists every URL it asked for."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    opened.requested = []
    opened.on("request", lambda request: opened.requested.append(request.url))
    opened.goto(f"{server.base}/")
    yield opened
    context.close()


def search(page: Any, query: str) -> None:
    """Type the query and press Enter, as a reader would."""
    page.fill("#query", query)
    page.press("#query", "Enter")


def spaced(text: str) -> str:
    return " ".join(text.split())


def test_the_page_shows_both_rankings_movements_passages_and_ndcg(page: Any, server: Server, tmp_path: Path) -> None:
    search(page, JUDGED)
    page.wait_for_selector("#reranked-list li.result")
    api = ask(server, query=JUDGED, first_stage=True, judgments=True).json()["result"]
    reranked, first_stage = api["documents"], api["first_stage"]
    k = len(reranked)
    assert k == 10
    first_ranks = {doc["id"]: rank for rank, doc in enumerate(first_stage, start=1)}

    shown_first = page.locator("#first-stage-list > li").evaluate_all("items => items.map(li => li.dataset.id)")
    assert shown_first == [doc["id"] for doc in first_stage[:k]]
    items = page.locator("#reranked-list > li").evaluate_all(
        """items => items.map(li => ({
            id: li.dataset.id, rank: li.dataset.rank, movement: li.dataset.movement, moved: li.dataset.moved,
            badge: li.querySelector('.movement').textContent, relevance: li.dataset.relevance || null,
            marks: [...li.querySelectorAll('mark.passage')].map(m => m.textContent)}))"""
    )
    assert [item["id"] for item in items] == [doc["id"] for doc in reranked]
    for rank, (item, doc) in enumerate(zip(items, reranked, strict=True), start=1):
        was = first_ranks[doc["id"]]
        if was > k:
            assert (item["movement"], item["badge"]) == ("new", "new"), item
        else:
            moved = was - rank
            kind = "up" if moved > 0 else "down" if moved < 0 else "same"
            badge = {"up": f"▲ {moved}", "down": f"▼ {-moved}", "same": "="}[kind]
            assert (item["movement"], item["moved"], item["badge"]) == (kind, str(moved), badge), item
        assert item["rank"] == str(rank)
        assert [spaced(mark) for mark in item["marks"]] == [spaced(doc["meta"]["crossrerank_passage"])], item
        grade = RELEVANCE[doc["id"]]
        assert item["relevance"] == (str(grade) if grade > 0 else None), item
    assert {item["movement"] for item in items} - {"same"}, "the reranker moved something"

    ndcg = api["judgments"]["ndcg@10"]
    assert page.text_content("#ndcg-first-stage") == f"{ndcg['first_stage']:.3f}"
    assert page.text_content("#ndcg-reranked") == f"{ndcg['reranked']:.3f}"
    assert re.fullmatch(r"[0-9.]+ ms", page.text_content("#time-first-stage") or "")
    assert re.fullmatch(r"[0-9.]+ ms", page.text_content("#time-ranker") or "")
    assert page.is_hidden("#pipeline-field"), "one pipeline served: no selector"
    assert page.is_hidden("#error")
    page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
    assert (tmp_path / "search-page.png").stat().st_size > 10_000

    search(page, UNJUDGED)
    page.wait_for_function("document.querySelector('#status').textContent.includes('protein gene')")
    assert "No judgments for this query" in (page.text_content("#ndcg") or "")
    foreign = [url for url in page.requested if not url.startswith(f"{server.base}/")]
    assert not foreign, f"the page asked another origin: {foreign}"
    assert f"{server.base}/search/config" in page.requested


def test_errors_from_the_api_get_a_clear_message(page: Any, server: Server) -> None:
    search(page, "   ")
    page.wait_for_selector("#error:not([hidden])")
    message = page.text_content("#error") or ""
    assert message.startswith("Type a query first: a blank query has no results."), message
    assert "`query` must be a non-empty string, but got '   '" in message
    assert page.is_hidden("#results")

    search(page, "paris " * 400)
    page.wait_for_function("document.querySelector('#error').textContent.includes('too long')")
    assert "at most 2048 characters, but got 2400" in (page.text_content("#error") or "")

    # The server scores one request at a time with one waiting: with a stalled one scoring (4 s) and another
    # waiting, the page's request is the third and gets 503.
    stalled = threading.Thread(target=ask, args=(server,), kwargs={"query": "zzstall paris"})
    waiting = threading.Thread(target=ask, args=(server,), kwargs={"query": "paris museum"})
    stalled.start()
    time.sleep(0.5)
    waiting.start()
    deadline = time.monotonic() + 10
    while server.metric(server.metrics(), "crossrerank_queue_depth") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    search(page, JUDGED)
    page.wait_for_function("document.querySelector('#error').textContent.includes('busy')")
    message = page.text_content("#error") or ""
    assert re.match(r"The server is busy or still loading: try again in \d+ s\.", message), message
    stalled.join()
    waiting.join()
    search(page, JUDGED)
    page.wait_for_selector("#reranked-list li.result")
    assert page.is_hidden("#error"), "the next search clears the message"


def test_keyboard_only_at_phone_width(browser: Any, server: Server, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server.base}/")
        page.keyboard.press("Tab")  # from the page into the query box (it also has autofocus)
        page.focus("#query")
        page.keyboard.type(UNJUDGED)
        page.keyboard.press("Enter")
        page.wait_for_selector("#reranked-list li.result")
        reached = None
        for _ in range(8):  # the search button, then the first result
            page.keyboard.press("Tab")
            reached = page.evaluate("document.activeElement.closest('li.result')?.dataset.id ?? null")
            if reached:
                break
        assert reached == page.get_attribute("#first-stage-list > li:first-child", "data-id")
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways at 360 px: {width}"
        columns = page.evaluate("getComputedStyle(document.querySelector('#results')).gridTemplateColumns")
        assert len(columns.split()) == 1, f"one column on a phone, but got {columns}"
        page.screenshot(path=str(tmp_path / "search-page-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_pipeline_selector_appears_when_several_pipelines_are_served(page: Any, server: Server) -> None:
    several = {
        "pipelines": [
            {"name": "bm25_rerank", "judged": True, "judged_queries": [JUDGED]},
            {"name": "hybrid_rerank", "judged": False, "judged_queries": []},
        ]
    }
    page.route("**/search/config", lambda route: route.fulfill(json=several))
    page.reload()
    page.wait_for_selector("#pipeline-field:not([hidden])")
    assert page.locator("#pipeline option").all_text_contents() == ["bm25_rerank", "hybrid_rerank"]
    page.select_option("#pipeline", "hybrid_rerank")
    with page.expect_request("**/hybrid_rerank/run") as sent:
        search(page, UNJUDGED)
    assert json.loads(sent.value.post_data or "{}") == {"query": UNJUDGED, "first_stage": True}
    page.wait_for_function("document.querySelector('#error').textContent.includes('404')")
    page.select_option("#pipeline", "bm25_rerank")
    with page.expect_request("**/bm25_rerank/run") as sent:
        search(page, JUDGED)
    assert json.loads(sent.value.post_data or "{}") == {"query": JUDGED, "first_stage": True, "judgments": True}
    page.wait_for_selector("#reranked-list li.result")
