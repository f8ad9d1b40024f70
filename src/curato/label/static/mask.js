// curato label: the mask tool (#/mask and #/mask/<sample id>). Plain ES module, no build step.
//
// Pixels live in typed arrays at the image's full size: `labels` (Uint8Array, class index per pixel, 0 =
// background) and an RGBA overlay (ImageData) drawn over the photo with the opacity slider. A superpixel level
// arrives as a binary label map (uint16/uint32, gzip) and is turned once into an index: superpixel id -> its
// pixel list (CSR offsets) and bounding box, so painting a superpixel touches only its own pixels and
// re-uploads only its bounding box (putImageData with a dirty rectangle). Masks travel as 8-bit indexed PNGs,
// encoded and decoded here (CompressionStream / DecompressionStream): no canvas round trip that could change
// a value. SECURITY: class names and sample ids reach the page only through textContent and attributes.

const LEVELS = ["coarse", "medium", "fine"];
const TOOLS = {superpixel: "q", brush: "b", eraser: "e", fill: "f"};
const NUMBER_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
const UNPAINTED = 255;  // in the seeds map: a pixel the person has not painted (curato.features.propagation)

// -- colours: the PASCAL VOC palette, the same one the server writes into its PNGs ---------------------------

const PALETTE = (() => {
  const colours = new Uint8Array(256 * 3);
  for (let index = 0; index < 256; index++) {
    let r = 0, g = 0, b = 0, c = index;
    for (let shift = 7; shift >= 0; shift--) {
      r |= (c & 1) << shift; g |= ((c >> 1) & 1) << shift; b |= ((c >> 2) & 1) << shift;
      c >>= 3;
    }
    colours.set([r, g, b], index * 3);
  }
  return colours;
})();
const cssColour = (value) => `rgb(${PALETTE[value * 3]}, ${PALETTE[value * 3 + 1]}, ${PALETTE[value * 3 + 2]})`;

// -- indexed PNGs --------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(parts) {
  let crc = 0xffffffff;
  for (const bytes of parts) for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

async function throughStream(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  const name = new TextEncoder().encode(type);
  view.setUint32(0, data.length);
  out.set(name, 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32([name, data]));
  return out;
}

/** The bytes of an 8-bit indexed PNG (colour type 3) of a label map, palette = PALETTE. */
export async function encodePng(labels, width, height) {
  const rows = new Uint8Array((width + 1) * height);
  for (let y = 0; y < height; y++) rows.set(labels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 3, 0, 0, 0], 8);
  const idat = await throughStream(rows, new CompressionStream("deflate"));
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header), chunk("PLTE", PALETTE),
    chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))];
  const png = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  parts.reduce((at, part) => { png.set(part, at); return at + part.length; }, 0);
  return png;
}

/** {width, height, pixels} of an 8-bit indexed or greyscale PNG (values, not colours). */
export async function decodePng(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 8, width = 0, height = 0;
  const idat = [];
  while (offset < bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(offset + 8);
      height = view.getUint32(offset + 12);
      if (data[8] !== 8 || ![0, 3].includes(data[9]) || data[12] !== 0) throw new Error("unsupported mask PNG");
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    offset += 12 + length;
  }
  const raw = await throughStream(new Blob(idat), new DecompressionStream("deflate"));
  const pixels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (width + 1)];
    const line = raw.subarray(y * (width + 1) + 1, (y + 1) * (width + 1));
    const out = pixels.subarray(y * width, (y + 1) * width);
    const up = y > 0 ? pixels.subarray((y - 1) * width, y * width) : new Uint8Array(width);
    for (let x = 0; x < width; x++) {
      const a = x > 0 ? out[x - 1] : 0, b = up[x], c = x > 0 ? up[x - 1] : 0;
      let value = line[x];
      if (filter === 1) value += a;
      else if (filter === 2) value += b;
      else if (filter === 3) value += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        value += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[x] = value & 0xff;
    }
  }
  return {width, height, pixels};
}

// -- superpixel index ----------------------------------------------------------------------------------------

/** superpixel id -> pixel list (CSR: offsets, pixels) and bounding box [x0, y0, x1, y1] (inclusive). */
function buildIndex(segments, width, height, count) {
  const offsets = new Int32Array(count + 1);
  for (let i = 0; i < segments.length; i++) offsets[segments[i] + 1]++;
  for (let s = 0; s < count; s++) offsets[s + 1] += offsets[s];
  const cursor = offsets.slice(0, count);
  const pixels = new Int32Array(segments.length);
  const box = new Int32Array(4 * count);
  for (let s = 0; s < count; s++) { box[4 * s] = width; box[4 * s + 1] = height; box[4 * s + 2] = -1; box[4 * s + 3] = -1; }
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      const s = segments[i];
      pixels[cursor[s]++] = i;
      const b = 4 * s;
      if (x < box[b]) box[b] = x;
      if (x > box[b + 2]) box[b + 2] = x;
      if (y < box[b + 1]) box[b + 1] = y;
      box[b + 3] = y;
    }
  }
  return {segments, offsets, pixels, box, count};
}

/** White, half-transparent pixels where a superpixel meets another (right or lower neighbour). */
function edgeCanvas(segments, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const rgba = new Uint32Array(image.data.buffer);
  const edge = 0xb4ffffff;  // little-endian ABGR: white at alpha 180
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      const s = segments[i];
      if ((x + 1 < width && segments[i + 1] !== s) || (y + 1 < height && segments[i + width] !== s)) rgba[i] = edge;
    }
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

// -- change records for undo/redo ----------------------------------------------------------------------------

/** The seeds map's changes of one step: typed arrays (a fill or a clear of a 4k image changes millions). */
class SeedChanges {
  constructor() {
    this.index = new Int32Array(256);
    this.before = new Uint8Array(256);
    this.after = new Uint8Array(256);
    this.length = 0;
  }

  push(i, before, after) {
    if (this.length === this.index.length) {
      const grow = (array) => { const bigger = new array.constructor(array.length * 2); bigger.set(array); return bigger; };
      this.index = grow(this.index); this.before = grow(this.before); this.after = grow(this.after);
    }
    this.index[this.length] = i;
    this.before[this.length] = before;
    this.after[this.length] = after;
    this.length++;
  }
}

class Changes {
  constructor() {
    this.index = new Int32Array(1024);
    this.before = new Uint8Array(1024);
    this.after = new Uint8Array(1024);
    this.length = 0;
    this.box = [Infinity, Infinity, -1, -1];
    this.seeds = new SeedChanges();  // the painted-by-hand map's changes
  }

  seed(i, before, after) {
    this.seeds.push(i, before, after);
  }

  reserve(more) {
    if (this.length + more <= this.index.length) return;
    let size = this.index.length * 2;
    while (size < this.length + more) size *= 2;
    const grow = (array) => { const bigger = new array.constructor(size); bigger.set(array); return bigger; };
    this.index = grow(this.index); this.before = grow(this.before); this.after = grow(this.after);
  }

  push(i, before, after, x, y) {
    if (this.length === this.index.length) this.reserve(1);
    this.index[this.length] = i;
    this.before[this.length] = before;
    this.after[this.length] = after;
    this.length++;
    this.grow(x, y, x, y);
  }

  grow(x0, y0, x1, y1) {
    const b = this.box;
    if (x0 < b[0]) b[0] = x0;
    if (y0 < b[1]) b[1] = y0;
    if (x1 > b[2]) b[2] = x1;
    if (y1 > b[3]) b[3] = y1;
  }
}

// -- the view ------------------------------------------------------------------------------------------------

export async function maskView(view, ctx, requested) {
  const {el, api, toast, setLegend, guarded, state, ApiError} = ctx;
  const enc = encodeURIComponent;
  const S = {
    item: null, width: 0, height: 0, labels: null, overlay: null, overlayRgba: null, maskCanvas: null, maskContext: null,
    bitmap: null, level: "medium", indexes: {}, edges: {}, tool: "superpixel", active: 1, radius: 12, opacity: 0.55,
    showEdges: true, scale: 1, tx: 0, ty: 0, undo: [], redo: [], classes: [], source: "empty", shownAt: null,
    skipped: [], saved: [], space: false, drag: null, stroke: null, lastSegment: -1, lastPoint: null, hover: null,
    paintTimes: [], frameTimes: [], pending: false, painted: 0, seeds: null, completing: false, proposalCleared: false,
  };

  async function raw(path, init = {}) {
    const headers = {...(init.headers || {})};
    if (init.method && init.method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
    let response;
    try {
      response = await fetch(path, {credentials: "same-origin", ...init, headers});
    } catch {
      throw new ApiError(0, "the server does not answer: is `curato serve` still running?");
    }
    if (response.status === 401) {
      window.location.assign("/login");
      throw new ApiError(401, "signed out");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response;
  }

  const classNamesOf = (response) => JSON.parse(decodeURIComponent(response.headers.get("x-mask-classes") || "%5B%5D"));

  // ---- DOM ----
  const canvas = el("canvas", {id: "mask-canvas", tabindex: "0"});
  const wrap = el("div", {class: "mask-canvas-wrap"}, canvas);
  const stage = el("section", {class: "mask-stage", id: "mask-stage"}, wrap);
  const side = el("aside", {class: "mask-side evidence"});
  const head = el("div", {class: "view-head"}, el("a", {href: "#/", class: "back", text: "← Overview"}),
    el("h2", {text: "Masks"}), el("span", {class: "muted", id: "mask-remaining"}));
  const remaining = head.querySelector("#mask-remaining");
  view.root.replaceChildren(head, el("div", {class: "mask-bench"}, stage, side));
  view.onKey = null;  // the mask tool reads the keyboard itself (Ctrl+Z, space held for panning)
  const context = canvas.getContext("2d");

  function publish() {  // what tests and scripts can read off the page
    const d = stage.dataset;
    d.sample = S.item?.sample_id ?? "";
    d.level = S.level;
    d.tool = S.tool;
    d.active = String(S.active);
    d.scale = String(S.scale);
    d.tx = String(S.tx);
    d.ty = String(S.ty);
    d.undo = String(S.undo.length);
    d.source = S.source;
    d.painted = String(S.painted);  // pixels with a class (not background): kept up to date by every paint
    d.paintMs = S.paintTimes.length ? S.paintTimes[S.paintTimes.length - 1].toFixed(3) : "";
    d.paintTimes = S.paintTimes.map((t) => t.toFixed(3)).join(",");
    d.frameTimes = S.frameTimes.map((t) => t.toFixed(3)).join(",");
  }

  // ---- drawing ----
  function render() {
    S.pending = false;
    if (!view.alive || !S.bitmap) return;
    const started = performance.now();
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.setTransform(S.scale, 0, 0, S.scale, S.tx, S.ty);
    context.imageSmoothingEnabled = S.scale < 1;
    context.globalAlpha = 1;
    context.drawImage(S.bitmap, 0, 0);
    context.globalAlpha = S.opacity;
    context.drawImage(S.maskCanvas, 0, 0);
    if (S.showEdges && S.edges[S.level] && (S.tool === "superpixel")) {
      context.globalAlpha = 0.45;
      context.drawImage(S.edges[S.level], 0, 0);
    }
    context.globalAlpha = 1;
    if (S.hover && (S.tool === "brush" || S.tool === "eraser")) {
      context.beginPath();
      context.arc(S.hover[0] + 0.5, S.hover[1] + 0.5, S.radius, 0, 2 * Math.PI);
      context.lineWidth = 1.5 / S.scale;
      context.strokeStyle = "#fff";
      context.stroke();
    }
    S.frameTimes.push(performance.now() - started);
    if (S.frameTimes.length > 50) S.frameTimes.shift();
    publish();
  }

  function requestRender() {
    if (!S.pending) { S.pending = true; requestAnimationFrame(render); }
  }

  function fitView() {
    const w = wrap.clientWidth, h = wrap.clientHeight;
    canvas.width = w;
    canvas.height = h;
    S.scale = Math.min(w / S.width, h / S.height);
    S.tx = (w - S.width * S.scale) / 2;
    S.ty = (h - S.height * S.scale) / 2;
    requestRender();
  }

  function colour(i, value) {
    const o = i * 4;
    const rgba = S.overlayRgba;
    rgba[o] = PALETTE[value * 3];
    rgba[o + 1] = PALETTE[value * 3 + 1];
    rgba[o + 2] = PALETTE[value * 3 + 2];
    rgba[o + 3] = value ? 255 : 0;
  }

  function upload(box) {
    if (box[2] < box[0]) return;
    S.maskContext.putImageData(S.overlay, 0, 0, box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1);
    requestRender();
  }

  // ---- painting ----
  /** Record that the person painted pixel i with `value` (UNPAINTED: no longer painted by hand): the seeds the
   * completion (key c) starts from. */
  function seed(i, value) {
    const old = S.seeds[i];
    if (old === value) return;
    S.seeds[i] = value;
    S.stroke.seed(i, old, value);
  }

  function set(i, value, seedValue = value) {
    seed(i, seedValue);
    const before = S.labels[i];
    if (before === value) return;
    S.labels[i] = value;
    S.painted += (value !== 0) - (before !== 0);
    colour(i, value);
    S.stroke.push(i, before, value, i % S.width, (i / S.width) | 0);
  }

  function paintSegment(segment) {
    const index = S.indexes[S.level];
    const started = performance.now();
    const value = S.active;
    const {offsets, pixels, box} = index;
    const changes = S.stroke;
    const before = changes.length;
    changes.reserve(offsets[segment + 1] - offsets[segment]);
    for (let k = offsets[segment]; k < offsets[segment + 1]; k++) {
      const i = pixels[k];
      seed(i, value);
      const old = S.labels[i];
      if (old === value) continue;
      S.labels[i] = value;
      S.painted += (value !== 0) - (old !== 0);
      colour(i, value);
      changes.index[changes.length] = i;
      changes.before[changes.length] = old;
      changes.after[changes.length] = value;
      changes.length++;
    }
    if (changes.length > before) {
      const b = 4 * segment;
      changes.grow(box[b], box[b + 1], box[b + 2], box[b + 3]);
      upload([box[b], box[b + 1], box[b + 2], box[b + 3]]);
    }
    S.paintTimes.push(performance.now() - started);
    if (S.paintTimes.length > 200) S.paintTimes.shift();
  }

  function stamp(cx, cy, value) {
    const started = performance.now();
    const r = S.radius, r2 = r * r;
    const y0 = Math.max(0, Math.ceil(cy - r)), y1 = Math.min(S.height - 1, Math.floor(cy + r));
    let box = [Infinity, Infinity, -1, -1];
    for (let y = y0; y <= y1; y++) {
      const half = Math.sqrt(Math.max(0, r2 - (y - cy) * (y - cy)));
      const x0 = Math.max(0, Math.ceil(cx - half)), x1 = Math.min(S.width - 1, Math.floor(cx + half));
      for (let x = x0; x <= x1; x++) set(y * S.width + x, value);
      if (x1 >= x0) box = [Math.min(box[0], x0), Math.min(box[1], y), Math.max(box[2], x1), y];
    }
    upload(box);
    S.paintTimes.push(performance.now() - started);
    if (S.paintTimes.length > 200) S.paintTimes.shift();
  }

  function fill(x, y) {
    const started = performance.now();
    const start = y * S.width + x;
    const target = S.labels[start], value = S.active;
    if (target === value) return;
    const stack = new Int32Array(S.width * S.height);
    let top = 0;
    stack[top++] = start;
    set(start, value);
    while (top) {
      const i = stack[--top];
      const px = i % S.width;
      if (px > 0 && S.labels[i - 1] === target) { set(i - 1, value); stack[top++] = i - 1; }
      if (px < S.width - 1 && S.labels[i + 1] === target) { set(i + 1, value); stack[top++] = i + 1; }
      if (i >= S.width && S.labels[i - S.width] === target) { set(i - S.width, value); stack[top++] = i - S.width; }
      if (i + S.width < S.labels.length && S.labels[i + S.width] === target) { set(i + S.width, value); stack[top++] = i + S.width; }
    }
    upload(S.stroke.box);
    S.paintTimes.push(performance.now() - started);
  }

  function applyAt(x, y, first) {
    if (x < 0 || y < 0 || x >= S.width || y >= S.height) return;
    if (S.tool === "superpixel") {
      const index = S.indexes[S.level];
      if (!index) return;
      const segment = index.segments[y * S.width + x];
      if (segment !== S.lastSegment) { S.lastSegment = segment; paintSegment(segment); }
    } else if (S.tool === "fill") {
      if (first) fill(x, y);
    } else {
      stamp(x, y, S.tool === "eraser" ? 0 : S.active);
    }
  }

  function strokeTo(x, y, first) {
    const last = S.lastPoint;
    if (!first && last) {  // fast moves: visit the points in between
      const step = S.tool === "superpixel" ? 3 : Math.max(1, S.radius / 2);
      const steps = Math.ceil(Math.hypot(x - last[0], y - last[1]) / step);
      for (let k = 1; k < steps; k++) {
        applyAt(Math.round(last[0] + (x - last[0]) * k / steps), Math.round(last[1] + (y - last[1]) * k / steps), false);
      }
    }
    applyAt(x, y, first);
    S.lastPoint = [x, y];
  }

  function endStroke() {
    if (S.stroke && (S.stroke.length || S.stroke.seeds.length)) {  // painting background on background seeds
      S.undo.push(S.stroke);
      if (S.undo.length > 200) S.undo.shift();
      S.redo = [];
    }
    S.stroke = null;
    S.lastSegment = -1;
    S.lastPoint = null;
    updateSide();
  }

  function replay(changes, forward) {
    if (changes.cleared) S.proposalCleared = forward;
    const seeds = changes.seeds, seedValues = forward ? seeds.after : seeds.before;
    for (let k = 0; k < seeds.length; k++) S.seeds[seeds.index[k]] = seedValues[k];
    const values = forward ? changes.after : changes.before;
    for (let k = 0; k < changes.length; k++) {
      const i = changes.index[k];
      S.painted += (values[k] !== 0) - (S.labels[i] !== 0);
      S.labels[i] = values[k];
      colour(i, values[k]);
    }
    upload(changes.box);
  }

  /** Shift+Backspace: every pixel back to background in one undoable step. A proposal that is worse than an
   * empty start costs one key press instead of one correction per wrong piece. */
  function clearMask() {
    if (!S.labels) return;
    if (!S.painted) { toast("the mask is already empty"); return; }
    const started = performance.now();
    S.stroke = new Changes();
    S.stroke.reserve(S.painted);
    S.proposalCleared = true;  // the completion no longer leans to the proposal the person threw away
    for (let i = 0; i < S.labels.length; i++) {
      if (S.labels[i]) set(i, 0, UNPAINTED);
      else seed(i, UNPAINTED);
    }
    upload(S.stroke.box);
    S.stroke.cleared = true;  // undoing the clear brings the start back as the completion's prior too
    S.paintTimes.push(performance.now() - started);
    endStroke();
    toast("mask cleared (Ctrl+Z brings it back)");
  }

  /** Key c: the server completes the mask from what the person painted (the seeds: strokes, clicks, fills,
   * the eraser's background) over the image's superpixel graph; every pixel nobody painted takes the class the
   * completion gives it. One undoable step; painted pixels never change. */
  async function complete() {
    if (!S.item || !S.labels || S.completing) return;
    let background = false, aClass = false;
    for (let i = 0; i < S.seeds.length && !(background && aClass); i++) {
      if (S.seeds[i] === 0) background = true;
      else if (S.seeds[i] !== UNPAINTED) aClass = true;
    }
    if (!background || !aClass) {  // otherwise every pixel nobody painted would become one class
      toast("paint background (eraser) and a class first, then complete");
      return;
    }
    const item = S.item;
    S.completing = true;
    try {
      const started = performance.now();
      const params = new URLSearchParams({id: item.sample_id});
      for (const name of S.classes) params.append("classes", name);
      // the start the page opened (unless cleared) leans the pixels nobody painted to its classes
      if (!S.proposalCleared && S.source === "proposal") params.append("prior", "proposal");
      if (!S.proposalCleared && S.source === "saved mask") params.append("prior", "mask");
      const body = await encodePng(S.seeds, S.width, S.height);
      const response = await raw(`/api/mask/complete?${params}`, {method: "POST", body,
        headers: {"Content-Type": "image/png"}});
      const png = await decodePng(await response.arrayBuffer());
      // an answer that lands mid-stroke waits for the stroke to end: applying it would replace the live change
      // record (that stroke's undo) and end the drag; pixels the stroke paints stay as painted (seeds)
      while (S.stroke && S.item === item && view.alive) await new Promise((resolve) => setTimeout(resolve, 25));
      if (S.item !== item || !view.alive || png.width !== S.width || png.height !== S.height) return;
      S.stroke = new Changes();
      const pixels = png.pixels;
      for (let i = 0; i < pixels.length; i++) {
        if (S.labels[i] !== pixels[i] && S.seeds[i] === UNPAINTED) set(i, pixels[i], UNPAINTED);
      }
      const changed = S.stroke.length;
      if (changed) upload(S.stroke.box);
      endStroke();
      stage.dataset.completed = String((Number(stage.dataset.completed) || 0) + 1);
      stage.dataset.completedMs = (performance.now() - started).toFixed(1);
      toast(changed ? `completed from your strokes: ${changed} pixels changed (Ctrl+Z takes it back)`
        : "completed: nothing to change (paint background and a class first)");
    } finally {
      S.completing = false;
    }
  }

  function undo() {
    const changes = S.undo.pop();
    if (!changes) { toast("nothing to undo"); return; }
    replay(changes, false);
    S.redo.push(changes);
    updateSide();
  }

  function redo() {
    const changes = S.redo.pop();
    if (!changes) { toast("nothing to redo"); return; }
    replay(changes, true);
    S.undo.push(changes);
    updateSide();
  }

  // ---- pointer ----
  function imagePoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [Math.floor((event.clientX - rect.left - S.tx) / S.scale), Math.floor((event.clientY - rect.top - S.ty) / S.scale)];
  }

  canvas.addEventListener("mousedown", (event) => {
    if (!S.labels) return;
    canvas.focus();
    event.preventDefault();
    if (S.space || event.button === 1) {
      S.drag = {x: event.clientX, y: event.clientY, tx: S.tx, ty: S.ty};
      return;
    }
    if (event.button !== 0) return;
    if (S.tool === "superpixel" && !S.indexes[S.level]) { toast("superpixels are still loading"); return; }
    S.stroke = new Changes();
    const [x, y] = imagePoint(event);
    strokeTo(x, y, true);
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!S.labels) return;
    if (S.drag) {
      S.tx = S.drag.tx + event.clientX - S.drag.x;
      S.ty = S.drag.ty + event.clientY - S.drag.y;
      requestRender();
      return;
    }
    const [x, y] = imagePoint(event);
    S.hover = [x, y];
    if (S.stroke && (event.buttons & 1)) strokeTo(x, y, false);
    else requestRender();
  });
  const release = () => {
    if (S.drag) { S.drag = null; return; }
    if (S.stroke) endStroke();
  };
  canvas.addEventListener("mouseup", release);
  canvas.addEventListener("mouseleave", () => { S.hover = null; release(); requestRender(); });
  canvas.addEventListener("wheel", (event) => {
    if (!S.labels) return;
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const mx = event.clientX - rect.left, my = event.clientY - rect.top;
    const scale = Math.min(32, Math.max(0.02, S.scale * Math.exp(-event.deltaY * 0.0015)));
    S.tx = mx - (mx - S.tx) * scale / S.scale;
    S.ty = my - (my - S.ty) * scale / S.scale;
    S.scale = scale;
    requestRender();
  }, {passive: false});
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  // ---- keyboard ----
  function onKeyDown(event) {
    if (!view.alive) { document.removeEventListener("keydown", onKeyDown, true); document.removeEventListener("keyup", onKeyUp, true); return; }
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))
        && target.type !== "range") return;
    const key = event.key;
    const ctrl = event.ctrlKey || event.metaKey;
    let handled = true;
    if (ctrl && (key === "z" || key === "Z")) event.shiftKey ? redo() : undo();
    else if (ctrl && (key === "y" || key === "Y")) redo();
    else if (ctrl || event.altKey) handled = false;
    else if (key === "Backspace" && event.shiftKey) clearMask();
    else if (key === "c") guarded(complete);
    else if (key === " ") S.space = true;
    else if (key === "Enter" || key === "s") guarded(save);
    else if (key === "n") guarded(skip);
    else if (key === "u") guarded(undoSave);
    else if (key === "g") setLevel(LEVELS[(LEVELS.indexOf(S.level) + 1) % LEVELS.length]);
    else if (key === "[") setRadius(S.radius / 1.25);
    else if (key === "]") setRadius(S.radius * 1.25);
    else if (key === "h") { S.showEdges = !S.showEdges; requestRender(); }
    else if (key === "r") fitView();
    else if (Object.values(TOOLS).includes(key)) setTool(Object.keys(TOOLS).find((tool) => TOOLS[tool] === key));
    else if (NUMBER_KEYS.includes(key) && NUMBER_KEYS.indexOf(key) < S.classes.length) setActive(NUMBER_KEYS.indexOf(key) + 1);
    else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); }
  }
  function onKeyUp(event) {
    if (event.key === " ") S.space = false;
  }
  document.addEventListener("keydown", onKeyDown, true);
  document.addEventListener("keyup", onKeyUp, true);
  const resizer = new ResizeObserver(() => { if (view.alive && S.bitmap) fitView(); else resizer.disconnect(); });
  resizer.observe(wrap);

  // ---- controls ----
  function setTool(tool) {
    S.tool = tool;
    if (tool === "eraser" || tool === "brush") S.hover = S.hover ?? null;
    updateSide();
    requestRender();
  }
  function setActive(value) {
    S.active = value;
    if (S.tool === "eraser") S.tool = "brush";
    updateSide();
  }
  function setRadius(radius) {
    S.radius = Math.max(1, Math.min(400, Math.round(radius)));
    updateSide();
    requestRender();
  }
  async function setLevel(level) {
    S.level = level;
    updateSide();
    try {
      await loadLevel(level);
    } catch (error) {
      toast(error.message || String(error), "error");
    }
    requestRender();
    updateSide();
  }

  function updateSide() {
    if (!view.alive) return;
    const tools = el("div", {class: "mask-tools"}, Object.entries(TOOLS).map(([tool, key]) => {
      const b = el("button", {type: "button", class: S.tool === tool ? "active" : undefined, "data-tool": tool},
        el("kbd", {text: key}), " ", tool);
      b.addEventListener("click", () => { b.blur(); setTool(tool); });
      return b;
    }));
    const levels = el("div", {class: "mask-levels"}, LEVELS.map((level) => {
      const b = el("button", {type: "button", class: S.level === level ? "active" : undefined, "data-level": level,
        text: level});
      b.addEventListener("click", () => { b.blur(); setLevel(level); });
      return b;
    }));
    const classes = el("ol", {class: "classes mask-classes"}, S.classes.map((name, index) => {
      const value = index + 1;
      const b = el("button", {type: "button"}, el("kbd", {text: NUMBER_KEYS[index] ?? "·"}),
        el("span", {class: "swatch"}), el("span", {class: "name", text: name}));
      b.querySelector(".swatch").style.background = cssColour(value);
      b.addEventListener("click", () => { b.blur(); setActive(value); });
      return el("li", {class: value === S.active ? "selected" : undefined, "data-class": name}, b);
    }));
    const radius = el("input", {type: "range", min: "1", max: "120", value: String(S.radius), id: "mask-radius"});
    radius.addEventListener("input", () => setRadius(Number(radius.value)));
    const opacity = el("input", {type: "range", min: "0", max: "100", value: String(Math.round(S.opacity * 100)),
      id: "mask-opacity"});
    opacity.addEventListener("input", () => { S.opacity = Number(opacity.value) / 100; requestRender(); });
    const action = (label, key, handler, extra = {}) => {
      const b = el("button", {type: "button", class: extra.class, disabled: extra.disabled, id: extra.id},
        el("kbd", {text: key}), " ", label);
      b.addEventListener("click", () => { b.blur(); handler(); });
      return b;
    };
    const last = S.paintTimes.length ? S.paintTimes[S.paintTimes.length - 1] : null;
    side.replaceChildren(
      el("h3", {text: "Class"}), classes,
      el("h3", {text: "Tool"}), tools,
      el("h3", {text: "Superpixels"}), levels,
      el("label", {class: "mask-slider"}, "brush radius ", radius, el("span", {text: ` ${S.radius}px`})),
      el("label", {class: "mask-slider"}, "opacity ", opacity),
      el("div", {class: "actions mask-actions"},
        action("Save", "Enter", () => guarded(save), {class: "primary", id: "mask-save"}),
        action("Next", "n", () => guarded(skip)),
        action("Undo", "Ctrl+Z", undo, {disabled: !S.undo.length}),
        action("Redo", "Ctrl+Y", redo, {disabled: !S.redo.length}),
        action("Clear", "Shift+Backspace", clearMask, {disabled: !S.painted, id: "mask-clear"}),
        action("Complete", "c", () => guarded(complete), {id: "mask-complete"})),
      el("dl", {},
        el("dt", {text: "image"}), el("dd", {class: "sid", text: S.item ? S.item.sample_id : "–"}),
        el("dt", {text: "size"}), el("dd", {text: S.item ? `${S.width} × ${S.height}` : "–"}),
        el("dt", {text: "started from"}), el("dd", {id: "mask-source", text: S.source}),
        el("dt", {text: "last paint"}), el("dd", {text: last === null ? "–" : `${last.toFixed(1)} ms`})));
    publish();
  }

  // ---- loading ----
  async function loadLevel(level) {
    if (S.indexes[level] || !S.item) return;
    const item = S.item;
    const response = await raw(`/api/mask/superpixels?id=${enc(item.sample_id)}&level=${enc(level)}`);
    const buffer = await response.arrayBuffer();
    if (S.item !== item || !view.alive) return;
    const data = response.headers.get("x-dtype") === "uint32" ? new Uint32Array(buffer) : new Uint16Array(buffer);
    const segments = new Int32Array(data);
    S.indexes[level] = buildIndex(segments, S.width, S.height, Number(response.headers.get("x-segments")));
    S.edges[level] = edgeCanvas(segments, S.width, S.height);
  }

  async function open(item) {
    stage.dataset.ready = "0";
    S.item = item;
    Object.assign(S, {indexes: {}, edges: {}, undo: [], redo: [], stroke: null, bitmap: null, labels: null,
      width: item.width, height: item.height, paintTimes: [], frameTimes: []});
    S.classes = [...item.classes];
    remaining.textContent = `${item.remaining ?? "–"} without a mask`;
    const picture = raw(item.image).then((r) => r.blob()).then((blob) => createImageBitmap(blob));
    const level = loadLevel(S.level);
    let start = null;
    S.source = "empty";
    if (item.has_mask) {
      const response = await raw(item.mask);
      start = {names: classNamesOf(response), png: await decodePng(await response.arrayBuffer())};
      S.source = "saved mask";
    } else if (item.proposal_available) {
      const response = await raw(item.proposal);
      if (response.status === 200) {
        start = {names: classNamesOf(response), png: await decodePng(await response.arrayBuffer())};
        S.source = "proposal";
      }
    }
    S.bitmap = await picture;
    await level;
    if (!view.alive || S.item !== item) return;
    S.labels = new Uint8Array(S.width * S.height);
    S.seeds = new Uint8Array(S.width * S.height).fill(UNPAINTED);
    S.proposalCleared = false;
    if (start && start.png.width === S.width && start.png.height === S.height) {
      for (const name of start.names) if (!S.classes.includes(name)) S.classes.push(name);
      const lookup = new Uint8Array(256);
      start.names.forEach((name, index) => { lookup[index + 1] = S.classes.indexOf(name) + 1; });
      const pixels = start.png.pixels;
      for (let i = 0; i < pixels.length; i++) S.labels[i] = lookup[pixels[i]];
    }
    S.maskCanvas = document.createElement("canvas");
    S.maskCanvas.width = S.width;
    S.maskCanvas.height = S.height;
    S.maskContext = S.maskCanvas.getContext("2d");
    S.overlay = S.maskContext.createImageData(S.width, S.height);
    S.overlayRgba = S.overlay.data;
    S.painted = 0;
    for (let i = 0; i < S.labels.length; i++) if (S.labels[i]) { colour(i, S.labels[i]); S.painted++; }
    S.maskContext.putImageData(S.overlay, 0, 0);
    S.active = Math.min(Math.max(1, S.active), Math.max(1, S.classes.length));
    fitView();
    updateSide();
    S.shownAt = performance.now();
    stage.dataset.ready = "1";
    publish();
  }

  async function loadNext() {
    const query = S.skipped.map((sid) => `exclude=${enc(sid)}`).join("&");
    const item = await api(`/api/mask/next${query ? `?${query}` : ""}`);
    if (!view.alive) return;
    if (item.sample_id === null) {
      S.item = null;
      stage.replaceChildren(el("div", {class: "empty"},
        el("p", {class: "done", text: "Every image has a mask. Thank you!"}),
        el("p", {class: "muted", text: `${S.saved.length} saved in this session; u undoes the last one.`})));
      stage.dataset.ready = "1";
      stage.dataset.sample = "";
      return;
    }
    await open(item);
  }

  async function save() {
    if (!S.item || !S.labels) return;
    const png = await encodePng(S.labels, S.width, S.height);
    const params = new URLSearchParams({id: S.item.sample_id});
    for (const name of S.classes) params.append("classes", name);
    params.append("duration_ms", String(Math.max(0, Math.min(86400000, Math.round(performance.now() - (S.shownAt ?? performance.now()))))));
    const answer = await (await raw(`/api/mask?${params}`, {method: "POST", body: png, headers: {"Content-Type": "image/png"}})).json();
    S.saved.push({decision: answer.decision, sample: S.item.sample_id});
    const kept = typeof answer.from_proposal === "number" ? ` (${(100 * answer.from_proposal).toFixed(0)}% kept from the proposal)` : "";
    toast(`mask saved${kept}`);
    stage.dataset.saved = String(answer.decision);
    if (requested) { requested = null; window.history.replaceState(null, "", "#/mask"); }
    background(loadNext());  // the next image loads without holding the keys (a slow proposal blocks nothing)
  }

  function background(promise) {
    promise.catch((error) => {
      if (!(error instanceof ApiError && error.status === 401) && view.alive) toast(error.message || String(error), "error");
    });
  }

  async function skip() {
    if (S.item) S.skipped.push(S.item.sample_id);
    background(loadNext());
  }

  async function undoSave() {
    const last = S.saved.pop();
    if (!last) { toast("no saved mask to undo in this session"); return; }
    try {
      await api(`/api/decisions/${enc(last.decision)}/undo`, {method: "POST", body: {}});
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) S.saved.push(last);
      throw error;
    }
    toast("undone: the image is back");
    await open(await api(`/api/mask/item?id=${enc(last.sample)}`));
  }

  setLegend([["1…9 0", "class"], ["q", "superpixels"], ["b", "brush"], ["e", "eraser"], ["f", "fill"],
    ["g", "coarse/medium/fine"], ["[ ]", "radius"], ["Ctrl+Z Ctrl+Y", "undo/redo"],
    ["Shift+Backspace", "clear the mask"], ["c", "complete from strokes"], ["wheel", "zoom"],
    ["space", "+ drag: pan"], ["Enter", "save"], ["n", "next"], ["u", "undo save"]]);
  if (requested) await open(await api(`/api/mask/item?id=${enc(requested)}`));
  else await loadNext();
}
