/** Who the page is for: an avatar, the user's name and a field to switch to another user. */

import { ArrowRight } from 'lucide-react';
import { useState, type CSSProperties, type ReactNode, type SubmitEvent } from 'react';

/** Offered in the switcher's suggestions and on the welcome screen; any other name works too. */
export const SAMPLE_USERS = ['alice', 'bob', 'carol'] as const;

/** A hue of its own for each name, the same on every load, so a user is recognisable at a glance. */
function hueOf(name: string): number {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + (char.codePointAt(0) ?? 0)) % 360;
  return hash;
}

export function Avatar({ name }: { name: string }): ReactNode {
  return (
    <span className="avatar" aria-hidden style={{ '--avatar-hue': hueOf(name) } as CSSProperties}>
      {name.slice(0, 1).toUpperCase() || '?'}
    </span>
  );
}

export function UserSwitcher({ userId, onPick }: { userId: string; onPick: (user: string) => void }): ReactNode {
  const [draft, setDraft] = useState(userId);
  // Follow a switch made elsewhere (the welcome screen's buttons), adjusting while rendering.
  const [shown, setShown] = useState(userId);
  if (shown !== userId) {
    setShown(userId);
    setDraft(userId);
  }
  const submit = (event: SubmitEvent<HTMLFormElement>) => {
    event.preventDefault();
    onPick(draft.trim());
  };
  return (
    <form className="user-switcher" data-testid="user-form" onSubmit={submit}>
      <Avatar name={userId} />
      <label className="visually-hidden" htmlFor="user-input">
        User
      </label>
      <input
        id="user-input"
        data-testid="user-input"
        list="sample-users"
        value={draft}
        placeholder="Pick a user"
        autoComplete="off"
        spellCheck={false}
        onChange={(event) => setDraft(event.target.value)}
      />
      <datalist id="sample-users">
        {SAMPLE_USERS.map((user) => (
          <option key={user} value={user} />
        ))}
      </datalist>
      <button type="submit" className="button button-secondary" data-testid="user-submit" aria-label="Switch user">
        <span className="wide-only">Switch</span>
        <ArrowRight aria-hidden />
      </button>
    </form>
  );
}
