// BullMQ baseline of the jobs measure: no-op jobs end to end (added →
// worked → completed with its return value stored), `concurrency` on one
// worker, the jobs added by 16 concurrent producers as thoonk-bench puts them.
// usage: node bullmq.mjs REDIS_PORT JOBS CONCURRENCY → one JSON line
import { Queue, Worker } from 'bullmq';

const [port, jobs, concurrency] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const name = `bench-${concurrency}-${Date.now()}`;
const queue = new Queue(name, { connection });
await queue.waitUntilReady();

let completed = 0;
let done;
const allDone = new Promise((ok) => { done = ok; });
const worker = new Worker(name, async () => ({ ok: true }), { connection, concurrency });
worker.on('completed', () => { if (++completed === jobs) done(); });
await worker.waitUntilReady();
await new Promise((ok) => setTimeout(ok, 300));

const start = performance.now();
let next = 0;
async function producer() {
  while (next < jobs) {
    const n = next++;
    await queue.add('noop', { n }, { jobId: `bench-${n}` });
  }
}
await Promise.all(Array.from({ length: 16 }, producer));
const timeout = setTimeout(() => { console.error(`only ${completed} of ${jobs} completed`); process.exit(1); }, 120_000);
await allDone;
const secs = (performance.now() - start) / 1000;
clearTimeout(timeout);
const last = await queue.getJob(`bench-${jobs - 1}`);
console.log(JSON.stringify({
  jobs, workers: concurrency, secs, per_sec: jobs / secs,
  last_outcome_stored: last?.returnvalue?.ok === true,
  bullmq: (await import('bullmq/package.json', { with: { type: 'json' } })).default.version,
}));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
