// recpipe demo page: plain JS, no build step. Talks to the real API (GET /recommendations,
// POST /events) served by the local stack, and to /demo/* for sample users and live stats.
"use strict";

const state = { user: null, items: [], previous: new Set(), posted: 0, seq: 0, latest: 0, recommendationId: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadUsers() {
  const res = await fetch("/demo/users");
  const body = await res.json();
  $("data-info").textContent = body.data;
  $("model-version").textContent = body.model_version || "none";
  const select = $("user-select");
  select.replaceChildren(
    el("option", { value: "", textContent: "— pick a user —" }),
    ...body.users.map((u) =>
      el("option", { value: u.user_id, textContent: `${u.user_id} · ${u.top_categories.join(", ")}` })
    )
  );
  return body.users;
}

async function recommend() {
  if (!state.user) return;
  const params = new URLSearchParams({ user_id: state.user, k: "12", explain: "false", device: $("device").value,
    utc_offset_minutes: String(-new Date().getTimezoneOffset()) });
  const ticket = ++state.latest;
  const t0 = performance.now();
  const res = await fetch(`/recommendations?${params}`);
  const ms = performance.now() - t0;
  const body = await res.json();
  if (ticket !== state.latest) return; // a newer request was sent meanwhile: never show a stale list
  if (!res.ok) {
    showError(`${res.status} ${body.error ? body.error.code + ": " + body.error.message : ""}`);
    return;
  }
  showError("");
  state.previous = new Set(state.items.map((it) => it.item_id));
  state.items = body.items;
  state.recommendationId = body.recommendation_id; // clicks carry it: attribution joins them
  $("current-user").textContent = state.user;
  const degraded = body.degraded && body.degraded.length ? ` · degraded: ${body.degraded.join(", ")}` : "";
  $("request-info").textContent =
    `handler ${body.took_ms.toFixed(1)} ms · round trip ${ms.toFixed(1)} ms · model ${body.model_version}` +
    (body.variant ? ` · variant ${body.variant}` : "") + degraded;
  render(body.items);
}

function render(items) {
  const grid = $("grid");
  const firstLoad = state.previous.size === 0;
  grid.replaceChildren(
    ...items.map((it, i) => {
      const isNew = !firstLoad && !state.previous.has(it.item_id);
      const cart = el("button", { type: "button", class: "cart", textContent: "Add to cart", "data-testid": "add-to-cart" });
      cart.addEventListener("click", (ev) => {
        ev.stopPropagation();
        post(it, "add_to_cart");
      });
      const card = el(
        "article",
        { class: "card" + (isNew ? " new" : ""), "data-testid": "card", "data-item-id": it.item_id, tabIndex: 0 },
        el("div", { class: "rank", textContent: `#${i + 1}` }, isNew ? el("span", { class: "badge", textContent: "new" }) : ""),
        el("h3", { textContent: it.title || it.item_id, "data-testid": "card-title" }),
        el("div", { class: "chips" }, ...(it.categories || []).map((c) => el("span", { class: "chip", textContent: c }))),
        el("p", { class: "reason", textContent: it.reason || "" }),
        el(
          "div",
          { class: "meta" },
          el("span", { class: "score", textContent: `score ${Number(it.score).toFixed(3)}` }),
          el("span", { class: "sources", textContent: (it.sources || []).join(" · ") })
        ),
        cart
      );
      card.addEventListener("click", () => post(it, "click"));
      card.addEventListener("keydown", (ev) => { if (ev.key === "Enter") post(it, "click"); });
      return card;
    })
  );
}

async function post(item, type) {
  state.seq += 1;
  const now = Date.now() / 1000;
  const events = (type === "click" ? ["view", "click"] : [type]).map((t, n) => ({
    event_id: `web-${state.user}-${item.item_id}-${t}-${Date.now()}-${state.seq}-${n}`,
    user_id: state.user, item_id: item.item_id, type: t, ts: now + n * 0.001,
    context: { device: $("device").value, page: "demo-web", recommendation_id: state.recommendationId || undefined },
  }));
  const res = await fetch("/events", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ events }) });
  const body = await res.json();
  if (res.status !== 202) {
    showError(`events refused: ${res.status} ${JSON.stringify(body)}`);
    return;
  }
  state.posted += body.accepted;
  $("events-posted").textContent = String(state.posted);
  $("session").prepend(el("li", { textContent: `${type === "click" ? "viewed" : "added to cart"}: ${item.title}` }));
  await recommend();
}

async function refreshStats() {
  try {
    const res = await fetch("/demo/stats");
    const body = await res.json();
    const rows = Object.entries(body.api).map(([route, s]) =>
      el("tr", {}, el("td", { textContent: route }), el("td", { textContent: String(s.requests) }),
        el("td", { textContent: s.p50_ms.toFixed(1) }), el("td", { textContent: s.p95_ms.toFixed(1) }),
        el("td", { textContent: s.p99_ms.toFixed(1) }))
    );
    $("latency").replaceChildren(...rows);
    $("stream-delivered").textContent = body.stream && "delivered" in body.stream
      ? `${body.stream.checkpointed} / ${body.stream.delivered}` : "not running";
  } catch (e) {
    /* the demo is stopping */
  }
}

async function refreshExperiment() {
  try {
    const body = await (await fetch("/demo/experiment")).json();
    if (!body.experiment) {
      $("experiment-name").textContent = body.error ? `unavailable: ${body.error}` : "no experiment";
      $("experiment-variants").replaceChildren();
      return;
    }
    $("experiment-name").textContent = `${body.experiment} (${body.live ? "live" : "ended"})`;
    const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
    const rows = Object.entries(body.variants).map(([name, v]) =>
      el("tr", {}, el("td", { textContent: name }),
        el("td", { textContent: body.split && name in body.split ? pct(body.split[name]) : "–" }),
        el("td", { textContent: String(v.impressions) }), el("td", { textContent: pct(v.ctr) }),
        el("td", { textContent: `${pct(v.ci95[0])} – ${pct(v.ci95[1])}` }))
    );
    $("experiment-variants").replaceChildren(...rows);
  } catch (e) {
    /* the demo is stopping */
  }
}

function selectUser(userId) {
  state.user = userId;
  state.items = [];
  state.previous = new Set();
  $("user-id").value = userId;
  $("session").replaceChildren();
  recommend();
}

async function main() {
  const users = await loadUsers();
  $("user-select").addEventListener("change", (ev) => ev.target.value && selectUser(ev.target.value));
  $("new-visitor").addEventListener("click", () => selectUser(`web-visitor-${Math.random().toString(36).slice(2, 8)}`));
  $("load-user").addEventListener("click", () => $("user-id").value && selectUser($("user-id").value.trim()));
  $("user-id").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("load-user").click(); });
  $("device").addEventListener("change", recommend);
  if (users.length) {
    $("user-select").value = users[0].user_id;
    selectUser(users[0].user_id);
  }
  refreshStats();
  setInterval(refreshStats, 1500);
  setInterval(refreshExperiment, 3000);
  refreshExperiment();
}

main().catch((e) => showError(String(e)));
