import { describe, expect, it } from 'vitest';

import { parseServerFrame, type ServerFrame } from '../src/protocol.js';

function parsed(frame: unknown): ServerFrame {
  const result = parseServerFrame(typeof frame === 'string' ? frame : JSON.stringify(frame));
  if (!result.ok) throw new Error(`expected a valid frame, got: ${result.reason}`);
  return result.frame;
}

/** Plain objects are sent as JSON text; strings and binary payloads as they are. */
function refused(data: unknown): string {
  const isPlainObject = typeof data === 'object' && data !== null && Object.getPrototypeOf(data) === Object.prototype;
  const result = parseServerFrame(isPlainObject ? JSON.stringify(data) : data);
  if (result.ok) throw new Error(`expected a refusal, got ${JSON.stringify(result.frame)}`);
  return result.reason;
}

const taskUpdate = {
  type: 'task_update',
  event: 'task.updated',
  task: { id: 123, title: 'New Task', completed: false },
  timestamp: '2025-12-31T12:00:00Z',
  id: 'evt-7',
  seq: 42,
  epoch: 'm-9c1d2e',
  notification: { title: 'Task updated', body: 'New Task', kind: 'info' },
};

describe('parseServerFrame: the frames of docs/protocol.md', () => {
  it('parses connected', () => {
    const frame = {
      type: 'connected',
      user_id: 'alice',
      connection_id: 'c-3f1a',
      seq: 41,
      epoch: 'm-9c1d2e',
      heartbeat_interval: 25.0,
      resumed: false,
    };
    expect(parsed(frame)).toEqual(frame);
  });

  it('parses a minimal connected frame from a server without resume', () => {
    expect(parsed({ type: 'connected', user_id: 'alice' })).toEqual({ type: 'connected', user_id: 'alice' });
  });

  it('parses task_update with every field', () => {
    expect(parsed(taskUpdate)).toEqual(taskUpdate);
  });

  it('parses the task_update of the original client specification (no id, seq, epoch or notification)', () => {
    const original = { type: 'task_update', event: 'task.created', task: { id: 123, title: 'New Task', completed: false }, timestamp: '2025-12-31T12:00:00Z' };
    expect(parsed(original)).toEqual(original);
  });

  it.each(['task.created', 'task.updated', 'task.completed', 'task.deleted'])('accepts event %s', (event) => {
    expect(parsed({ ...taskUpdate, event })).toMatchObject({ event });
  });

  it('reads null optional fields as absent', () => {
    const frame = parsed({ ...taskUpdate, id: null, seq: null, epoch: null, notification: null });
    expect(frame).toEqual({ type: 'task_update', event: 'task.updated', task: taskUpdate.task, timestamp: taskUpdate.timestamp });
    expect(parsed({ type: 'connected', user_id: 'alice', resumed: null })).toEqual({ type: 'connected', user_id: 'alice' });
  });

  it('keeps unknown task fields and ignores unknown frame fields', () => {
    const frame = parsed({ ...taskUpdate, task: { id: 'abc', priority: 3 }, shard: 7 });
    expect(frame).toMatchObject({ task: { id: 'abc', priority: 3 } });
    expect(frame).not.toHaveProperty('shard');
  });

  it("parses ping, including the original client specification's example with a null timestamp", () => {
    expect(parsed({ type: 'ping', timestamp: '2025-12-31T12:00:25Z' })).toEqual({ type: 'ping', timestamp: '2025-12-31T12:00:25Z' });
    expect(parsed({ type: 'ping', timestamp: null })).toEqual({ type: 'ping', timestamp: null });
    expect(parsed({ type: 'ping' })).toEqual({ type: 'ping', timestamp: null });
  });

  it('parses resync_required', () => {
    const frame = { type: 'resync_required', reason: 'history_gap', seq: 97, epoch: 'm-9c1d2e' };
    expect(parsed(frame)).toEqual(frame);
  });

  it('parses error', () => {
    const frame = { type: 'error', code: 'unknown_type', message: "unknown client frame type 'hello'" };
    expect(parsed(frame)).toEqual(frame);
  });
});

describe('parseServerFrame: garbage is refused, never thrown', () => {
  it.each([
    ['invalid JSON', '{"type": "ping"'],
    ['empty text', ''],
    ['a JSON array', '[1, 2]'],
    ['a JSON string', '"ping"'],
    ['JSON null', 'null'],
  ])('%s', (_, text) => {
    expect(refused(text)).toBeTypeOf('string');
  });

  it('refuses binary frames', () => {
    expect(refused(new ArrayBuffer(4))).toBe('binary frame');
    expect(refused(new Uint8Array([123, 125]))).toBe('binary frame');
    expect(refused(new Blob(['{}']))).toBe('binary frame');
  });

  it('refuses unknown and missing types', () => {
    expect(refused({ type: 'hello' })).toContain('unknown frame type');
    expect(refused({ event: 'task.created' })).toContain('unknown frame type');
    expect(refused({ type: 42 })).toContain('unknown frame type');
  });

  it.each([
    ['unknown event', { event: 'task.archived' }],
    ['task missing', { task: undefined }],
    ['task not an object', { task: 'x' }],
    ['task an array', { task: [1] }],
    ['task without id', { task: { title: 'x' } }],
    ['task id of the wrong type', { task: { id: true } }],
    ['timestamp missing', { timestamp: undefined }],
    ['timestamp a number', { timestamp: 1735646400 }],
    ['id a number', { id: 7 }],
    ['seq a string', { seq: '42' }],
    ['seq negative', { seq: -1 }],
    ['seq fractional', { seq: 4.2 }],
    ['epoch a number', { epoch: 9 }],
    ['notification without title', { notification: { body: 'x' } }],
    ['notification kind a number', { notification: { title: 'x', kind: 1 } }],
  ])('refuses task_update with %s', (_, patch) => {
    expect(refused({ ...taskUpdate, ...patch })).toContain('task_update');
  });

  it.each([
    ['user_id missing', { user_id: undefined }],
    ['seq a string', { seq: '1' }],
    ['heartbeat_interval zero', { heartbeat_interval: 0 }],
    ['heartbeat_interval a string', { heartbeat_interval: '25' }],
    ['resumed a string', { resumed: 'yes' }],
  ])('refuses connected with %s', (_, patch) => {
    expect(refused({ type: 'connected', user_id: 'alice', seq: 1, epoch: 'e', heartbeat_interval: 25, resumed: false, ...patch })).toContain('connected');
  });

  it('refuses ping with a non-string timestamp', () => {
    expect(refused({ type: 'ping', timestamp: 5 })).toContain('ping');
  });

  it.each([
    ['reason missing', { reason: undefined }],
    ['seq missing', { seq: undefined }],
    ['epoch missing', { epoch: undefined }],
  ])('refuses resync_required with %s', (_, patch) => {
    expect(refused({ type: 'resync_required', reason: 'history_gap', seq: 1, epoch: 'e', ...patch })).toContain('resync_required');
  });

  it('refuses error frames without a string code or with a non-string message', () => {
    expect(refused({ type: 'error', message: 'x' })).toContain('error');
    expect(refused({ type: 'error', code: 'x', message: 5 })).toContain('error');
  });
});
