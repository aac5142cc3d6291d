/* The attention check, on top of demo.js (window.satDemo): while the "Check attention" switch (#check) is on, the
   page asks /check's page twin (the hidden #check-run button) once for each caption it shows, keeps the answer by
   photo, model and caption, and then:
   - under each word chip: "p 0.50 -> 0.12 hidden here, -> 0.47 hidden elsewhere";
   - in the check panel (#check-panel): the selected word's attention, its gradient map (the positive part of
     input-times-gradient, drawn like attention) or the photo with its attended cells hidden, as the model saw it.
   Stepping words draws from the kept answer: no request. captioning/cli/app.py inlines this file after probe.js;
   the page calls window.satCheck.toggle / request / show. */
(() => {
  if (window.satCheck || !window.satDemo) return;

  const demo = window.satDemo, S = demo.state;
  const {element, finite} = demo;
  const MODES = [['attention', 'attention'], ['gradient', 'gradient map'], ['hidden', 'hidden photo']];
  const C = {on: false, results: new Map(), pending: null, mode: 'gradient'};
  // results: check payloads by keyOf(); pending: the key of the check asked for and not answered yet

  function probText(p) {
    return finite(p) ? p.toFixed(2) : '?';
  }

  function keyOf(data, view) {
    // one shown caption: its model, words and photo (the data URL's length and tail tell photos apart)
    const image = String(data.image || '');
    return `${data.model}\n${view.caption}\n${image.length}:${image.slice(-64)}`;
  }

  function shownKey() {
    return S.data && S.view && S.view.words.length ? keyOf(S.data, S.view) : null;
  }

  function current() {
    const key = shownKey();
    return key ? C.results.get(key) || null : null;
  }

  function ask() {
    // the switch is on and the caption on screen has no answer yet: click the hidden button (one request)
    const key = shownKey();
    if (!C.on || !key || C.results.has(key) || C.pending === key) return;
    const run = document.querySelector('#check-run');
    const button = run && (run.tagName === 'BUTTON' ? run : run.querySelector('button'));
    if (!button) return;
    C.pending = key;
    button.click();
  }

  function request(image, text, model) {
    // the hidden button's inputs: the photo, and the caption and model on screen
    return [image, S.view ? S.view.caption : text, S.data ? S.data.model : model];
  }

  function show(data) {
    // /check's answer for the caption asked for: kept, then drawn
    if (!data || typeof data !== 'object' || !Array.isArray(data.words) || !C.pending) return;
    const [model, caption] = C.pending.split('\n');
    if (data.model !== model || data.words.join(' ') !== caption.split(' ').filter(Boolean).join(' ')) return;
    C.results.set(C.pending, data);
    C.pending = null;
    render();
  }

  function toggle(on) {
    C.on = !!on;
    render();
    ask();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // drawing

  function positiveGrid(rows) {
    // a 14x14 gradient map -> its positive part as demo.js's grid {values, rows, cols} (null when malformed)
    if (!Array.isArray(rows) || !rows.length || !Array.isArray(rows[0])) return null;
    const cols = rows[0].length, values = new Float64Array(rows.length * cols);
    for (let r = 0; r < rows.length; r++) for (let c = 0; c < cols; c++) values[r * cols + c] = Math.max(Number(rows[r][c]) || 0, 0);
    return {values, rows: rows.length, cols};
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

  function drawHidden(canvas, check, i, width, height) {
    // attention_check.hidden_picture: the word's cells filled with the preprocessing mean, edges feathered
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(S.photo, 0, 0, width, height);
    const picture = ctx.getImageData(0, 0, width, height), grid = check.grid || [14, 14];
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

  function drawPanel() {
    const panel = S.root && S.root.querySelector('#check-panel');
    if (!panel) return;
    const check = C.on ? current() : null;
    panel.hidden = !C.on;
    if (!C.on) return;
    const status = panel.querySelector('.sat-check-status');
    status.textContent = check ? '' : 'checking this caption: each word is read again with its attended cells hidden '
      + 'and with as many hidden elsewhere...';
    panel.querySelectorAll('[data-mode]').forEach(b => b.classList.toggle('current', b.dataset.mode === C.mode));
    const canvas = panel.querySelector('canvas');
    if (!check || !S.photo) return;
    const i = Math.min(S.word, check.words.length - 1), width = S.photo.naturalWidth, height = S.photo.naturalHeight;
    if (C.mode === 'hidden') drawHidden(canvas, check, i, width, height);
    else if (C.mode === 'gradient') {
      const grids = check.gradient.map(positiveGrid);
      demo.drawWord(canvas, {...S.view, grids, attention: 'soft'}, i, width, height);
    } else demo.drawWord(canvas, S.view, i, width, height);
    const share = Array.isArray(check.gradient_share) ? check.gradient_share[i] : null;
    panel.querySelector('.sat-check-share').textContent = `"${check.words[i]}": ${check.hidden_cells[i].length} `
      + `cell(s) hold half its attention; they hold ${finite(share) ? Math.round(100 * share) : '?'}% of its `
      + 'positive gradient';
    canvas.dataset.word = String(i);
    canvas.dataset.mode = C.mode;
    canvas.dataset.version = String(Number(canvas.dataset.version || 0) + 1);
  }

  function decorate() {
    // the per-word line under each chip of the caption on screen
    const box = S.root && S.root.querySelector('#words');
    if (!box) return;
    box.querySelectorAll('.sat-check-line').forEach(line => line.remove());
    const check = C.on ? current() : null;
    if (!check) return;
    box.querySelectorAll('[data-index]').forEach(chip => {
      const i = Number(chip.dataset.index), p = check.probs[i];
      const here = check.probs_hidden_here[i], elsewhere = check.probs_hidden_elsewhere[i];
      const line = element('span', 'sat-check-line',
        `p ${probText(p)} -> ${probText(here)} hidden here, -> ${probText(elsewhere)} hidden elsewhere`);
      line.dataset.prob = String(p);
      line.dataset.here = String(here);
      line.dataset.elsewhere = String(elsewhere);
      chip.appendChild(line);
    });
  }

  function mountPanel() {
    // the mode buttons, once
    const panel = S.root && S.root.querySelector('#check-panel');
    if (!panel || panel.dataset.mounted) return;
    panel.dataset.mounted = '1';
    const modes = panel.querySelector('.sat-check-modes');
    MODES.forEach(([mode, label]) => {
      const button = element('button', 'sat-check-mode', label);
      button.type = 'button';
      button.dataset.mode = mode;
      button.addEventListener('click', () => { C.mode = mode; drawPanel(); });
      modes.appendChild(button);
    });
  }

  function render() {
    mountPanel();
    decorate();
    drawPanel();
  }

  demo.on('words', () => { decorate(); drawPanel(); ask(); });
  demo.on('select', drawPanel);
  demo.on('shown', () => { render(); ask(); });

  window.satCheck = {toggle, request, show, state: C};
})();
