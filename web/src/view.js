// `ex4d view`: play a run's per-frame DW-Meshes, fly the camera, save the flown path as cameras.json.
//
// The page reads ?scene=URL (a scene export) and optionally &cameras=URL (the run's cameras.json); both must
// be paths on this server. The saved cameras.json is in ex4d's convention (OpenCV w2c, world = source camera,
// K and size of the run's frames), so `ex4d run --trajectory cameras.json` takes it as it is.
import { AssetView, loadAsset } from './asset.js';
import { fillPath } from './cameras.js';
import { SceneView, loadScene, matmul4, responseError } from './scene.js';

const $ = (id) => document.getElementById(id);
const state = { view: null, runPath: null, samples: {}, recording: false, playing: false, speed: 1 };
window.ex4dViewer = state; // for tests and debugging

function showError(msg) { $('error').textContent = msg || ''; $('error').hidden = !msg; }

/** A same-origin path from the query string, or null (no other hosts, no protocol-relative URLs). */
function localUrl(name) {
  const v = new URLSearchParams(window.location.search).get(name);
  if (!v || !v.startsWith('/') || v.startsWith('//')) return null;
  return v;
}

function hud() {
  const v = state.view;
  if (!v) return;
  const a = v.angles();
  const rec = state.recording ? ' · ● recording' : '';
  $('hud').textContent = `frame ${v.frame + 1}/${v.numFrames} · yaw ${a.yaw.toFixed(1)}° · pitch ${a.pitch.toFixed(1)}° · distance ${a.distance.toFixed(2)}${rec}`;
  $('frame-label').textContent = `${v.frame + 1}/${v.numFrames}`;
}

function describePath() {
  const n = Object.keys(state.samples).length;
  const T = state.view ? state.view.numFrames : 0;
  $('path-info').textContent = n ? `${n} of ${T} frames set${n < T ? ' (the others are interpolated)' : ''}.` : 'No camera path yet.';
  $('save').disabled = n === 0 || state.recording;
}

function sample() {
  state.samples[state.view.frame] = state.view.w2c();
  describePath();
}

function showFrame(t) {
  const v = state.view;
  v.setFrame(t);
  $('frame').value = v.frame;
  if (state.follow && state.runPath) v.setCamera(state.runPath.w2c[v.frame], state.runPath.K[v.frame]);
  if (state.recording) sample();
  v.setPath($('show-path').checked ? state.runPath : null, state.follow ? null : v.frame);
  hud();
}

function setPlaying(on) {
  state.playing = on;
  $('play').textContent = on ? '❚❚' : '▶';
  if (!on) return;
  let last = performance.now();
  const step = (now) => {
    if (!state.playing) return;
    const v = state.view;
    if (now - last >= 1000 / (v.header.fps * state.speed)) {
      last = now;
      const next = v.frame + 1;
      if (state.recording && next >= v.numFrames) { stopRecording(); return; }
      showFrame(next % v.numFrames);
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

function startRecording() {
  state.follow = false;
  state.view.setFree(true);
  state.samples = {};
  state.recording = true;
  $('record').textContent = '■ Stop';
  showFrame(0);
  setPlaying(true);
}

function stopRecording() {
  state.recording = false;
  setPlaying(false);
  $('record').textContent = '● Record';
  describePath();
  hud();
}

/** The flown path as a cameras.json object (OpenCV w2c, K and size of the run's frames). */
function camerasJson() {
  const h = state.view.header;
  const w2c = fillPath(state.samples, h.num_frames);
  // with a moving source the viewer's world is source frame 0: the flown path is a world-frame path
  return { convention: 'opencv_w2c', frame: h.w2c_src ? 'world' : 'source', width: h.source_size[0], height: h.source_size[1], fps: h.fps, K: h.source_K, w2c };
}

function save() {
  const text = `${JSON.stringify(camerasJson(), null, 1)}\n`;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  a.download = 'cameras.json';
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
state.camerasJson = camerasJson;

async function main() {
  const sceneUrl = localUrl('scene');
  if (!sceneUrl) throw new Error('no scene given: open this page from `ex4d view OUT` or from the app');
  const camerasUrl = localUrl('cameras');
  const [scene, runPath] = await Promise.all([
    loadScene(sceneUrl),
    camerasUrl ? fetch(camerasUrl, { cache: 'no-cache' }).then(async (r) => (r.ok ? r.json() : Promise.reject(new Error(await responseError(r))))) : null,
  ]);
  if (runPath) {
    // The run's K is for its own frame size; the viewer's image is the export's source size (the same frames).
    const [W, H] = scene.header.source_size;
    const sx = W / runPath.width; const sy = H / runPath.height;
    const Ks = Array.isArray(runPath.K[0][0]) ? runPath.K : runPath.w2c.map(() => runPath.K);
    // a path relative to each source frame, shown in the world of a moving source: w2c_world = w2c_rel · w2c_src
    if (scene.header.w2c_src && runPath.frame !== 'world') runPath.w2c = runPath.w2c.map((m, t) => matmul4(m, scene.header.w2c_src[t]));
    runPath.K = Ks.map((K) => [[K[0][0] * sx, K[0][1] * sx, (K[0][2] + 0.5) * sx - 0.5], [0, K[1][1] * sy, (K[1][2] + 0.5) * sy - 0.5], [0, 0, 1]]);
    state.runPath = runPath;
  }
  const v = new SceneView($('view'), scene);
  state.view = v;
  $('frame').max = v.numFrames - 1;
  v.onChange(hud);
  v.controls.addEventListener('change', () => { if (state.follow) state.follow = false; });
  showFrame(0);
  $('view-msg').textContent = '';

  $('frame').addEventListener('input', () => showFrame(Number($('frame').value)));
  $('play').addEventListener('click', () => setPlaying(!state.playing));
  $('speed').addEventListener('change', () => { state.speed = Number($('speed').value); });
  $('hide-unknown').addEventListener('change', (e) => v.setHideUnknown(e.target.checked));
  $('show-path').addEventListener('change', () => showFrame(v.frame));
  $('record').addEventListener('click', () => (state.recording ? stopRecording() : startRecording()));
  $('add-key').addEventListener('click', sample);
  $('clear').addEventListener('click', () => { state.samples = {}; describePath(); });
  $('source-view').addEventListener('click', () => { state.follow = false; v.setFree(true); v.resetCamera(); hud(); });
  $('run-view').disabled = !state.runPath;
  $('run-view').addEventListener('click', () => { v.setFree(true); state.follow = true; showFrame(v.frame); });
  $('save').addEventListener('click', save);
  $('ipd').value = Number(v.stereo.ipd.toPrecision(3));
  const stereo = () => v.setStereo($('stereo').value, Number($('ipd').value) > 0 ? Number($('ipd').value) : undefined);
  $('stereo').addEventListener('change', stereo);
  $('ipd').addEventListener('change', stereo);
  const assetUrl = localUrl('asset');
  if (assetUrl) {
    $('asset-box').hidden = false;
    $('open-asset').href = `/view?glb=${encodeURIComponent(assetUrl)}`;
  }
  describePath();
  document.body.dataset.ready = '1';
}

/** The page for an exported 4D asset (?glb=URL): play its frames, orbit freely or look through the output camera. */
async function mainAsset(url) {
  const gltf = await loadAsset(url);
  const v = new AssetView($('view'), gltf);
  state.asset = v;
  document.querySelector('section.controls').hidden = true;
  for (const id of ['hide-unknown', 'show-path', 'stereo']) $(id).closest('label').hidden = true;
  $('through-output').hidden = !v.cameraData;
  $('view-help').textContent = 'The generated scene as ex4d export writes it: one coloured mesh per output frame. Drag to orbit, '
    + 'wheel to zoom; "Through the output camera" shows it as the video does. Dark: no surface (depth edges are left open).';
  $('frame').max = v.numFrames - 1;
  const show = (t) => {
    v.setFrame(t);
    $('frame').value = v.frame;
    $('frame-label').textContent = `${v.frame + 1}/${v.numFrames}`;
    $('hud').textContent = `4D asset · frame ${v.frame + 1}/${v.numFrames} · ${v.info().vertices} vertices`;
  };
  $('frame').addEventListener('input', () => show(Number($('frame').value)));
  $('through').addEventListener('change', (e) => { v.setThrough(e.target.checked); show(v.frame); });
  $('play').addEventListener('click', () => {
    state.playing = !state.playing;
    $('play').textContent = state.playing ? '❚❚' : '▶';
    let last = performance.now();
    const step = (now) => {
      if (!state.playing) return;
      if (now - last >= 1000 / v.fps) { last = now; show((v.frame + 1) % v.numFrames); }
      requestAnimationFrame(step);
    };
    if (state.playing) requestAnimationFrame(step);
  });
  show(0);
  $('view-msg').textContent = '';
  document.body.dataset.ready = '1';
}

const glb = localUrl('glb');
(glb ? mainAsset(glb) : main()).catch((e) => { showError(`The viewer could not start: ${e.message}`); $('view-msg').textContent = e.message; });
