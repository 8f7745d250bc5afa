// dpow's browser solver: Nano proof of work in a page, on every core (WebAssembly SIMD in Web
// Workers) or on the GPU (WebGL2, webgl.js), behind one small API:
//
//   import {createSolver, pickBackend} from './solver.js';
//   const s = await createSolver({threads: 4});
//   const work = await s.solve(rootHex, thresholdHex); // 16 hex digits as Nano prints work,
//                                                      // or null when cancelled
//   s.cancel(); s.hashRate(); s.close();
//
//   const {solver, backend, rates} = await pickBackend(); // a short measured race
//
// Roots are 64 hex digits (the block hash or account key, as Nano prints it); thresholds
// and work are 16 hex digits, the u64 big-endian as Nano prints difficulty and work.
// Every file is fetched from this module's own directory. docs/browser.md has the details.

import {createWebglSolver} from './webgl.js';

const HERE = import.meta.url;
/** The window hashRate() averages over, in milliseconds. */
const RATE_WINDOW_MS = 3000;
/** How long pickBackend() runs each backend by default, in milliseconds. */
const RACE_MS = 1500;

/** 32 bytes from 64 hex digits; throws on anything else. */
export function parseRoot(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new Error('a root is 64 hex digits');
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A u64 from 16 hex digits (big-endian, as Nano prints it) as [lo, hi] u32 halves. */
export function parseU64(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{16}$/.test(hex)) {
    throw new Error('a threshold or work value is 16 hex digits');
  }
  return [parseInt(hex.slice(8), 16) >>> 0, parseInt(hex.slice(0, 8), 16) >>> 0];
}

/** 16 hex digits from [lo, hi]. */
export function u64Hex([lo, hi]) {
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

/** Whether [lo, hi] >= [tlo, thi] as u64s. */
export function atLeast([lo, hi], [tlo, thi]) {
  return hi > thi || (hi === thi && lo >= tlo);
}

/** A random 64-bit starting nonce. */
export function randomNonce() {
  const r = new Uint32Array(2);
  crypto.getRandomValues(r);
  return [r[0], r[1]];
}

/** Resolve after other tasks (messages, rendering) had their turn; no timer clamping. */
export function yieldOnce() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(0);
  });
}

/** Hashes counted over time: the rate over the last RATE_WINDOW_MS while work runs. */
export class RateMeter {
  constructor() {
    this.total = 0;
    this.samples = []; // [time, hashes]
    this.since = null; // when the current run of work started
  }
  start() {
    if (this.since === null) this.since = performance.now();
  }
  add(hashes) {
    const now = performance.now();
    this.total += hashes;
    this.samples.push([now, hashes]);
    while (this.samples.length && this.samples[0][0] < now - RATE_WINDOW_MS) this.samples.shift();
  }
  stop() {
    this.since = null;
  }
  /** Hashes per second. */
  rate() {
    const now = performance.now();
    const recent = this.samples.filter(([t]) => t >= now - RATE_WINDOW_MS);
    const sum = recent.reduce((a, [, h]) => a + h, 0);
    if (this.since === null) {
      // Idle: the last window's figure fades out as its samples age.
      return (sum * 1000) / RATE_WINDOW_MS;
    }
    const span = Math.min(RATE_WINDOW_MS, Math.max(now - this.since, 1));
    return (sum * 1000) / span;
  }
}

/**
 * The compiled kernel, and a scalar check on the main thread:
 * `workValue(root: Uint8Array(32), nonce: [lo, hi]) -> [lo, hi]`.
 */
export async function loadKernel(wasmUrl = new URL('./dpow.wasm', HERE)) {
  const resp = await fetch(wasmUrl);
  if (!resp.ok) throw new Error(`dpow.wasm: HTTP ${resp.status}`);
  const module = await WebAssembly.compile(await resp.arrayBuffer());
  const {exports: e} = await WebAssembly.instantiate(module, {});
  const io = e.io_ptr();
  return {
    module,
    workValue(root, [lo, hi]) {
      new Uint8Array(e.memory.buffer, io, 32).set(root);
      e.work_value(io, lo, hi);
      const v = new DataView(e.memory.buffer, io + 40, 8);
      return [v.getUint32(0, true), v.getUint32(4, true)];
    },
    /** Nonces searched per call of `searchRaw`, on this thread (for benchmarks). */
    searchRaw(root, threshold, start, count, wide = false) {
      new Uint8Array(e.memory.buffer, io, 32).set(root);
      const f = wide ? e.search2 : e.search;
      return f(io, threshold[0], threshold[1], start[0], start[1], count);
    },
  };
}

/** The WebAssembly solver: one Web Worker per thread. */
class WasmSolver {
  constructor(kernel, workers, flag) {
    this.backend = 'wasm';
    this.kernel = kernel;
    this.workers = workers;
    this.threads = workers.length;
    this.flag = flag; // Int32Array over a SharedArrayBuffer, or null
    this.meter = new RateMeter();
    /** Milliseconds the workers spent in the kernel, all together (for benchmarks). */
    this.kernelMs = 0;
    this.job = 0;
    this.pending = null; // {id, resolve, root}
    this.busy = new Map(); // worker index -> the id of the job it still runs
    this.idleWaiters = [];
    workers.forEach((w, i) => {
      w.onmessage = (ev) => this.onMessage(i, ev.data);
    });
  }

  onMessage(i, m) {
    if (m.hashes) this.meter.add(m.hashes);
    if (m.ms) this.kernelMs += m.ms;
    const ends = m.type === 'found' || m.type === 'stopped' || m.type === 'error';
    // A worker's end of an older job (handed a new one mid-chunk) leaves it busy.
    if (ends && (m.id == null || this.busy.get(i) === m.id)) {
      this.busy.delete(i);
      if (this.busy.size === 0) {
        this.meter.stop();
        this.idleWaiters.splice(0).forEach((r) => r());
      }
    }
    if (m.type === 'found' && this.pending && this.pending.id === m.id) {
      const p = this.pending;
      // Trust but verify: the kernel's scalar path must agree.
      if (atLeast(this.kernel.workValue(p.root, m.nonce), p.threshold)) {
        this.finish(u64Hex(m.nonce));
      }
    }
    if (m.type === 'error' && this.pending) {
      const p = this.pending;
      this.pending = null;
      this.stopWorkers(p.id);
      p.reject(new Error(`worker: ${m.message}`));
    }
  }

  stopWorkers(id) {
    // With the shared flag, workers see the stop after their chunk; no message needed.
    if (this.flag) {
      Atomics.store(this.flag, 0, 0);
      return;
    }
    this.busy.forEach((job, i) => {
      if (job === id) this.workers[i].postMessage({type: 'cancel', id});
    });
  }

  finish(result) {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.stopWorkers(p.id);
    p.resolve(result);
  }

  /** The first nonce found for `rootHex` at `thresholdHex`, or null if cancelled first. */
  solve(rootHex, thresholdHex) {
    const root = parseRoot(rootHex);
    const threshold = parseU64(thresholdHex);
    this.cancel();
    const id = ++this.job;
    if (this.flag) Atomics.store(this.flag, 0, id);
    this.meter.start();
    return new Promise((resolve, reject) => {
      this.pending = {id, root, threshold, resolve, reject};
      this.workers.forEach((w, i) => {
        this.busy.set(i, id);
        w.postMessage({type: 'job', id, root, threshold, start: randomNonce()});
      });
    });
  }

  /** Stop the current search; its solve() resolves to null. */
  cancel() {
    this.finish(null);
  }

  /** Resolves once every worker has stopped (after a result or a cancel). */
  idle() {
    if (this.busy.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Hashes per second over the last few seconds, all threads together. */
  hashRate() {
    return this.meter.rate();
  }

  /** Hashes done since creation. */
  totalHashes() {
    return this.meter.total;
  }

  /** Cancel and end the workers. */
  close() {
    this.cancel();
    for (const w of this.workers) w.terminate();
    this.workers = [];
    this.busy.clear();
    this.idleWaiters.splice(0).forEach((r) => r());
  }
}

/**
 * A WebAssembly solver on `threads` Web Workers (default: every core). With cross-origin
 * isolation, workers stop at a shared flag; otherwise at a cancel message between chunks.
 */
export async function createSolver({
  threads = (typeof navigator !== 'undefined' && navigator.hardwareConcurrency) || 1,
  wasmUrl = new URL('./dpow.wasm', HERE),
  workerUrl = new URL('./worker.js', HERE),
  kernel = null,
} = {}) {
  const k = kernel || (await loadKernel(wasmUrl));
  const shared =
    typeof SharedArrayBuffer !== 'undefined' && globalThis.crossOriginIsolated === true;
  const flag = shared ? new Int32Array(new SharedArrayBuffer(4)) : null;
  const n = Math.max(1, Math.floor(threads));
  const workers = [];
  try {
    await Promise.all(
      Array.from({length: n}, () => {
        const w = new Worker(workerUrl);
        workers.push(w);
        return new Promise((resolve, reject) => {
          w.onmessage = (ev) => {
            if (ev.data.type === 'ready') resolve();
            else reject(new Error(`worker: ${ev.data.message}`));
          };
          w.onerror = (ev) => reject(new Error(`worker: ${ev.message}`));
          w.postMessage({type: 'init', module: k.module, flag});
        });
      }),
    );
  } catch (err) {
    workers.forEach((w) => w.terminate());
    throw err;
  }
  return new WasmSolver(k, workers, flag);
}

export {createWebglSolver};

/** A random root, 64 hex digits. */
function randomRoot() {
  const r = new Uint32Array(8);
  crypto.getRandomValues(r);
  return Array.from(r, (x) => x.toString(16).padStart(8, '0')).join('');
}

/**
 * Run `solver` flat out for `ms` on an unsolvable job; its hashes per second. An easy job
 * first warms it up (shader compilation, the engine's optimising tier), outside the timing.
 */
export async function measure(solver, ms = RACE_MS) {
  await solver.solve(randomRoot(), 'ff00000000000000');
  await solver.idle();
  const before = solver.totalHashes();
  const t0 = performance.now();
  const done = solver.solve(randomRoot(), 'ffffffffffffffff');
  await new Promise((r) => setTimeout(r, ms));
  solver.cancel();
  await done;
  await solver.idle();
  return ((solver.totalHashes() - before) * 1000) / (performance.now() - t0);
}

/**
 * Race the WebAssembly solver against WebGL2 for `raceMs` each and keep the faster:
 * `{solver, backend: 'wasm' | 'webgl', rates: {wasm, webgl}}` (hashes per second; webgl is
 * 0 where WebGL2 is missing).
 */
export async function pickBackend({threads, raceMs = RACE_MS} = {}) {
  const kernel = await loadKernel();
  const wasm = await createSolver({threads, kernel});
  const rates = {wasm: await measure(wasm, raceMs), webgl: 0};
  let webgl = null;
  try {
    webgl = await createWebglSolver({kernel});
    rates.webgl = await measure(webgl, raceMs);
  } catch (err) {
    rates.webglError = String(err && err.message ? err.message : err);
  }
  if (webgl && rates.webgl > rates.wasm) {
    wasm.close();
    return {solver: webgl, backend: 'webgl', rates};
  }
  if (webgl) webgl.close();
  return {solver: wasm, backend: 'wasm', rates};
}
