import { fileURLToPath } from 'node:url';

import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The TaskSync service serves demo/dist at `/` in development mode; `npm run dev:demo` instead
// serves the sources with hot reload and forwards the API and the socket to a running service.
const service = process.env.TASKSYNC_DEMO_SERVICE ?? 'http://localhost:8005';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  // Relative asset URLs: the page works wherever the service mounts it.
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/demo/api': service,
      '/ws': { target: service.replace(/^http/, 'ws'), ws: true },
    },
  },
});
