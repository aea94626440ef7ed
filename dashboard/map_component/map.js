// The Map's browser side: a scatter of up to millions of points drawn into an ImageData by the CPU (no WebGL, so
// it draws the same in a headless test browser), hover cards with the stored thumbnail, the images themselves once
// few enough points are in view, click → the image dialog, lasso and box selection, and a legend.
// Python (dashboard/map_view.py) sends a small JSON `data`; the points come as one binary buffer fetched from the
// app's own route (doggos/explore/map_payload.py documents the layout) and are kept per URL for the page's life.

const HEADER_BYTES = 32;
const AGREEMENT_FLAG = 1;
const LEFT_OUT_FLAG = 2; // a byte per point follows: 1 for an image a label decision excluded, which the map leaves out
const NO_AGREEMENT = 255;
const GRID_SHIFT = 8; // 256 × 256 cells over the 0..65535 coordinates: the hover and click index
const GRID_SIDE = 1 << (16 - GRID_SHIFT);
const HOVER_RADIUS_PX = 10;
const CLICK_SLOP_PX = 4; // a press that moves less than this is a click, not a drag
const BACKGROUND = 0xffffffff;
const GREY = 0xffd4d4d4; // unselected points while a selection is shown (ABGR)
const FIT_MARGIN = 0.92;

const payloads = new Map(); // points URL → Promise of parsed points (kept while the page lives)
const savedViews = new Map(); // view key → {cx, cy, k, hidden}: zoom, pan and hidden labels survive a rerun

export function parsePoints(buffer) {
  const head = new DataView(buffer, 0, HEADER_BYTES);
  const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, 6));
  if (magic !== "DGMAP1") throw new Error("not a doggos map buffer");
  const n = head.getUint32(8, true);
  const flags = head.getUint32(16, true);
  let at = HEADER_BYTES;
  const take16 = () => { const a = new Uint16Array(buffer.slice(at, at + 2 * n)); at += 2 * n; return a; };
  const x = take16(), y = take16(), label = take16();
  let agreement = null, suspect = null, leftOut = null;
  if (flags & AGREEMENT_FLAG) {
    agreement = new Uint8Array(buffer, at, n); at += n;
    suspect = new Uint8Array(buffer, at, n); at += n;
  }
  if (flags & LEFT_OUT_FLAG) { leftOut = new Uint8Array(buffer, at, n); at += n; }
  return { n, x, y, label, agreement, suspect, leftOut, grid: buildGrid(n, x, y, leftOut) };
}

// Points bucketed by cell (a counting sort): the candidates for a hover or a click are a few cells' points. A point
// left out is in no cell: nothing finds it.
export function buildGrid(n, x, y, leftOut = null) {
  const start = new Int32Array(GRID_SIDE * GRID_SIDE + 1);
  const cellOf = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cell = (x[i] >> GRID_SHIFT) + (y[i] >> GRID_SHIFT) * GRID_SIDE;
    cellOf[i] = leftOut && leftOut[i] ? -1 : cell;
    if (cellOf[i] >= 0) start[cell + 1]++;
  }
  for (let c = 0; c < GRID_SIDE * GRID_SIDE; c++) start[c + 1] += start[c];
  const fill = start.slice(0, GRID_SIDE * GRID_SIDE);
  const order = new Uint32Array(start[GRID_SIDE * GRID_SIDE]);
  for (let i = 0; i < n; i++) if (cellOf[i] >= 0) order[fill[cellOf[i]]++] = i;
  return { start, order };
}

export function pointInPolygon(px, py, polygon) {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i], [xj, yj] = polygon[j];
    if ((yi > py) !== (yj > py) && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function packColour(hex) { // "#rrggbb" → ABGR, as an ImageData's Uint32 view on a little-endian machine stores it
  const v = parseInt(hex.slice(1), 16);
  return (0xff000000 | ((v & 0xff) << 16) | (v & 0xff00) | ((v >> 16) & 0xff)) >>> 0;
}

function rampLut(stops) { // [[share, "#rrggbb"], ...] → 201 colours, one per half-percent of agreement
  const lut = new Uint32Array(201);
  const rgb = stops.map(([at, hex]) => [at, parseInt(hex.slice(1), 16)]);
  for (let s = 0; s <= 200; s++) {
    const t = s / 200;
    let k = 0;
    while (k < rgb.length - 2 && t > rgb[k + 1][0]) k++;
    const [a0, c0] = rgb[k], [a1, c1] = rgb[Math.min(k + 1, rgb.length - 1)];
    const f = a1 > a0 ? Math.min(1, Math.max(0, (t - a0) / (a1 - a0))) : 0;
    const mix = (shift) => Math.round(((c0 >> shift) & 255) * (1 - f) + ((c1 >> shift) & 255) * f);
    lut[s] = (0xff000000 | (mix(0) << 16) | (mix(8) << 8) | mix(16)) >>> 0;
  }
  return lut;
}

function element(tag, attributes = {}, parent = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (parent) parent.appendChild(node);
  return node;
}

class MapView {
  constructor(parent) {
    this.root = element("div", { class: "dg-map", "data-testid": "doggos-map", "data-state": "loading" }, parent);
    const bar = element("div", { class: "dg-toolbar", role: "toolbar", "aria-label": "Map tools" }, this.root);
    this.modeButtons = {};
    for (const [mode, text, tip] of [
      ["pan", "Pan", "Drag to pan, scroll to zoom, click a point to open it"],
      ["lasso", "Lasso", "Draw around points to select them (a click still opens a point)"],
      ["box", "Box", "Drag a box to select points (a click still opens a point)"],
    ]) {
      const button = element("button", { type: "button", title: tip, "aria-pressed": "false" }, bar);
      button.textContent = text;
      button.addEventListener("click", () => this.setMode(mode));
      this.modeButtons[mode] = button;
    }
    const reset = element("button", { type: "button", title: "Show every point" }, bar);
    reset.textContent = "Reset view";
    reset.addEventListener("click", () => { this.fit(); this.draw(); });
    this.status = element("span", { class: "dg-status", "aria-live": "polite" }, bar);

    const body = element("div", { class: "dg-body" }, this.root);
    this.stage = element("div", { class: "dg-stage" }, body);
    this.canvas = element("canvas", { "data-testid": "doggos-map-canvas", role: "img" }, this.stage);
    this.images = element("div", { class: "dg-images" }, this.stage);
    this.sketch = element("canvas", { class: "dg-sketch" }, this.stage); // the lasso or box being drawn
    this.ring = element("div", { class: "dg-ring", hidden: "" }, this.stage);
    this.card = element("div", { class: "dg-card", "data-testid": "doggos-map-card", hidden: "" }, this.stage);
    this.cardImage = element("img", { alt: "" }, this.card);
    this.cardText = element("div", { class: "dg-card-text" }, this.card);
    this.legend = element("div", { class: "dg-legend", "aria-label": "Legend" }, body);

    this.ctx = this.canvas.getContext("2d");
    this.mode = "pan";
    this.points = null;
    this.hidden = new Uint8Array(0);
    this.selected = null; // Uint8Array mask, or null: no selection
    this.selectionVersion = undefined;
    this.imageNodes = new Map(); // row → <img> shown while zoomed in
    this.facts = new Map(); // row → facts JSON (kept: a hover back is instant)
    this.hoverRow = -1;
    this.frameMs = 0;
    this.setMode("pan");
    this.listen();
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.stage);
    this.root.doggosMap = { // for tests and benchmarks: where a point is, what is under a pixel, zoom to rows
      screenOf: (row) => this.screenOf(row),
      rowAt: (x, y) => this.pick({ clientX: x, clientY: y }, ...this.localOf(x, y)),
      zoomToRows: (rows, pad = 1.4) => this.zoomToRows(rows, pad),
      view: () => ({ ...this.view }),
    };
  }

  update(data, setTriggerValue) {
    this.trigger = setTriggerValue;
    const fresh = !this.data || this.data.points_url !== data.points_url;
    if (!this.data || this.data.point_url !== data.point_url) this.facts.clear(); // facts carry the check's verdict
    const labelsChanged = !this.data || JSON.stringify(this.data.labels) !== JSON.stringify(data.labels);
    this.data = data;
    this.root.style.setProperty("--dg-height", `${data.height}px`);
    this.colours = Uint32Array.from(data.colours, packColour);
    this.lut = rampLut(data.agreement_scale);
    if (labelsChanged) this.hidden = new Uint8Array(data.labels.length);
    if (fresh) {
      this.root.setAttribute("data-state", "loading");
      this.status.textContent = "Loading points…";
      if (!payloads.has(data.points_url)) {
        payloads.set(data.points_url, fetch(data.points_url).then((response) => {
          if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
          return response.arrayBuffer();
        }).then(parsePoints));
      }
      payloads.get(data.points_url).then((points) => {
        if (this.data.points_url !== data.points_url) return; // another map replaced this one while it loaded
        this.points = points;
        const saved = savedViews.get(data.view_key);
        if (saved && saved.hidden.length === data.labels.length) {
          this.view = { ...saved.view };
          this.hidden = saved.hidden;
        } else {
          this.fit();
        }
        this.syncSelection(this.data); // the newest data: a rerun during the load may have changed the selection
        this.drawLegend();
        this.draw();
        this.root.setAttribute("data-points", String(points.n));
        this.root.setAttribute("data-state", "ready");
      }).catch((error) => {
        payloads.delete(data.points_url);
        this.root.setAttribute("data-state", "error");
        this.status.textContent =
          `The map's points could not be loaded (${error.message}). Reload the page to try again.`;
      });
      return;
    }
    if (this.points) {
      this.syncSelection(data);
      this.drawLegend();
      this.draw();
    }
  }

  destroy() {
    this.save();
    this.resizer.disconnect();
    this.root.remove();
  }

  save() {
    if (this.data && this.points) savedViews.set(this.data.view_key, { view: { ...this.view }, hidden: this.hidden });
  }

  // The labels left out of drawing, hovering and selecting: the legend's choice in label colours; none in agreement
  // colours, whose legend (a colour ramp) could not bring them back.
  get hiddenNow() {
    if (this.data && this.data.colour_by === "agreement") {
      if (this.noneHidden?.length !== this.hidden.length) this.noneHidden = new Uint8Array(this.hidden.length);
      return this.noneHidden;
    }
    return this.hidden;
  }

  setMode(mode) {
    this.mode = mode;
    for (const [name, button] of Object.entries(this.modeButtons)) {
      button.setAttribute("aria-pressed", String(name === mode));
    }
    this.canvas.style.cursor = mode === "pan" ? "grab" : "crosshair";
  }

  // ---- geometry: data units 0..65535, y up; the view is a centre and a scale (CSS px per unit) --------------------
  size() { return { w: this.stage.clientWidth || 1, h: this.stage.clientHeight || 1 }; }

  fit() {
    const { w, h } = this.size();
    this.view = { cx: 32767.5, cy: 32767.5, k: (Math.min(w, h) * FIT_MARGIN) / 65535 };
  }

  toScreen(x, y) {
    const { w, h } = this.size();
    return [(x - this.view.cx) * this.view.k + w / 2, h / 2 - (y - this.view.cy) * this.view.k];
  }

  toData(sx, sy) {
    const { w, h } = this.size();
    return [(sx - w / 2) / this.view.k + this.view.cx, this.view.cy - (sy - h / 2) / this.view.k];
  }

  screenOf(row) {
    const [sx, sy] = this.toScreen(this.points.x[row], this.points.y[row]);
    const box = this.stage.getBoundingClientRect();
    return { x: box.left + sx, y: box.top + sy };
  }

  local(event) { return this.localOf(event.clientX, event.clientY); }

  localOf(clientX, clientY) {
    const box = this.stage.getBoundingClientRect();
    return [clientX - box.left, clientY - box.top];
  }

  zoomToRows(rows, pad) {
    const p = this.points;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const row of rows) {
      x0 = Math.min(x0, p.x[row]); x1 = Math.max(x1, p.x[row]);
      y0 = Math.min(y0, p.y[row]); y1 = Math.max(y1, p.y[row]);
    }
    const { w, h } = this.size();
    const span = Math.max(x1 - x0, y1 - y0, 64) * pad;
    this.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, k: Math.min(w, h) / span };
    this.draw();
    this.save();
  }

  // The visible point nearest to a stage pixel, within `radius` px; -1 when none.
  nearest(sx, sy, radius) {
    const p = this.points;
    if (!p) return -1;
    const [dx, dy] = this.toData(sx, sy);
    const r = radius / this.view.k;
    const clampCell = (v) => Math.max(0, Math.min(GRID_SIDE - 1, Math.floor(v) >> GRID_SHIFT));
    const cx0 = clampCell(dx - r), cx1 = clampCell(dx + r), cy0 = clampCell(dy - r), cy1 = clampCell(dy + r);
    if (dx + r < 0 || dy + r < 0 || dx - r > 65535 || dy - r > 65535) return -1;
    let best = -1, bestD = r * r;
    const hidden = this.hiddenNow;
    for (let cy = cy0; cy <= cy1; cy++) {
      for (let cx = cx0; cx <= cx1; cx++) {
        const cell = cx + cy * GRID_SIDE;
        for (let j = p.grid.start[cell]; j < p.grid.start[cell + 1]; j++) {
          const i = p.grid.order[j];
          if (hidden[p.label[i]]) continue;
          const ex = p.x[i] - dx, ey = p.y[i] - dy, d = ex * ex + ey * ey;
          if (d <= bestD) { bestD = d; best = i; } // ties: the later (drawn on top) wins
        }
      }
    }
    return best;
  }

  resize() {
    const { w, h } = this.size();
    const ratio = window.devicePixelRatio || 1;
    for (const canvas of [this.canvas, this.sketch]) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    this.pixels = null;
    if (!this.view) this.fit();
    if (this.points) this.draw();
  }

  // ---- drawing --------------------------------------------------------------------------------------------------
  draw() {
    const p = this.points;
    if (!p || !this.canvas.width) return;
    const started = performance.now();
    const W = this.canvas.width, H = this.canvas.height;
    const ratio = W / this.size().w;
    if (!this.pixels || this.pixels.width !== W || this.pixels.height !== H) {
      this.pixels = this.ctx.createImageData(W, H);
      this.words = new Uint32Array(this.pixels.data.buffer);
    }
    const words = this.words;
    words.fill(BACKGROUND);
    const k = this.view.k * ratio, ox = W / 2 - this.view.cx * k, oy = H / 2 + this.view.cy * k;
    // Dots grow as the map zooms in (from 1-3 device px by density, to 6), so a sparse view is still legible.
    const base = p.n > 300000 ? 1 : p.n > 30000 ? 2 : 3;
    const fitK = (Math.min(W, H) * FIT_MARGIN) / 65535;
    const side = Math.min(6, Math.max(base, Math.round(base * Math.sqrt(k / fitK))));
    const byAgreement = this.data.colour_by === "agreement" && p.agreement;
    const limit = this.data.image_limit;
    const inView = [];
    let counted = 0;
    // Passes: context first (unselected greyed; in agreement colours, the agreeing), what matters last, on top.
    // With neither a selection nor agreement colours one pass draws all. The loop is written out (no call per point):
    // at a million points it is most of a frame.
    const selected = this.selected, hidden = this.hiddenNow, colours = this.colours, lut = this.lut;
    const xs = p.x, ys = p.y, labels = p.label, suspect = p.suspect, agreement = p.agreement, leftOut = p.leftOut;
    const layered = Boolean(selected || byAgreement);
    for (let pass = layered ? 0 : 1; pass < 2; pass++) {
      const wantLate = pass === 1;
      for (let i = 0; i < p.n; i++) {
        const code = labels[i];
        if (hidden[code] || (leftOut && leftOut[i])) continue;
        if (layered && (selected ? selected[i] === 1 : suspect[i] === 1) !== wantLate) continue;
        const sx = (xs[i] * k + ox) | 0, sy = (oy - ys[i] * k) | 0;
        if (sx < 0 || sy < 0 || sx >= W || sy >= H) continue;
        let colour;
        if (selected && !selected[i]) colour = GREY;
        else if (byAgreement) colour = agreement[i] === NO_AGREEMENT ? GREY : lut[agreement[i]];
        else colour = colours[code % colours.length];
        const s = byAgreement && suspect[i] ? side + 1 : side;
        if (s === 1) {
          words[sy * W + sx] = colour;
        } else {
          const x1 = Math.min(W, sx + s), y1 = Math.min(H, sy + s);
          for (let yy = sy; yy < y1; yy++) {
            for (let at = yy * W + sx, end = yy * W + x1; at < end; at++) words[at] = colour;
          }
        }
        counted++;
        if (counted <= limit) inView.push(i);
      }
    }
    this.ctx.putImageData(this.pixels, 0, 0);
    this.drawImages(counted <= limit ? inView : []);
    this.frameMs = performance.now() - started;
    this.root.setAttribute("data-frame-ms", this.frameMs.toFixed(1));
    this.root.setAttribute("data-in-view", String(counted));
    const inViewText = `${counted.toLocaleString()} of ${p.n.toLocaleString()}`;
    this.canvas.setAttribute("aria-label", `Map of ${p.n.toLocaleString()} images; ${inViewText} in view`);
    const shown = this.imageNodes.size;
    this.status.textContent = shown
      ? `${shown.toLocaleString()} images in view: each drawn at its place`
      : `${inViewText} points in view · zoom in until ≤ ${limit} to see the images`;
    if (this.hoverRow >= 0) this.placeRing(this.hoverRow);
  }

  // Few enough points in view: each becomes its thumbnail, as large as its nearest neighbour allows.
  drawImages(rows) {
    const keep = new Set(rows);
    for (const [row, node] of this.imageNodes) {
      if (!keep.has(row)) { node.remove(); this.imageNodes.delete(row); }
    }
    this.root.setAttribute("data-images", String(rows.length));
    if (!rows.length) return;
    const spots = rows.map((row) => this.toScreen(this.points.x[row], this.points.y[row]));
    const { w, h } = this.size();
    const roomy = Math.min(160, Math.sqrt((w * h) / rows.length));
    rows.forEach((row, n) => {
      let gap = Infinity;
      for (let m = 0; m < spots.length; m++) {
        if (m === n) continue;
        const d = Math.max(Math.abs(spots[m][0] - spots[n][0]), Math.abs(spots[m][1] - spots[n][1]));
        if (d > 0) gap = Math.min(gap, d);
      }
      const side = Math.max(28, Math.min(roomy, gap * 0.92));
      let node = this.imageNodes.get(row);
      if (!node) {
        node = element("img", { class: "dg-thumb", "data-row": String(row), draggable: "false", decoding: "async",
                                alt: this.data.labels[this.points.label[row]] ?? "" }, this.images);
        node.src = this.data.thumb_url.replace("{row}", String(row));
        this.imageNodes.set(row, node);
      }
      node.style.width = node.style.height = `${side}px`;
      node.style.left = `${spots[n][0] - side / 2}px`;
      node.style.top = `${spots[n][1] - side / 2}px`;
      node.style.borderColor = this.cssColour(row);
    });
  }

  cssColour(row) {
    const word = this.data.colour_by === "agreement" && this.points.agreement
      ? (this.points.agreement[row] === NO_AGREEMENT ? GREY : this.lut[this.points.agreement[row]])
      : this.colours[this.points.label[row] % this.colours.length];
    return `rgb(${word & 255}, ${(word >> 8) & 255}, ${(word >> 16) & 255})`;
  }

  drawLegend() {
    const labels = this.data.labels;
    this.legend.replaceChildren();
    if (this.data.colour_by === "agreement") {
      const title = element("div", { class: "dg-legend-title" }, this.legend);
      title.textContent = "Neighbour agreement";
      const bar = element("div", { class: "dg-ramp" }, this.legend);
      const stops = this.data.agreement_scale.map(([at, c]) => `${c} ${at * 100}%`).join(", ");
      bar.style.background = `linear-gradient(to right, ${stops})`;
      const ends = element("div", { class: "dg-ramp-ends" }, this.legend);
      ends.textContent = "0 %  ·  100 %";
      const note = element("p", { class: "dg-legend-note" }, this.legend);
      note.textContent = "Share of each image's nearest neighbours filed under its own label. "
        + "Larger dots: the neighbours say another label.";
      return;
    }
    const title = element("div", { class: "dg-legend-title" }, this.legend);
    title.textContent = "Label";
    const hint = element("p", { class: "dg-legend-note" }, this.legend);
    hint.textContent = "Click to hide, double-click to show alone.";
    labels.forEach((label, code) => {
      const pressed = String(!this.hidden[code]);
      const item = element("button", { type: "button", class: "dg-legend-item", "aria-pressed": pressed }, this.legend);
      const swatch = element("span", { class: "dg-swatch" }, item);
      swatch.style.background = this.data.colours[code % this.data.colours.length];
      const text = element("span", { class: "dg-legend-label" }, item);
      text.textContent = label; // textContent: a label is data, never markup
      const count = element("span", { class: "dg-legend-count" }, item);
      count.textContent = (this.data.counts[code] ?? 0).toLocaleString();
      let pending = null;
      item.addEventListener("click", () => {
        clearTimeout(pending);
        pending = setTimeout(() => { this.hidden[code] ^= 1; this.afterLegend(); }, 250);
      });
      item.addEventListener("dblclick", () => {
        clearTimeout(pending);
        const alone = this.hidden.every((h, c) => (c === code ? !h : h));
        this.hidden.fill(alone ? 0 : 1);
        this.hidden[code] = 0;
        this.afterLegend();
      });
    });
  }

  afterLegend() {
    this.legend.querySelectorAll(".dg-legend-item").forEach(
      (item, code) => item.setAttribute("aria-pressed", String(!this.hidden[code])));
    this.draw();
    this.save();
  }

  // Python's selection, when Python changed it (a new version: cleared, or another run's); a lasso or box drawn here
  // is already applied, and the rerun it causes must not bring back the one before.
  syncSelection(data) {
    if (data.selection_version === this.selectionVersion) return;
    this.selectionVersion = data.selection_version;
    this.applySelection(data.selected);
  }

  applySelection(rows) {
    this.selected = null;
    let count = 0;
    if (rows && rows.length) {
      this.selected = new Uint8Array(this.points.n);
      for (const row of rows) {
        if (row >= 0 && row < this.points.n && !this.selected[row]) { this.selected[row] = 1; count++; }
      }
    }
    this.root.setAttribute("data-selected", String(count));
  }

  // ---- hover card -------------------------------------------------------------------------------------------------
  hover(row, sx, sy) {
    if (row === this.hoverRow) { if (row >= 0) this.placeCard(sx, sy); return; }
    this.hoverRow = row;
    if (row < 0) { this.card.hidden = true; this.ring.hidden = true; return; }
    this.cardImage.src = this.data.thumb_url.replace("{row}", String(row));
    this.cardImage.alt = this.data.labels[this.points.label[row]] ?? "";
    this.cardImage.setAttribute("data-row", String(row));
    this.showFacts(row, null);
    this.card.hidden = false;
    this.placeCard(sx, sy);
    this.placeRing(row);
    const known = this.facts.get(row);
    if (known) { this.showFacts(row, known); return; }
    fetch(this.data.point_url.replace("{row}", String(row)))
      .then((response) => (response.ok ? response.json() : null))
      .then((facts) => {
        if (!facts) return;
        if (this.facts.size > 5000) this.facts.clear();
        this.facts.set(row, facts);
        if (this.hoverRow === row) this.showFacts(row, facts);
      }).catch(() => {});
  }

  showFacts(row, facts) {
    const lines = facts ? [facts.label, facts.name, facts.verdict].filter(Boolean)
                        : [this.data.labels[this.points.label[row]] ?? ""];
    this.cardText.replaceChildren(...lines.map((line, n) => {
      const node = element("div", { class: n === 0 ? "dg-card-label" : "dg-card-line" });
      node.textContent = line;
      return node;
    }));
  }

  placeCard(sx, sy) {
    const { w, h } = this.size();
    const cw = this.card.offsetWidth || 200, ch = this.card.offsetHeight || 240;
    this.card.style.left = `${sx + 16 + cw > w ? Math.max(0, sx - 16 - cw) : sx + 16}px`;
    this.card.style.top = `${Math.max(0, Math.min(h - ch, sy - ch / 2))}px`;
  }

  placeRing(row) {
    const [sx, sy] = this.toScreen(this.points.x[row], this.points.y[row]);
    this.ring.style.left = `${sx - 7}px`;
    this.ring.style.top = `${sy - 7}px`;
    this.ring.hidden = false;
  }

  // ---- pointer: pan, zoom, click, lasso, box ----------------------------------------------------------------------
  listen() {
    const stage = this.stage;
    stage.addEventListener("wheel", (event) => {
      if (!this.points) return;
      event.preventDefault();
      const [sx, sy] = this.local(event);
      const [dx, dy] = this.toData(sx, sy);
      // Between a quarter of the whole map and 64 px per grid unit: beyond, pixel positions would overflow int32.
      const fitK = (Math.min(this.size().w, this.size().h) * FIT_MARGIN) / 65535;
      this.view.k = Math.min(64, Math.max(fitK / 4, this.view.k * Math.exp(-event.deltaY * 0.0015)));
      const [nx, ny] = this.toData(sx, sy);
      this.view.cx += dx - nx; // the point under the pointer stays under it
      this.view.cy += dy - ny;
      this.scheduleDraw();
    }, { passive: false });
    stage.addEventListener("pointerdown", (event) => {
      if (!this.points || event.button !== 0) return;
      stage.setPointerCapture(event.pointerId);
      const [sx, sy] = this.local(event);
      this.press = { sx, sy, view: { ...this.view }, path: [[sx, sy]], moved: false };
      this.card.hidden = true;
      this.hoverRow = -1; // the same point hovered after the press shows its card again
    });
    stage.addEventListener("pointermove", (event) => {
      const [sx, sy] = this.local(event);
      const press = this.press;
      if (!press) { if (this.points) this.hover(this.pick(event, sx, sy), sx, sy); return; }
      if (Math.hypot(sx - press.sx, sy - press.sy) > CLICK_SLOP_PX) press.moved = true;
      if (!press.moved) return;
      if (this.mode === "pan") {
        this.view.cx = press.view.cx - (sx - press.sx) / this.view.k;
        this.view.cy = press.view.cy + (sy - press.sy) / this.view.k;
        this.scheduleDraw();
      } else {
        press.path.push([sx, sy]);
        this.drawSketch(press);
      }
    });
    stage.addEventListener("pointerup", (event) => {
      const press = this.press;
      this.press = null;
      if (!press) return;
      const [sx, sy] = this.local(event);
      this.clearSketch();
      if (!press.moved) {
        const row = this.pick(event, sx, sy);
        if (row >= 0) this.trigger("clicked", row);
        return;
      }
      if (this.mode === "pan") { this.save(); return; }
      this.select(this.mode === "box" ? this.boxPolygon(press.sx, press.sy, sx, sy) : press.path);
    });
    const abandon = () => { this.press = null; this.clearSketch(); }; // the browser took the pointer away
    stage.addEventListener("pointercancel", abandon);
    stage.addEventListener("lostpointercapture", () => { if (this.press) abandon(); });
    stage.addEventListener("dragstart", (event) => event.preventDefault()); // a thumbnail is not dragged off the map
    stage.addEventListener("pointerleave", () => {
      if (this.press) return;
      this.hoverRow = -1;
      this.card.hidden = true;
      this.ring.hidden = true;
    });
  }

  // The point under the pointer: a drawn thumbnail there is the one (what is seen is what is hovered or opened, even
  // where another point is nearer), else the nearest dot within reach; -1 when none.
  pick(event, sx, sy) {
    const where = this.root.getRootNode();
    const hit = (where.elementFromPoint ? where : document).elementFromPoint(event.clientX, event.clientY);
    if (hit && hit.classList && hit.classList.contains("dg-thumb")) return Number(hit.getAttribute("data-row"));
    return this.nearest(sx, sy, HOVER_RADIUS_PX);
  }

  scheduleDraw() {
    if (this.pendingFrame) return;
    this.pendingFrame = requestAnimationFrame(() => { this.pendingFrame = 0; this.draw(); this.save(); });
  }

  boxPolygon(x0, y0, x1, y1) { return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]; }

  drawSketch(press) {
    const ctx = this.sketch.getContext("2d");
    const ratio = this.sketch.width / this.size().w;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, this.sketch.width, this.sketch.height);
    const [x, y] = press.path[press.path.length - 1];
    const shape = this.mode === "box" ? this.boxPolygon(press.sx, press.sy, x, y) : press.path;
    ctx.beginPath();
    shape.forEach(([px, py], n) => (n ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
    ctx.closePath();
    ctx.fillStyle = "rgba(180, 83, 9, 0.10)";
    ctx.strokeStyle = "#b45309";
    ctx.lineWidth = 1.5;
    ctx.setLineDash([5, 4]);
    ctx.fill();
    ctx.stroke();
  }

  clearSketch() { this.sketch.getContext("2d").clearRect(0, 0, this.sketch.width, this.sketch.height); }

  select(polygon) {
    if (polygon.length < 3) return;
    const p = this.points;
    const shape = polygon.map(([sx, sy]) => this.toData(sx, sy));
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of shape) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    const rows = [], hidden = this.hiddenNow;
    for (let i = 0; i < p.n; i++) {
      if (hidden[p.label[i]] || (p.leftOut && p.leftOut[i])) continue;
      const x = p.x[i], y = p.y[i];
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      if (pointInPolygon(x, y, shape)) rows.push(i);
    }
    this.applySelection(rows);
    this.draw();
    this.trigger("selected", rows);
  }
}

const views = new WeakMap(); // the component's host element → its MapView

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let view = views.get(parentElement);
  if (!view) {
    view = new MapView(parentElement);
    views.set(parentElement, view);
  }
  view.update(data, setTriggerValue);
  return () => {
    view.destroy();
    views.delete(parentElement);
  };
}
