// Writes docs/BENCHMARKS.md and docs/bench-*.svg from the JSON lines that
// scripts/bench collected. usage: node report.mjs RESULTS.jsonl MACHINE.json DOCS_DIR
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

const [resultsPath, machinePath, docs, slowlogPath] = process.argv.slice(2);
const results = readFileSync(resultsPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const machine = JSON.parse(readFileSync(machinePath, 'utf8'));
const of = (measure) => results.filter((r) => r.measure === measure).map((r) => r.data);

// ------------------------------------------------------------------ stats
const sorted = (xs) => [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
const median = (xs) => {
  const s = sorted(xs);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const quantile = (xs, q) => {
  const s = sorted(xs);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
};
const fmt = (x, digits) => {
  if (!Number.isFinite(x)) return 'n/a';
  const d = digits ?? (Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2);
  return x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
};
// "median (min–max, n)"
const spread = (xs, digits) => {
  const s = sorted(xs);
  if (!s.length) return 'n/a';
  if (s.length === 1) return `${fmt(s[0], digits)} (n=1)`;
  return `${fmt(median(s), digits)} (${fmt(s[0], digits)}–${fmt(s[s.length - 1], digits)}, n=${s.length})`;
};
const ratio = (x) => (Number.isFinite(x) ? `${fmt(x, 2)}×` : 'n/a');
const verdict = (ok) => (ok === undefined ? '—' : ok ? 'met' : '**missed**');
const kb = (bytes) => bytes / 1024;

// ------------------------------------------------------------------ svg
function lineChart({ title, xLabel, yLabel, series, logX = false, file }) {
  const W = 640, H = 360, L = 70, R = 150, T = 40, B = 50;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  if (!xs.length || !ys.length) return false;
  const tx = (x) => (logX ? Math.log10(x) : x);
  const x0 = Math.min(...xs.map(tx)), x1 = Math.max(...xs.map(tx));
  const y1 = Math.max(...ys) * 1.1 || 1;
  const px = (x) => L + ((tx(x) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (y) => H - B - (y / y1) * (H - T - B);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">\n`;
  svg += `<rect width="${W}" height="${H}" fill="white"/>\n`;
  svg += `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>\n`;
  svg += `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>\n`;
  for (let i = 0; i <= 4; i++) {
    const y = (y1 / 4) * i;
    svg += `<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/><text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${fmt(y, y1 < 10 ? 1 : 0)}</text>\n`;
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    svg += `<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${fmt(x, 0)}</text>\n`;
  }
  svg += `<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>\n`;
  svg += `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>\n`;
  series.forEach((s, i) => {
    const c = colors[i % colors.length];
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    svg += `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => `${px(p[0])},${py(p[1])}`).join(' ')}"/>\n`;
    for (const p of pts) svg += `<circle cx="${px(p[0])}" cy="${py(p[1])}" r="3" fill="${c}"/>\n`;
    svg += `<rect x="${W - R + 12}" y="${T + i * 20 - 9}" width="12" height="3" fill="${c}"/><text x="${W - R + 28}" y="${T + i * 20 - 4}">${esc(s.name)}</text>\n`;
  });
  svg += '</svg>\n';
  writeFileSync(join(docs, file), svg);
  return true;
}

// ------------------------------------------------------------------ measures
const lines = [];
const p = (s = '') => lines.push(s);
const goals = [];

// Feed script.
const floorBench = of('feed_floor_redis_benchmark');
const scriptBench = of('feed_script_redis_benchmark');
const floorRust = of('feed_floor_store');
const scriptRust = of('feed_script_store');
const rb = (rows) => rows.map((r) => r.rps);
const feedRatio = median(rb(scriptBench)) / median(rb(floorBench));
const usFloor = median(floorBench.map((r) => r.usec_per_call));
const usScript = median(scriptBench.map((r) => r.usec_per_call));
const rustRatio = median(scriptRust.map((r) => r.per_sec)) / median(floorRust.map((r) => r.per_sec));
goals.push(['Feed publish script vs EVALSHA floor (redis-benchmark, 50 clients)', `${fmt(median(rb(scriptBench)), 0)} vs ${fmt(median(rb(floorBench)), 0)} calls/s`, ratio(feedRatio), '≥ 0.5×', verdict(feedRatio >= 0.5)]);

// Jobs.
const jobRows = [];
for (const w of [1, 4]) {
  const ours = of('jobs_noop').filter((r) => r.workers === w).map((r) => r.per_sec);
  const bull = of('jobs_bullmq').filter((r) => r.workers === w).map((r) => r.per_sec);
  const pub = of('jobs_publish').filter((r) => r.workers === w).map((r) => r.per_sec);
  const r = median(ours) / median(bull);
  jobRows.push({ w, ours, bull, pub, r });
  goals.push([`Jobs/s end to end, ${w} worker${w > 1 ? 's' : ''} (no-op) vs BullMQ`, `${fmt(median(ours), 0)} vs ${fmt(median(bull), 0)} jobs/s`, ratio(r), '≥ 2×', verdict(r >= 2)]);
}

// Connections and fan-out.
const conns = of('ws_conns').sort((a, b) => a.conns - b.conns);
const biggest = conns[conns.length - 1];
if (biggest) {
  goals.push(['Idle WebSocket connections held', `${fmt(biggest.held, 0)} of ${fmt(biggest.conns, 0)} tried`, '', '20,000', verdict(biggest.held >= 20000)]);
  goals.push(['Gateway memory per idle connection', `${fmt(kb(biggest.server_bytes_per_conn), 1)} KB`, '', '≤ 16 KB', verdict(kb(biggest.server_bytes_per_conn) <= 16)]);
}

// Latency.
const browser = of('browser')[0];
if (browser) {
  const lat = browser.publish_to_other_callback_ms;
  const p50 = quantile(lat, 0.5), p99 = quantile(lat, 0.99);
  goals.push(['Publish → other client\'s callback, browser, loopback', lat.length ? `p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms` : 'not measured in this run (see below)', '', '≤ 3 ms / ≤ 15 ms', lat.length ? verdict(p50 <= 3 && p99 <= 15) : '**missed**']);
  const rawPut = median(browser.raw_put_ms), dexiePut = median(browser.dexie_put_ms);
  const replay = median(browser.client_replay_ms);
  goals.push([`Replay of ${fmt(browser.items, 0)} events into IndexedDB vs raw batched puts (throughput)`, `${fmt(replay, 0)} ms vs ${fmt(rawPut, 0)} ms`, ratio(rawPut / replay), '≥ 0.8× raw', verdict(rawPut / replay >= 0.8)]);
  goals.push([`  … vs Dexie bulkPut`, `${fmt(replay, 0)} ms vs ${fmt(dexiePut, 0)} ms`, ratio(dexiePut / replay), '—', '—']);
  const cold = median(browser.client_cold_ms), rawCold = median(browser.raw_cold_ms);
  goals.push([`Cold start: open + read ${fmt(browser.items, 0)} cached items vs raw open + getAll`, `${fmt(cold, 0)} ms vs ${fmt(rawCold, 0)} ms`, ratio(cold / rawCold), '≤ 1.5×', verdict(cold / rawCold <= 1.5)]);
}

// Bundle.
const bundle = of('bundle')[0];
if (bundle) {
  const total = kb(bundle.wasm_gzip + bundle.js_gzip);
  goals.push(['Bundle: wasm + JS, gzip -9', `${fmt(total, 1)} KB (wasm ${fmt(kb(bundle.wasm_gzip), 1)} KB + JS ${fmt(kb(bundle.js_gzip), 1)} KB)`, '', '≤ 150 KB', verdict(total <= 150)]);
}

// ------------------------------------------------------------------ document
p('# Benchmarks');
p();
p(`Generated by \`${machine.command}\` on ${machine.date} in ${fmt(machine.elapsed_secs / 60, 1)} minutes. Regenerate with \`scripts/bench\`;`);
p('each measure runs beside its baseline in the same run, against servers the script starts on free local ports (Redis with AOF on, as the demo runs it; release builds).');
p('Figures are medians with the spread (min–max) and the number of repetitions. Nothing here is a test: no timed assertion lives in the test suite.');
p();
p('## Machine');
p();
p('| | |');
p('|---|---|');
for (const [k, v] of Object.entries(machine.info)) p(`| ${k} | ${String(v).replace(/\n/g, '<br>').replace(/\|/g, '\\|')} |`);
p();
p(`**Noise.** The machine is shared: the load average was ${machine.load_start} at the start and ${machine.load_end} at the end of the run (2 cores). Other builds and test runs compete with the servers, the load clients and the browser, so absolute rates are low and vary between runs; the ratios (measure and baseline in the same run, interleaved) are the figures to read.`);
p();
if (machine.failed?.length) {
  p(`**Measures that failed in this run** (a Redis call timing out on the overloaded host; left out of the tables): ${machine.failed.join(', ')}.`);
  p();
}
p('## Goals');
p();
p('| measure | ours vs baseline | ratio | goal | |');
p('|---|---|---|---|---|');
for (const g of goals) p(`| ${g.join(' | ')} |`);
p();

p('## Server');
p();
p('### Feed publish script vs the EVALSHA floor (issue 3)');
p();
p('redis-benchmark, 50 connections, unpipelined, on the same Redis: `EVALSHA` of `return 1` (the floor) and of the feed publish script (prelude + `publish.lua`, a new item id each call via `__rand_int__`, one time-ordered feed). Then the same two scripts through the server\'s own client path (`FeedStore::publish` vs a trivial script on one multiplexed `ConnectionManager`, 50 concurrent tasks). Per-call CPU inside Redis from `INFO commandstats`.');
p();
p('| | floor (`return 1`) | publish script | ratio |');
p('|---|---|---|---|');
p(`| redis-benchmark, calls/s | ${spread(rb(floorBench), 0)} | ${spread(rb(scriptBench), 0)} | ${ratio(feedRatio)} |`);
p(`| Redis CPU per call (µs, commandstats) | ${spread(floorBench.map((r) => r.usec_per_call))} | ${spread(scriptBench.map((r) => r.usec_per_call))} | ${ratio(usFloor / usScript)} |`);
p(`| server client path (Rust), calls/s | ${spread(floorRust.map((r) => r.per_sec), 0)} | ${spread(scriptRust.map((r) => r.per_sec), 0)} | ${ratio(rustRatio)} |`);
p();
const breakdown = scriptBench[scriptBench.length - 1]?.commandstats;
if (breakdown) {
  p('Profile of one publish (the last repetition\'s `INFO commandstats`, per script call): the Redis commands the script runs and their CPU time (commands run less than once per publish, i.e. by other clients in the window, left out).');
  p();
  p('| command | calls per publish | µs per call | µs per publish |');
  p('|---|---|---|---|');
  const calls = breakdown.evalsha?.calls || 1;
  let inner = 0;
  for (const [cmd, s] of Object.entries(breakdown).sort((a, b) => b[1].usec - a[1].usec)) {
    // Commands other clients ran in the window (the adopter, the gateway) are
    // not part of a publish: keep those the script runs about once per call.
    if (cmd === 'evalsha' || s.calls / calls < 0.5) continue;
    inner += s.usec / calls;
    p(`| ${cmd} | ${fmt(s.calls / calls, 2)} | ${fmt(s.usec_per_call)} | ${fmt(s.usec / calls)} |`);
  }
  p(`| **evalsha total** | 1 | ${fmt(breakdown.evalsha?.usec_per_call)} | ${fmt(breakdown.evalsha?.usec_per_call)} |`);
  p();
  p(`The commands themselves account for ${fmt(inner)} µs of the ${fmt(breakdown.evalsha?.usec_per_call)} µs a publish costs inside Redis; the rest is Lua work in the script (see Misses below).`);
  p();
}

p('### Jobs end to end vs BullMQ (issue 4)');
p();
p('A job is put, claimed by a worker, worked, and its outcome stored and published; the clock runs from the first put to the last finish notice (ours: `job.finish:N`; BullMQ: the worker\'s `completed` events). Both put from 16 concurrent producers while the workers run, on the same Redis. Ours: `thoonk-bench jobs` with the server\'s `run_workers` in process and a registered no-op action (puts through `job_submit.lua` with the exactly-once ledger, `job_claim.lua`, `job_finish.lua`); "publish" jobs also apply a feed publish through `job_apply.lua`. BullMQ: `Queue.add` + `Worker` with `concurrency` N and a no-op processor (return value stored).');
p();
p('| workers | ours, no-op (jobs/s) | BullMQ, no-op (jobs/s) | ratio | ours, feed publish (jobs/s) |');
p('|---|---|---|---|---|');
for (const j of jobRows) p(`| ${j.w} | ${spread(j.ours, 0)} | ${spread(j.bull, 0)} | ${ratio(j.r)} | ${spread(j.pub, 0)} |`);
p();

p('### WebSocket gateway: idle connections, memory, fan-out (issue 5)');
p();
p('`thoonk-bench ws-conns`: N connections from one load-client process (tokio-tungstenite, the protocol types), each `hello` + `subscribe` to one feed (snapshot received), then held idle; the gateway\'s RSS (`/proc/PID/status` VmRSS) before and after. Then single publishes to that feed through the store, each timed from before the publish call until every connection has parsed its `event` (load client and gateway share the 2 cores).');
p();
p('| connections tried | held | gateway RSS held | bytes per connection | load client bytes per connection | fan-out to the last socket (ms) | to the median socket (ms) |');
p('|---|---|---|---|---|---|---|');
for (const c of conns) {
  p(`| ${fmt(c.conns, 0)} | ${fmt(c.held, 0)}${c.failed ? ` (${c.failed} failed: ${c.first_error})` : ''} | ${fmt(c.server_rss_held / 1048576, 0)} MB | ${fmt(kb(c.server_bytes_per_conn), 1)} KB | ${fmt(kb(c.client_bytes_per_conn), 1)} KB | ${spread(c.fanout_last_ms)} | ${spread(c.fanout_median_ms)} |`);
}
p();
const lat = of('ws_latency');
if (lat.length) {
  p('Publish → receive latency on loopback, Rust load client (the browser figure is under Client):');
  p();
  p('| path | p50 (ms) | p99 (ms) | samples |');
  p('|---|---|---|---|');
  const row = (name, key) => p(`| ${name} | ${spread(lat.map((l) => l[key].p50_ms))} | ${spread(lat.map((l) => l[key].p99_ms))} | ${lat.reduce((n, l) => n + l[key].n, 0)} |`);
  row('client `submit` → job → worker → other client\'s `event`', 'submit_to_event');
  row('client `submit` → its own `outcome`', 'submit_to_outcome');
  if (lat.every((l) => l.submit_to_outcome_ping_after_ack)) row('… the same, the client answering each `ack` with a `ping` (its TCP ACK leaves at once)', 'submit_to_outcome_ping_after_ack');
  row('store publish (script) → client\'s `event`', 'store_publish_to_event');
  p();
}

p('## Client (headless Chromium, issue 7 and 9)');
p();
if (browser) {
  p(`Debian's Chromium ${browser.chromium} driven by playwright-core; the page (bench/js/page) imports the wasm package built with \`wasm-pack build --target web --profile wasm-release\` and Dexie ${browser.dexie}, served by thoonk-server. ${fmt(browser.items, 0)} items of the shape \`{"title": "Task number n", "done": bool, "n": n}\`; the raw and Dexie rows are the records the client stores (key \`[feed, id]\`, value the JSON text of the stored item).`);
  p();
  p('| measure | median (min–max, n) ms |');
  p('|---|---|');
  p(`| raw IndexedDB: ${fmt(browser.items, 0)} puts in one transaction | ${spread(browser.raw_put_ms)} |`);
  p(`| Dexie \`bulkPut\` of the same rows | ${spread(browser.dexie_put_ms)} |`);
  p(`| client: open + replay of ${fmt(browser.items, 0)} changes (\`changes\` frames) until the change callback shows them all, stored | ${spread(browser.client_replay_ms)} |`);
  p(`| client: open + first sync (one \`snapshot\`) of the same feed | ${spread(browser.client_snapshot_ms)} |`);
  p(`| client cold start: \`Client.open\` on the cached mirror + \`items(feed)\` | ${spread(browser.client_cold_ms)} |`);
  p(`| raw cold start: open the client's database + \`getAll\` of its mirror + JSON.parse | ${spread(browser.raw_cold_ms)} |`);
  p(`| raw \`getAll\` of the raw rows (fresh connection, + JSON.parse) | ${spread(browser.raw_getall_ms)} |`);
  p();
  const l = browser.publish_to_other_callback_ms, o = browser.publish_to_own_outcome_ms;
  p(`Publish on client A → client B's change callback (both in one page, each with its own database and socket, through the real server: submit → job → worker → feed script → pub/sub → gateway → B's IndexedDB → callback), ${l.length} samples: p50 ${fmt(quantile(l, 0.5))} ms, p90 ${fmt(quantile(l, 0.9))} ms, p99 ${fmt(quantile(l, 0.99))} ms, max ${fmt(quantile(l, 1))} ms. A's own outcome: p50 ${fmt(quantile(o, 0.5))} ms, p99 ${fmt(quantile(o, 0.99))} ms.`);
  const ts = browser.publish_to_send_ms ?? [], tf = browser.send_to_frame_ms ?? [], fc = browser.frame_to_callback_ms ?? [];
  if (tf.length) p(`Profile of that path (frames timed as A's WebSocket sends the submit and as the event reaches B's): publish → submit frame sent (A's client: sync core, the strict IndexedDB commit of the outbox entry) p50 ${fmt(quantile(ts, 0.5))} ms, p99 ${fmt(quantile(ts, 0.99))} ms; submit sent → event at B (gateway, job queue, worker, feed script, pub/sub, loopback) p50 ${fmt(quantile(tf, 0.5))} ms, p99 ${fmt(quantile(tf, 0.99))} ms; event at B → B's callback (B's client: parse, sync core, IndexedDB transaction, conversion to JS) p50 ${fmt(quantile(fc, 0.5))} ms, p99 ${fmt(quantile(fc, 0.99))} ms.`);
  p();
  if (browser.page_errors?.length) p(`Page errors: ${browser.page_errors.join('; ')}`);
  if (browser.failed_reps?.length) { p(`Failed repetitions (left out above): ${browser.failed_reps.join('; ')}`); p(); }
}
if (bundle) {
  p(`Bundle (\`wasm-pack build --target web --profile wasm-release\`, no wasm-opt): \`thoonk_sync_bg.wasm\` ${fmt(kb(bundle.wasm_bytes), 1)} KB raw, ${fmt(kb(bundle.wasm_gzip), 1)} KB gzip -9; \`thoonk_sync.js\` ${fmt(kb(bundle.js_bytes), 1)} KB raw, ${fmt(kb(bundle.js_gzip), 1)} KB gzip -9.`);
  const sizes = of('bundle_crates')[0];
  if (sizes) {
    p();
    p(`Profile of the module: its code (${fmt(kb(sizes.code), 1)} KB of function bodies in a build that keeps the name section, before wasm-bindgen) by the crate each function belongs to (\`bench/wasm_sizes.py\`; generic code counts for the crate that defines it, e.g. \`alloc\` holds every \`Vec\`/\`BTreeMap\` instantiation):`);
    p();
    p('| crate | code KB | share | functions |');
    p('|---|---|---|---|');
    for (const [crate, bytes, functions] of sizes.crates.slice(0, 14)) {
      p(`| ${crate} | ${fmt(kb(bytes), 1)} | ${fmt((100 * bytes) / sizes.code, 1)} % | ${fmt(functions, 0)} |`);
    }
  }
  p();
}

const single = of('spread_single').map((r) => r.per_sec), clustered = of('spread_cluster').map((r) => r.per_sec);
if (single.length && clustered.length) {
  p('## Beyond one machine (issue 12)');
  p();
  p(`Publishes per second through \`FeedStore::publish\` (50 concurrent tasks, one store, 12 feeds \`bench:{s<i>}:spread\` each with its own hash tag), on one Redis and on a local Redis Cluster of 3 primaries (no replicas), interleaved, on the machine above: the point is that the feeds spread over the shards and throughput does not fall, not an absolute figure (three Redis processes share the same two cores with the load client).`);
  p();
  p('| target | publishes/s | vs one Redis |');
  p('|---|---|---|');
  p(`| one Redis | ${spread(single, 0)} | 1× |`);
  p(`| Redis Cluster, 3 primaries | ${spread(clustered, 0)} | ${fmt(median(clustered) / median(single), 2)}× |`);
  p();
  p('Jobs: one queue is one hash tag, so one shard; jobs scale over shards with a queue per shard (e.g. per team), which the server does not run yet. Connections over several gateways: see the fan-out and connection tables above (one gateway); two gateways on one Redis are tested for identical streams, not measured here.');
  p();
}
p('## Scaling');
p();
const replays = of('replay').sort((a, b) => a.items - b.items);
const byItems = new Map();
for (const r of replays) byItems.set(r.items, r);
p('Feed size: one time-ordered feed filled through the store (16 concurrent publishes), then a fresh connection subscribes without a known position (`snapshot`) or with `(epoch, 0)` (`changes` replay, 500 per frame) and the clock stops when the last item is parsed by the Rust load client. Redis memory from `INFO memory` before and after the fill (items, item revisions, change log, ids).');
p();
p('| items | snapshot (ms) | replay from rev 0 (ms) | Redis bytes per item | fill (publishes/s) |');
p('|---|---|---|---|---|');
for (const r of replays) p(`| ${fmt(r.items, 0)} | ${spread(r.snapshot_ms)} | ${spread(r.replay_ms)}${r.replay_kind !== 'changes' ? ` (${r.replay_kind})` : ''} | ${fmt(r.redis_bytes_per_item, 0)} | ${fmt(r.fill_per_sec, 0)} |`);
p();
p('Subscribers: see the connections table above (gateway RSS and fan-out time at each count).');
p();
const plot1 = lineChart({
  title: 'Sync time by feed size (Rust client, loopback)', xLabel: 'items in the feed (log scale)', yLabel: 'ms (median)', logX: true,
  file: 'bench-scaling.svg',
  series: [
    { name: 'snapshot', points: replays.map((r) => [r.items, median(r.snapshot_ms)]) },
    { name: 'replay', points: replays.map((r) => [r.items, median(r.replay_ms)]) },
  ],
});
if (plot1) { p('![sync time by feed size](bench-scaling.svg)'); p(); }
const plot2 = lineChart({
  title: 'Fan-out of one publish and gateway memory by subscribers', xLabel: 'subscribed connections', yLabel: 'ms  /  MB',
  file: 'bench-fanout.svg',
  series: [
    { name: 'fan-out, last (ms)', points: conns.map((c) => [c.held, median(c.fanout_last_ms)]) },
    { name: 'fan-out, median (ms)', points: conns.map((c) => [c.held, median(c.fanout_median_ms)]) },
    { name: 'gateway RSS (MB)', points: conns.map((c) => [c.held, c.server_rss_held / 1048576]) },
  ],
});
if (plot2) { p('![fan-out by subscribers](bench-fanout.svg)'); p(); }

// Redis SLOWLOG (commands over 10 ms, the whole run), scripts named by their sha.
let slowlog = [];
try { slowlog = JSON.parse(readFileSync(slowlogPath, 'utf8')); } catch { /* none */ }
if (slowlog.length) {
  const luaDir = join(import.meta.dirname, '..', '..', 'server-stub', 'lua');
  const names = {};
  const sha = (text) => createHash('sha1').update(text).digest('hex');
  let prelude = '';
  try { prelude = readFileSync(join(luaDir, 'prelude.lua'), 'utf8'); } catch { /* none */ }
  try {
    for (const f of readdirSync(luaDir).filter((f) => f.endsWith('.lua'))) {
      const body = readFileSync(join(luaDir, f), 'utf8');
      names[sha(body)] = f;
      names[sha(`${prelude}\n${body}`)] = f;
    }
  } catch { /* none */ }
  names[sha('return 1')] = 'return 1';
  const label = (args) => {
    if (/^evalsha$/i.test(args[0])) return `EVALSHA ${names[args[1]] ?? args[1].slice(0, 12)} ${args[3] ?? ''}`;
    return args.slice(0, 2).join(' ');
  };
  const groups = new Map();
  for (const [, , us, args] of slowlog) {
    const key = label(args).replace(/:\d{10,}/g, ':…');
    const g = groups.get(key) ?? { n: 0, total: 0, max: 0 };
    g.n += 1; g.total += us; g.max = Math.max(g.max, us);
    groups.set(key, g);
  }
  p('## Redis stalls (SLOWLOG)');
  p();
  p(`Every command that ran over 10 ms in Redis during the run (${slowlog.length} entries), grouped; Redis runs one command at a time, so each of these blocked every other client for its duration (the server's Redis calls give up after 5 s).`);
  p();
  p('| command (script, first key) | count | total (ms) | longest (ms) |');
  p('|---|---|---|---|');
  for (const [key, g] of [...groups].sort((a, b) => b[1].total - a[1].total).slice(0, 12)) {
    p(`| \`${key.replace(/\|/g, '\\|').slice(0, 110)}\` | ${g.n} | ${fmt(g.total / 1000, 0)} | ${fmt(g.max / 1000, 0)} |`);
  }
  p();
}

const findingsPath = join(import.meta.dirname, '..', 'findings.md');
let findings = '';
try { findings = readFileSync(findingsPath, 'utf8'); } catch { /* none */ }
if (findings) {
  p('## Misses and their causes');
  p();
  p(findings.trim());
  p();
}
writeFileSync(join(docs, 'BENCHMARKS.md'), lines.join('\n'));
console.error(`wrote ${join(docs, 'BENCHMARKS.md')}`);
