// The outbox drain alone, profiled: runs the page's drain (page/bench-page.js)
// against a running thoonk-server that serves page/, the wasm package at /pkg
// and Dexie (as scripts/bench starts it), and prints per repetition the drain
// time and when the frames of the drain were handled by the page (ms after
// `setOnline(true)`, from Chromium's DevTools protocol), with the count of
// each frame type.
//   node drain-profile.mjs HTTP_URL [N] [REPS] [MAXBATCH]
// DUMP=prefix writes each repetition's frames (time, direction, start of the
// text) to prefix.<rep>.jsonl; PROFILE=prefix writes a V8 CPU profile of
// each drain (from `hello` on) to prefix.<rep>.cpuprofile (for function
// names, load a package built without wasm-opt).
import { launchChromium } from './chromium.mjs';

const [base, nArg, repsArg, maxArg] = process.argv.slice(2);
const n = Number(nArg ?? 1000);
const reps = Number(repsArg ?? 3);
const maxBatch = maxArg ? Number(maxArg) : null;
const ws = base.replace(/^http/, 'ws') + 'ws';
const browser = await launchChromium();
const page = await browser.newPage();
page.on('pageerror', (err) => console.error('pageerror', err.message));
let frames = [];
let startOnHello = null;
page.on('websocket', (sock) => {
  sock.on('framesent', (f) => {
    frames.push([performance.now(), 'out', f.payload]);
    if (startOnHello && f.payload.includes('"hello"')) { startOnHello(); startOnHello = null; }
  });
  sock.on('framereceived', (f) => frames.push([performance.now(), 'in', f.payload]));
});
await page.goto(base);
await page.waitForFunction(() => window.benchReady === true, null, { timeout: 60000 });
for (let r = 0; r < reps; r++) {
  frames = [];
  const start = performance.now();
  let cdp = null;
  if (process.env.PROFILE) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    startOnHello = () => cdp.send('Profiler.start');
  }
  const res = await page.evaluate(([u, f, c, m]) => window.bench.drain(u, f, c, m), [ws, `bench:drain:${Date.now()}:${r}`, n, maxBatch]);
  const end = performance.now();
  if (cdp) {
    const { profile } = await cdp.send('Profiler.stop');
    const fs = await import('node:fs');
    fs.writeFileSync(`${process.env.PROFILE}.${r}.cpuprofile`, JSON.stringify(profile));
  }
  const t0 = end - res.ms; // setOnline, approximately (node's clock)
  const kinds = {};
  let firstBatch = null, lastIn = 0, lastOutcome = 0, firstAck = null, lastAck = 0;
  for (const [t, dir, p] of frames) {
    const type = (/"type":"([a-z_]+)"/.exec(p) ?? [])[1];
    const k = `${dir}:${type}`;
    kinds[k] = (kinds[k] ?? 0) + 1;
    if (k === 'out:submit_batch' || k === 'out:submit') firstBatch ??= t;
    if (type === 'ack' || type === 'acks') { firstAck ??= t; lastAck = t; }
    if (type === 'outcome' || type === 'outcomes') lastOutcome = t;
    if (dir === 'in') lastIn = t;
  }
  const rel = (t) => (t == null ? null : Math.round(t - t0));
  console.log(JSON.stringify({ ms: Math.round(res.ms), perSecond: Math.round(res.perSecond), queueMs: Math.round(res.queueMs),
    firstSubmit: rel(firstBatch), firstAck: rel(firstAck), lastAck: rel(lastAck), lastOutcome: rel(lastOutcome), lastIn: rel(lastIn), kinds }));
  if (process.env.DUMP) {
    const fs = await import('node:fs');
    fs.writeFileSync(`${process.env.DUMP}.${r}.jsonl`, frames.map(([t, d, p]) => JSON.stringify([Math.round((t - t0) * 10) / 10, d, p.slice(0, 160)])).join('\n'));
  }
}
await browser.close();
