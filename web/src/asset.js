// The exported 4D asset (`ex4d export … --format glb`) in the browser, through three.js's own glTF loader.
//
// The GLB holds one node per output frame (frame_00000 …) whose visibility the animation 'play' steps through
// (scale 0 ↔ 1, STEP), unlit vertex colours in linear RGB, and an 'output' camera that follows the video's path
// (its exact per-frame K and OpenCV w2c in the camera node's extras). See ex4d/assets.py.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { setCameraFromW2C, setCameraIntrinsics } from './cameras.js';
import { responseError } from './scene.js';

/** Fetch and parse a GLB → three.js's glTF result ({scene, animations, cameras, parser, …}). */
export async function loadAsset(url) {
  const resp = await fetch(url, { cache: 'no-cache', credentials: 'same-origin' });
  if (!resp.ok) throw new Error(await responseError(resp));
  const buf = await resp.arrayBuffer();
  return new GLTFLoader().parseAsync(buf, '');
}

/** A canvas playing a 4D asset: frame selection (the animation's time), a free orbit camera or the output camera. */
export class AssetView {
  constructor(canvas, gltf) {
    this.canvas = canvas;
    this.gltf = gltf;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true, alpha: false });
    this.renderer.outputColorSpace = THREE.SRGBColorSpace; // the vertex colours are linear (glTF), shown as sRGB
    this.renderer.setClearColor(0x0c0d10, 1);
    this.scene = gltf.scene;
    this.frames = [];
    this.scene.traverse((o) => { if (/^frame_\d+$/.test(o.name) && o.isObject3D && !o.isMesh) this.frames.push(o); });
    if (!this.frames.length) this.scene.traverse((o) => { if (/^frame_\d+$/.test(o.name) && o.isMesh) this.frames.push(o); });
    this.frames.sort((a, b) => a.name.localeCompare(b.name));
    this.numFrames = this.frames.length;
    const extras = (gltf.parser && gltf.parser.json && gltf.parser.json.extras) || {};
    this.fps = extras.fps || 24;
    this.mixer = new THREE.AnimationMixer(this.scene);
    this.clip = gltf.animations.find((a) => a.name === 'play') || gltf.animations[0] || null;
    if (this.clip) {
      this.action = this.mixer.clipAction(this.clip);
      this.action.play();
    }
    this.outputNode = this.scene.getObjectByName('output');
    const camExtras = this.outputNode ? this.outputNode.userData || {} : {};
    this.cameraData = camExtras.w2c ? camExtras : null; // GLTFLoader puts a node's extras in userData
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.01, 1000);
    const box = new THREE.Box3();
    for (const f of this.frames) box.expandByObject(f);
    this.centre = box.isEmpty() ? new THREE.Vector3() : box.getCenter(new THREE.Vector3());
    this.radius = box.isEmpty() ? 1 : box.getSize(new THREE.Vector3()).length() / 2;
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener('change', () => this.render());
    this.through = false;
    this.frame = 0;
    this.resetCamera();
    this.fit();
  }

  resetCamera() {
    this.camera.position.copy(this.centre).add(new THREE.Vector3(0.35, 0.25, 1).multiplyScalar(this.radius * 1.6));
    this.camera.near = this.radius / 500;
    this.camera.far = this.radius * 50;
    this.camera.lookAt(this.centre);
    this.controls.target.copy(this.centre);
    this.controls.update();
  }

  /** Size the drawing buffer: exactly w×h when given, else the canvas box (the video's aspect through the camera). */
  fit(width, height) {
    if (width && height) this.fixedSize = [width, height];
    let w; let h;
    if (this.fixedSize) [w, h] = this.fixedSize;
    else {
      const box = this.canvas.parentElement.getBoundingClientRect();
      w = Math.max(16, Math.floor(box.width)); h = Math.max(16, Math.floor(box.height || box.width * 0.6));
    }
    this.renderer.setPixelRatio(1);
    this.renderer.setSize(w, h, !this.fixedSize);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.setFrame(this.frame);
  }

  /** Show frame t: the animation at the middle of frame t's interval (only that frame's node is scaled to 1). */
  setFrame(t) {
    this.frame = Math.max(0, Math.min(this.numFrames - 1, Math.round(t)));
    if (this.clip) this.mixer.setTime((this.frame + 0.5) / this.fps);
    if (this.through) this.applyOutputCamera();
    this.render();
  }

  /** Look through the output camera of the current frame (its exact K and w2c from the camera node's extras). */
  setThrough(on) {
    this.through = !!on;
    this.controls.enabled = !this.through;
    if (!this.through) { this.camera.aspect = this.renderer.domElement.width / this.renderer.domElement.height; this.camera.updateProjectionMatrix(); }
    this.setFrame(this.frame);
  }

  applyOutputCamera() {
    const d = this.cameraData;
    if (!d) return;
    const K = Array.isArray(d.K[0][0]) ? d.K[this.frame] : d.K;
    // the asset's world is glTF's: diag(1, −1, −1) of ex4d's OpenCV world; w2c_asset = w2c_cv · diag(1, −1, −1, 1)
    const w2c = d.w2c[this.frame].map((row) => [row[0], -row[1], -row[2], row[3]]);
    setCameraFromW2C(this.camera, w2c);
    setCameraIntrinsics(this.camera, K, d.width, d.height, this.radius / 500, this.radius * 50);
  }

  /** Which frame nodes are visible now (scale > 0): exactly [this.frame] when the animation plays. */
  visibleFrames() {
    const scale = (o) => (o ? Math.abs(o.scale.x * o.scale.y * o.scale.z) * scale(o.parent) : 1); // (a zero-scale
    return this.frames.map((f, i) => [i, scale(f)]).filter(([, s]) => s > 1e-9).map(([i]) => i); // matrix won't decompose)
  }

  info() {
    let vertices = 0;
    this.scene.traverse((o) => { if (o.isMesh) vertices += o.geometry.attributes.position.count; });
    return {
      frames: this.numFrames, fps: this.fps, animation: this.clip ? this.clip.name : null,
      cameras: this.gltf.cameras.map((c) => c.name), vertices,
      vertexColors: this.frames.every((f) => { let ok = false; f.traverse((o) => { if (o.isMesh && o.geometry.attributes.color) ok = true; }); return ok; }),
    };
  }

  render() { this.renderer.render(this.scene, this.camera); }

  /** RGBA pixels of the canvas (bottom row first). */
  pixels() {
    this.render();
    const gl = this.renderer.getContext();
    const w = gl.drawingBufferWidth; const h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    return { width: w, height: h, data: px };
  }
}
