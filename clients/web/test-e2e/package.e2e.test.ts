/**
 * The package as a frontend developer gets it: built by its prepublishOnly script, packed with
 * `npm pack`, installed from the tarball into a scratch project (test-e2e/consumer/) in a temporary
 * folder, then used from Node with `ws`, as an ES module and as CommonJS, against the real
 * service, type-checked under both module systems, and built into a React app with Vite.
 *
 * The scratch project asks for the versions this checkout has installed, so npm takes them from
 * its cache (--prefer-offline) and reaches the registry only for what the cache lacks.
 */

import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

import { TaskSyncService } from './service.js';

const run = promisify(execFile);

const PACKAGE_DIR = fileURLToPath(new URL('../', import.meta.url));
const CONSUMER = fileURLToPath(new URL('consumer/', import.meta.url));
const TSC = join(PACKAGE_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
/** What the scratch project installs beside the tarball: peers, `ws`, Vite and the types. */
const CONSUMER_PACKAGES = [
  'react',
  'react-dom',
  'zustand',
  'sonner',
  'ws',
  'vite',
  '@vitejs/plugin-react',
  '@types/react',
  '@types/react-dom',
];
/** Generous bounds for one command on a busy two-core machine; they only stop a hung one. */
const INSTALL_TIMEOUT_MS = 180_000;
const COMMAND_TIMEOUT_MS = 60_000;

/**
 * The environment of a nested npm or node: without the variables `npm run` sets for this
 * package, which would point the scratch project's npm at this one.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_(package|lifecycle|config_local_prefix)/.test(key) && !key.startsWith('INIT_CWD')) env[key] = value;
  }
  return env;
}

async function command(file: string, args: string[], cwd: string, timeout = COMMAND_TIMEOUT_MS): Promise<string> {
  try {
    const { stdout } = await run(file, args, { cwd, timeout, env: cleanEnv(), maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; message: string };
    const output = `${failed.stdout ?? ''}\n${failed.stderr ?? ''}`;
    throw new Error(`${file} ${args.join(' ')} (in ${cwd}) failed: ${failed.message}\n${output}`, { cause: error });
  }
}

function installedVersion(name: string): string {
  const manifest = JSON.parse(readFileSync(join(PACKAGE_DIR, 'node_modules', name, 'package.json'), 'utf8')) as {
    version: string;
  };
  return manifest.version;
}

let workdir: string;
let project: string;
let tarballFiles: string[];
let service: TaskSyncService | undefined;

beforeAll(async () => {
  workdir = mkdtempSync(join(tmpdir(), 'tasksync-web-package-'));
  await command('npm', ['run', '--silent', 'prepublishOnly'], PACKAGE_DIR);
  const packed = JSON.parse(
    await command('npm', ['pack', '--json', '--silent', '--pack-destination', workdir], PACKAGE_DIR),
  ) as { filename: string; files: { path: string }[] }[];
  const [tarball] = packed;
  if (!tarball) throw new Error('npm pack made no tarball');
  tarballFiles = tarball.files.map((file) => file.path);

  project = join(workdir, 'consumer');
  cpSync(CONSUMER, project, { recursive: true });
  const dependencies: Record<string, string> = { '@tasksync/web': `file:${join(workdir, tarball.filename)}` };
  for (const name of CONSUMER_PACKAGES) dependencies[name] = installedVersion(name);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'tasksync-web-consumer', private: true, type: 'module', dependencies }, null, 2),
  );
  await command('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], project, INSTALL_TIMEOUT_MS);

  service = await TaskSyncService.start();
}, INSTALL_TIMEOUT_MS + 2 * COMMAND_TIMEOUT_MS);

afterAll(async () => {
  await service?.dispose();
  rmSync(workdir, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('holds both builds with their types, and no tests or demo', () => {
    for (const entry of ['index', 'react', 'store', 'toasts']) {
      for (const file of [`dist/${entry}.js`, `dist/${entry}.d.ts`, `dist/cjs/${entry}.js`, `dist/cjs/${entry}.d.ts`]) {
        expect(tarballFiles, file).toContain(file);
      }
    }
    expect(tarballFiles).toContain('dist/cjs/package.json');
    expect(tarballFiles.filter((path) => /^(test|test-e2e|demo|node_modules)\//.test(path))).toEqual([]);
  });

  it.each(['consumer.mjs', 'consumer.cjs'])('%s: the core client on Node with ws receives a task_update', async (script) => {
    const server = service;
    if (!server) throw new Error('the service did not start');
    onTestFailed(() => console.log(server.output));
    const title = `published for ${script}`;
    const stdout = await command('node', [script, server.ws, server.http, `tarball-${script}`, title], project);
    const message = JSON.parse(stdout.trim()) as { type: string; event: string; task: { title: string } };
    expect(message).toMatchObject({ type: 'task_update', event: 'task.created', task: { title } });
  });

  it('type-checks as an ES module and as CommonJS, every entry point', async () => {
    for (const [folder, type] of [
      ['esm', 'module'],
      ['cjs', 'commonjs'],
    ] as const) {
      mkdirSync(join(project, folder));
      cpSync(join(project, 'types.ts'), join(project, folder, 'types.ts'));
      writeFileSync(join(project, folder, 'package.json'), JSON.stringify({ type }));
    }
    const explained = await command('node', [TSC, '-p', 'tsconfig.node.json', '--explainFiles'], project);
    // Each module system found its own build's declarations.
    expect(explained).toContain('node_modules/@tasksync/web/dist/index.d.ts');
    expect(explained).toContain('node_modules/@tasksync/web/dist/cjs/index.d.ts');
  });

  it('builds into a React app with Vite, the client in its bundle', async () => {
    await command('node', [TSC, '-p', 'tsconfig.app.json'], project);
    await command('node', [join('node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn'], project);
    const assets = join(project, 'dist', 'assets');
    // The shared worker, which Vite finds through new URL('./shared-worker.js', import.meta.url)
    // beside the module that starts it, and emits with the app.
    expect(readdirSync(assets).filter((name) => /^shared-worker.*\.js$/.test(name))).toHaveLength(1);
    const bundle = readdirSync(assets)
      .filter((name) => name.endsWith('.js'))
      .map((name) => readFileSync(join(assets, name), 'utf8'))
      .join('\n');
    // The subprotocol of the core client, the indicator of the react entry, a toast of the toasts
    // entry and the store's bookkeeping: every entry point made it into the app.
    expect(bundle).toContain('tasksync.v1');
    expect(bundle).toContain('connection-status');
    expect(bundle).toContain('Task created');
    expect(bundle).toContain('handleWebSocketMessage');
  });
});
