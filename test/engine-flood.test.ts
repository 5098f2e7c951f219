/**
 * An engine that streams faster than its client reads: the fake engine (on a unix socket)
 * sends 100k `item/agentMessage/delta` notifications to a client that never reads. The gateway
 * stops reading that client's upstream once the client's outbound buffer is over the bound,
 * so nothing queues without bound (the engine is held back, the process's memory stays flat);
 * another client is answered all the while; and the flooded client is closed 1008
 * `slow consumer` once it has not drained within the stall window.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { SLOW_CONSUMER_STALL_MS } from '../src/rpc/websocket-transport.js'
import { connect, type RpcClient } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FakeEngine } from './helpers/fake-engine.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

const DELTAS = 100_000
const MAX_OUTBOUND = 1024 * 1024
const MB = 1024 * 1024
/** Generous: the bound is 1 MB; an unbounded queue of 100k deltas would be tens of MB and more. */
const RSS_GROWTH_LIMIT = 100 * MB

const DELTA = JSON.stringify({
  method: 'item/agentMessage/delta',
  params: { threadId: 'thr_flood', turnId: 'turn_flood', itemId: 'msg_flood', delta: 'The quick brown fox jumps over the lazy dog. '.repeat(3) },
})

// A full GC on demand, to see that a closed connection's queue is gone, not only bounded.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
}

function tcpSocket(client: RpcClient): Socket {
  return (client.ws as unknown as { _socket: Socket })._socket
}

async function open(t: Test, url: string, name: string): Promise<RpcClient> {
  const client = await connect(url)
  t.teardown(() => client.ws.terminate())
  await client.initialize(name, '1.0.0')
  return client
}

t.test('an engine flooding a client that never reads: the upstream is held back, others are served, the client is closed 1008', async (t) => {
  const clock = new ManualClock()
  const engine = await FakeEngine.start()
  engine.on('thread/loaded/list', () => ({ result: { data: [], nextCursor: null } }))
  // The engine keepalive's 10 s ping gets a clock of its own: the stall timer (also 10 s) is
  // found on this one by its delay.
  const server = await startServer({
    argv: ['--max-outbound-buffer', String(MAX_OUTBOUND)],
    timers: clock,
    engine: { runner: new AttachedEngine(engine.socketPath), keepAlive: { timers: new ManualClock() } },
  })
  t.teardown(async () => {
    await server.close()
    await engine.close()
  })

  const flooded = await open(t, server.wsUrl, 'flooded')
  // The gateway's side of the flooded socket, and through it everything queued for the client.
  const floodedQueue = new WeakRef([...server.app.websocketServer.clients][0]!)
  const other = await open(t, server.wsUrl, 'other')
  const floodedUpstream = await engine.connectionOf('flooded')

  // The other client keeps doing round trips through the engine for the whole episode.
  let answered = 0
  const otherErrors: unknown[] = []
  let stopOther = false
  const otherLoop = (async () => {
    for (let i = 0; !stopOther; i++) {
      const reply = await other.request('thread/loaded/list', {}, `o-${i}`)
      if ('result' in reply) answered++
      else otherErrors.push(reply)
    }
  })()
  await until(() => answered >= 5, 'the other client to be answered before the flood')

  t.notOk(clock.pendingDelays().includes(SLOW_CONSUMER_STALL_MS), 'no stall timer before the flood')
  const rssBefore = process.memoryUsage().rss
  tcpSocket(flooded).pause()
  const flood = floodedUpstream.flood(DELTA, DELTAS)

  // The gateway has stopped reading the flooded upstream once the stall timer is armed.
  await until(() => clock.pendingDelays().includes(SLOW_CONSUMER_STALL_MS), 'the flooded upstream to be held back', 30_000)
  const atStop = answered
  await until(() => answered >= atStop + 20, 'the other client to be answered while the flood is held back', 30_000)
  const rssHeld = process.memoryUsage().rss
  const growthMb = (rssHeld - rssBefore) / MB
  t.comment(`process RSS: ${(rssBefore / MB).toFixed(1)} MB before the flood, ${(rssHeld / MB).toFixed(1)} MB while it is held back (+${growthMb.toFixed(1)} MB)`)
  t.ok(rssHeld - rssBefore < RSS_GROWTH_LIMIT, `RSS growth ${growthMb.toFixed(1)} MB < ${RSS_GROWTH_LIMIT / MB} MB`)
  t.notOk(server.logs.lines.some((l) => l.msg === 'closing slow consumer'), 'not closed before the stall window ends')
  t.equal(flooded.ws.readyState, flooded.ws.OPEN, 'the flooded client is still connected while held back')

  clock.advance(SLOW_CONSUMER_STALL_MS)
  const warn = await withTimeout(
    (async () => {
      await until(() => server.logs.lines.some((l) => l.msg === 'closing slow consumer'), 'the slow-consumer WARN')
      return server.logs.lines.find((l) => l.msg === 'closing slow consumer')
    })(),
    10_000,
    'the slow-consumer decision',
  )
  t.equal(warn?.level, 40, 'closing slow consumer, logged at WARN')
  t.ok(typeof warn?.bufferedBytes === 'number' && warn.bufferedBytes > MAX_OUTBOUND, 'with the buffered byte count over the bound')

  // Reading again, the client gets what was buffered, then the close frame.
  tcpSocket(flooded).resume()
  t.same(await withTimeout(flooded.closed, 30_000, 'the flooded client close'), { code: 1008, reason: 'slow consumer' }, 'closed 1008 slow consumer')
  const sent = await withTimeout(flood, 30_000, 'the flood to end with its upstream')
  t.ok(sent < DELTAS, `the engine was held back: ${sent} of ${DELTAS} deltas left it before its upstream closed`)
  await floodedUpstream.closed()

  const atClose = answered
  await until(() => answered >= atClose + 5, 'the other client to be answered after the close')
  stopOther = true
  await withTimeout(otherLoop, 10_000, 'the other client loop')
  t.same(otherErrors, [], 'the other client never got an error')
  t.equal(other.ws.readyState, other.ws.OPEN, 'the other client is still connected')
  await until(() => server.app.sessions.size === 1, 'the flooded session to leave the registry')
  await collectGarbage()
  t.equal(floodedQueue.deref(), undefined, 'once closed, the flooded socket and all it had queued were freed')
})
