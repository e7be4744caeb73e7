// The search page of `crossrerank serve`. It asks `POST <pipeline>/run` (the API programs use) for the reranked
// documents with `first_stage: true`, and `judgments: true` when the server has judgments, then shows the first
// stage's top k beside the reranked top k. Text goes into the page through text nodes only, never as HTML.
"use strict";

(() => {
  const CONTEXT_CHARS = 160; // text shown on each side of the best passage
  const EXCERPT_CHARS = 240; // text shown of a document without a passage
  const byId = (id) => document.getElementById(id);
  const form = byId("search-form");
  const queryBox = byId("query");
  const select = byId("pipeline");
  let pipelines = [];
  let latest = 0; // the number of the latest search: answers to earlier ones are dropped
  let inFlight = null; // the latest search's AbortController

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  function setStatus(text) {
    byId("status").textContent = text;
  }

  function showError(text) {
    const box = byId("error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function current() {
    return pipelines.find((p) => p.name === select.value) || pipelines[0];
  }

  function fillSuggestions() {
    const pipeline = current();
    const texts = pipeline ? pipeline.judged_queries : [];
    byId("judged-queries").replaceChildren(...texts.map((text) => el("option", { value: text })));
  }

  async function loadConfig() {
    try {
      const response = await fetch("search/config");
      if (!response.ok) throw new Error(`GET search/config answered ${response.status}`);
      pipelines = (await response.json()).pipelines;
    } catch (error) {
      showError(`Could not read the server's settings (${error.message}). Reload the page to try again.`);
      return;
    }
    select.replaceChildren(...pipelines.map((p) => new Option(p.name, p.name)));
    byId("pipeline-field").hidden = pipelines.length < 2;
    fillSuggestions();
    if (!pipelines.length) showError("The server serves no pipeline.");
  }

  function detailOf(payload) {
    const detail = payload && payload.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    return "";
  }

  function errorMessage(response, payload, query) {
    const detail = detailOf(payload);
    const said = detail ? ` The server said: ${detail}` : "";
    switch (response.status) {
      case 422:
        return (query.trim() ? "The server refused the request." : "Type a query first: a blank query has no results.") + said;
      case 413:
        return `The query is too long (${query.length} characters): shorten it.` + said;
      case 503: {
        const retry = response.headers.get("Retry-After");
        return `The server is busy or still loading: try again ${retry ? `in ${retry} s` : "shortly"}.` + said;
      }
      case 504:
        return "The server took too long to answer this query: try again." + said;
      default:
        return `The server answered ${response.status}.` + said;
    }
  }

  async function search(event) {
    event.preventDefault();
    await configured;
    const pipeline = current();
    if (!pipeline) {
      showError("The server serves no pipeline.");
      return;
    }
    const query = queryBox.value;
    const number = ++latest;
    if (inFlight) inFlight.abort(); // the server cancels the earlier request's scoring
    inFlight = new AbortController();
    showError("");
    setStatus("Searching…");
    form.setAttribute("aria-busy", "true");
    const body = { query, first_stage: true };
    if (pipeline.judged) body.judgments = true;
    let response;
    let payload = null;
    try {
      response = await fetch(`${encodeURIComponent(pipeline.name)}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: inFlight.signal,
      });
      payload = await response.json().catch(() => null);
    } catch (error) {
      if (number === latest) fail(`Could not reach the server (${error.message}).`);
      return;
    }
    if (number !== latest) return;
    if (!response.ok) {
      fail(errorMessage(response, payload, query));
    } else if (!payload || !payload.result || !Array.isArray(payload.result.first_stage)) {
      fail("The server's answer has no first stage ranking: is it an older crossrerank?");
    } else {
      render(payload.result, pipeline, query);
    }
  }

  function fail(message) {
    form.removeAttribute("aria-busy");
    setStatus("");
    byId("results").hidden = true;
    byId("summary").hidden = true;
    showError(message);
  }

  function score(value) {
    return typeof value === "number" ? value.toFixed(3) : "–";
  }

  function milliseconds(value) {
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  }

  function spaced(text) {
    return String(text || "").split(/\s+/).filter(Boolean).join(" ");
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // Where the passage is in the text: exactly, or with any spacing between its words (the ranker joins sentences
  // with single spaces). Returns [start, end] or null.
  function findPassage(text, passage) {
    if (!passage) return null;
    const at = text.indexOf(passage);
    if (at >= 0) return [at, at + passage.length];
    const words = passage.split(/\s+/).filter(Boolean);
    if (!words.length) return null;
    const found = new RegExp(words.map(escapeRegExp).join("\\s+")).exec(text);
    return found ? [found.index, found.index + found[0].length] : null;
  }

  function before(text, end) {
    if (end <= CONTEXT_CHARS) return text.slice(0, end);
    const cut = text.slice(end - CONTEXT_CHARS, end);
    return "…" + cut.slice(cut.indexOf(" ") + 1);
  }

  function after(text, start) {
    if (text.length - start <= CONTEXT_CHARS) return text.slice(start);
    const cut = text.slice(start, start + CONTEXT_CHARS);
    return cut.slice(0, cut.lastIndexOf(" ") > 0 ? cut.lastIndexOf(" ") : cut.length) + "…";
  }

  function excerpt(text) {
    return text.length <= EXCERPT_CHARS ? text : after(text.slice(0, EXCERPT_CHARS + 1), 0);
  }

  function fullText(text, shown) {
    return text.length > shown ? el("details", {}, el("summary", {}, "Full text"), el("p", {}, text)) : null;
  }

  // The best passage highlighted: in the title, inside the text, or (if it is in neither) on its own line.
  function passageBody(doc, titleNode) {
    const text = doc.content || "";
    const passage = (doc.meta || {}).crossrerank_passage;
    const mark = (content) => el("mark", { class: "passage" }, content);
    if (!passage) return [el("p", { class: "text" }, excerpt(text)), fullText(text, EXCERPT_CHARS)];
    if (spaced(passage) === spaced((doc.meta || {}).title)) {
      titleNode.replaceChildren(mark(titleNode.textContent));
      return [el("p", { class: "text" }, excerpt(text)), fullText(text, EXCERPT_CHARS)];
    }
    const span = findPassage(text, passage);
    if (!span) {
      return [el("p", { class: "text" }, "Best passage: ", mark(passage)), fullText(text, 0)];
    }
    const [start, end] = span;
    const shown = el("p", { class: "text" }, before(text, start), mark(text.slice(start, end)), after(text, end));
    return [shown, fullText(text, end - start + 2 * CONTEXT_CHARS)];
  }

  function movement(firstRank, rank, k) {
    if (firstRank === undefined || firstRank > k) {
      const was = firstRank === undefined ? "" : ` (was #${firstRank})`;
      return { kind: "new", moved: "", text: "new", label: `new in the top ${k}${was}` };
    }
    const moved = firstRank - rank;
    if (moved > 0) return { kind: "up", moved, text: `▲ ${moved}`, label: `up ${moved} (was #${firstRank})` };
    if (moved < 0) return { kind: "down", moved, text: `▼ ${-moved}`, label: `down ${-moved} (was #${firstRank})` };
    return { kind: "same", moved: 0, text: "=", label: "same place" };
  }

  function item(doc, rank, badges, relevance) {
    const title = el("h3", { class: "title" }, spaced((doc.meta || {}).title) || doc.id);
    const grade = relevance[doc.id];
    const node = el("li", { class: "result", tabindex: "0", "data-id": doc.id, "data-rank": rank });
    if (grade > 0) {
      node.classList.add("relevant");
      node.dataset.relevance = String(grade);
      badges.push(el("span", { class: "badge judged", title: "judged relevant" }, `relevant (${grade})`));
    }
    const head = el("div", { class: "result-head" }, el("span", { class: "rank" }, `#${rank}`), title, ...badges);
    node.append(head, el("div", { class: "meta-line" }, `score ${score(doc.score)} · id ${doc.id}`));
    return [node, title];
  }

  function firstStageItem(doc, rank, rerankedRank, relevance) {
    const dropped = rerankedRank === undefined;
    const badge = el(
      "span",
      { class: `badge movement ${dropped ? "dropped" : "same"}`, title: dropped ? "not in the reranked top" : undefined },
      dropped ? "dropped" : `now #${rerankedRank}`,
    );
    const [node] = item(doc, rank, [badge], relevance);
    node.dataset.rerankedRank = rerankedRank === undefined ? "" : String(rerankedRank);
    const text = doc.content || "";
    node.append(el("p", { class: "text" }, excerpt(text)), fullText(text, EXCERPT_CHARS) || "");
    return node;
  }

  function rerankedItem(doc, rank, firstRank, k, relevance) {
    const move = movement(firstRank, rank, k);
    const badge = el(
      "span",
      { class: `badge movement ${move.kind}`, title: move.label, "aria-label": move.label },
      move.text,
    );
    const [node, title] = item(doc, rank, [badge], relevance);
    node.dataset.movement = move.kind;
    node.dataset.moved = String(move.moved);
    node.dataset.firstStageRank = firstRank === undefined ? "" : String(firstRank);
    const passageScore = (doc.meta || {}).crossrerank_passage_score;
    if (typeof passageScore === "number") node.lastChild.append(` · passage ${score(passageScore)}`);
    node.append(...passageBody(doc, title).filter(Boolean));
    return node;
  }

  function render(result, pipeline, query) {
    const reranked = result.documents;
    const firstStage = result.first_stage;
    const k = reranked.length;
    const firstRanks = new Map(firstStage.map((doc, i) => [doc.id, i + 1]));
    const rerankedRanks = new Map(reranked.map((doc, i) => [doc.id, i + 1]));
    const judgments = result.judgments || null;
    const relevance = judgments ? judgments.relevance : {};
    byId("first-stage-list").replaceChildren(
      ...firstStage.slice(0, k).map((doc, i) => firstStageItem(doc, i + 1, rerankedRanks.get(doc.id), relevance)),
    );
    byId("reranked-list").replaceChildren(
      ...reranked.map((doc, i) => rerankedItem(doc, i + 1, firstRanks.get(doc.id), k, relevance)),
    );
    byId("first-stage-heading").textContent = `First stage: top ${Math.min(k, firstStage.length)} of ${firstStage.length}`;
    byId("reranked-heading").textContent = `Reranked: top ${k}`;
    const t = result.timings_ms;
    byId("timings").replaceChildren(
      "Time: first stage ",
      el("strong", { id: "time-first-stage" }, milliseconds(t.first_stage)),
      " · reranker ",
      el("strong", { id: "time-ranker" }, milliseconds(t.ranker)),
      ` · whole pipeline ${milliseconds(t.total)}`,
    );
    const ndcg = byId("ndcg");
    if (!("judgments" in result)) {
      ndcg.replaceChildren();
    } else if (judgments === null) {
      ndcg.replaceChildren("No judgments for this query: nDCG@10 shows for the judged queries (the suggestions).");
    } else {
      const gain = judgments["ndcg@10"].reranked - judgments["ndcg@10"].first_stage;
      ndcg.replaceChildren(
        `nDCG@10 (judged query ${judgments.query_id}): first stage `,
        el("strong", { id: "ndcg-first-stage" }, judgments["ndcg@10"].first_stage.toFixed(3)),
        " → reranked ",
        el("strong", { id: "ndcg-reranked" }, judgments["ndcg@10"].reranked.toFixed(3)),
        ` (${gain >= 0 ? "+" : "−"}${Math.abs(gain).toFixed(3)})`,
      );
    }
    form.removeAttribute("aria-busy");
    byId("summary").hidden = false;
    byId("results").hidden = false;
    setStatus(`${k} documents for “${query}” from ${pipeline.name}.`);
  }

  form.addEventListener("submit", search);
  select.addEventListener("change", fillSuggestions);
  const configured = loadConfig();
})();
