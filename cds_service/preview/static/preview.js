// Card preview page. Vanilla JS, no build step. Every piece of text from a bundle or a card goes into
// the page with textContent; the only HTML inserted is the card detail the server rendered and
// sanitised (markdown-it without raw HTML, then nh3). The page's CSP forbids inline script anyway.
//
// What is shown always belongs to what is on the form: choosing another fixture (or uploading a file)
// clears the cards; editing the bundle, the hook or the order dims them until Evaluate is pressed again;
// a fixture or an evaluation that arrives after the form changed is not applied. Evaluate reads the
// form as it is at that moment (the order list is refreshed first, so a pasted bundle is never sent
// with the previous fixture's order).
"use strict";

(function () {
  const ORDER_TYPES = ["MedicationRequest", "ServiceRequest", "NutritionOrder", "DeviceRequest"];
  const INDICATORS = { critical: "Critical", warning: "Warning", info: "Info" };
  const INDICATOR_RANK = { critical: 0, warning: 1, info: 2 };
  const $ = (id) => document.getElementById(id);
  let fixtures = [];
  let generation = 0; // bumped whenever the form changes; late answers for an older form are dropped
  let orderTimer = null;

  // ------------------------------------------------------------------ helpers
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child) node.append(child);
    }
    return node;
  }

  // Only absolute http(s) URLs become links (no javascript:, data:, or relative paths).
  function webUrl(value) {
    if (typeof value !== "string") return null;
    try {
      const url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function link(label, href) {
    const url = webUrl(href);
    if (!url) return el("span", { text: label });
    return el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: label || url });
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function outcomeText(body) {
    const issues = body && body.resourceType === "OperationOutcome" && Array.isArray(body.issue) ? body.issue : [];
    const texts = issues.map((i) => i && (i.diagnostics || (i.details && i.details.text))).filter(Boolean);
    return texts.join(" ");
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    } catch (err) {
      throw new ApiError(0, "The service did not answer (" + err.message + ").");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      let message = outcomeText(body) || "The service answered HTTP " + response.status + ".";
      if (response.status === 401) {
        message = "Authentication is on: this endpoint needs a JWT from a trusted issuer, which a browser " +
          "page cannot send. Use the CLI (cds-service evaluate) or a development instance without CDS_TRUSTED_ISSUERS.";
      } else if (response.status === 404 && path.indexOf("fixtures") === 0) {
        message = message + " (The fixture endpoint is off when authentication is on; see CDS_ENABLE_FIXTURE_ENDPOINT.)";
      }
      throw new ApiError(response.status, message);
    }
    return body;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = "";
    if (!message) {
      box.hidden = true;
      return;
    }
    box.append(el("strong", { text: "Could not evaluate. " }), document.createTextNode(message));
    box.hidden = false;
  }

  // ------------------------------------------------------------------ discovery and fixtures
  async function loadServices() {
    const list = $("services");
    try {
      const doc = await api("cds-services");
      list.textContent = "";
      for (const s of doc.services || []) {
        list.append(el("li", {}, [
          el("span", { className: "hook-tag", text: s.hook }),
          el("span", { className: "service-title", text: s.title || s.id }),
          el("code", { className: "service-id", text: s.id }),
        ]));
      }
      if (!list.children.length) list.append(el("li", { className: "hint", text: "No services are offered." }));
    } catch (err) {
      list.textContent = "";
      list.append(el("li", { className: "hint", text: "Discovery failed: " + err.message }));
    }
  }

  async function loadFixtures() {
    const select = $("fixture");
    try {
      const doc = await api("fixtures");
      fixtures = doc.fixtures || [];
    } catch (err) {
      $("fixture-description").textContent = "Fixtures could not be listed: " + err.message;
      return;
    }
    for (const f of fixtures) {
      select.append(el("option", { value: f.name, text: f.title || f.name }));
    }
    if (!fixtures.length) {
      $("fixture-description").textContent = "No fixtures are packaged with this service; paste a bundle instead.";
    }
  }

  async function onFixtureChange() {
    const name = $("fixture").value;
    const meta = fixtures.find((f) => f.name === name);
    const mine = ++generation;
    $("fixture-description").textContent = meta && meta.description ? meta.description : "";
    clearResult(name ? "Loading the fixture…" : "Choose a fixture or paste a bundle, then press Evaluate.");
    if (!name) return;
    showError("");
    let bundle;
    try {
      bundle = await api("fixtures/" + encodeURIComponent(name));
    } catch (err) {
      if (mine === generation) showError(err.message);
      return;
    }
    if (mine !== generation) return; // the developer pasted, uploaded or chose again meanwhile
    $("bundle").value = JSON.stringify(bundle, null, 2);
    if (meta && meta.hook) {
      const radio = document.querySelector('input[name="hook"][value="' + meta.hook + '"]');
      if (radio) radio.checked = true;
    }
    updateOrders(meta && meta.order);
    updateHook();
    setStatus("Fixture loaded. Press Evaluate.");
  }

  // ------------------------------------------------------------------ what is shown vs. what is on the form
  function clearResult(status) {
    const box = $("cards");
    box.textContent = "";
    box.dataset.state = "idle";
    delete box.dataset.stale;
    $("raw").hidden = true;
    $("request-json").textContent = "";
    $("response-json").textContent = "";
    showError("");
    setStatus(status);
  }

  function markStale() {
    generation++;
    const box = $("cards");
    if (box.dataset.state === "cards" || box.dataset.state === "empty") {
      box.dataset.stale = "true";
      setStatus("The bundle, hook or order changed: press Evaluate to update the cards.");
    }
  }

  function selectedHook() {
    return document.querySelector('input[name="hook"]:checked').value;
  }

  function updateHook() {
    const patientView = selectedHook() === "patient-view";
    $("order").disabled = patientView; // patient-view places no order
    $("hook-hint").hidden = !patientView;
  }

  // Scroll the answer into view when it is below the fold (one-column layout on a phone).
  function revealResult() {
    const heading = $("cards-title");
    const top = heading.getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight - 80) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      heading.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
    }
    heading.focus({ preventScroll: true });
  }

  // ------------------------------------------------------------------ the bundle and its orders
  function resourceId(entry, index) {
    const res = entry.resource;
    if (typeof res.id === "string" && res.id) return res.id;
    if (typeof entry.fullUrl === "string") return entry.fullUrl.split(":").pop().split("/").pop();
    return "entry-" + index;
  }

  function orderLabel(res) {
    const concept = res.medicationCodeableConcept || res.code || {};
    const coding = Array.isArray(concept.coding) ? concept.coding.find((c) => c && c.display) : null;
    return concept.text || (coding && coding.display) || "";
  }

  function draftOrders(bundle) {
    const out = [];
    (Array.isArray(bundle && bundle.entry) ? bundle.entry : []).forEach((entry, i) => {
      const res = entry && entry.resource;
      if (!res || ORDER_TYPES.indexOf(res.resourceType) < 0 || res.status !== "draft") return;
      out.push({ ref: res.resourceType + "/" + resourceId(entry, i), label: orderLabel(res) });
    });
    return out;
  }

  function updateOrders(preferred) {
    const select = $("order");
    const keep = preferred !== undefined ? preferred : select.value;
    select.textContent = "";
    select.append(el("option", { value: "", text: "Every draft order in the bundle" }));
    let bundle = null;
    try {
      bundle = JSON.parse($("bundle").value);
    } catch (_) {
      return; // still being typed; the server names the JSON error on Evaluate
    }
    for (const order of draftOrders(bundle)) {
      select.append(el("option", { value: order.ref, text: order.label ? order.ref + " — " + order.label : order.ref }));
    }
    if (keep && Array.from(select.options).some((o) => o.value === keep)) select.value = keep;
  }

  function onFile(event) {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    const mine = ++generation;
    file.text().then((text) => {
      if (mine !== generation) return;
      $("bundle").value = text;
      $("fixture").value = "";
      $("fixture-description").textContent = "Uploaded " + file.name + ".";
      updateOrders("");
      clearResult("File loaded. Press Evaluate.");
    });
  }

  // ------------------------------------------------------------------ cards
  function renderSuggestions(card) {
    const suggestions = card.suggestions || [];
    if (!suggestions.length) return null;
    const list = el("ul", { className: "suggestions" });
    for (const s of suggestions) {
      const actions = el("ul", { className: "actions" });
      for (const a of s.actions || []) {
        const item = el("li", {}, [el("span", { className: "action-type", text: a.type }), document.createTextNode(" " + (a.description || ""))]);
        if (a.resource) {
          item.append(el("details", { className: "action-resource" }, [
            el("summary", { text: (a.resource.resourceType || "Resource") + " the EHR would " + a.type }),
            el("pre", { text: JSON.stringify(a.resource, null, 2) }),
          ]));
        }
        actions.append(item);
      }
      list.append(el("li", { className: "suggestion" }, [
        el("span", { className: "suggestion-label", text: s.label }),
        s.isRecommended ? el("span", { className: "recommended", text: "Recommended" }) : null,
        actions.children.length ? actions : null,
      ]));
    }
    const hint = card.selectionBehavior === "at-most-one" ? " (choose at most one)" : "";
    return el("section", { className: "card-part" }, [el("h4", { text: "Suggestions" + hint }), list]);
  }

  function renderCard(card, extra) {
    const indicator = INDICATORS[card.indicator] ? card.indicator : "info";
    const article = el("article", {
      className: "card card-" + indicator,
      "data-indicator": indicator,
      "data-rule-id": extra.rule_id || "",
      "aria-label": INDICATORS[indicator] + ": " + card.summary,
    });
    article.append(el("header", { className: "card-head" }, [
      el("span", { className: "badge badge-" + indicator, text: INDICATORS[indicator] }),
      el("h3", { className: "summary", text: card.summary }),
    ]));
    if (extra.detail_html) {
      const detail = el("div", { className: "detail" });
      detail.innerHTML = extra.detail_html; // sanitised server-side (see cds_service/preview/markdown.py)
      for (const a of detail.querySelectorAll("a")) {
        if (!webUrl(a.getAttribute("href"))) a.removeAttribute("href");
        a.setAttribute("rel", "noopener noreferrer");
        a.setAttribute("target", "_blank");
      }
      article.append(detail);
    }
    const suggestions = renderSuggestions(card);
    if (suggestions) article.append(suggestions);
    if ((extra.links || []).length) {
      article.append(el("section", { className: "card-part" }, [
        el("h4", { text: "Links" }),
        el("ul", { className: "links" }, extra.links.map((l) => el("li", {}, [link(l.label, l.url)]))),
      ]));
    }
    if ((extra.evidence || []).length) {
      article.append(el("section", { className: "card-part" }, [
        el("h4", { text: "Evidence" }),
        el("ul", { className: "evidence" }, extra.evidence.map((e) => el("li", {}, [
          e.level ? el("span", { className: "level", text: e.level }) : null,
          e.url ? link(e.citation || e.url, e.url) : el("span", { text: e.citation || "" }),
        ]))),
      ]));
    }
    if ((card.overrideReasons || []).length) {
      article.append(el("section", { className: "card-part" }, [
        el("h4", { text: "Override reasons" }),
        el("ul", { className: "chips" }, card.overrideReasons.map((r) => el("li", { text: r.display || r.code }))),
      ]));
    }
    const source = card.source || {};
    article.append(el("footer", { className: "card-foot" }, [
      document.createTextNode("Source: "),
      extra.source_url ? link(source.label, extra.source_url) : el("span", { text: source.label || "unknown" }),
      extra.rule_id ? el("code", { className: "rule-id", text: extra.rule_id }) : null,
    ]));
    return article;
  }

  function renderResult(result) {
    const box = $("cards");
    box.textContent = "";
    const cards = (result.response && result.response.cards) || [];
    const extras = (result.preview && result.preview.cards) || [];
    const order = cards.map((c, i) => i).sort((a, b) =>
      (INDICATOR_RANK[cards[a].indicator] ?? 3) - (INDICATOR_RANK[cards[b].indicator] ?? 3) || a - b);
    for (const i of order) box.append(renderCard(cards[i], extras[i] || {}));
    if (!cards.length) {
      box.append(el("div", { className: "no-cards" }, [
        el("p", { className: "no-cards-title", text: "No cards" }),
        el("p", { text: "The service has no advice for this order, so an EHR would show nothing." }),
      ]));
      setStatus("No cards returned.");
    } else {
      const counts = Object.keys(INDICATORS)
        .map((k) => [k, cards.filter((c) => c.indicator === k).length])
        .filter(([, n]) => n)
        .map(([k, n]) => n + " " + k);
      setStatus(cards.length + (cards.length === 1 ? " card" : " cards") + " (" + counts.join(", ") + ").");
    }
    box.dataset.state = cards.length ? "cards" : "empty";
    $("request-json").textContent = JSON.stringify(result.request, null, 2);
    $("response-json").textContent = JSON.stringify(result.response, null, 2);
    $("raw").hidden = false;
  }

  async function onSubmit(event) {
    event.preventDefault();
    // the form as it is now: refresh the order list from the bundle in the box (a paste may be newer
    // than the last refresh) before reading the order
    clearTimeout(orderTimer);
    updateOrders();
    const text = $("bundle").value.trim();
    showError("");
    if (!text) {
      showError("Choose a fixture, upload a file or paste a bundle first.");
      return;
    }
    const hook = selectedHook();
    const params = new URLSearchParams({ hook: hook });
    if (hook !== "patient-view" && $("order").value) params.set("order", $("order").value);
    const mine = ++generation;
    const button = $("evaluate");
    button.disabled = true;
    $("cards").dataset.state = "loading";
    setStatus("Evaluating…");
    try {
      const result = await api("fixtures/evaluate?" + params.toString(), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: text,
      });
      if (mine !== generation) return; // the form changed while the service was answering
      delete $("cards").dataset.stale;
      renderResult(result);
      revealResult();
    } catch (err) {
      if (mine !== generation) return;
      $("cards").textContent = "";
      delete $("cards").dataset.stale;
      $("cards").dataset.state = "error";
      $("raw").hidden = true;
      setStatus("No result.");
      showError(err.message);
      revealResult();
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ start
  document.addEventListener("DOMContentLoaded", () => {
    $("form").addEventListener("submit", onSubmit);
    $("fixture").addEventListener("change", onFixtureChange);
    $("file").addEventListener("change", onFile);
    $("bundle").addEventListener("input", () => {
      markStale();
      clearTimeout(orderTimer);
      orderTimer = setTimeout(() => updateOrders(), 250);
    });
    for (const radio of document.querySelectorAll('input[name="hook"]')) {
      radio.addEventListener("change", () => {
        updateHook();
        markStale();
      });
    }
    $("order").addEventListener("change", markStale);
    updateHook();
    loadServices();
    loadFixtures();
  });
})();
