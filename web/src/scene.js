// The 4D scene on the GPU: one static pixel grid whose vertices a shader lifts to each frame's depth.
//
// Reads the export of ex4d/app/export.py (magic "EX4DSCN1", JSON header, per-frame log-quantised depth,
// per-quad occlusion bits and a JPEG). Faces the run flags as occluded (the same DW-Mesh criterion)
// are drawn magenta, or hidden; everything outside the mesh is the dark "unknown" background.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import {
  centreOf, frustumPoints, orbitAngles, orbitCentre, setCameraFromW2C, setCameraIntrinsics, w2cFromCamera,
} from './cameras.js';
import { StereoRenderer } from './stereo.js';

THREE.ColorManagement.enabled = false; // colours pass through untouched, as in the run's videos

const MAGIC = 'EX4DSCN1';

/** Message of a failed fetch: the server's {"error": ...} when there is one. */
export async function responseError(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

/** Fetch and decode a scene export → {header, frames: [{depth: Float32Array, occ: Uint8Array, color: ImageBitmap}]}. */
export async function loadScene(url) {
  const resp = await fetch(url, { cache: 'no-cache', credentials: 'same-origin' });
  if (!resp.ok) throw new Error(await responseError(resp));
  const buf = await resp.arrayBuffer();
  const bytes = new Uint8Array(buf);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) throw new Error('not an ex4d scene export');
  const n = new DataView(buf).getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + n)));
  const base = 12 + n;
  const { width: w, height: h, depth_min: dmin, depth_max: dmax } = header;
  const span = dmax > dmin ? Math.log(dmax / dmin) : 1;
  const frames = await Promise.all(header.frames.map(async (fr) => {
    const q = new Uint16Array(buf.slice(base + fr.depth[0], base + fr.depth[0] + fr.depth[1]));
    const depth = new Float32Array(w * h);
    for (let i = 0; i < depth.length; i++) depth[i] = dmin * Math.exp((q[i] / 65535) * span);
    const occ = bytes.slice(base + fr.occ[0], base + fr.occ[0] + fr.occ[1]);
    const jpeg = new Blob([bytes.subarray(base + fr.color[0], base + fr.color[0] + fr.color[1])], { type: 'image/jpeg' });
    const color = await createImageBitmap(jpeg, { imageOrientation: 'none', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
    return { depth, occ, color };
  }));
  return { header, frames };
}

/** c2w rows [4][4] of a rigid OpenCV w2c (rows): [Rᵀ | −Rᵀt]. */
export function invertRigid(m) {
  const R = [0, 1, 2].map((i) => [0, 1, 2].map((j) => m[j][i]));
  const t = [0, 1, 2].map((i) => -(R[i][0] * m[0][3] + R[i][1] * m[1][3] + R[i][2] * m[2][3]));
  return [[...R[0], t[0]], [...R[1], t[1]], [...R[2], t[2]], [0, 0, 0, 1]];
}

/** Product of two 4×4 row matrices. */
export function matmul4(a, b) {
  return a.map((row) => [0, 1, 2, 3].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j] + row[3] * b[3][j]));
}

const VERTEX = /* glsl */`
precision highp float;
precision highp sampler2D;
uniform sampler2D depthTex;
uniform vec4 intr; // fx, fy, cx, cy of the grid
out vec2 vPix;
void main() {
  vec2 pix = position.xy;
  float z = texelFetch(depthTex, ivec2(pix), 0).r;
  vec3 p = vec3((pix.x - intr.z) / intr.x * z, (pix.y - intr.w) / intr.y * z, z);
  vPix = pix;
  gl_Position = projectionMatrix * modelViewMatrix * vec4(p, 1.0);
}`;

const FRAGMENT = /* glsl */`
precision highp float;
precision highp sampler2D;
uniform sampler2D colorTex;
uniform sampler2D occTex;
uniform vec2 gridSize;
uniform bool hideUnknown;
in vec2 vPix;
layout(location = 0) out highp vec4 fragColor;
void main() {
  // Which DW-Mesh face is this? Quad (i, j) = floor(pixel); upper-left face where x + y < 1.
  ivec2 q = clamp(ivec2(floor(vPix)), ivec2(0), ivec2(gridSize) - 2);
  vec2 f = vPix - vec2(q);
  int face = (f.x + f.y > 1.0) ? 1 : 0;
  int bits = int(texelFetch(occTex, q, 0).r * 255.0 + 0.5);
  if (((bits >> face) & 1) == 1) {
    if (hideUnknown) discard;
    fragColor = vec4(1.0, 0.0, 1.0, 1.0);
    return;
  }
  fragColor = vec4(texture(colorTex, (vPix + 0.5) / gridSize).rgb, 1.0);
}`;

function gridGeometry(w, h) {
  const pos = new Float32Array(w * h * 3);
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) { const k = 3 * (i * w + j); pos[k] = j; pos[k + 1] = i; }
  const idx = new Uint32Array((w - 1) * (h - 1) * 6);
  let n = 0;
  for (let i = 0; i < h - 1; i++) {
    for (let j = 0; j < w - 1; j++) {
      const a = i * w + j; const b = a + 1; const c = a + w; const d = c + 1;
      idx[n++] = c; idx[n++] = a; idx[n++] = b; // face 0 (upper-left), as ex4d.dwmesh
      idx[n++] = c; idx[n++] = b; idx[n++] = d; // face 1 (lower-right)
    }
  }
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.BufferAttribute(pos, 3));
  g.setIndex(new THREE.BufferAttribute(idx, 1));
  return g;
}

function frameTextures(header, fr) {
  const { width: w, height: h } = header;
  const depth = new THREE.DataTexture(fr.depth, w, h, THREE.RedFormat, THREE.FloatType);
  const occ = new THREE.DataTexture(fr.occ, w - 1, h - 1, THREE.RedFormat, THREE.UnsignedByteType);
  for (const t of [depth, occ]) {
    t.minFilter = t.magFilter = THREE.NearestFilter;
    t.unpackAlignment = 1;
    t.generateMipmaps = false;
    t.needsUpdate = true;
  }
  const color = new THREE.Texture(fr.color);
  color.flipY = false; // row 0 of the image is pixel row v = 0
  color.minFilter = THREE.LinearFilter;
  color.magFilter = THREE.LinearFilter;
  color.generateMipmaps = false;
  color.needsUpdate = true;
  return { depth, occ, color };
}

function lines(points, color) {
  const g = new THREE.BufferGeometry().setFromPoints(points);
  return new THREE.LineSegments(g, new THREE.LineBasicMaterial({ color, depthTest: true }));
}

/**
 * A canvas showing a scene export: frame selection, free orbit camera around the pivot (yaw/pitch clamped to
 * ±90° like ex4d's paths), or a fixed camera (w2c, K); optional camera path overlay.
 */
export class SceneView {
  constructor(canvas, scene, { background = 0x2a0f2a, limits = true } = {}) {
    this.canvas = canvas;
    this.data = scene;
    const { header } = scene;
    this.header = header;
    this.numFrames = header.num_frames;
    this.frame = 0;
    this.limits = limits;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true, alpha: false });
    this.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
    this.renderer.setClearColor(background, 1);
    this.scene = new THREE.Scene();
    this.textures = scene.frames.map((fr) => frameTextures(header, fr));
    const K = header.K;
    this.material = new THREE.ShaderMaterial({
      glslVersion: THREE.GLSL3,
      vertexShader: VERTEX,
      fragmentShader: FRAGMENT,
      side: THREE.DoubleSide,
      uniforms: {
        depthTex: { value: this.textures[0].depth },
        occTex: { value: this.textures[0].occ },
        colorTex: { value: this.textures[0].color },
        intr: { value: new THREE.Vector4(K[0][0], K[1][1], K[0][2], K[1][2]) },
        gridSize: { value: new THREE.Vector2(header.width, header.height) },
        hideUnknown: { value: false },
      },
    });
    this.mesh = new THREE.Mesh(gridGeometry(header.width, header.height), this.material);
    this.mesh.frustumCulled = false;
    // A moving source camera: frame t's mesh (source-camera-t coordinates) is placed in the world by c2w_src[t].
    this.w2cSrc = header.w2c_src || null;
    this.mesh.matrixAutoUpdate = false;
    this.scene.add(this.mesh);
    this.overlay = new THREE.Group();
    this.scene.add(this.overlay);

    // The camera sees the source image (its size and K), whatever the canvas size.
    this.imageSize = header.source_size;
    this.sourceK = header.source_K;
    this.pivot = new THREE.Vector3(0, 0, header.pivot_depth);
    this.near = Math.max(1e-3, header.depth_min * 0.02);
    this.far = header.depth_max * 50;
    this.camera = new THREE.PerspectiveCamera();
    this.camera.up.set(0, -1, 0); // OpenCV world: up is −y
    this.K = this.sourceK;
    this.applyIntrinsics();
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enablePan = false;
    this.controls.enableDamping = false;
    this.controls.minDistance = header.pivot_depth * 0.05;
    this.controls.maxDistance = header.pivot_depth * 4;
    this.controls.target.copy(this.pivot);
    this.controls.addEventListener('change', () => this.onControls());
    this.fixed = false;
    this.listeners = [];
    this.resetCamera();
    // stereo: ex4d's default geometry for this scene (the export's header), else the 1/30 rule on its nearest depth
    const st = header.stereo || { ipd: header.depth_min / 30, convergence: header.depth_min };
    this.stereo = { mode: 'off', ipd: st.ipd, convergence: st.convergence ?? Infinity };
    this.stereoRenderer = new StereoRenderer(this.renderer);
    this.resizeObserver = new ResizeObserver(() => this.fit());
    this.resizeObserver.observe(canvas.parentElement);
    this.fit();
  }

  /** Show the view in stereo: mode 'off' | 'anaglyph' | 'sbs'; ipd and convergence in scene units (default kept). */
  setStereo(mode, ipd, convergence) {
    this.stereo = { mode, ipd: ipd ?? this.stereo.ipd, convergence: convergence ?? this.stereo.convergence };
    this.render();
  }

  applyIntrinsics() {
    const [W, H] = this.imageSize;
    setCameraIntrinsics(this.camera, this.K, W, H, this.near, this.far);
  }

  /** Size the drawing buffer to the canvas's box at the image's aspect ratio (or exactly w×h when given). */
  fit(width, height) {
    const [W, H] = this.imageSize;
    if (width && height) {
      this.fixedSize = [width, height];
    }
    let w; let h;
    if (this.fixedSize) [w, h] = this.fixedSize;
    else {
      const box = this.canvas.parentElement.getBoundingClientRect();
      const scale = Math.min(box.width / W, (box.height || box.width * H / W) / H);
      w = Math.max(16, Math.floor(W * scale)); h = Math.max(16, Math.floor(H * scale));
    }
    this.renderer.setPixelRatio(1);
    this.renderer.setSize(w, h, !this.fixedSize);
    if (this.fixedSize) { this.canvas.style.width = ''; this.canvas.style.height = ''; }
    this.applyIntrinsics();
    this.render();
  }

  setFrame(t) {
    this.frame = Math.max(0, Math.min(this.numFrames - 1, Math.round(t)));
    const tex = this.textures[this.frame];
    const u = this.material.uniforms;
    u.depthTex.value = tex.depth; u.occTex.value = tex.occ; u.colorTex.value = tex.color;
    if (this.w2cSrc) {
      this.mesh.matrix.set(...invertRigid(this.w2cSrc[this.frame]).flat());
      this.mesh.matrixWorldNeedsUpdate = true;
    }
    this.render();
    this.emit();
  }

  setHideUnknown(hide) { this.material.uniforms.hideUnknown.value = !!hide; this.render(); }

  /** Free camera: orbit the pivot with the mouse. */
  setFree(free = true) {
    this.fixed = !free;
    this.controls.enabled = free;
    if (free) { this.K = this.sourceK; this.applyIntrinsics(); this.controls.update(); }
    this.render();
  }

  /** Look through an OpenCV camera (w2c rows, K of the source image; default the source K). */
  setCamera(w2c, K) {
    this.K = K || this.sourceK;
    this.applyIntrinsics();
    setCameraFromW2C(this.camera, w2c);
    this.render();
    this.emit();
  }

  /** Put the free camera at ex4d orbit angles around the pivot (distance in scene units; default the pivot depth). */
  setOrbit(yaw, pitch, distance) {
    const d = distance ?? this.header.pivot_depth;
    this.camera.position.copy(orbitCentre(this.pivot, yaw, pitch, d));
    this.camera.lookAt(this.pivot);
    this.controls.target.copy(this.pivot);
    this.controls.update();
    this.render();
  }

  /** A director's view from behind and above the source camera, showing the scene and the camera path. */
  setDirector() {
    const p = this.header.pivot_depth;
    const target = new THREE.Vector3(0, 0, 0.45 * p);
    this.camera.position.copy(orbitCentre(target, -35, 28, 1.45 * p));
    this.camera.lookAt(target);
    this.controls.target.copy(target);
    this.controls.update();
    this.render();
  }

  resetCamera() { this.K = this.sourceK; this.applyIntrinsics(); this.setOrbit(0, 0); }

  /** Current camera as OpenCV w2c rows. */
  w2c() { return w2cFromCamera(this.camera); }

  angles() { return orbitAngles(this.camera.position, this.pivot); }

  onControls() {
    if (this.limits && !this.fixed) {
      // Keep the camera within ex4d's range: yaw and pitch in [−90°, 90°] around the pivot.
      const a = this.angles();
      const yaw = Math.max(-90, Math.min(90, a.yaw)); const pitch = Math.max(-89, Math.min(89, a.pitch));
      if (yaw !== a.yaw || pitch !== a.pitch) {
        this.camera.position.copy(orbitCentre(this.pivot, yaw, pitch, a.distance));
        this.camera.lookAt(this.pivot);
      }
    }
    this.render();
    this.emit();
  }

  onChange(fn) { this.listeners.push(fn); }

  emit() { for (const fn of this.listeners) fn(this); }

  /** Draw a camera path: the line through the centres, the source frustum and frame t's frustum. */
  setPath(path, current) {
    this.overlay.clear();
    if (!path) { this.render(); return; }
    const [W, H] = this.imageSize;
    const s = this.header.pivot_depth * 0.15;
    const centres = path.w2c.map(centreOf);
    const seg = [];
    for (let i = 0; i + 1 < centres.length; i++) seg.push(centres[i], centres[i + 1]);
    if (seg.length) this.overlay.add(lines(seg, 0xffd400));
    const frustum = (w2c, K, color) => {
      const p = frustumPoints(w2c, K, W, H, s);
      this.overlay.add(lines([p[0], p[1], p[0], p[2], p[0], p[3], p[0], p[4], p[1], p[2], p[2], p[3], p[3], p[4], p[4], p[1]], color));
    };
    const identity = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
    if (this.w2cSrc) { // the source camera's own path, and its frustum at this frame
      const src = this.w2cSrc.map(centreOf);
      const sseg = [];
      for (let i = 0; i + 1 < src.length; i++) sseg.push(src[i], src[i + 1]);
      if (sseg.length) this.overlay.add(lines(sseg, 0xffffff));
    }
    frustum(this.w2cSrc ? this.w2cSrc[this.frame ?? 0] : identity, this.sourceK, 0xffffff);
    if (current != null && path.w2c[current]) frustum(path.w2c[current], path.K[current], 0x00e5ff);
    this.render();
  }

  render() {
    const st = this.stereo;
    if (st && st.mode !== 'off') {
      this.stereoRenderer.render(st.mode, this.scene, this.camera, this.K, this.imageSize, this.near, this.far,
        st.ipd, st.convergence);
    } else this.renderer.render(this.scene, this.camera);
  }

  /** RGBA pixels of the canvas (for tests and thumbnails). */
  pixels() {
    this.render();
    const gl = this.renderer.getContext();
    const w = gl.drawingBufferWidth; const h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    return { width: w, height: h, data: px }; // bottom row first (OpenGL)
  }

  dispose() {
    this.resizeObserver.disconnect();
    this.controls.dispose();
    for (const t of this.textures) { t.depth.dispose(); t.occ.dispose(); t.color.dispose(); }
    this.mesh.geometry.dispose();
    this.material.dispose();
    this.stereoRenderer.dispose();
    this.renderer.dispose();
  }
}
