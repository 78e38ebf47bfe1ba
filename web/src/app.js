// `ex4d app`: input → depth → camera path (designed on the DW-Mesh in 3D) → run → results.
// Every number the page shows about the path comes from the server (ex4d.trajectory.make_trajectory),
// so what is drawn is what the run renders.
import { SceneView, loadScene, responseError } from './scene.js';

const $ = (id) => document.getElementById(id);
const state = { job: null, config: null, view: null, path: null, previewKey: null, playing: false, poll: null };
window.ex4dApp = state; // for tests and debugging

// ------------------------------------------------------------------ helpers
function showError(msg) {
  const el = $('error');
  el.textContent = msg || '';
  el.hidden = !msg;
}

async function api(method, url, body, raw = false) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    if (raw) opts.body = body;
    else { opts.body = JSON.stringify(body); opts.headers['Content-Type'] = 'application/json'; }
  }
  const resp = await fetch(url, opts);
  if (!resp.ok) throw new Error(await responseError(resp));
  return resp.json();
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

/** Run fn; show its error in the banner (and keep the page usable). */
async function guarded(fn) {
  try { return await fn(); } catch (e) { showError(e.message); return undefined; }
}

const inputKind = () => document.querySelector('input[name=input]:checked').value;
const viewMode = () => document.querySelector('input[name=viewmode]:checked').value;
const num = (id) => Number($(id).value);

// ------------------------------------------------------------------ the run request
function keyframes() {
  return [...document.querySelectorAll('#keyframes tbody tr')].map((tr) => {
    const kf = {};
    for (const inp of tr.querySelectorAll('input')) kf[inp.name] = Number(inp.value);
    return kf;
  });
}

function request() {
  const req = { input: inputKind(), num_frames: num('num-frames'), filter: $('filter').value, fill: $('fill').value };
  if ($('stereo').value && req.fill !== 'none') req.stereo = $('stereo').value;
  if (req.input === 'example') req.example_size = num('example-size');
  else req.max_res = num('max-res');
  const depth = $('depth-source').value;
  if (depth) req.depth = depth;
  if ($('depth-kind').value && req.depth === 'file') req.depth_kind = $('depth-kind').value;
  const preset = $('preset').value;
  req.trajectory = preset;
  if (preset === 'keyframes') {
    req.trajectory_options = { keyframes: keyframes(), interpolation: $('interpolation').value };
  } else if (['orbit', 'swing', 'dolly', 'zoom', 'dolly-zoom'].includes(preset)) {
    const o = { yaw: num('yaw'), pitch: num('pitch'), dolly: num('dolly'), ease: $('ease').value };
    if (preset !== 'dolly-zoom') o.zoom = num('zoom');
    req.trajectory_options = o;
  }
  return req;
}

// ------------------------------------------------------------------ form state
function fillSelect(sel, items) {
  sel.innerHTML = '';
  for (const [value, label] of items) {
    const o = document.createElement('option');
    o.value = value; o.textContent = label;
    sel.appendChild(o);
  }
}

function updateDepthChoices() {
  const cur = $('depth-source').value;
  const items = [];
  if (inputKind() === 'example') items.push(['example', 'exact (example)']);
  else items.push(['file', 'uploaded depth file']);
  for (const m of state.config.depth_models) items.push([m, `estimate: ${m}`]);
  fillSelect($('depth-source'), items);
  if ([...$('depth-source').options].some((o) => o.value === cur)) $('depth-source').value = cur;
  $('depth-kind').disabled = $('depth-source').value !== 'file';
  $('size-label').hidden = inputKind() !== 'example';
  $('res-label').hidden = inputKind() === 'example';
}

function updatePresetControls() {
  const preset = $('preset').value;
  $('preset-help').textContent = preset === 'keyframes'
    ? 'Keyframes: set yaw/pitch/dolly/zoom at chosen frames; frames in between are interpolated.'
    : state.config.presets[preset] || '';
  const motion = ['orbit', 'swing', 'dolly', 'zoom', 'dolly-zoom', 'keyframes'].includes(preset);
  $('motion-controls').hidden = !motion; // with keyframes the sliders give the values of a new keyframe
  $('keyframe-controls').hidden = preset !== 'keyframes';
  $('zoom').disabled = preset === 'dolly-zoom';
}

function addKeyframe(kf) {
  const tr = document.createElement('tr');
  const cells = [['frame', 1, 0], ['yaw', 1, -90, 90], ['pitch', 1, -90, 90], ['dolly', 0.05, -0.9, 0.9], ['zoom', 0.05, 0.2, 5]];
  for (const [name, step, min, max] of cells) {
    const td = document.createElement('td');
    const inp = document.createElement('input');
    Object.assign(inp, { type: 'number', name, step, value: kf[name] ?? (name === 'zoom' ? 1 : 0) });
    if (min !== undefined) inp.min = min;
    if (max !== undefined) inp.max = max;
    inp.addEventListener('change', () => refreshPath());
    td.appendChild(inp); tr.appendChild(td);
  }
  const td = document.createElement('td');
  const rm = document.createElement('button');
  rm.type = 'button'; rm.textContent = '×'; rm.title = 'remove';
  rm.addEventListener('click', () => { tr.remove(); refreshPath(); });
  td.appendChild(rm); tr.appendChild(td);
  const rows = [...document.querySelectorAll('#keyframes tbody tr')];
  const after = rows.find((r) => Number(r.querySelector('input[name=frame]').value) > Number(kf.frame));
  $('keyframes').tBodies[0].insertBefore(tr, after || null);
}

// ------------------------------------------------------------------ 3D preview and path
let previewSeq = 0;
async function refreshPreview() {
  const seq = ++previewSeq;
  $('view-msg').textContent = 'Preparing the 3D preview…';
  try {
    const res = await api('POST', `/api/jobs/${state.job}/preview`, request());
    if (seq !== previewSeq) return;
    if (res.scene !== state.previewKey) {
      const scene = await loadScene(res.scene);
      if (seq !== previewSeq) return;
      if (state.view) state.view.dispose();
      const canvas = $('view').cloneNode(false);
      $('view').replaceWith(canvas);
      state.view = new SceneView(canvas, scene, { limits: false });
      state.view.setDirector();
      state.previewKey = res.scene;
      state.info = res.info;
      $('frame').max = scene.header.num_frames - 1;
      $('frame').value = Math.min(num('frame'), scene.header.num_frames - 1);
      for (const inp of document.querySelectorAll('#keyframes input[name=frame]')) inp.max = scene.header.num_frames - 1;
    }
    $('view-msg').textContent = '';
    showError('');
    await refreshPath();
  } catch (e) {
    if (seq !== previewSeq) return;
    $('view-msg').textContent = e.message;
    if (state.view) { state.view.dispose(); state.view = null; state.previewKey = null; }
  }
}

let pathSeq = 0;
async function refreshPath() {
  if (!state.view) return;
  const seq = ++pathSeq;
  try {
    const path = await api('POST', `/api/jobs/${state.job}/path`, request());
    if (seq !== pathSeq) return;
    state.path = path;
    showError('');
    showFrame();
  } catch (e) {
    if (seq === pathSeq) showError(e.message);
  }
}

function showFrame() {
  const v = state.view;
  if (!v) return;
  const t = num('frame');
  $('frame-label').textContent = `${t + 1}/${v.numFrames}`;
  v.setFrame(t);
  v.setPath(viewMode() === 'free' ? state.path : null, t);
  if (viewMode() === 'path' && state.path) v.setCamera(state.path.w2c[t], state.path.K[t]);
}

function setViewMode() {
  const v = state.view;
  if (!v) return;
  if (viewMode() === 'free') { v.setFree(true); v.setDirector(); } else v.setFree(false);
  showFrame();
}

function togglePlay() {
  state.playing = !state.playing;
  $('play').textContent = state.playing ? '❚❚' : '▶';
  if (!state.playing) return;
  let last = performance.now();
  const step = (now) => {
    if (!state.playing) return;
    const fps = state.view ? state.view.header.fps : 24;
    if (now - last >= 1000 / fps) {
      last = now;
      const T = Number($('frame').max) + 1;
      $('frame').value = (num('frame') + 1) % T;
      showFrame();
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

// ------------------------------------------------------------------ uploads
async function upload(kind, file) {
  if (!file) return;
  const limit = state.config.limits.max_upload_mb;
  if (file.size > limit * 1024 * 1024) {
    $(kind === 'video' ? 'video-file' : 'depth-file').value = '';
    showError(`${file.name} is ${(file.size / 1048576).toFixed(0)} MB; this app takes files up to ${limit} MB`);
    return;
  }
  $('input-info').textContent = `Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  try {
    const res = await api('PUT', `/api/jobs/${state.job}/upload/${kind}`, file, true);
    showError('');
    state[`${kind}Info`] = res.info;
    if (kind === 'video') {
      $('input-upload').checked = true;
      const n = Math.min(res.info.frames, state.config.limits.max_frames);
      $('num-frames').value = Math.min(num('num-frames'), n) || n;
      $('num-frames').max = n;
    }
    describeInput();
    updateDepthChoices();
    refreshPreview();
  } catch (e) {
    $(kind === 'video' ? 'video-file' : 'depth-file').value = '';
    state[`${kind}Info`] = null;
    describeInput();
    showError(e.message);
  }
}

function describeInput() {
  const parts = [];
  const v = state.videoInfo; const d = state.depthInfo;
  if (v) parts.push(`video: ${v.frames} frames, ${v.width}×${v.height}, ${v.fps.toFixed(2)} fps (${v.container})`);
  if (d) parts.push(`depth: ${d.frames} frames, ${d.width}×${d.height} (.${d.format})`);
  $('input-info').textContent = parts.join(' · ');
}

// ------------------------------------------------------------------ run and results
async function run() {
  showError('');
  const res = await guarded(() => api('POST', `/api/jobs/${state.job}/run`, request()));
  if (!res) return;
  $('results').hidden = true;
  $('run').disabled = true;
  $('cancel').hidden = false;
  $('status').textContent = `Queued (position ${res.position}).`;
  clearInterval(state.poll);
  state.poll = setInterval(poll, 500);
}

async function poll() {
  let st;
  try { st = await api('GET', `/api/jobs/${state.job}`); } catch (e) { showError(e.message); return; }
  const p = st.progress || {};
  if (st.state === 'queued') $('status').textContent = `Queued (position ${st.position}): waiting for other jobs.`;
  if (st.state === 'running') {
    $('status').textContent = `Running: ${p.stage || 'starting'}${p.total ? ` ${p.done}/${p.total}` : ''}…`;
    $('progress').value = p.total ? p.done / p.total : 0;
  }
  if (['done', 'error', 'cancelled'].includes(st.state)) {
    clearInterval(state.poll);
    $('run').disabled = false;
    $('cancel').hidden = true;
    $('progress').value = st.state === 'done' ? 1 : 0;
    if (st.state === 'done') { $('status').textContent = `Done: ${st.message || ''}`; showResults(st); }
    if (st.state === 'error') { $('status').textContent = 'Failed.'; showError(st.error); }
    if (st.state === 'cancelled') $('status').textContent = 'Cancelled.';
  }
  state.status = st;
}

function showResults(st) {
  const v = Date.now();
  const base = `/api/jobs/${state.job}`;
  for (const name of ['output', 'color', 'mask', 'preview', 'stereo']) {
    const el = $(`video-${name}`);
    const has = st.files.includes(`${name}.mp4`);
    el.parentElement.hidden = !has;
    if (has) { el.src = `${base}/files/${name}.mp4?v=${v}`; el.load(); }
  }
  const s = st.summary;
  $('summary').textContent = s ? `${s.num_frames} frames ${s.width}×${s.height}, ${(100 * s.known_fraction).toFixed(1)} % known` : '';
  $('download').href = `${base}/download`;
  $('open-viewer').href = `/view?scene=${encodeURIComponent(`${base}/scene/run`)}&cameras=${encodeURIComponent(`${base}/files/cameras.json`)}`;
  $('results').hidden = false;
  $('video-output').play().catch(() => {});
}

// ------------------------------------------------------------------ start
async function main() {
  const previewSoon = debounce(refreshPreview, 300);
  const pathSoon = debounce(refreshPath, 120);
  state.config = await api('GET', '/api/config');
  const lim = state.config.limits;
  fillSelect($('preset'), [...Object.keys(state.config.presets).map((k) => [k, k]), ['keyframes', 'keyframes']]);
  $('preset').value = 'orbit';
  fillSelect($('fill'), state.config.fills.map((f) => [f, { classical: 'classical (no weights, fast)', none: 'none (render only)', ex4d: 'EX-4D diffusion' }[f] || f]));
  $('num-frames').max = lim.max_frames;
  $('num-frames').value = Math.min(25, lim.max_frames);
  $('example-size').max = lim.max_res;
  $('example-size').value = Math.min(256, lim.max_res);
  $('max-res').max = lim.max_res;
  $('max-res').value = lim.max_res;
  addKeyframe({ frame: 0, yaw: 0 });
  addKeyframe({ frame: Math.min(25, lim.max_frames) - 1, yaw: 30, pitch: 10 });
  updateDepthChoices();
  updatePresetControls();
  for (const id of ['yaw', 'pitch', 'dolly', 'zoom']) {
    const out = document.querySelector(`output[for=${id}]`);
    const show = () => { out.textContent = $(id).value; };
    show();
    $(id).addEventListener('input', () => { show(); pathSoon(); });
  }
  const job = await api('POST', '/api/jobs');
  state.job = job.id;
  $('job-label').textContent = `job ${job.id.slice(0, 8)}`;

  for (const el of document.querySelectorAll('input[name=input]')) el.addEventListener('change', () => { updateDepthChoices(); previewSoon(); });
  for (const id of ['num-frames', 'example-size', 'max-res', 'depth-source', 'depth-kind', 'filter']) {
    $(id).addEventListener('change', () => { updateDepthChoices(); previewSoon(); });
  }
  $('preset').addEventListener('change', () => { updatePresetControls(); pathSoon(); });
  for (const id of ['ease', 'interpolation']) $(id).addEventListener('change', pathSoon);
  $('add-key').addEventListener('click', () => {
    addKeyframe({ frame: num('frame'), yaw: num('yaw'), pitch: num('pitch'), dolly: num('dolly'), zoom: num('zoom') });
    pathSoon();
  });
  $('video-file').addEventListener('change', (e) => upload('video', e.target.files[0]));
  $('depth-file').addEventListener('change', (e) => upload('depth', e.target.files[0]));
  $('frame').addEventListener('input', showFrame);
  $('play').addEventListener('click', togglePlay);
  for (const el of document.querySelectorAll('input[name=viewmode]')) el.addEventListener('change', setViewMode);
  $('hide-unknown').addEventListener('change', (e) => state.view && state.view.setHideUnknown(e.target.checked));
  $('run').addEventListener('click', run);
  $('cancel').addEventListener('click', () => guarded(() => api('POST', `/api/jobs/${state.job}/cancel`)));
  await refreshPreview();
  document.body.dataset.ready = '1';
}

main().catch((e) => showError(`The app could not start: ${e.message}`));
