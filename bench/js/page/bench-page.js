// The browser side of the client benchmarks: the thoonk-sync client beside
// raw IndexedDB and Dexie, driven by browser.mjs through window.bench.
import init, { Client } from '/pkg/thoonk_sync.js';
import Dexie from '/dexie/dexie.mjs';

await init();

const idb = (request) => new Promise((ok, fail) => {
  request.onsuccess = () => ok(request.result);
  request.onerror = () => fail(request.error);
});
const committed = (tx) => new Promise((ok, fail) => {
  tx.oncomplete = () => ok();
  tx.onerror = () => fail(tx.error);
  tx.onabort = () => fail(tx.error ?? new Error('aborted'));
});
const deleteDb = (name) => new Promise((ok) => {
  const request = indexedDB.deleteDatabase(name);
  request.onsuccess = request.onerror = request.onblocked = () => ok();
});
function openRaw(name) {
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => request.result.createObjectStore('mirror');
  return idb(request);
}

// The rows the client writes for a feed of n items: key [feed, id], value
// the JSON text of the stored item.
function rows(feed, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const id = `item-${i}`;
    const item = { title: `Task number ${i}`, done: i % 3 === 0, n: i };
    out.push([[feed, id], JSON.stringify({ feed, id, item, rev: i + 1 })]);
  }
  return out;
}

// Resolves once the client's database holds n rows of `feed` in its mirror.
// A read transaction begun after the client's write waits for that write
// to commit, so this also waits for a mirror write still in flight (the
// client shows server changes before their mirror write commits).
async function stored(dbName, feed, n) {
  const db = await idb(indexedDB.open(dbName));
  try {
    const range = IDBKeyRange.bound([feed], [feed, []]);
    for (;;) {
      const count = await idb(db.transaction('mirror').objectStore('mirror').count(range));
      if (count >= n) return;
      await new Promise((ok) => setTimeout(ok, 5));
    }
  } finally {
    db.close();
  }
}

// Waits until `done()` holds, checking after every change callback.
// (Also polled: a feed without items fires no callback.)
function until(done, timeoutMs = 60000, what = () => '') {
  return new Promise((ok, fail) => {
    const check = () => {
      if (!done()) return false;
      clearTimeout(timer); clearInterval(poll); window.__check = null; ok();
      return true;
    };
    const timer = setTimeout(() => { clearInterval(poll); fail(new Error(`timed out ${what()}`)); }, timeoutMs);
    const poll = setInterval(check, 20);
    window.__check = check;
    check();
  });
}

window.bench = {
  // Raw IndexedDB: all rows put in one readwrite transaction.
  async rawPut(n) {
    const name = `raw-${Math.random()}`;
    const db = await openRaw(name);
    const data = rows('bench:raw', n);
    const t0 = performance.now();
    const tx = db.transaction('mirror', 'readwrite');
    const store = tx.objectStore('mirror');
    for (const [key, value] of data) store.put(value, key);
    await committed(tx);
    const ms = performance.now() - t0;
    db.close();
    // Read back with getAll (the raw cold start), on a fresh connection.
    const t1 = performance.now();
    const db2 = await openRaw(name);
    const values = await idb(db2.transaction('mirror').objectStore('mirror').getAll());
    const parsed = values.map((v) => JSON.parse(v));
    const getAllMs = performance.now() - t1;
    db2.close();
    await deleteDb(name);
    if (parsed.length !== n) throw new Error(`getAll read ${parsed.length} of ${n}`);
    return { putMs: ms, getAllMs };
  },
  // Dexie bulkPut of the same rows.
  async dexiePut(n) {
    const name = `dexie-${Math.random()}`;
    const db = new Dexie(name);
    db.version(1).stores({ mirror: '' });
    await db.open();
    const data = rows('bench:dexie', n);
    const t0 = performance.now();
    await db.table('mirror').bulkPut(data.map(([, v]) => v), data.map(([k]) => k));
    const ms = performance.now() - t0;
    db.close();
    await Dexie.delete(name);
    return { putMs: ms, version: Dexie.semVer };
  },
  // The client: open and subscribe, until the change callback showed n items
  // and the mirror holds them in IndexedDB. `dbName` reused → a replay of
  // the changes since the mirrored revision; a new one → a snapshot.
  async clientSync(url, dbName, feed, n) {
    const t0 = performance.now();
    const client = await Client.open({ url, token: 'bench', dbName });
    const opened = performance.now();
    // Count the ids the change events announce (reading items() on every
    // callback would cost the harness O(n) per frame).
    const seen = new Set(client.items(feed).map((item) => item.id));
    const unsubscribe = client.subscribe(feed, (change) => {
      for (const item of change.changed) seen.add(item.id);
      for (const id of change.removed) seen.delete(id);
      window.__check?.();
    });
    await until(() => seen.size >= n, 60000, () => `with ${seen.size} ids seen, items() ${client.items(feed).length} of ${n}`);
    const count = client.items(feed).length;
    const shown = performance.now() - t0;
    await stored(dbName, feed, n);
    const ms = performance.now() - t0;
    unsubscribe();
    client.close();
    return { ms, openMs: opened - t0, shownMs: shown, items: count };
  },
  // Subscribes to an empty feed so that the mirror knows its (epoch, rev).
  async clientPrime(url, dbName, feed) {
    const client = await Client.open({ url, token: 'bench', dbName });
    const unsubscribe = client.subscribe(feed, () => window.__check?.());
    await until(() => client.status().feeds[feed] !== undefined);
    unsubscribe();
    client.close();
    return client.status().feeds[feed] ?? null;
  },
  // Cold start: open the client on its cached mirror and read n items.
  async clientCold(url, dbName, feed, n) {
    const t0 = performance.now();
    const client = await Client.open({ url, token: 'bench', dbName });
    const items = client.items(feed);
    const ms = performance.now() - t0;
    client.close();
    if (items.length !== n) throw new Error(`cold start read ${items.length} of ${n}`);
    return { ms };
  },
  // Raw cold start on the client's own database: open + getAll of the mirror + parse.
  async rawCold(dbName) {
    const t0 = performance.now();
    const db = await idb(indexedDB.open(dbName));
    const values = await idb(db.transaction('mirror').objectStore('mirror').getAll());
    const parsed = values.map((v) => JSON.parse(v));
    const ms = performance.now() - t0;
    db.close();
    return { ms, items: parsed.length };
  },
  // publish on client A → B's change callback, through the real server.
  async latency(url, feed, samples) {
    // The profile of the path: when each event frame reaches B's socket (a
    // listener added before the client's own), so that the time splits into
    // publish → frame at B (server and network) and frame → callback (B's
    // client: parse, sync core, IndexedDB transaction, JS conversion).
    const arrivals = new Map();
    const sent = new Map();
    const Native = window.WebSocket;
    let opened = 0;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        const isB = opened++ === 1;
        if (!isB) {
          const send = this.send.bind(this);
          this.send = (data) => {
            const match = typeof data === 'string' && data.includes('"type":"submit"') && /"id":"(lat-\d+)"/.exec(data);
            if (match && !sent.has(match[1])) sent.set(match[1], performance.now());
            send(data);
          };
        }
        this.addEventListener('message', (event) => {
          if (!isB || typeof event.data !== 'string' || !event.data.includes('"type":"event"')) return;
          const match = /"id":"(lat-\d+)"/.exec(event.data);
          if (match && !arrivals.has(match[1])) arrivals.set(match[1], performance.now());
        });
      }
    };
    const a = await Client.open({ url, token: 'bench', dbName: `lat-a-${Math.random()}` });
    const b = await Client.open({ url, token: 'bench', dbName: `lat-b-${Math.random()}` });
    let waiting = null;
    a.subscribe(feed, () => {});
    b.subscribe(feed, (change) => {
      if (waiting && change.changed.some((item) => item.id === waiting.id && item.state === 'confirmed')) {
        const w = waiting; waiting = null; w.ok(performance.now());
      }
    });
    await new Promise((ok) => setTimeout(ok, 1000));
    // The clients open their sockets after `Client.open` returns.
    window.WebSocket = Native;
    if (opened < 2) throw new Error(`only ${opened} of the 2 sockets opened`);
    const out = [];
    const outcomes = [];
    const toSend = [];
    const toFrame = [];
    const frameToCallback = [];
    for (let i = 0; i < samples + 10; i++) {
      const id = `lat-${i}`;
      const seen = new Promise((ok) => { waiting = { id, ok }; });
      const t0 = performance.now();
      const pending = await a.publish(feed, { title: `latency ${i}` }, id);
      const t1 = await Promise.race([seen, new Promise((ok) => setTimeout(() => ok(null), 5000))]);
      const settled = await Promise.race([pending.outcome.then(() => true), new Promise((ok) => setTimeout(() => ok(false), 10000))]);
      if (!settled) throw new Error(`the outcome of sample ${i} never arrived`);
      const t2 = performance.now();
      if (t1 === null) throw new Error(`sample ${i} never arrived`);
      if (i >= 10) {
        out.push(t1 - t0);
        outcomes.push(t2 - t0);
        const frameAt = arrivals.get(id), sentAt = sent.get(id);
        if (frameAt !== undefined && sentAt !== undefined) {
          toSend.push(sentAt - t0);
          toFrame.push(frameAt - sentAt);
          frameToCallback.push(t1 - frameAt);
        }
      }
      await new Promise((ok) => setTimeout(ok, 5));
    }
    a.close(); b.close();
    return { toOtherCallback: out, toOwnOutcome: outcomes, toSend, toFrame, frameToCallback };
  },
  // The outbox drain: n changes to one feed queued offline, then the client
  // goes online; the time from going online until every change's outcome
  // is accepted. `maxBatch` 1 sends one change per round trip (the path
  // before batches), the default sends a feed's queue in batches.
  async drain(url, feed, n, maxBatch) {
    const dbName = `drain-${maxBatch ?? 'default'}-${Math.random()}`;
    const options = { url, token: 'bench', dbName, offline: true };
    if (maxBatch !== undefined && maxBatch !== null) options.maxBatch = maxBatch;
    const client = await Client.open(options);
    const unsubscribe = client.subscribe(feed, () => {});
    const outcomes = [];
    const tq = performance.now();
    for (let i = 0; i < n; i++) {
      const pending = await client.publish(feed, { title: `Offline task ${i}`, done: false, n: i }, `d-${i}`);
      outcomes.push(pending.outcome);
    }
    const queueMs = performance.now() - tq;
    const t0 = performance.now();
    client.setOnline(true);
    const settled = await Promise.race([
      Promise.all(outcomes),
      new Promise((ok) => setTimeout(() => ok(null), 120000)),
    ]);
    const ms = performance.now() - t0;
    unsubscribe();
    client.close();
    await deleteDb(dbName);
    if (settled === null) throw new Error(`drain of ${n} (maxBatch ${maxBatch}) did not finish within 120 s`);
    const accepted = settled.filter((o) => o.status === 'accepted').length;
    if (accepted !== n) throw new Error(`drain: ${accepted} of ${n} accepted: ${JSON.stringify(settled.find((o) => o.status !== 'accepted'))}`);
    return { ms, queueMs, perSecond: n / (ms / 1000) };
  },
  deleteDb,
};
window.benchReady = true;
