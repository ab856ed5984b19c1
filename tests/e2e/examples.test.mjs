// The example apps in examples/ as their users get them: each copied into a
// fresh directory, given the packed package (`npm pack pkg`), installed with
// npm, built (`tsc --noEmit`, then `vite build`), served by thoonk-server and
// driven by two users in headless Chromium; and each served by `vite` (dev)
// as it is, with no configuration.
import { test, before, after } from 'node:test';
import { execFile, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { root, startStack, launchBrowser, freePort } from './harness.mjs';

const run = promisify(execFile);
const WAIT = { timeout: 30_000 };
const examples = ['vanilla-ts', 'react'];
let work;
let stack;
let browser;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'thoonk-examples-'));
  const { stdout } = await run('npm', ['pack', join(root, 'pkg'), '--pack-destination', work, '--silent']);
  const tarball = stdout.trim().split('\n').pop();
  for (const name of examples) {
    const dir = join(work, name);
    cpSync(join(root, 'examples', name), dir, {
      recursive: true,
      filter: (source) => !/node_modules|dist|\.tgz$/.test(source),
    });
    cpSync(join(work, tarball), join(dir, tarball));
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: dir });
    try {
      await run('npm', ['run', 'build', '--silent'], { cwd: dir });
    } catch (err) {
      throw new Error(`building examples/${name} failed:\n${err.stdout}${err.stderr}`);
    }
  }
  // `vite dev` serves the pages from an origin of its own.
  stack = await startStack({
    serverArgs: [...examples.flatMap((name) => ['--static', `/${name}=${join(work, name, 'dist')}`]), '--allow-origin', '*'],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

for (const name of examples) {
  test(`examples/${name}: built with tsc and vite, two users see each other's tasks`, async () => {
    const feed = `example:${name}:${Date.now()}`;
    const server = stack.url.replace('http', 'ws') + 'ws';
    const open = async (user) => {
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (err) => errors.push(err.message));
      const query = new URLSearchParams({ server, user, feed });
      await page.goto(`${stack.url}${name}/index.html?${query}`);
      await page.getByRole('status').filter({ hasText: `${user}: online` }).waitFor(WAIT);
      return { context, page, errors };
    };
    const ann = await open('ann');
    const bob = await open('bob');

    await ann.page.getByLabel('New task').fill('Buy milk');
    await ann.page.getByRole('button', { name: 'Add' }).click();
    // Bob sees ann's task, confirmed, and completes it; ann sees it done.
    const bobsBox = bob.page.getByRole('checkbox', { name: 'Buy milk' });
    await bob.page.getByRole('listitem').filter({ hasText: /^ Buy milk$/ }).waitFor(WAIT);
    // A click (the React app's checkbox follows the view, which shows the
    // change as soon as it is queued).
    await bobsBox.click();
    await bob.page.getByRole('checkbox', { name: 'Buy milk', checked: true }).waitFor(WAIT);
    const annsBox = ann.page.getByRole('checkbox', { name: 'Buy milk', checked: true });
    await annsBox.waitFor(WAIT);
    await bob.page.getByRole('status').filter({ hasText: 'bob: online, 0 pending' }).waitFor(WAIT);

    if (ann.errors.length || bob.errors.length) throw new Error([...ann.errors, ...bob.errors].join('\n'));
    await ann.context.close();
    await bob.context.close();
  });
}

/** Runs `vite` (dev) in `dir` on a free port; resolves with its URL and a stop function once it is ready. */
async function viteDev(dir) {
  const port = await freePort();
  const child = spawn(join(dir, 'node_modules', '.bin', 'vite'), ['--port', String(port), '--strictPort', '--host', '127.0.0.1'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (output.includes(`${port}`)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`vite exited with ${code}: ${output}`)));
  });
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', resolve);
    child.kill('SIGTERM');
  });
  return { url: `http://127.0.0.1:${port}/`, stop };
}

for (const name of examples) {
  test(`examples/${name}: vite dev serves it with no configuration`, async (t) => {
    const dev = await viteDev(join(work, name));
    t.after(dev.stop);
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    const query = new URLSearchParams({ server: stack.url.replace('http', 'ws') + 'ws', user: 'dev', feed: `example:dev:${name}` });
    await page.goto(`${dev.url}?${query}`);
    await page.getByRole('status').filter({ hasText: 'dev: online' }).waitFor(WAIT);
    if (errors.length) throw new Error(errors.join('\n'));
  });
}
