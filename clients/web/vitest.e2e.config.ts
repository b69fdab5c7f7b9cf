import { defineConfig } from 'vitest/config';

// End-to-end tests against the real Python service (and, for the browser test, Debian's
// chromium); `npm run test:e2e`. They spawn, kill and restart `tasksync serve`, so they run one
// file at a time: timing assertions must not compete with each other for the CPU.
export default defineConfig({
  test: {
    include: ['test-e2e/**/*.e2e.test.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
