/**
 * Broadcast notifications: they reach only initialized connections, never for a method that
 * connection opted out of (`capabilities.optOutNotificationMethods`); frames are `{method, params}`
 * (no id, no jsonrpc); closed connections leave the registry.
 */
import t from 'tap'
import { defineMethod } from '../src/rpc/method.js'
import type { AppServices } from '../src/services.js'
import { connect, type RpcClient } from './helpers/client.js'
import { startServer, type TestServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test
type Json = Record<string, unknown>

const echo = defineMethod<AppServices, null>({
  name: 'test/echo',
  scope: 'session',
  params: null,
  handler: () => ({ ok: true }),
})

async function start(t: Test): Promise<TestServer> {
  const server = await startServer({ extraMethods: [echo] })
  t.teardown(() => server.close())
  return server
}

async function open(t: Test, server: TestServer): Promise<RpcClient> {
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  return client
}

async function initialize(client: RpcClient, name: string, capabilities?: unknown): Promise<void> {
  const params = capabilities === undefined ? { clientInfo: { name, title: null, version: '1.0.0' } } : { clientInfo: { name, title: null, version: '1.0.0' }, capabilities }
  const reply = await client.request('initialize', params)
  if (!('result' in reply)) throw new Error(`initialize failed: ${JSON.stringify(reply)}`)
}

let markers = 0
/**
 * A round trip on `client`: broadcasts are written synchronously before this request is even
 * read, and frames arrive in order, so every notification meant for `client` is in by now.
 */
async function settle(client: RpcClient): Promise<void> {
  await client.request('test/echo', undefined, `settle-${markers++}`)
}

/** Notification frames received (raw text), in order. */
function notificationFrames(client: RpcClient): string[] {
  return client.frames.filter((f) => {
    const m = JSON.parse(f) as Json
    return !('id' in m)
  })
}

t.test('broadcast reaches initialized sessions only, honouring opt-outs', async (t) => {
  const server = await start(t)
  const plain = await open(t, server) // initialized, no capabilities
  const optedOut = await open(t, server) // initialized, opts out of `test/tick`
  const nullOptOut = await open(t, server) // initialized, optOutNotificationMethods: null
  const fresh = await open(t, server) // never initialized (yet)
  await initialize(plain, 'plain')
  await initialize(optedOut, 'opted-out', { optOutNotificationMethods: ['test/tick', 'test/other-unused'] })
  await initialize(nullOptOut, 'null-opt-out', { experimentalApi: true, optOutNotificationMethods: null })
  await until(() => server.app.sessions.size === 4, 'four sessions registered')
  t.equal(server.app.sessions.size, 4, 'every open connection is in the registry, initialized or not')

  server.app.sessions.broadcast('test/tick', { n: 1 })
  server.app.sessions.broadcast('test/status', { state: 'busy', detail: null })
  const all = [plain, optedOut, nullOptOut, fresh]
  await Promise.all(all.map(settle))

  const tick = JSON.stringify({ method: 'test/tick', params: { n: 1 } })
  const status = JSON.stringify({ method: 'test/status', params: { state: 'busy', detail: null } })
  t.same(notificationFrames(plain), [tick, status], 'plain client: both notifications, in order')
  t.same(notificationFrames(optedOut), [status], 'opted-out client: only the method it did not opt out of')
  t.same(notificationFrames(nullOptOut), [tick, status], 'null opt-out list: everything')
  t.same(notificationFrames(fresh), [], 'uninitialized client: nothing')

  const parsed = JSON.parse(notificationFrames(plain)[0] ?? '{}') as Json
  t.same(Object.keys(parsed).sort(), ['method', 'params'], 'a notification frame is {method, params}: no id, no jsonrpc')
  t.notOk(all.some((c) => c.frames.some((f) => f.includes('"jsonrpc"'))), 'no frame carries jsonrpc')
  t.same(plain.notifications, [{ method: 'test/tick', params: { n: 1 } }, { method: 'test/status', params: { state: 'busy', detail: null } }])

  // A failed initialize does not make a connection eligible.
  const bad = await fresh.request('initialize', { clientInfo: { name: 'bad\nname', title: null, version: '1' } })
  t.equal((bad.error as { code: number }).code, -32600, 'bad initialize refused')
  server.app.sessions.broadcast('test/tick', { n: 2 })
  await settle(fresh)
  t.same(notificationFrames(fresh), [], 'still nothing after a failed initialize')

  // Initialization is per connection: once `fresh` initializes, it receives broadcasts too.
  await initialize(fresh, 'late', { optOutNotificationMethods: [] })
  server.app.sessions.broadcast('test/tick', { n: 3 })
  await Promise.all(all.map(settle))
  const tick2 = JSON.stringify({ method: 'test/tick', params: { n: 2 } })
  const tick3 = JSON.stringify({ method: 'test/tick', params: { n: 3 } })
  t.same(notificationFrames(fresh), [tick3], 'a late initialize starts the stream (nothing earlier is replayed)')
  t.same(notificationFrames(plain), [tick, status, tick2, tick3], 'plain: every broadcast')
  t.same(notificationFrames(optedOut), [status], 'opted-out: still none of test/tick')
  t.same(notificationFrames(nullOptOut), [tick, status, tick2, tick3])
})

t.test('opt-outs are exact method names', async (t) => {
  const server = await start(t)
  const client = await open(t, server)
  await initialize(client, 'exact', { optOutNotificationMethods: ['account/updated'] })
  server.app.sessions.broadcast('account/updated', { a: 1 })
  server.app.sessions.broadcast('account/updated/extra', { a: 2 })
  server.app.sessions.broadcast('account', { a: 3 })
  server.app.sessions.broadcast('ACCOUNT/UPDATED', { a: 4 })
  await settle(client)
  t.same(
    client.notifications.map((n) => n.method),
    ['account/updated/extra', 'account', 'ACCOUNT/UPDATED'],
    'only the exact name is suppressed (no prefix or case-insensitive match)',
  )
})

t.test('a connection that closes leaves the registry and gets no more broadcasts', async (t) => {
  const server = await start(t)
  const a = await open(t, server)
  const b = await open(t, server)
  const c = await open(t, server)
  await initialize(a, 'a')
  await initialize(b, 'b')
  await until(() => server.app.sessions.size === 3, 'three sessions')
  t.equal(server.app.sessions.size, 3)

  const closed = await b.close()
  t.equal(closed.code, 1005, 'client-initiated close completed')
  await until(() => server.app.sessions.size === 2, 'b to leave the registry')
  t.equal(server.app.sessions.size, 2, 'closed connection removed')

  c.ws.terminate() // an abrupt disconnect, no close frame
  await until(() => server.app.sessions.size === 1, 'c to leave the registry')
  t.equal(server.app.sessions.size, 1, 'abruptly closed connection removed')

  // Broadcasting with closed connections gone throws nothing and reaches the one left.
  server.app.sessions.broadcast('test/tick', { n: 1 })
  await settle(a)
  t.same(a.notifications, [{ method: 'test/tick', params: { n: 1 } }])
  t.equal(b.notifications.length, 0, 'the closed client got nothing')

  await a.close()
  await until(() => server.app.sessions.size === 0, 'a to leave the registry')
  t.equal(server.app.sessions.size, 0, 'registry empty')
  t.doesNotThrow(() => server.app.sessions.broadcast('test/tick', { n: 2 }), 'broadcast to nobody is a no-op')
})
