// Camera conventions between ex4d (OpenCV) and three.js (OpenGL).
//
// ex4d: camera axes x right, y down, z forward; extrinsics are world-to-camera
// 4×4 matrices `w2c`; world = the source camera; intrinsics K in pixels with
// pixel centres at integer coordinates. The viewer draws the scene directly in
// that world frame, so only the camera needs converting:
//   c2w_gl = c2w_cv · F,  w2c_cv = F · w2c_gl,  F = diag(1, −1, −1, 1)
// (three.js cameras look down −z with y up). Matrices here are row-major
// arrays of rows, as in cameras.json.
import * as THREE from 'three';

const F = new THREE.Matrix4().makeScale(1, -1, -1);

/** THREE.Matrix4 from a row-major 4×4 array of rows. */
export function matrixFromRows(rows) {
  const m = new THREE.Matrix4();
  m.set(...rows[0], ...rows[1], ...rows[2], ...rows[3]);
  return m;
}

/** Row-major 4×4 array of rows of a THREE.Matrix4. */
export function rowsFromMatrix(m) {
  const e = m.elements; // column-major
  return [0, 1, 2, 3].map((r) => [e[r], e[r + 4], e[r + 8], e[r + 12]]);
}

/** Place a three.js camera at the OpenCV world-to-camera pose `w2c` (rows). */
export function setCameraFromW2C(camera, w2c) {
  const c2wGl = matrixFromRows(w2c).invert().multiply(F);
  c2wGl.decompose(camera.position, camera.quaternion, camera.scale);
  camera.updateMatrixWorld(true);
}

/** OpenCV world-to-camera (rows) of a three.js camera. */
export function w2cFromCamera(camera) {
  camera.updateMatrixWorld(true);
  const w2cGl = camera.matrixWorld.clone().invert();
  return rowsFromMatrix(F.clone().multiply(w2cGl));
}

/**
 * OpenGL projection of pinhole intrinsics K (pixels, integer pixel centres) for a width×height image.
 * Pixel u spans [u − ½, u + ½], so the image spans [−½, W − ½]: NDC x = 2(u + ½)/W − 1.
 */
export function projectionFromK(K, width, height, near, far) {
  const [fx, s, cx] = K[0];
  const [, fy, cy] = K[1];
  const m = new THREE.Matrix4();
  m.set(
    (2 * fx) / width, (-2 * s) / width, 1 - (2 * (cx + 0.5)) / width, 0,
    0, (2 * fy) / height, (2 * (cy + 0.5)) / height - 1, 0,
    0, 0, -(far + near) / (far - near), (-2 * far * near) / (far - near),
    0, 0, -1, 0,
  );
  return m;
}

/** Apply K to a camera (the projection matrix is set by hand; three.js must not recompute it). */
export function setCameraIntrinsics(camera, K, width, height, near, far) {
  camera.near = near;
  camera.far = far;
  camera.aspect = width / height;
  camera.fov = (2 * Math.atan(height / 2 / K[1][1]) * 180) / Math.PI;
  camera.projectionMatrix.copy(projectionFromK(K, width, height, near, far));
  camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
}

/** Camera centre (THREE.Vector3, world) of an OpenCV w2c. */
export function centreOf(w2c) {
  return new THREE.Vector3().setFromMatrixPosition(matrixFromRows(w2c).invert());
}

/** World points [apex, 4 image corners at depth `depth`] of the frustum of (K, w2c) for a W×H image. */
export function frustumPoints(w2c, K, width, height, depth) {
  const c2w = matrixFromRows(w2c).invert();
  const [fx, , cx] = K[0];
  const [, fy, cy] = K[1];
  const corners = [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]];
  const pts = [new THREE.Vector3(0, 0, 0)];
  for (const [u, v] of corners) pts.push(new THREE.Vector3(((u - cx) / fx) * depth, ((v - cy) / fy) * depth, depth));
  return pts.map((p) => p.applyMatrix4(c2w));
}

/**
 * Per-frame w2c (rows) for frames 0..T−1 from sparse samples {frame: w2c}: poses between two samples are
 * interpolated (rotation slerp, centre lerp); before the first / after the last sample they are held.
 */
export function fillPath(samples, numFrames) {
  const keys = Object.keys(samples).map(Number).sort((a, b) => a - b);
  if (!keys.length) throw new Error('no camera samples');
  const poses = Object.fromEntries(keys.map((k) => {
    const c2w = matrixFromRows(samples[k]).invert();
    const p = new THREE.Vector3(); const q = new THREE.Quaternion(); const s = new THREE.Vector3();
    c2w.decompose(p, q, s);
    return [k, { p, q }];
  }));
  const out = [];
  for (let t = 0; t < numFrames; t++) {
    if (samples[t]) { out.push(samples[t]); continue; }
    let a = keys[0]; let b = keys[keys.length - 1];
    for (const k of keys) { if (k <= t) a = k; if (k >= t) { b = k; break; } }
    if (t < keys[0]) b = a = keys[0];
    if (t > keys[keys.length - 1]) a = b = keys[keys.length - 1];
    const w = a === b ? 0 : (t - a) / (b - a);
    const p = poses[a].p.clone().lerp(poses[b].p, w);
    const q = poses[a].q.clone().slerp(poses[b].q, w);
    const c2w = new THREE.Matrix4().compose(p, q, new THREE.Vector3(1, 1, 1));
    out.push(rowsFromMatrix(c2w.invert()));
  }
  return out;
}

/** Orbit angles of a camera centre around a pivot, in ex4d's convention (+yaw right, +pitch up), degrees. */
export function orbitAngles(centre, pivot) {
  const d = centre.clone().sub(pivot);
  const r = d.length();
  const yaw = (Math.atan2(d.x, -d.z) * 180) / Math.PI;
  const pitch = (Math.asin(Math.max(-1, Math.min(1, -d.y / (r || 1)))) * 180) / Math.PI;
  return { yaw, pitch, distance: r };
}

/** Camera centre on the orbit sphere (inverse of orbitAngles). */
export function orbitCentre(pivot, yawDeg, pitchDeg, distance) {
  const y = (yawDeg * Math.PI) / 180; const p = (pitchDeg * Math.PI) / 180;
  return new THREE.Vector3(Math.sin(y) * Math.cos(p), -Math.sin(p), -Math.cos(y) * Math.cos(p))
    .multiplyScalar(distance).add(pivot);
}
