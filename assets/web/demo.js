/* Show, Attend and Tell demo page: draws each word's attention over the photo in the browser, from the per-word data
   /caption returns (words, 14x14 grids, gates, the display image), so stepping through the words (click, hover,
   slider, arrow keys), switching to another caption of the beam and downloading the figure need no request.
   captioning/cli/app.py inlines this file into the page <head>; its views call window.satDemo.mount / mountGallery /
   show / clear, and the viewer's data-heatmap attribute carries the heatmap spec every picture is drawn by. */
(() => {
  if (window.satDemo) return;

  const TILE_WIDTH = 180;  // gallery tiles' drawn width, px (the grid scales them to fill its columns)
  // what the viewer says while it shows no caption: before any, after a new upload, after the photo is removed
  const EMPTY_NOTES = {
    start: 'Upload a photo or click an example, then press Caption.',
    upload: 'Press Caption to caption this photo.',
    removed: 'Upload a photo or click an example, then press Caption.',
  };

  // ---------------------------------------------------------------------------------------------------------------
  // pure helpers: the heatmap spec, grids, interpolation, colours. Every number comes from the viewer's data-heatmap
  // (captioning.heatmap.HeatmapSpec.to_page()), and each step mirrors captioning/heatmap.py: the canvas shows what
  // Python renders for /step and the figures, up to float rounding.

  function parseColormap(hex) {
    const lut = new Uint8ClampedArray(768);  // 256 x rgb
    for (let i = 0; i < 768; i++) lut[i] = parseInt(hex.substr(2 * i, 2), 16);
    return lut;
  }

  function specOf(json) {
    // data-heatmap -> the spec's numbers, its colour table and the opacity per heat level of each attention style
    const spec = JSON.parse(json), soft = new Float64Array(256), hard = new Float64Array(256);
    for (let k = 0; k < 256; k++) {
      soft[k] = spec.max_opacity * Math.pow(k / 255, spec.opacity_gamma);
      hard[k] = spec.hard_opacity * (k / 255);  // hard heat is 0 or 1: the chosen cell at hard_opacity
    }
    return {...spec, lut: parseColormap(spec.colors), opacity: {soft, hard}};
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
    // heatmap.attention_overlay: each pixel moves towards its heat level's colour by that level's opacity
    const src = photo.data, dst = out.data, {values, lo, span} = field;
    for (let p = 0, q = 0; p < values.length; p++, q += 4) {
      const k = ((values[p] - lo) / span * 255 + 0.5) | 0, w = opacity[k], c = 3 * k;
      dst[q] = (src[q] + (lut[c] - src[q]) * w + 0.5) | 0;
      dst[q + 1] = (src[q + 1] + (lut[c + 1] - src[q + 1]) * w + 0.5) | 0;
      dst[q + 2] = (src[q + 2] + (lut[c + 2] - src[q + 2]) * w + 0.5) | 0;
      dst[q + 3] = 255;
    }
    return out;
  }

  function rgb(lut, v) {
    const k = Math.round(Math.min(Math.max(v, 0), 1) * 255) * 3;
    return [lut[k], lut[k + 1], lut[k + 2]];
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the page's state and views

  const S = {
    root: null, gallery: null, spec: null, data: null, view: null, alt: 0, word: 0, photo: null,
    pixels: {photo: null, sizes: new Map()}, version: 0, token: 0, pending: null,
    familiarity: null, familiar: {image: null, percent: null},  // the #familiarity view; the last caption's photo
  };

  // other scripts of the page (probe.js) follow the views through these: on('shown' | 'words' | 'select' | 'cleared',
  // fn)
  const hooks = {shown: [], words: [], select: [], cleared: []};

  function on(name, fn) {
    hooks[name].push(fn);
  }

  function emit(name, ...args) {
    hooks[name].forEach(fn => {
      try { fn(...args); } catch (error) { console.error(error); }
    });
  }

  function captionsOf(data) {
    // every caption of the beam, best first: the top level, then data.alternatives (the next best first)
    return [data, ...(Array.isArray(data.alternatives) ? data.alternatives : [])];
  }

  function viewOf(data, alt) {
    // caption `alt` of captionsOf(data), with the fields the views read
    const list = captionsOf(data), c = list[Math.min(Math.max(alt, 0), list.length - 1)] || {};
    const words = Array.isArray(c.words) ? c.words.map(String) : [];
    const gates = Array.isArray(c.gates) ? c.gates : [];
    return {
      words, grids: gridsOf(c, words.length), caption: String(c.caption ?? words.join(' ')),
      gates: words.map((_, i) => (Number.isFinite(gates[i]) ? gates[i] : null)), score: c.score,
      attention: data.attention === 'hard' ? 'hard' : 'soft', source: c,
    };
  }

  function photoPixels(width, height) {
    // the photo's RGBA pixels at width x height (the canvas scales it), read once per photo and size
    if (S.pixels.photo !== S.photo) S.pixels = {photo: S.photo, sizes: new Map()};
    const key = `${width}x${height}`;
    if (!S.pixels.sizes.has(key)) {
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext('2d', {willReadFrequently: true});
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
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext('2d'), field = heatField(view, i, width, height), photo = photoPixels(width, height);
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
    canvas.dataset.caption = S.data.id || '';
    canvas.dataset.alternative = String(S.alt);
    canvas.dataset.attention = S.view.attention;
    canvas.dataset.version = String(++S.version);
  }

  function gateBar(gate) {
    const bar = document.createElement('span');
    bar.className = 'sat-gate';
    const fill = document.createElement('span');
    fill.style.width = gate === null ? '0%' : `${Math.round(gate * 100)}%`;
    bar.appendChild(fill);
    bar.title = gate === null ? 'gate not reported' : `gate \u03b2 = ${gate.toFixed(2)}`;
    bar.dataset.gate = gate === null ? '' : String(gate);
    return bar;
  }

  function renderWords() {
    const box = S.root.querySelector('#words');
    box.replaceChildren();
    if (!S.view.words.length) {
      box.textContent = '(the model produced an empty caption)';
      emit('words', box, S.view);
      return;
    }
    S.view.words.forEach((word, i) => {
      const chip = indexButton('sat-word', i);
      const label = document.createElement('span');
      label.className = 'sat-word-text';
      label.textContent = word;
      chip.append(label, gateBar(S.view.gates[i]));
      box.appendChild(chip);
    });
    emit('words', box, S.view);
  }

  function renderAlternatives() {
    // the beam's captions, numbered from 1; a visitor's own sentence (data.probe, caption 0) is not one of them:
    // probe.js shows it apart
    const box = S.root.querySelector('#alternatives'), typed = S.data.probe ? 1 : 0;
    box.replaceChildren();
    captionsOf(S.data).forEach((c, a) => {
      if (a < typed) return;
      const item = document.createElement('button');
      item.type = 'button';
      item.className = 'sat-alt';
      item.setAttribute('role', 'button');
      item.dataset.alt = String(a);
      const text = document.createElement('span');
      text.className = 'sat-alt-text';
      text.textContent = `${a + 1 - typed}. ${String(c.caption ?? '')}`;
      const score = document.createElement('span');
      score.className = 'sat-alt-score';
      score.textContent = Number.isFinite(c.score) ? `log p = ${c.score.toFixed(2)}` : '';
      score.dataset.score = Number.isFinite(c.score) ? String(c.score) : '';
      item.append(text, score);
      box.appendChild(item);
    });
    markAlternative();
  }

  function renderLegend() {
    const box = S.root.querySelector('#legend');
    const spec = S.spec, grey = 'linear-gradient(#9ca3af, #9ca3af)';  // the tint shown over a mid-grey photo
    if (S.view.attention === 'hard') {
      const [r, g, b] = rgb(spec.lut, 1), tinted = `rgba(${r},${g},${b},${spec.hard_opacity})`;
      box.innerHTML = '';
      const swatch = document.createElement('span');
      swatch.className = 'sat-legend-cell';
      swatch.style.backgroundImage = `linear-gradient(${tinted}, ${tinted}), ${grey}`;
      swatch.style.borderColor = 'transparent';
      const note = document.createElement('span');
      note.textContent = 'hard attention: the one cell of the 14x14 grid the model looked at for this word';
      box.append(swatch, note);
      return;
    }
    const stops = [];
    for (let k = 0; k <= 10; k++) {
      const [r, g, b] = rgb(spec.lut, k / 10), alpha = spec.max_opacity * Math.pow(k / 10, spec.opacity_gamma);
      stops.push(`rgba(${r},${g},${b},${alpha.toFixed(2)}) ${k * 10}%`);
    }
    box.innerHTML = '';
    const low = document.createElement('span');
    low.textContent = 'little attention (photo untinted)';
    const bar = document.createElement('span');
    bar.className = 'sat-legend-bar';
    bar.style.backgroundImage = `linear-gradient(to right, ${stops.join(', ')}), ${grey}`;
    const high = document.createElement('span');
    high.textContent = 'most attention';
    box.append(low, bar, high);
  }

  function markAlternative() {
    S.root.querySelectorAll('#alternatives [data-alt]').forEach(item => {
      const on = Number(item.dataset.alt) === S.alt;
      item.classList.toggle('current', on);
      item.setAttribute('aria-pressed', String(on));
    });
  }

  function markWord() {
    S.root.querySelectorAll('#words [data-index]').forEach(chip => {
      const on = Number(chip.dataset.index) === S.word;
      chip.classList.toggle('current', on);
      chip.setAttribute('aria-pressed', String(on));
    });
    if (S.gallery) S.gallery.querySelectorAll('[data-index]').forEach(tile => {
      tile.classList.toggle('current', Number(tile.dataset.index) === S.word);
    });
    const last = Math.max(S.view.words.length - 1, 0);
    S.root.querySelectorAll('#word-slider input').forEach(input => {
      input.max = String(last);
      input.value = String(S.word);
      input.disabled = !S.view.words.length;
    });
  }

  /** A role=button element for word i (chip or gallery tile): click and keyboard find it by data-index. */
  function indexButton(className, i) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = className;
    button.setAttribute('role', 'button');
    button.dataset.index = String(i);
    return button;
  }

  function drawGallery() {
    if (!S.gallery || !S.view || !S.photo) return;
    const box = S.gallery.querySelector('#gallery');
    box.replaceChildren();
    const width = Math.min(TILE_WIDTH, S.photo.naturalWidth);
    const height = Math.max(1, Math.round(width * S.photo.naturalHeight / S.photo.naturalWidth));
    S.view.words.forEach((word, i) => {
      const tile = indexButton('sat-tile', i);
      const canvas = document.createElement('canvas');
      drawWord(canvas, S.view, i, width, height);
      const label = document.createElement('span');
      label.className = 'sat-tile-word';
      label.textContent = `${i}: ${word}`;
      tile.append(canvas, label, gateBar(S.view.gates[i]));
      box.appendChild(tile);
    });
    markWord();
  }

  function afterPaint(fn) {  // run fn once the current frame is on screen (the big heatmap first, then the tiles)
    requestAnimationFrame(() => setTimeout(fn, 0));
  }

  function select(i) {
    if (!S.view) return;
    S.word = Math.min(Math.max(Math.round(Number(i) || 0), 0), Math.max(S.view.words.length - 1, 0));
    markWord();
    drawMain(S.word);
    emit('select', S.word);
  }

  function selectAlternative(a) {
    if (!S.data) return;
    S.alt = Math.max(0, Math.round(Number(a) || 0));
    S.view = viewOf(S.data, S.alt);
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
    const photo = new Image();
    photo.src = src;
    return photo.decode().then(() => photo);
  }

  function show(data) {
    // a new caption: words, alternatives and slider at once, then the photo and the first word's heatmap
    if (!S.root) {
      S.pending = data;
      return;
    }
    if (!data || typeof data !== 'object' || typeof data.image !== 'string') return;
    S.root.querySelector('.sat-viewer').removeAttribute('data-empty');
    if (S.data && data.id && data.id === S.data.id && S.word === 0 && S.alt === 0) {  // already on screen
      markShown();
      emit('shown', S.data);
      return;
    }
    const token = ++S.token, photo = loadPhoto(data.image);  // decoding starts first, off the main thread
    S.data = data;
    renderFamiliarity();
    S.alt = 0;
    S.word = 0;
    S.view = viewOf(data, 0);
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
      emit('shown', data);
      afterPaint(drawGallery);
    }).catch(() => {});
  }

  function clear(reason) {
    // another photo's results leave the page at once (a new upload, the photo removed): no words, alternatives,
    // heatmap or gallery, the viewer says what to do next (EMPTY_NOTES[reason]); a photo still decoding is dropped
    S.pending = null;
    if (!S.root) return;
    S.token++;
    Object.assign(S, {data: null, view: null, photo: null, alt: 0, word: 0});
    ['#alternatives', '#words', '#legend'].forEach(id => S.root.querySelector(id).replaceChildren());
    if (S.gallery) S.gallery.querySelector('#gallery').replaceChildren();
    S.root.querySelector('#download-figure').disabled = true;
    S.root.querySelector('#viewer-note').textContent = EMPTY_NOTES[reason] || EMPTY_NOTES.start;
    S.root.querySelector('.sat-viewer').setAttribute('data-empty', '');
    renderFamiliarity();
    emit('cleared');
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
    canvas.width = layout.width;
    canvas.height = layout.height;
    const ctx = canvas.getContext('2d'), panel = document.createElement('canvas');
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, layout.width, layout.height);
    ctx.fillStyle = '#111827';
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
  // wiring: the viewer and the gallery mount once; clicks, hovers, slider and keys are handled here

  function typing(target) {
    return target instanceof Element && !!target.closest('input, textarea, select, [contenteditable="true"]');
  }

  function onKey(event) {
    if (!S.view || !S.view.words.length || event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey)
      return;
    if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
    if (typing(event.target)) return;  // text boxes, sliders (ours moves itself), radios keep their keys
    event.preventDefault();
    select(S.word + (event.key === 'ArrowRight' ? 1 : -1));
    const focused = document.activeElement;
    if (focused && focused.closest && focused.closest('#words')) {
      const chip = S.root.querySelector(`#words [data-index="${S.word}"]`);
      if (chip) chip.focus({preventScroll: true});
    }
  }

  function wordTarget(event, within) {
    const chip = event.target instanceof Element ? event.target.closest('[data-index]') : null;
    return chip && within.contains(chip) ? Number(chip.dataset.index) : null;
  }

  function mount(element, initial) {
    S.root = element;
    S.spec = specOf(element.querySelector('.sat-viewer').dataset.heatmap);
    const words = element.querySelector('#words');
    words.addEventListener('click', event => {
      const i = wordTarget(event, words);
      if (i !== null) select(i);
    });
    words.addEventListener('mouseover', event => {  // hover previews a word; leaving shows the selected one again
      const i = wordTarget(event, words);
      if (i !== null && S.view) drawMain(i);
    });
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
    document.addEventListener('keydown', onKey);
    let first = S.pending;
    if (!first && initial) {
      try { first = JSON.parse(initial); } catch (error) { first = null; }
    }
    S.pending = null;
    if (first) show(first);
    else clear('start');
  }

  function renderFamiliarity() {
    // the line above the caption when the photo looks unlike the model's training photos: a caption carries the
    // photo's `familiarity` (percent, or null without the model's summary); a probe of the same photo keeps it
    if (S.data && !S.data.probe) S.familiar = {image: S.data.image, percent: S.data.familiarity};
    const note = S.familiarity && S.familiarity.querySelector('.sat-familiarity');
    if (!note) return;
    const percent = S.data && S.data.image === S.familiar.image ? S.familiar.percent : null;
    note.hidden = !(Number.isFinite(percent) && percent < Number(note.dataset.below));
  }

  function mountFamiliarity(element) {
    S.familiarity = element;
    renderFamiliarity();
  }

  function mountGallery(element) {
    S.gallery = element;
    element.addEventListener('click', event => {
      const i = wordTarget(event, element);
      if (i !== null) select(i);
    });
    if (S.view && S.photo) drawGallery();
  }

  function finite(x) {
    return typeof x === 'number' && Number.isFinite(x);
  }

  function element(tag, className, text) {
    // a new element with a class and text (either may be left out)
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  window.satDemo = {
    mount, mountGallery, mountFamiliarity, show, clear, select, selectAlternative, downloadFigure, figureLayout, state: S,
    viewOf, drawWord, on,  // for probe.js: a caption's view, its word tiles, the views' hooks
    heatField, typing,  // for live.js: a word's heat, drawn over the live picture; keys typed into a field
    element, finite,  // small helpers the other scripts share
  };
})();
