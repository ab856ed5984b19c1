// The npm package as a user gets it: `wasm-pack build` output packed with
// `npm pack`, installed into a fresh project, type-checked with `tsc --noEmit`
// against a typed example, and run from that project in a real browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { root, startStack, launchBrowser } from './harness.mjs';

const run = promisify(execFile);
let project;
let stack;
let browser;

before(async () => {
  project = mkdtempSync(join(tmpdir(), 'thoonk-package-'));
  const { stdout } = await run('npm', ['pack', join(root, 'pkg'), '--pack-destination', project, '--silent']);
  const tarball = stdout.trim().split('\n').pop();
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--offline', join(project, tarball)], { cwd: project });
  cpSync(join(import.meta.dirname, 'package'), project, { recursive: true });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
  if (project) rmSync(project, { recursive: true, force: true });
});

test('the packed package installs into a fresh project', () => {
  assert.ok(readdirSync(join(project, 'node_modules', 'thoonk-sync')).includes('thoonk_sync_bg.wasm'));
});

test('its declarations type-check a typed example (tsc --noEmit)', async () => {
  const tsc = join(import.meta.dirname, 'node_modules', '.bin', 'tsc');
  await run(tsc, ['--noEmit', '-p', project]);
});

test('the installed package syncs in a plain page', async () => {
  stack = await startStack({ serverArgs: ['--static', `/app=${project}`] });
  browser = await launchBrowser();
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${stack.url}app/package.json`);
  const feed = `package:${Date.now()}`;
  const items = await page.evaluate(async ({ url, feed }) => {
    const { default: init, Client } = await import('/app/node_modules/thoonk-sync/thoonk_sync.js');
    await init();
    const client = await Client.open({ url, token: 'plain-page', dbName: `plain-${feed}` });
    const { outcome } = await client.publish(feed, { title: 'from a plain page' }, 'plain-1');
    const result = await outcome;
    if (result.status !== 'accepted') throw new Error(JSON.stringify(result));
    const items = await new Promise((resolve) => {
      client.subscribe(feed, () => {
        const now = client.items(feed);
        if (now.length && now[0].state === 'confirmed') resolve(now);
      });
    });
    client.close();
    return items;
  }, { url: stack.url.replace('http', 'ws') + 'ws', feed });
  assert.equal(items.length, 1);
  assert.equal(items[0].id, 'plain-1');
  assert.deepEqual(items[0].item, { title: 'from a plain page' });
  assert.deepEqual(errors, []);
});
