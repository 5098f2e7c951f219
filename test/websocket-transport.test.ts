/**
 * The local WebSocket side of a session, on real sockets: a client that does not read is
 * closed 1008 and, if it will not finish that close, destroyed after the grace delay; an app
 * closed without a drain still closes its sockets with 1001.
 */
import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo, Socket } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { createLogger } from '../src/log/logger.js'
import { boundedTransport, SLOW_CONSUMER_GRACE_MS } from '../src/rpc/websocket-transport.js'
import { connect } from './helpers/client.js'
import { LogCapture, startServer } from './helpers/server.js'

type Test = import('tap').Test

const MAX_BYTES = 256 * 1024
const CHUNK = 'x'.repeat(128 * 1024)

/** Holds scheduled callbacks until the test runs them. */
class HeldTimers {
  readonly held: { fn: () => void; ms: number }[] = []
  setTimeout(fn: () => void, ms: number): unknown {
    this.held.push({ fn, ms })
    return this.held.length
  }
}

/** A loopback server and a client that never reads; resolves with the server's side of the socket. */
async function stalledPair(t: Test): Promise<WebSocket> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())))
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`)
  t.teardown(() => client.terminate())
  await once(client, 'open')
  ;(client as unknown as { _socket: Socket })._socket.pause()
  const [serverSide] = await accepted
  return serverSide
}

t.test('a client that does not read is closed 1008, then destroyed once the grace delay ends', async (t) => {
  const socket = await stalledPair(t)
  const logs = new LogCapture()
  const timers = new HeldTimers()
  const transport = boundedTransport(socket, MAX_BYTES, createLogger('debug', logs), timers)

  // Loopback takes megabytes before the socket buffers anything; keep offering output until it does.
  for (let i = 0; i < 2000 && socket.readyState === socket.OPEN; i++) {
    transport.send(CHUNK)
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  t.equal(socket.readyState, socket.CLOSING, 'the server began closing the socket')
  t.ok(logs.lines.some((l) => l.msg === 'closing slow consumer' && l.level === 40), 'logged at WARN')

  const buffered = socket.bufferedAmount
  transport.send(CHUNK)
  t.equal(socket.bufferedAmount, buffered, 'nothing more is sent once closing')

  t.same(timers.held.map((h) => h.ms), [SLOW_CONSUMER_GRACE_MS], 'one grace timer')
  const closed = once(socket, 'close') as Promise<[number]>
  timers.held[0]?.fn()
  const [code] = await closed
  t.equal(code, 1006, 'the socket was destroyed without finishing the close handshake')
})

t.test('closing an app without a drain closes its sockets with 1001', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('undrained', '1')
  await server.close()
  t.same(await client.closed, { code: 1001, reason: 'server shutting down' })
  t.equal(server.app.sessions.size, 0, 'the session left the registry')
})
