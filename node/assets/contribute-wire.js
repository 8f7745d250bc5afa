// The browser worker's own bytes: BLAKE2b, Nano/dpow account text, and the canonical postcard
// encoding of the envelopes it signs (WorkResult, WorkerStatus). The page builds and signs
// these itself so that the node that carries them cannot change a byte. Pure functions, no
// DOM: testnet/tests/contribute.rs runs them in Node.js against the Rust encoder.

const IV = [
  0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n,
  0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n,
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
const M64 = (1n << 64n) - 1n;
const rotr = (x, n) => ((x >> n) | (x << (64n - n))) & M64;

function compress(h, block, t, last) {
  const m = [];
  for (let i = 0; i < 16; i++) {
    let w = 0n;
    for (let j = 7; j >= 0; j--) w = (w << 8n) | BigInt(block[i * 8 + j]);
    m.push(w);
  }
  const v = h.concat(IV);
  v[12] ^= t & M64;
  v[13] ^= t >> 64n;
  if (last) v[14] ^= M64;
  const g = (a, b, c, d, x, y) => {
    v[a] = (v[a] + v[b] + x) & M64;
    v[d] = rotr(v[d] ^ v[a], 32n);
    v[c] = (v[c] + v[d]) & M64;
    v[b] = rotr(v[b] ^ v[c], 24n);
    v[a] = (v[a] + v[b] + y) & M64;
    v[d] = rotr(v[d] ^ v[a], 16n);
    v[c] = (v[c] + v[d]) & M64;
    v[b] = rotr(v[b] ^ v[c], 63n);
  };
  for (let r = 0; r < 12; r++) {
    const s = SIGMA[r % 10];
    g(0, 4, 8, 12, m[s[0]], m[s[1]]);
    g(1, 5, 9, 13, m[s[2]], m[s[3]]);
    g(2, 6, 10, 14, m[s[4]], m[s[5]]);
    g(3, 7, 11, 15, m[s[6]], m[s[7]]);
    g(0, 5, 10, 15, m[s[8]], m[s[9]]);
    g(1, 6, 11, 12, m[s[10]], m[s[11]]);
    g(2, 7, 8, 13, m[s[12]], m[s[13]]);
    g(3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (let i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/** BLAKE2b (unkeyed) of `data` (Uint8Array), `outLen` bytes (1..64). */
export function blake2b(data, outLen) {
  const h = IV.slice();
  h[0] ^= 0x01010000n ^ BigInt(outLen);
  const blocks = Math.max(1, Math.ceil(data.length / 128));
  for (let b = 0; b < blocks; b++) {
    const block = new Uint8Array(128);
    block.set(data.subarray(b * 128, b * 128 + 128));
    const last = b === blocks - 1;
    const t = BigInt(last ? data.length : (b + 1) * 128);
    compress(h, block, t, last);
  }
  const out = new Uint8Array(outLen);
  for (let i = 0; i < outLen; i++) out[i] = Number((h[i >> 3] >> BigInt(8 * (i & 7))) & 0xffn);
  return out;
}

const ALPHABET = '13456789abcdefghijkmnopqrstuwxyz';

function base32(bytes, padBits) {
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  const n = (bytes.length * 8 + padBits) / 5;
  let s = '';
  for (let i = n - 1; i >= 0; i--) s += ALPHABET[Number((bits >> BigInt(5 * i)) & 31n)];
  return s;
}

/** `prefix` + the 52 + 8 characters of a key with its checksum (Nano's account text). */
export function encodeAccount(key, prefix = 'nano_') {
  const check = blake2b(key, 5).reverse();
  return prefix + base32(key, 4) + base32(check, 0);
}

/**
 * The 32-byte key of a `nano_` (or legacy `xrb_`) account, checksum checked; throws with a
 * reason a person can act on.
 */
export function decodeAccount(text) {
  const t = String(text).trim();
  const body = t.startsWith('nano_') ? t.slice(5) : t.startsWith('xrb_') ? t.slice(4) : null;
  if (body === null) throw new Error('a Nano account starts with nano_');
  if (body.length !== 60) throw new Error('a Nano account has 60 characters after nano_');
  let bits = 0n;
  for (const c of body.slice(0, 52)) {
    const v = ALPHABET.indexOf(c);
    if (v < 0) throw new Error(`"${c}" is not a character of Nano accounts`);
    bits = (bits << 5n) | BigInt(v);
  }
  if (bits >> 256n) throw new Error('not a Nano account (the first character is wrong)');
  const key = new Uint8Array(32);
  for (let i = 31; i >= 0; i--) {
    key[i] = Number(bits & 0xffn);
    bits >>= 8n;
  }
  if (encodeAccount(key, '') !== body) throw new Error('the checksum does not match: a typo?');
  if (key.every((b) => b === 0)) throw new Error('that is the burn account: nothing sent there can be spent');
  return key;
}

/** Bytes from hex; throws on odd length or other characters. */
export function fromHex(hex) {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error('not hex');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Lower-case hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** postcard's varint (LEB128) of a non-negative integer (Number or BigInt). */
export function varint(n) {
  let v = BigInt(n);
  if (v < 0n || v > M64) throw new Error('a varint holds a u64');
  const out = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function option(bytes) {
  return bytes ? [1, ...bytes] : [0];
}

/** The payload of a WorkResult: request id, root, work (16 hex digits), worker key, payout key or null. */
export function encodeResult({request, root, work, worker, payout}) {
  return Uint8Array.from([
    ...request,
    ...root,
    ...varint(BigInt('0x' + work)),
    ...worker,
    ...option(payout),
  ]);
}

/** The payload of a WorkerStatus. */
export function encodeStatus({worker, hashRate, queue, payout, createdMs}) {
  return Uint8Array.from([
    ...worker,
    ...varint(Math.max(0, Math.round(hashRate))),
    ...varint(queue),
    ...option(payout),
    ...varint(createdMs),
  ]);
}

/** Message kinds: [envelope kind byte, signing domain]. */
export const KIND = {result: [2, 'work-result'], status: [5, 'worker-status']};

/** The protocol version, the first byte of every envelope. */
export const VERSION = 2;

/**
 * What the key signs: "dpow/2/" ‖ network id (32 bytes, from the node's hello) ‖ domain ‖ 0x00
 * ‖ payload. A signature made for one network never verifies on another.
 */
export function signingInput(kind, payload, networkId) {
  if (!(networkId instanceof Uint8Array) || networkId.length !== 32) {
    throw new Error('a network id has 32 bytes');
  }
  const enc = new TextEncoder();
  return Uint8Array.from([
    ...enc.encode('dpow/2/'), ...networkId, ...enc.encode(KIND[kind][1]), 0, ...payload,
  ]);
}

/** The envelope: the version, kind, the payload as postcard bytes, the 64-byte signature. */
export function envelope(kind, payload, signature) {
  if (signature.length !== 64) throw new Error('an ed25519 signature has 64 bytes');
  return Uint8Array.from([VERSION, KIND[kind][0], ...varint(payload.length), ...payload, ...signature]);
}
