// @vitest-environment node
/** Server-side rendering (Next.js): no window, no location, no WebSocket, and no socket opened. */

import { renderToString } from 'react-dom/server';
import { expect, it } from 'vitest';

import { ConnectionIndicator } from '../src/connection-indicator.js';
import { TaskSyncProvider } from '../src/task-sync-provider.js';

it('renders the provider and indicator on the server as connecting, even with a relative URL', () => {
  expect(typeof window).toBe('undefined');
  const html = renderToString(
    <TaskSyncProvider userId="alice" url="/ws">
      <ConnectionIndicator />
    </TaskSyncProvider>,
  );
  expect(html).toContain('data-status="connecting"');
  // React separates adjacent text nodes with empty comments in server output.
  expect(html.replaceAll('<!-- -->', '')).toContain('Status: connecting');
});

it('renders signed-out pages as disconnected', () => {
  const html = renderToString(
    <TaskSyncProvider userId={null}>
      <ConnectionIndicator />
    </TaskSyncProvider>,
  );
  expect(html).toContain('data-status="disconnected"');
});
