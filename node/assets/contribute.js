// The /contribute page: a browser worker with its own key. It keeps an ed25519 key in
// IndexedDB, takes open requests from the node over the bridge (/contribute/ws), solves them
// with dpow's WebAssembly (or WebGL2) solver, and signs its own statuses and results, which
// name the visitor's payout account. If the node goes away it tries the other nodes it was
// told of, with backoff. docs/browser.md describes the bridge.

import {createSolver, pickBackend} from '/browser/solver.js';
import {
  decodeAccount, encodeAccount, encodeResult, encodeStatus, envelope, fromHex, signingInput, toHex,
} from './wire.js';

const STATUS_EVERY_MS = 4000;
const CREDITS_EVERY_MS = 3000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  running: false,
  solver: null,
  backend: null,
  raceRate: 0,
  key: null, // {privateKey, publicKey, raw}
  payout: null, // 32 bytes
  ws: null,
  nodes: [location.origin],
  nodeIndex: 0,
  backoff: BACKOFF_MIN_MS,
  offsetMs: 0, // node clock - our clock
  networkId: null, // 32 bytes, from the node's hello: every signature names it
  open: new Map(), // id -> {root, difficulty, expires}
  current: null, // request id being solved
  wake: null,
  solved: 0,
  timers: [],
};

function log(msg) {
  const el = $('log');
  el.textContent = `${new Date().toISOString().slice(11, 19)} ${msg}\n` + el.textContent.slice(0, 4000);
}

function setState(s) {
  $('state').textContent = s;
}

// ---- the key: WebCrypto Ed25519, kept in IndexedDB ----

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open('dpow-contribute', 1);
    req.onupgradeneeded = () => req.result.createObjectStore('keys');
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function idbDo(mode, f) {
  const db = await idb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction('keys', mode);
    const req = f(tx.objectStore('keys'));
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function loadKey() {
  let pair = await idbDo('readonly', (s) => s.get('worker')).catch(() => undefined);
  if (!pair) {
    pair = await crypto.subtle.generateKey({name: 'Ed25519'}, true, ['sign', 'verify']);
    await idbDo('readwrite', (s) => s.put(pair, 'worker')).catch((e) => log(`key not kept: ${e}`));
    log('made a new worker key');
  }
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return {privateKey: pair.privateKey, publicKey: pair.publicKey, raw};
}

async function sign(kind, payload) {
  const input = signingInput(kind, payload, state.networkId);
  const sig = new Uint8Array(await crypto.subtle.sign({name: 'Ed25519'}, state.key.privateKey, input));
  return envelope(kind, payload, sig);
}

async function exportKey() {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', state.key.privateKey));
  const blob = new Blob([pkcs8], {type: 'application/octet-stream'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'dpow-browser-worker.pkcs8';
  a.click();
}

// ---- the bridge ----

function nodeNow() {
  return Date.now() + state.offsetMs;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function connect() {
  const base = state.nodes[state.nodeIndex % state.nodes.length];
  const url = base.replace(/^http/, 'ws') + '/contribute/ws';
  setState(`connecting to ${base}`);
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (e) {
    retry();
    return;
  }
  state.ws = ws;
  ws.onmessage = (ev) => {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    onMessage(base, m);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (state.current && state.solver) state.solver.cancel();
    state.open.clear();
    $('node').textContent = '–';
    log(`lost ${base}`);
    retry();
  };
}

function retry() {
  if (!state.running) return;
  state.nodeIndex = (state.nodeIndex + 1) % state.nodes.length;
  const wait = state.backoff;
  state.backoff = Math.min(BACKOFF_MAX_MS, state.backoff * 2);
  setState(`reconnecting in ${(wait / 1000).toFixed(1)} s`);
  setTimeout(() => state.running && !state.ws && connect(), wait);
}

function onMessage(base, m) {
  switch (m.t) {
    case 'hello': {
      state.backoff = BACKOFF_MIN_MS;
      state.offsetMs = Number(m.now_ms) - Date.now();
      // Every signature names the network of the node that serves this page.
      state.networkId = fromHex(String(m.network_id || ''));
      for (const p of [base, ...(m.peers || [])]) {
        if (typeof p === 'string' && /^https?:\/\//.test(p) && !state.nodes.includes(p)) state.nodes.push(p);
      }
      state.nodeIndex = state.nodes.indexOf(base);
      try {
        localStorage.setItem('dpow-nodes', JSON.stringify(state.nodes));
      } catch {}
      $('node').textContent = `${base} (${m.network})`;
      setState('working');
      log(`connected to ${base}`);
      sendStatus();
      break;
    }
    case 'request':
      state.open.set(m.id, {root: m.root, difficulty: m.difficulty, expires: Number(m.expires_ms)});
      if (state.wake) state.wake();
      break;
    case 'done':
      state.open.delete(m.id);
      if (state.current === m.id && state.solver) state.solver.cancel();
      break;
    case 'ack':
      if (m.kind === 'result') {
        state.solved += 1;
        $('solved').textContent = state.solved;
      }
      break;
    case 'refused':
      log(`${m.kind} refused: ${m.reason}`);
      break;
    case 'credits':
      $('credits').textContent = m.credits;
      break;
    case 'bye':
      log(`node says: ${m.reason}`);
      break;
  }
}

async function sendStatus() {
  if (!state.running || !state.ws) return;
  const rate = (state.solver && state.solver.hashRate()) || state.raceRate || 1;
  const payload = encodeStatus({
    worker: state.key.raw,
    hashRate: rate,
    queue: state.open.size,
    payout: state.payout,
    createdMs: nodeNow(),
  });
  send({t: 'status', envelope: toHex(await sign('status', payload))});
}

// ---- solving ----

function nextRequest() {
  const now = nodeNow();
  let best = null;
  for (const [id, r] of state.open) {
    if (r.expires <= now) {
      state.open.delete(id);
      continue;
    }
    if (!best || r.expires < best[1].expires) best = [id, r];
  }
  return best;
}

async function workLoop() {
  while (state.running) {
    const next = nextRequest();
    if (!next) {
      await new Promise((resolve) => {
        state.wake = resolve;
        setTimeout(resolve, 1000);
      });
      state.wake = null;
      continue;
    }
    const [id, r] = next;
    state.current = id;
    const work = await state.solver.solve(r.root, r.difficulty);
    state.current = null;
    if (!state.open.has(id)) continue; // answered elsewhere, or the node changed
    state.open.delete(id);
    if (work === null) continue;
    const payload = encodeResult({
      request: fromHex(id),
      root: fromHex(r.root),
      work,
      worker: state.key.raw,
      payout: state.payout,
    });
    send({t: 'result', id, envelope: toHex(await sign('result', payload))});
  }
}

// ---- the page ----

function checkAccount() {
  const text = $('account').value.trim();
  const msg = $('account-msg');
  if (!text) {
    msg.textContent = 'Name the Nano account your earnings go to.';
    msg.className = '';
    state.payout = null;
  } else {
    try {
      state.payout = decodeAccount(text);
      msg.textContent = 'A valid Nano account.';
      msg.className = 'ok';
    } catch (e) {
      state.payout = null;
      msg.textContent = e.message;
      msg.className = 'bad';
    }
  }
  $('start').disabled = !state.running && !(state.payout && state.key);
  return state.payout !== null;
}

async function start() {
  if (state.running || !checkAccount()) return;
  state.running = true;
  $('start').textContent = 'Stop';
  $('account').disabled = true;
  $('payout').textContent = encodeAccount(state.payout);
  try {
    localStorage.setItem('dpow-account', $('account').value.trim());
  } catch {}
  const threads = Number($('threads').value);
  setState('measuring this device');
  if (params.get('backend') === 'wasm') {
    state.solver = await createSolver({threads});
    state.backend = 'wasm';
  } else {
    const picked = await pickBackend({threads, raceMs: 1000});
    state.solver = picked.solver;
    state.backend = picked.backend;
    state.raceRate = picked.rates[picked.backend] || 0;
  }
  $('backend').textContent = `${state.backend}${state.backend === 'wasm' ? ` × ${threads}` : ''}`;
  if (!state.running) return stop();
  state.backoff = BACKOFF_MIN_MS;
  connect();
  state.timers.push(setInterval(sendStatus, STATUS_EVERY_MS));
  state.timers.push(setInterval(() => send({t: 'credits', account: encodeAccount(state.payout)}), CREDITS_EVERY_MS));
  state.timers.push(setInterval(() => {
    const r = state.solver ? state.solver.hashRate() : 0;
    $('rate').textContent = formatRate(r);
  }, 500));
  workLoop();
}

function stop() {
  state.running = false;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.solver) state.solver.close();
  state.solver = null;
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  state.open.clear();
  $('start').textContent = 'Start';
  $('account').disabled = false;
  $('rate').textContent = '–';
  setState('stopped');
  checkAccount();
}

function formatRate(r) {
  if (!r) return '–';
  const units = ['H/s', 'kH/s', 'MH/s', 'GH/s'];
  let i = 0;
  while (r >= 1000 && i < units.length - 1) {
    r /= 1000;
    i++;
  }
  return `${r.toFixed(r < 10 ? 2 : 1)} ${units[i]}`;
}

async function main() {
  const cores = Math.max(1, navigator.hardwareConcurrency || 1);
  const slider = $('threads');
  slider.max = String(cores);
  slider.value = String(Math.min(cores, Number(params.get('threads')) || Math.max(1, cores >> 1)));
  $('threads-n').textContent = slider.value;
  slider.oninput = () => {
    $('threads-n').textContent = slider.value;
  };
  slider.onchange = async () => {
    if (state.running) {
      stop();
      await start();
    }
  };
  try {
    const saved = JSON.parse(localStorage.getItem('dpow-nodes') || '[]');
    for (const n of saved) if (typeof n === 'string' && !state.nodes.includes(n)) state.nodes.push(n);
  } catch {}
  $('account').value = params.get('account') || localStorage.getItem('dpow-account') || '';
  $('account').oninput = checkAccount;
  $('start').onclick = () => (state.running ? stop() : start());
  $('export').onclick = () => exportKey().catch((e) => log(`export: ${e}`));
  try {
    state.key = await loadKey();
    $('key').textContent = encodeAccount(state.key.raw, 'dpow_');
  } catch (e) {
    $('key').textContent = `no Ed25519 in this browser's WebCrypto (${e.message})`;
    log('this browser cannot make an ed25519 key: it cannot work for the network');
  }
  checkAccount();
  if (params.get('start') === '1' && state.payout && state.key) start();
}

main();
