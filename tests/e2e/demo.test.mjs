// The demo app in a real browser: two users in two browser contexts against
// a real thoonk-server (with config/demo.json) and Redis. Each test has a
// stack of its own, so feeds start empty. Screenshots of the main states go
// to tests/e2e/artifacts/ (git-ignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { startStack, launchBrowser, demoArgs, root } from './harness.mjs';

const artifacts = join(root, 'tests/e2e/artifacts');
mkdirSync(artifacts, { recursive: true });
const WAIT = { timeout: 30_000 };
// Everything confirmed: a change whose outcome notice was missed is asked for
// again after the client's outcome timeout (30 s), so allow for one such round.
const SYNC_WAIT = { timeout: 60_000 };
const feedOf = (user, team = '353') => `team:{${team}}:member:${user}:tasks`;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A fresh stack for one test; stopped (with the test's contexts) at its end. */
async function setup(t, serverArgs = demoArgs()) {
  const stack = await startStack({ serverArgs });
  const contexts = [];
  t.after(async () => {
    for (const context of contexts) await context.close();
    await stack.stop();
  });
  /** A browser context signed in as `user`, with the page live. */
  stack.signIn = async (user, { viewport, team = '353' } = {}) => {
    const context = await browser.newContext(viewport ? { viewport } : {});
    contexts.push(context);
    const page = await context.newPage();
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    await page.goto(`${stack.url}?user=${user}&team=${team}`);
    await live(page);
    return page;
  };
  return stack;
}

const status = (page) => page.getByRole('status');
const live = (page) => status(page).filter({ hasText: /^live/ }).waitFor(WAIT);
async function synced(page) {
  try {
    await status(page).filter({ hasText: /^live · 0 pending/ }).waitFor(SYNC_WAIT);
  } catch (err) {
    const state = await page.evaluate(() => ({
      status: document.getElementById('status').textContent,
      outbox: document.getElementById('outbox').textContent,
      notices: document.getElementById('notice-list').textContent,
    })).catch((e) => e.message);
    err.message += `\npage state: ${JSON.stringify(state)}`;
    throw err;
  }
}
const myTasks = (page) => page.getByRole('list', { name: 'My tasks' });
const memberTasks = (page, member) => page.getByRole('list', { name: new RegExp(`^${member}\\b`) });
const task = (list, title) => list.getByRole('listitem').filter({ hasText: title });
async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky status bar stays on top
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

async function addTask(page, title) {
  await page.getByLabel('New task').fill(title);
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await task(myTasks(page), title).waitFor(WAIT);
}

/** Titles of a list's tasks, in order. */
async function titles(list) {
  return list.locator('li.task label.title').allTextContents();
}

async function serverItems(stack, feed) {
  return stack.admin('feed', 'items', feed);
}

/** Waits until the server's feed satisfies `check` (Redis is the truth; the wait is bounded). */
async function serverFeed(stack, feed, check) {
  const deadline = Date.now() + WAIT.timeout;
  for (;;) {
    let items;
    try {
      items = await serverItems(stack, feed);
      if (check(items)) return items;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) assert.fail(`feed ${feed} never reached the expected state: ${JSON.stringify(items)}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** Presses Tab until the focused element is the one named `name` (keyboard only). */
async function tabTo(page, name) {
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el) return null;
      return el.getAttribute('aria-label') ?? el.labels?.[0]?.textContent ?? el.textContent;
    });
    if (focused?.trim() === name) return;
  }
  assert.fail(`Tab never reached ${name}`);
}

test('sign-in picker, and changes propagate live both ways between two users', async (t) => {
  const stack = await setup(t);
  const annContext = await browser.newContext();
  t.after(() => annContext.close());
  const ann = await annContext.newPage();
  ann.errors = [];
  ann.on('pageerror', (err) => ann.errors.push(err.message));
  await ann.goto(stack.url);
  await ann.getByRole('button', { name: /^ann/ }).click();
  await live(ann);
  await shot(ann, 'demo-ann-empty');
  const bob = await stack.signIn('bob');

  await addTask(bob, 'Draft the agenda');
  await task(memberTasks(ann, 'bob'), 'Draft the agenda').waitFor(WAIT);

  // ann (a team admin) completes bob's task: bob sees it done without a reload.
  await task(memberTasks(ann, 'bob'), 'Draft the agenda').getByRole('checkbox').check();
  await bob.waitForFunction(() => document.querySelector('#my-tasks li.task input[type=checkbox]')?.checked === true, null, WAIT);

  await addTask(ann, 'Book the room');
  await task(memberTasks(bob, 'ann'), 'Book the room').waitFor(WAIT);
  // bob is a member: ann's tasks are read only for him.
  assert.equal(await task(memberTasks(bob, 'ann'), 'Book the room').getByRole('button').count(), 0);
  await synced(ann);
  await synced(bob);
  await shot(ann, 'demo-live-ann');
  await shot(bob, 'demo-live-bob');

  const items = await serverItems(stack, feedOf('bob'));
  assert.deepEqual(items.items.map((i) => i.item), [{ title: 'Draft the agenda', done: true }]);

  // bob reopens it, ann sees that; ann deletes it, bob sees that.
  await task(myTasks(bob), 'Draft the agenda').getByRole('checkbox').uncheck();
  await ann.waitForFunction(() => document.querySelector('#members li.task input[type=checkbox]')?.checked === false, null, WAIT);
  await task(memberTasks(ann, 'bob'), 'Draft the agenda').getByRole('button', { name: 'Delete “Draft the agenda”' }).click();
  await task(myTasks(bob), 'Draft the agenda').waitFor({ state: 'detached', ...WAIT });
  await synced(ann);
  assert.deepEqual((await serverItems(stack, feedOf('bob'))).items, []);
  assert.deepEqual(bob.errors, []);
  assert.deepEqual(ann.errors, []);
});

test('offline changes show as pending, survive a reload and are applied exactly once', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  await addTask(bob, 'Water the plants');
  await synced(bob);
  const context = bob.context();

  await context.setOffline(true);
  await status(bob).filter({ hasText: /^offline.* · no network$/ }).waitFor(WAIT);
  await addTask(bob, 'Buy stamps');
  await task(myTasks(bob), 'Water the plants').getByRole('checkbox').check();
  await task(myTasks(bob), 'Water the plants').getByText('pending').waitFor(WAIT);
  await task(myTasks(bob), 'Buy stamps').getByText('pending').waitFor(WAIT);
  await status(bob).filter({ hasText: '2 pending' }).waitFor(WAIT);
  await shot(bob, 'demo-offline-pending');

  // Reload while still offline: the page comes from the offline cache, the
  // tasks and the outbox from IndexedDB.
  await bob.reload();
  await status(bob).filter({ hasText: /^offline · 2 pending/ }).waitFor(WAIT);
  await task(myTasks(bob), 'Buy stamps').getByText('pending').waitFor(WAIT);
  assert.equal(await task(myTasks(bob), 'Water the plants').getByRole('checkbox').isChecked(), true);
  await bob.locator('#inspector summary').click();
  assert.equal(await bob.locator('#outbox tr').count(), 2);
  // The inspector lists the waiting changes by task, in words.
  assert.deepEqual(await bob.locator('#outbox tr').evaluateAll((rows) => rows.map((row) => row.cells[0].textContent)),
    ['“Buy stamps”', '“Water the plants”']);
  assert.doesNotMatch(await bob.locator('#outbox').textContent(), /[0-9a-f]{8,}:\d|publish|edit /);
  await shot(bob, 'demo-offline-reloaded');

  await context.setOffline(false);
  await synced(bob);
  await task(myTasks(bob), 'Buy stamps').and(bob.locator('[data-state="confirmed"]')).waitFor(WAIT);
  const items = await serverFeed(stack, feedOf('bob'), (f) => f.items.length === 2);
  assert.deepEqual(items.items.map((i) => i.item), [
    { title: 'Water the plants', done: true },
    { title: 'Buy stamps', done: false },
  ]);
  // Three changes in all (publish, edit, publish): nothing was applied twice.
  assert.equal(items.rev, 3);

  // Another reload once synced: nothing is sent again.
  await bob.reload();
  await synced(bob);
  assert.deepEqual(await titles(myTasks(bob)), ['Water the plants', 'Buy stamps']);
  assert.equal((await serverItems(stack, feedOf('bob'))).rev, 3);
  assert.deepEqual(bob.errors, []);
});

test('delegating a task moves it from one member to the other, for both', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  const cat = await stack.signIn('cat');
  await addTask(bob, 'Review the budget');
  await addTask(bob, 'Order chairs');
  await task(memberTasks(cat, 'bob'), 'Order chairs').waitFor(WAIT);

  // Drag and drop reorders (dropped on the upper half of a task: before it).
  await task(myTasks(bob), 'Order chairs').dragTo(task(myTasks(bob), 'Review the budget'), { targetPosition: { x: 20, y: 3 } });
  await cat.waitForFunction(() => document.querySelector('#members ol li.task')?.textContent.includes('Order chairs'), null, WAIT);
  assert.deepEqual(await titles(memberTasks(cat, 'bob')), ['Order chairs', 'Review the budget']);
  assert.deepEqual(await titles(myTasks(bob)), ['Order chairs', 'Review the budget']);

  // Delegated while working offline: shown as pending at once, applied when back online.
  await bob.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline/ }).waitFor(WAIT);
  const row = task(myTasks(bob), 'Review the budget');
  await row.getByLabel('Delegate “Review the budget” to').selectOption('cat');
  await row.getByRole('button', { name: 'Delegate “Review the budget”' }).click();
  await row.getByText('moving to cat…').waitFor(WAIT);
  await shot(bob, 'demo-delegating-offline');
  assert.equal(await task(myTasks(cat), 'Review the budget').count(), 0);
  await bob.getByLabel('Work offline').uncheck();

  await task(myTasks(cat), 'Review the budget').waitFor(WAIT);
  await task(memberTasks(bob, 'cat'), 'Review the budget').waitFor(WAIT);
  await task(myTasks(bob), 'Review the budget').waitFor({ state: 'detached', ...WAIT });
  await task(memberTasks(cat, 'bob'), 'Review the budget').waitFor({ state: 'detached', ...WAIT });
  await synced(bob);
  await shot(bob, 'demo-delegated-bob');
  await shot(cat, 'demo-delegated-cat');

  assert.deepEqual((await serverItems(stack, feedOf('bob'))).items.map((i) => i.item.title), ['Order chairs']);
  const catFeed = await serverItems(stack, feedOf('cat'));
  assert.deepEqual(catFeed.items.map((i) => i.item), [{ title: 'Review the budget', done: false, delegated_by: 'bob' }]);
});

test('concurrent offline edits of one task: different fields merge, the same field asks the user', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  const ann = await stack.signIn('ann');
  await addTask(bob, 'Plan the offsite');
  await synced(bob);
  const annRow = () => task(memberTasks(ann, 'bob'), /Plan the offsite|Offsite/);
  await annRow().waitFor(WAIT);

  // Both offline: bob through the page's toggle, ann through the browser.
  await bob.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline.* · you chose to work offline$/ }).waitFor(WAIT);
  await ann.context().setOffline(true);
  await status(ann).filter({ hasText: /^offline.* · no network$/ }).waitFor(WAIT);

  // bob renames the task, ann completes it.
  const bobRow = task(myTasks(bob), 'Plan the offsite');
  await bobRow.getByRole('button', { name: 'Edit “Plan the offsite”' }).click();
  await bob.getByLabel('Title of “Plan the offsite”').fill('Plan the offsite in May');
  await bob.keyboard.press('Enter');
  await task(myTasks(bob), 'Plan the offsite in May').getByText('pending').waitFor(WAIT);
  await annRow().getByRole('checkbox').check();
  await annRow().getByText('pending').waitFor(WAIT);

  await bob.getByLabel('Work offline').uncheck();
  await synced(bob);
  await ann.context().setOffline(false);
  await synced(ann);
  await ann.getByRole('listitem').filter({ hasText: 'merged with a change someone else made' }).waitFor(WAIT);
  await shot(ann, 'demo-merged');
  const merged = { title: 'Plan the offsite in May', done: true };
  await serverFeed(stack, feedOf('bob'), (f) => isDeepStrictEqual(f.items.map((i) => i.item), [merged]));
  await bob.waitForFunction(() => document.querySelector('#my-tasks li.task input[type=checkbox]')?.checked === true, null, WAIT);
  await task(memberTasks(ann, 'bob'), 'Plan the offsite in May').waitFor(WAIT);

  // Now both rename it offline: a real conflict, shown to the one who synced last.
  await bob.getByLabel('Work offline').check();
  await ann.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline/ }).waitFor(WAIT);
  await status(ann).filter({ hasText: /^offline/ }).waitFor(WAIT);
  await task(myTasks(bob), 'Plan the offsite in May').getByRole('button', { name: /^Edit/ }).click();
  await bob.getByLabel('Title of “Plan the offsite in May”').fill('Offsite: Lisbon');
  await bob.keyboard.press('Enter');
  await task(memberTasks(ann, 'bob'), 'Plan the offsite in May').getByRole('button', { name: /^Edit/ }).click();
  await ann.getByLabel('Title of “Plan the offsite in May”').fill('Offsite: Porto');
  await ann.keyboard.press('Enter');
  await task(memberTasks(ann, 'bob'), 'Offsite: Porto').getByText('pending').waitFor(WAIT);

  await bob.getByLabel('Work offline').uncheck();
  await synced(bob);
  await ann.getByLabel('Work offline').uncheck();
  const conflict = ann.getByRole('listitem').filter({ hasText: 'conflict' });
  await conflict.waitFor(WAIT);
  assert.match(await conflict.textContent(), /Yours“Offsite: Porto”/);
  assert.match(await conflict.textContent(), /Theirs“Offsite: Lisbon”/);
  assert.doesNotMatch(await conflict.textContent(), /\/title/, 'no field paths in what users read');
  // The row shows the other person's title: its badge says that the user's own
  // change waits for a choice, not that the shown title was not saved.
  const row = task(memberTasks(ann, 'bob'), 'Offsite: Lisbon');
  assert.equal(await row.locator('.badge').textContent(), 'your change: choose below');
  assert.doesNotMatch(await row.textContent(), /not saved|\/title/);
  await shot(ann, 'demo-conflict');
  await conflict.getByRole('button', { name: 'Keep mine' }).click();
  await synced(ann);
  await task(myTasks(bob), 'Offsite: Porto').waitFor(WAIT);
  // Bob, whose rename was overwritten, is told who chose which version.
  await task(myTasks(bob), 'Offsite: Porto').getByText('ann kept their version over “Offsite: Lisbon”.').waitFor(WAIT);
  await shot(bob, 'demo-kept-over');
  const items = await serverFeed(stack, feedOf('bob'), (f) => f.items[0]?.item.title === 'Offsite: Porto');
  assert.deepEqual(items.items.map((i) => i.item),
    [{ title: 'Offsite: Porto', done: true, keptOver: { by: 'ann', title: 'Offsite: Lisbon' } }]);
  assert.equal(await ann.getByRole('listitem').filter({ hasText: 'conflict' }).count(), 0);
});

test('a rename of a task someone else deleted says so in words and offers to restore it', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  const ann = await stack.signIn('ann');
  await addTask(bob, 'Book the venue');
  await synced(bob);
  await task(memberTasks(ann, 'bob'), 'Book the venue').waitFor(WAIT);

  await bob.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline/ }).waitFor(WAIT);
  await task(myTasks(bob), 'Book the venue').getByRole('button', { name: /^Edit/ }).click();
  await bob.getByLabel('Title of “Book the venue”').fill('Book the hall');
  await bob.keyboard.press('Enter');
  await task(memberTasks(ann, 'bob'), 'Book the venue').getByRole('button', { name: /^Delete/ }).click();
  await synced(ann);
  await bob.getByLabel('Work offline').uncheck();

  const notice = bob.locator('#notice-list li').filter({ hasText: 'Book the hall' });
  await notice.getByText('someone else deleted the task meanwhile').waitFor(WAIT);
  assert.doesNotMatch(await notice.textContent(), /not_found|\bi[0-9a-f]{16}\b|:\d|Theirs/);
  await shot(bob, 'demo-deleted-meanwhile');
  await notice.getByRole('button', { name: 'Restore it' }).click();
  await task(myTasks(bob), 'Book the hall').and(bob.locator('[data-state="confirmed"]')).waitFor(WAIT);
  await task(memberTasks(ann, 'bob'), 'Book the hall').waitFor(WAIT);
  assert.equal(await bob.locator('#notice-list li').count(), 0);
});

test('a change rejected after the user left the team is shown with its reason, also after a reload', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'thoonk-demo-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = JSON.parse(readFileSync(join(root, 'config/demo.json'), 'utf8'));
  config.users.find((u) => u.name === 'bob').teams = {};
  const removed = join(dir, 'demo.json');
  writeFileSync(removed, JSON.stringify(config));

  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  await addTask(bob, 'Order chairs');
  await synced(bob);

  await bob.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline/ }).waitFor(WAIT);
  await task(myTasks(bob), 'Order chairs').getByRole('checkbox').check();
  await task(myTasks(bob), 'Order chairs').getByText('pending').waitFor(WAIT);

  // Meanwhile bob is removed from team 353 (the server restarts with the new config).
  await stack.restartServer(demoArgs(removed));
  await bob.getByLabel('Work offline').uncheck();

  const notice = bob.getByRole('listitem').filter({ hasText: 'rejected' });
  await notice.waitFor(WAIT);
  assert.match(await notice.textContent(), /Complete “Order chairs”: rejected\. bob may not write feed team:\{353\}:member:bob:tasks \(forbidden\)/);
  await task(myTasks(bob), 'Order chairs').getByText('Not saved: bob may not write feed').waitFor(WAIT);
  await shot(bob, 'demo-rejected');

  await bob.reload();
  await bob.getByText('bob is not a member of any team.').waitFor(WAIT);
  await notice.waitFor(WAIT);
  assert.match(await notice.textContent(), /Complete “Order chairs”: rejected\. bob may not write feed/);
  await shot(bob, 'demo-rejected-reloaded');
  const items = await serverItems(stack, feedOf('bob'));
  assert.deepEqual(items.items.map((i) => i.item), [{ title: 'Order chairs', done: false }]);

  await notice.getByRole('button', { name: 'Dismiss' }).click();
  await notice.waitFor({ state: 'detached', ...WAIT });
  await bob.reload();
  await status(bob).filter({ hasText: /pending/ }).waitFor(WAIT);
  assert.equal(await bob.getByRole('listitem').filter({ hasText: 'rejected' }).count(), 0);
});

test('keyboard only: add, complete and reorder tasks', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob', { viewport: { width: 390, height: 844 } });
  await bob.locator('body').focus();
  await bob.keyboard.press('Tab');
  assert.equal(await bob.evaluate(() => document.activeElement.textContent), 'Skip to the new task field');
  await bob.keyboard.press('Enter');
  assert.equal(await bob.evaluate(() => document.activeElement.id), 'new-task');
  for (const title of ['Write minutes', 'Send invoices', 'Fix the printer']) {
    await bob.keyboard.type(title);
    await bob.keyboard.press('Enter');
    await task(myTasks(bob), title).waitFor(WAIT);
  }
  assert.deepEqual(await titles(myTasks(bob)), ['Write minutes', 'Send invoices', 'Fix the printer']);

  await tabTo(bob, 'Send invoices');
  await bob.keyboard.press('Space');
  await bob.waitForFunction(() => [...document.querySelectorAll('#my-tasks li.task')]
    .find((li) => li.textContent.includes('Send invoices'))?.querySelector('input[type=checkbox]').checked, null, WAIT);

  await tabTo(bob, 'Move “Fix the printer” up');
  await bob.keyboard.press('Enter');
  await bob.waitForFunction(() => document.querySelector('#my-tasks li.task:nth-child(2)')?.textContent.includes('Fix the printer'), null, WAIT);
  // The focus stays on the moved task's button: press again to move it to the top.
  await bob.keyboard.press('Enter');
  await bob.waitForFunction(() => document.querySelector('#my-tasks li.task')?.textContent.includes('Fix the printer'), null, WAIT);
  assert.deepEqual(await titles(myTasks(bob)), ['Fix the printer', 'Write minutes', 'Send invoices']);
  await synced(bob);
  await shot(bob, 'demo-keyboard-phone');

  const items = await serverFeed(stack, feedOf('bob'), (f) => f.items[0]?.item.title === 'Fix the printer');
  assert.deepEqual(items.items.map((i) => [i.item.title, i.item.done]), [
    ['Fix the printer', false], ['Write minutes', false], ['Send invoices', true],
  ]);
  assert.deepEqual(bob.errors, []);
});

test('tabs of one user share one connection, and another tab takes over when the syncing one hangs or closes', async (t) => {
  const stack = await setup(t);
  const first = await stack.signIn('bob');
  const second = await first.context().newPage();
  second.errors = [];
  second.on('pageerror', (err) => second.errors.push(err.message));
  await second.goto(`${stack.url}?user=bob&team=353`);
  await live(second);
  await status(second).filter({ hasText: 'via another tab' }).waitFor(WAIT);
  await addTask(first, 'From the first tab');
  await synced(first);
  await task(myTasks(second), 'From the first tab').waitFor(WAIT);
  await addTask(second, 'From the second tab');
  await synced(second);
  await task(myTasks(first), 'From the second tab').waitFor(WAIT);
  await shot(second, 'demo-second-tab');

  // The syncing tab hangs (its main thread busy for 15 s, as a frozen or
  // stuck tab): the other stops hearing it, takes the lead, and syncs its
  // own change.
  const hang = first.evaluate(() => {
    const end = Date.now() + 15_000;
    while (Date.now() < end);
  });
  await addTask(second, 'While the first tab hangs');
  await synced(second);
  assert.equal(await status(second).filter({ hasText: 'via another tab' }).count(), 0);
  // Awake again, the first tab finds it lost the lead, follows, and catches up.
  await hang;
  await status(first).filter({ hasText: 'via another tab' }).waitFor(WAIT);
  await task(myTasks(first), 'While the first tab hangs').waitFor(WAIT);
  await addTask(first, 'After the hang');
  await synced(first);

  // The syncing tab closes: the other takes over by itself.
  await second.close();
  await status(first).filter({ hasText: /^live · 0 pending · last sync/ }).waitFor(WAIT);
  await addTask(first, 'After the close');
  await synced(first);
  const items = await serverFeed(stack, feedOf('bob'), (i) => i.items.length >= 5);
  assert.deepEqual(items.items.map((i) => i.item.title), [
    'From the first tab', 'From the second tab', 'While the first tab hangs', 'After the hang', 'After the close',
  ]);
  assert.equal(items.rev, 5, 'each change applied exactly once');
  assert.deepEqual(first.errors, []);
  assert.deepEqual(second.errors, []);
});

test('tasks lost with a wiped browser database are named to the user until they dismiss it', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  const context = bob.context();
  await bob.getByLabel('Work offline').check();
  await status(bob).filter({ hasText: /^offline/ }).waitFor(WAIT);
  await addTask(bob, 'Call the plumber');
  await addTask(bob, 'Pay the rent');
  await status(bob).filter({ hasText: '2 pending' }).waitFor(WAIT);
  await bob.close();

  // The browser clears the site's database while no page is open.
  const cleaner = await context.newPage();
  await cleaner.goto(`${stack.url}pkg/package.json`);
  await cleaner.evaluate(() => new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase('thoonk-demo:bob');
    request.onsuccess = resolve;
    request.onerror = () => reject(request.error);
  }));
  await cleaner.close();

  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  const lost = page.locator('#notice-list li[data-wiped]');
  const lostTasks = () => lost.locator('ul.lost li').allTextContents();
  await page.goto(`${stack.url}?user=bob&team=353`);
  await lost.getByText('Some of your changes were lost.').waitFor(WAIT);
  assert.deepEqual(await lostTasks(), ['Add “Call the plumber”', 'Add “Pay the rent”']);
  await shot(page, 'demo-storage-wiped');

  // Still named after another reload, until the user dismisses it.
  await page.reload();
  await lost.getByText('Some of your changes were lost.').waitFor(WAIT);
  assert.deepEqual(await lostTasks(), ['Add “Call the plumber”', 'Add “Pay the rent”']);
  await lost.getByRole('button', { name: 'OK' }).click();
  await lost.waitFor({ state: 'detached', ...WAIT });
  await page.reload();
  await status(page).filter({ hasText: /^offline/ }).waitFor(WAIT);
  assert.equal(await lost.count(), 0);
  assert.deepEqual(page.errors, []);
});

test('a change this browser cannot store is named as not saved, nothing is left uncaught, and later changes go through', async (t) => {
  const stack = await setup(t);
  const bob = await stack.signIn('bob');
  // The browser refuses to store the outbox entry (a full disk).
  await bob.evaluate(() => {
    const put = IDBObjectStore.prototype.put;
    window.refuseOutbox = true;
    IDBObjectStore.prototype.put = function (...args) {
      if (window.refuseOutbox && this.name === 'outbox') {
        throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      }
      return put.apply(this, args);
    };
  });
  await bob.getByLabel('New task').fill('Call the plumber');
  await bob.getByRole('button', { name: 'Add', exact: true }).click();
  const refused = bob.locator('#notice-list li').filter({ hasText: 'Add “Call the plumber”: not saved.' });
  await refused.waitFor(WAIT);

  // Room again: the notice goes when dismissed, and the next change is stored and applied.
  await bob.evaluate(() => { window.refuseOutbox = false; });
  await refused.getByRole('button', { name: 'Dismiss' }).click();
  await refused.waitFor({ state: 'detached', ...WAIT });
  await addTask(bob, 'Pay the rent');
  await synced(bob);
  const items = await serverFeed(stack, feedOf('bob'), (feed) => feed.items.length === 1);
  assert.deepEqual(items.items.map((i) => i.item.title), ['Pay the rent']);
  assert.deepEqual(bob.errors, []);
});
