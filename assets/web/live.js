/* Live camera, on top of demo.js (window.satDemo): the browser's camera captioned continuously, each word's attention
   drawn over the live picture.
   - One frame in flight: a frame is taken from the video (at most FRAME_SIDE px a side, JPEG) only when the last
     one's caption is back, and posted to the /live endpoint (Gradio's queue, so it counts against --concurrency like
     any caption); a model slower than the camera skips frames, never queues them.
   - The heat of one word is a transparent layer over the <video>: each pixel the colour of its heat level with that
     level's opacity, which composited over the picture is the viewer's tint (captioning.heatmap's spec). Each word
     in turn, WORD_MS each; a clicked word (or <- / ->) stays until it is clicked again.
   - Freeze (or the space bar) puts the frame in the photo input and its caption in the viewer, as a caption of an
     uploaded photo: no second model call.
   captioning/cli/app.py inlines this file after demo.js; the live view's js_on_load calls window.satLive.mount. */
(() => {
  if (window.satLive || !window.satDemo) return;

  const demo = window.satDemo;
  const FRAME_SIDE = 448;  // longest side of a frame sent to /live (the encoder's input size; the server takes <= 640)
  const FRAME_QUALITY = 0.85;  // JPEG quality of a frame
  const WORD_MS = 1000;  // each word's turn when no word is chosen
  const STATS_KEPT = 5000;  // caption timings kept for scripts (bench/live_camera.py)
  const EMPTY = '(the model produced an empty caption)';
  const AGAIN = 'then press Live camera again.';
  const MESSAGES = {
    NotAllowedError: `Camera permission was denied: allow the camera for this site (address bar), ${AGAIN}`,
    NotFoundError: `No camera was found: connect one, ${AGAIN}`,
    OverconstrainedError: `No camera was found: connect one, ${AGAIN}`,
    NotReadableError: `The camera could not be started (another program may be using it): close that, ${AGAIN}`,
  };

  // every frame of this page in one Gradio session: Gradio keeps state per session, so a new session per frame
  // would grow the server by a frame's results at each call
  const SESSION = `live-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const L = {
    root: null, video: null, canvas: null, stream: null, running: false, starting: false, generation: 0,
    data: null, view: null, frame: null, word: 0, pinned: false, timer: null, grabber: null, taken: null, version: 0,
    stats: [],  // {captured, shown}: performance.now() when a frame was taken and when its caption was painted
  };

  function explain(error) {
    // why the camera cannot be had, in one line: insecure page (no navigator.mediaDevices), denied, none, busy
    if (!error) {
      const local = `http://localhost${location.port ? `:${location.port}` : ''}`;
      return 'The camera works only on a secure page: open the demo on the machine that runs it '
        + `(${local}), or start it with --share for an HTTPS link.`;
    }
    return MESSAGES[error.name] || `The camera could not be started (${error.name || 'error'}): ${AGAIN}`;
  }

  function message(text) {
    L.root.querySelector('#live-message').textContent = text;
  }

  function setRunning(running) {
    L.running = running;
    L.root.querySelector('#live-start').disabled = running;
    L.root.querySelector('#live-stop').disabled = !running;
    L.root.querySelector('#live-freeze').disabled = !running || !L.data;
    L.root.querySelector('#live-view').hidden = !running;
    L.root.querySelector('#live-caption').hidden = !running;
    L.root.querySelector('.sat-live-note').hidden = !running;
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
      body: JSON.stringify({data: [frameUrl, model], session_hash: SESSION}),
    });
    if (!posted.ok) throw new Error(`the server answered ${posted.status}`);
    const {event_id: id} = await posted.json();
    const answer = await fetch(`${apiBase()}/${id}`);
    return readEvents(await answer.text());
  }

  function newVideoFrame() {
    // resolves once the video shows a frame other than the last one taken (at once when it already does)
    return new Promise(resolve => {
      if (L.video.currentTime !== L.taken) resolve();
      else if (L.video.requestVideoFrameCallback) L.video.requestVideoFrameCallback(() => resolve());
      else requestAnimationFrame(() => resolve());
    });
  }

  function grab() {
    // the video's current frame, scaled to at most FRAME_SIDE, as a JPEG data URL, with when it was taken
    const v = L.video, scale = Math.min(1, FRAME_SIDE / Math.max(v.videoWidth, v.videoHeight, 1));
    const width = Math.max(1, Math.round(v.videoWidth * scale)), height = Math.max(1, Math.round(v.videoHeight * scale));
    const canvas = L.grabber || (L.grabber = document.createElement('canvas'));
    canvas.width = width;
    canvas.height = height;
    canvas.getContext('2d').drawImage(v, 0, 0, width, height);
    L.taken = v.currentTime;
    return {url: canvas.toDataURL('image/jpeg', FRAME_QUALITY), captured: performance.now(), width, height};
  }

  async function caption(current) {
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

  async function loop(generation) {
    // one frame in flight: the next frame is posted as soon as a caption is back, then that caption is drawn
    const current = () => L.running && generation === L.generation;
    let pending = caption(current);
    while (current()) {
      const {frame, data, error} = await pending;
      if (!current()) return;
      if (error) {
        message(`Live caption failed: ${error.message}`);
        await new Promise(resolve => setTimeout(resolve, 1000));
        pending = caption(current);
        continue;
      }
      pending = caption(current);
      showLive(data, frame);
    }
  }

  function renderWords() {
    const box = L.root.querySelector('#live-caption');
    box.replaceChildren();
    box.dataset.caption = L.view.caption;
    if (!L.view.words.length) box.textContent = EMPTY;
    L.view.words.forEach((word, i) => {
      const chip = document.createElement('button');
      chip.type = 'button';
      chip.dataset.index = String(i);
      chip.textContent = word;
      box.append(chip, ' ');
    });
  }

  function heatLayer(field, opacity, lut, out) {
    // the heat as colour + alpha: composited over the picture it is demo.js's tint of it
    const dst = out.data, {values, lo, span} = field;
    for (let p = 0, q = 0; p < values.length; p++, q += 4) {
      const k = ((values[p] - lo) / span * 255 + 0.5) | 0, c = 3 * k;
      dst[q] = lut[c];
      dst[q + 1] = lut[c + 1];
      dst[q + 2] = lut[c + 2];
      dst[q + 3] = (opacity[k] * 255 + 0.5) | 0;
    }
    return out;
  }

  function drawHeat() {
    // word L.word's heat over the live picture; data-word / data-caption / data-version tell scripts what is drawn
    if (!L.view || !L.frame) return;
    const canvas = L.canvas, {width, height} = L.frame, spec = demo.state.spec;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext('2d'), field = spec ? demo.heatField(L.view, L.word, width, height) : null;
    if (field) {
      const opacity = spec.opacity[L.view.attention];
      ctx.putImageData(heatLayer(field, opacity, spec.lut, ctx.createImageData(width, height)), 0, 0);
    } else {
      ctx.clearRect(0, 0, width, height);
    }
    canvas.dataset.word = field ? String(L.word) : '';
    canvas.dataset.caption = L.data.id || '';
    canvas.dataset.version = String(++L.version);
    L.root.querySelectorAll('#live-caption [data-index]').forEach(chip => {
      chip.classList.toggle('current', Number(chip.dataset.index) === L.word);
    });
  }

  function showLive(data, frame) {
    const n = demo.viewOf(data, 0).words.length;
    L.data = data;
    L.frame = frame;
    L.view = demo.viewOf(data, 0);
    L.word = n ? Math.min(L.word, n - 1) : 0;
    renderWords();
    drawHeat();
    message('');
    L.root.querySelector('#live-freeze').disabled = false;
    requestAnimationFrame(() => setTimeout(() => {  // once the frame showing it is painted
      L.stats.push({captured: frame.captured, shown: performance.now()});
      if (L.stats.length > STATS_KEPT) L.stats.shift();
      const view = L.root.querySelector('#live-view');
      view.dataset.shown = String(Number(view.dataset.shown || 0) + 1);
    }, 0));
  }

  function chooseWord(i) {
    // a clicked (or stepped-to) word stays; clicking the kept word again goes back to each word in turn
    if (!L.view || !L.view.words.length) return;
    const word = Math.min(Math.max(i, 0), L.view.words.length - 1);
    L.pinned = !(L.pinned && word === L.word);
    L.word = word;
    drawHeat();
  }

  function nextWord() {
    if (L.pinned || !L.view || !L.view.words.length) return;
    L.word = (L.word + 1) % L.view.words.length;
    drawHeat();
  }

  async function start() {
    if (L.running || L.starting) return;
    message('');
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      message(explain(null));  // browsers give the camera to localhost and HTTPS pages only
      return;
    }
    L.starting = true;
    try {
      L.stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}});
    } catch (error) {
      message(explain(error));
      return;
    } finally {
      L.starting = false;
    }
    L.video.srcObject = L.stream;
    await L.video.play().catch(() => {});
    L.data = L.view = L.frame = null;
    L.pinned = false;
    L.word = 0;
    setRunning(true);
    L.timer = setInterval(nextWord, WORD_MS);
    loop(++L.generation);
  }

  function stop() {
    // the camera is released (every track stopped); a caption still on its way is dropped
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
    if (!L.running || !L.data || !L.frame) return;
    const data = L.data, frame = L.frame;
    stop();
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
      text.value = data.caption || EMPTY;
      text.dispatchEvent(new Event('input', {bubbles: true}));
    }
    demo.show(data);
  }

  function onKey(event) {
    // while live: <- / -> keep a word, space freezes (before demo.js's keys, which then leave the event alone)
    if (!L.running || event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    if (demo.typing(event.target)) return;
    if (event.key === ' ' && !(event.target instanceof Element && event.target.closest('button'))) {
      event.preventDefault();
      freeze();
    } else if ((event.key === 'ArrowLeft' || event.key === 'ArrowRight') && L.view && L.view.words.length) {
      event.preventDefault();
      L.pinned = false;
      chooseWord(L.word + (event.key === 'ArrowRight' ? 1 : -1));
    }
  }

  function mount(element) {
    L.root = element;
    L.video = element.querySelector('#live-view video');
    L.canvas = element.querySelector('#live-view canvas');
    element.querySelector('#live-start').addEventListener('click', start);
    element.querySelector('#live-stop').addEventListener('click', stop);
    element.querySelector('#live-freeze').addEventListener('click', freeze);
    element.querySelector('#live-caption').addEventListener('click', event => {
      const chip = event.target instanceof Element ? event.target.closest('[data-index]') : null;
      if (chip) chooseWord(Number(chip.dataset.index));
    });
    document.addEventListener('keydown', onKey, true);
  }

  window.satLive = {mount, start, stop, freeze, explain, state: L};
})();
