import type { ReactNode } from 'react';

/** The TaskSync mark: a check on the accent colour, as in the favicon. */
export function Logo(): ReactNode {
  return (
    <svg className="logo" viewBox="0 0 32 32" width="28" height="28" aria-hidden>
      <rect width="32" height="32" rx="8" fill="var(--accent)" />
      <path
        d="M9.5 16.5l4 4 9-9"
        fill="none"
        stroke="var(--accent-contrast)"
        strokeWidth="3"
        strokeLinecap="round"
        strokeLinejoin="round"
      />
    </svg>
  );
}
