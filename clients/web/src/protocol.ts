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

function isOffset(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isTaskEvent(value: unknown): value is TaskEventName {
  return typeof value === 'string' && (TASK_EVENTS as readonly string[]).includes(value);
}

function isTaskId(value: unknown): value is TaskId {
  return (typeof value === 'number' && Number.isFinite(value)) || (typeof value === 'string' && value !== '');
}

const INVALID = Symbol('invalid');
type Invalid = typeof INVALID;

/**
 * Checks that `source[key]` is absent (missing or `null`: serializers differ on how they say
 * "no value") or passes `guard`. Optional fields are still typed: a present-but-wrong field
 * makes the whole frame malformed rather than being silently dropped.
 */
function optional<T>(source: JsonObject, key: string, guard: (value: unknown) => value is T): T | undefined | Invalid {
  const value = source[key];
  if (value === undefined || value === null) return undefined;
  return guard(value) ? value : INVALID;
}

const isString = (value: unknown): value is string => typeof value === 'string';
const isBoolean = (value: unknown): value is boolean => typeof value === 'boolean';
const isPositiveNumber = (value: unknown): value is number =>
  typeof value === 'number' && Number.isFinite(value) && value > 0;

function fail(reason: string): ParseResult {
  return { ok: false, reason };
}

function parseNotification(value: unknown): ServerNotification | undefined | Invalid {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value) || !isString(value.title)) return INVALID;
  const body = optional(value, 'body', isString);
  const kind = optional(value, 'kind', isString);
  if (body === INVALID || kind === INVALID) return INVALID;
  return { title: value.title, ...(body !== undefined && { body }), ...(kind !== undefined && { kind }) };
}

function parseTaskUpdate(raw: JsonObject): ParseResult {
  if (!isTaskEvent(raw.event)) return fail('task_update: unknown or missing event');
  if (!isObject(raw.task) || !isTaskId(raw.task.id)) return fail('task_update: task must be an object with an id');
  if (!isString(raw.timestamp)) return fail('task_update: timestamp must be a string');
  const id = optional(raw, 'id', isString);
  const seq = optional(raw, 'seq', isOffset);
  const epoch = optional(raw, 'epoch', isString);
  const notification = parseNotification(raw.notification);
  if (id === INVALID || seq === INVALID || epoch === INVALID || notification === INVALID) {
    return fail('task_update: id, seq, epoch or notification has the wrong type');
  }
  const frame: TaskUpdateMessage = {
    type: 'task_update',
    event: raw.event,
    task: raw.task as Task,
    timestamp: raw.timestamp,
    ...(id !== undefined && { id }),
    ...(seq !== undefined && { seq }),
    ...(epoch !== undefined && { epoch }),
    ...(notification !== undefined && { notification }),
  };
  return { ok: true, frame };
}

function parseConnected(raw: JsonObject): ParseResult {
  if (!isString(raw.user_id)) return fail('connected: user_id must be a string');
  const connectionId = optional(raw, 'connection_id', isString);
  const seq = optional(raw, 'seq', isOffset);
  const epoch = optional(raw, 'epoch', isString);
  const heartbeat = optional(raw, 'heartbeat_interval', isPositiveNumber);
  const resumed = optional(raw, 'resumed', isBoolean);
  if (
    connectionId === INVALID ||
    seq === INVALID ||
    epoch === INVALID ||
    heartbeat === INVALID ||
    resumed === INVALID
  ) {
    return fail('connected: a field has the wrong type');
  }
  const frame: ConnectedMessage = {
    type: 'connected',
    user_id: raw.user_id,
    ...(connectionId !== undefined && { connection_id: connectionId }),
    ...(seq !== undefined && { seq }),
    ...(epoch !== undefined && { epoch }),
    ...(heartbeat !== undefined && { heartbeat_interval: heartbeat }),
    ...(resumed !== undefined && { resumed }),
  };
  return { ok: true, frame };
}

function parsePing(raw: JsonObject): ParseResult {
  const timestamp = raw.timestamp ?? null;
  if (timestamp !== null && !isString(timestamp)) return fail('ping: timestamp must be a string or null');
  return { ok: true, frame: { type: 'ping', timestamp } };
}

function parseResyncRequired(raw: JsonObject): ParseResult {
  if (!isString(raw.reason) || !isOffset(raw.seq) || !isString(raw.epoch)) {
    return fail('resync_required: reason, seq and epoch are required');
  }
  return { ok: true, frame: { type: 'resync_required', reason: raw.reason, seq: raw.seq, epoch: raw.epoch } };
}

function parseError(raw: JsonObject): ParseResult {
  if (!isString(raw.code)) return fail('error: code must be a string');
  const message = raw.message ?? '';
  if (!isString(message)) return fail('error: message must be a string');
  return { ok: true, frame: { type: 'error', code: raw.code, message } };
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
  switch (raw.type) {
    case 'task_update':
      return parseTaskUpdate(raw);
    case 'connected':
      return parseConnected(raw);
    case 'ping':
      return parsePing(raw);
    case 'resync_required':
      return parseResyncRequired(raw);
    case 'error':
      return parseError(raw);
    default:
      return fail(`unknown frame type ${JSON.stringify(raw.type)}`);
  }
}
