/**
 * Wire protocol v1 (docs/protocol.md): the frame types and a parser that turns untrusted
 * socket data into them.
 *
 * The parser never throws. The server is a separate deployable that may be older or newer than
 * this client, so anything it cannot vouch for comes back as `{ ok: false }` and the client
 * counts and drops it instead of letting a bad frame reach application code.
 */

/**
 * Close codes (docs/protocol.md, "Close codes"): RFC 6455 plus the 4xxx range TaskSync gives its
 * own meaning. The server's table is `CLOSE_*` in service/tasksync/protocol.py, with the same names;
 * tests/unit/test_close_codes.py fails when the two disagree.
 */
export const CLOSE_CODES = {
  NORMAL: 1000,
  UNSUPPORTED_DATA: 1003,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  UNAUTHENTICATED: 4001,
  FORBIDDEN: 4003,
  RATE_LIMITED: 4029,
} as const;

export const TASK_EVENTS = ['task.created', 'task.updated', 'task.completed', 'task.deleted'] as const;

export type TaskEventName = (typeof TASK_EVENTS)[number];

export type TaskId = number | string;

/**
 * A task as carried by events. TaskSync does not interpret tasks beyond their `id`; `version` and
 * `updated_at` are used for ordering when the publisher provides them.
 */
export interface Task {
  id: TaskId;
  title?: string;
  completed?: boolean;
  version?: number;
  updated_at?: string;
  [field: string]: unknown;
}

/** Toast text chosen by the server's notification hooks. */
export interface ServerNotification {
  title: string;
  body?: string;
  /** Conventionally `info`, `success`, `warning` or `error`; other values show a plain toast. */
  kind?: string;
}

export interface TaskUpdateMessage {
  type: 'task_update';
  event: TaskEventName;
  task: Task;
  /** When the event occurred, ISO 8601. */
  timestamp: string;
  /** Event id, for deduplication. Absent only on servers that predate it. */
  id?: string;
  /** Per-user offset; absent on servers without resume. */
  seq?: number;
  epoch?: string;
  notification?: ServerNotification;
  /**
   * The publisher's operation id: the user action that caused the event (docs/protocol.md,
   * "Operation ids"), compared with the client's own `createOperationId()`.
   */
  op_id?: string;
}

export interface PingMessage {
  type: 'ping';
  /** The original client specification allows `null` here; a missing timestamp becomes `null`. */
  timestamp: string | null;
}

/**
 * What `addMessageListener` listeners receive: the `WebSocketMessage` of the original client
 * specification, extended.
 */
export type WebSocketMessage = TaskUpdateMessage | PingMessage;

export interface ConnectedMessage {
  type: 'connected';
  user_id: string;
  connection_id?: string;
  /** Newest offset the broker holds for the user (0 if none yet). */
  seq?: number;
  epoch?: string;
  /** Seconds between server pings. */
  heartbeat_interval?: number;
  /** Whether the resume requested in the handshake succeeded; absent on servers without resume. */
  resumed?: boolean;
}

export interface ResyncRequiredMessage {
  type: 'resync_required';
  /** `history_gap` or `epoch_changed` today; kept open so a newer server does not break parsing. */
  reason: string;
  seq: number;
  epoch: string;
}

export interface ServerErrorMessage {
  type: 'error';
  /** `invalid_json`, `invalid_frame` or `unknown_type` today. */
  code: string;
  message: string;
}

export type ServerFrame =
  | ConnectedMessage
  | TaskUpdateMessage
  | PingMessage
  | ResyncRequiredMessage
  | ServerErrorMessage;

export type ClientFrame =
  | { type: 'pong' }
  | { type: 'auth'; token: string }
  | { type: 'resume'; since: number; epoch: string };

export type ParseResult = { ok: true; frame: ServerFrame } | { ok: false; reason: string };

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const INVALID = Symbol('invalid');

/**
 * A field of a frame: how its value is checked (and, for nested objects, rebuilt), and whether
 * the frame needs it. Absent means missing or `null`: serializers differ on how they say "no
 * value". A present field is still typed: a value of the wrong type makes the whole frame
 * malformed rather than being silently dropped.
 */
type Field = readonly [check: (value: unknown) => unknown, required?: true];

const string = (value: unknown): unknown => (typeof value === 'string' ? value : INVALID);
const offset = (value: unknown): unknown => (Number.isSafeInteger(value) && (value as number) >= 0 ? value : INVALID);
const boolean = (value: unknown): unknown => (typeof value === 'boolean' ? value : INVALID);
const positive = (value: unknown): unknown =>
  typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : INVALID;
const taskEvent = (value: unknown): unknown => ((TASK_EVENTS as readonly unknown[]).includes(value) ? value : INVALID);
/** TaskSync does not interpret tasks beyond their id, so the task is passed on as it came. */
const task = (value: unknown): unknown =>
  isObject(value) && ((typeof value.id === 'number' && Number.isFinite(value.id)) || (typeof value.id === 'string' && value.id !== ''))
    ? value
    : INVALID;
const notification = (value: unknown): unknown =>
  pick(value, { title: [string, true], body: [string], kind: [string] }) ?? INVALID;

const FRAMES: Readonly<Record<ServerFrame['type'], Readonly<Record<string, Field>>>> = {
  connected: {
    user_id: [string, true],
    connection_id: [string],
    seq: [offset],
    epoch: [string],
    heartbeat_interval: [positive],
    resumed: [boolean],
  },
  task_update: {
    event: [taskEvent, true],
    task: [task, true],
    timestamp: [string, true],
    id: [string],
    seq: [offset],
    epoch: [string],
    notification: [notification],
    op_id: [string],
  },
  ping: { timestamp: [string] },
  resync_required: { reason: [string, true], seq: [offset, true], epoch: [string, true] },
  error: { code: [string, true], message: [string] },
};

/** The known fields of `source`, checked; undefined when it is no object or a field is wrong. */
function pick(source: unknown, fields: Readonly<Record<string, Field>>): JsonObject | undefined {
  if (!isObject(source)) return undefined;
  const picked: JsonObject = {};
  for (const [key, [check, required]] of Object.entries(fields)) {
    const value = source[key];
    if (value === undefined || value === null) {
      if (required) return undefined;
      continue;
    }
    const checked = check(value);
    if (checked === INVALID) return undefined;
    picked[key] = checked;
  }
  return picked;
}

function fail(reason: string): ParseResult {
  return { ok: false, reason };
}

/**
 * Parses one WebSocket message payload. Binary payloads (anything but a string) are refused:
 * the protocol only uses JSON text frames. Unknown fields are ignored so a newer server can add
 * some; an unknown `type` is refused because the client could not act on it.
 */
export function parseServerFrame(data: unknown): ParseResult {
  if (typeof data !== 'string') return fail('binary frame');
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return fail('invalid JSON');
  }
  if (!isObject(raw)) return fail('frame is not a JSON object');
  const type = raw.type;
  if (typeof type !== 'string' || !Object.hasOwn(FRAMES, type)) return fail(`unknown frame type ${JSON.stringify(type)}`);
  const fields = pick(raw, FRAMES[type as ServerFrame['type']]);
  if (!fields) return fail(`${type}: a field is missing or has the wrong type`);
  // The original client specification allows a ping without a timestamp; an error may omit its message.
  const defaults = type === 'ping' ? { timestamp: null } : type === 'error' ? { message: '' } : {};
  return { ok: true, frame: { type, ...defaults, ...fields } as ServerFrame };
}
