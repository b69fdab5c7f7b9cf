/**
 * One socket per browser, in Debian's chromium (playwright-core) against the real service: four
 * tabs of alice in one browser hold one WebSocket, every tab shows every change within a second,
 * each change's toast shows in exactly one tab and never in the tab that made it, the tabs carry on
 * without losing or repeating an event when whatever holds the socket goes away, and bob's tab in
 * the same browser neither shares alice's socket nor sees her events. Both ways of sharing are
 * tested: the shared worker, and (with SharedWorker taken out of the page) the leader tab elected
 * with Web Locks.
 *
 * The page is test-e2e/sharing-page, built with Vite and served by Vite's preview server, which
 * forwards /ws and the demo tasks API to the service (one origin, as in an app): the real
 * provider, store and toasts around a bare list, with every delivered event kept in
 * `window.received`.
 */

import { fileURLToPath } from 'node:url';

import react from '@vitejs/plugin-react';
import type { BrowserContext, Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

import { browserSession } from './chromium.js';
import { waitFor } from './service.js';
import type { Received } from './sharing-page/main.js';

const PAGE_SOURCE = fileURLToPath(new URL('./sharing-page/', import.meta.url));
const PAGE_BUILD = fileURLToPath(new URL('../test-artifacts/sharing-page/', import.meta.url));
/** The promises. */
const SHOWN_WITHIN_MS = 1_000;
const TAKEN_OVER_WITHIN_MS = 2_000;
const EVENTS_AFTER_TAKEOVER = 20;

const session = browserSession();
let site: PreviewServer;

beforeAll(async () => {
  await build({
    root: PAGE_SOURCE,
    base: './',
    configFile: false,
    logLevel: 'warn',
    plugins: [react()],
    build: { outDir: PAGE_BUILD, emptyOutDir: true },
  });
  const service = session.service;
  site = await preview({
    root: PAGE_SOURCE,
    configFile: false,
    logLevel: 'warn',
    build: { outDir: PAGE_BUILD },
    preview: {
      host: '127.0.0.1',
      port: 0,
      proxy: { '/ws': { target: service.ws.replace(/\/ws$/, ''), ws: true }, '/demo/api': service.http },
    },
  });
});

afterAll(async () => {
  await site.close();
});

function siteUrl(user: string): string {
  const origin = site.resolvedUrls?.local[0];
  if (!origin) throw new Error('the preview server has no address');
  return new URL(`index.html?user_id=${encodeURIComponent(user)}`, origin).href;
}

/** Live sockets on the service, of every user. */
async function liveSockets(): Promise<number> {
  return session.service.metric('tasksync_connections_active');
}

/** Sockets the service ever accepted. */
async function acceptedSockets(): Promise<number> {
  const kinds = ['new', 'reconnect'].map((kind) => session.service.metric(`tasksync_connections_opened_total{kind="${kind}"}`));
  return (await Promise.all(kinds)).reduce((sum, count) => sum + count, 0);
}

/** Everything the page's client delivered so far. */
function received(page: Page): Promise<Received[]> {
  return page.evaluate(() => window.received);
}

/**
 * Records, from the page's first script on, every toast it showed (as text, in order) and when
 * the user last clicked in it (epoch ms, the page's clock).
 */
async function recordToastsAndClicks(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const shown: string[] = [];
    const page = window as unknown as { toasts: string[]; clickedAt: number };
    page.toasts = shown;
    window.addEventListener('click', () => (page.clickedAt = performance.timeOrigin + performance.now()), true);
    new MutationObserver((mutations) => {
      // The first toast arrives inside the list that holds it: look into what was added too.
      for (const node of mutations.flatMap((mutation) => [...mutation.addedNodes])) {
        if (!(node instanceof Element)) continue;
        const added = [node, ...node.querySelectorAll('[data-testid="task-toast"]')];
        shown.push(...added.filter((element) => element.matches('[data-testid="task-toast"]')).map((toast) => toast.textContent));
      }
    }).observe(document, { subtree: true, childList: true });
  });
}

function toasts(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { toasts: string[] }).toasts);
}

function clickedAt(page: Page): Promise<number> {
  return page.evaluate(() => (window as unknown as { clickedAt: number }).clickedAt);
}

/** What a tab shows once a change reached it. */
type Shown =
  | { kind: 'present'; title: string }
  | { kind: 'title'; id: string; title: string }
  | { kind: 'completed'; id: string }
  | { kind: 'absent'; id: string };

/**
 * Arms, in `page`, an observer that resolves `window.shown` with the time (epoch ms, the page's
 * clock) at which `expected` first holds. Armed before the change is made, so nothing is missed.
 */
async function watch(page: Page, expected: Shown): Promise<void> {
  await page.evaluate((expectation) => {
    const row = (id: string) => document.querySelector(`[data-testid="task-row"][data-task-id="${id}"]`);
    const holds = (): boolean => {
      switch (expectation.kind) {
        case 'present':
          return [...document.querySelectorAll('[data-testid="task-title"]')].some((title) => title.textContent === expectation.title);
        case 'title':
          return row(expectation.id)?.querySelector('[data-testid="task-title"]')?.textContent === expectation.title;
        case 'completed':
          return row(expectation.id)?.getAttribute('data-completed') === 'true';
        case 'absent':
          return row(expectation.id) === null;
      }
    };
    (window as unknown as { shown: Promise<number> }).shown = new Promise((resolve) => {
      const check = (): void => {
        if (!holds()) return;
        observer.disconnect();
        resolve(performance.timeOrigin + performance.now());
      };
      const observer = new MutationObserver(check);
      observer.observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
      check();
    });
  }, expected);
}

function shownAt(page: Page): Promise<number> {
  return page.evaluate(() => (window as unknown as { shown: Promise<number> }).shown);
}

/** The tab's own word for where its socket lives, once connected: worker, leader or follower. */
async function sharingOf(page: Page): Promise<string> {
  await page.waitForSelector('[data-testid="connection-status"][data-status="connected"]');
  return (await page.textContent('[data-testid="sharing"]')) ?? '';
}

describe.each([
  { way: 'a shared worker', withoutSharedWorker: false },
  { way: 'a leader tab elected with Web Locks (SharedWorker taken out)', withoutSharedWorker: true },
])('sharing through $way', ({ withoutSharedWorker }) => {
  // Users and event ids of this block's own: the service deduplicates events by id, and nothing
  // another block left behind may count here.
  const way = withoutSharedWorker ? 'leader' : 'worker';
  const alice = `alice-${way}`;
  const bob = `bob-${way}`;
  const bobMarker = `${bob}-marker`;
  const pageErrors: string[] = [];
  let context: BrowserContext;
  let tabs: Page[] = [];

  beforeAll(async () => {
    await waitFor(async () => (await liveSockets()) === 0, { what: 'no socket left from the block before' });
    context = await session.browser.newContext({ viewport: { width: 800, height: 600 } });
    if (withoutSharedWorker) {
      await context.addInitScript(() => Reflect.deleteProperty(window, 'SharedWorker'));
    }
    await recordToastsAndClicks(context);
  });

  afterAll(async () => {
    await context.close();
  });

  async function openTab(user: string, name: string): Promise<Page> {
    const page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(`${name}: ${error.message}`));
    await page.goto(siteUrl(user));
    return page;
  }

  it('gives four tabs of alice one socket on the service', async () => {
    const acceptedBefore = await acceptedSockets();
    for (let n = 1; n <= 4; n += 1) tabs.push(await openTab(alice, `alice tab ${n}`));
    const roles = await Promise.all(tabs.map(sharingOf));
    console.log(`roles: ${roles.join(', ')}`);
    if (withoutSharedWorker) expect([...roles].sort()).toEqual(['follower', 'follower', 'follower', 'leader']);
    else expect(roles).toEqual(['worker', 'worker', 'worker', 'worker']);
    expect(await liveSockets()).toBe(1);
    expect(await acceptedSockets()).toBe(acceptedBefore + 1);
  });

  it('shows every change in every tab within a second, with its toast in one tab and never in the acting one', async () => {
    const [actor, first, focused, last] = tabs as [Page, Page, Page, Page];
    const watchers = [first, focused, last];
    // The user last used the third tab, then turns to the first and acts there. (Playwright
    // emulates focus in every page, so using a tab is what tells the client.)
    await focused.bringToFront();
    await focused.click('body', { position: { x: 5, y: 5 } });

    const timings: string[] = [];
    async function change(name: string, expected: Shown, act: () => Promise<void>): Promise<void> {
      await Promise.all(watchers.map((tab) => watch(tab, expected)));
      await act();
      const shown = await Promise.all(watchers.map(shownAt));
      const slowest = Math.max(...shown) - (await clickedAt(actor));
      timings.push(`${name} ${slowest.toFixed(0)} ms`);
      expect(slowest, `${name}: shown in every other tab`).toBeLessThan(SHOWN_WITHIN_MS);
    }

    await actor.bringToFront();
    await actor.fill('[data-testid="new-task-input"]', 'Buy milk');
    await change('created', { kind: 'present', title: 'Buy milk' }, () => actor.click('[data-testid="add-task"]'));
    const id = await actor.getAttribute('[data-testid="task-row"]', 'data-task-id');
    if (id === null) throw new Error('the new task row has no data-task-id');
    const row = `[data-testid="task-row"][data-task-id="${id}"]`;
    await change('updated', { kind: 'title', id, title: 'Buy milk!' }, () => actor.click(`${row} [data-testid="task-rename"]`));
    await change('completed', { kind: 'completed', id }, () => actor.click(`${row} [data-testid="task-complete"]`));
    await change('deleted', { kind: 'absent', id }, () => actor.click(`${row} [data-testid="task-delete"]`));
    console.log(`slowest tab: ${timings.join(', ')}`);

    // A change no tab made (published by a backend job): its toast goes to the tab used last.
    await watch(actor, { kind: 'present', title: 'From the backend' });
    await session.service.publish({ event: 'task.created', user_id: alice, task: { id: 'backend-1', title: 'From the backend' } });
    await shownAt(actor);

    const expected = ['Task created', 'Task updated', 'Task completed', 'Task deleted'];
    await waitFor(async () => (await toasts(actor)).length === 1 && (await toasts(focused)).length === expected.length, {
      what: 'the toasts of the five changes',
    });
    await waitFor(async () => (await Promise.all(tabs.map(received))).every((events) => events.length === 5), {
      what: 'every tab received the five events',
    });
    const shownToasts = await Promise.all(tabs.map(toasts));
    console.log(`toasts per tab: ${shownToasts.map((list) => list.length).join(', ')}`);
    const [actorToasts = [], firstToasts, focusedToasts = [], lastToasts] = shownToasts;
    expect(actorToasts).toHaveLength(1);
    expect(actorToasts[0]).toContain('From the backend');
    expect(firstToasts).toEqual([]);
    expect(focusedToasts.map((text, index) => text.startsWith(expected[index] ?? '-'))).toEqual([true, true, true, true]);
    expect(focusedToasts.join(' | ')).toContain('Buy milk!');
    expect(lastToasts).toEqual([]);
    // Every tab got every event with the same verdict: exactly one of them shows each one.
    const deliveries = await Promise.all(tabs.map(received));
    for (const [index] of (deliveries[0] ?? []).entries()) {
      expect(deliveries.filter((events) => events[index]?.notify).length, `event ${index}`).toBe(1);
    }
  });

  it("keeps bob's tab in the same browser on a socket of its own, without alice's events", async () => {
    const bobTab = await openTab(bob, 'bob');
    expect(await sharingOf(bobTab)).toBe(withoutSharedWorker ? 'leader' : 'worker');
    await waitFor(async () => (await liveSockets()) === 2, { what: "bob's own socket" });
    await session.service.publish({ id: bobMarker, event: 'task.created', user_id: bob, task: { id: 1, title: "Bob's marker" } });
    // Published after bob's: once alice's tabs have it, bob's would have reached them too.
    await session.service.publish({ id: `${alice}-after-bob`, event: 'task.created', user_id: alice, task: { id: 2, title: 'After bob' } });
    await bobTab.waitForSelector('[data-testid="task-title"]:text-is("Bob\'s marker")');
    await Promise.all(tabs.map((tab) => tab.waitForSelector('[data-testid="task-title"]:text-is("After bob")')));
    expect((await received(bobTab)).map((event) => event.id)).toEqual([bobMarker]);
    for (const tab of tabs) expect((await received(tab)).map((event) => event.id)).not.toContain(bobMarker);
    expect(await bobTab.locator('[data-testid="task-row"]').count()).toBe(1);
    tabs.push(bobTab);
  });

  it('carries on when what holds the socket goes: the next 20 events reach every tab once, within 2 s', async () => {
    onTestFailed(() => console.log(session.service.output));
    const bobTab = tabs.pop();
    const seen = await Promise.all(tabs.map(async (tab) => (await received(tab)).length));
    let goneAt: number;
    if (withoutSharedWorker) {
      // The leader tab is closed; one of the others is elected and starts the socket again.
      const roles = await Promise.all(tabs.map((tab) => tab.textContent('[data-testid="sharing"]')));
      const leader = roles.indexOf('leader');
      expect(leader).toBeGreaterThanOrEqual(0);
      goneAt = Date.now();
      await tabs[leader]?.close();
      tabs = tabs.filter((_, index) => index !== leader);
      seen.splice(leader, 1);
    } else {
      // The worker is stopped as the browser would stop it; the tabs start another.
      const cdp = await session.browser.newBrowserCDPSession();
      const { targetInfos } = await cdp.send('Target.getTargets');
      const workers = targetInfos.filter((target) => target.type === 'shared_worker' && target.title.includes(`"${alice}"`));
      expect(workers).toHaveLength(1);
      goneAt = Date.now();
      await cdp.send('Target.closeTarget', { targetId: workers[0]?.targetId ?? '' });
      await cdp.detach();
    }
    const published: string[] = [];
    for (let n = 1; n <= EVENTS_AFTER_TAKEOVER; n += 1) {
      const id = `${alice}-after-takeover-${String(n)}`;
      await session.service.publish({ id, event: 'task.created', user_id: alice, task: { id, title: `After ${String(n)}` } });
      published.push(id);
    }
    const after = async (tab: Page, index: number) => (await received(tab)).slice(seen[index]);
    await waitFor(async () => (await Promise.all(tabs.map(after))).every((events) => events.length >= EVENTS_AFTER_TAKEOVER), {
      timeoutMs: 10_000,
      what: `all ${String(EVENTS_AFTER_TAKEOVER)} events in every remaining tab`,
    });
    for (const [index, tab] of tabs.entries()) {
      const events = await after(tab, index);
      // Nothing lost, nothing twice, in order.
      expect(events.map((event) => event.id)).toEqual(published);
      const lastAt = Math.max(...events.map((event) => event.at));
      console.log(`tab ${String(index + 1)}: all ${String(events.length)} events ${(lastAt - goneAt).toFixed(0)} ms after the holder went`);
      expect(lastAt - goneAt).toBeLessThan(TAKEN_OVER_WITHIN_MS);
    }
    await waitFor(async () => (await liveSockets()) === 2, { what: 'one socket for alice again, beside bob’s' });
    if (bobTab) expect((await received(bobTab)).map((event) => event.id)).toEqual([bobMarker]);
    expect(pageErrors).toEqual([]);
  });
});
