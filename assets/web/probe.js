/* Your own caption and the model comparison, on top of demo.js (window.satDemo).
   - A typed sentence's per-word data (the page's probe: a caption's per-word format plus probs, ranks, unknown and
     total_log_prob) is shown in the viewer like a caption: it is caption 0 of the viewer's data, the model's own
     captions of the photo after it, so the words step by click, slider and keys with no request. The sentence is
     shown apart, as the visitor's, above the list of captions the beam found. Each word chip gets the probability
     and rank the model gave it there, an unknown word a <unk> mark, and the summary compares the sentence's
     log-probability with the model's own caption's.
   - The compare view (#compare-view) draws one row per served model: its caption or its reading of the typed
     sentence, as word tiles on the photo; tiles of the same word index share a column (the columns wrap to the
     view's width, each model's row starting a new line). Ticking Compare scrolls the rows into view.
   captioning/cli/app.py inlines this file after demo.js; the page calls window.satProbe.show / showCompare /
   mountCompare. */
(() => {
  if (window.satProbe || !window.satDemo) return;

  const demo = window.satDemo, S = demo.state;
  const {element, finite} = demo;
  const TILE_WIDTH = 112;  // compare tiles' drawn width, px (the grid scales them to its columns)
  const P = {caption: null, compare: null, captions: null, root: null, requested: null, reveal: false};
  // caption: the model's caption data last shown in the viewer; compare: the compare view's data; captions: the
  // last compare data of kind "caption" (each model's own caption score); requested: the photo a compare run was
  // asked for; reveal: the visitor just ticked Compare (the rows, once drawn, are scrolled into view)

  function probText(p) {
    // a probability in a few characters: 0.42, 0.031, 4e-5
    if (!finite(p)) return '?';
    if (p >= 0.01) return p.toFixed(2);
    return p > 0 ? p.toExponential(0) : '0';
  }

  function logpText(x) {
    return finite(x) ? x.toFixed(2) : '-inf';
  }

  function probOf(c, i) {
    // word i's probability, from its log-probability where there is one (probs are rounded to 6 decimals)
    const logp = Array.isArray(c.log_probs) ? c.log_probs[i] : null;
    if (finite(logp)) return Math.exp(logp);
    return Array.isArray(c.probs) ? c.probs[i] : null;
  }

  function scoreLabel(c, i) {
    // word i's probability and rank, as a small label (data-prob, data-rank for scripts)
    const p = probOf(c, i), rank = Array.isArray(c.ranks) ? c.ranks[i] : null;
    const label = element('span', 'sat-prob', `p ${probText(p)} \u00b7 #${rank ?? '?'}`);
    label.dataset.prob = finite(p) ? String(p) : '';
    label.dataset.rank = rank == null ? '' : String(rank);
    label.title = `the model gave this word probability ${probText(p)} here; rank ${rank ?? '?'} among the words `
      + 'it could write (1 = its own pick)';
    return label;
  }

  function markUnknown(chip) {
    chip.classList.add('unknown');
    chip.title = "not in the model's vocabulary: read as <unk>";
    const text = chip.querySelector('.sat-word-text, .sat-tile-word');
    const tag = element('span', 'sat-unk', '<unk>');
    if (text) text.after(tag); else chip.appendChild(tag);
  }

  function decorate(chip, c, i) {
    // a word chip or tile of a probe: its probability and rank, and the mark of a word outside the vocabulary
    chip.appendChild(scoreLabel(c, i));
    if (Array.isArray(c.unknown) && c.unknown[i] === true) markUnknown(chip);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the viewer: a probe shown as a caption

  function captionEntry(data) {
    // a caption data's best caption as an alternatives entry (no photo, no nested lists)
    const {image, alternatives, alphas, probe, own, ...entry} = data;
    return entry;
  }

  function show(p) {
    // the page's probe payload -> the viewer: the typed sentence first, then (same photo and model) the captions
    if (!p || typeof p !== 'object' || !Array.isArray(p.words) || typeof p.image !== 'string') return;
    const {image, ...entry} = p;  // entry: the sentence as a caption of the alternatives list, and the typed text
    const base = P.caption && P.caption.image === image && P.caption.model === p.model ? P.caption : null;
    demo.show({
      ...entry, image, model: p.model, attention: p.attention, beam: base ? base.beam : null,
      id: `probe:${p.model}:${p.caption}:${base ? base.id : ''}`,
      alternatives: base ? [captionEntry(base), ...(base.alternatives || [])] : [],
      probe: entry, own: base ? {caption: base.caption, score: base.score} : null,
    });
  }

  function backToCaption() {
    if (P.caption) demo.show(P.caption);
  }

  function renderSummary() {
    const box = S.root && S.root.querySelector('#probe-summary');
    if (!box) return;
    const probe = S.data && S.data.probe;
    box.replaceChildren();
    box.hidden = !probe;
    if (!probe) return;
    const own = S.data.own, total = probe.total_log_prob;
    box.appendChild(element('div', 'sat-heading', 'Your sentence (log-probability; click it to see its words)'));
    const sentence = element('button', 'sat-alt sat-probe-sentence');  // caption 0 of the viewer's data
    sentence.type = 'button';
    sentence.id = 'probe-sentence';
    sentence.classList.toggle('current', S.alt === 0);
    sentence.setAttribute('aria-pressed', String(S.alt === 0));
    const yours = element('span', 'sat-probe-total', `log p = ${logpText(total)}`);
    yours.dataset.total = finite(total) ? String(total) : '';
    sentence.append(element('span', 'sat-alt-text', String(probe.caption ?? '')), yours);
    sentence.addEventListener('click', () => demo.selectAlternative(0));
    const theirs = element('div', 'sat-probe-own', own
      ? `the model's own caption (1. below): log p = ${logpText(own.score)}; the higher one is the one it prefers`
      : 'caption the photo with this model to compare with its own caption');
    theirs.dataset.score = own && finite(own.score) ? String(own.score) : '';
    box.append(sentence, theirs);
    const notes = [];
    if (probe.truncated) notes.push(`only the first ${probe.words.length} words were scored (the model's limit)`);
    if ((probe.unknown || []).some(u => u === true)) notes.push('words marked <unk> are outside the vocabulary');
    notes.push('under each word: the probability the model gave it there, and its rank (#1 = the model\'s pick)');
    box.appendChild(element('div', 'sat-note', notes.join('; ')));
    if (own) {
      const back = element('button', 'sat-probe-back', "Back to the model's caption");
      back.type = 'button';
      back.id = 'probe-back';
      back.addEventListener('click', backToCaption);
      box.appendChild(back);
    }
  }

  function onWords(box, view) {
    // demo.js drew a caption's word chips: label a probe's words, show the typed sentence apart
    const c = view.source || {};
    if (Array.isArray(c.probs)) box.querySelectorAll('[data-index]').forEach(chip => {
      decorate(chip, c, Number(chip.dataset.index));
    });
    renderSummary();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // the compare view

  function compareOn() {
    const box = document.querySelector('#compare input[type=checkbox]');
    return !!(box && box.checked);
  }

  function ownScore(model) {
    // the model's own caption score on the compare view's photo, when a compare of captions holds it
    if (!P.captions || !P.compare || P.captions.image !== P.compare.image) return null;
    const row = P.captions.rows.find(r => r.model === model);
    return row && finite(row.score) ? row.score : null;
  }

  function rowHead(row, kind) {
    const head = element('div', 'sat-compare-head');
    head.dataset.model = String(row.model);
    const name = element('span', 'sat-compare-model', String(row.model));
    const mode = element('span', 'sat-compare-mode', `${row.attention === 'hard' ? 'hard' : 'soft'} attention`);
    const text = element('span', 'sat-compare-caption', kind === 'probe' ? '' : String(row.caption ?? ''));
    const score = kind === 'probe' ? row.total_log_prob : row.score, own = kind === 'probe' ? ownScore(row.model) : null;
    const total = element('span', 'sat-compare-score', `log p = ${logpText(score)}`
      + (own === null ? '' : ` (own caption: ${logpText(own)})`));
    total.dataset.score = finite(score) ? String(score) : '';
    head.append(name, mode, text, total);
    return head;
  }

  function drawCompare() {
    const root = P.root;
    if (!root) return;
    const panel = root.querySelector('.sat-compare'), box = root.querySelector('#compare-rows');
    const c = P.compare, ready = !!(c && compareOn() && S.photo && S.photo.src === c.image);
    box.replaceChildren();
    panel.hidden = !ready;  // tiles are drawn on the viewer's photo: another photo's rows wait for theirs
    if (!ready) return;
    root.querySelector('.sat-compare-what').textContent = c.kind === 'probe'
      ? `reading your sentence "${c.text}"` : 'captioning it';
    const width = Math.min(TILE_WIDTH, S.photo.naturalWidth);
    const height = Math.max(1, Math.round(width * S.photo.naturalHeight / S.photo.naturalWidth));
    c.rows.forEach(row => {
      const view = demo.viewOf(row, 0);
      box.appendChild(rowHead(row, c.kind));
      view.words.forEach((word, i) => {
        const tile = element('button', 'sat-tile');
        tile.type = 'button';
        tile.setAttribute('role', 'button');
        tile.dataset.index = String(i);
        tile.dataset.model = String(row.model);
        const canvas = document.createElement('canvas');
        demo.drawWord(canvas, view, i, width, height);
        tile.append(canvas, element('span', 'sat-tile-word', `${i}: ${word}`));
        if (c.kind === 'probe') decorate(tile, row, i);
        box.appendChild(tile);
      });
    });
    panel.dataset.kind = c.kind;
    panel.dataset.version = String(Number(panel.dataset.version || 0) + 1);
    markColumn(S.word);
    if (P.reveal) {  // the visitor ticked Compare, up by the photo: bring the rows to where they look
      P.reveal = false;
      panel.scrollIntoView({block: 'nearest', behavior: 'smooth'});
    }
  }

  function markColumn(i) {
    if (!P.root) return;
    P.root.querySelectorAll('#compare-rows [data-index]').forEach(tile => {
      tile.classList.toggle('current', Number(tile.dataset.index) === i);
    });
  }

  function showCompare(c) {
    // the compare data (captions or a probe, one row per model) -> the compare view; anything else hides it
    P.compare = c && typeof c === 'object' && Array.isArray(c.rows) && c.rows.length ? c : null;
    if (P.compare && P.compare.kind === 'caption') P.captions = P.compare;
    P.requested = null;
    requestAnimationFrame(drawCompare);
  }

  function refreshCompare(data) {
    // compare mode shows the photo on screen: ask for every model's caption of a new photo (the hidden button)
    if (!compareOn() || !data || data.probe || typeof data.image !== 'string') return;  // a probe brings its rows
    if ((P.compare && P.compare.image === data.image) || P.requested === data.image) return;
    const run = document.querySelector('#compare-run');
    const button = run && (run.tagName === 'BUTTON' ? run : run.querySelector('button'));
    if (!button) return;
    P.requested = data.image;
    button.click();
  }

  function mountCompare(element) {
    P.root = element;
    document.addEventListener('change', event => {
      if (event.target instanceof Element && event.target.matches('#compare input[type=checkbox]'))
        P.reveal = event.target.checked;
    });
    element.addEventListener('click', event => {
      const tile = event.target instanceof Element ? event.target.closest('[data-index]') : null;
      if (!tile || !element.contains(tile)) return;
      demo.select(Number(tile.dataset.index));
      markColumn(Number(tile.dataset.index));
    });
    drawCompare();
  }

  demo.on('words', onWords);
  demo.on('select', markColumn);
  demo.on('cleared', () => {  // no photo's results on screen: no summary, no compare rows until the next caption
    P.caption = null;
    P.requested = null;
    renderSummary();
    drawCompare();
  });
  demo.on('shown', data => {
    if (!data.probe) P.caption = data;
    drawCompare();  // the viewer's photo may be the one the compare rows wait for
    refreshCompare(data);
  });

  window.satProbe = {show, showCompare, mountCompare, backToCaption, state: P};
})();
