// @vitest-environment node
/**
 * The client on Node with the `ws` package as its WebSocket, against a loopback `ws` server:
 * proves the injected-constructor path and the real handshake (subprotocols, query, close codes)
 * beyond what the in-memory fake can.
 */

import type { AddressInfo } from 'node:net';

import { afterEach, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';

import type { WebSocketMessage } from '../src/protocol.js';
import { WebSocketSyncClient } from '../src/sync-client.js';

interface Handshake {
  socket: WebSocket;
  query: URLSearchParams;
  protocols: string[];
}

const servers: WebSocketServer[] = [];
const clients: WebSocketSyncClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.disconnect();
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** A loopback server that hands each handshake to the test, in order. */
async function startServer() {
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (offered) => (offered.has('tasksync.v1') ? 'tasksync.v1' : false),
  });
  servers.push(server);
  const waiting: ((handshake: Handshake) => void)[] = [];
  const queued: Handshake[] = [];
  server.on('connection', (socket, request) => {
    const handshake = {
      socket,
      query: new URL(request.url ?? '/', 'http://localhost').searchParams,
      protocols: (request.headers['sec-websocket-protocol'] ?? '').split(/,\s*/),
    };
    const next = waiting.shift();
    if (next) next(handshake);
    else queued.push(handshake);
  });
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    nextHandshake: (): Promise<Handshake> => {
      const ready = queued.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

function nextMessage(client: WebSocketSyncClient): Promise<WebSocketMessage> {
  return new Promise((resolve) => {
    const off = client.addMessageListener((message) => {
      off();
      resolve(message);
    });
  });
}

function nextPong(socket: WebSocket): Promise<unknown> {
  return new Promise((resolve, reject) => {
    socket.once('message', (data) => {
      // With the default binaryType, ws hands over every message as a single Buffer.
      if (Buffer.isBuffer(data)) resolve(JSON.parse(data.toString()));
      else reject(new TypeError('the message did not arrive as a single Buffer'));
    });
  });
}

it('connects, receives an event, answers a ping and resumes after a service restart (1012)', async () => {
  const server = await startServer();
  const client = new WebSocketSyncClient(server.url, 'alice', {
    WebSocket,
    getToken: () => 'token-1',
    restartJitterMs: 0,
  });
  clients.push(client);
  client.connect();

  const first = await server.nextHandshake();
  expect(first.query.get('user_id')).toBe('alice');
  expect(first.protocols).toEqual(['tasksync.v1', 'bearer.token-1']);
  expect(first.socket.protocol).toBe('tasksync.v1');

  const connected = new Promise((resolve) => client.on('connected', resolve));
  first.socket.send(JSON.stringify({ type: 'connected', user_id: 'alice', seq: 4, epoch: 'e1', heartbeat_interval: 25, resumed: false }));
  await connected;
  expect(client.status).toBe('connected');

  const received = nextMessage(client);
  first.socket.send(
    JSON.stringify({
      type: 'task_update',
      event: 'task.created',
      task: { id: 1, title: 'From the server' },
      timestamp: '2025-12-31T12:00:00Z',
      id: 'evt-5',
      seq: 5,
      epoch: 'e1',
    }),
  );
  expect(await received).toMatchObject({ event: 'task.created', task: { title: 'From the server' }, seq: 5 });

  const pong = nextPong(first.socket);
  first.socket.send(JSON.stringify({ type: 'ping', timestamp: null }));
  expect(await pong).toEqual({ type: 'pong' });

  first.socket.close(1012, 'service restart');
  const second = await server.nextHandshake();
  expect(Object.fromEntries(second.query)).toEqual({ user_id: 'alice', since: '5', epoch: 'e1', reconnect: '1', attempts: '0' });
  expect(client.status).toBe('connecting');
});

it('survives binary and garbage frames from a real socket', async () => {
  const server = await startServer();
  const client = new WebSocketSyncClient(server.url, 'bob', { WebSocket });
  clients.push(client);
  client.connect();
  const { socket } = await server.nextHandshake();
  socket.send(Buffer.from([1, 2, 3]));
  socket.send('not json');
  const received = nextMessage(client);
  socket.send(JSON.stringify({ type: 'ping', timestamp: null }));
  expect(await received).toEqual({ type: 'ping', timestamp: null });
  expect(client.stats).toEqual({ framesReceived: 3, malformedFrames: 2 });
});

it('stops on 4003 from a real server', async () => {
  const server = await startServer();
  const client = new WebSocketSyncClient(server.url, 'carol', { WebSocket });
  clients.push(client);
  const stopped = new Promise<void>((resolve) =>
    client.subscribe(() => {
      if (client.status === 'error') resolve();
    }),
  );
  client.connect();
  const { socket } = await server.nextHandshake();
  socket.close(4003, 'forbidden');
  await stopped;
  expect(client.getSnapshot()).toMatchObject({ error: 'forbidden', lastCloseCode: 4003 });
});
