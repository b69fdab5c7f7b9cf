/**
 * Which tab shows an event's notification, when several tabs of a user share one connection:
 * exactly one, the focused tab or else the most recently focused one, and never the tab whose own
 * user action caused the event (it already shows the change).
 *
 * A tab recognises its actions by their operation ids (docs/protocol.md, "Operation ids"). The ids
 * this client makes start with the id of the tab that made them, so whoever holds the socket can
 * tell, from the `op_id` of a `task_update` alone, which tab acted.
 */

export interface TabFocus {
  readonly tabId: string;
  /** When the user last turned to the tab (epoch ms); 0 if never seen focused. */
  readonly focusedAt: number;
}

const OPERATION_SEPARATOR = '.';

/** A random id for one client in one tab: base 36, so it never contains the separator. */
export function newTabId(): string {
  return Math.random().toString(36).slice(2, 10).padEnd(8, '0');
}

export function operationId(tabId: string, counter: number): string {
  return `${tabId}${OPERATION_SEPARATOR}${counter}`;
}

/** The tab that made operation `opId`, if this client made it. */
export function operationTab(opId: string | undefined): string | undefined {
  const separator = opId?.indexOf(OPERATION_SEPARATOR) ?? -1;
  return separator > 0 ? opId?.slice(0, separator) : undefined;
}

/**
 * The tab that shows the notification of an event with operation id `opId`: the most recently
 * focused of `tabs`, leaving out the one that acted; the last of equals (the newest tab) wins.
 * Null when the acting tab is the only one.
 */
export function notificationTarget(tabs: Iterable<TabFocus>, opId: string | undefined): string | null {
  const actor = operationTab(opId);
  let target: TabFocus | null = null;
  for (const tab of tabs) {
    if (tab.tabId !== actor && (!target || tab.focusedAt >= target.focusedAt)) target = tab;
  }
  return target?.tabId ?? null;
}

