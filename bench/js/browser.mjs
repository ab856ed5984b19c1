// Client benchmarks in headless Debian Chromium (never a downloaded browser),
// against the thoonk-server scripts/bench started (serving page/, the wasm
// package and Dexie). usage:
//   node browser.mjs HTTP_URL REDIS_URL BENCH_BIN ITEMS REPS LATENCY_SAMPLES [DRAIN] → one JSON line
// DRAIN (default 1000): changes queued offline to one feed for the drain measure.
import { launchChromium } from './chromium.mjs';
import { execFileSync } from 'node:child_process';

const [base, redis, benchBin, itemsArg, repsArg, samplesArg] = process.argv.slice(2);
const items = Number(itemsArg);
const reps = Number(repsArg);
const samples = Number(samplesArg);
const drainCount = Number(process.argv[8] ?? 1000);
const ws = base.replace(/^http/, 'ws') + 'ws';
const bench = (...args) => JSON.parse(execFileSync(benchBin, [...args, '--redis', redis]).toString());

const browser = await launchChromium();
const page = await browser.newPage();
const errors = [];
page.on('pageerror', (err) => errors.push(err.message));
await page.goto(base);
await page.waitForFunction(() => window.benchReady === true, null, { timeout: 60000 });
const call = (name, ...args) => page.evaluate(([n, a]) => window.bench[n](...a), [name, args]);

const out = { items, reps, chromium: browser.version(), raw_put_ms: [], dexie_put_ms: [], raw_getall_ms: [],
  client_replay_ms: [], client_replay_shown_ms: [], client_snapshot_ms: [], client_snapshot_shown_ms: [], client_cold_ms: [], raw_cold_ms: [], failed_reps: [],
  drain_changes: drainCount, drain_batched_ms: [], drain_one_by_one_ms: [] };
for (let r = 0; r < reps; r++) {
  const raw = await call('rawPut', items);
  out.raw_put_ms.push(raw.putMs);
  out.raw_getall_ms.push(raw.getAllMs);
  const dexie = await call('dexiePut', items);
  out.dexie_put_ms.push(dexie.putMs);
  out.dexie = dexie.version;

  // A failed repetition (e.g. a Redis timeout on an overloaded machine) is
  // recorded and the run goes on.
  try {
    // A replay: the mirror knows the empty feed, then 10k changes happen.
    const feed = `bench:browser:${Date.now()}:${r}`;
    bench('fill', '--feed', feed, '--retention', String(items * 2));
    const db = `bench-replay-${r}-${Date.now()}`;
    await call('clientPrime', ws, db, feed);
    bench('fill', '--feed', feed, '--from', '0', '--to', String(items));
    const replay = await call('clientSync', ws, db, feed, items);
    out.client_replay_ms.push(replay.ms);
    out.client_replay_shown_ms.push(replay.shownMs);

    // Cold start on that cached mirror, beside raw getAll on the same database.
    out.client_cold_ms.push((await call('clientCold', ws, db, feed, items)).ms);
    const rawCold = await call('rawCold', db);
    out.raw_cold_ms.push(rawCold.ms);
    await call('deleteDb', db);

    // A first sync of the same feed: one snapshot.
    const fresh = `bench-snapshot-${r}-${Date.now()}`;
    const snapshot = await call('clientSync', ws, fresh, feed, items);
    out.client_snapshot_ms.push(snapshot.ms);
    out.client_snapshot_shown_ms.push(snapshot.shownMs);
    await call('deleteDb', fresh);
  } catch (err) {
    out.failed_reps.push(String(err.message ?? err).slice(0, 300));
  }
}
try {
  const latency = await call('latency', ws, `bench:browser-latency:${Date.now()}`, samples);
  out.publish_to_other_callback_ms = latency.toOtherCallback;
  out.publish_to_own_outcome_ms = latency.toOwnOutcome;
  out.publish_to_send_ms = latency.toSend;
  out.send_to_frame_ms = latency.toFrame;
  out.frame_to_callback_ms = latency.frameToCallback;
} catch (err) {
  out.publish_to_other_callback_ms = [];
  out.publish_to_own_outcome_ms = [];
  out.failed_reps.push(`latency: ${String(err.message ?? err).slice(0, 300)}`);
}
// The outbox drain, batched beside one change per round trip, alternating
// in the same run (the one-by-one path takes long: fewer repetitions of it).
for (let r = 0; r < reps; r++) {
  try {
    const batched = await call('drain', ws, `bench:drain:${Date.now()}:${r}`, drainCount, null);
    out.drain_batched_ms.push(batched.ms);
    if (r < Math.max(1, Math.ceil(reps / 3))) {
      const single = await call('drain', ws, `bench:drain-one:${Date.now()}:${r}`, drainCount, 1);
      out.drain_one_by_one_ms.push(single.ms);
    }
  } catch (err) {
    out.failed_reps.push(`drain: ${String(err.message ?? err).slice(0, 300)}`);
  }
}
out.page_errors = errors;
console.log(JSON.stringify(out));
await browser.close();
