// dpow browser worker: one Web Worker per thread, running the WebAssembly kernel (dpow.wasm,
// built from wasm/kernel.rs) over its own range of nonces, in chunks short enough that a
// cancel stops it within a few milliseconds. solver.js starts and drives it.
//
// Messages in:
//   {type: 'init', module: WebAssembly.Module, flag: Int32Array over a SharedArrayBuffer | null}
//   {type: 'job', id, root: Uint8Array(32), threshold: [lo, hi], start: [lo, hi]}
//   {type: 'cancel', id}
// Messages out:
//   {type: 'ready'}
//   {type: 'progress', id, hashes, ms}       hashes done since the last progress message, and
//                                            the milliseconds spent in the kernel doing them
//   {type: 'found', id, nonce: [lo, hi], hashes, ms}
//   {type: 'stopped', id, hashes, ms}
//   {type: 'error', id, message}
//
// `hashes` counts exactly the nonces hashed (on 'found', up to and including the nonce).
// With a shared flag (cross-origin isolated pages), the job runs until the flag no longer
// holds its id; otherwise it yields to the event loop between chunks to read cancel messages.
'use strict';

/** Aim for chunks of about this many milliseconds: the longest a cancel waits. */
const CHUNK_MS = 4;
/** Chunk size bounds, in nonces; chunks are whole multiples of CHUNK_MIN. */
const CHUNK_MIN = 1 << 12;
const CHUNK_MAX = 1 << 20;
/** Report progress at most this often. */
const PROGRESS_MS = 100;

let kernel = null; // the instance's exports
let io = 0; // the kernel's shared buffer: root at 0, found nonce at 32
let flag = null;
let current = null; // the id of the job running now, or null
let chunk = 1 << 16; // kept across jobs: the rate of this device does not change per job

// One channel for every yield: a round trip through it lets queued messages (a cancel, a new
// job) run, without setTimeout's clamped delay or a new channel per chunk. Each message
// wakes the oldest waiter: a job replaced mid-yield must still wake, see the new id, and
// report its last hashes in 'stopped'.
const channel = new MessageChannel();
const waiters = [];
channel.port1.onmessage = () => {
  const w = waiters.shift();
  if (w) w();
};
function yieldOnce() {
  return new Promise((resolve) => {
    waiters.push(resolve);
    channel.port2.postMessage(0);
  });
}

function stillWanted(id) {
  return flag ? Atomics.load(flag, 0) === id && current === id : current === id;
}

async function run(job) {
  const e = kernel;
  new Uint8Array(e.memory.buffer, io, 32).set(job.root);
  let [lo, hi] = job.start;
  const [tlo, thi] = job.threshold;
  let pending = 0;
  let ms = 0;
  let lastReport = performance.now();
  while (stillWanted(job.id)) {
    const n = chunk;
    const t0 = performance.now();
    const found = e.search(io, tlo, thi, lo, hi, n);
    const t1 = performance.now();
    ms += t1 - t0;
    if (found) {
      const view = new DataView(e.memory.buffer, io + 32, 8);
      const nonce = [view.getUint32(0, true), view.getUint32(4, true)];
      current = null;
      // The chunk stopped at the nonce (n <= 2^20, so the low halves' difference is exact).
      pending += ((nonce[0] - lo) >>> 0) + 1;
      postMessage({type: 'found', id: job.id, nonce, hashes: pending, ms});
      return;
    }
    pending += n;
    // Next range: lo + n with carry into hi.
    const next = lo + n;
    hi = next > 0xffffffff ? (hi + 1) >>> 0 : hi;
    lo = next >>> 0;
    // Keep each chunk near CHUNK_MS, whatever this device's speed.
    const dt = Math.max(t1 - t0, 0.05);
    const want = Math.round((n * CHUNK_MS) / dt / CHUNK_MIN) * CHUNK_MIN;
    chunk = Math.min(CHUNK_MAX, Math.max(CHUNK_MIN, want));
    if (t1 - lastReport >= PROGRESS_MS) {
      postMessage({type: 'progress', id: job.id, hashes: pending, ms});
      pending = 0;
      ms = 0;
      lastReport = t1;
    }
    if (!flag) await yieldOnce();
  }
  postMessage({type: 'stopped', id: job.id, hashes: pending, ms});
}

onmessage = async (ev) => {
  const m = ev.data;
  try {
    if (m.type === 'init') {
      const instance = await WebAssembly.instantiate(m.module, {});
      kernel = instance.exports;
      io = kernel.io_ptr();
      flag = m.flag || null;
      postMessage({type: 'ready'});
    } else if (m.type === 'job') {
      // A job still running (waiting in yieldOnce) sees the new id and stops.
      current = m.id;
      await run(m);
    } else if (m.type === 'cancel') {
      if (current === m.id) current = null;
    }
  } catch (err) {
    const id = current;
    current = null;
    postMessage({type: 'error', id, message: String(err && err.message ? err.message : err)});
  }
};
