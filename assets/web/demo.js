/* Show, Attend and Tell demo page, one module: draws each word's attention over the photo in the browser, from the
   per-word data /caption returns (words, 14x14 grids, gates, the display image), so stepping through the words
   (click, hover, slider, arrow keys), switching to another caption of the beam and downloading the figure need no
   request. On top of the viewer, all reading the one state object S:
   - your own caption: a typed sentence's per-word data (/probe's, plus probs, ranks, unknown and total_log_prob) is
     shown as caption 0 of the viewer, the model's own captions of the photo after it, with each word's probability
     and rank;
   - the compare view: one row of word tiles per served model, tiles of the same word index in one column;
   - the attention check: while "Check attention" is on, /check's answer for each caption shown, kept by photo,
     model and caption, under each word chip and in the check panel;
   - the live camera: frames posted to /live one at a time, each word's heat drawn over the live picture.
   captioning/cli/app.py inlines this file into the page <head>; its views and events call window.satDemo. The
   viewer's data-heatmap carries the heatmap spec every picture is drawn by (opacity curve and figure numbers
   included), data-messages the messages Python shows too. */
(() => {
  if (window.satDemo) return;

  const TILE_WIDTH = {gallery: 180, compare: 112};  // tiles' drawn width, px (the grids scale them to their columns)
  // what the viewer says while it shows no caption: before any, after a new upload, after the photo is removed
  const EMPTY_NOTES = {
    start: 'Upload a photo or click an example, then press Caption.',
    upload: 'Press Caption to caption this photo.',
    removed: 'Upload a photo or click an example, then press Caption.',
  };
  const CHECK_MODES = [['attention', 'attention'], ['gradient', 'gradient map'], ['hidden', 'hidden photo']];
  const FRAME_SIDE = 448;  // longest side of a live frame (the encoder's input size; /live takes <= 640)
  const FRAME_QUALITY = 0.85;  // JPEG quality of a live frame
  const WORD_MS = 1000;  // each live word's turn when no word is chosen
  const STATS_KEPT = 5000;  // live caption timings kept for scripts (bench/live_camera.py)
  const AGAIN = 'then press Live camera again.';
  const CAMERA_ERRORS = {
    NotAllowedError: `Camera permission was denied: allow the camera for this site (address bar), ${AGAIN}`,
    NotFoundError: `No camera was found: connect one, ${AGAIN}`,
    OverconstrainedError: `No camera was found: connect one, ${AGAIN}`,
    NotReadableError: `The camera could not be started (another program may be using it): close that, ${AGAIN}`,
  };
  // one client id for every live frame of this page: Gradio keeps state per client id, so a new id per frame would
  // grow the server by a frame's results at each call
  const LIVE_CLIENT = `live-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

  // ---------------------------------------------------------------------------------------------------------------
  // the page's state: every view reads and writes it here

  const S = {
    root: null, gallery: null, familiarity: null, spec: null, messages: null,  // mounted views; served spec, messages
    data: null,  // the model's caption data on screen (/caption's, or a frozen live frame's)
    probe: null,  // the typed sentence shown (the page's probe payload), or null
    view: null, alt: 0, word: 0, photo: null, pixels: {photo: null, sizes: new Map()}, version: 0, token: 0,
    pending: null,  // a caption handed over before the viewer mounted
    // compare view: the rows' data, the last rows of kind "caption" (each model's own score), the photo a compare
    // run was asked for, and whether the visitor just ticked Compare (the rows, once drawn, are scrolled to)
    compare: {root: null, data: null, captions: null, requested: null, reveal: false},
    // attention check: /check's answers (with their positive gradient grids) by checkKey(), the request asked for
    // and not answered yet ({key, model, words}), the panel's mode
    check: {on: false, results: new Map(), pending: null, mode: 'gradient'},
    live: {
      root: null, video: null, canvas: null, stream: null, running: false, starting: false, generation: 0,
      data: null, view: null, frame: null, word: 0, pinned: false, timer: null, grabber: null, taken: null, version: 0,
      stats: [],  // {captured, shown}: performance.now() when a frame was taken and when its caption was painted
    },
  };

  // ---------------------------------------------------------------------------------------------------------------
  // pure helpers: the heatmap spec, grids, interpolation, colours. Every number comes from the viewer's data-heatmap
  // (captioning.heatmap.HeatmapSpec.to_page()), and each step mirrors captioning/heatmap.py: the canvas shows what
  // Python renders for /step and the figures, up to float rounding.

  function specOf(json) {
    // data-heatmap -> the spec, with its colour table (256 x rgb) decoded; spec.opacity[attention][level] as served
    const spec = JSON.parse(json), lut = new Uint8ClampedArray(768);
    for (let i = 0; i < 768; i++) lut[i] = parseInt(spec.colors.substr(2 * i, 2), 16);
    return {...spec, lut};
  }

  function gridOf(alpha) {
    // nested rows (R x C) -> {values: Float64Array(R*C), rows, cols}; null when it is not a finite 2-D grid
    if (!Array.isArray(alpha) || !alpha.length || !Array.isArray(alpha[0])) return null;
    const rows = alpha.length, cols = alpha[0].length, values = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      if (!Array.isArray(alpha[r]) || alpha[r].length !== cols) return null;
      for (let c = 0; c < cols; c++) {
        const v = Number(alpha[r][c]);
        if (!Number.isFinite(v)) return null;
        values[r * cols + c] = v;
      }
    }
    return {values, rows, cols};
  }

  function packedGrids(text, shape, n) {
    // payload.packed_grids: base64 of little-endian uint16, rows*cols per word -> n grids (null where it is short)
    const rows = Number(shape[0]), cols = Number(shape[1]), cells = rows * cols;
    if (!(cells > 0)) return new Array(n).fill(null);
    let bytes;
    try { bytes = Uint8Array.from(atob(text), ch => ch.charCodeAt(0)); } catch (error) { return new Array(n).fill(null); }
    const view = new DataView(bytes.buffer);
    return Array.from({length: n}, (_, w) => {
      if ((w + 1) * cells * 2 > bytes.length) return null;
      const values = new Float64Array(cells);
      for (let i = 0; i < cells; i++) values[i] = view.getUint16(2 * (w * cells + i), true) / 65535;
      return {values, rows, cols};
    });
  }

  function gridsOf(c, n) {
    // a caption's n grids: packed (what /caption sends the page), else nested lists (alphas)
    if (typeof c.grids === 'string' && Array.isArray(c.grid)) return packedGrids(c.grids, c.grid, n);
    const alphas = Array.isArray(c.alphas) ? c.alphas : [];
    return Array.from({length: n}, (_, i) => gridOf(alphas[i]));
  }

  function gaussianKernel(sigma, truncate) {
    // heatmap.gaussian_kernel: radius floor(truncate * sigma + 0.5), weights summing to 1
    const radius = Math.floor(truncate * sigma + 0.5), kernel = new Float64Array(2 * radius + 1);
    let sum = 0;
    for (let k = -radius; k <= radius; k++) sum += (kernel[k + radius] = Math.exp(-0.5 * (k / sigma) ** 2));
    return kernel.map(w => w / sum);
  }

  function smooth(grid, sigma, truncate) {
    // heatmap.blur_matrix both ways: separable Gaussian blur, edge values repeated
    if (!(sigma > 0)) return grid;
    const {rows, cols} = grid, kernel = gaussianKernel(sigma, truncate), radius = (kernel.length - 1) / 2;
    const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
    const across = new Float64Array(rows * cols), out = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        let s = 0;
        for (let k = -radius; k <= radius; k++) s += kernel[k + radius] * grid.values[r * cols + clamp(c + k, cols)];
        across[r * cols + c] = s;
      }
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        let s = 0;
        for (let k = -radius; k <= radius; k++) s += kernel[k + radius] * across[clamp(r + k, rows) * cols + c];
        out[r * cols + c] = s;
      }
    return {values: out, rows, cols};
  }

  function cubic(x, a) {  // heatmap.keys_cubic: Keys' cubic convolution kernel
    const t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  }

  function cubicTaps(outSize, inSize, a) {
    // heatmap.cubic_matrix as taps: for each output pixel, 4 input indices and weights (pixel centres aligned,
    // edges repeated, weights summing to 1)
    const index = new Int32Array(outSize * 4), weight = new Float64Array(outSize * 4);
    for (let o = 0; o < outSize; o++) {
      const x = (o + 0.5) * (inSize / outSize) - 0.5, x0 = Math.floor(x);
      let sum = 0;
      for (let k = 0; k < 4; k++) {
        const w = cubic(x - (x0 - 1 + k), a);
        index[4 * o + k] = Math.min(Math.max(x0 - 1 + k, 0), inSize - 1);
        weight[4 * o + k] = w;
        sum += w;
      }
      for (let k = 0; k < 4; k++) weight[4 * o + k] /= sum;
    }
    return {index, weight};
  }

  function softField(grid, width, height, spec) {
    // heatmap.soft_heatmap: the blurred grid upsampled to width x height, as {values: Float64Array(W*H), lo, span};
    // the heat (values - lo) / span in [0, 1] is taken pixel by pixel in tint (one pass less over the field)
    const g = smooth(grid, spec.smooth_sigma, spec.smooth_truncate);
    const xs = cubicTaps(width, g.cols, spec.cubic_a), ys = cubicTaps(height, g.rows, spec.cubic_a);
    const field = new Float64Array(width * height), row = new Float64Array(g.cols);
    let lo = Infinity, hi = -Infinity;
    for (let y = 0; y < height; y++) {
      for (let c = 0; c < g.cols; c++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += ys.weight[4 * y + k] * g.values[ys.index[4 * y + k] * g.cols + c];
        row[c] = s;
      }
      for (let x = 0, p = y * width; x < width; x++, p++) {
        const i = 4 * x, v = xs.weight[i] * row[xs.index[i]] + xs.weight[i + 1] * row[xs.index[i + 1]]
          + xs.weight[i + 2] * row[xs.index[i + 2]] + xs.weight[i + 3] * row[xs.index[i + 3]];
        field[p] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (!(hi - lo > 1e-12)) return {values: field.fill(0), lo: 0, span: 1};  // flat attention: nothing to highlight
    return {values: field, lo, span: hi - lo};
  }

  function cellBox(row, col, rows, cols, width, height) {
    // heatmap.cell_box: grid cell (row, col) as pixels [x0, x1) x [y0, y1) of a width x height picture
    const x0 = Math.round(col * width / cols), x1 = Math.round((col + 1) * width / cols);
    const y0 = Math.round(row * height / rows), y1 = Math.round((row + 1) * height / rows);
    return {x0, y0, x1: Math.max(x1, x0 + 1), y1: Math.max(y1, y0 + 1)};
  }

  function hardField(grid, width, height) {
    // heatmap.hard_heatmap: 1 on the chosen (argmax, first on ties) cell, 0 elsewhere, as softField's {values, lo, span}
    let best = 0;
    for (let i = 1; i < grid.values.length; i++) if (grid.values[i] > grid.values[best]) best = i;
    const box = cellBox(Math.floor(best / grid.cols), best % grid.cols, grid.rows, grid.cols, width, height);
    const field = new Float64Array(width * height);
    for (let y = box.y0; y < box.y1; y++) field.fill(1, y * width + box.x0, y * width + box.x1);
    return {values: field, lo: 0, span: 1};
  }

  function tint(photo, field, opacity, lut, out) {
    // heatmap.attention_overlay: each pixel moves towards its heat level's colour by that level's opacity; without
    // a photo, the heat alone as colour + alpha (composited over the picture it is the same tint)
    const src = photo && photo.data, dst = out.data, {values, lo, span} = field;
    for (let p = 0, q = 0; p < values.length; p++, q += 4) {
      const k = ((values[p] - lo) / span * 255 + 0.5) | 0, w = opacity[k], c = 3 * k;
      if (src) {
        dst[q] = (src[q] + (lut[c] - src[q]) * w + 0.5) | 0;
        dst[q + 1] = (src[q + 1] + (lut[c + 1] - src[q + 1]) * w + 0.5) | 0;
        dst[q + 2] = (src[q + 2] + (lut[c + 2] - src[q + 2]) * w + 0.5) | 0;
        dst[q + 3] = 255;
      } else {
        dst[q] = lut[c];
        dst[q + 1] = lut[c + 1];
        dst[q + 2] = lut[c + 2];
        dst[q + 3] = (w * 255 + 0.5) | 0;
      }
    }
    return out;
  }

  function boxAverage(mask, width, height, radius) {
    // attention_check.hide_mask's feathering: the mean over a (2r+1)^2 window clipped at the edges, by rows then
    // columns (the clipped window is a rectangle, so the two passes give the 2-D mean)
    const tmp = new Float64Array(mask.length), out = new Float64Array(mask.length);
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
      let s = 0, n = 0;
      for (let k = Math.max(x - radius, 0); k <= Math.min(x + radius, width - 1); k++, n++) s += mask[y * width + k];
      tmp[y * width + x] = s / n;
    }
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
      let s = 0, n = 0;
      for (let k = Math.max(y - radius, 0); k <= Math.min(y + radius, height - 1); k++, n++) s += tmp[k * width + x];
      out[y * width + x] = s / n;
    }
    return out;
  }

  // small DOM and text helpers

  function node(tag, className, text) {
    // a new element with a class and text (either may be left out); buttons are role=button, type=button
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    if (tag === 'button') {
      node.type = 'button';
      node.setAttribute('role', 'button');
    }
    return node;
  }

  function indexButton(className, i) {  // a word chip or tile: click and keyboard find it by data-index
    const button = node('button', className);
    button.dataset.index = String(i);
    return button;
  }

  function finite(x) {
    return typeof x === 'number' && Number.isFinite(x);
  }

  function fixed(x, none) {  // a number with 2 decimals, `none` when there is none
    return finite(x) ? x.toFixed(2) : none;
  }

  function typing(target) {
    return target instanceof Element && !!target.closest('input, textarea, select, [contenteditable="true"]');
  }

  function afterPaint(fn) {  // run fn once the current frame is on screen (the big heatmap first, then the tiles)
    requestAnimationFrame(() => setTimeout(fn, 0));
  }

  function pressHidden(id) {
    // click one of the page's hidden buttons (#compare-run, #check-run): a request with the page's inputs
    const run = document.querySelector(id);
    const button = run && (run.tagName === 'BUTTON' ? run : run.querySelector('button'));
    if (button) button.click();
    return !!button;
  }

  function sizedCanvas(canvas, width, height) {
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    return canvas.getContext('2d');
  }

  function tileSize(width) {  // a tile's pixels for the photo, at most `width` wide
    const w = Math.min(width, S.photo.naturalWidth);
    return [w, Math.max(1, Math.round(w * S.photo.naturalHeight / S.photo.naturalWidth))];
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the viewer

  function sameCaptioning(a, b) {  // two data of the same photo and model
    return !!(a && b && a.image === b.image && a.model === b.model);
  }

  function shownData() {  // what the viewer's photo, model and attention come from
    return S.probe || S.data;
  }

  function captionsOf(data) {
    // every caption of the beam, best first: the top level, then data.alternatives (the next best first)
    return [data, ...(Array.isArray(data.alternatives) ? data.alternatives : [])];
  }

  function listed() {
    // the viewer's captions: the typed sentence first (when there is one), then the model's own captions of its
    // photo (with the same model)
    if (!S.probe) return captionsOf(S.data);
    return [S.probe, ...(sameCaptioning(S.data, S.probe) ? captionsOf(S.data) : [])];
  }

  function viewOf(c, attention) {
    // one caption (or a compare row, a live caption) with the fields the views read
    const words = Array.isArray(c.words) ? c.words.map(String) : [];
    const gates = Array.isArray(c.gates) ? c.gates : [];
    return {
      words, grids: gridsOf(c, words.length), caption: String(c.caption ?? words.join(' ')),
      gates: words.map((_, i) => (finite(gates[i]) ? gates[i] : null)), score: c.score,
      attention: attention === 'hard' ? 'hard' : 'soft', source: c,
    };
  }

  function photoPixels(width, height) {
    // the photo's RGBA pixels at width x height (the canvas scales it), read once per photo and size
    if (S.pixels.photo !== S.photo) S.pixels = {photo: S.photo, sizes: new Map()};
    const key = `${width}x${height}`;
    if (!S.pixels.sizes.has(key)) {
      const canvas = document.createElement('canvas');
      const ctx = sizedCanvas(canvas, width, height);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(S.photo, 0, 0, width, height);
      S.pixels.sizes.set(key, ctx.getImageData(0, 0, width, height));
    }
    return S.pixels.sizes.get(key);
  }

  function heatField(view, i, width, height) {
    // word i's heat over a width x height picture (softField's {values, lo, span}); null for no word or a broken grid
    const grid = view.grids[i];
    if (!grid) return null;
    return view.attention === 'hard' ? hardField(grid, width, height) : softField(grid, width, height, S.spec);
  }

  function drawWord(canvas, view, i, width, height) {
    // word i's attention over the photo, into canvas (resized to width x height): the heat at full size, tinted
    // pixel by pixel as captioning.heatmap.word_overlay does (a 640x480 word takes a few ms)
    const ctx = sizedCanvas(canvas, width, height), field = heatField(view, i, width, height);
    const photo = photoPixels(width, height);
    if (!field) {  // no word (empty caption) or a broken grid: the photo alone
      ctx.putImageData(photo, 0, 0);
      return;
    }
    const out = tint(photo, field, S.spec.opacity[view.attention], S.spec.lut, ctx.createImageData(width, height));
    ctx.putImageData(out, 0, 0);
  }

  function drawMain(i) {
    // the big heatmap shows word i (selected or hovered); its data-word / data-version tell scripts what is drawn
    const canvas = S.root && S.root.querySelector('#heatmap canvas');
    if (!canvas || !S.view || !S.photo) return;
    drawWord(canvas, S.view, i, S.photo.naturalWidth, S.photo.naturalHeight);
    canvas.dataset.word = S.view.words.length ? String(i) : '';
    canvas.dataset.caption = shownData().id || '';
    canvas.dataset.alternative = String(S.alt);
    canvas.dataset.attention = S.view.attention;
    canvas.dataset.version = String(++S.version);
  }

  function gateBar(gate) {
    const bar = node('span', 'sat-gate'), fill = node('span');
    fill.style.width = gate === null ? '0%' : `${Math.round(gate * 100)}%`;
    bar.appendChild(fill);
    bar.title = gate === null ? 'gate not reported' : `gate \u03b2 = ${gate.toFixed(2)}`;
    bar.dataset.gate = gate === null ? '' : String(gate);
    return bar;
  }

  function renderWords() {
    // the word chips (a typed sentence's with their probability and rank), the sentence's summary, the check lines
    const box = S.root.querySelector('#words'), c = S.view.source;
    box.replaceChildren();
    if (!S.view.words.length) box.textContent = S.messages.empty_caption;
    S.view.words.forEach((word, i) => {
      const chip = indexButton('sat-word', i);
      chip.append(node('span', 'sat-word-text', word), gateBar(S.view.gates[i]));
      if (Array.isArray(c.probs)) markProbe(chip, c, i);
      box.appendChild(chip);
    });
    renderSummary();
    renderCheck();
    askCheck();
  }

  function renderAlternatives() {
    // the beam's captions, numbered from 1; a typed sentence (caption 0) is not one of them: the summary shows it
    const box = S.root.querySelector('#alternatives'), typed = S.probe ? 1 : 0;
    box.replaceChildren();
    listed().forEach((c, a) => {
      if (a < typed) return;
      const item = node('button', 'sat-alt');
      item.dataset.alt = String(a);
      const score = node('span', 'sat-alt-score', finite(c.score) ? `log p = ${c.score.toFixed(2)}` : '');
      score.dataset.score = finite(c.score) ? String(c.score) : '';
      item.append(node('span', 'sat-alt-text', `${a + 1 - typed}. ${String(c.caption ?? '')}`), score);
      box.appendChild(item);
    });
    markAlternative();
  }

  function rgba(level, opacity) {  // the colour of heat level `level` with its opacity, as CSS
    const {lut} = S.spec, c = 3 * level;
    return `rgba(${lut[c]},${lut[c + 1]},${lut[c + 2]},${opacity.toFixed(2)})`;
  }

  function renderLegend() {
    const box = S.root.querySelector('#legend'), grey = 'linear-gradient(#9ca3af, #9ca3af)';  // over a mid-grey photo
    const opacity = S.spec.opacity[S.view.attention];
    if (S.view.attention === 'hard') {
      const swatch = node('span', 'sat-legend-cell'), tinted = rgba(255, opacity[255]);
      swatch.style.backgroundImage = `linear-gradient(${tinted}, ${tinted}), ${grey}`;
      swatch.style.borderColor = 'transparent';
      const note = 'hard attention: the one cell of the 14x14 grid the model looked at for this word';
      box.replaceChildren(swatch, node('span', '', note));
      return;
    }
    const levels = Array.from({length: 11}, (_, k) => Math.round(k * 255 / 10));  // 0%, 10%, ... 100% of the heat
    const bar = node('span', 'sat-legend-bar');
    const stops = levels.map((level, k) => `${rgba(level, opacity[level])} ${k * 10}%`);
    bar.style.backgroundImage = `linear-gradient(to right, ${stops.join(', ')}), ${grey}`;
    box.replaceChildren(node('span', '', 'little attention (photo untinted)'), bar, node('span', '', 'most attention'));
  }

  function markPressed(selector, current, key, root = S.root) {  // items of `selector` with data-<key> `current`: current
    root.querySelectorAll(selector).forEach(item => {
      const on = Number(item.dataset[key]) === current;
      item.classList.toggle('current', on);
      item.setAttribute('aria-pressed', String(on));
    });
  }

  function markAlternative() {
    markPressed('#alternatives [data-alt]', S.alt, 'alt');
  }

  function markWord() {
    markPressed('#words [data-index]', S.word, 'index');
    [S.gallery, S.compare.root].filter(Boolean).forEach(root => root.querySelectorAll('[data-index]').forEach(tile => {
      tile.classList.toggle('current', Number(tile.dataset.index) === S.word);  // the gallery's and compare's tiles
    }));
    const last = Math.max(S.view.words.length - 1, 0);
    S.root.querySelectorAll('#word-slider input').forEach(input => {
      input.max = String(last);
      input.value = String(S.word);
      input.disabled = !S.view.words.length;
    });
  }

  function tile(view, i, width, height, ...extra) {  // a gallery or compare tile: word i's heat and "i: word"
    const button = indexButton('sat-tile', i), canvas = document.createElement('canvas');
    drawWord(canvas, view, i, width, height);
    button.append(canvas, node('span', 'sat-tile-word', `${i}: ${view.words[i]}`), ...extra);
    return button;
  }

  function drawGallery() {
    if (!S.gallery || !S.view || !S.photo) return;
    const box = S.gallery.querySelector('#gallery'), [width, height] = tileSize(TILE_WIDTH.gallery);
    box.replaceChildren();
    S.view.words.forEach((_, i) => box.appendChild(tile(S.view, i, width, height, gateBar(S.view.gates[i]))));
    markWord();
  }

  function select(i) {
    if (!S.view) return;
    S.word = Math.min(Math.max(Math.round(Number(i) || 0), 0), Math.max(S.view.words.length - 1, 0));
    markWord();
    drawMain(S.word);
    drawCheckPanel();
  }

  function selectAlternative(a) {
    if (!shownData()) return;
    const list = listed();
    S.alt = Math.min(Math.max(0, Math.round(Number(a) || 0)), list.length - 1);
    S.view = viewOf(list[S.alt], shownData().attention);
    S.word = 0;
    renderWords();
    markAlternative();
    select(0);
    afterPaint(drawGallery);
  }

  function markShown() {  // data-shown counts the captions shown (a caption shown again included), for scripts
    const canvas = S.root.querySelector('#heatmap canvas');
    canvas.dataset.shown = String(Number(canvas.dataset.shown || 0) + 1);
  }

  function loadPhoto(src) {
    if (S.photo && S.photo.src === src) return Promise.resolve(S.photo);  // a probe of the photo on screen
    const photo = new Image();
    photo.src = src;
    return photo.decode().then(() => photo);
  }

  function present() {
    // S.data / S.probe -> the viewer: words, alternatives and slider at once, then the photo and the first word's
    // heatmap, the compare rows and the gallery
    const shown = shownData(), token = ++S.token, photo = loadPhoto(shown.image);  // decoding starts first
    S.root.querySelector('.sat-viewer').removeAttribute('data-empty');
    S.alt = 0;
    S.word = 0;
    S.view = viewOf(listed()[0], shown.attention);
    renderFamiliarity();
    renderAlternatives();
    renderWords();
    renderLegend();
    markWord();
    photo.then(photo => {
      if (token !== S.token) return;  // a newer caption arrived meanwhile
      S.photo = photo;
      drawMain(S.word);
      markShown();
      S.root.querySelector('#download-figure').disabled = !S.view.words.length;
      drawCheckPanel();
      drawCompare();  // the viewer's photo may be the one the compare rows wait for
      if (!S.probe) refreshCompare();
      afterPaint(drawGallery);
    }).catch(() => {});
  }

  function show(data) {
    // a new caption (/caption's data, or a frozen live frame's)
    if (!S.root) {
      S.pending = data;
      return;
    }
    if (!data || typeof data !== 'object' || typeof data.image !== 'string') return;
    if (!S.probe && S.data && data.id && data.id === S.data.id && S.word === 0 && S.alt === 0) {  // on screen
      markShown();
      return;
    }
    S.data = data;
    S.probe = null;
    present();
  }

  function showProbe(p) {
    // the page's probe payload -> the viewer: the typed sentence first, then (same photo and model) the captions
    if (!S.root || !p || typeof p !== 'object' || !Array.isArray(p.words) || typeof p.image !== 'string') return;
    S.probe = p;
    present();
  }

  function backToCaption() {
    S.probe = null;
    if (S.data) present();
  }

  function clear(reason) {
    // another photo's results leave the page at once (a new upload, the photo removed): no words, alternatives,
    // heatmap, gallery or compare rows, the viewer says what to do next (EMPTY_NOTES[reason]); a photo still
    // decoding is dropped
    S.pending = null;
    if (!S.root) return;
    S.token++;
    Object.assign(S, {data: null, probe: null, view: null, photo: null, alt: 0, word: 0});
    S.compare.requested = null;
    ['#alternatives', '#words', '#legend'].forEach(id => S.root.querySelector(id).replaceChildren());
    if (S.gallery) S.gallery.querySelector('#gallery').replaceChildren();
    S.root.querySelector('#download-figure').disabled = true;
    S.root.querySelector('#viewer-note').textContent = EMPTY_NOTES[reason] || EMPTY_NOTES.start;
    S.root.querySelector('.sat-viewer').setAttribute('data-empty', '');
    renderFamiliarity();
    renderSummary();
    drawCompare();
  }

  function renderFamiliarity() {
    // the line above the caption when the photo looks unlike the model's training photos: a caption carries the
    // photo's `familiarity` (percent, or null without the model's summary); a probe of the same photo keeps it
    const note = S.familiarity && S.familiarity.querySelector('.sat-familiarity');
    if (!note) return;
    const percent = S.data && S.data.image === shownData().image ? S.data.familiarity : null;
    note.hidden = !(finite(percent) && percent < Number(note.dataset.below));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // your own caption: each word's probability and rank, the sentence's summary

  function probText(p) {
    // a probability in a few characters: 0.42, 0.031, 4e-5
    if (!finite(p)) return '?';
    if (p >= 0.01) return p.toFixed(2);
    return p > 0 ? p.toExponential(0) : '0';
  }

  function markProbe(chip, c, i) {
    // a word chip or tile of a typed sentence: its probability (from its log-probability where there is one: probs
    // are rounded to 6 decimals) and rank, and the mark of a word outside the vocabulary
    const logp = Array.isArray(c.log_probs) ? c.log_probs[i] : null;
    const p = finite(logp) ? Math.exp(logp) : (Array.isArray(c.probs) ? c.probs[i] : null);
    const rank = Array.isArray(c.ranks) ? c.ranks[i] : null;
    const label = node('span', 'sat-prob', `p ${probText(p)} \u00b7 #${rank ?? '?'}`);
    label.dataset.prob = finite(p) ? String(p) : '';
    label.dataset.rank = rank == null ? '' : String(rank);
    label.title = `the model gave this word probability ${probText(p)} here; rank ${rank ?? '?'} among the words `
      + 'it could write (1 = its own pick)';
    chip.appendChild(label);
    if (!(Array.isArray(c.unknown) && c.unknown[i] === true)) return;
    chip.classList.add('unknown');
    chip.title = "not in the model's vocabulary: read as <unk>";
    const text = chip.querySelector('.sat-word-text, .sat-tile-word'), tag = node('span', 'sat-unk', '<unk>');
    if (text) text.after(tag); else chip.appendChild(tag);
  }

  function renderSummary() {
    // the typed sentence apart, above the beam's captions: its total beside the model's own caption's
    const box = S.root.querySelector('#probe-summary'), probe = S.probe;
    box.replaceChildren();
    box.hidden = !probe;
    if (!probe) return;
    const own = sameCaptioning(S.data, probe) ? S.data : null, total = probe.total_log_prob;
    box.appendChild(node('div', 'sat-heading', 'Your sentence (log-probability; click it to see its words)'));
    const sentence = node('button', 'sat-alt sat-probe-sentence');  // caption 0 of the viewer
    sentence.id = 'probe-sentence';
    sentence.classList.toggle('current', S.alt === 0);
    sentence.setAttribute('aria-pressed', String(S.alt === 0));
    const yours = node('span', 'sat-probe-total', `log p = ${fixed(total, '-inf')}`);
    yours.dataset.total = finite(total) ? String(total) : '';
    sentence.append(node('span', 'sat-alt-text', String(probe.caption ?? '')), yours);
    sentence.addEventListener('click', () => selectAlternative(0));
    const theirs = node('div', 'sat-probe-own', own
      ? `the model's own caption (1. below): log p = ${fixed(own.score, '-inf')}; the higher one is the one it prefers`
      : 'caption the photo with this model to compare with its own caption');
    theirs.dataset.score = own && finite(own.score) ? String(own.score) : '';
    box.append(sentence, theirs);
    const notes = [];
    if (probe.truncated) notes.push(`only the first ${probe.words.length} words were scored (the model's limit)`);
    if ((probe.unknown || []).some(u => u === true)) notes.push('words marked <unk> are outside the vocabulary');
    notes.push('under each word: the probability the model gave it there, and its rank (#1 = the model\'s pick)');
    box.appendChild(node('div', 'sat-note', notes.join('; ')));
    if (own) {
      const back = node('button', 'sat-probe-back', "Back to the model's caption");
      back.id = 'probe-back';
      back.addEventListener('click', backToCaption);
      box.appendChild(back);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the compare view: one row per served model (its caption or its reading of the typed sentence) as word tiles on
  // the photo; tiles of the same word index share a column (wrapping to the view's width, each row on a new line)

  function compareOn() {
    const box = document.querySelector('#compare input[type=checkbox]');
    return !!(box && box.checked);
  }

  function ownScore(model) {
    // the model's own caption score on the compare view's photo, when a compare of captions holds it
    const {data, captions} = S.compare;
    if (!captions || !data || captions.image !== data.image) return null;
    const row = captions.rows.find(r => r.model === model);
    return row && finite(row.score) ? row.score : null;
  }

  function rowHead(row, kind) {
    const head = node('div', 'sat-compare-head'), probe = kind === 'probe';
    head.dataset.model = String(row.model);
    const score = probe ? row.total_log_prob : row.score, own = probe ? ownScore(row.model) : null;
    const total = node('span', 'sat-compare-score', `log p = ${fixed(score, '-inf')}`
      + (own === null ? '' : ` (own caption: ${fixed(own, '-inf')})`));
    total.dataset.score = finite(score) ? String(score) : '';
    head.append(
      node('span', 'sat-compare-model', String(row.model)),
      node('span', 'sat-compare-mode', `${row.attention === 'hard' ? 'hard' : 'soft'} attention`),
      node('span', 'sat-compare-caption', probe ? '' : String(row.caption ?? '')),
      total,
    );
    return head;
  }

  function drawCompare() {
    const root = S.compare.root, c = S.compare.data;
    if (!root) return;
    const panel = root.querySelector('.sat-compare'), box = root.querySelector('#compare-rows');
    const ready = !!(c && compareOn() && S.photo && S.photo.src === c.image);
    box.replaceChildren();
    panel.hidden = !ready;  // tiles are drawn on the viewer's photo: another photo's rows wait for theirs
    if (!ready) return;
    root.querySelector('.sat-compare-what').textContent = c.kind === 'probe'
      ? `reading your sentence "${c.text}"` : 'captioning it';
    const [width, height] = tileSize(TILE_WIDTH.compare);
    c.rows.forEach(row => {
      const view = viewOf(row, row.attention);
      box.appendChild(rowHead(row, c.kind));
      view.words.forEach((_, i) => {
        const one = tile(view, i, width, height);
        one.dataset.model = String(row.model);
        if (c.kind === 'probe') markProbe(one, row, i);
        box.appendChild(one);
      });
    });
    panel.dataset.kind = c.kind;
    panel.dataset.version = String(Number(panel.dataset.version || 0) + 1);
    if (S.view) markWord();
    if (S.compare.reveal) {  // the visitor ticked Compare, up by the photo: bring the rows to where they look
      S.compare.reveal = false;
      panel.scrollIntoView({block: 'nearest', behavior: 'smooth'});
    }
  }

  function showCompare(c) {
    // the compare data (captions or a probe, one row per model) -> the compare view; anything else hides it
    S.compare.data = c && typeof c === 'object' && Array.isArray(c.rows) && c.rows.length ? c : null;
    if (S.compare.data && S.compare.data.kind === 'caption') S.compare.captions = S.compare.data;
    S.compare.requested = null;
    requestAnimationFrame(drawCompare);
  }

  function refreshCompare() {
    // compare mode shows the photo on screen: ask for every model's caption of a new photo (the hidden button)
    const image = S.data.image, {data, requested} = S.compare;
    if (!compareOn() || (data && data.image === image) || requested === image) return;
    if (pressHidden('#compare-run')) S.compare.requested = image;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the attention check: under each word chip "p 0.50 -> 0.12 hidden here, -> 0.47 hidden elsewhere"; in the check
  // panel the selected word's attention, its gradient map (the positive part of input-times-gradient, drawn like
  // attention) or the photo with its attended cells hidden, as the model saw it

  function checkKey() {
    // the caption on screen: its model, words and photo (the data URL's length and tail tell photos apart)
    const shown = shownData();
    if (!shown || !S.view || !S.view.words.length) return null;
    const image = String(shown.image || '');
    return `${shown.model}\n${S.view.caption}\n${image.length}:${image.slice(-64)}`;
  }

  function currentCheck() {
    const key = S.check.on ? checkKey() : null;
    return key ? S.check.results.get(key) || null : null;
  }

  function askCheck() {
    // the switch is on and the caption on screen has no answer yet: click the hidden button (one request)
    const key = checkKey(), C = S.check;
    if (!C.on || !key || C.results.has(key) || C.pending?.key === key) return;
    if (pressHidden('#check-run')) C.pending = {key, model: shownData().model, words: S.view.words};
  }

  function checkInputs(image, text, model) {
    // the hidden button's inputs: the photo, and the caption and model on screen
    const shown = shownData();
    return [image, S.view ? S.view.caption : text, shown ? shown.model : model];
  }

  function showCheck(data) {
    // /check's answer for the caption asked for: kept, then drawn
    const C = S.check, pending = C.pending;
    if (!data || typeof data !== 'object' || !Array.isArray(data.words) || !pending) return;
    if (data.model !== pending.model || data.words.join(' ') !== pending.words.join(' ')) return;
    C.results.set(pending.key, {...data, grids: data.gradient.map(positiveGrid)});
    C.pending = null;
    renderCheck();
  }

  function toggleCheck(on) {
    S.check.on = !!on;
    renderCheck();
    askCheck();
  }

  function drawHidden(canvas, check, i, width, height) {
    // attention_check.hidden_picture: the word's cells filled with the preprocessing mean, edges feathered
    const ctx = sizedCanvas(canvas, width, height);
    ctx.drawImage(S.photo, 0, 0, width, height);
    const picture = ctx.getImageData(0, 0, width, height), grid = check.grid;
    const cells = new Set(check.hidden_cells[i] || []), mask = new Float64Array(width * height);
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
      const cell = Math.floor(y * grid[0] / height) * grid[1] + Math.floor(x * grid[1] / width);  // nearest
      if (cells.has(cell)) mask[y * width + x] = 1;
    }
    const radius = Math.round(check.hide.feather * Math.min(width, height) / grid[0] / 2);
    const soft = radius > 0 ? boxAverage(mask, width, height, radius) : mask;
    const fill = check.hide.mean.map(m => m * 255);
    for (let p = 0; p < soft.length; p++) for (let ch = 0; ch < 3; ch++) {
      const v = picture.data[4 * p + ch];
      picture.data[4 * p + ch] = Math.round(v * (1 - soft[p]) + fill[ch] * soft[p]);
    }
    ctx.putImageData(picture, 0, 0);
  }

  function positiveGrid(rows) {  // a gradient map -> its positive part as a grid (null when malformed)
    const grid = gridOf(rows);
    if (grid) grid.values.forEach((v, i) => { grid.values[i] = Math.max(v, 0); });
    return grid;
  }

  function drawCheckPanel() {
    const panel = S.root && S.root.querySelector('#check-panel'), C = S.check, check = currentCheck();
    if (!panel) return;
    panel.hidden = !C.on;
    if (!C.on) return;
    panel.querySelector('.sat-check-status').textContent = check ? '' : 'checking this caption: each word is read '
      + 'again with its attended cells hidden and with as many hidden elsewhere...';
    panel.querySelectorAll('[data-mode]').forEach(b => b.classList.toggle('current', b.dataset.mode === C.mode));
    const canvas = panel.querySelector('canvas');
    if (!check || !S.photo) return;
    const i = Math.min(S.word, check.words.length - 1), width = S.photo.naturalWidth, height = S.photo.naturalHeight;
    if (C.mode === 'hidden') drawHidden(canvas, check, i, width, height);
    else if (C.mode === 'gradient') drawWord(canvas, {...S.view, grids: check.grids, attention: 'soft'}, i, width, height);
    else drawWord(canvas, S.view, i, width, height);
    const share = Array.isArray(check.gradient_share) ? check.gradient_share[i] : null;
    panel.querySelector('.sat-check-share').textContent = `"${check.words[i]}": ${check.hidden_cells[i].length} `
      + `cell(s) hold half its attention; they hold ${finite(share) ? Math.round(100 * share) : '?'}% of its `
      + 'positive gradient';
    canvas.dataset.word = String(i);
    canvas.dataset.mode = C.mode;
    canvas.dataset.version = String(Number(canvas.dataset.version || 0) + 1);
  }

  function renderCheck() {
    // the per-word line under each chip of the caption on screen, and the panel
    const box = S.root && S.root.querySelector('#words');
    if (!box) return;
    box.querySelectorAll('.sat-check-line').forEach(line => line.remove());
    const check = currentCheck();
    if (check) box.querySelectorAll('[data-index]').forEach(chip => {
      const i = Number(chip.dataset.index), p = check.probs[i];
      const here = check.probs_hidden_here[i], elsewhere = check.probs_hidden_elsewhere[i];
      const line = node('span', 'sat-check-line',
        `p ${fixed(p, '?')} -> ${fixed(here, '?')} hidden here, -> ${fixed(elsewhere, '?')} hidden elsewhere`);
      Object.assign(line.dataset, {prob: String(p), here: String(here), elsewhere: String(elsewhere)});
      chip.appendChild(line);
    });
    drawCheckPanel();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the paper-style figure: the photo, then one panel per word, drawn here and saved as PNG

  function figureLayout(nWords, aspect, spec = S.spec) {
    // panel rectangles of the figure for nWords words on a photo of aspect height/width, by the spec's figure_*
    // numbers (pure; captioning.visualize.figure_layout computes the same for Python's figure)
    const margin = spec.figure_margin, titleHeight = spec.figure_title_height;
    const panels = nWords + 1, columns = Math.max(1, Math.min(spec.figure_columns, panels));
    const rows = Math.ceil(panels / columns), w = spec.figure_panel_width;
    const h = Math.max(1, Math.round(w * aspect)), cell = titleHeight + h + margin;
    const boxes = [];
    for (let p = 0; p < panels; p++) {
      const x = margin + (p % columns) * (w + margin);
      const y = spec.figure_header_height + Math.floor(p / columns) * cell + titleHeight;
      boxes.push({x, y, w, h});
    }
    return {width: margin + columns * (w + margin), height: spec.figure_header_height + rows * cell, panels: boxes};
  }

  function figureCanvas() {
    // the figure as captioning.visualize.attention_figure draws it: caption, photo, one titled panel per word
    const view = S.view, spec = S.spec, aspect = S.photo.naturalHeight / S.photo.naturalWidth;
    const layout = figureLayout(view.words.length, aspect), canvas = document.createElement('canvas');
    const ctx = sizedCanvas(canvas, layout.width, layout.height), panel = document.createElement('canvas');
    ctx.fillStyle = spec.figure_background;
    ctx.fillRect(0, 0, layout.width, layout.height);
    ctx.fillStyle = spec.figure_text_color;
    ctx.textAlign = 'center';
    ctx.font = `600 ${spec.figure_caption_font_px}px sans-serif`;
    ctx.fillText(view.caption, layout.width / 2, spec.figure_caption_baseline, layout.width - 2 * spec.figure_margin);
    ctx.font = `${spec.figure_title_font_px}px sans-serif`;
    layout.panels.forEach((box, p) => {
      if (p === 0) {
        ctx.putImageData(photoPixels(box.w, box.h), box.x, box.y);
      } else {
        drawWord(panel, view, p - 1, box.w, box.h);
        ctx.drawImage(panel, box.x, box.y);
      }
      const gate = p > 0 ? view.gates[p - 1] : null;
      const title = p === 0 ? spec.figure_image_title
        : view.words[p - 1] + (gate === null ? '' : `  \u03b2 ${gate.toFixed(2)}`);
      ctx.fillText(title, box.x + box.w / 2, box.y - spec.figure_title_gap, box.w);
    });
    return canvas;
  }

  function downloadFigure() {
    if (!S.view || !S.photo || !S.view.words.length) return;
    figureCanvas().toBlob(blob => {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      const stem = S.view.words.slice(0, 6).join('_').replace(/[^A-Za-z0-9_-]/g, '') || 'caption';
      link.download = `attention_${stem}.png`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    }, 'image/png');
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the live camera: one frame in flight (taken from the video, at most FRAME_SIDE px a side, JPEG, only when the
  // last one's caption is back, posted to /live in Gradio's queue, so a model slower than the camera skips frames);
  // each word's heat a transparent layer over the <video>, WORD_MS each, a clicked word (or <- / ->) kept; Freeze
  // (or the space bar) puts the frame in the photo input and its caption in the viewer, with no second model call

  function explain(error) {
    // why the camera cannot be had, in one line: insecure page (no navigator.mediaDevices), denied, none, busy
    if (!error) {
      const local = `http://localhost${location.port ? `:${location.port}` : ''}`;
      return 'The camera works only on a secure page: open the demo on the machine that runs it '
        + `(${local}), or start it with --share for an HTTPS link.`;
    }
    return CAMERA_ERRORS[error.name] || `The camera could not be started (${error.name || 'error'}): ${AGAIN}`;
  }

  function liveMessage(text) {
    S.live.root.querySelector('#live-message').textContent = text;
  }

  function setRunning(running) {
    const L = S.live, at = id => L.root.querySelector(id);
    L.running = running;
    at('#live-start').disabled = running;
    at('#live-stop').disabled = !running;
    at('#live-freeze').disabled = !running || !L.data;
    ['#live-view', '#live-caption', '.sat-live-note'].forEach(id => { at(id).hidden = !running; });
  }

  function modelName() {
    const checked = document.querySelector('#model-choice input:checked');
    return checked ? checked.value : '';
  }

  function apiBase() {
    const root = (window.gradio_config && window.gradio_config.root) || '';
    return `${root.replace(/\/$/, '')}/gradio_api/call/live`;
  }

  function readEvents(text) {
    // the server-sent events of one call: the last event, 'complete' with [payload] or 'error' with the reason
    let event = null, data = null;
    for (const line of text.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data = line.slice(5).trim();
    }
    if (event === 'complete') return JSON.parse(data)[0];
    let reason = null;
    try { reason = JSON.parse(data); } catch (error) { reason = null; }
    throw new Error(typeof reason === 'string' ? reason : (reason && reason.message) || 'the server could not caption it');
  }

  async function callLive(frameUrl, model) {
    // one frame through Gradio's queue: post the call, then read its events until it completes
    const posted = await fetch(apiBase(), {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({data: [frameUrl, model], session_hash: LIVE_CLIENT}),
    });
    if (!posted.ok) throw new Error(`the server answered ${posted.status}`);
    const {event_id: id} = await posted.json();
    const answer = await fetch(`${apiBase()}/${id}`);
    return readEvents(await answer.text());
  }

  function newVideoFrame() {
    // resolves once the video shows a frame other than the last one taken (at once when it already does)
    const video = S.live.video;
    return new Promise(resolve => {
      if (video.currentTime !== S.live.taken) resolve();
      else if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => resolve());
      else requestAnimationFrame(() => resolve());
    });
  }

  function grab() {
    // the video's current frame, scaled to at most FRAME_SIDE, as a JPEG data URL, with when it was taken
    const L = S.live, v = L.video, scale = Math.min(1, FRAME_SIDE / Math.max(v.videoWidth, v.videoHeight, 1));
    const width = Math.max(1, Math.round(v.videoWidth * scale)), height = Math.max(1, Math.round(v.videoHeight * scale));
    const canvas = L.grabber || (L.grabber = document.createElement('canvas'));
    sizedCanvas(canvas, width, height).drawImage(v, 0, 0, width, height);
    L.taken = v.currentTime;
    return {url: canvas.toDataURL('image/jpeg', FRAME_QUALITY), captured: performance.now(), width, height};
  }

  async function liveCaption(current) {
    // the next new frame and its caption (an Error in place of the caption when the call failed; nothing once
    // live has stopped)
    await newVideoFrame();
    if (!current()) return {};
    const frame = grab();
    try {
      return {frame, data: await callLive(frame.url, modelName())};
    } catch (error) {
      return {frame, error};
    }
  }

  async function liveLoop(generation) {
    // one frame in flight: the next frame is posted as soon as a caption is back, then that caption is drawn
    const current = () => S.live.running && generation === S.live.generation;
    let pending = liveCaption(current);
    while (current()) {
      const {frame, data, error} = await pending;
      if (!current()) return;
      if (error) {
        liveMessage(`Live caption failed: ${error.message}`);
        await new Promise(resolve => setTimeout(resolve, 1000));
        pending = liveCaption(current);
        continue;
      }
      pending = liveCaption(current);
      showLive(data, frame);
    }
  }

  function drawHeat() {
    // word L.word's heat over the live picture; data-word / data-caption / data-version tell scripts what is drawn
    const L = S.live;
    if (!L.view || !L.frame) return;
    const canvas = L.canvas, {width, height} = L.frame, ctx = sizedCanvas(canvas, width, height);
    const field = S.spec ? heatField(L.view, L.word, width, height) : null;
    if (field) {
      const layer = tint(null, field, S.spec.opacity[L.view.attention], S.spec.lut, ctx.createImageData(width, height));
      ctx.putImageData(layer, 0, 0);
    } else {
      ctx.clearRect(0, 0, width, height);
    }
    canvas.dataset.word = field ? String(L.word) : '';
    canvas.dataset.caption = L.data.id || '';
    canvas.dataset.version = String(++L.version);
    markPressed('#live-caption [data-index]', L.word, 'index', L.root);
  }

  function showLive(data, frame) {
    const L = S.live, box = L.root.querySelector('#live-caption');
    Object.assign(L, {data, frame, view: viewOf(data, data.attention)});
    L.word = L.view.words.length ? Math.min(L.word, L.view.words.length - 1) : 0;
    box.replaceChildren();
    box.dataset.caption = L.view.caption;
    if (!L.view.words.length) box.textContent = S.messages.empty_caption;
    L.view.words.forEach((word, i) => {
      const chip = indexButton('', i);
      chip.textContent = word;
      box.append(chip, ' ');
    });
    drawHeat();
    liveMessage('');
    L.root.querySelector('#live-freeze').disabled = false;
    afterPaint(() => {  // once the frame showing it is painted
      L.stats.push({captured: frame.captured, shown: performance.now()});
      if (L.stats.length > STATS_KEPT) L.stats.shift();
      const view = L.root.querySelector('#live-view');
      view.dataset.shown = String(Number(view.dataset.shown || 0) + 1);
    });
  }

  function chooseWord(i) {
    // a clicked (or stepped-to) word stays; clicking the kept word again goes back to each word in turn
    const L = S.live;
    if (!L.view || !L.view.words.length) return;
    const word = Math.min(Math.max(i, 0), L.view.words.length - 1);
    L.pinned = !(L.pinned && word === L.word);
    L.word = word;
    drawHeat();
  }

  function nextWord() {
    const L = S.live;
    if (L.pinned || !L.view || !L.view.words.length) return;
    L.word = (L.word + 1) % L.view.words.length;
    drawHeat();
  }

  async function startLive() {
    const L = S.live;
    if (L.running || L.starting) return;
    liveMessage('');
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      liveMessage(explain(null));  // browsers give the camera to localhost and HTTPS pages only
      return;
    }
    L.starting = true;
    try {
      L.stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}});
    } catch (error) {
      liveMessage(explain(error));
      return;
    } finally {
      L.starting = false;
    }
    L.video.srcObject = L.stream;
    await L.video.play().catch(() => {});
    Object.assign(L, {data: null, view: null, frame: null, pinned: false, word: 0});
    setRunning(true);
    L.timer = setInterval(nextWord, WORD_MS);
    liveLoop(++L.generation);
  }

  function stopLive() {
    // the camera is released (every track stopped); a caption still on its way is dropped
    const L = S.live;
    L.generation++;
    clearInterval(L.timer);
    if (L.stream) L.stream.getTracks().forEach(track => track.stop());
    L.stream = null;
    L.video.srcObject = null;
    setRunning(false);
  }

  function until(cond, timeoutMs) {
    return new Promise(resolve => {
      const t0 = performance.now();
      const poll = () => (cond() || performance.now() - t0 > timeoutMs ? resolve(cond()) : setTimeout(poll, 50));
      poll();
    });
  }

  async function freeze() {
    // the last captioned frame becomes the page's photo (uploaded into the photo input, as a visitor's file would
    // be) and its caption the viewer's: probe, compare, alternatives and the figure work on it as on any photo
    const {running, data, frame} = S.live;
    if (!running || !data || !frame) return;
    stopLive();
    const name = `camera-${Date.now()}`;
    const input = document.querySelector('#image-input input[type=file]');
    if (input) {
      const file = new File([await (await fetch(frame.url)).blob()], `${name}.jpg`, {type: 'image/jpeg'});
      const files = new DataTransfer();
      files.items.add(file);
      input.files = files.files;
      input.dispatchEvent(new Event('change', {bubbles: true}));
      await until(() => (document.querySelector('#image-input img')?.src || '').includes(name), 10000);
    }
    const text = document.querySelector('#caption-text textarea');
    if (text) {
      text.value = data.caption || S.messages.empty_caption;
      text.dispatchEvent(new Event('input', {bubbles: true}));
    }
    show(data);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // wiring: each view mounts once; clicks, hovers, slider and keys are handled here

  function plainKey(event) {  // a key no other handler took, without modifiers, typed outside text boxes and sliders
    return !event.defaultPrevented && !event.altKey && !event.ctrlKey && !event.metaKey && !typing(event.target);
  }

  function onLiveKey(event) {
    // while live (before the viewer's keys, which then leave the event alone): <- / -> keep a word, space freezes
    const L = S.live, step = {ArrowLeft: -1, ArrowRight: 1}[event.key];
    if (!L.running || !plainKey(event)) return;
    if (event.key === ' ' && !(event.target instanceof Element && event.target.closest('button'))) {
      event.preventDefault();
      freeze();
    } else if (step && L.view && L.view.words.length) {
      event.preventDefault();
      L.pinned = false;
      chooseWord(L.word + step);
    }
  }

  function onKey(event) {
    // <- / -> step the viewer's words (text boxes, sliders (ours moves itself), radios keep their keys)
    const step = {ArrowLeft: -1, ArrowRight: 1}[event.key];
    if (!step || !S.view || !S.view.words.length || !plainKey(event)) return;
    event.preventDefault();
    select(S.word + step);
    const focused = document.activeElement;
    if (focused && focused.closest && focused.closest('#words')) {
      const chip = S.root.querySelector(`#words [data-index="${S.word}"]`);
      if (chip) chip.focus({preventScroll: true});
    }
  }

  function onWord(within, type, fn) {
    // `type` events on a chip or tile of `within` (an element with data-index) call fn(its index)
    within.addEventListener(type, event => {
      const chip = event.target instanceof Element ? event.target.closest('[data-index]') : null;
      if (chip && within.contains(chip)) fn(Number(chip.dataset.index));
    });
  }

  function mount(element, initial) {
    S.root = element;
    const viewer = element.querySelector('.sat-viewer');
    S.spec = specOf(viewer.dataset.heatmap);
    S.messages = JSON.parse(viewer.dataset.messages);
    const words = element.querySelector('#words');
    onWord(words, 'click', select);
    onWord(words, 'mouseover', drawMain);  // hover previews a word; leaving shows the selected one again
    words.addEventListener('mouseleave', () => { if (S.view) drawMain(S.word); });
    element.querySelector('#alternatives').addEventListener('click', event => {
      const item = event.target instanceof Element ? event.target.closest('[data-alt]') : null;
      if (item) selectAlternative(Number(item.dataset.alt));
    });
    element.querySelector('#word-slider input[type=range]').addEventListener('input', e => select(e.target.value));
    const number = element.querySelector('#word-slider input[type=number]');
    number.addEventListener('change', e => select(e.target.value));
    number.addEventListener('input', e => { if (e.target.value !== '') select(e.target.value); });
    element.querySelector('#download-figure').addEventListener('click', downloadFigure);
    const modes = element.querySelector('#check-panel .sat-check-modes');
    CHECK_MODES.forEach(([mode, label]) => {
      const button = node('button', 'sat-check-mode', label);
      button.dataset.mode = mode;
      button.addEventListener('click', () => { S.check.mode = mode; drawCheckPanel(); });
      modes.appendChild(button);
    });
    document.addEventListener('keydown', onLiveKey, true);
    document.addEventListener('keydown', onKey);
    let first = S.pending;
    if (!first && initial) {
      try { first = JSON.parse(initial); } catch (error) { first = null; }
    }
    S.pending = null;
    if (first) show(first);
    else clear('start');
  }

  function mountFamiliarity(element) {
    S.familiarity = element;
    renderFamiliarity();
  }

  function mountGallery(element) {
    S.gallery = element;
    onWord(element, 'click', select);
    if (S.view && S.photo) drawGallery();
  }

  function mountCompare(element) {
    S.compare.root = element;
    document.addEventListener('change', event => {
      if (event.target instanceof Element && event.target.matches('#compare input[type=checkbox]'))
        S.compare.reveal = event.target.checked;
    });
    onWord(element, 'click', select);
    drawCompare();
  }

  function mountLive(element) {
    const L = S.live;
    L.root = element;
    L.video = element.querySelector('#live-view video');
    L.canvas = element.querySelector('#live-view canvas');
    element.querySelector('#live-start').addEventListener('click', startLive);
    element.querySelector('#live-stop').addEventListener('click', stopLive);
    element.querySelector('#live-freeze').addEventListener('click', freeze);
    onWord(element.querySelector('#live-caption'), 'click', chooseWord);
  }

  window.satDemo = {
    mount, mountGallery, mountFamiliarity, mountCompare, mountLive,  // the views' js_on_load
    show, clear, showProbe, showCompare, toggleCheck, checkInputs, showCheck,  // the events' js callbacks
    select, selectAlternative, figureLayout, state: S,  // for scripts and tests
  };
})();
