import { render } from '@testing-library/react';
import { expect, it } from 'vitest';

import { TASK_EVENTS } from '../src/protocol.js';
import { TASK_EVENT_ICONS } from '../src/toast-icons.js';

it.each(TASK_EVENTS)('%s has an SVG icon drawn in the toast colour, with no text to need a font', (event) => {
  const { container } = render(TASK_EVENT_ICONS[event]);
  const svg = container.querySelector('svg');
  expect(svg?.getAttribute('stroke')).toBe('currentColor');
  expect(svg?.getAttribute('aria-hidden')).toBe('true');
  expect(svg?.querySelectorAll('path').length).toBeGreaterThan(0);
  expect(container.textContent).toBe('');
});
