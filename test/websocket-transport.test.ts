/**
 * The local WebSocket side of a session, on real sockets: a client that does not read is
 * closed 1008 and, if it will not finish that close, destroyed after the grace delay; a paced
 * source is stopped at the bound and resumed once a reading client drained, and a client that
 * does not drain within the stall window is closed 1008; an app closed without a drain still
 * closes its sockets with 1001.
 */
import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo, Socket } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { createLogger } from '../src/log/logger.js'
import { FRAME_OVERHEAD_BYTES } from '../src/rpc/outbound-queue.js'
import { boundedTransport, CLOSE_HANDSHAKE_GRACE_MS, SLOW_CONSUMER_STALL_MS, STOPPED_CEILING } from '../src/rpc/websocket-transport.js'
import { connect } from './helpers/client.js'
import { LogCapture, startServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

const MAX_BYTES = 256 * 1024
const CHUNK = 'x'.repeat(128 * 1024)

/** Holds scheduled callbacks until the test runs them. */
class HeldTimers {
  readonly held: { fn: () => void; ms: number; cleared: boolean }[] = []
  setTimeout(fn: () => void, ms: number): unknown {
    this.held.push({ fn, ms, cleared: false })
    return this.held.length
  }
  clearTimeout(handle: unknown): void {
    const timer = this.held[(handle as number) - 1]
    if (timer !== undefined) timer.cleared = true
  }
}

/** A loopback server and a client; resolves with the client and the server's side of the socket. */
async function loopbackPair(t: Test): Promise<{ client: WebSocket; serverSide: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())))
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`)
  t.teardown(() => client.terminate())
  await once(client, 'open')
  const [serverSide] = await accepted
  return { client, serverSide }
}

/** A loopback pair whose client never reads; resolves with the server's side of the socket. */
async function stalledPair(t: Test): Promise<WebSocket> {
  const { client, serverSide } = await loopbackPair(t)
  ;(client as unknown as { _socket: Socket })._socket.pause()
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

  t.same(timers.held.map((h) => h.ms), [CLOSE_HANDSHAKE_GRACE_MS], 'one grace timer')
  const closed = once(socket, 'close') as Promise<[number]>
  timers.held[0]?.fn()
  const [code] = await closed
  t.equal(code, 1006, 'the socket was destroyed without finishing the close handshake')
})

t.test('a paced source is stopped at the bound; a client that does not drain is closed 1008 after the stall window', async (t) => {
  const socket = await stalledPair(t)
  const logs = new LogCapture()
  const timers = new HeldTimers()
  const transport = boundedTransport(socket, MAX_BYTES, createLogger('debug', logs), timers)
  let resumed = 0
  const resume = (): void => {
    resumed++
  }

  let paced = 0
  while (transport.sendPaced!(CHUNK, resume)) {
    paced++
    await new Promise<void>((resolve) => setImmediate(resolve))
    if (paced > 2000) break
  }
  t.ok(paced <= 2000, `the source was stopped (after ${paced} frames)`)
  const stoppedAt = socket.bufferedAmount
  t.ok(stoppedAt > MAX_BYTES - CHUNK.length && stoppedAt <= MAX_BYTES + CHUNK.length, `stopped with ${stoppedAt} bytes buffered: the bound and one frame at most`)
  t.equal(socket.readyState, socket.OPEN, 'stopping the source does not close the client')
  t.equal(transport.sendPaced!(CHUNK, resume), false, 'a frame the source had already read still goes out, and the source stays stopped')
  transport.send('{"id":1,"result":{}}')
  t.equal(socket.readyState, socket.OPEN, "the gateway's own reply while the source is stopped: sent, the stall timer decides, not the bound")
  t.same(timers.held.map((h) => h.ms), [SLOW_CONSUMER_STALL_MS], 'one stall timer')
  t.notOk(logs.lines.some((l) => l.msg === 'closing slow consumer'), 'no slow-consumer WARN yet')

  timers.held[0]?.fn()
  t.equal(socket.readyState, socket.CLOSING, 'the client that did not drain is being closed')
  const warn = logs.lines.find((l) => l.msg === 'closing slow consumer')
  t.equal(warn?.level, 40, 'logged at WARN')
  t.ok(typeof warn?.bufferedBytes === 'number' && warn.bufferedBytes > MAX_BYTES, 'with the buffered byte count over the bound')
  t.same(timers.held.map((h) => h.ms), [SLOW_CONSUMER_STALL_MS, CLOSE_HANDSHAKE_GRACE_MS], 'then the grace timer, as for any slow consumer')
  t.equal(resumed, 0, 'the source is never resumed onto a closing client')
})

t.test('small frames are charged what they cost: a paced source is stopped before their text alone reaches the bound', async (t) => {
  const socket = await stalledPair(t)
  const transport = boundedTransport(socket, MAX_BYTES, createLogger('debug', new LogCapture()), new HeldTimers())
  const delta = JSON.stringify({ method: 'item/agentMessage/delta', params: { delta: 'd'.repeat(200) } })
  let paced = 0
  while (transport.sendPaced!(delta, () => {})) {
    paced++
    if (paced % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve))
    if (paced > 1_000_000) break
  }
  t.ok(paced <= 1_000_000, `the source was stopped (after ${paced} frames)`)
  // Every frame still in ws's buffer (its text and a 4-byte header: a frame of 126-65535 bytes)
  // is also charged its overhead, so the buffer can fill only this share of the bound, plus
  // the frame that crossed it.
  const onWire = delta.length + 4
  const textShare = ((MAX_BYTES + delta.length) * onWire) / (onWire + FRAME_OVERHEAD_BYTES) + onWire
  t.ok(socket.bufferedAmount <= textShare, `stopped with ${socket.bufferedAmount} bytes buffered, at most ${Math.round(textShare)}`)
})

t.test("while a paced source is stopped, the gateway's own frames may pile up only to the ceiling", async (t) => {
  const socket = await stalledPair(t)
  const logs = new LogCapture()
  const transport = boundedTransport(socket, MAX_BYTES, createLogger('debug', logs), new HeldTimers())
  let paced = 0
  while (transport.sendPaced!(CHUNK, () => {}) && paced < 2000) {
    paced++
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  t.ok(paced < 2000, 'the source was stopped')
  let own = 0
  while (socket.readyState === socket.OPEN && own < 100) {
    transport.send(CHUNK)
    own++
  }
  t.equal(socket.readyState, socket.CLOSING, `the client was closed after ${own} of the gateway's own frames`)
  const warn = logs.lines.find((l) => l.msg === 'closing slow consumer')
  t.ok(typeof warn?.bufferedBytes === 'number' && warn.bufferedBytes > STOPPED_CEILING * MAX_BYTES, 'over the ceiling, logged at WARN')
  t.ok(socket.bufferedAmount <= STOPPED_CEILING * MAX_BYTES + 2 * CHUNK.length, `never much more than the ceiling held (${socket.bufferedAmount} bytes)`)
})

t.test('a paced source stopped at the bound is resumed once a reading client has drained', async (t) => {
  const { client, serverSide: socket } = await loopbackPair(t)
  let received = 0
  client.on('message', () => received++)
  const logs = new LogCapture()
  const timers = new HeldTimers()
  const transport = boundedTransport(socket, MAX_BYTES, createLogger('debug', logs), timers)

  // Offered in one go (no I/O in between), the frames fill the kernel's buffers, then ours up to the bound.
  let sent = 1
  const resumed = new Promise<void>((resolve) => {
    while (transport.sendPaced!(CHUNK, resolve) && sent < 2000) sent++
  })
  t.ok(sent < 2000, `stopped after ${sent} frames`)
  t.ok(socket.bufferedAmount > MAX_BYTES - CHUNK.length && socket.bufferedAmount <= MAX_BYTES + CHUNK.length, 'with the bound and one frame at most buffered')
  await withTimeout(resumed, 10_000, 'the source to be resumed')
  t.equal(socket.bufferedAmount, 0, 'resumed with the buffer drained')
  t.equal(timers.held[0]?.cleared, true, 'the stall timer was cleared')
  t.equal(socket.readyState, socket.OPEN, 'the client is still connected')
  t.notOk(logs.lines.some((l) => l.msg === 'closing slow consumer'), 'no slow-consumer WARN')
  t.ok(transport.sendPaced!('after', () => {}), 'the source may send again')
  await until(() => received === sent + 1, 'the client to read every frame')
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
