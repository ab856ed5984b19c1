// The client's recovery paths in a real browser against a real server and
// Redis: an event lost on the way is noticed and replayed, a feed deleted and
// recreated (a new epoch) resets the mirror, and a refused token is replaced
// through `getToken`, and a full storage quota drops the cached feeds to
// keep an unsent change. The page loads the package the way an app does.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startStack, launchBrowser, demoArgs, waitFor } from './harness.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A fresh stack and a page that has loaded the package as `window.thoonk`. */
async function setup(t, serverArgs = []) {
  const stack = await startStack({ serverArgs });
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await stack.stop();
  });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  return { stack, page };
}

async function load(page, stack) {
  await page.goto(`${stack.url}pkg/package.json`);
  await page.evaluate(async () => {
    const thoonk = await import('/pkg/thoonk_sync.js');
    await thoonk.default();
    window.thoonk = thoonk;
  });
}

const view = ({ feed }) => ({
  ids: window.client.items(feed).map((i) => i.id),
  states: window.client.items(feed).map((i) => i.state),
  head: window.client.status().feeds[feed] ?? null,
});

test('an event lost on the way is noticed, replayed, and the mirror ends equal to the server', async (t) => {
  const { stack, page } = await setup(t);
  const feed = `sync:gap:${Date.now()}`;
  const frames = { replays: [], dropped: [] };
  // Between page and server: drop the event that carries revision 2.
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      const frame = JSON.parse(message);
      if (frame.type === 'replay') frames.replays.push(frame);
      server.send(message);
    });
    server.onMessage((message) => {
      const frame = JSON.parse(message);
      if (frame.type === 'event' && frame.feed === feed && frame.rev === 2 && !frames.dropped.length) {
        frames.dropped.push(frame);
        return;
      }
      ws.send(message);
    });
  });
  await load(page, stack);
  await stack.admin('feed', 'publish', feed, '{"n":1}', '--id', 'a');
  await page.evaluate(async ({ url, feed }) => {
    window.client = await window.thoonk.Client.open({ url, token: 'gap', dbName: `gap-${feed}` });
    window.client.subscribe(feed, () => {});
  }, { url: `ws://127.0.0.1:${stack.port}/ws`, feed });
  await waitFor(page, view, { feed }, (v) => v.head?.rev === 1, 'the first sync');

  await stack.admin('feed', 'publish', feed, '{"n":2}', '--id', 'b');
  await stack.admin('feed', 'publish', feed, '{"n":3}', '--id', 'c');
  const seen = await waitFor(page, view, { feed }, (v) => v.head?.rev === 3, 'the mirror at revision 3');

  assert.equal(frames.dropped.length, 1, 'the event of revision 2 was dropped');
  // One replay (another only if the answer took longer than the replay timeout).
  assert.ok(frames.replays.length >= 1, `a replay asked for: ${JSON.stringify(frames.replays)}`);
  assert.deepEqual(frames.replays[0].from, { epoch: seen.head.epoch, rev: 1 });
  const server = await stack.admin('feed', 'items', feed);
  assert.deepEqual(seen.ids, server.items.map((i) => i.id));
  assert.deepEqual(seen.ids, ['a', 'b', 'c']);
  assert.deepEqual(seen.states, ['confirmed', 'confirmed', 'confirmed']);
  assert.deepEqual(page.errors, []);
});

test('a feed deleted and created again (a new epoch) resets the mirror', async (t) => {
  const { stack, page } = await setup(t);
  const feed = `sync:epoch:${Date.now()}`;
  await load(page, stack);
  await stack.admin('feed', 'publish', feed, '{"n":1}', '--id', 'old-1');
  await stack.admin('feed', 'publish', feed, '{"n":2}', '--id', 'old-2');
  await page.evaluate(async ({ url, feed }) => {
    window.client = await window.thoonk.Client.open({ url, token: 'epoch', dbName: `epoch-${feed}` });
    window.client.subscribe(feed, () => {});
  }, { url: `ws://127.0.0.1:${stack.port}/ws`, feed });
  const before = await waitFor(page, view, { feed }, (v) => v.head?.rev === 2, 'the first sync');

  await stack.admin('feed', 'delete', feed);
  await waitFor(page, view, { feed }, (v) => v.ids.length === 0, 'the deleted feed emptied');
  await stack.admin('feed', 'publish', feed, '{"n":3}', '--id', 'new-1');
  const after = await waitFor(page, view, { feed }, (v) => v.ids.length === 1, 'the new feed mirrored');

  assert.deepEqual(after.ids, ['new-1']);
  assert.ok(after.head.epoch > before.head.epoch, `epoch ${before.head.epoch} → ${after.head.epoch}`);
  const server = await stack.admin('feed', 'items', feed);
  assert.deepEqual({ epoch: server.epoch, rev: server.rev }, after.head);
  assert.deepEqual(page.errors, []);
});

test('a refused token is replaced through getToken and the client goes on', async (t) => {
  const { stack, page } = await setup(t, demoArgs());
  await load(page, stack);
  const result = await page.evaluate(async ({ url }) => {
    const tokens = ['expired', 'bob'];
    let calls = 0;
    const client = await window.thoonk.Client.open({
      url,
      dbName: `token-${Date.now()}`,
      getToken: async () => tokens[Math.min(calls++, tokens.length - 1)],
    });
    const feed = 'team:353:member:bob:tasks';
    const { outcome } = await client.publish(feed, { title: 'after a new token' }, 'token-1');
    const settled = await outcome;
    return { calls, outcome: settled, connection: client.status().connection };
  }, { url: `ws://127.0.0.1:${stack.port}/ws` });
  assert.equal(result.outcome.status, 'accepted', JSON.stringify(result.outcome));
  assert.equal(result.calls, 2, 'getToken called at open and once after the refusal');
  assert.equal(result.connection, 'online');
  assert.deepEqual(page.errors, []);
});

test('a full storage quota drops the cached feeds, never an unsent change', async (t) => {
  const { stack, page } = await setup(t);
  const feed = `sync:quota:${Date.now()}`;
  await load(page, stack);
  // A feed that fills half of a small quota once mirrored (random text:
  // IndexedDB compresses what repeats).
  for (let i = 0; i < 12; i++) {
    const filler = randomBytes(30 * 1024).toString('base64');
    await stack.admin('feed', 'publish', feed, JSON.stringify({ i, filler }), '--id', `big-${i}`);
  }
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: `http://127.0.0.1:${stack.port}`, quotaSize: 600 * 1024 });
  await page.evaluate(async ({ url, feed }) => {
    window.client = await window.thoonk.Client.open({ url, token: 'quota', dbName: `quota-${feed}` });
    window.client.subscribe(feed, () => {});
  }, { url: `ws://127.0.0.1:${stack.port}/ws`, feed });
  await waitFor(page, view, { feed }, (v) => v.ids.length === 12 && v.states.every((s) => s === 'confirmed'), 'the feed mirrored');

  // Offline, a change too big to fit beside the mirror (~480 KB in a 600 KB
  // quota; the change ~200 KB): the mirror goes, the change stays.
  const queued = await page.evaluate(async ({ feed, size }) => {
    window.client.setOnline(false);
    let big = '';
    for (let done = 0; done < size; done += 8192) {
      big += btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(8192))));
    }
    const { id } = await window.client.publish(feed, { big }, 'mine');
    return { id, outbox: window.client.outbox().map((e) => e.id), error: window.client.status().storageError };
  }, { feed, size: 150 * 1024 });
  assert.deepEqual(queued.outbox, [queued.id]);
  assert.match(queued.error ?? '', /dropped/);

  // The user frees space; online again, the change is applied once and the
  // feed loads again.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: `http://127.0.0.1:${stack.port}`, quotaSize: 64 * 1024 * 1024 });
  await page.evaluate(() => window.client.setOnline(true));
  const seen = await waitFor(page, view, { feed }, (v) => v.ids.length === 13 && v.states.every((s) => s === 'confirmed'), 'the change applied and the feed back');
  assert.ok(seen.ids.includes('mine'));
  const server = await stack.admin('feed', 'items', feed);
  assert.equal(server.rev, 13);
  assert.deepEqual(page.errors, []);
});
