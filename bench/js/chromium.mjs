// Headless Debian Chromium as the browser benchmarks launch it (never a
// downloaded browser; CHROMIUM overrides the path).
import { chromium } from 'playwright-core';

/** Launches headless Chromium with the benchmarks' flags. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
}
