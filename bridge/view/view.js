// eeg-bridge live page: spectrograms, an all-channels overview, markers and the bridge's status.
// Plain canvas, no libraries, nothing fetched from elsewhere. Wire format: bridge/codecs/view.py.
// Axis mappings are published as data attributes on each canvas, so that a test (or a curious
// user) can turn a pixel into Hz or seconds without trusting this script's drawing.
"use strict";

(function () {
  const KIND_FRAME = 1, FLAG_BANDS = 1, FLAG_QUALITY = 2, HEADER = 32, LEVELS = 254, NOT_FINITE = 255;
  const MARGIN = { left: 52, right: 12, top: 6, bottom: 22 };
  const SPEC_HEIGHT = 170;
  const QUALITY_COLOURS = ["#3fb950", "#d29922", "#f85149"];
  // matplotlib's inferno at 0, 0.1, ..., 1: brightness rises monotonically with the value.
  const INFERNO = ["000004", "160b39", "420a68", "6a176e", "932667", "bc3754", "dd513a", "f37819", "fca50a", "f6d746", "fcffa4"];

  const $ = (id) => document.getElementById(id);
  const state = {
    layout: null, frames: [], markers: [], views: new Map(), selected: [], paused: false,
    socketOpen: false, stream: null, streamSeen: false,
    dt: null, columns: 0, range: [0, 1], historyDone: false, ws: null, retry: 1000, authFailed: false,
    received: 0,
  };

  // ---- colour ------------------------------------------------------------------------------------
  const LUT = (function () {
    const stops = INFERNO.map((h) => [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)]);
    const lut = new Uint32Array(256);
    const bytes = new Uint8Array(lut.buffer);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (stops.length - 1), k = Math.min(Math.floor(x), stops.length - 2), f = x - k;
      for (let c = 0; c < 3; c++) bytes[4 * i + c] = Math.round(stops[k][c] + f * (stops[k + 1][c] - stops[k][c]));
      bytes[4 * i + 3] = 255;
    }
    return lut;
  })();
  const NAN_COLOUR = new Uint32Array(new Uint8Array([40, 40, 40, 255]).buffer)[0];

  /** Per frame: quantised level (0..255) -> colour, under the current dB range. */
  function levelColours(frame) {
    const map = new Uint32Array(256);
    const [lo, hi] = state.range, span = hi - lo || 1, step = (frame.max - frame.min) / LEVELS;
    for (let q = 0; q <= LEVELS; q++) {
      const v = frame.min + q * step;
      map[q] = LUT[Math.max(0, Math.min(255, Math.round(((v - lo) / span) * 255)))];
    }
    map[NOT_FINITE] = NAN_COLOUR;
    return map;
  }

  // ---- decoding ------------------------------------------------------------------------------------
  function decode(buffer) {
    const dv = new DataView(buffer);
    if (dv.getUint8(0) !== KIND_FRAME) return null;
    const flags = dv.getUint8(1), nch = dv.getUint16(2, true), nf = dv.getUint16(4, true), nb = dv.getUint16(6, true);
    const frame = {
      seq: dv.getUint32(8, true), min: dv.getFloat32(12, true), max: dv.getFloat32(16, true),
      t: dv.getFloat64(20, true), nch, nf, bands: null, qstate: null, qflags: null,
    };
    let off = HEADER;
    if (flags & FLAG_BANDS) { frame.bands = new Float32Array(buffer, off, nb * nch); off += 4 * nb * nch; }
    if (flags & FLAG_QUALITY) {
      frame.qstate = new Uint8Array(buffer, off, nch); frame.qflags = new Uint8Array(buffer, off + nch, nch); off += 2 * nch;
    }
    frame.q = new Uint8Array(buffer, off, nch * nf);
    // Robust ends of this frame's values (5th and 99.9th percentile) for the auto colour range:
    // single noise dips would otherwise stretch the scale down and darken the whole picture.
    const hist = new Uint32Array(256), q = frame.q;
    for (let i = 0; i < q.length; i++) hist[q[i]]++;
    // Level 0 is left out too: it holds whatever the bridge clipped (a dead channel's -300 dB).
    const finite = q.length - hist[NOT_FINITE] - hist[0], step = (frame.max - frame.min) / LEVELS;
    let seen = 0, low = 0, high = LEVELS;
    for (let level = 1; level <= LEVELS; level++) { seen += hist[level]; if (seen >= 0.05 * finite) { low = level; break; } }
    seen = 0;
    for (let level = LEVELS; level >= 1; level--) { seen += hist[level]; if (seen >= 0.001 * finite) { high = level; break; } }
    frame.p05 = frame.min + low * step; frame.p999 = frame.min + high * step;
    return frame;
  }

  // ---- axes ----------------------------------------------------------------------------------------
  function niceStep(span, target) {
    const raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }
  function freqEdges(layout) {
    const f = layout.frequencies, n = f.length;
    const df = n > 1 ? (f[n - 1] - f[0]) / (n - 1) : 1;
    return [f[0] - df / 2, f[n - 1] + df / 2];
  }

  // ---- layout & channel picker -----------------------------------------------------------------------
  function setLayout(layout) {
    // historyDone belongs to the connection, not the layout: a layout that arrives after
    // history_end (the page opened before the stream connected, or the stream came back with
    // other channels) is drawn live from its first frame on.
    state.layout = layout;
    state.frames = [];
    state.dt = null;
    $("stream").textContent = layout.stream;
    $("nch").textContent = layout.channels.length + " ch";
    if (layout.srate) $("rate").textContent = layout.srate + " Hz";
    const list = $("channel-list");
    list.textContent = "";
    layout.channels.forEach((name) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox"; box.value = name; box.dataset.channel = name;
      box.addEventListener("change", () => pick(Array.from(list.querySelectorAll("input:checked")).map((b) => b.value)));
      label.append(box, " " + name);
      list.append(label);
    });
    // a reconnect (or the stream back with its channels) keeps what the user picked
    let chosen = state.selected.filter((c) => layout.channels.includes(c));
    const wanted = new URLSearchParams(location.search).get("channels");
    if (!chosen.length && wanted) chosen = wanted === "all" ? layout.channels.slice() : wanted.split(",").filter((c) => layout.channels.includes(c));
    if (!chosen.length) chosen = layout.channels.slice(0, Math.min(4, layout.channels.length));
    pick(chosen);
  }

  function pick(channels) {
    state.selected = state.layout.channels.filter((c) => channels.includes(c));
    document.querySelectorAll("#channel-list input").forEach((b) => { b.checked = state.selected.includes(b.value); });
    $("picked").textContent = state.selected.length === state.layout.channels.length ? "all" : state.selected.length + " of " + state.layout.channels.length;
    const box = $("spectrograms");
    for (const [name, view] of state.views) if (!state.selected.includes(name)) { view.root.remove(); state.views.delete(name); }
    state.selected.forEach((name) => { if (!state.views.has(name)) state.views.set(name, makeView(name)); });
    state.selected.forEach((name) => box.append(state.views.get(name).root)); // keep montage order
    rebuildAll();
  }

  function makeView(name) {
    const root = document.createElement("div");
    root.className = "spec"; root.dataset.channel = name;
    const title = document.createElement("div");
    const label = document.createElement("span"); label.className = "name"; label.textContent = name;
    const badge = document.createElement("span"); badge.className = "badge";
    const bands = document.createElement("span"); bands.className = "bands";
    label.append(badge); title.append(label, bands);
    const plot = document.createElement("div"); plot.className = "plot";
    const canvas = document.createElement("canvas");
    canvas.className = "spectrogram"; canvas.dataset.channel = name;
    const markers = document.createElement("div");
    plot.append(canvas, markers);
    root.append(title, plot);
    const off = document.createElement("canvas");
    return { name, root, canvas, ctx: canvas.getContext("2d"), off, offCtx: off.getContext("2d", { willReadFrequently: false }),
      markers, badge, bands, head: 0, filled: 0, column: null };
  }

  // ---- the store ----------------------------------------------------------------------------------------
  function addFrame(frame) {
    state.received++;
    const frames = state.frames;
    frames.push(frame);
    const keep = (state.layout.history_sec || 60) * 1000;
    const newest = frame.t;
    let drop = 0;
    while (drop < frames.length && frames[drop].t < newest - keep) drop++;
    if (drop) frames.splice(0, drop);
    if (frames.length >= 3 && (state.dt === null || frames.length % 50 === 0)) {
      const n = Math.min(frames.length, 60), d = [];
      for (let i = frames.length - n + 1; i < frames.length; i++) d.push(frames[i].t - frames[i - 1].t);
      d.sort((a, b) => a - b);
      const dt = d[Math.floor(d.length / 2)];
      if (state.dt === null || Math.abs(dt - state.dt) > 0.05 * state.dt) { state.dt = dt; if (state.historyDone) rebuildAll(); }
    }
    document.body.dataset.framesReceived = String(state.received);
    document.body.dataset.newestFrameMs = String(frame.t);
    if (!state.historyDone || state.paused) return;
    if (updateRange()) { rebuildAll(); return; }
    const colours = levelColours(frame);
    for (const view of state.views.values()) drawColumn(view, frame, colours);
    drawAll();
  }

  /** Auto range: rounded to 5 dB so that it does not repaint everything on every frame. */
  function updateRange() {
    let lo, hi;
    if ($("auto").checked) {
      const mins = [];
      hi = -Infinity;
      for (const f of state.frames) { if (f.p999 > hi) hi = f.p999; mins.push(f.p05); }
      if (!mins.length) return false;
      mins.sort((a, b) => a - b);
      lo = Math.floor(mins[Math.floor(mins.length / 2)] / 5) * 5;
      hi = Math.ceil(hi / 5) * 5;
      if (hi <= lo) hi = lo + 5;
      $("dbmin").value = lo; $("dbmax").value = hi;
    } else {
      lo = parseFloat($("dbmin").value); hi = parseFloat($("dbmax").value);
      if (!(hi > lo)) return false;
    }
    if (lo === state.range[0] && hi === state.range[1]) return false;
    state.range = [lo, hi];
    return true;
  }

  // ---- spectrograms --------------------------------------------------------------------------------------
  function columnsWanted() {
    const span = (state.layout.history_sec || 60) * 1000;
    return state.dt ? Math.max(2, Math.min(8192, Math.round(span / state.dt))) : 600;
  }

  function sizeView(view) {
    const width = Math.max(300, $("spectrograms").clientWidth || 800);
    if (view.canvas.width !== width) view.canvas.width = width;
    if (view.canvas.height !== SPEC_HEIGHT) view.canvas.height = SPEC_HEIGHT;
    const nf = state.layout.frequencies.length;
    if (view.off.width !== state.columns || view.off.height !== nf) { view.off.width = state.columns; view.off.height = nf; }
    view.column = view.offCtx.createImageData(1, nf);
    const [fLow, fHigh] = freqEdges(state.layout);
    const plotW = width - MARGIN.left - MARGIN.right, plotH = SPEC_HEIGHT - MARGIN.top - MARGIN.bottom;
    Object.assign(view.canvas.dataset, {
      plotLeft: MARGIN.left, plotTop: MARGIN.top, plotWidth: plotW, plotHeight: plotH,
      freqLow: fLow, freqHigh: fHigh, bins: nf, columns: state.columns,
      timeSpanMs: state.columns * (state.dt || 0), dbLow: state.range[0], dbHigh: state.range[1],
    });
    view.markers.style.left = "0px";
  }

  function drawColumn(view, frame, colours) {
    const ch = state.layout.channels.indexOf(view.name), nf = frame.nf;
    const px = new Uint32Array(view.column.data.buffer), base = ch * nf;
    for (let k = 0; k < nf; k++) px[nf - 1 - k] = colours[frame.q[base + k]];
    view.offCtx.putImageData(view.column, view.head, 0);
    view.head = (view.head + 1) % state.columns;
    view.filled = Math.min(state.columns, view.filled + 1);
    const info = [];
    if (frame.qstate) {
      const s = frame.qstate[ch];
      view.badge.className = "badge q" + s;
      view.badge.textContent = state.layout.quality_states[s] + flagText(frame.qflags[ch]);
    }
    if (frame.bands) {
      state.layout.bands.forEach((b, i) => info.push(b.name + " " + frame.bands[i * frame.nch + ch].toFixed(1)));
      view.bands.textContent = info.join("  ") + " dB";
    }
  }

  function flagText(bits) {
    const names = Object.entries(state.layout.quality_flags || {}).filter(([, bit]) => bits & bit).map(([n]) => n);
    return names.length ? " (" + names.join(", ") + ")" : "";
  }

  function rebuildAll() {
    if (!state.layout) return;
    updateRange();
    state.columns = columnsWanted();
    const recent = state.frames.slice(-state.columns);
    const colours = recent.map(levelColours);
    for (const view of state.views.values()) {
      sizeView(view);
      view.offCtx.fillStyle = "#000"; view.offCtx.fillRect(0, 0, view.off.width, view.off.height);
      view.head = 0; view.filled = 0;
      recent.forEach((f, i) => drawColumn(view, f, colours[i]));
    }
    drawColourBar();
    drawAll();
  }

  /** Only spectrograms on screen are painted (all 256 of a montage would be ~40,000 px of page). */
  function onScreen(view) {
    const r = view.root.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight;
  }

  function drawAll() {
    for (const view of state.views.values()) if (onScreen(view)) drawView(view);
    drawOverview();
  }

  function drawView(view) {
    const { ctx, canvas } = view, d = canvas.dataset;
    const L = +d.plotLeft, T = +d.plotTop, W = +d.plotWidth, H = +d.plotHeight, N = state.columns;
    ctx.fillStyle = "#111318"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#000"; ctx.fillRect(L, T, W, H);
    ctx.imageSmoothingEnabled = false;
    const cw = W / N, head = view.head;
    // Ring buffer: columns head..N-1 are older than 0..head-1; the newest column ends at the right edge.
    if (N - head > 0) ctx.drawImage(view.off, head, 0, N - head, view.off.height, L, T, (N - head) * cw, H);
    if (head > 0) ctx.drawImage(view.off, 0, 0, head, view.off.height, L + (N - head) * cw, T, head * cw, H);
    // frequency axis
    ctx.fillStyle = "#aeb3c0"; ctx.strokeStyle = "#aeb3c0"; ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const fLow = +d.freqLow, fHigh = +d.freqHigh, fStep = niceStep(fHigh - fLow, 5);
    for (let f = Math.ceil(fLow / fStep) * fStep; f <= fHigh; f += fStep) {
      const y = T + H - ((f - fLow) / (fHigh - fLow)) * H;
      ctx.fillRect(L - 4, Math.round(y), 4, 1);
      ctx.fillText(String(+f.toFixed(3)), L - 6, y);
    }
    ctx.save(); ctx.translate(11, T + H / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center"; ctx.fillText("Hz", 0, 0); ctx.restore();
    // time axis: seconds before the newest frame
    const span = N * (state.dt || 0) / 1000;
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    if (span > 0) {
      const tStep = niceStep(span, 6);
      for (let s = 0; s <= span + 1e-9; s += tStep) {
        const x = L + W - (s / span) * W;
        ctx.fillRect(Math.round(x), T + H, 1, 4);
        ctx.fillText(s === 0 ? "0 s" : "-" + +s.toFixed(2), x, T + H + 5);
      }
    }
    drawMarkers(view, L, T, W, H, span);
  }

  function newestTime() {
    const f = state.frames;
    return f.length ? f[f.length - 1].t : null;
  }

  function drawMarkers(view, L, T, W, H, span) {
    const box = view.markers, newest = newestTime();
    box.textContent = "";
    if (newest === null || !(span > 0)) return;
    // centre of the newest column is at the right edge minus half a column
    const right = newest + (state.dt || 0) / 2;
    for (const [t, text] of state.markers) {
      const age = (right - t) / 1000;
      if (age < 0 || age > span) continue;
      const m = document.createElement("div"), x = L + W - (age / span) * W;
      m.className = x > L + 0.7 * W ? "marker left" : "marker"; // labels near the right edge go to the line's left
      m.style.left = x + "px"; m.style.top = T + "px"; m.style.height = H + "px";
      m.dataset.text = text; m.dataset.timeMs = t;
      const label = document.createElement("span"); label.textContent = text;
      m.append(label); box.append(m);
    }
  }

  // ---- overview ------------------------------------------------------------------------------------------
  let overviewTmp = null;

  /** The newest frame carrying band power / quality (with DERIVED_EVERY_FRAMES > 1 not every frame does). */
  function latestDerived() {
    for (let i = state.frames.length - 1; i >= Math.max(0, state.frames.length - 64); i--) {
      if (state.frames[i].bands || state.frames[i].qstate) return state.frames[i];
    }
    return null;
  }

  function drawOverview() {
    const canvas = $("overview"), ctx = canvas.getContext("2d");
    const layout = state.layout, frame = state.frames[state.frames.length - 1];
    if (!layout || !frame) return;
    const derived = latestDerived() || frame;
    const nch = layout.channels.length, nf = layout.frequencies.length, nb = derived.bands ? layout.bands.length : 0;
    const labelW = 60, badgeW = derived.qstate ? 12 : 0, bandW = nb ? 36 * nb : 0;
    const width = Math.max(400, Math.min(1400, ($("spectrograms").clientWidth || 900) - 60));
    const rowH = Math.max(2, Math.min(14, Math.floor(600 / nch)));
    const height = rowH * nch + 18;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const plotL = labelW + badgeW, plotW = width - plotL - bandW - 8;
    ctx.fillStyle = "#111318"; ctx.fillRect(0, 0, width, height);
    const img = ctx.createImageData(nf, nch), px = new Uint32Array(img.data.buffer), colours = levelColours(frame);
    for (let c = 0; c < nch; c++) for (let k = 0; k < nf; k++) px[c * nf + k] = colours[frame.q[c * nf + k]];
    if (!overviewTmp) overviewTmp = document.createElement("canvas");
    const tmp = overviewTmp;
    if (tmp.width !== nf || tmp.height !== nch) { tmp.width = nf; tmp.height = nch; }
    tmp.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, nf, nch, plotL, 0, plotW, rowH * nch);
    Object.assign(canvas.dataset, { plotLeft: plotL, plotWidth: plotW, rowHeight: rowH, channels: nch,
      badgeLeft: labelW + 2, badgeWidth: Math.max(0, badgeW - 4) });
    ctx.font = Math.min(11, rowH) + "px system-ui, sans-serif"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
    const every = Math.ceil(11 / rowH);
    for (let c = 0; c < nch; c++) {
      if (derived.qstate) { ctx.fillStyle = QUALITY_COLOURS[derived.qstate[c]] || "#888"; ctx.fillRect(labelW + 2, c * rowH, badgeW - 4, Math.max(1, rowH - 1)); }
      if (c % every === 0) { ctx.fillStyle = state.selected.includes(layout.channels[c]) ? "#fff" : "#8b90a0"; ctx.fillText(layout.channels[c], labelW - 3, c * rowH + rowH / 2); }
    }
    if (nb) drawBandBars(ctx, derived, plotL + plotW + 8, rowH, nch, nb);
    // frequency axis
    const [fLow, fHigh] = freqEdges(layout), fStep = niceStep(fHigh - fLow, 8);
    ctx.fillStyle = "#aeb3c0"; ctx.textAlign = "center"; ctx.textBaseline = "top"; ctx.font = "11px system-ui, sans-serif";
    for (let f = Math.ceil(fLow / fStep) * fStep; f <= fHigh; f += fStep) {
      const x = plotL + ((f - fLow) / (fHigh - fLow)) * plotW;
      ctx.fillText(String(+f.toFixed(3)), x, rowH * nch + 3);
    }
    ctx.textAlign = "right"; ctx.fillText("Hz", labelW - 3, rowH * nch + 3);
  }

  /** Band power per channel as bars, each band scaled to its own min..max over the channels. */
  function drawBandBars(ctx, frame, left, rowH, nch, nb) {
    ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    for (let b = 0; b < nb; b++) {
      let lo = Infinity, hi = -Infinity;
      for (let c = 0; c < nch; c++) { const v = frame.bands[b * nch + c]; if (isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
      const x0 = left + b * 36, span = hi - lo || 1;
      for (let c = 0; c < nch; c++) {
        const v = frame.bands[b * nch + c];
        if (!isFinite(v)) continue;
        ctx.fillStyle = "#58a6ff"; ctx.fillRect(x0, c * rowH, Math.max(1, ((v - lo) / span) * 32), Math.max(1, rowH - 1));
      }
      ctx.fillStyle = "#aeb3c0"; ctx.fillText(state.layout.bands[b].name, x0 + 16, rowH * nch + 16);
    }
  }

  function drawColourBar() {
    const canvas = $("colorbar"), ctx = canvas.getContext("2d"), h = canvas.height;
    for (let y = 0; y < h; y++) {
      const c = LUT[Math.round((1 - y / (h - 1)) * 255)];
      ctx.fillStyle = "rgb(" + (c & 255) + "," + ((c >> 8) & 255) + "," + ((c >> 16) & 255) + ")";
      ctx.fillRect(0, y, canvas.width, 1);
    }
    $("cb-min").textContent = state.range[0]; $("cb-max").textContent = state.range[1];
    canvas.dataset.dbLow = state.range[0]; canvas.dataset.dbHigh = state.range[1];
  }

  function overviewChannel(event) {
    const canvas = $("overview"), rowH = +canvas.dataset.rowHeight;
    if (!state.layout || !rowH) return null;
    // offsetY is in CSS pixels; rows are laid out in the canvas's own pixels
    const y = event.offsetY * (canvas.clientHeight ? canvas.height / canvas.clientHeight : 1);
    const c = Math.floor(y / rowH);
    return c >= 0 && c < state.layout.channels.length ? c : null;
  }

  // ---- markers & status --------------------------------------------------------------------------------
  function addMarkers(items) {
    const list = $("marker-list");
    for (const [t, text] of items) {
      state.markers.push([t, text]);
      const li = document.createElement("li");
      li.textContent = new Date(t).toLocaleTimeString() + "  " + text;
      li.dataset.text = text;
      list.prepend(li);
    }
    const keep = (state.layout ? state.layout.history_sec : 60) * 1000, newest = Date.now();
    state.markers = state.markers.filter(([t]) => t >= newest - keep - 5000);
    while (list.children.length > 50) list.lastChild.remove();
    if (state.historyDone) drawAll();
  }

  function showStatus(s) {
    if (s.stream) $("stream").textContent = s.stream;
    if (s.srate) $("rate").textContent = s.srate + " Hz";
    if (s.channel_count) $("nch").textContent = s.channel_count + " ch";
    $("fps").textContent = s.frames_per_sec + " frames/s";
    const box = $("sinks");
    box.textContent = "";
    for (const sink of s.sinks || []) {
      const span = document.createElement("span");
      span.className = sink.state === "ok" ? "ok" : sink.state === "failed" ? "bad" : "warn";
      span.textContent = sink.name + " " + sink.state + " q" + sink.queue + (sink.latency_ms != null ? " " + sink.latency_ms + " ms" : "") +
        " sent " + sink.sent + (sink.dropped ? " dropped " + sink.dropped : "");
      span.dataset.sink = sink.name;
      box.append(span);
    }
    // The header follows the stream both ways: a status saying connected after one that did not
    // (a page opened before the stream was found, or a reconnection) must bring "live" back.
    if (s.connected) state.streamSeen = true;
    state.stream = s.connected ? "up" : state.streamSeen ? "lost" : "waiting";
    showConn();
  }

  // ---- connection ---------------------------------------------------------------------------------------
  function connect() {
    state.historyDone = false;  // until this connection's history_end
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: sessionStorage.getItem("eeg-bridge-token") || "" }));
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") {
        const frame = decode(event.data);
        if (frame && state.layout) addFrame(frame);
        return;
      }
      const msg = JSON.parse(event.data);
      if (msg.type === "auth") {
        if (!msg.ok) { state.authFailed = true; askToken(Boolean(sessionStorage.getItem("eeg-bridge-token"))); }
        else { state.retry = 1000; state.socketOpen = true; showConn(); }
      } else if (msg.type === "layout") setLayout(msg);
      else if (msg.type === "markers") addMarkers(msg.items);
      else if (msg.type === "status") showStatus(msg);
      else if (msg.type === "history_end") {
        state.historyDone = true;
        document.body.dataset.historyFrames = String(msg.frames);
        rebuildAll();
      }
    };
    ws.onclose = () => {
      state.socketOpen = false;
      if (state.authFailed) return;
      setConn("reconnecting");
      setTimeout(connect, state.retry);
      state.retry = Math.min(10000, state.retry * 2);
    };
  }

  /** One place decides the header's word from the socket, the stream (as the last status said) and
   *  the pause button, so no path can leave a stale word behind. */
  function showConn() {
    if (!state.socketOpen) return;  // "connecting" / "reconnecting" stay until the socket is back
    if (state.stream === "lost") setConn("stream lost");
    else if (state.stream === "waiting") setConn("waiting for stream");
    else setConn(state.paused ? "paused" : "live");
  }

  function setConn(text) {
    $("conn").textContent = text;
    document.body.dataset.state = text;
  }

  function askToken(wrong) {
    $("auth").hidden = false;
    $("auth-error").hidden = !wrong;
    $("auth-token").focus();
  }

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("eeg-bridge-token", $("auth-token").value);
    $("auth-token").value = "";
    $("auth").hidden = true;
    state.authFailed = false;
    connect();
  });

  // ---- controls -------------------------------------------------------------------------------------------
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    showConn();
    if (!state.paused) rebuildAll();
  });
  $("auto").addEventListener("change", () => {
    $("dbmin").disabled = $("dbmax").disabled = $("auto").checked;
    rebuildAll();
  });
  for (const id of ["dbmin", "dbmax"]) $(id).addEventListener("change", () => { if (!$("auto").checked) rebuildAll(); });
  $("pick-all").addEventListener("click", () => state.layout && pick(state.layout.channels.slice()));
  $("pick-none").addEventListener("click", () => state.layout && pick([]));
  $("pick-first").addEventListener("click", () => state.layout && pick(state.layout.channels.slice(0, 4)));
  $("overview").addEventListener("click", (event) => {
    const c = overviewChannel(event);
    if (c !== null) pick([state.layout.channels[c]]);
  });
  $("overview").addEventListener("mousemove", (event) => {
    const c = overviewChannel(event), frame = state.frames.length ? latestDerived() || state.frames[state.frames.length - 1] : null;
    if (c === null || !frame) return;
    const parts = [state.layout.channels[c]];
    if (frame.qstate) parts.push("quality " + state.layout.quality_states[frame.qstate[c]] + flagText(frame.qflags[c]));
    if (frame.bands) state.layout.bands.forEach((b, i) => parts.push(b.name + " " + frame.bands[i * frame.nch + c].toFixed(1) + " dB"));
    $("overview-info").textContent = parts.join("  |  ");
  });
  window.addEventListener("scroll", () => { if (state.historyDone) for (const v of state.views.values()) if (onScreen(v)) drawView(v); }, { passive: true });
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(rebuildAll, 200); });

  window.eegView = { state, decode };
  connect();
})();
