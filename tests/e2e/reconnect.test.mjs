// Reconnecting while the server is away, in a real browser: each attempt
// that finds nothing listening is reported to the core as a failed
// connection (so its reconnect timer runs), nothing is ever sent on a socket
// that did not open (the browser would log "WebSocket is already in CLOSING
// or CLOSED state."), and the client comes back by itself once a server
// listens again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, launchBrowser, waitFor } from './harness.mjs';

let stack;
let browser;

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

test('failed connection attempts reconnect by the timer, send nothing on a closed socket, and log no error of ours', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const console = [];
  const errors = [];
  page.on('console', (message) => console.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${stack.url}pkg/package.json`);
  const url = stack.url.replace('http', 'ws') + 'ws';
  const feed = `reconnect:${Date.now()}`;
  await page.evaluate(async ({ url, feed }) => {
    const thoonk = await import('/pkg/thoonk_sync.js');
    await thoonk.default();
    window.thoonk = thoonk;
    // Every status each client went through, in order.
    window.seen = { online: [], later: [] };
    window.watch = (client, name) => client.onStatus((s) => seen[name].push([s.connection, s.offlineReason]));
    window.online = await thoonk.Client.open({ url, token: 'ann', dbName: `online-${feed}` });
    watch(online, 'online');
    online.subscribe(feed, () => {});
  }, { url, feed });
  await waitFor(page, () => online.status().connection, null, (c) => c === 'online', 'first connection');

  // Nothing listens on the port now: the online client loses its connection,
  // and a client opened meanwhile never gets one.
  await stack.stopServer();
  await page.evaluate(async ({ url, feed }) => {
    window.later = await thoonk.Client.open({ url, token: 'bob', dbName: `later-${feed}` });
    watch(later, 'later');
    later.subscribe(feed, () => {});
    await later.publish(feed, { title: 'made while the server was away' }, 'away-1');
  }, { url, feed });
  // Three failed attempts each (connecting, then offline again): each one
  // reached the core as a closed connection, which armed the next.
  const failed = (name) => seen[name]
    .filter(([c, reason], i) => c === 'offline' && reason === 'unreachable' && seen[name][i - 1]?.[0] === 'connecting')
    .length;
  await waitFor(page, failed, 'online', (n) => n >= 3, 'failed attempts of the client that was online');
  await waitFor(page, failed, 'later', (n) => n >= 3, 'failed attempts of the client opened meanwhile');
  assert.deepEqual(console.filter((line) => /CLOSING or CLOSED|closed before the connection/.test(line)), [],
    'a frame was sent on (or a close asked of) a socket that did not open');

  // A server listens again: both come back by their own timers, and the
  // change made meanwhile is sent and accepted.
  await stack.startServer();
  await waitFor(page, () => [online.status().connection, later.status().connection], null,
    (c) => c[0] === 'online' && c[1] === 'online', 'both clients back online', 60_000);
  const items = await waitFor(page, ({ feed }) => online.items(feed), { feed },
    (items) => items.some((i) => i.id === 'away-1' && i.state === 'confirmed'), 'the change made while away');
  assert.deepEqual(items.map((i) => i.item.title), ['made while the server was away']);
  await page.evaluate(() => { online.close(); later.close(); });
  assert.deepEqual(console.filter((line) => /CLOSING or CLOSED/.test(line)), []);
  assert.deepEqual(errors, []);
  await context.close();
});
