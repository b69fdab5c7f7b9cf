// @vitest-environment node
/**
 * What each entry point of the package pulls into an app, measured with a real bundler
 * (rolldown, Vite's): the peers it imports, and for the core client its minified and gzipped size,
 * which must stay within its budget.
 */

import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

import { rolldown } from 'rolldown';
import { describe, expect, it } from 'vitest';

/** The core client, minified and gzipped, may grow to this many bytes (6 kB). */
const CORE_BUDGET_BYTES = 6_000;

const PACKAGE_DIR = new URL('../', import.meta.url);

/** The name of the package a bare import specifier belongs to (`react/jsx-runtime` → `react`). */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

interface Bundle {
  /** Every chunk the entry loads, at once or later through `import()`: what a tab downloads. */
  chunks: { fileName: string; code: string }[];
  /** Packages the entry imports, left external as an app's bundler would resolve them. */
  packages: string[];
}

/** Bundles `src/<entry>.ts` as an app would get it: every module of ours in, packages out. */
async function bundle(entry: string): Promise<Bundle> {
  const packages = new Set<string>();
  const build = await rolldown({
    input: new URL(`src/${entry}.ts`, PACKAGE_DIR).pathname,
    cwd: PACKAGE_DIR.pathname,
    platform: 'browser',
    tsconfig: 'tsconfig.build.json',
    logLevel: 'silent',
    external: (id) => {
      if (id.startsWith('.') || id.startsWith('/') || id.startsWith('\0')) return false;
      packages.add(packageOf(id));
      return true;
    },
  });
  try {
    const { output } = await build.generate({ format: 'esm', minify: true });
    const chunks = output.flatMap((chunk) => (chunk.type === 'chunk' ? [{ fileName: chunk.fileName, code: chunk.code }] : []));
    return { chunks, packages: [...packages].sort() };
  } finally {
    await build.close();
  }
}

/** Scripts the code starts by URL (`new URL('./x.js', import.meta.url)`, a worker): their sources. */
function scriptsStartedBy(code: string): string[] {
  const names = [...code.matchAll(/new URL\(["'`]\.\/([\w.-]+)\.js["'`],\s*import\.meta\.url\)/g)].map((match) => match[1] ?? '');
  return [...new Set(names)];
}

const gzipped = (code: string): number => gzipSync(code).length;

describe('entry points', () => {
  it.each([
    ['index', []],
    ['react', ['react']],
    ['store', ['zustand']],
    ['toasts', ['react', 'sonner']],
  ])('%s imports only %j', async (entry, expected) => {
    expect((await bundle(entry)).packages).toEqual(expected);
  });

  it('are exactly the ones package.json exports, each with ESM, CommonJS and types', () => {
    const manifest = JSON.parse(readFileSync(new URL('package.json', PACKAGE_DIR), 'utf8')) as {
      exports: Record<string, unknown>;
      peerDependencies: Record<string, string>;
      peerDependenciesMeta: Record<string, { optional?: boolean }>;
    };
    const entries = { '.': 'index', './react': 'react', './store': 'store', './toasts': 'toasts' };
    for (const [subpath, name] of Object.entries(entries)) {
      expect(manifest.exports[subpath], subpath).toEqual({
        import: { types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` },
        require: { types: `./dist/cjs/${name}.d.ts`, default: `./dist/cjs/${name}.js` },
      });
    }
    expect(Object.keys(manifest.exports).sort()).toEqual([...Object.keys(entries), './package.json'].sort());
    // Every peer is optional: an app that uses only the core client installs none of them.
    for (const peer of Object.keys(manifest.peerDependencies)) {
      expect(manifest.peerDependenciesMeta[peer]?.optional, peer).toBe(true);
    }
  });
});

it(`keeps the core client within ${CORE_BUDGET_BYTES} bytes minified and gzipped`, async () => {
  const { chunks } = await bundle('index');
  // Each file as the network carries it, gzipped on its own; lazily loaded chunks count too, since
  // a tab loads them as soon as it connects.
  const total = chunks.reduce((sum, chunk) => sum + gzipped(chunk.code), 0);
  for (const chunk of chunks) console.log(`  ${chunk.fileName}: ${chunk.code.length} bytes minified, ${gzipped(chunk.code)} gzipped`);
  console.log(`core client: ${total} bytes gzipped in ${chunks.length} files (budget ${CORE_BUDGET_BYTES})`);
  // Started by the client but run in a worker, once per browser rather than per tab: reported, not budgeted.
  for (const script of scriptsStartedBy(chunks.map((chunk) => chunk.code).join('\n'))) {
    const worker = await bundle(script);
    const size = worker.chunks.reduce((sum, chunk) => sum + gzipped(chunk.code), 0);
    console.log(`  started by URL, ${script}.js: ${size} bytes gzipped`);
  }
  expect(chunks.map((chunk) => chunk.code).join('')).toContain('tasksync.v1');
  expect(total).toBeLessThanOrEqual(CORE_BUDGET_BYTES);
});
