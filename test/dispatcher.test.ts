/**
 * The dispatcher: framing, error codes, the handshake, method registry, order of checks, params
 * validation, scope checks, handler errors, and concurrency of requests on one connection.
 */
import t from 'tap'
import { Type } from '../src/util/typebox.js'
import type { AppServices } from '../src/services.js'
import { degradedPrincipal, fullPrincipal, type Principal } from '../src/auth/principal.js'
import { createLogger } from '../src/log/logger.js'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { RpcError } from '../src/rpc/errors.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { defineMethod, type MethodDefinition } from '../src/rpc/method.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { Session, type SessionDeps, type SessionTransport } from '../src/rpc/session.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture, startServer } from './helpers/server.js'
import { gate } from './helpers/wait.js'

type Test = import('tap').Test
type Json = Record<string, unknown>
type Services = { readonly tag: string }

const CLIENT_INFO = { name: 'dispatcher-test', title: null, version: '1.0.0' }

/** A transport that records what the session sends. */
class RecordingTransport implements SessionTransport {
  readonly sent: string[] = []
  closedWith: { code: number; reason: string } | null = null
  send(text: string): void {
    this.sent.push(text)
  }
  close(code: number, reason: string): void {
    this.closedWith = { code, reason }
  }
}

const Params = Type.Object({ name: Type.String(), count: Type.Integer() })

/** Methods for the unit tests; `seen` records what each handler received. */
function unitMethods(seen: { params: unknown[] }): MethodDefinition<Services, any>[] {
  return [
    defineMethod<Services, null>({
      name: 'initialize',
      scope: 'session',
      params: null,
      beforeInitialize: true,
      handler(_p, { session }) {
        session.markInitialized(CLIENT_INFO, [])
        return { ok: true }
      },
    }),
    defineMethod<Services, typeof Params>({
      name: 'test/echo',
      scope: 'session',
      params: Params,
      handler(params, { services }) {
        seen.params.push(params)
        return { name: params.name, count: params.count, tag: services.tag }
      },
    }),
    defineMethod<Services, null>({
      name: 'test/noParams',
      scope: 'session',
      params: null,
      handler(params) {
        seen.params.push(params)
        return { ok: true }
      },
    }),
    defineMethod<Services, typeof Params>({
      name: 'test/write',
      scope: 'account:write',
      params: Params,
      handler() {
        return { wrote: true }
      },
    }),
    defineMethod<Services, null>({
      name: 'test/undefined',
      scope: 'session',
      params: null,
      handler() {
        return undefined
      },
    }),
    defineMethod<Services, null>({
      name: 'test/rpcError',
      scope: 'session',
      params: null,
      handler() {
        throw new RpcError(-32602, 'bad thing the client asked for')
      },
    }),
    defineMethod<Services, null>({
      name: 'test/rpcErrorData',
      scope: 'session',
      params: null,
      async handler() {
        throw new RpcError(-32600, 'with data', { detail: 1 })
      },
    }),
  ]
}

interface Unit {
  dispatcher: Dispatcher<Services>
  seen: { params: unknown[] }
  logs: LogCapture
  session(principal?: Principal): Session
  initialized(principal?: Principal): Promise<Session>
}

function unit(extra: MethodDefinition<Services, any>[] = []): Unit {
  const seen = { params: [] as unknown[] }
  const dispatcher = new Dispatcher<Services>([...unitMethods(seen), ...extra], { tag: 'services-tag' })
  const logs = new LogCapture()
  const logger = createLogger('debug', logs)
  const deps: SessionDeps = {
    dispatcher,
    inFlight: new InFlightLimit(100),
    serverRequestIds: new RequestIdAllocator(),
    clock: new ManualClock(),
    maxInFlightPerConnection: 128,
    ratePerSecond: 0,
    burst: 1,
    lifecycle: { draining: false },
  }
  let n = 0
  const session = (principal: Principal = fullPrincipal('queryToken')): Session => {
    const id = `u${++n}`
    return new Session(id, principal, new RecordingTransport(), logger.child({ connectionId: id }), deps)
  }
  return {
    dispatcher,
    seen,
    logs,
    session,
    async initialized(principal) {
      const s = session(principal)
      const out = await dispatcher.dispatch(s, 'initialize', undefined)
      if (!('result' in out)) throw new Error('unit initialize failed')
      return s
    },
  }
}

const ECHO_OK = { name: 'n', count: 1 }

t.test('registry: duplicate method names throw at construction', async (t) => {
  const a = defineMethod<Services, null>({ name: 'test/dup', scope: 'session', params: null, handler: () => 1 })
  const b = defineMethod<Services, null>({ name: 'test/dup', scope: 'account:read', params: null, handler: () => 2 })
  t.throws(() => new Dispatcher<Services>([a, b], { tag: 'x' }), /duplicate method test\/dup/)
  t.doesNotThrow(() => new Dispatcher<Services>([a], { tag: 'x' }))
  const d = new Dispatcher<Services>([a], { tag: 'x' })
  t.strictSame(
    await d.dispatch(unit().session(), 'test/other', undefined),
    { error: { code: -32600, message: 'Invalid request: unknown variant `test/other`, expected one of `test/dup`' } },
    'the one method is registered once',
  )
})

t.test('unknown method: -32600 naming every registered method, backquoted', async (t) => {
  const u = unit()
  const expected =
    'Invalid request: unknown variant `x`, expected one of `initialize`, `test/echo`, `test/noParams`, `test/write`, `test/undefined`, `test/rpcError`, `test/rpcErrorData`'
  const before = await u.dispatcher.dispatch(u.session(), 'x', {})
  t.strictSame(before, { error: { code: -32600, message: expected } }, 'before initialize: unknown variant, not Not initialized')
  const s = await u.initialized()
  t.strictSame(await u.dispatcher.dispatch(s, 'x', undefined), { error: { code: -32600, message: expected } }, 'after initialize too')
  const weird = await u.dispatcher.dispatch(s, 'thread/start', null)
  t.ok('error' in weird)
  if ('error' in weird) t.match(weird.error.message, /^Invalid request: unknown variant `thread\/start`, expected one of `initialize`, /)
})

t.test('params: validated by the schema, without echoing the values', async (t) => {
  const u = unit()
  const s = await u.initialized()

  const ok = await u.dispatcher.dispatch(s, 'test/echo', { name: 'abc', count: 3, extra: 'ignored' })
  t.strictSame(ok, { result: { name: 'abc', count: 3, tag: 'services-tag' } }, 'valid params reach the handler, with services')

  const secret = canary('bad-param')
  const cases: [string, unknown][] = [
    ['count is a string holding the canary', { name: 'abc', count: secret }],
    ['name is a number, canary elsewhere', { name: 1, count: 2, other: secret }],
    ['count missing, canary in name', { name: secret }],
    ['count not an integer', { name: secret, count: 1.5 }],
    ['params is a string (the canary)', secret],
    ['params is an array', [secret]],
  ]
  for (const [label, params] of cases) {
    const out = await u.dispatcher.dispatch(s, 'test/echo', params)
    t.ok('error' in out, `${label}: error`)
    if (!('error' in out)) continue
    t.equal(out.error.code, -32600, `${label}: -32600`)
    t.match(out.error.message, /^Invalid request: params/, `${label}: "Invalid request: params..."`)
    t.notOk(out.error.message.includes(secret), `${label}: the client's value is not echoed`)
    t.notOk('data' in out.error, `${label}: no data member`)
  }
  t.equal(u.seen.params.length, 1, 'the handler ran only for the valid params')

  for (const missing of [undefined, null]) {
    t.strictSame(
      await u.dispatcher.dispatch(s, 'test/echo', missing),
      { error: { code: -32600, message: 'Invalid request: missing field `params`' } },
      `params ${String(missing)}: missing field`,
    )
  }
  t.same(leakedCanaries(u.logs.text()), [], 'bad params are not logged')
})

t.test('methods with params: null ignore whatever params arrive', async (t) => {
  const u = unit()
  const s = await u.initialized()
  const values: unknown[] = [undefined, null, {}, { foo: 'bar' }, 'a string', 42, [1, 2]]
  for (const v of values) {
    t.strictSame(await u.dispatcher.dispatch(s, 'test/noParams', v), { result: { ok: true } }, `params ${JSON.stringify(v)}`)
  }
  t.strictSame(u.seen.params, values.map(() => undefined), 'the handler always receives undefined')
})

t.test('order of checks: params, then initialized, then scope', async (t) => {
  const u = unit()
  const fresh = u.session(degradedPrincipal())

  const badBeforeInit = await u.dispatcher.dispatch(fresh, 'test/echo', { name: 1 })
  t.ok('error' in badBeforeInit && badBeforeInit.error.code === -32600 && badBeforeInit.error.message.startsWith('Invalid request: params'), 'bad params before Not initialized')
  t.strictSame(
    await u.dispatcher.dispatch(fresh, 'test/echo', undefined),
    { error: { code: -32600, message: 'Invalid request: missing field `params`' } },
    'missing params before Not initialized',
  )
  const badScopeBeforeInit = await u.dispatcher.dispatch(fresh, 'test/write', { name: 1 })
  t.ok('error' in badScopeBeforeInit && badScopeBeforeInit.error.message.startsWith('Invalid request: params'), 'bad params before scope check')

  t.strictSame(await u.dispatcher.dispatch(fresh, 'test/echo', ECHO_OK), { error: { code: -32600, message: 'Not initialized' } }, 'good params, not initialized')
  t.strictSame(
    await u.dispatcher.dispatch(fresh, 'test/write', ECHO_OK),
    { error: { code: -32600, message: 'Not initialized' } },
    'Not initialized before the scope check (degraded principal lacks account:write)',
  )
  t.strictSame(await u.dispatcher.dispatch(fresh, 'test/noParams', { any: 1 }), { error: { code: -32600, message: 'Not initialized' } })

  // `initialize` runs before initialization, but still needs its scope.
  const noSession: Principal = { kind: 'signedBearerToken', subject: null, scopes: new Set(['account:read']) }
  const ns = u.session(noSession)
  t.strictSame(await u.dispatcher.dispatch(ns, 'initialize', undefined), { error: { code: -32600, message: 'method initialize requires scope session' } })
  t.notOk(ns.initialized, 'a refused initialize does not initialize')

  const degraded = await u.initialized(degradedPrincipal())
  t.strictSame(
    await u.dispatcher.dispatch(degraded, 'test/write', ECHO_OK),
    { error: { code: -32600, message: 'method test/write requires scope account:write' } },
    'scope denial: exact message',
  )
  const badAfterInit = await u.dispatcher.dispatch(degraded, 'test/write', { name: 'x', count: 'y' })
  t.ok('error' in badAfterInit && badAfterInit.error.message.startsWith('Invalid request: params'), 'bad params before scope check (initialized)')
  t.strictSame(await u.dispatcher.dispatch(degraded, 'test/echo', ECHO_OK), { result: { name: 'n', count: 1, tag: 'services-tag' } }, 'session scope allowed')

  const full = await u.initialized(fullPrincipal('capabilityToken'))
  t.strictSame(await u.dispatcher.dispatch(full, 'test/write', ECHO_OK), { result: { wrote: true } }, 'full principal may write')
})

t.test('handler results and RpcErrors', async (t) => {
  const u = unit()
  const s = await u.initialized()
  t.strictSame(await u.dispatcher.dispatch(s, 'test/undefined', undefined), { result: {} }, 'undefined becomes {}')
  t.strictSame(await u.dispatcher.dispatch(s, 'test/rpcError', undefined), { error: { code: -32602, message: 'bad thing the client asked for' } }, 'RpcError: its code and message, no data')
  t.strictSame(await u.dispatcher.dispatch(s, 'test/rpcErrorData', undefined), { error: { code: -32600, message: 'with data', data: { detail: 1 } } }, 'RpcError with data')
})

t.test('a handler that throws: -32603 internal error, no secret in reply or logs', async (t) => {
  const secret = canary('handler-error')
  const throwing: MethodDefinition<Services, any>[] = [
    defineMethod<Services, null>({
      name: 'test/throwSync',
      scope: 'session',
      params: null,
      handler() {
        throw new Error(`cannot open /home/user/.codex/auth.json: key ${secret}`)
      },
    }),
    defineMethod<Services, null>({
      name: 'test/throwAsync',
      scope: 'session',
      params: null,
      async handler() {
        await Promise.resolve()
        throw new Error(`upstream said ${secret}`)
      },
    }),
  ]
  const u = unit(throwing)
  const s = await u.initialized()
  for (const m of ['test/throwSync', 'test/throwAsync']) {
    const mark = u.logs.lines.length
    const out = await u.dispatcher.dispatch(s, m, undefined)
    t.strictSame(out, { error: { code: -32603, message: 'internal error' } }, `${m}: generic -32603`)
    t.notOk(JSON.stringify(out).includes(secret), `${m}: the canary is not in the reply`)
    const lines = u.logs.lines.slice(mark)
    t.ok(lines.some((l) => l.level === 50), `${m}: the failure is logged at ERROR`)
    t.same(leakedCanaries(u.logs.raw.slice(mark).join('\n')), [], `${m}: the canary is not in the logs`)
  }
})

t.test('a handler that throws a non-Error value: still -32603 internal error', async (t) => {
  const secret = canary('thrown-string')
  const u = unit([
    defineMethod<Services, null>({
      name: 'test/throwString',
      scope: 'session',
      params: null,
      handler() {
        // A handler throwing a non-Error is exactly what this test is about.
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw `raw ${secret}`
      },
    }),
  ])
  const s = await u.initialized()
  let out: unknown
  try {
    out = await u.dispatcher.dispatch(s, 'test/throwString', undefined)
  } catch (err) {
    // Not the error's message: it may quote the thrown value.
    out = { dispatchRejected: (err as Error).name }
  }
  t.strictSame(out, { error: { code: -32603, message: 'internal error' } }, 'dispatch resolves with -32603 (it does not reject)')
  t.same(leakedCanaries(u.logs.text()), [], 'the thrown value is not in the logs')
})

// ---- over real sockets ----

async function open(t: Test, url: string): Promise<RpcClient> {
  const client = await connect(url)
  t.teardown(() => client.ws.terminate())
  return client
}

t.test('a slow handler does not block a fast request on the same connection', async (t) => {
  let release = gate()
  const slowStarted = gate()
  const extraMethods: MethodDefinition<AppServices, any>[] = [
    defineMethod<AppServices, null>({
      name: 'test/slow',
      scope: 'session',
      params: null,
      async handler() {
        slowStarted.open()
        await release.opened
        return { which: 'slow' }
      },
    }),
    defineMethod<AppServices, typeof Params>({
      name: 'test/fast',
      scope: 'session',
      params: Params,
      handler(params) {
        return { which: 'fast', count: params.count }
      },
    }),
  ]
  const server = await startServer({ extraMethods })
  t.teardown(() => {
    release.open()
    return server.close()
  })
  const client = await open(t, server.wsUrl)
  await client.initialize()

  const slow = client.request('test/slow', undefined, 'slow-1')
  await slowStarted.opened
  const fast = await client.request('test/fast', { name: 'x', count: 7 }, 'fast-1')
  t.strictSame(fast, { id: 'fast-1', result: { which: 'fast', count: 7 } }, 'the fast request is answered while the slow one waits')
  const order = client.frames.map((f) => (JSON.parse(f) as Json).id)
  t.notOk(order.includes('slow-1'), 'the slow reply has not been sent yet')

  release.open()
  const slowReply = await slow
  t.strictSame(slowReply, { id: 'slow-1', result: { which: 'slow' } })
  const ids = client.frames.map((f) => (JSON.parse(f) as Json).id)
  t.ok(ids.indexOf('fast-1') < ids.indexOf('slow-1'), 'the fast reply arrived first')

  // Several slow ones in flight at once, each answered independently.
  release = gate()
  const many = [1, 2, 3].map((i) => client.request('test/slow', undefined, `slow-m${i}`))
  const f2 = await client.request('test/fast', { name: 'y', count: 1 }, 'fast-2')
  t.ok('result' in f2, 'fast request answered with three slow ones pending')
  release.open()
  const done = await Promise.all(many)
  t.same(done.map((r) => r.id), ['slow-m1', 'slow-m2', 'slow-m3'])
})

t.test('scopes over real sockets: degraded vs full-token connections and an account:write method', async (t) => {
  let calls = 0
  const extraMethods: MethodDefinition<AppServices, any>[] = [
    defineMethod<AppServices, null>({
      name: 'test/accountWrite',
      scope: 'account:write',
      params: null,
      handler() {
        calls++
        return { done: true }
      },
    }),
  ]
  const server = await startServer({ argv: ['--no-token-check'], extraMethods })
  t.teardown(() => server.close())

  const degraded = await open(t, server.wsBase)
  const early = await degraded.request('test/accountWrite')
  t.strictSame(early.error, { code: -32600, message: 'Not initialized' }, 'Not initialized before the scope check')
  await degraded.initialize()
  const denied = await degraded.request('test/accountWrite', {})
  t.strictSame(denied, { error: { code: -32600, message: 'method test/accountWrite requires scope account:write' }, id: denied.id }, 'degraded: scope denied')
  t.equal(calls, 0, 'the handler never ran for the degraded connection')
  t.ok(degraded.ws.readyState === degraded.ws.OPEN, 'the connection stays open after a denial')

  t.ok(server.token, 'a query token exists')
  const full = await open(t, server.wsUrl)
  await full.initialize()
  const allowed = await full.request('test/accountWrite', {})
  t.strictSame(allowed.result, { done: true }, 'full-token connection may call it')
  t.equal(calls, 1)
})

t.test('over a real socket: a throwing handler answers -32603 and the canary stays out of reply and logs', async (t) => {
  const secret = canary('socket-handler-error')
  const extraMethods: MethodDefinition<AppServices, any>[] = [
    defineMethod<AppServices, null>({
      name: 'test/boom',
      scope: 'session',
      params: null,
      handler() {
        throw new Error(`boom ${secret}`)
      },
    }),
  ]
  const server = await startServer({ extraMethods })
  t.teardown(() => server.close())
  const client = await open(t, server.wsUrl)
  await client.initialize()
  const reply = await client.request('test/boom', undefined, 'b1')
  t.strictSame(reply, { error: { code: -32603, message: 'internal error' }, id: 'b1' })
  t.notOk(client.frames.join('\n').includes(secret), 'not in any frame')
  t.same(leakedCanaries(server.logs.text()), [], 'not in the server logs')
  const after = await client.request('test/boom', undefined, 'b2')
  t.equal((after.error as { code: number }).code, -32603, 'the connection still serves requests')
})
