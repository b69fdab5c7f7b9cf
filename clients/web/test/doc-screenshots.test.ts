// @vitest-environment node
/**
 * The demo's screenshots in docs/web-client.md: the browser test (test-e2e/demo.e2e.test.ts)
 * rewrites them on every run; this fails when one is missing from git or from the docs, or when the
 * docs show one that the browser test does not take.
 */

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { expect, it } from 'vitest';

import { DOC_IMAGES, DOC_SCREENSHOTS } from '../test-e2e/doc-screenshots.js';

const DOCS = join(DOC_IMAGES, '..');
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

it.each(Object.values(DOC_SCREENSHOTS))('%s is committed, a PNG, and shown in docs/web-client.md', (name) => {
  const path = join(DOC_IMAGES, name);
  // Fails unless git tracks the file: a screenshot only on this machine does not reach the docs.
  execFileSync('git', ['ls-files', '--error-unmatch', path], { cwd: DOC_IMAGES, stdio: 'pipe' });
  expect(readFileSync(path).subarray(0, PNG_SIGNATURE.length)).toEqual(PNG_SIGNATURE);
  expect(readFileSync(join(DOCS, 'web-client.md'), 'utf8')).toContain(`](images/${name})`);
});

it('the docs show no demo screenshot that the browser test does not take', () => {
  const shown = [...readFileSync(join(DOCS, 'web-client.md'), 'utf8').matchAll(/\]\(images\/(web-demo-[^)]+)\)/g)];
  expect(shown.map((match) => match[1]).filter((name) => !Object.values<string>(DOC_SCREENSHOTS).includes(name ?? ''))).toEqual([]);
});
