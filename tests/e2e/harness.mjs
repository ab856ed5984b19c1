// Test harness for the end-to-end tests: a real redis-server and a real
// thoonk-server on free local ports, and headless Debian Chromium through
// playwright-core. Everything started here is stopped by `stop()`.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const root = resolve(import.meta.dirname, '../..');
export const serverBin = process.env.THOONK_SERVER_BIN ?? join(root, 'target/debug/thoonk-server');

export async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

async function waitForPort(port, what) {
  for (let i = 0; i < 400; i++) {
    const up = await new Promise((ok) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); ok(true); });
      socket.on('error', () => ok(false));
    });
    if (up) return;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`${what} did not listen on port ${port}`);
}

function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((ok) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => { clearTimeout(timer); ok(); });
    child.kill('SIGTERM');
  });
}

/** Starts redis-server and thoonk-server (serving www/ and pkg/); returns handles. */
export async function startStack({ serverArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'thoonk-e2e-'));
  const redisPort = await freePort();
  const redis = spawn('redis-server', [
    '--port', String(redisPort), '--bind', '127.0.0.1', '--dir', dir,
    '--appendonly', 'yes', '--save', '',
  ], { stdio: 'ignore' });
  await waitForPort(redisPort, 'redis-server');
  const redisUrl = `redis://127.0.0.1:${redisPort}/`;
  const port = await freePort();
  // Without --config the tests run a development setup (--allow-all).
  const access = (args) => (args.includes('--config') ? [] : ['--allow-all']);
  const spawnServer = (args) => spawn(serverBin, [
    '--redis', redisUrl, 'serve', '--listen', `127.0.0.1:${port}`,
    '--static', join(root, 'www'), '--static', `/pkg=${join(root, 'pkg')}`, ...access(args), ...args,
  ], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  let server = spawnServer(serverArgs);
  await waitForPort(port, 'thoonk-server');
  return {
    redisUrl,
    port,
    url: `http://127.0.0.1:${port}/`,
    /** Stops thoonk-server and starts it again on the same port (same Redis), with `args`. */
    async restartServer(args = serverArgs) {
      await this.stopServer();
      await this.startServer(args);
    },
    /** Stops thoonk-server: nothing listens on its port until `startServer`. */
    async stopServer() {
      await stopProcess(server);
    },
    /** Starts thoonk-server again on the same port (same Redis), with `args`. */
    async startServer(args = serverArgs) {
      server = spawnServer(args);
      await waitForPort(port, 'thoonk-server');
    },
    /** Runs `thoonk-server ARGS…` against this Redis and returns its parsed JSON output. */
    async admin(...args) {
      const { stdout } = await promisify(execFile)(serverBin, ['--redis', redisUrl, ...args]);
      return JSON.parse(stdout);
    },
    async stop() {
      await stopProcess(server);
      await stopProcess(redis);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Launches headless Debian Chromium (never a downloaded browser). */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
    ],
  });
}

/** The demo's server arguments: the access config (default config/demo.json) and the sign-in list. */
export function demoArgs(config = join(root, 'config/demo.json')) {
  return ['--config', config, '--demo-users', '--demo-actions'];
}

/** Polls `read(arg)` in the page until `check` holds for its value (at most `ms`); returns the value. */
export async function waitFor(page, read, arg, check, what, ms = 30_000) {
  const deadline = Date.now() + ms;
  let value;
  for (;;) {
    value = await page.evaluate(read, arg);
    if (check(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: last value ${JSON.stringify(value)}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
