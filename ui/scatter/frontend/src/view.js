// The scatter in the browser: every point drawn with regl-scatterplot (WebGL); colour, size,
// opacity, the filter and the selection applied here; box, lasso and click selections computed
// here over every point; only the selected rows go back to the server.
import createScatterplot from 'regl-scatterplot';

import { encodeRows, maskFromBits } from './encoding.js';
import { rowsInBox, rowsInPolygon } from './geometry.js';
import { serverRoot } from './protocol.js';

const FILTERED_COLOUR = '#bbbbbb';
const MISSING_COLOUR = '#999999';
const SCALE_STEPS = 256;
// A continuous colour comes as uint16 codes: its position between min and max in 65,535 steps
// (code >> 8 is its step of the scale), 65,535 where the value is missing (ui/scatter/encoding.py).
const VALUE_MISSING = 65535;
// Point states, the value channel B of every point: its opacity and size come from these.
const NORMAL = 0;
const UNSELECTED = 1; // a selection exists and the point is not in it
const FILTERED = 2; // outside the filters: grey, small, not selectable
const SELECTED = 3;
const DIMMED_OPACITY = 0.12;
const LEGEND_WIDTH = 190;
const AXIS_LEFT = 52;
const AXIS_BOTTOM = 40;
/** Until the next frame has been drawn and handed to the compositor. */
const frames = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
const TYPES = { float32: Float32Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, utf8: Uint8Array };

/** A linear scale with the part of d3-scale's interface regl-scatterplot uses (domain, range),
 * which it keeps in step with the camera: invert() turns a pixel into data coordinates. */
function linearScale(d0, d1) {
  let domain = [d0, d1];
  let range = [0, 1];
  const scale = (v) => range[0] + ((v - domain[0]) / (domain[1] - domain[0])) * (range[1] - range[0]);
  scale.domain = (d) => {
    if (d === undefined) return [...domain];
    domain = [...d];
    return scale;
  };
  scale.range = (r) => {
    if (r === undefined) return [...range];
    range = [...r];
    return scale;
  };
  scale.invert = (p) => domain[0] + ((p - range[0]) / (range[1] - range[0])) * (domain[1] - domain[0]);
  scale.copy = () => linearScale(...domain).range(range);
  return scale;
}

function hexToRgb(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

/** ``steps`` colours interpolated along the colour scale's anchor colours. */
function interpolateScale(anchors, steps) {
  const rgb = anchors.map(hexToRgb);
  const out = [];
  for (let i = 0; i < steps; i++) {
    const t = (i / (steps - 1)) * (rgb.length - 1);
    const k = Math.min(Math.floor(t), rgb.length - 2);
    const f = t - k;
    const c = rgb[k].map((v, j) => Math.round(v + (rgb[k + 1][j] - v) * f));
    out.push(`#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`);
  }
  return out;
}

function niceTicks(lo, hi, count = 6) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(12));
  return ticks;
}

function formatNumber(value) {
  if (!Number.isFinite(value)) return 'missing';
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return `${+value.toPrecision(4)}`;
}

function element(tag, attributes = {}, parent = null, namespace = null) {
  const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (parent) parent.appendChild(node);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';

/** The blob of a colour's column: codes of categories, or codes of values on a scale. */
const colourBlob = (colour) => (colour.kind === 'categories' ? colour.codes : colour.values);

export class ScatterView {
  constructor(root, { onValue, onHeight }) {
    this.root = root;
    this.onValue = onValue; // the component's value for the server: a selection, or a colour chosen here
    this.onHeight = onHeight;
    this.blobs = new Map(); // url -> Promise<typed array>, only the current arguments' columns
    this.lazy = {}; // name -> { url, value }: the columns fetched on the first hover
    // started: when this script ran (epoch ms); the page's navigation start is performance.timeOrigin
    this.stats = { renders: 0, frames: 0, fetches: [], draws: [], selections: [], started: Date.now(), timeOrigin: performance.timeOrigin };
    this.sequence = 0;
    this.drawing = Promise.resolve();
    this.tool = 'lasso';
    this.hovered = -1;
    this.counter = 0;
    this.session = Math.random().toString(36).slice(2, 10);
    this.build();
  }

  build() {
    this.root.classList.add('scatter');
    this.plotArea = element('div', { class: 'plot' }, this.root);
    this.canvas = element('canvas', {}, this.plotArea);
    this.overlay = element('svg', { class: 'overlay' }, this.plotArea, SVG);
    this.axesLayer = element('g', { class: 'axes' }, this.overlay, SVG);
    this.shapesLayer = element('g', { class: 'shapes' }, this.overlay, SVG);
    this.dragShape = element('path', { class: 'drag-shape' }, this.overlay, SVG);
    this.toolbar = element('div', { class: 'toolbar', role: 'toolbar' }, this.plotArea);
    this.toolButtons = {};
    for (const [tool, label, title] of [['pan', '✥', 'Pan and zoom'], ['box', '▭', 'Box select'],
      ['lasso', '◌', 'Lasso select']]) {
      const button = element('button', { type: 'button', title, 'aria-label': title, 'data-tool': tool }, this.toolbar);
      button.textContent = label;
      button.addEventListener('click', () => this.setTool(tool));
      this.toolButtons[tool] = button;
    }
    const reset = element('button', { type: 'button', title: 'Reset the view', 'aria-label': 'Reset the view' }, this.toolbar);
    reset.textContent = '⟲';
    reset.addEventListener('click', () => this.plot && this.plot.reset());
    this.tooltip = element('div', { class: 'tooltip', role: 'tooltip' }, this.plotArea);
    this.message = element('div', { class: 'message' }, this.plotArea);
    this.legend = element('div', { class: 'legend' }, this.root);
    this.setTool(this.tool);
    this.listen();
  }

  setTool(tool) {
    this.tool = tool;
    for (const [name, button] of Object.entries(this.toolButtons)) button.classList.toggle('active', name === tool);
    this.plotArea.dataset.tool = tool;
  }

  // ------------------------------------------------------------------ arguments from Python

  /** The typed array of a column the server serves at ``blob.url`` (its content address):
   * fetched once, the same array on every render that names it. */
  fetchBlob(name, blob) {
    if (!this.blobs.has(blob.url)) {
      const started = performance.now();
      // "Range: bytes=0-" asks for the whole file as a partial response, which the server's
      // gzip (level 9, on every request) leaves alone: compressing 8 MB of float32 took seconds
      // and saved a tenth.
      const promise = fetch(serverRoot() + blob.url, { headers: { Range: 'bytes=0-' } }).then(async (response) => {
        if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${name}`);
        const buffer = await response.arrayBuffer();
        this.stats.fetches.push({ name, bytes: buffer.byteLength, ms: Math.round(performance.now() - started) });
        const values = new TYPES[blob.dtype](buffer);
        if (blob.dtype !== 'utf8' && values.length !== blob.length) {
          throw new Error(`${name}: ${values.length} values, expected ${blob.length}`);
        }
        return values;
      });
      promise.catch(() => this.blobs.delete(blob.url));
      this.blobs.set(blob.url, promise);
    }
    return this.blobs.get(blob.url);
  }

  async update(args) {
    const sequence = ++this.sequence;
    const received = Date.now();
    this.stats.renders += 1;
    this.args = args;
    this.onHeight(args.height);
    const wanted = { points: args.points, visible: args.visible, selected: args.selected };
    wanted.colour = colourBlob(args.colour);
    if (args.labels) wanted.labels = args.labels.codes;
    const inline = wanted.colour.inline && args.colour_bytes;
    if (inline && !this.blobs.has(wanted.colour.url)) { // a new colour column, inside the render message
      const bytes = inline.slice(); // its own buffer, aligned for the column's type
      const values = new TYPES[wanted.colour.dtype](bytes.buffer);
      if (values.length === wanted.colour.length) { // (otherwise fetched by its address, and checked)
        this.blobs.set(wanted.colour.url, Promise.resolve(values));
        this.stats.fetches.push({ name: 'colour', bytes: bytes.byteLength, ms: 0, inline: true });
      }
    }
    const urls = new Set(Object.values(wanted).filter(Boolean).map((b) => b.url));
    if (args.hover) urls.add(args.hover.url);
    if (args.colour.exact) urls.add(args.colour.exact.url);
    for (const option of args.colour_options || []) urls.add(colourBlob(option).url); // kept once fetched
    for (const url of [...this.blobs.keys()]) if (!urls.has(url)) this.blobs.delete(url);
    let loaded;
    try {
      const names = Object.keys(wanted).filter((name) => wanted[name]);
      const arrays = await Promise.all(names.map((name) => this.fetchBlob(name, wanted[name])));
      loaded = Object.fromEntries(names.map((name, i) => [name, arrays[i]]));
    } catch (error) {
      if (sequence === this.sequence) this.showMessage(`Could not load the points: ${error.message}`);
      return;
    }
    if (sequence !== this.sequence) return; // a newer render arrived meanwhile
    const fetched = Date.now();
    this.showMessage('');
    this.loaded = loaded;
    await this.queueApply(args, loaded, { received, fetched });
  }

  queueApply(args, loaded, times) {
    this.drawing = this.drawing.then(() => this.apply(args, loaded, times)).catch((error) => {
      this.showMessage(`Could not draw the points: ${error.message}`);
      throw error;
    });
    return this.drawing;
  }

  /** A column chosen in the legend's colour menu: fetched by its address (once), drawn here, and
   * only then told to the server, whose rerun sets the page's own "Colour by" to it (and sends
   * nothing the browser has: the column's digest goes with the choice). */
  async chooseColour(title) {
    const option = (this.args.colour_options || []).find((o) => o.title === title);
    if (!option || !this.loaded) return;
    const received = Date.now();
    const sequence = this.sequence;
    this.counter += 1;
    const value = { nonce: `${this.session}-${this.counter}`, kind: 'colour', colour: title, digest: option.digest };
    let values;
    try {
      values = await this.fetchBlob('colour', colourBlob(option));
    } catch (error) {
      this.showMessage(`Could not load the colours: ${error.message}`);
      this.onValue(value); // the server sends them with its next render
      return;
    }
    if (sequence !== this.sequence) { // a newer render from the server meanwhile: its colour stands
      this.legendKey = null;
      this.renderLegend(this.args, this.visible);
      return;
    }
    const args = { ...this.args, colour: option };
    this.args = args;
    this.loaded = { ...this.loaded, colour: values };
    await this.queueApply(args, this.loaded, { received, fetched: Date.now(), local: true }).catch(() => {});
    this.onValue(value);
  }

  showMessage(text) {
    this.message.textContent = text;
    this.message.style.display = text ? 'block' : 'none';
  }

  /** The plot area's size in CSS pixels (the legend and the axes take the rest). */
  plotSize() {
    const width = Math.max(200, window.innerWidth - LEGEND_WIDTH);
    return { width, height: this.args.height };
  }

  async apply(args, loaded, times) {
    const started = performance.now();
    const n = args.n;
    const { width, height } = this.plotSize();
    const axes = args.axes;
    this.plotArea.style.width = `${width}px`;
    this.plotArea.style.height = `${height}px`;
    this.plotArea.classList.toggle('with-axes', Boolean(axes));
    const canvasLeft = axes ? AXIS_LEFT : 0;
    const canvasWidth = width - canvasLeft;
    const canvasHeight = axes ? height - AXIS_BOTTOM : height;
    Object.assign(this.canvas.style, { left: `${canvasLeft}px`, width: `${canvasWidth}px`, height: `${canvasHeight}px` });
    this.canvasBox = { left: canvasLeft, width: canvasWidth, height: canvasHeight };

    const pointsChanged = loaded.points !== this.xy;
    if (pointsChanged) this.setPoints(loaded.points, args, canvasWidth, canvasHeight);
    if (!this.plot) this.createPlot(canvasWidth, canvasHeight, args);
    else if (canvasWidth !== this.plotWidth || canvasHeight !== this.plotHeight) {
      this.plot.set({ width: canvasWidth, height: canvasHeight, aspectRatio: axes ? canvasWidth / canvasHeight : 1 });
    }
    this.plotWidth = canvasWidth;
    this.plotHeight = canvasHeight;

    if (loaded.visible !== this.visibleSource) {
      this.visible = loaded.visible ? maskFromBits(loaded.visible, n) : null;
      this.visibleSource = loaded.visible;
    }
    const visible = this.visible;
    this.labels = loaded.labels || null;
    this.colourArray = loaded.colour;
    const palette = this.palette(args.colour);
    const colourKey = `${args.colour.kind}:${args.colour.title}:${palette.length}`;
    const zChanged = pointsChanged || loaded.colour !== this.zSource || loaded.visible !== this.zVisible
      || colourKey !== this.colourKey;
    if (zChanged) {
      this.z = this.colourIndices(args.colour, loaded.colour, visible, palette.length - 1);
      this.zSource = loaded.colour;
      this.zVisible = loaded.visible;
      this.colourKey = colourKey;
    }
    const wChanged = pointsChanged || loaded.visible !== this.wVisible || loaded.selected !== this.wSelected;
    if (wChanged) {
      this.w = this.states(n, visible, loaded.selected ? maskFromBits(loaded.selected, n) : null);
      this.wVisible = loaded.visible;
      this.wSelected = loaded.selected;
    }
    // set() redraws every point: only when the palette, opacity or size changed
    const look = JSON.stringify([palette, args.opacity, args.size]);
    const lookChanged = look !== this.look;
    if (lookChanged) {
      // awaited: its colour texture and renderer refresh happen before the points are updated,
      // so both reach the screen in one frame (not awaited, the first recolour paid ~0.8 s more)
      await this.plot.set({
        pointColor: palette,
        opacity: [args.opacity, DIMMED_OPACITY, DIMMED_OPACITY, 1],
        pointSize: [args.size, args.size, Math.max(args.size * 0.6, 1.5), args.size],
      });
      this.look = look;
    }
    if (zChanged || wChanged) await this.draw(pointsChanged, zChanged, wChanged);
    const drawn = performance.now();
    const drawnAt = Date.now();
    if (pointsChanged && args.layout !== this.layoutKey) this.plot.reset();
    this.layoutKey = args.layout;
    if (this.pending) { // the server's answer to the last selection: its shape goes
      this.pending = false;
      if (!this.shape) this.dragShape.setAttribute('d', '');
    }
    this.renderLegend(args, visible);
    this.renderAxes();
    this.root.dataset.drawn = String(n);
    this.root.dataset.colour = args.colour.title;
    this.root.dataset.selected = String(this.selectedCount);
    this.root.dataset.renders = String(this.stats.renders);
    if (zChanged || wChanged || lookChanged) await frames();
    // received: when the render message came; fetched: when its columns were at hand; drawn: when
    // regl-scatterplot had drawn the points; done: two animation frames later, when the page has
    // put the frame on screen (epoch ms). ms: this method, of it draw_ms until drawn. frames:
    // regl-scatterplot's frames so far.
    this.stats.draws.push({ ms: Math.round(performance.now() - started), draw_ms: Math.round(drawn - started),
      points: pointsChanged, colour: zChanged, states: wChanged, ...times, drawn: drawnAt, done: Date.now(),
      frames: this.stats.frames });
  }

  setPoints(xy, args, width, height) {
    const n = args.n;
    const x = new Float32Array(n);
    const y = new Float32Array(n);
    let xlo = Infinity;
    let xhi = -Infinity;
    let ylo = Infinity;
    let yhi = -Infinity;
    for (let r = 0; r < n; r++) {
      const px = xy[2 * r];
      const py = xy[2 * r + 1];
      x[r] = px;
      y[r] = py;
      if (px < xlo) xlo = px;
      if (px > xhi) xhi = px;
      if (py < ylo) ylo = py;
      if (py > yhi) yhi = py;
    }
    if (!(xhi > xlo)) [xlo, xhi] = [xlo - 1, xlo + 1];
    if (!(yhi > ylo)) [ylo, yhi] = [ylo - 1, ylo + 1];
    let xDomain;
    let yDomain;
    if (args.axes) { // two scores against each other: each axis its own range
      xDomain = args.axes.x_range || [xlo, xhi];
      yDomain = args.axes.y_range || [ylo, yhi];
    } else {
      // A map: one unit on both axes. At the start the canvas shows the normalised [-1, 1]
      // vertically and [-w/h, w/h] horizontally: the whole cloud fits, with a margin.
      const half = Math.max((yhi - ylo) / 2, (xhi - xlo) / 2 / (width / height)) * 1.04;
      const cx = (xlo + xhi) / 2;
      const cy = (ylo + yhi) / 2;
      xDomain = [cx - half, cx + half];
      yDomain = [cy - half, cy + half];
    }
    const nx = new Float32Array(n);
    const ny = new Float32Array(n);
    const sx = 2 / (xDomain[1] - xDomain[0]);
    const sy = 2 / (yDomain[1] - yDomain[0]);
    for (let r = 0; r < n; r++) {
      nx[r] = (x[r] - xDomain[0]) * sx - 1;
      ny[r] = (y[r] - yDomain[0]) * sy - 1;
    }
    this.xy = xy;
    this.x = x;
    this.y = y;
    this.nx = nx;
    this.ny = ny;
    this.xDomain = xDomain;
    this.yDomain = yDomain;
    this.spatialIndex = null;
    this.rows = null;
    if (this.plot) this.plot.set({ xScale: linearScale(...xDomain), yScale: linearScale(...yDomain) });
  }

  createPlot(width, height, args) {
    this.plot = createScatterplot({
      canvas: this.canvas,
      width,
      height,
      aspectRatio: args.axes ? width / height : 1,
      backgroundColor: '#ffffff',
      xScale: linearScale(...this.xDomain),
      yScale: linearScale(...this.yDomain),
      colorBy: 'valueA',
      opacityBy: 'valueB',
      sizeBy: 'valueB',
      pointColorHover: '#222222',
      keyMap: {}, // no modifier-key lasso: the toolbar chooses the tool
      deselectOnDblClick: false,
      deselectOnEscape: false,
      showReticle: false,
      lassoOnLongPress: false,
      // Build the spatial index here, not in a worker: regl-scatterplot sends a worker its
      // points as a million small arrays (a structured clone of 0.7-1.6 s at 1M points), longer
      // than building the index here (0.2-0.45 s).
      spatialIndexUseWorker: false,
    });
    this.plot.subscribe('pointOver', (row) => this.hover(row));
    this.plot.subscribe('pointOut', () => this.hover(-1));
    this.plot.subscribe('view', () => this.renderAxes());
    this.plot.subscribe('draw', () => { this.stats.frames += 1; });
  }

  /** Hands the points to regl-scatterplot as the rows it keeps ([x, y, colour, state] each):
   * made once per layout, then only the colour or the state of each row changes in place, and
   * the spatial index is kept (a million new rows and their garbage took most of a recolour). */
  async draw(pointsChanged, zChanged = true, wChanged = true) {
    const { nx, ny, z, w } = this;
    const n = nx.length;
    if (pointsChanged || !this.rows) {
      const rows = new Array(n);
      for (let r = 0; r < n; r++) rows[r] = [nx[r], ny[r], z[r], w[r]];
      this.rows = rows;
    } else {
      const rows = this.rows;
      if (zChanged) for (let r = 0; r < n; r++) rows[r][2] = z[r];
      if (wChanged) for (let r = 0; r < n; r++) rows[r][3] = w[r];
    }
    const options = { zDataType: 'categorical', wDataType: 'categorical', preventFilterReset: true };
    if (!pointsChanged && this.spatialIndex) options.spatialIndex = this.spatialIndex;
    await this.plot.draw(this.rows, options);
    this.spatialIndex = this.plot.get('spatialIndex');
  }

  palette(colour) {
    if (colour.kind === 'categories') return [...colour.colours, FILTERED_COLOUR];
    return [...interpolateScale(colour.scale, SCALE_STEPS), MISSING_COLOUR, FILTERED_COLOUR];
  }

  /** Each point's colour: an index into the palette (the last entry: filtered out). */
  colourIndices(colour, values, visible, filteredIndex) {
    const n = values.length;
    const z = new Float32Array(n);
    if (colour.kind === 'categories') {
      for (let r = 0; r < n; r++) z[r] = values[r];
    } else { // uint16 codes: 256 steps of the scale, then the missing colour
      for (let r = 0; r < n; r++) {
        const code = values[r];
        z[r] = code === VALUE_MISSING ? SCALE_STEPS : code >> 8;
      }
    }
    if (visible) for (let r = 0; r < n; r++) if (!visible[r]) z[r] = filteredIndex;
    return z;
  }

  states(n, visible, selected) {
    const w = new Float32Array(n);
    let count = 0;
    if (selected) for (let r = 0; r < n; r++) count += selected[r];
    this.selectedCount = count;
    for (let r = 0; r < n; r++) {
      if (visible && !visible[r]) w[r] = FILTERED;
      else if (count === 0) w[r] = NORMAL;
      else w[r] = selected[r] ? SELECTED : UNSELECTED;
    }
    return w;
  }

  // ------------------------------------------------------------------ selection

  listen() {
    // In the box and lasso tools a drag draws the shape instead of panning: the mouse press
    // never reaches regl-scatterplot's camera. Clicks are ours in every tool.
    this.plotArea.addEventListener('mousedown', (event) => {
      if (event.button !== 0 || event.target.closest('.toolbar')) return;
      this.pressed = this.pixel(event);
      this.travel = 0; // how far the mouse went from the press: under 4 pixels, a click
      if (this.tool === 'pan') return;
      event.stopPropagation();
      this.shape = [this.pressed];
    }, true);
    // Capture phase on the window: while a shape is drawn, regl-scatterplot never sees the mouse
    // move, so it does not look for a hovered point and redraw every point at each move.
    window.addEventListener('mousemove', (event) => {
      if (!this.pressed) return;
      const point = this.pixel(event);
      this.travel = Math.max(this.travel, Math.hypot(point[0] - this.pressed[0], point[1] - this.pressed[1]));
      this.hover(this.hovered); // keeps the tooltip away while dragging
      if (!this.shape) return;
      event.stopPropagation();
      if (this.tool === 'box') this.shape = [this.shape[0], point];
      else this.shape.push(point);
      this.drawShape();
    }, true);
    window.addEventListener('mouseup', (event) => {
      if (!this.pressed) return;
      const start = this.pressed;
      const end = this.pixel(event);
      const shape = this.shape;
      this.pressed = null;
      this.shape = null;
      if (!this.pending) this.dragShape.setAttribute('d', '');
      if (this.travel < 4) this.click();
      else if (shape) this.select(this.tool, this.tool === 'box' ? [start, end] : [...shape, end]);
    });
    this.plotArea.addEventListener('click', (event) => {
      if (!event.target.closest('.toolbar')) event.stopPropagation(); // not regl-scatterplot's own click selection
    }, true);
    this.plotArea.addEventListener('dblclick', (event) => {
      if (event.target.closest('.toolbar')) return;
      event.stopPropagation();
      if (this.plot) this.plot.reset();
    }, true);
    window.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.shape) {
        this.shape = null;
        this.pressed = null;
        this.dragShape.setAttribute('d', '');
      }
    });
    window.addEventListener('resize', () => {
      if (this.args && this.plot) this.update(this.args);
    });
  }

  /** The mouse position in pixels of the canvas. */
  pixel(event) {
    const box = this.canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  /** Data coordinates of a canvas pixel, in the current view. */
  dataAt(px, py) {
    return [this.plot.get('xScale').invert(px), this.plot.get('yScale').invert(py)];
  }

  /** Canvas pixel of data coordinates, in the current view. */
  pixelOf(x, y) {
    return [this.plot.get('xScale')(x), this.plot.get('yScale')(y)];
  }

  /** The SVG path of a box (two corners) or a lasso drawn in canvas pixels. */
  shapePath(kind, pixels) {
    const points = kind === 'box' && pixels.length === 2
      ? [pixels[0], [pixels[1][0], pixels[0][1]], pixels[1], [pixels[0][0], pixels[1][1]]]
      : pixels;
    const left = this.canvasBox.left;
    return `M${points.map(([x, y]) => `${x + left},${y}`).join('L')}Z`;
  }

  drawShape() {
    this.dragShape.setAttribute('class', 'drag-shape');
    this.dragShape.setAttribute('d', this.shapePath(this.tool, this.shape));
  }

  /** Rows inside a box or lasso drawn in canvas pixels, among the points the filters leave. */
  rowsInShape(kind, pixels) {
    const corners = pixels.map(([px, py]) => this.dataAt(px, py));
    // the shape in data coordinates, for the browser tests' geometric truth
    this.lastShape = { kind, x: corners.map((c) => c[0]), y: corners.map((c) => c[1]) };
    if (kind === 'box') {
      const [[x0, y0], [x1, y1]] = corners;
      return rowsInBox(this.x, this.y, this.visible, x0, x1, y0, y1);
    }
    return rowsInPolygon(this.x, this.y, this.visible, corners.map((c) => c[0]), corners.map((c) => c[1]));
  }

  select(kind, pixels) {
    if (!this.plot) return;
    this.send(kind, this.rowsInShape(kind, pixels), this.shapePath(kind, pixels));
  }

  click() {
    if (this.hovered < 0 || (this.visible && !this.visible[this.hovered])) return;
    const [px, py] = this.pixelOf(this.x[this.hovered], this.y[this.hovered]);
    const x = px + this.canvasBox.left;
    this.send('click', Uint32Array.of(this.hovered), `M${x - 7},${py}a7,7 0 1,0 14,0a7,7 0 1,0 -14,0`);
  }

  /** Tell the server; its next render brings the selection as the server keeps it (the mode
   * applied there, once), and the points are redrawn then. Until then the shape stays on screen,
   * in the colour of the mode: redrawing a million points here first (software WebGL: about a
   * second) would only hold up the page that shows the selection. */
  send(kind, rows, shape) {
    const mode = this.args.mode || 'Replace';
    this.dragShape.setAttribute('d', shape);
    this.dragShape.setAttribute('class', `drag-shape pending ${mode.toLowerCase()}`);
    this.pending = true;
    this.counter += 1;
    this.onValue({ nonce: `${this.session}-${this.counter}`, kind, mode, rows: encodeRows(rows, this.args.n) });
    this.stats.selections.push({ kind, rows: rows.length, sent: Date.now() });
  }

  // ------------------------------------------------------------------ hover, legend, axes

  hover(row) {
    this.hovered = row;
    if (row < 0 || this.pressed || (this.visible && !this.visible[row])) {
      this.tooltip.style.display = 'none';
      return;
    }
    const args = this.args;
    const lines = [];
    const text = this.hoverText(row);
    lines.push(text === null ? `row ${row}` : text);
    if (this.labels && args.labels) lines.push(`label: ${args.labels.names[this.labels[row]]}`);
    if (args.colour.kind === 'values') {
      const value = this.exactValue(row);
      lines.push(`${args.colour.title}: ${value === null ? '…' : formatNumber(value)}`);
    } else if (!args.labels || args.colour.title !== 'label') lines.push(`${args.colour.title}: ${args.colour.names[this.colourArray[row]]}`);
    this.tooltip.replaceChildren(...lines.map((line, i) => {
      const div = document.createElement('div');
      div.textContent = line;
      if (i === 0) div.className = 'first';
      return div;
    }));
    const [px, py] = this.pixelOf(this.x[row], this.y[row]);
    const left = px + this.canvasBox.left;
    Object.assign(this.tooltip.style, {
      display: 'block',
      left: `${Math.min(left + 12, this.plotSize().width - 260)}px`,
      top: `${Math.max(py - 12, 0)}px`,
    });
  }

  /** A column fetched on the first hover, never to draw: ``parse``d once per address, null until
   * it has come (the tooltip is drawn again then). */
  lazyColumn(name, blob, parse = (values) => values) {
    if (!blob) return null;
    const entry = this.lazy[name];
    if (entry && entry.url === blob.url) return entry.value;
    const fresh = { url: blob.url, value: null };
    this.lazy[name] = fresh;
    this.fetchBlob(name, blob).then((values) => {
      if (this.lazy[name] !== fresh) return;
      fresh.value = parse(values);
      if (this.hovered >= 0) this.hover(this.hovered);
    }).catch(() => { if (this.lazy[name] === fresh) delete this.lazy[name]; }); // the next hover tries again
    return null;
  }

  /** The hovered point's text (its id, and the start of its text on small runs): the text of
   * all points is fetched on the first hover, never with the points. */
  hoverText(row) {
    const lines = this.lazyColumn('hover', this.args.hover, (bytes) => {
      const starts = [0];
      for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) starts.push(i + 1);
      return { bytes, starts, decoder: new TextDecoder() };
    });
    if (!lines) return null;
    const { bytes, starts, decoder } = lines;
    if (row >= starts.length) return null;
    const end = row + 1 < starts.length ? starts[row + 1] - 1 : bytes.length;
    return decoder.decode(bytes.subarray(starts[row], end));
  }

  /** The hovered point's colour value, exact (float32; the colours come as uint16 codes). */
  exactValue(row) {
    const values = this.lazyColumn('exact', this.args.colour.exact);
    return values ? values[row] : null;
  }

  renderLegend(args, visible) {
    const colour = args.colour;
    const options = (args.colour_options || []).map((o) => o.title);
    const key = JSON.stringify([colour.kind, colour.title, colour.names, colour.colours, colour.min, colour.max,
      Boolean(visible), options]);
    if (key === this.legendKey) return;
    this.legendKey = key;
    const title = this.legendTitle(colour.title, options);
    const items = [];
    if (colour.kind === 'categories') {
      colour.names.forEach((name, i) => items.push(this.legendItem(colour.colours[i], name)));
    } else {
      const bar = document.createElement('div');
      bar.className = 'colour-bar';
      bar.style.background = `linear-gradient(to top, ${colour.scale.join(', ')})`;
      const ticks = document.createElement('div');
      ticks.className = 'colour-ticks';
      for (const value of [colour.max, (colour.min + colour.max) / 2, colour.min]) {
        const tick = document.createElement('span');
        tick.textContent = formatNumber(value);
        ticks.appendChild(tick);
      }
      const scale = document.createElement('div');
      scale.className = 'colour-scale';
      scale.append(bar, ticks);
      items.push(scale);
      if (colour.missing) items.push(this.legendItem(MISSING_COLOUR, 'missing'));
    }
    if (visible) items.push(this.legendItem(FILTERED_COLOUR, 'filtered out'));
    this.legend.replaceChildren(title, ...items);
  }

  /** The legend's title: the colour's name, or a menu of the columns to colour by. */
  legendTitle(current, options) {
    if (!options.includes(current)) {
      const title = document.createElement('div');
      title.className = 'legend-title';
      title.textContent = current;
      return title;
    }
    const label = document.createElement('label');
    label.className = 'legend-title legend-menu';
    const caption = document.createElement('span');
    caption.textContent = 'Colour by';
    const menu = document.createElement('select');
    menu.className = 'colour-menu';
    menu.setAttribute('aria-label', 'Colour by');
    for (const name of options) {
      const option = document.createElement('option');
      option.value = name;
      option.textContent = name;
      option.selected = name === current;
      menu.appendChild(option);
    }
    menu.addEventListener('change', () => this.chooseColour(menu.value));
    label.append(caption, menu);
    return label;
  }

  legendItem(colour, name) {
    const item = document.createElement('div');
    item.className = 'legend-item';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = colour;
    const text = document.createElement('span');
    text.className = 'legend-text';
    text.textContent = name;
    item.append(swatch, text);
    return item;
  }

  /** Axes (two scores against each other), reference lines and labels, in data coordinates. */
  renderAxes() {
    const args = this.args;
    if (!this.plot || !args) return;
    this.axesLayer.replaceChildren();
    this.shapesLayer.replaceChildren();
    const { left, width, height } = this.canvasBox;
    const xScale = this.plot.get('xScale');
    const yScale = this.plot.get('yScale');
    if (args.axes) {
      const [x0, x1] = xScale.domain();
      const [y0, y1] = yScale.domain();
      element('line', { x1: left, y1: height, x2: left + width, y2: height, class: 'axis' }, this.axesLayer, SVG);
      element('line', { x1: left, y1: 0, x2: left, y2: height, class: 'axis' }, this.axesLayer, SVG);
      for (const t of niceTicks(Math.min(x0, x1), Math.max(x0, x1))) {
        const px = left + xScale(t);
        if (px < left || px > left + width) continue;
        element('line', { x1: px, y1: 0, x2: px, y2: height, class: 'grid' }, this.axesLayer, SVG);
        element('text', { x: px, y: height + 15, class: 'tick', 'text-anchor': 'middle' }, this.axesLayer, SVG)
          .textContent = formatNumber(t);
      }
      for (const t of niceTicks(Math.min(y0, y1), Math.max(y0, y1))) {
        const py = yScale(t);
        if (py < 0 || py > height) continue;
        element('line', { x1: left, y1: py, x2: left + width, y2: py, class: 'grid' }, this.axesLayer, SVG);
        element('text', { x: left - 6, y: py + 4, class: 'tick', 'text-anchor': 'end' }, this.axesLayer, SVG)
          .textContent = formatNumber(t);
      }
      element('text', { x: left + width / 2, y: height + 34, class: 'axis-title', 'text-anchor': 'middle' }, this.axesLayer, SVG)
        .textContent = args.axes.x;
      element('text', { x: 12, y: height / 2, class: 'axis-title', 'text-anchor': 'middle',
        transform: `rotate(-90 12 ${height / 2})` }, this.axesLayer, SVG).textContent = args.axes.y;
    }
    for (const line of args.lines || []) {
      element('line', { x1: left + xScale(line.x0), y1: yScale(line.y0), x2: left + xScale(line.x1),
        y2: yScale(line.y1), class: 'reference' }, this.shapesLayer, SVG);
    }
    for (const note of args.annotations || []) {
      const label = element('text', { x: left + xScale(note.x), y: yScale(note.y) + (note.dy || 0),
        class: 'annotation', 'text-anchor': 'middle' }, this.shapesLayer, SVG);
      label.textContent = note.text;
    }
  }
}
