// curato label: the single-page labelling and review app (plain ES module, no build step, works offline).
//
// SECURITY: class names, file names, sample ids and user names are user data. They only ever reach the page
// through textContent, attribute values set with setAttribute, or encodeURIComponent in URLs; never innerHTML.

import {maskView} from "./mask.js";

const state = {me: null, csrf: null, classes: [], view: null, busy: false};
const NUMBER_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];

// -- DOM helpers ------------------------------------------------------------------------------------------

/** createElement with properties and children; strings become text nodes (never parsed as HTML). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const keyOf = (index) => (index < NUMBER_KEYS.length ? NUMBER_KEYS[index] : null);
const imageUrl = (sampleId, size) => `/api/image?id=${enc(sampleId)}${size ? `&size=${enc(size)}` : ""}`;

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
const pct = (value) => (typeof value === "number" ? `${(100 * value).toFixed(1)}%` : "–");

/** A sample's image; tiny images (28x28) are scaled up with crisp pixels, photos are smoothed. */
function sampleImage(sampleId, className = "sample") {
  const img = el("img", {class: `${className} pixelated`, src: imageUrl(sampleId), alt: `image of ${sampleId}`,
    decoding: "async", draggable: "false"});
  img.addEventListener("load", () => {
    if (Math.max(img.naturalWidth, img.naturalHeight) >= 320) img.classList.remove("pixelated");
  });
  return img;
}

/** A sample as the API describes it: its image, or its text for a text dataset. */
function sampleMedia(sample, className) {
  if (sample.present === false) return el("div", {class: `${className} missing`, text: "no longer in the catalog"});
  if ((sample.image === null || sample.image === undefined) && typeof sample.text === "string") {
    return el("blockquote", {class: `${className} sample-text`, text: sample.text});
  }
  return sampleImage(sample.sample_id, className);
}

function toast(message, kind = "info") {
  const box = $("toast");
  box.textContent = message;
  box.className = `toast ${kind}`;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 6000 : 2500);
}

function setLegend(entries) {
  const legend = $("legend");
  legend.replaceChildren(...entries.map(([keys, what]) =>
    el("span", {class: "legend-item"}, ...keys.split(" ").map((k) => el("kbd", {text: k})), " ", what)));
}

function button(label, key, onClick, extra = {}) {
  const node = el("button", {type: "button", class: extra.class, disabled: extra.disabled, "data-key": key,
    title: key ? `key ${key}` : undefined}, key ? el("kbd", {text: key}) : null, " ", label);
  node.addEventListener("click", () => { node.blur(); onClick(); });
  return node;
}

function table(columns, rows) {
  return el("table", {class: "data"},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {text: c.title ?? c.key})))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) =>
      el("td", {class: typeof row[c.key] === "number" ? "num" : undefined, text: fmt(row[c.key])}))))));
}

/** A table for whatever shape an agreement figure has: a list of records, a mapping of records, or scalars. */
function anyTable(value, keyTitle) {
  if (value === null || value === undefined) return el("p", {class: "muted", text: "none yet"});
  if (Array.isArray(value)) {
    if (!value.length) return el("p", {class: "muted", text: "none yet"});
    if (typeof value[0] !== "object") return el("p", {text: value.map(fmt).join(", ")});
    const keys = [...new Set(value.flatMap((row) => Object.keys(row)))];
    return table(keys.map((key) => ({key})), value);
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return el("p", {class: "muted", text: "none yet"});
    if (entries.every(([, v]) => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(entries.flatMap(([, v]) => Object.keys(v)))];
      return table([{key: "\u0000name", title: keyTitle}, ...keys.map((key) => ({key}))],
        entries.map(([name, v]) => ({"\u0000name": name, ...v})));
    }
    return table([{key: "\u0000name", title: keyTitle}, {key: "value"}],
      entries.map(([name, v]) => ({"\u0000name": name, value: v})));
  }
  return el("p", {text: fmt(value)});
}

// -- the API ----------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, {method = "GET", body} = {}) {
  const headers = {Accept: "application/json"};
  const init = {method, headers, credentials: "same-origin"};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the server does not answer: is `curato serve` still running?");
  }
  if (response.status === 401) {
    window.location.assign("/login");
    throw new ApiError(401, "signed out");
  }
  let data = null;
  try { data = await response.json(); } catch { /* an empty or non-JSON answer */ }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : `${response.status} ${response.statusText}`;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(response.status, detail);
  }
  return data;
}

const decisionId = (decision) => (decision && typeof decision === "object" ? decision.id : decision);

/** Run an action once at a time (a held key or a double click never sends twice); errors become toasts. */
async function guarded(action) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add("busy");
  try {
    await action();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) toast(error.message || String(error), "error");
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
  }
}

// -- keyboard ---------------------------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
  const target = event.target;
  if (target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) {
    return;
  }
  const view = state.view;
  if (view && view.onKey && view.onKey(event.key)) event.preventDefault();
});

// -- views ------------------------------------------------------------------------------------------------

function classButtons(classes, {given, suggested, selected, onPick}) {
  return el("ol", {class: "classes"}, classes.map((name, index) => {
    const key = keyOf(index);
    const item = el("li", {class: [name === given ? "given" : "", name === suggested ? "suggested" : "",
      name === selected ? "selected" : ""].join(" ").trim() || undefined, "data-class": name});
    const pick = el("button", {type: "button"}, el("kbd", {text: key ?? "·"}), el("span", {class: "name", text: name}),
      name === given ? el("span", {class: "tag", text: "given"}) : null,
      name === suggested ? el("span", {class: "tag tag-suggested", text: "suggested"}) : null);
    pick.addEventListener("click", () => { pick.blur(); onPick(name); });
    item.append(pick);
    return item;
  }));
}

function classForKey(key, classes) {
  const index = NUMBER_KEYS.indexOf(key);
  return index >= 0 && index < classes.length ? classes[index] : null;
}

async function overviewView(view) {
  const me = state.me;
  const reviewer = me.role === "reviewer" || me.role === "admin";
  const [status, review] = await Promise.all([api("/api/status"),
    reviewer ? api("/api/review").catch(() => null) : Promise.resolve(null)]);
  if (!view.alive) return;
  const labels = status.labels ?? {};
  const queue = status.queue ?? {};
  const loop = status.loop ?? {};
  const card = (title, rows) => el("section", {class: "card"}, el("h3", {text: title}),
    el("dl", {}, rows.filter(([, v]) => v !== undefined).map(([k, v]) => [el("dt", {text: k}), el("dd", {text: v})])));
  const loopRows = [["refits", fmt(loop.refits)], ["last refit", fmt(loop.last_refit)],
    ["refitting now", loop.running ? "yes" : "no"]];
  if (loop.estimated_accuracy !== undefined && loop.estimated_accuracy !== null) {
    loopRows.unshift(["estimated accuracy", pct(loop.estimated_accuracy)]);
  }
  if (loop.labels_to_target !== undefined && loop.labels_to_target !== null) {
    loopRows.unshift([`labels to reach ${loop.target !== undefined && loop.target !== null ? pct(loop.target) : "target"}`,
      fmt(loop.labels_to_target)]);
  }
  if (loop.routed !== undefined) loopRows.push(["auto-labelled", fmt(loop.routed)]);
  if (loop.note) loopRows.push(["note", String(loop.note)]);
  if (loop.error) loopRows.push(["error", String(loop.error)]);
  const start = el("a", {class: "button primary big", href: "#/label"}, el("kbd", {text: "l"}), " Label");
  const parts = [
    el("div", {class: "overview-head"}, el("h2", {text: "Overview"}), start),
    el("div", {class: "cards"},
      card("Labels", [["human", fmt(labels.human)], ["model", fmt(labels.model)], ["imported", fmt(labels.imported)]]),
      card("Labelling queue", [["queued", fmt(queue.queued)], ["labelled", fmt(queue.labelled)],
        ["skipped", fmt(queue.skipped)], ["routed", fmt(queue.routed)]]),
      card("Learning loop", loopRows)),
  ];
  if (review) {
    const rows = (review.queues ?? []).map((q) => el("tr", {},
      el("td", {}, el("a", {href: `#/review/${enc(q.kind)}`, text: q.title || q.kind})),
      el("td", {class: "muted", text: q.kind}),
      el("td", {text: q.group ? "groups" : "samples"}),
      el("td", {class: "num", text: fmt(q.items)}),
      el("td", {class: "num", text: fmt(q.open)}),
      el("td", {}, el("a", {class: "button", href: `#/review/${enc(q.kind)}`, text: q.open ? "Review" : "Browse"}))));
    parts.push(el("section", {class: "queues"},
      el("h2", {text: "Review queues"}),
      el("p", {class: "muted", text: review.audit_run ? `from audit ${review.audit_run}${review.audit_time ? ` (${review.audit_time})` : ""}` : "no audit yet: run `curato audit -w WS`"}),
      rows.length ? el("table", {class: "data", id: "review-queues"},
        el("thead", {}, el("tr", {}, ["finding", "kind", "items are", "items", "open", ""].map((t) => el("th", {text: t})))),
        el("tbody", {}, rows)) : el("p", {class: "muted", text: "nothing to review"})));
  }
  view.root.replaceChildren(...parts);
  setLegend([["l", "start labelling"]]);
  view.onKey = (key) => {
    if (key === "l") { window.location.hash = "#/label"; return true; }
    return false;
  };
}

async function reviewView(view, kind) {
  let offset = 0;   // open items passed over with j (they stay open, ahead of the next one)
  let queue = null;
  let item = null;
  let shownAt = performance.now();
  let splitPrompt = null;  // the splits offered while the "move to one split" prompt is open
  const history = [];  // [{decision, item}] newest last, for u

  async function loadNext() {
    queue = await api(`/api/review/${enc(kind)}?status=open&offset=${offset}&limit=1`);
    if (!view.alive) return;
    item = (queue.items ?? [])[0] ?? null;
    render();
  }

  async function decide(action, extra = {}, summary = action) {
    if (!item) return;
    const decided = item;
    const answer = await api(`/api/review/${enc(kind)}/decide`, {method: "POST",
      body: {item: decided.item, action, ...extra, duration_ms: Math.max(0, Math.round(performance.now() - shownAt))}});
    history.push({decision: decisionId(answer.decision), item: decided});
    toast(`${summary}: ${decided.item}`);
    await loadNext();
  }

  async function undo() {
    const last = history.pop();
    if (!last) { toast("nothing to undo in this session"); return; }
    try {
      await api(`/api/decisions/${enc(last.decision)}/undo`, {method: "POST", body: {}});
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) history.push(last);
      throw error;
    }
    item = {...last.item, decision: null};
    queue = queue ? {...queue, open: (queue.open ?? 0) + 1} : queue;
    toast(`undone: ${item.item}`);
    render();
  }

  function next() {
    if (!item) return Promise.resolve();
    offset += 1;
    return loadNext();
  }

  function evidencePanel(flagged) {
    const evidence = item.evidence ?? {};
    const rows = [];
    if (evidence.suggested_label !== undefined && evidence.suggested_label !== null) {
      rows.push(["suggested label", el("span", {class: "suggested-label", text: evidence.suggested_label})]);
    }
    if (typeof evidence.probability === "number") rows.push(["probability", pct(evidence.probability)]);
    rows.push(["score", fmt(item.score)]);
    if (typeof evidence.similarity === "number") rows.push(["similarity", fmt(evidence.similarity)]);
    for (const [key, value] of Object.entries(evidence)) {
      if (["suggested_label", "probability", "similarity", "note", "cue", "rule"].includes(key)) continue;
      if (value !== null && typeof value !== "object") rows.push([key.replaceAll("_", " "), fmt(value)]);
    }
    const texts = ["cue", "rule", "note"].filter((key) => evidence[key])
      .map((key) => el("p", {class: `evidence-${key}`}, el("strong", {text: `${key}: `}), String(evidence[key])));
    const neighbours = item.samples.filter((s) => s.role === "neighbour");
    return el("aside", {class: "evidence"},
      el("h3", {text: "Evidence"}),
      flagged ? el("dl", {},
        el("dt", {text: "given label"}), el("dd", {class: "given-label", text: fmt(flagged.label)}),
        el("dt", {text: "split"}), el("dd", {text: fmt(flagged.split)})) : null,
      el("dl", {}, rows.map(([k, v]) => [el("dt", {text: k}), el("dd", {}, v)])),
      texts,
      neighbours.length ? [el("h4", {text: "Nearest neighbours"}), el("div", {class: "neighbours"},
        neighbours.map((s) => el("figure", {class: "neighbour"}, sampleMedia(s, "thumb"),
          el("figcaption", {}, el("span", {class: "label", text: fmt(s.label)}), el("span", {class: "split", text: fmt(s.split)}),
            el("span", {class: "sid", text: s.sample_id})))))] : null);
  }

  function render() {
    splitPrompt = null;
    shownAt = performance.now();
    const title = queue?.title || kind;
    const counts = queue ? `${fmt(queue.open)} open of ${fmt(queue.total)}` : "";
    const head = el("div", {class: "view-head"}, el("a", {href: "#/", class: "back", text: "← Overview"}),
      el("h2", {text: title}), el("span", {class: "muted", id: "open-count", text: counts}),
      queue?.message ? el("span", {class: "muted queue-message", text: queue.message}) : null);
    if (!item) {
      const done = offset > 0
        ? [el("p", {text: `End of the queue. You passed over ${offset} open item${offset === 1 ? "" : "s"}.`}),
          button("Start again from the top", "r", () => guarded(() => { offset = 0; return loadNext(); }))]
        : [el("p", {class: "done", text: "Nothing left to review in this queue."})];
      view.root.replaceChildren(head, el("section", {class: "empty"}, done,
        history.length ? button("Undo last decision", "u", () => guarded(undo)) : null));
      setLegend([["r", "start again"], ["u", "undo"]]);
      view.onKey = (key) => {
        if (key === "r" && offset > 0) { guarded(() => { offset = 0; return loadNext(); }); return true; }
        if (key === "u") { guarded(undo); return true; }
        return false;
      };
      return;
    }
    if (item.group) renderGroup(head); else renderSingle(head);
  }

  function renderSingle(head) {
    const flagged = item.samples[0];
    const suggested = item.evidence?.suggested_label ?? null;
    const classes = state.classes;
    const pickClass = (name) => guarded(() => (name === flagged.label
      ? decide("keep", {}, "kept") : decide("relabel", {label: name}, `relabelled to ${name}`)));
    const actions = el("div", {class: "actions"},
      button(suggested !== null ? `Accept “${suggested}”` : "Accept suggestion", "a",
        () => guarded(() => decide("accept", {}, `accepted ${suggested}`)), {class: "primary", disabled: suggested === null}),
      button("Keep given label", "k", () => guarded(() => decide("keep", {}, "kept"))),
      button("Exclude", "x", () => guarded(() => decide("exclude", {}, "excluded"))),
      button("Ambiguous", "m", () => guarded(() => decide("ambiguous", {}, "ambiguous"))),
      button("Undo", "u", () => guarded(undo), {disabled: !history.length}),
      button("Next", "j", () => guarded(next)));
    view.root.replaceChildren(head, el("div", {class: "workbench"},
      el("section", {class: "stage", id: "item", "data-item": item.item},
        el("figure", {class: "flagged"}, sampleMedia(flagged, "sample big"),
          el("figcaption", {}, el("span", {class: "sid", text: flagged.sample_id}),
            el("span", {}, "given label: ", el("strong", {class: "given-label", text: fmt(flagged.label)})),
            el("span", {class: "split", text: fmt(flagged.split)}))),
        actions,
        el("h3", {text: "Relabel to"}),
        classButtons(classes, {given: flagged.label, suggested, onPick: pickClass})),
      evidencePanel(flagged)));
    setLegend([["Enter a", "accept suggestion"], ["k", "keep given"], ["1…9 0", "relabel"], ["x", "exclude"],
      ["m", "ambiguous"], ["u", "undo"], ["j →", "next"]]);
    view.onKey = (key) => {
      if ((key === "Enter" || key === "a") && suggested !== null) {
        guarded(() => decide("accept", {}, `accepted ${suggested}`));
      } else if (key === "k") guarded(() => decide("keep", {}, "kept"));
      else if (key === "x") guarded(() => decide("exclude", {}, "excluded"));
      else if (key === "m") guarded(() => decide("ambiguous", {}, "ambiguous"));
      else if (key === "u") guarded(undo);
      else if (key === "j" || key === "ArrowRight") guarded(next);
      else if (classForKey(key, classes) !== null) pickClass(classForKey(key, classes));
      else return false;
      return true;
    };
  }

  function renderGroup(head) {
    const members = item.samples.filter((s) => s.role !== "neighbour");
    const splits = [...new Set(members.map((s) => s.split).filter((s) => s !== null && s !== undefined))]
      .sort((a, b) => (a === "train" ? -1 : b === "train" ? 1 : a.localeCompare(b)));
    const keepMember = (index) => {
      const member = members[index];
      if (member) guarded(() => decide("keep_one", {keep: member.sample_id}, `kept ${member.sample_id}`));
    };
    const prompt = el("div", {class: "split-prompt", id: "split-prompt", hidden: true},
      el("p", {text: "Move every member into which split?"}),
      el("div", {class: "actions"}, splits.map((split, index) =>
        button(split, keyOf(index), () => moveTo(split))), button("Cancel", "Esc", () => closePrompt())));
    const openPrompt = () => {
      if (!splits.length) { toast("the members have no split to move to", "error"); return; }
      splitPrompt = splits;
      prompt.hidden = false;
    };
    const closePrompt = () => { splitPrompt = null; prompt.hidden = true; };
    const moveTo = (split) => { closePrompt(); guarded(() => decide("move_split", {split}, `moved to ${split}`)); };
    const actions = el("div", {class: "actions"},
      button("Move all into one split", "s", openPrompt),
      button("Drop copies", "d", () => guarded(() => decide("drop_copies", {}, "dropped copies")), {class: "primary"}),
      button("Not a duplicate", "k", () => guarded(() => decide("not_duplicate", {}, "not a duplicate"))),
      button("Undo", "u", () => guarded(undo), {disabled: !history.length}),
      button("Next", "j", () => guarded(next)));
    const size = members.length <= 2 ? "medium" : "small";
    view.root.replaceChildren(head, el("div", {class: "workbench"},
      el("section", {class: "stage", id: "item", "data-item": item.item},
        el("div", {class: `members members-${size}`}, members.map((member, index) => {
          const key = keyOf(index);
          const figure = el("figure", {class: "member", "data-sample": member.sample_id},
            el("button", {type: "button", class: "keep", title: "keep this one, exclude the others"},
              el("kbd", {text: key ?? "·"}), " keep"),
            sampleMedia(member, `sample ${size}`),
            el("figcaption", {}, el("span", {class: "split split-badge", text: fmt(member.split)}),
              el("span", {}, "label: ", el("strong", {text: fmt(member.label)})), el("span", {class: "sid", text: member.sample_id})));
          figure.querySelector("button.keep").addEventListener("click", () => keepMember(index));
          return figure;
        })),
        actions, prompt),
      evidencePanel(null)));
    setLegend([["1…9", "keep that one"], ["s", "move all into one split"], ["d", "drop copies"],
      ["k", "not a duplicate"], ["u", "undo"], ["j →", "next"]]);
    view.onKey = (key) => {
      if (splitPrompt) {
        const index = NUMBER_KEYS.indexOf(key);
        if (index >= 0 && index < splitPrompt.length) moveTo(splitPrompt[index]);
        else if (key === "Escape") closePrompt();
        return true;
      }
      const index = NUMBER_KEYS.slice(0, 9).indexOf(key);
      if (index >= 0) keepMember(index);
      else if (key === "s") openPrompt();
      else if (key === "d") guarded(() => decide("drop_copies", {}, "dropped copies"));
      else if (key === "k") guarded(() => decide("not_duplicate", {}, "not a duplicate"));
      else if (key === "u") guarded(undo);
      else if (key === "j" || key === "ArrowRight") guarded(next);
      else return false;
      return true;
    };
  }

  await loadNext();
}

async function labelView(view) {
  let current = null;
  let shownAt = null;
  const history = [];  // decision ids of this session's labels, newest last

  async function loadNext() {
    current = await api("/api/label/next");
    if (!view.alive) return;
    if (Array.isArray(current.classes) && current.classes.length) state.classes = current.classes;
    render();
  }

  async function submit(action, label) {
    if (!current || !current.assignment) return;
    const elapsed = performance.now() - (shownAt ?? performance.now());
    const body = {assignment: current.assignment, action, duration_ms: Math.max(0, Math.round(elapsed))};
    if (label !== undefined) body.label = label;
    const answer = await api("/api/label/submit", {method: "POST", body});
    history.push(decisionId(answer.decision));
    toast(action === "label" ? `labelled ${label}` : action === "skip" ? "skipped" : "marked not sure");
    await loadNext();
  }

  async function undo() {
    const last = history.pop();
    if (last === undefined) { toast("nothing to undo in this session"); return; }
    try {
      await api(`/api/decisions/${enc(last)}/undo`, {method: "POST", body: {}});
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) history.push(last);
      throw error;
    }
    toast("undone: the item is back");
    await loadNext();
  }

  function render() {
    const head = el("div", {class: "view-head"}, el("a", {href: "#/", class: "back", text: "← Overview"}),
      el("h2", {text: "Label"}), el("span", {class: "muted", id: "remaining", text: `${fmt(current.remaining)} remaining`}));
    if (!current.assignment) {
      view.root.replaceChildren(head, el("section", {class: "empty"},
        el("p", {class: "done", text: "Nothing left to label for you. Thank you!"}),
        el("p", {class: "muted", text: "`curato select -w WS --budget N` queues more."}),
        history.length ? button("Undo last label", "u", () => guarded(undo)) : null));
      setLegend([["u", "undo"]]);
      view.onKey = (key) => (key === "u" ? (guarded(undo), true) : false);
      return;
    }
    const suggestion = current.suggestion ?? null;
    const classes = state.classes;
    shownAt = null;
    const img = sampleMedia({sample_id: current.sample_id, image: current.image, text: current.text}, "sample big");
    const markShown = () => { if (shownAt === null) shownAt = performance.now(); };
    if (!(img instanceof HTMLImageElement) || (img.complete && img.naturalWidth)) markShown();
    else img.addEventListener("load", markShown, {once: true});
    img.addEventListener("error", markShown, {once: true});
    const accept = () => { if (suggestion !== null) guarded(() => submit("label", suggestion)); };
    view.root.replaceChildren(head, el("div", {class: "workbench"},
      el("section", {class: "stage", id: "item", "data-sample": current.sample_id},
        el("figure", {class: "flagged"}, img,
          el("figcaption", {}, el("span", {class: "sid", text: current.sample_id}))),
        el("div", {class: "actions"},
          button(suggestion !== null ? `Accept “${suggestion}”` : "No suggestion", "Enter", accept,
            {class: "primary", disabled: suggestion === null}),
          button("Skip", "s", () => guarded(() => submit("skip"))),
          button("Not sure", "n", () => guarded(() => submit("unsure"))),
          button("Undo", "u", () => guarded(undo), {disabled: !history.length})),
        el("h3", {text: "Class"}),
        classButtons(classes, {suggested: suggestion, selected: suggestion,
          onPick: (name) => guarded(() => submit("label", name))})),
      el("aside", {class: "evidence"}, el("h3", {text: "Model"}),
        el("dl", {}, el("dt", {text: "suggestion"}), el("dd", {class: "suggested-label", text: fmt(suggestion)}),
          el("dt", {text: "confidence"}), el("dd", {text: pct(current.confidence)}),
          el("dt", {text: "remaining"}), el("dd", {text: fmt(current.remaining)})),
        el("p", {class: "muted", text: "The suggestion is preselected: Enter takes it, a number picks another class."}))));
    setLegend([["Enter", "accept suggestion"], ["1…9 0", "class"], ["s", "skip"], ["n", "not sure"], ["u", "undo"]]);
    view.onKey = (key) => {
      if (key === "Enter") accept();
      else if (key === "s") guarded(() => submit("skip"));
      else if (key === "n") guarded(() => submit("unsure"));
      else if (key === "u") guarded(undo);
      else if (classForKey(key, classes) !== null) {
        const name = classForKey(key, classes);
        guarded(() => submit("label", name));
      } else return false;
      return true;
    };
  }

  await loadNext();
}

/** Overall accuracy on gold items: a number, {accuracy}, or {annotator: {gold_items, correct}} pooled. */
function goldAccuracy(gold) {
  if (typeof gold === "number") return pct(gold);
  if (!gold || typeof gold !== "object") return "–";
  if (typeof gold.accuracy === "number") return pct(gold.accuracy);
  let items = 0;
  let correct = 0;
  for (const scores of Object.values(gold)) {
    if (scores && typeof scores === "object" && typeof scores.gold_items === "number") {
      items += scores.gold_items;
      correct += scores.correct ?? 0;
    }
  }
  return items ? `${pct(correct / items)} of ${items}` : "–";
}

async function adminView(view) {
  if (state.me.role !== "admin") {
    view.root.replaceChildren(el("p", {class: "error", text: "Only admins can open this page."}));
    return;
  }
  const [users, settings, agreement] = await Promise.all([api("/api/admin/users"), api("/api/admin/settings"),
    api("/api/admin/agreement").catch((error) => ({error: error.message}))]);
  if (!view.alive) return;

  const tokenBox = el("div", {class: "token-box", id: "new-token", hidden: true});
  const nameInput = el("input", {id: "new-user-name", name: "name", required: true, placeholder: "name",
    autocomplete: "off", maxlength: "100"});
  const roleSelect = el("select", {id: "new-user-role", name: "role"},
    ["annotator", "reviewer", "admin"].map((role) => el("option", {value: role, text: role})));
  const addForm = el("form", {class: "inline-form", id: "add-user"}, nameInput, roleSelect,
    el("button", {type: "submit", class: "primary", text: "Add user"}));
  addForm.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const created = await api("/api/admin/users", {method: "POST",
        body: {name: nameInput.value.trim(), role: roleSelect.value}});
      const code = el("code", {class: "token", text: created.token});
      tokenBox.replaceChildren(el("p", {}, "Token for ", el("strong", {text: created.name}), ` (${created.role}), shown once: `),
        code, el("p", {class: "muted", text: "Give it to them privately; they sign in with it at /login."}));
      nameInput.value = "";
      try {
        usersHolder.replaceChildren(usersTable(await api("/api/admin/users")));
      } finally {
        tokenBox.hidden = false;  // the token is shown whatever happens to the refresh: it is not shown again
      }
    });
  });

  const usersTable = (list) => table([{key: "name"}, {key: "role"}, {key: "created_at", title: "created"},
    {key: "labels"}, {key: "decisions"}], list);
  const usersHolder = el("div", {id: "users"}, usersTable(users));

  const fields = [["overlap", "annotators per item"], ["gold_every", "a gold item every N items (0: none)"],
    ["refit_every", "refit the model every N labels"], ["lease_minutes", "an unanswered item goes to someone else after"],
    ["route_precision", "auto-accept the model's labels at this precision (empty: off)"]];
  const inputs = Object.fromEntries(fields.map(([key]) => [key, el("input", {id: `setting-${key}`, name: key,
    type: "number", min: "0", step: key === "route_precision" ? "0.01" : "1",
    value: settings[key] === null || settings[key] === undefined ? "" : String(settings[key])})]));
  const settingsForm = el("form", {class: "settings-form", id: "settings"},
    fields.map(([key, help]) => el("label", {}, el("span", {class: "setting-name", text: key}), inputs[key],
      el("span", {class: "muted", text: help}))),
    el("button", {type: "submit", class: "primary", text: "Save settings"}));
  settingsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = {};
      for (const [key] of fields) {
        if (inputs[key].value !== "") body[key] = Number(inputs[key].value);
        else if (key === "route_precision") body[key] = null;
      }
      const saved = await api("/api/admin/settings", {method: "POST", body});
      for (const [key] of fields) {
        if (saved && key in saved) inputs[key].value = saved[key] === null ? "" : String(saved[key]);
      }
      toast("settings saved");
    });
  });

  const goldSample = el("input", {id: "gold-sample", name: "sample_id", required: true, placeholder: "sample id",
    autocomplete: "off"});
  const goldLabel = el("select", {id: "gold-label", name: "label"},
    state.classes.map((name) => el("option", {value: name, text: name})));
  const goldForm = el("form", {class: "inline-form", id: "add-gold"}, goldSample, goldLabel,
    el("button", {type: "submit", text: "Add gold item"}));
  goldForm.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const answer = await api("/api/admin/gold", {method: "POST",
        body: {items: [{sample_id: goldSample.value.trim(), label: goldLabel.value}]}});
      goldSample.value = "";
      toast(`gold items: ${fmt(answer.gold)}`);
    });
  });

  let agreementPart;
  if (agreement.error) {
    agreementPart = el("p", {class: "error", text: agreement.error});
  } else {
    const gold = agreement.gold;
    agreementPart = el("div", {},
      el("dl", {class: "figures"}, el("dt", {text: "overlap"}), el("dd", {text: fmt(agreement.overlap)}),
        el("dt", {text: "Fleiss' kappa"}), el("dd", {text: fmt(agreement.fleiss_kappa)}),
        el("dt", {text: "gold accuracy"}), el("dd", {id: "gold-accuracy", text: goldAccuracy(gold)})),
      el("h3", {text: "Per annotator"}), anyTable(agreement.per_annotator, "annotator"),
      el("h3", {text: "Per class"}), anyTable(agreement.per_class, "class"),
      agreement.pairs ? [el("h3", {text: "Pairs"}), anyTable(agreement.pairs, "pair")] : null,
      gold && typeof gold === "object" ? [el("h3", {text: "Gold items per annotator"}), anyTable(gold, "annotator")] : null);
  }

  view.root.replaceChildren(
    el("div", {class: "view-head"}, el("h2", {text: "Admin"})),
    el("div", {class: "admin-grid"},
      el("section", {class: "card"}, el("h3", {text: "Users"}), usersHolder, addForm, tokenBox),
      el("section", {class: "card"}, el("h3", {text: "Settings"}), settingsForm,
        el("h3", {class: "gold-title", text: "Gold items"}),
        el("p", {class: "muted", text: "A sample with a known answer; annotators get one every gold_every items."}),
        goldForm),
      el("section", {class: "card wide", id: "agreement"}, el("h3", {text: "Agreement"}), agreementPart)));
  setLegend([]);
}

// -- routing ----------------------------------------------------------------------------------------------

async function route() {
  if (state.view) state.view.alive = false;
  const view = {alive: true, root: $("view"), onKey: null};
  state.view = view;
  setLegend([]);
  const parts = (window.location.hash || "#/").replace(/^#\/?/, "").split("/");
  const name = parts[0] || "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.route === name);
  }
  view.root.replaceChildren(el("p", {class: "muted", text: "Loading…"}));
  try {
    if (name === "overview") await overviewView(view);
    else if (name === "review" && parts.length > 1) await reviewView(view, decodeURIComponent(parts.slice(1).join("/")));
    else if (name === "label") await labelView(view);
    else if (name === "admin") await adminView(view);
    else if (name === "mask") {
      await maskView(view, {el, api, toast, setLegend, guarded, state, ApiError},
        parts.length > 1 ? decodeURIComponent(parts.slice(1).join("/")) : null);
    }
    else view.root.replaceChildren(el("p", {}, "No such page. ", el("a", {href: "#/", text: "Overview"})));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    if (view.alive) {
      view.root.replaceChildren(el("p", {class: "error", text: error.message || String(error)}),
        el("p", {}, el("a", {href: "#/", text: "Back to the overview"})));
    }
  }
}

async function start() {
  try {
    state.me = await api("/api/me");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      $("view").replaceChildren(el("p", {class: "error", text: error.message || String(error)}));
    }
    return;
  }
  state.csrf = state.me.csrf;
  state.classes = state.me.classes ?? [];
  $("user").textContent = state.me.user;
  $("role").textContent = state.me.role;
  $("workspace").textContent = state.me.workspace ?? "";
  $("nav-admin").hidden = state.me.role !== "admin";
  $("logout").addEventListener("click", () => guarded(async () => {
    try { await api("/api/logout", {method: "POST", body: {}}); } finally { window.location.assign("/login"); }
  }));
  window.addEventListener("hashchange", route);
  document.body.classList.add("ready");
  await route();
}

start();
