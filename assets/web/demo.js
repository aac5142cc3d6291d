/* Show, Attend and Tell demo page: draws each word's attention over the photo in the browser, from the per-word data
   /caption returns (words, 14x14 grids, gates, the display image), so stepping through the words (click, hover,
   slider, arrow keys), switching to another caption of the beam and downloading the figure need no request.
   app.py inlines this file into the page <head>; its views call window.satDemo.mount / mountGallery / show. */
(() => {
  if (window.satDemo) return;

  const SMOOTH_SIGMA = 1.0;  // Gaussian blur of the grid before upsampling, as captioning.visualize.attention_heatmap
  const MAX_OPACITY = 0.8;   // tint where attention peaks; opacity follows attention (0 = photo untinted) ...
  const OPACITY_GAMMA = 1.5; // ... as MAX_OPACITY * heat^1.5, so the faint tail leaves the photo clear
  const HARD_OPACITY = 0.55; // tint of the one cell a hard-attention model chose
  const FIELD_SCALE = 8;     // the heat is computed at 8x the grid (112x112), then the canvas scales it up smoothly
  const TILE_WIDTH = 180;    // gallery tiles, CSS px
  const PANEL_WIDTH = 240;   // panels of the downloadable figure
  const FIGURE_COLUMNS = 5;
  const FIGURE_MARGIN = 10;
  const TITLE_HEIGHT = 26;
  const HEADER_HEIGHT = 40;

  // ---------------------------------------------------------------------------------------------------------------
  // pure helpers: grids, interpolation, colours

  function parseColormap(hex) {
    const lut = new Uint8ClampedArray(768);  // 256 x rgb
    for (let i = 0; i < 768; i++) lut[i] = parseInt(hex.substr(2 * i, 2), 16);
    return lut;
  }

  function gridOf(alpha) {
    // nested rows (R x C) -> {values: Float32Array(R*C), rows, cols}; null when it is not a finite 2-D grid
    if (!Array.isArray(alpha) || !alpha.length || !Array.isArray(alpha[0])) return null;
    const rows = alpha.length, cols = alpha[0].length, values = new Float32Array(rows * cols);
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
    // app.packed_grids: base64 of little-endian uint16, rows*cols per word -> n grids (null where it is short)
    const rows = Number(shape[0]), cols = Number(shape[1]), cells = rows * cols;
    if (!(cells > 0)) return new Array(n).fill(null);
    let bytes;
    try { bytes = Uint8Array.from(atob(text), ch => ch.charCodeAt(0)); } catch (error) { return new Array(n).fill(null); }
    const view = new DataView(bytes.buffer);
    return Array.from({length: n}, (_, w) => {
      if ((w + 1) * cells * 2 > bytes.length) return null;
      const values = new Float32Array(cells);
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

  function gaussianKernel(sigma) {
    const radius = Math.ceil(4 * sigma), kernel = new Float32Array(2 * radius + 1);  // scipy's truncate=4
    let sum = 0;
    for (let k = -radius; k <= radius; k++) sum += (kernel[k + radius] = Math.exp(-0.5 * (k / sigma) ** 2));
    return kernel.map(w => w / sum);
  }

  function smooth(grid, sigma) {
    // separable Gaussian blur with edge values repeated (scipy's mode="nearest")
    if (!(sigma > 0)) return grid;
    const {rows, cols} = grid, kernel = gaussianKernel(sigma), radius = (kernel.length - 1) / 2;
    const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
    const across = new Float32Array(rows * cols), out = new Float32Array(rows * cols);
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

  function cubic(x) {  // Keys' cubic convolution, a = -0.5 (Pillow's BICUBIC)
    const a = -0.5, t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  }

  function cubicTaps(outSize, inSize) {
    // for each output pixel: 4 input indices and weights (pixel centres aligned, edges clamped)
    const index = new Int32Array(outSize * 4), weight = new Float32Array(outSize * 4), scale = inSize / outSize;
    for (let o = 0; o < outSize; o++) {
      const x = (o + 0.5) * scale - 0.5, x0 = Math.floor(x);
      let sum = 0;
      for (let k = 0; k < 4; k++) {
        const w = cubic(x - (x0 - 1 + k));
        index[4 * o + k] = Math.min(Math.max(x0 - 1 + k, 0), inSize - 1);
        weight[4 * o + k] = w;
        sum += w;
      }
      for (let k = 0; k < 4; k++) weight[4 * o + k] /= sum;
    }
    return {index, weight};
  }

  function softField(grid, width, height) {
    // the smoothed grid upsampled (bicubic) to width x height and stretched to [0, 1]: Float32Array(W*H)
    const g = smooth(grid, SMOOTH_SIGMA), xs = cubicTaps(width, g.cols), ys = cubicTaps(height, g.rows);
    const field = new Float32Array(width * height), row = new Float32Array(g.cols);
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
    const span = hi - lo;
    if (!(span > 1e-12)) return field.fill(0);  // flat attention: nothing to highlight
    for (let p = 0; p < field.length; p++) field[p] = (field[p] - lo) / span;
    return field;
  }

  function chosenCell(grid, width, height) {
    // hard attention: the argmax cell as a pixel rectangle {x, y, w, h} of a width x height picture
    let best = 0;
    for (let i = 1; i < grid.values.length; i++) if (grid.values[i] > grid.values[best]) best = i;
    const r = Math.floor(best / grid.cols), c = best % grid.cols;
    const x0 = Math.round(c * width / grid.cols), x1 = Math.round((c + 1) * width / grid.cols);
    const y0 = Math.round(r * height / grid.rows), y1 = Math.round((r + 1) * height / grid.rows);
    return {x: x0, y: y0, w: Math.max(x1 - x0, 1), h: Math.max(y1 - y0, 1), row: r, col: c};
  }

  function heatLayer(field, lut, out) {
    // out = colour(field) with opacity MAX_OPACITY * field^OPACITY_GAMMA: over the photo it tints where the model
    // looked (captioning.visualize.attention_overlay draws the same for /step and the figures)
    const dst = out.data;
    for (let p = 0, q = 0; p < field.length; p++, q += 4) {
      const v = field[p], k = ((v * 255 + 0.5) | 0) * 3;
      dst[q] = lut[k];
      dst[q + 1] = lut[k + 1];
      dst[q + 2] = lut[k + 2];
      dst[q + 3] = Math.pow(v, OPACITY_GAMMA) * MAX_OPACITY * 255 + 0.5;
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
    root: null, gallery: null, lut: null, data: null, view: null, alt: 0, word: 0, photo: null, layer: null,
    version: 0, token: 0, pending: null,
  };

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
      attention: data.attention === 'hard' ? 'hard' : 'soft',
    };
  }

  function layerCanvas(width, height) {
    // the reusable small canvas a word's heat layer is painted on before it is scaled over the photo
    if (!S.layer) S.layer = document.createElement('canvas');
    if (S.layer.width !== width) S.layer.width = width;
    if (S.layer.height !== height) S.layer.height = height;
    return S.layer;
  }

  function drawWord(canvas, view, i, width, height) {
    // word i's attention over the photo, into canvas (resized to width x height)
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext('2d'), grid = view.grids[i];
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(S.photo, 0, 0, width, height);
    if (!grid) return;  // no word (empty caption) or a broken grid: the photo alone
    if (view.attention === 'hard') {
      const cell = chosenCell(grid, width, height), [r, g, b] = rgb(S.lut, 1);
      ctx.fillStyle = `rgba(${r},${g},${b},${HARD_OPACITY})`;
      ctx.fillRect(cell.x, cell.y, cell.w, cell.h);
      ctx.strokeStyle = `rgb(${r},${g},${b})`;
      ctx.lineWidth = Math.max(1, Math.round(width / 320));
      ctx.strokeRect(cell.x + 0.5, cell.y + 0.5, cell.w - 1, cell.h - 1);
      return;
    }
    // Soft: the heat at FIELD_SCALE x the grid (bicubic, in JS), scaled up to the photo by the canvas (bilinear, on
    // premultiplied colours), so a word costs ~12k pixels of script work whatever the photo size.
    const w = Math.min(width, grid.cols * FIELD_SCALE), h = Math.min(height, grid.rows * FIELD_SCALE);
    const layer = layerCanvas(w, h), lctx = layer.getContext('2d');
    lctx.putImageData(heatLayer(softField(grid, w, h), S.lut, lctx.createImageData(w, h)), 0, 0);
    ctx.drawImage(layer, 0, 0, w, h, 0, 0, width, height);
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
  }

  function renderAlternatives() {
    const box = S.root.querySelector('#alternatives');
    box.replaceChildren();
    captionsOf(S.data).forEach((c, a) => {
      const item = document.createElement('button');
      item.type = 'button';
      item.className = 'sat-alt';
      item.setAttribute('role', 'button');
      item.dataset.alt = String(a);
      const text = document.createElement('span');
      text.className = 'sat-alt-text';
      text.textContent = `${a + 1}. ${String(c.caption ?? '')}`;
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
    if (S.view.attention === 'hard') {
      const [r, g, b] = rgb(S.lut, 1);
      box.innerHTML = '';
      const swatch = document.createElement('span');
      swatch.className = 'sat-legend-cell';
      swatch.style.background = `rgba(${r},${g},${b},${HARD_OPACITY})`;
      swatch.style.borderColor = `rgb(${r},${g},${b})`;
      const note = document.createElement('span');
      note.textContent = 'hard attention: the one cell of the 14x14 grid the model looked at for this word';
      box.append(swatch, note);
      return;
    }
    const stops = [];
    for (let k = 0; k <= 10; k++) {
      const [r, g, b] = rgb(S.lut, k / 10);
      stops.push(`rgba(${r},${g},${b},${(MAX_OPACITY * Math.pow(k / 10, OPACITY_GAMMA)).toFixed(2)}) ${k * 10}%`);
    }
    box.innerHTML = '';
    const low = document.createElement('span');
    low.textContent = 'little attention (photo untinted)';
    const bar = document.createElement('span');
    bar.className = 'sat-legend-bar';
    bar.style.backgroundImage = `linear-gradient(to right, ${stops.join(', ')}), linear-gradient(#9ca3af, #9ca3af)`;
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
    if (S.data && data.id && data.id === S.data.id && S.word === 0 && S.alt === 0) {  // already on screen
      markShown();
      return;
    }
    const token = ++S.token, photo = loadPhoto(data.image);  // decoding starts first, off the main thread
    S.data = data;
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
      afterPaint(drawGallery);
    }).catch(() => {});
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the paper-style figure: the photo, then one panel per word, drawn here and saved as PNG

  function figureLayout(nWords, aspect) {
    // panel rectangles of the figure for nWords words on a photo of aspect height/width (pure: tests use it too)
    const panels = nWords + 1, columns = Math.max(1, Math.min(FIGURE_COLUMNS, panels));
    const rows = Math.ceil(panels / columns), w = PANEL_WIDTH, h = Math.max(1, Math.round(PANEL_WIDTH * aspect));
    const cell = TITLE_HEIGHT + h + FIGURE_MARGIN;
    const boxes = [];
    for (let p = 0; p < panels; p++) {
      const x = FIGURE_MARGIN + (p % columns) * (w + FIGURE_MARGIN);
      const y = HEADER_HEIGHT + Math.floor(p / columns) * cell + TITLE_HEIGHT;
      boxes.push({x, y, w, h});
    }
    return {width: FIGURE_MARGIN + columns * (w + FIGURE_MARGIN), height: HEADER_HEIGHT + rows * cell, panels: boxes};
  }

  function figureCanvas() {
    const view = S.view, aspect = S.photo.naturalHeight / S.photo.naturalWidth;
    const layout = figureLayout(view.words.length, aspect), canvas = document.createElement('canvas');
    canvas.width = layout.width;
    canvas.height = layout.height;
    const ctx = canvas.getContext('2d'), panel = document.createElement('canvas');
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, layout.width, layout.height);
    ctx.fillStyle = '#111827';
    ctx.textAlign = 'center';
    ctx.font = '600 17px sans-serif';
    ctx.fillText(view.caption, layout.width / 2, 26, layout.width - 2 * FIGURE_MARGIN);
    ctx.font = '15px sans-serif';
    layout.panels.forEach((box, p) => {
      if (p === 0) {
        ctx.drawImage(S.photo, box.x, box.y, box.w, box.h);
      } else {
        drawWord(panel, view, p - 1, box.w, box.h);
        ctx.drawImage(panel, box.x, box.y);
      }
      const gate = p > 0 ? view.gates[p - 1] : null;
      const title = p === 0 ? '(image)' : view.words[p - 1] + (gate === null ? '' : `  \u03b2 ${gate.toFixed(2)}`);
      ctx.fillText(title, box.x + box.w / 2, box.y - 8, box.w);
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
    S.lut = parseColormap(element.querySelector('.sat-viewer').dataset.colormap);
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
  }

  function mountGallery(element) {
    S.gallery = element;
    element.addEventListener('click', event => {
      const i = wordTarget(event, element);
      if (i !== null) select(i);
    });
    if (S.view && S.photo) drawGallery();
  }

  window.satDemo = {mount, mountGallery, show, select, selectAlternative, downloadFigure, figureLayout, state: S};
})();
