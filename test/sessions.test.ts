/**
 * What sessions share: the one session factory (ids per app, the dispatcher handed over once),
 * the registry's "result before its notifications" broadcast, and what `/readyz` reports.
 */
import t from 'tap'
import { fullPrincipal } from '../src/auth/principal.js'
import { createLogger } from '../src/log/logger.js'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { Lifecycle, readiness } from '../src/rpc/lifecycle.js'
import { defineMethod } from '../src/rpc/method.js'
import { SessionRegistry } from '../src/rpc/registry.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { SessionFactory } from '../src/rpc/session-factory.js'
import type { SessionTransport } from '../src/rpc/session.js'
import { systemClock } from '../src/clock.js'
import { connect } from './helpers/client.js'
import { LogCapture, startServer } from './helpers/server.js'

type Json = Record<string, unknown>

/** A transport that records what the session sends, in order. */
class RecordingTransport implements SessionTransport {
  readonly sent: Json[] = []
  send(text: string): void {
    this.sent.push(JSON.parse(text) as Json)
  }
  close(): void {}
}

const log = createLogger('debug', new LogCapture())

function factory(registry = new SessionRegistry()): SessionFactory {
  const settings = { inFlight: new InFlightLimit(100), serverRequestIds: new RequestIdAllocator(), clock: systemClock, maxInFlightPerConnection: 128, ratePerSecond: 0, burst: 1, lifecycle: { draining: false } }
  return new SessionFactory(settings, registry)
}

/** `test/act`, whose handler broadcasts `test/deferred` twice (after its result) and `test/now` once (at once). */
function dispatcher(registry: SessionRegistry): Dispatcher<null> {
  return new Dispatcher<null>(
    [
      defineMethod<null, null>({
        name: 'test/act',
        scope: 'session',
        params: null,
        handler() {
          registry.broadcastAfterResults('test/deferred', { n: 1 })
          registry.broadcastAfterResults('test/deferred', { n: 2 })
          registry.broadcast('test/now', {})
          return { acted: true }
        },
      }),
    ],
    null,
  )
}

t.test('session ids count per factory and per origin: c1, c2 for local sockets, r1 for remote clients', async (t) => {
  const a = factory()
  const b = factory()
  t.same([a.nextId('local'), a.nextId('local'), a.nextId('remote'), a.nextId('local')], ['c1', 'c2', 'r1', 'c3'])
  t.same([b.nextId('remote'), b.nextId('local')], ['r1', 'c1'], 'another app counts on its own')
})

t.test('the factory opens sessions only once it has its dispatcher, which it takes once', async (t) => {
  const registry = new SessionRegistry()
  const sessions = factory(registry)
  t.throws(() => sessions.open('c1', fullPrincipal('queryToken'), new RecordingTransport(), log), /before the dispatcher was built/)
  t.equal(registry.size, 0, 'nothing was registered')

  const d = dispatcher(registry)
  sessions.useDispatcher(d)
  t.throws(() => sessions.useDispatcher(d), /already has its dispatcher/)

  const session = sessions.open('c1', fullPrincipal('queryToken'), new RecordingTransport(), log)
  t.equal(session.id, 'c1')
  t.equal(registry.size, 1, 'an opened session is in the registry')
  sessions.ended(session)
  t.equal(registry.size, 0, 'an ended one is not')
})

t.test('a request gets its result before the notifications it caused; those keep their order', async (t) => {
  const registry = new SessionRegistry()
  const sessions = factory(registry)
  sessions.useDispatcher(dispatcher(registry))
  const requester = new RecordingTransport()
  const bystander = new RecordingTransport()
  const a = sessions.open('c1', fullPrincipal('queryToken'), requester, log)
  const b = sessions.open('c2', fullPrincipal('queryToken'), bystander, log)
  for (const s of [a, b]) s.markInitialized({ name: 'unit', title: null, version: '1' }, [])

  a.handleText(JSON.stringify({ id: 1, method: 'test/act' }))
  await a.whenIdle()
  await new Promise<void>((resolve) => setImmediate(resolve))

  t.same(
    requester.sent.map((m) => m.method ?? `result ${String(m.id)}`),
    ['test/now', 'result 1', 'test/deferred', 'test/deferred'],
    'a plain broadcast would overtake the result; deferred ones follow it',
  )
  t.same(
    requester.sent.filter((m) => m.method === 'test/deferred').map((m) => m.params),
    [{ n: 1 }, { n: 2 }],
    'in the order they were made',
  )
  t.same(
    bystander.sent.map((m) => m.method),
    ['test/now', 'test/deferred', 'test/deferred'],
    'every other session gets them too',
  )
})

t.test('readiness: draining outranks overloaded', async (t) => {
  const lifecycle = new Lifecycle()
  const inFlight = new InFlightLimit(1)
  t.equal(readiness(lifecycle, inFlight), 'ready')
  t.ok(inFlight.tryAcquire())
  t.equal(readiness(lifecycle, inFlight), 'overloaded', 'the in-flight bound is full')
  lifecycle.beginDrain()
  t.equal(readiness(lifecycle, inFlight), 'draining', 'draining while saturated is draining')
  inFlight.release()
  t.equal(readiness(lifecycle, inFlight), 'draining')
})

t.test('two apps in one process number their connections each from c1', async (t) => {
  const servers = [await startServer(), await startServer()]
  for (const server of servers) {
    t.teardown(() => server.close())
    const client = await connect(server.wsUrl)
    t.teardown(() => client.ws.terminate())
    await client.initialize('ids', '1')
  }
  t.same(
    servers.map((s) => s.logs.authEvents().map((l) => l.connectionId)),
    [['c1'], ['c1']],
    'the first connection of each app is c1',
  )
})
