// Ending a client, in a real browser: `close()` is the one to call, `free()`
// and `[Symbol.dispose]()` (what `using` runs) do the same, and any order of
// them, any number of times, is safe: nothing throws, the handle keeps
// answering, and the tab hands its database to the next client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, launchBrowser, waitFor } from './harness.mjs';

let stack;
let browser;
let page;
const errors = [];

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
  page = await browser.newPage();
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${stack.url}pkg/package.json`);
  await page.evaluate(async (url) => {
    const thoonk = await import('/pkg/thoonk_sync.js');
    await thoonk.default();
    window.thoonk = thoonk;
    window.wsUrl = url;
  }, stack.url.replace('http', 'ws') + 'ws');
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** Opens a client on `dbName` in the page as `window.clients[dbName]`, and returns once it leads. */
async function openLeader(dbName) {
  await page.evaluate(async (dbName) => {
    window.clients ??= {};
    clients[dbName] = await thoonk.Client.open({ url: wsUrl, token: 'ann', dbName });
  }, dbName);
  await waitFor(page, (dbName) => clients[dbName].status().tab, dbName, (tab) => tab === 'leader', `${dbName} leads`);
}

const orders = [
  ['close', 'free', 'dispose'], ['close', 'dispose', 'free'], ['free', 'close', 'dispose'],
  ['free', 'dispose', 'close'], ['dispose', 'close', 'free'], ['dispose', 'free', 'close'],
];

for (const order of orders) {
  test(`${order.join(', ')}, each twice: nothing throws, the client is closed, and the next one leads`, async () => {
    const dbName = `end-${order.join('-')}-${Date.now()}`;
    await openLeader(dbName);
    const got = await page.evaluate(({ dbName, order }) => {
      const client = clients[dbName];
      const call = { close: () => client.close(), free: () => client.free(), dispose: () => client[Symbol.dispose]() };
      const thrown = [];
      const tabs = [];
      for (const name of [...order, ...order]) {
        try { call[name](); } catch (err) { thrown.push(`${name}: ${err.message}`); }
        try { tabs.push(client.status().tab); } catch (err) { thrown.push(`status after ${name}: ${err.message}`); }
      }
      return { thrown, tabs };
    }, { dbName, order });
    assert.deepEqual(got.thrown, []);
    assert.deepEqual(got.tabs, Array(6).fill('closed'));
    // The database and the lock were let go: a new client of it leads.
    await openLeader(dbName);
    await page.evaluate((dbName) => clients[dbName].close(), dbName);
    assert.deepEqual(errors, []);
  });
}

test('`using` closes the client at the end of its block', async () => {
  const dbName = `using-${Date.now()}`;
  // A string, so that node (which parses this file) need not know `using`.
  const got = await page.evaluate(`(async () => {
    let handle;
    let inside;
    {
      using client = await thoonk.Client.open({ url: wsUrl, token: 'ann', dbName: ${JSON.stringify(dbName)} });
      handle = client;
      inside = client.status().tab;
    }
    return { inside, after: handle.status().tab };
  })()`);
  assert.notEqual(got.inside, 'closed');
  assert.equal(got.after, 'closed');
  await openLeader(dbName);
  await page.evaluate((dbName) => clients[dbName].close(), dbName);
  assert.deepEqual(errors, []);
});
