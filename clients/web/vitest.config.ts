import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Unit tests only: the browser and real-service tests live elsewhere and are run on purpose.
    include: ['test/**/*.test.{ts,tsx}'],
    environment: 'jsdom',
    setupFiles: ['test/setup.ts'],
    restoreMocks: true,
    unstubEnvs: true,
  },
});
