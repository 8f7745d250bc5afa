// Runs the browser worker's WebAssembly kernel in Node.js for testnet/tests/wasm_kernel.rs:
//   node check.mjs KERNEL.wasm VECTORS.json
// prints one JSON object: the kernel's work value for every vector, whether `search` and
// `search2` find each vector's work from that very nonce, and a search of each from a fixed
// start for a low threshold. The Rust test checks every figure with the `blake2` crate.
import fs from 'node:fs';

const [wasmPath, vectorsPath] = process.argv.slice(2);
const {instance} = await WebAssembly.instantiate(fs.readFileSync(wasmPath), {});
const e = instance.exports;
const io = e.io_ptr();
const hex = (h) => Uint8Array.from(h.match(/../g), (b) => parseInt(b, 16));
const halves = (h) => [parseInt(h.slice(8), 16) >>> 0, parseInt(h.slice(0, 8), 16) >>> 0];
const read = (at) => {
  const v = new DataView(e.memory.buffer, io + at, 8);
  return v.getUint32(4, true).toString(16).padStart(8, '0') + v.getUint32(0, true).toString(16).padStart(8, '0');
};
const setRoot = (root) => new Uint8Array(e.memory.buffer, io, 32).set(hex(root));

const out = {step: e.step(), vectors: [], searches: []};
for (const w of JSON.parse(fs.readFileSync(vectorsPath, 'utf8')).work) {
  setRoot(w.root);
  const [lo, hi] = halves(w.work);
  e.work_value(io, lo, hi);
  const value = read(40);
  const [tlo, thi] = halves(w.value);
  const found = {};
  for (const f of ['search', 'search2']) {
    found[f] = e[f](io, tlo, thi, lo, hi, 1) === 1 ? read(32) : null;
  }
  out.vectors.push({root: w.root, work: w.work, value, found});
}
const root = '0123456789ABCDEFFEDCBA98765432100123456789ABCDEFFEDCBA9876543210';
const start = 'fffffffffffffff0'; // wraps past 2^64 within the first steps
const threshold = 'ff00000000000000';
for (const f of ['search', 'search2']) {
  setRoot(root);
  const [tlo, thi] = halves(threshold);
  const [slo, shi] = halves(start);
  const hit = e[f](io, tlo, thi, slo, shi, 1 << 24) === 1;
  out.searches.push({fn: f, root, start, threshold, work: hit ? read(32) : null});
}
console.log(JSON.stringify(out));
