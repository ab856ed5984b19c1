// The npm package as a user gets it: `scripts/build` output packed with
// `npm pack`, installed into a fresh project, type-checked with `tsc --noEmit`
// against a typed example and the README's example, and run from that project
// in a real browser, where every kind of value the API returns is recorded and
// type-checked (strict `tsc`) against the shipped declarations.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { root, startStack, launchBrowser, freePort } from './harness.mjs';

const run = promisify(execFile);
let project;
let stack;
let browser;

before(async () => {
  project = mkdtempSync(join(tmpdir(), 'thoonk-package-'));
  const { stdout } = await run('npm', ['pack', process.env.THOONK_PKG ?? join(root, 'pkg'), '--pack-destination', project, '--silent']);
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

/** Type-checks `source` as `name` in the project (strict, as tsconfig.json says); rejects with tsc's report. */
async function typeCheck(name, source) {
  if (source !== undefined) writeFileSync(join(project, name), source);
  const config = `tsconfig.${name}.json`;
  writeFileSync(join(project, config), JSON.stringify({ extends: './tsconfig.json', files: [name] }));
  const tsc = join(import.meta.dirname, 'node_modules', '.bin', 'tsc');
  try {
    await run(tsc, ['--noEmit', '-p', join(project, config)]);
  } catch (err) {
    throw new Error(`tsc found errors in ${name}:\n${err.stdout}${err.stderr}`);
  }
}

test('its declarations type-check a typed example (tsc --noEmit)', async () => {
  await typeCheck('example.ts');
});

test('the package manifest: exports, side effects, no placeholder repository, its own README', () => {
  const dir = join(project, 'node_modules', 'thoonk-sync');
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const main = manifest.exports['.'];
  assert.ok(existsSync(join(dir, main.types)), `exports types ${main.types}`);
  assert.ok(existsSync(join(dir, main.default)), `exports default ${main.default}`);
  assert.equal(manifest.sideEffects, false);
  assert.ok(!JSON.stringify(manifest).includes('example.invalid'), 'a placeholder URL');
  const readme = readFileSync(join(dir, 'README.md'), 'utf8');
  assert.match(readme, /^# thoonk-sync/);
  assert.doesNotMatch(readme, /\]\((?!https?:)[^)]*\)/, 'a relative link that is dead on a package page');
  assert.doesNotMatch(readme, /scripts\//, 'a repository script');
});

test("the README's API example type-checks against the shipped declarations", async () => {
  const readme = readFileSync(join(project, 'node_modules', 'thoonk-sync', 'README.md'), 'utf8');
  const block = readme.match(/## API\n\n```ts\n([\s\S]*?)```/);
  assert.ok(block, 'the README has a TypeScript API example');
  const prelude = 'declare function render(feed: string, items: unknown[]): void;\n'
    + 'declare function show(what: string, detail: string): void;\n';
  await typeCheck('readme.ts', `${prelude}${block[1]}`);
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

/** A new browser context (and the stack serving the project, the first time). */
async function newContext() {
  stack ??= await startStack({ serverArgs: ['--static', `/app=${project}`] });
  browser ??= await launchBrowser();
  return browser.newContext();
}

/** Opens a page of the installed package's project with `init` done. */
async function packagePage(context) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${stack.url}app/package.json`);
  await page.evaluate(async () => {
    const module = await import('/app/node_modules/thoonk-sync/thoonk_sync.js');
    await module.default();
    window.thoonk = module;
    // Resolves with the status once `test(status)` holds.
    window.statusWhere = (client, test) => new Promise((resolve) => {
      const check = (status) => { if (test(status)) resolve(status); };
      client.onStatus(check);
      check(client.status());
    });
  });
  return { page, errors };
}

const wsUrl = () => stack.url.replace('http', 'ws') + 'ws';

test('publish gives the new item its id apart from the change id, and edit takes it', async () => {
  const context = await newContext();
  const { page, errors } = await packagePage(context);
  const feed = `ids:${Date.now()}`;
  const got = await page.evaluate(async ({ url, feed }) => {
    const client = await thoonk.Client.open({ url, token: 'ids', dbName: `ids-${feed}` });
    const mirrored = new Promise((resolve) => client.subscribe(feed, () => {
      if (client.items(feed).some((item) => item.state === 'confirmed')) resolve();
    }));
    const published = await client.publish(feed, { title: 'first' });
    const first = await published.outcome;
    await mirrored;
    const edited = await client.edit(feed, published.itemId, { title: 'renamed' });
    const second = await edited.outcome;
    const items = client.items(feed);
    client.close();
    return { id: published.id, itemId: published.itemId, first, second, items };
  }, { url: wsUrl(), feed });
  assert.equal(got.first.status, 'accepted');
  assert.equal(got.second.status, 'accepted', JSON.stringify(got.second));
  assert.notEqual(got.itemId, got.id);
  assert.deepEqual(got.items.map((item) => [item.id, item.item.title]), [[got.itemId, 'renamed']]);
  assert.deepEqual(errors, []);
  await context.close();
});

test('Client.open({ offline: true }) connects only after setOnline(true), and the status says why it is offline', async () => {
  const context = await newContext();
  const { page, errors } = await packagePage(context);
  await page.evaluate(() => {
    window.sockets = 0;
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) { super(...args); window.sockets += 1; }
    };
  });
  const feed = `offline:${Date.now()}`;
  const chosen = await page.evaluate(async ({ url, feed }) => {
    const client = await thoonk.Client.open({ url, token: 'offline', dbName: `offline-${feed}`, offline: true });
    window.client = client;
    // Queued durably (so the client had every chance to connect), then read at once.
    await client.publish(feed, { title: 'queued offline' });
    return { status: client.status(), sockets: window.sockets };
  }, { url: wsUrl(), feed });
  assert.equal(chosen.sockets, 0, 'no WebSocket opened while offline by choice');
  assert.equal(chosen.status.connection, 'offline');
  assert.equal(chosen.status.offlineReason, 'user');
  assert.equal(chosen.status.pending, 1);

  const online = await page.evaluate(async () => {
    client.setOnline(true);
    return statusWhere(client, (s) => s.connection === 'online' && s.pending === 0);
  });
  assert.equal(online.offlineReason, null);

  await context.setOffline(true);
  const network = await page.evaluate(() => statusWhere(client, (s) => s.connection === 'offline'));
  assert.equal(network.offlineReason, 'network');
  await context.setOffline(false);
  await page.evaluate(() => statusWhere(client, (s) => s.connection === 'online'));

  const closed = `ws://127.0.0.1:${await freePort()}/ws`;
  const unreachable = await page.evaluate(async ({ url, feed }) => {
    const other = await thoonk.Client.open({ url, token: 'offline', dbName: `unreachable-${feed}` });
    const status = await statusWhere(other, (s) => s.connection === 'offline');
    other.close();
    client.close();
    return status;
  }, { url: closed, feed });
  assert.equal(unreachable.offlineReason, 'unreachable');
  assert.deepEqual(errors, []);
  await context.close();
});

test('every kind of value the API returns matches the shipped declarations (strict tsc over recorded values)', async () => {
  const context = await newContext();
  const { page } = await packagePage(context);
  const feed = `types:${Date.now()}`;
  const recorded = await page.evaluate(async ({ url, feed }) => {
    const client = await thoonk.Client.open({ url, token: 'types', dbName: `types-${feed}` });
    const changes = [];
    const outcomeEvents = [];
    client.subscribe(feed, (change) => changes.push(change));
    client.onOutcome((event) => outcomeEvents.push(event));
    const published = await client.publish(feed, { title: 'typed', n: 1 }, 'one', 'end');
    const accepted = await published.outcome;
    const missing = await client.edit(feed, 'no-such-item', { title: 'x' });
    const rejected = await missing.outcome;
    const onlineStatus = await statusWhere(client, (s) => s.connection === 'online' && s.pending === 0);
    client.setOnline(false);
    const offlineStatus = await statusWhere(client, (s) => s.connection === 'offline');
    const queued = await client.retract(feed, 'one');
    const outbox = client.outbox();
    const items = client.items(feed);
    const viewSnapshot = client.view(feed).getSnapshot();
    let error;
    try { client.items(''); } catch (e) { error = { name: e.name, message: e.message, code: e.code }; }
    const isSyncError = thoonk.isSyncError(new Error('plain'));
    client.close();
    const closedStatus = client.status();
    return {
      pendingChange: { id: published.id, itemId: published.itemId, keys: Object.keys(published).sort() },
      queuedKeys: Object.keys(queued).sort(),
      accepted, rejected, onlineStatus, offlineStatus, closedStatus, outbox, items, viewSnapshot,
      changes, outcomeEvents, error, isSyncError,
    };
  }, { url: wsUrl(), feed });
  // A second tab on the same database follows the first one's client.
  const leader = await packagePage(context);
  const follower = await packagePage(context);
  const dbName = `tabs-${feed}`;
  await leader.page.evaluate(async ({ url, dbName }) => {
    window.client = await thoonk.Client.open({ url, token: 'types', dbName });
    await statusWhere(client, (s) => s.connection === 'online');
  }, { url: wsUrl(), dbName });
  recorded.followerStatus = await follower.page.evaluate(async ({ url, dbName }) => {
    const client = await thoonk.Client.open({ url, token: 'types', dbName });
    const status = await statusWhere(client, (s) => s.tab === 'follower' && s.connection === 'online');
    client.close();
    return status;
  }, { url: wsUrl(), dbName });
  await leader.page.evaluate(() => client.close());
  await context.close();

  assert.deepEqual(recorded.pendingChange.keys, ['id', 'itemId', 'outcome']);
  assert.deepEqual(recorded.queuedKeys, ['id', 'outcome']);
  assert.equal(recorded.isSyncError, false);
  const json = (value) => JSON.stringify(value, null, 2);
  const source = `// Values recorded from the running client, checked against the declarations.
import type { Status, Item, FeedChange, Outcome, OutcomeEvent, OutboxEntry, ErrorCode, ViewSnapshot } from 'thoonk-sync';
export const pendingChange: { id: string; itemId: string } = ${json({ id: recorded.pendingChange.id, itemId: recorded.pendingChange.itemId })};
export const accepted: Outcome = ${json(recorded.accepted)};
export const rejected: Outcome = ${json(recorded.rejected)};
export const onlineStatus: Status = ${json(recorded.onlineStatus)};
export const offlineStatus: Status = ${json(recorded.offlineStatus)};
export const closedStatus: Status = ${json(recorded.closedStatus)};
export const followerStatus: Status = ${json(recorded.followerStatus)};
export const outbox: OutboxEntry[] = ${json(recorded.outbox)};
export const items: Item[] = ${json(recorded.items)};
export const viewSnapshot: ViewSnapshot = ${json(recorded.viewSnapshot)};
export const changes: FeedChange[] = ${json(recorded.changes)};
export const outcomeEvents: OutcomeEvent[] = ${json(recorded.outcomeEvents)};
export const errorCode: ErrorCode = ${json(recorded.error.code)};
`;
  assert.ok(recorded.changes.length > 0 && recorded.outcomeEvents.length >= 2 && recorded.outbox.length === 1);
  assert.equal(recorded.rejected.status, 'rejected');
  await typeCheck('recorded.ts', source);
});

test('client.view: unbound subscribe/getSnapshot, a frozen snapshot whose identity changes only with the items', async () => {
  const context = await newContext();
  const { page, errors } = await packagePage(context);
  const feed = `view:${Date.now()}`;
  const got = await page.evaluate(async ({ url, feed }) => {
    const ann = await thoonk.Client.open({ url, token: 'ann', dbName: `view-ann-${feed}` });
    const bob = await thoonk.Client.open({ url, token: 'bob', dbName: `view-bob-${feed}` });
    const { subscribe, getSnapshot } = ann.view(feed);
    const first = getSnapshot();
    const stableBefore = first === getSnapshot();
    const snapshots = [];
    const until = (test) => new Promise((resolve) => {
      const check = () => { if (test(getSnapshot())) resolve(getSnapshot()); };
      snapshots.push(subscribe(check));
      check();
    });
    // Bob's item reaches Ann's view.
    await (await bob.publish(feed, { title: 'from bob' }, 'b1')).outcome;
    const withBob = await until((s) => s[feed]?.some((i) => i.id === 'b1' && i.state === 'confirmed'));
    // A change elsewhere leaves the snapshot as it is.
    await (await ann.publish(`${feed}:other`, { title: 'elsewhere' }, 'o1')).outcome;
    const stableAfter = withBob === getSnapshot();
    const frozen = Object.isFrozen(withBob) && Object.isFrozen(withBob[feed])
      && Object.isFrozen(withBob[feed][0]) && Object.isFrozen(withBob[feed][0].item);
    await (await ann.edit(feed, 'b1', { title: 'renamed by ann' })).outcome;
    const renamed = await until((s) => s[feed]?.[0]?.item.title === 'renamed by ann' && s[feed][0].state === 'confirmed');
    snapshots.forEach((unsubscribe) => unsubscribe());
    ann.close();
    bob.close();
    return {
      first, stableBefore, stableAfter, frozen, changed: renamed !== withBob,
      titles: [withBob[feed][0].item.title, renamed[feed][0].item.title],
    };
  }, { url: wsUrl(), feed });
  assert.deepEqual(got.first, { [feed]: [] }, 'a feed named outright is in the snapshot from the start');
  assert.ok(got.stableBefore, 'getSnapshot is stable while nothing changed');
  assert.ok(got.stableAfter, 'a change of another feed keeps the snapshot');
  assert.ok(got.frozen, 'the snapshot is frozen');
  assert.ok(got.changed, 'a change of the items gives a new snapshot');
  assert.deepEqual(got.titles, ['from bob', 'renamed by ann']);
  assert.deepEqual(errors, []);
  await context.close();
});
