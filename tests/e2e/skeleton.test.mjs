// The walking skeleton in a real browser: the demo page, served by
// thoonk-server, shows an item published through Redis without a reload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, launchBrowser } from './harness.mjs';

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

test('an item published through Redis appears on the demo page without reload', async () => {
  const feed = `e2e:skeleton:${Date.now()}`;
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${stack.url}?feed=${encodeURIComponent(feed)}`);
  await page.getByRole('status').filter({ hasText: 'live' }).waitFor();

  const published = await stack.admin('feed', 'publish', feed, JSON.stringify({ title: 'Buy milk' }), '--id', 'milk');
  assert.equal(published.id, 'milk');

  const entry = page.getByRole('listitem').filter({ hasText: 'Buy milk' });
  await entry.waitFor();
  assert.equal(await page.getByRole('listitem').count(), 1);
  assert.deepEqual(errors, []);
  await page.close();
});
