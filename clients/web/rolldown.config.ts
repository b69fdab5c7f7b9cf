/**
 * The CommonJS build of the package (`npm run build`, after tsc's ESM build into dist/): every
 * entry point into dist/cjs/, one file per source module so that two entries share one instance of
 * each module (the client registry, the app-wide store), and beside them tsc's declarations, which
 * dist/cjs/package.json marks as CommonJS for TypeScript's `require` resolution.
 *
 * tsc cannot emit this itself: the sources read `import.meta` (the build-time environment, and the
 * URL of the shared worker), which CommonJS does not have. Here `import.meta` is an empty object,
 * so a CommonJS consumer gets no `import.meta.env` settings and no worker URL; each tab then
 * keeps a socket of its own (docs/web-client.md, "Connection sharing").
 */

import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

import { defineConfig, type Plugin } from 'rolldown';

const ENTRIES = ['index', 'react', 'store', 'toasts'];
const ESM_DIR = 'dist';
const OUT_DIR = 'dist/cjs';
const PEERS = /^(react|react-dom|zustand|sonner)(\/|$)/;

function declarationFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.d.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
    .filter((path) => !path.startsWith(OUT_DIR));
}

/** tsc's declarations next to the CommonJS files, without the maps, whose paths fit dist/ only. */
const commonJsDeclarations: Plugin = {
  name: 'commonjs-declarations',
  generateBundle() {
    for (const path of declarationFiles(ESM_DIR)) {
      const source = readFileSync(path, 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
      this.emitFile({ type: 'asset', fileName: relative(ESM_DIR, path), source });
    }
    this.emitFile({ type: 'asset', fileName: 'package.json', source: `${JSON.stringify({ type: 'commonjs' })}\n` });
  },
};

export default defineConfig({
  input: Object.fromEntries(ENTRIES.map((name) => [name, `src/${name}.ts`])),
  external: (id) => PEERS.test(id),
  platform: 'neutral',
  tsconfig: 'tsconfig.build.json',
  transform: { define: { 'import.meta': '{}' } },
  plugins: [commonJsDeclarations],
  output: {
    dir: OUT_DIR,
    format: 'cjs',
    preserveModules: true,
    preserveModulesRoot: 'src',
    entryFileNames: '[name].js',
    sourcemap: true,
  },
});
