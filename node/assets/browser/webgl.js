// dpow's WebGL2 solver: a fragment shader hashes one nonce per pixel, BLAKE2b's 64-bit words
// held as uvec2 (low, high) pairs of 32-bit integers. A pixel whose value meets the
// threshold is drawn white; the page reads the pixels back, and every hit is re-checked by
// the WebAssembly kernel's scalar hash before it is returned. Same API as solver.js's
// createSolver: solve(rootHex, thresholdHex), cancel(), idle(), hashRate(), close().

import {RateMeter, atLeast, loadKernel, parseRoot, parseU64, randomNonce, u64Hex, yieldOnce} from './solver.js';

/** Pixels per row; a draw covers `WIDTH × rows` nonces. */
const WIDTH = 1024;
const MAX_ROWS = 1024;
const MIN_ROWS = 1;
/** Aim for draws of about this many milliseconds (keeps a cancel prompt). */
const DRAW_MS = 25;

const IV = [
  '6a09e667f3bcc908', 'bb67ae8584caa73b', '3c6ef372fe94f82b', 'a54ff53a5f1d36f1',
  '510e527fade682d1', '9b05688c2b3e6c1f', '1f83d9abfb41bd6b', '5be0cd19137e2179',
];
const SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
  [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
  [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
  [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
  [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

/** A 64-bit hex constant as a GLSL uvec2(lo, hi). */
function u64Const(hex) {
  return `uvec2(0x${hex.slice(8)}u, 0x${hex.slice(0, 8)}u)`;
}

/** The state's initial words: chaining value (8-byte digest, no key), IV, length 40, last block. */
function startState() {
  const xor = (hex, low) => {
    const lo = (parseInt(hex.slice(8), 16) ^ low) >>> 0;
    return hex.slice(0, 8) + lo.toString(16).padStart(8, '0');
  };
  const not = (hex) =>
    hex.replace(/./g, (c) => (15 - parseInt(c, 16)).toString(16));
  const v = [xor(IV[0], 0x01010008), ...IV.slice(1), ...IV];
  v[12] = xor(v[12], 40);
  v[14] = not(v[14]);
  return v;
}

/** The fragment shader: all twelve rounds unrolled, zero message words left out. */
function fragmentSource() {
  const lines = [];
  // Message word i: 0 the nonce, 1-4 the root, the rest zero (null: nothing to add).
  const m = (i) => (i === 0 ? 'n' : i <= 4 ? `u_root[${i - 1}]` : null);
  const addM = (a, i) => (m(i) ? `  v${a} = add(v${a}, ${m(i)});` : null);
  const g = (a, b, c, d, x, y) => {
    lines.push(`  v${a} = add(v${a}, v${b});`);
    const ax = addM(a, x);
    if (ax) lines.push(ax);
    lines.push(`  v${d} = (v${d} ^ v${a}).yx;`);
    lines.push(`  v${c} = add(v${c}, v${d});`);
    lines.push(`  v${b} = rotr(v${b} ^ v${c}, 24u);`);
    lines.push(`  v${a} = add(v${a}, v${b});`);
    const ay = addM(a, y);
    if (ay) lines.push(ay);
    lines.push(`  v${d} = rotr(v${d} ^ v${a}, 16u);`);
    lines.push(`  v${c} = add(v${c}, v${d});`);
    lines.push(`  v${b} = rotl1(v${b} ^ v${c});`);
  };
  const start = startState();
  for (let i = 0; i < 16; i++) lines.push(`  uvec2 v${i} = ${u64Const(start[i])};`);
  for (let r = 0; r < 12; r++) {
    const s = SIGMA[r % 10];
    g(0, 4, 8, 12, s[0], s[1]);
    g(1, 5, 9, 13, s[2], s[3]);
    g(2, 6, 10, 14, s[4], s[5]);
    g(3, 7, 11, 15, s[6], s[7]);
    g(0, 5, 10, 15, s[8], s[9]);
    g(1, 6, 11, 12, s[10], s[11]);
    g(2, 7, 8, 13, s[12], s[13]);
    g(3, 4, 9, 14, s[14], s[15]);
  }
  return `#version 300 es
precision highp float;
precision highp int;
uniform uvec2 u_base;
uniform uvec2 u_thr;
uniform uvec2 u_root[4];
out vec4 color;
uvec2 add(uvec2 a, uvec2 b) {
  uint lo = a.x + b.x;
  return uvec2(lo, a.y + b.y + (lo < a.x ? 1u : 0u));
}
uvec2 rotr(uvec2 a, uint k) {
  return uvec2((a.x >> k) | (a.y << (32u - k)), (a.y >> k) | (a.x << (32u - k)));
}
uvec2 rotl1(uvec2 a) {
  return uvec2((a.x << 1u) | (a.y >> 31u), (a.y << 1u) | (a.x >> 31u));
}
void main() {
  uint idx = uint(gl_FragCoord.y) * ${WIDTH}u + uint(gl_FragCoord.x);
  uvec2 n = add(u_base, uvec2(idx, 0u));
${lines.join('\n')}
  uvec2 h = ${u64Const(start[0])} ^ v0 ^ v8;
  bool hit = h.y > u_thr.y || (h.y == u_thr.y && h.x >= u_thr.x);
  color = hit ? vec4(1.0) : vec4(0.0);
}`;
}

const VERTEX = `#version 300 es
void main() {
  vec2 p = vec2(gl_VertexID == 1 ? 3.0 : -1.0, gl_VertexID == 2 ? 3.0 : -1.0);
  gl_Position = vec4(p, 0.0, 1.0);
}`;

function compile(gl, type, source) {
  const sh = gl.createShader(type);
  gl.shaderSource(sh, source);
  gl.compileShader(sh);
  if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) {
    throw new Error(`shader: ${gl.getShaderInfoLog(sh)}`);
  }
  return sh;
}

class WebglSolver {
  constructor(kernel, gl) {
    this.backend = 'webgl';
    this.kernel = kernel;
    this.gl = gl;
    this.meter = new RateMeter();
    this.rows = 8;
    this.pixels = new Uint8Array(WIDTH * MAX_ROWS * 4);
    this.job = 0;
    this.running = null; // the promise of the current loop
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, fragmentSource()));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) {
      throw new Error(`program: ${gl.getProgramInfoLog(prog)}`);
    }
    gl.useProgram(prog);
    this.u = {
      base: gl.getUniformLocation(prog, 'u_base'),
      thr: gl.getUniformLocation(prog, 'u_thr'),
      root: gl.getUniformLocation(prog, 'u_root'),
    };
    gl.bindVertexArray(gl.createVertexArray());
  }

  /** One draw of `rows` rows from nonce `base`: the first pixel that hit, or -1. */
  draw(base, rows) {
    const gl = this.gl;
    gl.viewport(0, 0, WIDTH, rows);
    gl.uniform2ui(this.u.base, base[0], base[1]);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    const px = this.pixels.subarray(0, WIDTH * rows * 4);
    gl.readPixels(0, 0, WIDTH, rows, gl.RGBA, gl.UNSIGNED_BYTE, px);
    for (let i = 0; i < WIDTH * rows; i++) {
      if (px[4 * i] !== 0) return i;
    }
    return -1;
  }

  async loop(id, root, threshold) {
    const gl = this.gl;
    const words = new Uint32Array(8);
    const dv = new DataView(root.buffer, root.byteOffset, 32);
    for (let i = 0; i < 8; i++) words[i] = dv.getUint32(4 * i, true);
    gl.uniform2uiv(this.u.root, words);
    gl.uniform2ui(this.u.thr, threshold[0], threshold[1]);
    let base = randomNonce();
    while (this.job === id) {
      const rows = this.rows;
      const t0 = performance.now();
      const hit = this.draw(base, rows);
      const dt = Math.max(performance.now() - t0, 0.1);
      const n = WIDTH * rows;
      this.meter.add(hit >= 0 ? hit + 1 : n);
      if (hit >= 0) {
        const lo = base[0] + hit;
        const nonce = [lo >>> 0, lo > 0xffffffff ? (base[1] + 1) >>> 0 : base[1]];
        if (atLeast(this.kernel.workValue(root, nonce), threshold)) return u64Hex(nonce);
        // A hit the scalar hash disagrees with: the GPU is wrong; stop rather than loop.
        throw new Error(`the GPU reported nonce ${u64Hex(nonce)}, which does not meet the threshold`);
      }
      const next = base[0] + n;
      base = [next >>> 0, next > 0xffffffff ? (base[1] + 1) >>> 0 : base[1]];
      const want = Math.round((rows * DRAW_MS) / dt);
      this.rows = Math.min(MAX_ROWS, Math.max(MIN_ROWS, want, rows >> 1), rows * 2);
      await yieldOnce();
    }
    return null;
  }

  /** The first nonce found, or null if cancelled first. */
  solve(rootHex, thresholdHex) {
    const root = parseRoot(rootHex);
    const threshold = parseU64(thresholdHex);
    const id = ++this.job;
    this.meter.start();
    const run = (this.running || Promise.resolve())
      .catch(() => null)
      .then(() => (this.job === id ? this.loop(id, root, threshold) : null));
    this.running = run.finally(() => {
      if (this.job === id) this.meter.stop();
    });
    return run.then((r) => {
      if (this.job === id) this.job++;
      return r;
    });
  }

  cancel() {
    this.job++;
    this.meter.stop();
  }

  idle() {
    return (this.running || Promise.resolve()).catch(() => null).then(() => undefined);
  }

  hashRate() {
    return this.meter.rate();
  }

  totalHashes() {
    return this.meter.total;
  }

  close() {
    this.cancel();
    const lose = this.gl.getExtension('WEBGL_lose_context');
    if (lose) lose.loseContext();
  }
}

/** A WebGL2 solver on an offscreen canvas; throws where WebGL2 is missing. */
export async function createWebglSolver({kernel = null} = {}) {
  const k = kernel || (await loadKernel());
  const canvas =
    typeof OffscreenCanvas !== 'undefined'
      ? new OffscreenCanvas(WIDTH, MAX_ROWS)
      : Object.assign(document.createElement('canvas'), {width: WIDTH, height: MAX_ROWS});
  const gl = canvas.getContext('webgl2', {antialias: false, depth: false, stencil: false});
  if (!gl) throw new Error('no WebGL2');
  return new WebglSolver(k, gl);
}
