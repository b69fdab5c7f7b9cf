/**
 * Debian's chromium for the browser tests, driven by playwright-core (no browser download), and
 * the real service beside it.
 */

import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';

import { TaskSyncService } from './service.js';

const CHROMIUM = '/usr/bin/chromium';
// No GPU, sandbox or background traffic here, and nothing of the machine's own profile: each
// launch gets a fresh temporary user-data-dir from playwright-core.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** The real service and Chromium, as a test file's hooks hold them. */
export interface BrowserSession {
  readonly service: TaskSyncService;
  readonly browser: Browser;
}

/**
 * Starts the real service and Chromium before the calling file's tests and stops them after,
 * in reverse order, also when starting failed half-way.
 */
export function browserSession(): BrowserSession {
  let service: TaskSyncService | undefined;
  let browser: Browser | undefined;
  const teardowns: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    const started = await TaskSyncService.start();
    service = started;
    teardowns.push(() => started.dispose());
    const launched = await launchChromium();
    browser = launched;
    teardowns.push(() => launched.close());
  });
  afterAll(async () => {
    for (const teardown of teardowns.splice(0).reverse()) await teardown();
  });
  return {
    get service() {
      if (!service) throw new Error('the service is not running');
      return service;
    },
    get browser() {
      if (!browser) throw new Error('Chromium is not running');
      return browser;
    },
  };
}
