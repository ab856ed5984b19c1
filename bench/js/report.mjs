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
const preludeBench = of('feed_prelude_redis_benchmark');
const callsBench = of('feed_calls_redis_benchmark');
const evalshaBench = of('feed_evalsha_redis_benchmark');
goals.push(['Feed publish (FCALL) vs EVALSHA floor (redis-benchmark, 50 clients)', `${fmt(median(rb(scriptBench)), 0)} vs ${fmt(median(rb(floorBench)), 0)} calls/s`, ratio(feedRatio), '≥ 0.5×', verdict(feedRatio >= 0.5)]);

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
  goals.push(['Publish → other client\'s callback, browser, loopback', lat.length ? `p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms` : 'not measured in this run (see below)', '', '≤ 3 ms / ≤ 10 ms', lat.length ? verdict(p50 <= 3 && p99 <= 10) : '**missed**']);
  const rawPut = median(browser.raw_put_ms), dexiePut = median(browser.dexie_put_ms);
  const replay = median(browser.client_replay_ms);
  goals.push([`Replay of ${fmt(browser.items, 0)} events into IndexedDB vs raw batched puts (throughput)`, `${fmt(replay, 0)} ms vs ${fmt(rawPut, 0)} ms`, ratio(rawPut / replay), '≥ 0.8× raw', verdict(rawPut / replay >= 0.8)]);
  goals.push([`  … vs Dexie bulkPut`, `${fmt(replay, 0)} ms vs ${fmt(dexiePut, 0)} ms`, ratio(dexiePut / replay), '—', '—']);
  const snapshot = median(browser.client_snapshot_ms);
  goals.push([`First sync of the same feed (one snapshot) vs raw batched puts (throughput)`, `${fmt(snapshot, 0)} ms vs ${fmt(rawPut, 0)} ms`, ratio(rawPut / snapshot), '≥ 0.9× raw', verdict(rawPut / snapshot >= 0.9)]);
  const cold = median(browser.client_cold_ms), rawCold = median(browser.raw_cold_ms);
  goals.push([`Cold start: open + read ${fmt(browser.items, 0)} cached items vs raw open + getAll`, `${fmt(cold, 0)} ms vs ${fmt(rawCold, 0)} ms`, ratio(cold / rawCold), '≤ 1.2×', verdict(cold / rawCold <= 1.2)]);
  if (browser.drain_batched_ms?.length) {
    const n = browser.drain_changes;
    const batched = median(browser.drain_batched_ms);
    const single = browser.drain_one_by_one_ms?.length ? median(browser.drain_one_by_one_ms) : NaN;
    const rate = n / (batched / 1000);
    goals.push([`Outbox drain: ${fmt(n, 0)} changes to one feed queued offline, all accepted after reconnect, vs one change per round trip`, `${fmt(rate, 0)}/s (${fmt(batched, 0)} ms) vs ${fmt(n / (single / 1000), 0)}/s (${fmt(single, 0)} ms)`, ratio(single / batched), '≥ 1,000 changes/s', verdict(rate >= 1000)]);
  }
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
p('### Feed publish vs the EVALSHA floor (issue 3, issue 20)');
p();
p('redis-benchmark, 50 connections, unpipelined, on the same Redis: `EVALSHA` of `return 1` (the floor); the split of a publish: `EVALSHA` of the prelude followed by `return 1` (what every call paid for the prelude when each script carried it), and of a script making the same 14 Redis calls as a publish with no logic (the calls and their argument/reply conversion); the publish as one `EVALSHA` script (prelude + `publish.lua`, as before the function library) and as the server calls it, `FCALL thoonk_publish` of the function library (a new item id each call via `__rand_int__`, one time-ordered feed). Then the floor and the publish through the server\'s own client path (`FeedStore::publish` vs a trivial script on one multiplexed `ConnectionManager`, 50 concurrent tasks). Per-call CPU inside Redis from `INFO commandstats` (`fcall` is one figure for every function: the gateway\'s adopter runs during the measure count in it).');
p();
p('| | calls/s (redis-benchmark) | vs floor | Redis CPU per call (µs) |');
p('|---|---|---|---|');
const row = (label, rows) => p(`| ${label} | ${spread(rb(rows), 0)} | ${ratio(median(rb(rows)) / median(rb(floorBench)))} | ${spread(rows.map((r) => r.usec_per_call))} |`);
row('floor: `EVALSHA` of `return 1`', floorBench);
row('prelude + `return 1` (`EVALSHA`)', preludeBench);
row('the 14 calls of a publish, no logic (`EVALSHA`)', callsBench);
row('publish as one script (`EVALSHA`, prelude + `publish.lua`)', evalshaBench);
row('**publish, `FCALL thoonk_publish`**', scriptBench);
p();
p('| server client path (Rust) | floor (`return 1`) | publish | ratio |');
p('|---|---|---|---|');
p(`| calls/s | ${spread(floorRust.map((r) => r.per_sec), 0)} | ${spread(scriptRust.map((r) => r.per_sec), 0)} | ${ratio(rustRatio)} |`);
p();
const breakdown = scriptBench[scriptBench.length - 1]?.commandstats;
if (breakdown) {
  p('Profile of one publish (the last repetition\'s `INFO commandstats`, per `FCALL`): the Redis commands the function runs and their CPU time (commands run less than once per publish, i.e. by other clients in the window, left out).');
  p();
  p('| command | calls per publish | µs per call | µs per publish |');
  p('|---|---|---|---|');
  const calls = breakdown.fcall?.calls || 1;
  let inner = 0;
  for (const [cmd, s] of Object.entries(breakdown).sort((a, b) => b[1].usec - a[1].usec)) {
    // Commands other clients ran in the window (the adopter, the gateway) are
    // not part of a publish: keep those the function runs about once per call.
    if (cmd === 'fcall' || s.calls / calls < 0.5) continue;
    inner += s.usec / calls;
    p(`| ${cmd} | ${fmt(s.calls / calls, 2)} | ${fmt(s.usec_per_call)} | ${fmt(s.usec / calls)} |`);
  }
  p(`| **fcall total** | 1 | ${fmt(breakdown.fcall?.usec_per_call)} | ${fmt(breakdown.fcall?.usec_per_call)} |`);
  p();
  const callsOnly = median(callsBench.map((r) => r.usec_per_call));
  p(`The commands themselves account for ${fmt(inner)} µs of the ${fmt(breakdown.fcall?.usec_per_call)} µs a publish costs inside Redis; the script making the same calls with no logic costs ${fmt(callsOnly)} µs, the prelude alone ${fmt(median(preludeBench.map((r) => r.usec_per_call)))} µs per call (see Misses below).`);
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
  p(`Debian's Chromium ${browser.chromium} driven by playwright-core; the page (bench/js/page) imports the wasm package built by \`scripts/build\` (below) and Dexie ${browser.dexie}, served by thoonk-server. ${fmt(browser.items, 0)} items of the shape \`{"title": "Task number n", "done": bool, "n": n}\`; the raw and Dexie rows are the records the client stores (key \`[feed, id]\`, value the JSON text of the stored item).`);
  p();
  p('| measure | median (min–max, n) ms |');
  p('|---|---|');
  p(`| raw IndexedDB: ${fmt(browser.items, 0)} puts in one transaction | ${spread(browser.raw_put_ms)} |`);
  p(`| Dexie \`bulkPut\` of the same rows | ${spread(browser.dexie_put_ms)} |`);
  p(`| client: open + replay of ${fmt(browser.items, 0)} changes (\`changes\` frames) until the change callback showed them all and the mirror holds them in IndexedDB | ${spread(browser.client_replay_ms)} |`);
  if (browser.client_replay_shown_ms?.length) p(`| … of which until the change callback showed them all (the mirror's last write commits after) | ${spread(browser.client_replay_shown_ms)} |`);
  p(`| client: open + first sync (one \`snapshot\`) of the same feed, until shown and stored | ${spread(browser.client_snapshot_ms)} |`);
  if (browser.client_snapshot_shown_ms?.length) p(`| … of which until the change callback showed them all | ${spread(browser.client_snapshot_shown_ms)} |`);
  p(`| client cold start: \`Client.open\` on the cached mirror + \`items(feed)\` | ${spread(browser.client_cold_ms)} |`);
  p(`| raw cold start: open the client's database + \`getAll\` of its mirror + JSON.parse | ${spread(browser.raw_cold_ms)} |`);
  p(`| raw \`getAll\` of the raw rows (fresh connection, + JSON.parse) | ${spread(browser.raw_getall_ms)} |`);
  if (browser.drain_batched_ms?.length) {
    p(`| outbox drain: ${fmt(browser.drain_changes, 0)} publishes to one feed queued offline (\`offline: true\`), from \`setOnline(true)\` until every outcome is accepted; a feed's queue goes out in \`submit_batch\` frames of up to 500 | ${spread(browser.drain_batched_ms)} |`);
    p(`| the same drain with \`maxBatch: 1\`: one \`submit\` per change, each waiting for the previous outcome (the path before batches) | ${spread(browser.drain_one_by_one_ms)} |`);
  }
  p();
  const l = browser.publish_to_other_callback_ms, o = browser.publish_to_own_outcome_ms;
  p(`Publish on client A → client B's change callback (both in one page, each with its own database and socket, through the real server: submit → job → worker → feed script → pub/sub → gateway → B's sync core → callback; B's mirror write commits after the callback), ${l.length} samples: p50 ${fmt(quantile(l, 0.5))} ms, p90 ${fmt(quantile(l, 0.9))} ms, p99 ${fmt(quantile(l, 0.99))} ms, max ${fmt(quantile(l, 1))} ms. A's own outcome: p50 ${fmt(quantile(o, 0.5))} ms, p99 ${fmt(quantile(o, 0.99))} ms.`);
  const ts = browser.publish_to_send_ms ?? [], tf = browser.send_to_frame_ms ?? [], fc = browser.frame_to_callback_ms ?? [];
  if (tf.length) p(`Profile of that path (frames timed as A's WebSocket sends the submit and as the event reaches B's): publish → submit frame sent (A's client: sync core, the strict IndexedDB commit of the outbox entry) p50 ${fmt(quantile(ts, 0.5))} ms, p99 ${fmt(quantile(ts, 0.99))} ms; submit sent → event at B (gateway, job queue, worker, feed script, pub/sub, loopback) p50 ${fmt(quantile(tf, 0.5))} ms, p99 ${fmt(quantile(tf, 0.99))} ms; event at B → B's callback (B's client: parse, sync core, conversion to JS; the mirror's IndexedDB write follows the callback) p50 ${fmt(quantile(fc, 0.5))} ms, p99 ${fmt(quantile(fc, 0.99))} ms.`);
  p();
  if (browser.page_errors?.length) p(`Page errors: ${browser.page_errors.join('; ')}`);
  if (browser.failed_reps?.length) { p(`Failed repetitions (left out above): ${browser.failed_reps.join('; ')}`); p(); }
}
if (bundle) {
  p(`Bundle (\`scripts/build\`, the README's build: \`wasm-pack build --target web --profile wasm-release\`, then binaryen's \`wasm-opt -Oz\` without its inlining pass): \`thoonk_sync_bg.wasm\` ${fmt(kb(bundle.wasm_bytes), 1)} KB raw, ${fmt(kb(bundle.wasm_gzip), 1)} KB gzip -9; \`thoonk_sync.js\` ${fmt(kb(bundle.js_bytes), 1)} KB raw, ${fmt(kb(bundle.js_gzip), 1)} KB gzip -9.`);
  const sizes = of('bundle_crates')[0];
  if (sizes) {
    p();
    p(`Profile of the module: its code (${fmt(kb(sizes.code), 1)} KB of function bodies, ${fmt(kb(sizes.code_gzip), 1)} KB gzip -9, in the compiler's module of the same build, before wasm-bindgen and wasm-opt; wasm-bindgen's ${fmt(kb(sizes.describe), 1)} KB of \`__wbindgen_describe\` functions, which it removes, left out) by the crate each function belongs to (\`bench/wasm_sizes.py\`; generic code counts for the crate that defines it, e.g. \`alloc\` holds every \`Vec\`/\`BTreeMap\` instantiation, \`serde\` the buffering of tagged enums). "gzip KB alone" is gzip -9 of the crate's functions on their own: a guide to what dropping the crate would save, not a share of the bundle (the code compresses better as a whole):`);
    p();
    p('| crate | code KB | share | gzip KB alone | functions |');
    p('|---|---|---|---|---|');
    for (const [crate, bytes, functions, gzip] of sizes.crates.slice(0, 16)) {
      p(`| ${crate} | ${fmt(kb(bytes), 1)} | ${fmt((100 * bytes) / sizes.code, 1)} % | ${gzip === undefined ? '' : fmt(kb(gzip), 1)} | ${fmt(functions, 0)} |`);
    }
  }
  p();
}

const single = of('spread_single').map((r) => r.per_sec), clustered = of('spread_cluster').map((r) => r.per_sec);
const jobsOne = of('jobs_shard_single'), jobsCluster = of('jobs_shard_cluster'), jobsOne3 = of('jobs_shard_single3');
const split = of('ws_split');
const fanout = of('tag_fanout');
if (single.length || jobsOne.length || split.length || fanout.length) {
  p('## Beyond one machine (issue 12)');
  p();
  p(`What these figures mean: all of it runs on the machine above, ${machine.info.nproc ?? 2} cores. The Redis Cluster is 3 primaries (no replicas) as 3 local redis-server processes, and they share those cores with the gateways, the workers and the load client; so a cluster cannot add capacity here, only show that the deployment works, that the load spreads over the shards, and what each gateway has to hear. Ratios are against the one-Redis / one-gateway / broadcast baseline of the same run, interleaved.`);
  p();
}
if (single.length && clustered.length) {
  p('### Publish throughput: one Redis vs 3 primaries');
  p();
  p('Publishes per second through `FeedStore::publish` (50 concurrent tasks, one store, 12 feeds `bench:{s<i>}:spread` each with its own hash tag), on one Redis and on the cluster.');
  p();
  p('| target | publishes/s | vs one Redis |');
  p('|---|---|---|');
  p(`| one Redis | ${spread(single, 0)} | 1× |`);
  p(`| Redis Cluster, 3 primaries | ${spread(clustered, 0)} | ${ratio(median(clustered) / median(single))} |`);
  p();
}
if (jobsOne.length && jobsCluster.length) {
  const base = median(jobsOne.map((r) => r.per_sec));
  const first = jobsCluster[0];
  p('### Jobs: one queue on one Redis vs a queue per shard');
  p();
  p(`\`thoonk-bench jobs --op publish --teams 12\`: ${fmt(first.jobs, 0)} jobs, each a publish to one of 12 teams' feeds \`team:{<n>}:…\`, put by 16 concurrent producers and worked by ${first.workers} in-process workers in all (\`run_workers\`, as \`serve --workers\` runs them); jobs/s from the first put to the last finish notice (put → claimed → applied to the feed → outcome stored and published). One Redis: one queue, all ${first.workers} workers on it. Cluster: 3 queues \`{bjobs:…:q<i>}\`, each its own hash tag, chosen so that each lies on a different primary, ${first.workers / first.queues} workers each; each job goes to the queue the gateway's own routing picks (\`QueueSet::queue_for\`, by the hash tag of the feed it writes). The third row is the control: the same 3 queues on the one Redis.`);
  p();
  p('| target | queues | jobs/s | vs one Redis, one queue | jobs per queue (last rep) |');
  p('|---|---|---|---|---|');
  const row = (name, rows) => {
    if (!rows.length) return;
    const r = median(rows.map((x) => x.per_sec));
    const last = rows[rows.length - 1];
    const allAccepted = rows.every((x) => x.accepted === x.jobs && x.last_outcome_stored);
    p(`| ${name} | ${last.queues} | ${spread(rows.map((x) => x.per_sec), 0)}${allAccepted ? '' : ' (not every job accepted)'} | ${ratio(r / base)} | ${last.jobs_per_queue.map((n) => fmt(n, 0)).join(' / ')} |`);
  };
  row('one Redis', jobsOne);
  row('Redis Cluster, 3 primaries, a queue per shard', jobsCluster);
  row('one Redis, 3 queues (control)', jobsOne3);
  p();
  p('The routing gives the i-th queue the i-th third of the slots, and the queues are listed in slot order, one on each primary: a team\'s jobs are queued on the primary that holds its feeds (the default equal slot ranges). The jobs per queue follow how the 12 teams\' tags fall in the three ranges.');
  p();
}
if (split.length) {
  const by = (n) => split.filter((r) => (r.gateways?.length ?? 1) === n);
  const one = by(1), two = by(2);
  const all = (rows, key) => rows.flatMap((r) => r[key]);
  const lastOne = median(all(one, 'fanout_last_ms'));
  p('### Connections spread over two gateways');
  p();
  p(`\`thoonk-bench ws-conns\` with the same ${fmt(split[0].conns, 0)} connections, each subscribed to one feed, held by one gateway or dealt in turn over two gateways (both on the one Redis, each hearing every notice by its own pattern subscription); then 5 single publishes to that feed per repetition, each timed from before the publish call until every connection has parsed its \`event\`. One load-client process opens and reads all the connections, so the receiving side is the same in both rows.`);
  p();
  p('| gateways | connections held | fan-out to the last socket (ms) | to the median socket (ms) | RSS of each gateway, held (MB) | RSS in all (MB) | last socket vs one gateway |');
  p('|---|---|---|---|---|---|---|');
  for (const [n, rows] of [[1, one], [2, two]]) {
    if (!rows.length) continue;
    const each = rows[0].gateways ?? [{ rss_held: rows[0].server_rss_held }];
    const rssEach = each.map((_, g) => median(rows.map((r) => (r.gateways ? r.gateways[g].rss_held : r.server_rss_held) / 1048576)));
    const held = Math.min(...rows.map((r) => r.held));
    p(`| ${n} | ${fmt(held, 0)}${n > 1 ? ` (${each.map((_, g) => fmt(median(rows.map((r) => r.gateways[g].held)), 0)).join(' + ')})` : ''} | ${spread(all(rows, 'fanout_last_ms'))} | ${spread(all(rows, 'fanout_median_ms'))} | ${rssEach.map((x) => fmt(x, 0)).join(' + ')} | ${fmt(median(rows.map((r) => r.server_rss_held / 1048576)), 0)} | ${n === 1 ? '1×' : ratio(median(all(rows, 'fanout_last_ms')) / lastOne)} |`);
  }
  p();
  p('(n counts publishes: 5 per repetition.) Two gateways halve what each holds; the time to reach every socket is bound here by the two cores that the gateways and the one load client share, so a lower figure with two gateways is not a speed-up to count on; on two machines each gateway would write half the frames.');
  p();
}
if (fanout.length) {
  const modes = ['broadcast', 'sharded'];
  const rowsOf = (m) => fanout.filter((r) => r.mode === m);
  const base = rowsOf('broadcast');
  const f0 = fanout[0];
  p('### Broadcast vs sharded fan-out on the cluster');
  p();
  p(`Two gateways on the cluster, \`serve --workers 0 --no-adopt --fanout broadcast|sharded\` (no adopter in either mode, so that only the fan-out differs). Gateway A's clients follow teams ${f0.gateways[0].tags.join(', ')} and gateway B's teams ${f0.gateways[1]?.tags.join(', ')} of ${f0.teams} (${f0.conns_per_feed} connections per team feed \`team:{<n>}:fanout-…\`); a writer (\`FeedStore::publish\`, ${f0.concurrency} concurrent tasks) publishes to all ${f0.teams} teams' feeds for ${fmt(f0.secs, 0)} s, the modes interleaved.`);
  p();
  p('Measured, per gateway, from outside it: **bytes read from Redis** = the growth of `bytes_received` of the gateway\'s TCP sockets to the cluster\'s primaries (`ss -tinp`, by its pid) over the window; **notices** = those bytes ÷ the wire size of one notice in that mode (RESP, from the listeners below) — the figure is a count read off the gateway\'s sockets; **CPU** = the gateway\'s user + system time (`/proc/PID/stat`). Beside the gateways the load client runs the two listeners each mode implies — one `PSUBSCRIBE feed.changes:*` (what a broadcast gateway is sent: every notice of the system) and, per gateway, a RESP3 cluster connection that `SSUBSCRIBE`s `feed.tag.changes:{<tag>}` for its teams (what a sharded gateway is sent) — in both modes, so Redis carries the same extra load either way; "all notices" is the first listener\'s count.');
  p();
  p('| mode | gateway (teams) | notices read from Redis | share of all notices | bytes read from Redis per notice of the system | vs broadcast | gateway CPU, ms per 1,000 notices of the system | events to its clients, delivered / expected |');
  p('|---|---|---|---|---|---|---|---|');
  for (const m of modes) {
    const rows = rowsOf(m);
    if (!rows.length) continue;
    rows[0].gateways.forEach((g0, g) => {
      const per = rows.map((r) => {
        const gw = r.gateways[g];
        const wire = m === 'sharded' ? gw.sharded_wire_bytes / gw.sharded_notices : r.broadcast_wire_bytes / r.broadcast_notices;
        return { notices: gw.redis_bytes_read / wire, share: gw.redis_bytes_read / wire / r.broadcast_notices, bytes: gw.redis_bytes_read / r.broadcast_notices, cpu: (1e6 * gw.cpu_secs) / r.broadcast_notices, delivered: gw.events_delivered, expected: gw.events_expected };
      });
      const baseBytes = median(base.map((r) => r.gateways[g].redis_bytes_read / r.broadcast_notices));
      const d = per.reduce((a, x) => a + x.delivered, 0), e = per.reduce((a, x) => a + x.expected, 0);
      p(`| ${m} | ${'AB'[g] ?? g} (${g0.tags.join(', ')}) | ${spread(per.map((x) => x.notices), 0)} | ${fmt(100 * median(per.map((x) => x.share)), 1)} % | ${spread(per.map((x) => x.bytes), 0)} | ${ratio(median(per.map((x) => x.bytes)) / baseBytes)} | ${spread(per.map((x) => x.cpu), 1)} | ${fmt(d, 0)} / ${fmt(e, 0)} |`);
    });
  }
  p();
  p('| mode | publishes/s (writer) | vs broadcast | all notices in the window | classic PUBLISHes forwarded over the cluster bus, per publish |');
  p('|---|---|---|---|---|');
  const basePs = median(base.map((r) => r.per_sec));
  for (const m of modes) {
    const rows = rowsOf(m);
    if (!rows.length) continue;
    const bus = rows.map((r) => r.nodes.reduce((a, n) => a + n.bus_publishes_sent, 0) / r.publishes);
    p(`| ${m} | ${spread(rows.map((r) => r.per_sec), 0)} | ${ratio(median(rows.map((r) => r.per_sec)) / basePs)} | ${spread(rows.map((r) => r.broadcast_notices), 0)} | ${fmt(median(bus), 2)} |`);
  }
  p();
  p('The windows hold different numbers of publishes, so the per-notice columns divide by the notices of the whole system in each window. The CPU column is the gateway\'s whole work in the window, mostly writing the events to its clients, which is the same in both modes.');
  p();
  p('A broadcast gateway reads every notice of the system whatever its clients follow; a sharded one reads only its teams\' (here 3 of 12, a quarter), so its Redis traffic grows with what its clients follow, not with the whole system\'s writes. The events its clients got are the same in both modes. What sharded fan-out does not remove: every change is still announced on classic channels too (`feed.changes:<feed>` and the classic `feed.publish:<feed>` event), which Redis Cluster forwards to every other node over the bus — the last column (2 classic PUBLISHes × 2 other nodes = 4 per publish) — so node-to-node traffic still grows with the whole system\'s writes and the number of nodes. On this machine the publish rate is bound by the shared cores, so the two modes\' rates differ by little.');
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
  names[sha(`${prelude}\nreturn 1`)] = 'prelude + return 1';
  const label = (args) => {
    if (/^evalsha$/i.test(args[0])) return `EVALSHA ${names[args[1]] ?? args[1].slice(0, 12)} ${args[3] ?? ''}`;
    if (/^fcall$/i.test(args[0])) return `FCALL ${args[1]} ${args[3] ?? ''}`;
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
