/**
 * The demo as a product, in Debian's chromium (playwright-core) against the real service: its
 * look in light, dark and on a phone (screenshots for docs/web-client.md, and axe's accessibility
 * rules), toasts coloured by kind with SVG icons, keyboard use, failures in words, the user
 * switcher and empty states, and a service stopped and started again: an offline banner while it
 * is down, writes refused with nothing typed lost, "Reconnect now", and connected again within
 * 2 s of the service listening again.
 *
 * The screenshots are taken into docs/images/ on every run and come out the same on every run on
 * one machine: fixed viewport and scale, the colour scheme set, reduced motion and no animation,
 * the demo's own font (Inter, bundled) loaded before the picture, fixed users and task titles, no
 * focus ring, and the one changing number (the retry count) hidden. What remains is an odd
 * anti-aliased pixel: a picture within RASTER_NOISE_PIXELS of the committed one is not rewritten.
 */

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import AxeBuilder from '@axe-core/playwright';
import type { BrowserContextOptions, Page } from 'playwright-core';
import { beforeAll, describe, expect, it, onTestFailed } from 'vitest';

import { browserSession } from './chromium.js';
import { DOC_IMAGES, DOC_SCREENSHOTS, type DocScreenshot } from './doc-screenshots.js';
import { waitFor } from './service.js';

const DESKTOP: BrowserContextOptions = { viewport: { width: 960, height: 600 }, deviceScaleFactor: 1 };
const PHONE: BrowserContextOptions = {
  viewport: { width: 390, height: 720 },
  deviceScaleFactor: 1,
  isMobile: true,
  hasTouch: true,
};
/** The promise: back within this long of the service listening again. */
const RECONNECTED_WITHIN_MS = 2_000;
/** The one number on the page that differs from run to run, hidden in the docs' pictures. */
const HIDE_RETRY_COUNT = '[data-testid="connection-retry"], .retry-count { display: none !important; }';
/** Emoji, which render as empty boxes on a system without an emoji font. */
const EMOJI = /\p{Extended_Pictographic}/u;

const session = browserSession();
const pageErrors: string[] = [];

beforeAll(() => {
  mkdirSync(DOC_IMAGES, { recursive: true });
});

/** The demo for `user` (none: the welcome page) in a browser context of its own, once live. */
async function openDemo(user: string | null, options: BrowserContextOptions = DESKTOP): Promise<Page> {
  const context = await session.browser.newContext({ colorScheme: 'light', reducedMotion: 'reduce', ...options });
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${user ?? 'welcome'}: ${error.message}`));
  await page.goto(user === null ? session.service.http : `${session.service.http}/?user_id=${encodeURIComponent(user)}`);
  if (user !== null) await page.waitForSelector('[data-testid="connection-status"][data-status="connected"]');
  return page;
}

/**
 * Pixels that may differ from the committed picture before it is rewritten. Chromium without a
 * GPU now and then anti-aliases an edge a little differently (a handful of pixels); a change to
 * the demo's look, even of one word, changes far more.
 */
const RASTER_NOISE_PIXELS = 32;

/** How many pixels of two PNGs differ (every pixel when their sizes differ), counted in `page`. */
function differingPixels(page: Page, a: Buffer, b: Buffer): Promise<number> {
  return page.evaluate(
    async ([first, second]) => {
      const decode = async (base64: string) => {
        const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${base64}`)).blob());
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const context = canvas.getContext('2d');
        if (!context) throw new Error('no 2d canvas');
        context.drawImage(bitmap, 0, 0);
        return context.getImageData(0, 0, bitmap.width, bitmap.height);
      };
      const [x, y] = await Promise.all([decode(first), decode(second)]);
      if (x.width !== y.width || x.height !== y.height) return Math.max(x.width * x.height, y.width * y.height);
      let differing = 0;
      for (let i = 0; i < x.data.length; i += 4) {
        if (x.data[i] !== y.data[i] || x.data[i + 1] !== y.data[i + 1] || x.data[i + 2] !== y.data[i + 2]) differing += 1;
      }
      return differing;
    },
    [a.toString('base64'), b.toString('base64')] as const,
  );
}

/** Takes a screenshot for the docs; the committed one stays when only raster noise differs. */
async function docScreenshot(page: Page, name: DocScreenshot): Promise<void> {
  await page.evaluate(async () => {
    await document.fonts.ready;
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
  });
  const path = join(DOC_IMAGES, DOC_SCREENSHOTS[name]);
  const picture = await page.screenshot({ animations: 'disabled', caret: 'hide', style: HIDE_RETRY_COUNT });
  const committed = existsSync(path) ? readFileSync(path) : null;
  const differing = committed ? await differingPixels(page, committed, picture) : Infinity;
  if (differing > RASTER_NOISE_PIXELS) writeFileSync(path, picture);
  console.log(`screenshot ${path}: ${differing > RASTER_NOISE_PIXELS ? 'written' : 'unchanged'} (${differing} pixels differ)`);
}

/** axe-core's WCAG A and AA rules: every violation, by rule and element. */
async function accessibilityViolations(page: Page): Promise<string[]> {
  const results = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  return results.violations.flatMap((violation) =>
    violation.nodes.map((node) => `${violation.id}: ${node.target.join(' ')}`),
  );
}

/** The toast about `title` once shown: its Sonner type, colours and icon. */
async function toastAbout(page: Page, title: string) {
  const toast = page.locator('[data-testid="task-toast"]', { hasText: title });
  await toast.waitFor();
  return {
    type: await toast.getAttribute('data-type'),
    richColors: await toast.getAttribute('data-rich-colors'),
    icon: await toast.locator('svg[data-task-event]').getAttribute('data-task-event'),
    text: await toast.textContent(),
    background: await toast.evaluate((element) => getComputedStyle(element).backgroundColor),
  };
}

const rows = (page: Page) => page.locator('[data-testid="task-row"]');
const rowTitled = (page: Page, title: string) => page.locator('[data-testid="task-row"]', { hasText: title });

describe('the demo', () => {
  it('looks the same in light, dark and on a phone, passes axe, and colours toasts by kind with SVG icons', async () => {
    onTestFailed(() => console.log(session.service.output));
    const created: { id: number; title: string }[] = [];
    for (const title of ['Book flights to Lisbon', "Review Dana's pull request", 'Buy oat milk']) {
      created.push((await session.service.demoApi('POST', '', 'alice', { title })) as { id: number; title: string });
    }
    const milk = created.find((task) => task.title === 'Buy oat milk');
    await session.service.demoApi('PATCH', `/${String(milk?.id)}`, 'alice', { completed: true });

    const light = await openDemo('alice');
    await waitFor(async () => (await rows(light).count()) === 3, { what: "alice's three tasks" });
    // A change made elsewhere (another tab, the backend): this tab shows it with a toast.
    const passport = (await session.service.demoApi('POST', '', 'alice', { title: 'Renew passport' })) as { id: number };
    const createdToast = await toastAbout(light, 'Renew passport');
    expect(createdToast).toMatchObject({ type: 'success', richColors: 'true', icon: 'task.created' });
    expect(createdToast.text).not.toMatch(EMOJI);
    expect(await accessibilityViolations(light)).toEqual([]);
    expect(await light.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(246, 247, 249)');
    await docScreenshot(light, 'light');

    const dark = await openDemo('alice', { ...DESKTOP, colorScheme: 'dark' });
    await waitFor(async () => (await rows(dark).count()) === 4, { what: "alice's four tasks in the dark page" });
    await session.service.demoApi('PATCH', `/${String(passport.id)}`, 'alice', { title: 'Renew passport before June' });
    const updatedToast = await toastAbout(dark, 'Renew passport before June');
    expect(updatedToast).toMatchObject({ type: 'info', richColors: 'true', icon: 'task.updated' });
    // Coloured by kind: an info toast is not a success toast.
    expect(updatedToast.background).not.toBe(createdToast.background);
    expect(await accessibilityViolations(dark)).toEqual([]);
    expect(await dark.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(15, 18, 23)');
    await docScreenshot(dark, 'dark');

    const phone = await openDemo('alice', PHONE);
    await waitFor(async () => (await rows(phone).count()) === 4, { what: "alice's four tasks on the phone" });
    // Readable on a phone: nothing runs off the side of the screen.
    expect(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    expect(await accessibilityViolations(phone)).toEqual([]);
    await docScreenshot(phone, 'phone');

    const favicon = await light.getAttribute('link[rel="icon"]', 'href');
    const icon = await light.request.get(new URL(favicon ?? '', light.url()).href);
    expect(icon.status()).toBe(200);
    expect(icon.headers()['content-type']).toContain('svg');
    expect(pageErrors).toEqual([]);
  });

  it('works from the keyboard alone: add, complete, rename (Escape cancels), delete', async () => {
    const page = await openDemo('kim');
    await page.waitForSelector('[data-testid="empty-list"]');
    const focused = () => page.evaluate(() => document.activeElement?.getAttribute('data-testid') ?? null);

    // Tab reaches the new-task field.
    await waitFor(
      async () => {
        await page.keyboard.press('Tab');
        return (await focused()) === 'new-task-input';
      },
      { what: 'Tab to reach the new task field', intervalMs: 0 },
    );
    await page.keyboard.type('Water the plants');
    await page.keyboard.press('Enter');
    await rowTitled(page, 'Water the plants').waitFor();
    // Cleared once the API has answered, which may come after the event has shown the row.
    await waitFor(async () => (await page.inputValue('[data-testid="new-task-input"]')) === '', {
      what: 'the new task field to be cleared',
    });
    expect(await focused()).toBe('new-task-input');

    await page.waitForSelector('[data-testid="add-task"]:enabled');
    await page.keyboard.press('Tab'); // the Add button
    await page.keyboard.press('Tab');
    expect(await focused()).toBe('task-complete');
    await page.keyboard.press('Space');
    await page.waitForSelector('[data-testid="task-row"][data-completed="true"]');

    await page.keyboard.press('Tab');
    expect(await focused()).toBe('task-edit');
    await page.keyboard.press('Enter');
    expect(await focused()).toBe('task-edit-input');
    await page.keyboard.type(' and the garden');
    await page.keyboard.press('Escape');
    await page.waitForSelector('[data-testid="task-title"]:text-is("Water the plants")');
    expect(await focused()).toBe('task-edit');

    await page.keyboard.press('Enter');
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.type('Water the garden');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid="task-title"]:text-is("Water the garden")');
    expect(await focused()).toBe('task-edit');

    await page.keyboard.press('Tab');
    expect(await focused()).toBe('task-delete');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid="empty-list"]');
    expect(await focused()).toBe('new-task-input');
    expect(pageErrors).toEqual([]);
  });

  it('says in words what failed, and keeps what was typed', async () => {
    const page = await openDemo('lee');
    await page.route('**/demo/api/tasks?*', (route) => route.abort('connectionrefused'));
    await page.fill('[data-testid="new-task-input"]', 'Call the plumber');
    await page.click('[data-testid="add-task"]');
    const error = await page.locator('[data-testid="api-error"]').textContent();
    expect(error).toBe("Couldn't add the task: TaskSync can't be reached. Nothing was saved. Try again once you're back online.");
    expect(error).not.toMatch(/TypeError|Failed to fetch/);
    expect(await page.inputValue('[data-testid="new-task-input"]')).toBe('Call the plumber');

    await page.unroute('**/demo/api/tasks?*');
    await page.click('[data-testid="add-task"]');
    await rowTitled(page, 'Call the plumber').waitFor();
    expect(await page.locator('[data-testid="api-error"]').count()).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it("sends each write's operation id, so the tab that made a change shows no toast for it", async () => {
    const page = await openDemo('noor');
    await page.fill('[data-testid="new-task-input"]', 'Made in this tab');
    await page.click('[data-testid="add-task"]');
    await rowTitled(page, 'Made in this tab').waitFor();
    // A change from elsewhere, published after this tab's own: once its toast shows, the event of
    // this tab's change has been handled too, and it raised none.
    await session.service.demoApi('POST', '', 'noor', { title: 'Made elsewhere' });
    await toastAbout(page, 'Made elsewhere');
    expect(await page.locator('[data-testid="task-toast"]', { hasText: 'Made in this tab' }).count()).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it('switches users, each starting from their own list or an empty state', async () => {
    const page = await openDemo(null);
    await page.waitForSelector('[data-testid="no-user"]');

    await page.fill('[data-testid="user-input"]', 'mia');
    await page.press('[data-testid="user-input"]', 'Enter');
    await page.waitForSelector('[data-testid="connection-status"][data-status="connected"]');
    await page.waitForSelector('[data-testid="empty-list"]');
    expect(await page.textContent('[data-testid="current-user"]')).toBe('mia');
    expect(new URL(page.url()).searchParams.get('user_id')).toBe('mia');

    await page.fill('[data-testid="user-input"]', 'alice');
    await page.click('[data-testid="user-submit"]');
    await waitFor(async () => (await rows(page).count()) === 4, { what: "alice's tasks after switching" });
    expect(await page.textContent('[data-testid="current-user"]')).toBe('alice');
    expect(await page.title()).toBe('alice · TaskSync demo');
    expect(pageErrors).toEqual([]);
  });

  it('shows an offline banner while the service is down, refuses writes, and is back within 2 s of it listening', async () => {
    onTestFailed(() => console.log(session.service.output));
    await session.service.demoApi('POST', '', 'sam', { title: 'Plan the offsite' });
    const page = await openDemo('sam');
    await rowTitled(page, 'Plan the offsite').waitFor();
    await page.fill('[data-testid="new-task-input"]', 'Written while offline');

    // Every state the indicator shows from now on, with when (epoch ms, the page's clock).
    await page.evaluate(() => {
      const indicator = document.querySelector('[data-testid="connection-status"]');
      if (!indicator) throw new Error('the page shows no connection status');
      const states: { status: string; retry: number; at: number }[] = [];
      (window as unknown as { states: typeof states }).states = states;
      new MutationObserver(() => {
        const status = indicator.getAttribute('data-status') ?? '';
        const retry = Number(indicator.getAttribute('data-retry-count'));
        const last = states.at(-1);
        if (last?.status !== status || last.retry !== retry) {
          states.push({ status, retry, at: performance.timeOrigin + performance.now() });
        }
      }).observe(indicator, { attributes: true });
    });
    const states = () =>
      page.evaluate(() => [...(window as unknown as { states: { status: string; retry: number; at: number }[] }).states]);
    const retryShown = async () => Number(await page.getAttribute('[data-testid="connection-status"]', 'data-retry-count'));

    await session.service.stop();
    await page.waitForSelector('[data-testid="offline-banner"]');
    // Writes are refused, visibly, and what the user typed stays.
    expect(await page.isDisabled('[data-testid="add-task"]')).toBe(true);
    expect(await page.isDisabled('[data-testid="task-delete"]')).toBe(true);
    expect(await page.inputValue('[data-testid="new-task-input"]')).toBe('Written while offline');
    const banner = await page.textContent('[data-testid="offline-banner"]');
    expect(banner).toContain("You're offline.");
    expect(banner).toContain('Changes are paused');

    // Down long enough for the client to have failed against the closed port twice.
    await waitFor(async () => (await retryShown()) >= 2, { timeoutMs: 20_000, what: 'a second failed reconnect' });
    await docScreenshot(page, 'offline');
    // "Reconnect now" makes a fresh attempt at once: the count starts over instead of going on.
    const before = await retryShown();
    const clickedAt = (await states()).length;
    await page.click('[data-testid="retry-connection"]');
    await waitFor(async () => (await states()).slice(clickedAt).some((state) => state.retry < before), {
      timeoutMs: 10_000,
      what: `the retry count to start over from below ${before} after Reconnect now`,
    });
    await waitFor(async () => (await retryShown()) >= 2, { timeoutMs: 20_000, what: 'two more failed reconnects' });

    await session.service.start();
    const listeningAt = Date.now();
    await page.waitForSelector('[data-testid="connection-status"][data-status="connected"]', { timeout: 30_000 });
    const connected = (await states()).filter((state) => state.status === 'connected').at(-1);
    const backAfterMs = (connected?.at ?? Infinity) - listeningAt;
    console.log(`connected again ${backAfterMs.toFixed(0)} ms after the service answered /health`);
    expect(backAfterMs).toBeLessThan(RECONNECTED_WITHIN_MS);

    await page.waitForSelector('[data-testid="offline-banner"]', { state: 'detached' });
    expect(await page.inputValue('[data-testid="new-task-input"]')).toBe('Written while offline');
    await page.click('[data-testid="add-task"]');
    await rowTitled(page, 'Written while offline').waitFor();
    expect(pageErrors).toEqual([]);
  });
});
