/**
 * Outbound backpressure and inbound size: a client that does not read is closed with 1008 `slow
 * consumer` once its outbound buffer passes the bound, without stalling anyone else; a frame over
 * `maxPayload` closes with 1009.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { defineMethod } from '../src/rpc/method.js'
import type { AppServices } from '../src/services.js'
import { connect, type RpcClient } from './helpers/client.js'
import { startServer, type TestServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

const WARN = 40
const BIG_RESULT_CHARS = 128 * 1024

/** A method whose result is large: each reply is ~128 KiB of output for the caller. */
const big = defineMethod<AppServices, null>({
  name: 'test/big',
  scope: 'session',
  params: null,
  handler: () => ({ data: 'b'.repeat(BIG_RESULT_CHARS) }),
})

/** A reply well under the bound (32 KiB). */
const medium = defineMethod<AppServices, null>({
  name: 'test/medium',
  scope: 'session',
  params: null,
  handler: () => ({ data: 'm'.repeat(32 * 1024) }),
})

const echo = defineMethod<AppServices, null>({
  name: 'test/echo',
  scope: 'session',
  params: null,
  handler: () => ({ ok: true }),
})

async function open(t: Test, server: TestServer): Promise<RpcClient> {
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  return client
}

function tcpSocket(client: RpcClient): Socket {
  return (client.ws as unknown as { _socket: Socket })._socket
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN
}

t.test('a client that does not read is closed (1008 slow consumer); another client is not stalled', async (t) => {
  const server = await startServer({ argv: ['--max-outbound-buffer', '65536'], extraMethods: [big, echo] })
  t.teardown(() => server.close())
  t.equal(server.config.limits.maxOutboundBufferBytes, 65536)

  const active = await open(t, server)
  const stalled = await open(t, server)
  await active.initialize('active', '1.0.0')
  await stalled.initialize('stalled', '1.0.0')
  t.equal(server.app.sessions.size, 2)

  const slowConsumerLogged = (): boolean => server.logs.lines.some((l) => l.level === WARN && l.msg === 'closing slow consumer')

  // The active client: sequential round trips for the whole episode, each timed.
  const latencies: number[] = []
  const activeErrors: unknown[] = []
  let stopActive = false
  const activeLoop = (async () => {
    let i = 0
    while (!stopActive || latencies.length < 50) {
      const started = performance.now()
      const reply = await active.request('test/echo', undefined, `a-${i++}`)
      latencies.push(performance.now() - started)
      if (!('result' in reply)) activeErrors.push(reply)
      if (latencies.length > 5000) break
    }
  })()

  // The stalled client stops reading from TCP and keeps asking for large replies. Each batch is
  // paced by a round trip on the active connection: the server has had its turn at the sockets.
  tcpSocket(stalled).pause()
  let sent = 0
  let paced = 0
  const MAX_REQUESTS = 2000 // ~256 MB: far more than any kernel buffer, so the bound must trip.
  while (!slowConsumerLogged() && sent < MAX_REQUESTS) {
    for (let i = 0; i < 10; i++) void stalled.request('test/big', undefined, `b-${sent++}`)
    const pace = await active.request('test/echo', undefined, `pace-${paced++}`)
    if (!('result' in pace)) activeErrors.push(pace)
  }
  t.ok(slowConsumerLogged(), `server logged WARN "closing slow consumer" (after ${sent} large requests)`)
  const warn = server.logs.lines.find((l) => l.msg === 'closing slow consumer')
  t.ok(typeof warn?.bufferedBytes === 'number' && warn.bufferedBytes > 65536, 'with the buffered byte count over the bound')
  t.type(warn?.connectionId, 'string', 'naming the connection')

  // Let the active client finish some more round trips after the close decision, then stop it.
  const atDecision = latencies.length
  await until(() => latencies.length >= atDecision + 5, 'five more active round trips after the close decision', 10_000)
  stopActive = true
  await withTimeout(activeLoop, 10_000, 'active client round trips')

  // Resume reading: the queued replies drain, then the close frame arrives.
  tcpSocket(stalled).resume()
  const closed = await withTimeout(stalled.closed, 10_000, 'stalled client close')
  t.same(closed, { code: 1008, reason: 'slow consumer' }, 'closed with 1008 "slow consumer"')
  await until(() => server.app.sessions.size === 1, 'the stalled session to leave the registry')
  t.equal(server.app.sessions.size, 1, 'the stalled session was removed from the registry')

  t.same(activeErrors, [], 'the active client never got an error')
  const sorted = [...latencies].sort((a, b) => a - b)
  const p99 = percentile(sorted, 99)
  const max = sorted[sorted.length - 1] ?? NaN
  t.ok(latencies.length >= 50, `${latencies.length} round trips`)
  t.ok(p99 < 500, `p99 round trip ${p99.toFixed(1)} ms < 500 ms`)
  t.ok(max < 1000, `max round trip ${max.toFixed(1)} ms < 1000 ms`)
  t.equal(active.ws.readyState, active.ws.OPEN, 'the active client is still connected')
  const after = await active.request('test/echo', undefined, 'after')
  t.same(after, { id: 'after', result: { ok: true } }, 'and still served')
})

t.test('a client that keeps reading is never closed for a large volume of output', async (t) => {
  const server = await startServer({ argv: ['--max-outbound-buffer', '65536'], extraMethods: [medium] })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize('reader', '1.0.0')
  // 100 replies of 32 KiB (~3 MB, 50x the bound), each read before the next is asked for.
  let bad = 0
  for (let i = 0; i < 100; i++) {
    const reply = await client.request('test/medium', undefined, i)
    if (!('result' in reply)) bad++
  }
  t.equal(bad, 0, 'every reply was a result')
  t.equal(client.ws.readyState, client.ws.OPEN, 'still open after ~3 MB read in step')
  t.notOk(server.logs.lines.some((l) => l.msg === 'closing slow consumer'), 'no slow-consumer WARN')
})

t.test('--max-payload 1024: a 2000-byte frame closes with 1009', async (t) => {
  const server = await startServer({ argv: ['--max-payload', '1024'] })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize('payload', '1.0.0')
  client.sendRaw(JSON.stringify({ id: 2, method: 'x', params: { pad: 'p'.repeat(2000) } }))
  const closed = await withTimeout(client.closed, 5000, 'close after an oversized frame')
  t.equal(closed.code, 1009, 'closed with 1009')
  await until(() => server.app.sessions.size === 0, 'the session to leave the registry')
  const other = await open(t, server)
  t.type((await other.initialize('next', '1.0.0')).userAgent, 'string', 'the server still serves new clients')
})
