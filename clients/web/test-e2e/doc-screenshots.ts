/**
 * The screenshots of the demo in docs/web-client.md. The browser test (demo.e2e.test.ts) takes
 * them on every run, so the pictures follow the demo; a unit test (test/doc-screenshots.test.ts)
 * fails when one is not committed or not shown in the docs.
 */

import { fileURLToPath } from 'node:url';

export const DOC_IMAGES = fileURLToPath(new URL('../../../docs/images/', import.meta.url));

export const DOC_SCREENSHOTS = {
  light: 'web-demo-light.png',
  dark: 'web-demo-dark.png',
  phone: 'web-demo-phone.png',
  offline: 'web-demo-offline.png',
} as const;

export type DocScreenshot = keyof typeof DOC_SCREENSHOTS;
