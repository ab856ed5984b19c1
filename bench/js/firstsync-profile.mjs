// The first sync (one snapshot) alone, profiled, against a running
// thoonk-server that serves page/, the wasm package at /pkg and Dexie (as
// scripts/bench starts it): fills a feed of N items, then per repetition
// (1) a bare WebSocket in the page asks the gateway for the same feed
// (hello, subscribe): when the snapshot frame arrives after the subscribe
// was sent (the gateway's part) and how long JSON.parse of it takes; (2)
// raw puts of the same number of rows (the baseline); (3) the page's
// clientSync on a fresh database (page/bench-page.js): when its socket sent
// the subscribe and received the snapshot frame, when the change callback
// showed the items and when the mirror held them (ms after the start).
//   node firstsync-profile.mjs HTTP_URL REDIS_URL BENCH_BIN [N] [REPS]
// PROFILE=prefix writes a V8 CPU profile of each clientSync to
// prefix.<rep>.cpuprofile (for function names, load a package built
// without wasm-opt).
import { launchChromium } from './chromium.mjs';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const [base, redis, benchBin, nArg, repsArg] = process.argv.slice(2);
const n = Number(nArg ?? 10000);
const reps = Number(repsArg ?? 3);
const ws = base.replace(/^http/, 'ws') + 'ws';
const browser = await launchChromium();
const page = await browser.newPage();
page.on('pageerror', (err) => console.error('pageerror', err.message));
await page.goto(base);
await page.waitForFunction(() => window.benchReady === true, null, { timeout: 60000 });
const feed = `bench:firstsync:${Date.now()}`;
execFileSync(benchBin, ['fill', '--feed', feed, '--retention', String(n * 2), '--redis', redis]);
execFileSync(benchBin, ['fill', '--feed', feed, '--from', '0', '--to', String(n), '--redis', redis]);

// A bare WebSocket in the page: subscribe sent → snapshot frame → parsed.
const bare = () => page.evaluate(([url, f]) => new Promise((ok, fail) => {
  const sock = new WebSocket(url);
  let sent = 0;
  sock.onopen = () => sock.send(JSON.stringify({ type: 'hello', protocol: 1, token: 'bench', client_id: `bare${Math.floor(Math.random() * 1e9)}` }));
  sock.onerror = () => fail(new Error('socket error'));
  sock.onmessage = (event) => {
    if (event.data.startsWith('{"type":"welcome"')) {
      sent = performance.now();
      sock.send(JSON.stringify({ type: 'subscribe', pattern: f }));
    } else if (event.data.includes('"type":"snapshot"')) {
      const at = performance.now();
      const parsed = JSON.parse(event.data);
      const parsedAt = performance.now();
      sock.close();
      ok({ frameMs: at - sent, parseMs: parsedAt - at, bytes: event.data.length, items: parsed.items.length });
    }
  };
}), [ws, feed]);

for (let r = 0; r < reps; r++) {
  const b = await bare();
  const raw = await page.evaluate((c) => window.bench.rawPut(c), n);
  let cdp = null;
  if (process.env.PROFILE) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
  }
  // The page's own clock: when the client's socket sent the subscribe and
  // received the snapshot frame (a listener added before the client's own).
  await page.evaluate(() => {
    window.__fs = { subscribe: null, snapshot: null };
    const Native = window.__nativeWs ?? window.WebSocket;
    window.__nativeWs = Native;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        const send = this.send.bind(this);
        this.send = (data) => {
          if (typeof data === 'string' && data.includes('"type":"subscribe"')) window.__fs.subscribe ??= performance.now();
          send(data);
        };
        this.addEventListener('message', (event) => {
          if (typeof event.data === 'string' && event.data.startsWith('{"type":"snapshot"')) window.__fs.snapshot ??= performance.now();
        });
      }
    };
    window.__fs.t0 = performance.now();
  });
  const db = `firstsync-${r}-${Date.now()}`;
  const res = await page.evaluate(([u, d, f, c]) => window.bench.clientSync(u, d, f, c), [ws, db, feed, n]);
  if (cdp) {
    const { profile } = await cdp.send('Profiler.stop');
    fs.writeFileSync(`${process.env.PROFILE}.${r}.cpuprofile`, JSON.stringify(profile));
  }
  const inPage = await page.evaluate(() => { window.WebSocket = window.__nativeWs; return window.__fs; });
  await page.evaluate((d) => window.bench.deleteDb(d), db);
  console.log(JSON.stringify({ rawPutMs: Math.round(raw.putMs), ratio: Math.round((raw.putMs / res.ms) * 100) / 100, ms: Math.round(res.ms), shownMs: Math.round(res.shownMs), openMs: Math.round(res.openMs),
    page: { subscribe: Math.round(inPage.subscribe - inPage.t0), snapshotFrame: Math.round(inPage.snapshot - inPage.t0) },
    bare: { frameMs: Math.round(b.frameMs), parseMs: Math.round(b.parseMs), bytes: b.bytes, items: b.items } }));
}
await browser.close();
