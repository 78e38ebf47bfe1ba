// Stereo views in the browser, with the geometry of ex4d/stereo.py: the right eye sits `ipd` along the left
// camera's +x axis (axes parallel) and its sensor is shifted, cx_R = cx + fx·ipd/convergence, so points at the
// convergence depth have zero parallax. Layouts: 'sbs' (left | right, each squeezed to half the canvas) and
// 'anaglyph' (red/cyan, Dubois' matrices in linear light, as ex4d/io/stereo_video.py).
import * as THREE from 'three';
import { setCameraIntrinsics } from './cameras.js';

export const STEREO_MODES = ['off', 'anaglyph', 'sbs'];

/** Right-eye intrinsics (rows) of left-eye K (rows): the principal point moves by fx·ipd/convergence. */
export function rightEyeK(K, ipd, convergence) {
  const shift = Number.isFinite(convergence) && convergence > 0 ? (K[0][0] * ipd) / convergence : 0;
  return [[K[0][0], K[0][1], K[0][2] + shift], [...K[1]], [...K[2]]];
}

// Dubois (rows = output R, G, B), as DUBOIS_LEFT / DUBOIS_RIGHT in ex4d/io/stereo_video.py
const DUBOIS_LEFT = [[0.4561, 0.500484, 0.176381], [-0.0400822, -0.0378246, -0.0157589], [-0.0152161, -0.0205971, -0.00546856]];
const DUBOIS_RIGHT = [[-0.0434706, -0.0879388, -0.00155529], [0.378476, 0.73364, -0.0184503], [-0.0721527, -0.112961, 1.2264]];

function mat3(rows) {
  return new THREE.Matrix3().set(...rows[0], ...rows[1], ...rows[2]);
}

const ANAGLYPH_FRAGMENT = /* glsl */`
precision highp float;
uniform sampler2D left;
uniform sampler2D right;
uniform mat3 mLeft;
uniform mat3 mRight;
in vec2 vUv;
layout(location = 0) out highp vec4 fragColor;
vec3 toLinear(vec3 c) { return mix(c / 12.92, pow((c + 0.055) / 1.055, vec3(2.4)), step(0.04045, c)); }
vec3 toSrgb(vec3 c) { return mix(12.92 * c, 1.055 * pow(max(c, vec3(0.0031308)), vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c)); }
void main() {
  vec3 l = toLinear(texture(left, vUv).rgb);
  vec3 r = toLinear(texture(right, vUv).rgb);
  fragColor = vec4(toSrgb(clamp(mLeft * l + mRight * r, 0.0, 1.0)), 1.0);
}`;

const QUAD_VERTEX = /* glsl */`
out vec2 vUv;
void main() { vUv = uv; gl_Position = vec4(position.xy, 0.0, 1.0); }`;

/** Draws a scene through a left camera and its right eye, side by side or as an anaglyph. */
export class StereoRenderer {
  constructor(renderer) {
    this.renderer = renderer;
    this.right = new THREE.PerspectiveCamera();
    this.targets = null;
    this.material = new THREE.ShaderMaterial({
      glslVersion: THREE.GLSL3,
      vertexShader: QUAD_VERTEX,
      fragmentShader: ANAGLYPH_FRAGMENT,
      uniforms: { left: { value: null }, right: { value: null }, mLeft: { value: mat3(DUBOIS_LEFT) }, mRight: { value: mat3(DUBOIS_RIGHT) } },
      depthTest: false,
      depthWrite: false,
    });
    this.quad = new THREE.Mesh(new THREE.PlaneGeometry(2, 2), this.material);
    this.quad.frustumCulled = false;
    this.quadScene = new THREE.Scene();
    this.quadScene.add(this.quad);
    this.quadCamera = new THREE.OrthographicCamera(-1, 1, 1, -1, 0, 1);
  }

  /** Place the right-eye camera: `ipd` along the left camera's +x axis, K shifted; image W×H, near/far planes. */
  placeRight(left, K, [W, H], near, far, ipd, convergence) {
    left.updateMatrixWorld(true);
    const x = new THREE.Vector3(1, 0, 0).applyQuaternion(left.quaternion);
    this.right.position.copy(left.position).addScaledVector(x, ipd);
    this.right.quaternion.copy(left.quaternion);
    this.right.scale.set(1, 1, 1);
    this.right.updateMatrixWorld(true);
    setCameraIntrinsics(this.right, rightEyeK(K, ipd, convergence), W, H, near, far);
    return this.right;
  }

  ensureTargets(w, h) {
    if (this.targets && this.targets[0].width === w && this.targets[0].height === h) return;
    if (this.targets) for (const t of this.targets) t.dispose();
    const opts = { minFilter: THREE.NearestFilter, magFilter: THREE.NearestFilter, type: THREE.UnsignedByteType };
    this.targets = [new THREE.WebGLRenderTarget(w, h, opts), new THREE.WebGLRenderTarget(w, h, opts)];
  }

  /** Render `scene` through `left` and the right eye in `mode` ('sbs' | 'anaglyph') into the canvas. */
  render(mode, scene, left, K, imageSize, near, far, ipd, convergence) {
    const r = this.renderer;
    const right = this.placeRight(left, K, imageSize, near, far, ipd, convergence);
    const size = r.getDrawingBufferSize(new THREE.Vector2());
    const pr = r.getPixelRatio();
    const [w, h] = [size.x / pr, size.y / pr];
    if (mode === 'sbs') {
      r.setScissorTest(true);
      for (const [cam, x0] of [[left, 0], [right, w / 2]]) {
        r.setViewport(x0, 0, w / 2, h);
        r.setScissor(x0, 0, w / 2, h);
        r.render(scene, cam);
      }
      r.setScissorTest(false);
      r.setViewport(0, 0, w, h);
      return;
    }
    this.ensureTargets(size.x, size.y);
    for (const [cam, target] of [[left, this.targets[0]], [right, this.targets[1]]]) {
      r.setRenderTarget(target);
      r.clear();
      r.render(scene, cam);
    }
    r.setRenderTarget(null);
    this.material.uniforms.left.value = this.targets[0].texture;
    this.material.uniforms.right.value = this.targets[1].texture;
    r.render(this.quadScene, this.quadCamera);
  }

  dispose() {
    if (this.targets) for (const t of this.targets) t.dispose();
    this.material.dispose();
    this.quad.geometry.dispose();
  }
}
