/**
 * Server → client requests: ids are integers from 0 per server, the client's
 * `{id, result}` / `{id, error}` settles the request, a timeout fails it, a late reply is logged
 * at WARN and dropped, a closed connection aborts it.
 */
import t from 'tap'
import { Type } from '../src/util/typebox.js'
import type { AppServices } from '../src/services.js'
import { fullPrincipal } from '../src/auth/principal.js'
import { createLogger } from '../src/log/logger.js'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { RpcError } from '../src/rpc/errors.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { defineMethod, type MethodDefinition } from '../src/rpc/method.js'
import {
  RequestIdAllocator,
  ServerRequestAborted,
  ServerRequestError,
  ServerRequests,
  ServerRequestTimeout,
} from '../src/rpc/server-requests.js'
import { Session, type SessionDeps, type SessionTransport } from '../src/rpc/session.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture, startServer, type LogLine, type TestServer } from './helpers/server.js'

type Test = import('tap').Test
type Json = Record<string, unknown>

const WARN = 40

/** Observes a promise without letting its rejection go unhandled. */
function track<T>(p: Promise<T>): { state: 'pending' | 'resolved' | 'rejected'; value?: T; error?: Error } {
  const s: { state: 'pending' | 'resolved' | 'rejected'; value?: T; error?: Error } = { state: 'pending' }
  p.then(
    (v) => {
      s.state = 'resolved'
      s.value = v
    },
    (e: Error) => {
      s.state = 'rejected'
      s.error = e
    },
  )
  return s
}

const flush = () => new Promise<void>((r) => setImmediate(r))

function unitLog(): { logs: LogCapture; log: ReturnType<typeof createLogger> } {
  const logs = new LogCapture()
  return { logs, log: createLogger('debug', logs) }
}

// ---- units: ServerRequests ----

t.test('ids are integers from 0, increasing across connections sharing one allocator', async (t) => {
  const ids = new RequestIdAllocator()
  const clock = new ManualClock()
  const { log } = unitLog()
  const a = new ServerRequests(ids, clock, log)
  const b = new ServerRequests(ids, clock, log)
  const sent: [string, number][] = []
  const ps = [
    a.request('m', 1000, (id) => sent.push(['a', id])),
    b.request('m', 1000, (id) => sent.push(['b', id])),
    a.request('m', 1000, (id) => sent.push(['a', id])),
    b.request('m', 1000, (id) => sent.push(['b', id])),
  ].map(track)
  t.strictSame(sent, [
    ['a', 0],
    ['b', 1],
    ['a', 2],
    ['b', 3],
  ])
  t.ok(sent.every(([, id]) => Number.isInteger(id)), 'integers')
  t.equal(a.size, 2)
  t.equal(b.size, 2)
  t.equal(b.resolve(0, 'x'), false, "b cannot settle a's request")
  t.equal(a.resolve(0, 'first'), true)
  t.equal(b.resolve(3, 'fourth'), true)
  await flush()
  t.strictSame(
    ps.map((p) => p.state),
    ['resolved', 'pending', 'pending', 'resolved'],
  )
  a.abortAll()
  b.abortAll()
  await flush()
})

t.test('a result reply resolves; an error reply rejects with ServerRequestError', async (t) => {
  const clock = new ManualClock()
  const { logs, log } = unitLog()
  const sr = new ServerRequests(new RequestIdAllocator(), clock, log)
  let sentId = -1
  const p = track(sr.request('test/q', 10_000, (id) => (sentId = id)))
  t.equal(clock.pendingCount, 1, 'a timeout is scheduled')
  t.strictSame(clock.pendingDelays(), [10_000], 'with exactly the timeout')
  t.equal(sr.resolve(sentId, { answer: 42 }), true)
  await flush()
  t.equal(p.state, 'resolved')
  t.strictSame(p.value, { answer: 42 })
  t.equal(clock.pendingCount, 0, 'the timeout is cleared once answered')
  t.equal(sr.size, 0)
  t.equal(sr.resolve(sentId, { answer: 43 }), false, 'a second reply to the same id is dropped')

  const q = track(sr.request('test/q', 10_000, (id) => (sentId = id)))
  t.equal(sr.reject(sentId, { code: -1, message: 'nope' }), true)
  await flush()
  t.equal(q.state, 'rejected')
  t.ok(q.error instanceof ServerRequestError, 'ServerRequestError')
  t.equal(q.error?.name, 'ServerRequestError')
  t.equal(q.error?.message, 'code=-1 message=nope')
  t.strictSame((q.error as ServerRequestError).error, { code: -1, message: 'nope' }, 'the error body is kept')
  t.equal(clock.pendingCount, 0)

  const withData = track(sr.request('test/q', 10_000, (id) => (sentId = id)))
  sr.reject(sentId, { code: -32600, message: 'Invalid request: nah', data: { x: 1 } })
  await flush()
  t.equal(withData.error?.message, 'code=-32600 message=Invalid request: nah')
  t.equal(logs.lines.filter((l) => l.level >= WARN).length, 1, 'only the duplicate reply was logged')
})

t.test('timeout: ServerRequestTimeout after exactly the timeout; a late reply is logged at WARN and dropped', async (t) => {
  const clock = new ManualClock()
  const { logs, log } = unitLog()
  const sr = new ServerRequests(new RequestIdAllocator(), clock, log)
  let sentId = -1
  const p = track(sr.request('test/q', 10_000, (id) => (sentId = id)))
  clock.advance(9_999)
  await flush()
  t.equal(p.state, 'pending', 'still pending 1 ms before the timeout')
  t.equal(sr.size, 1)
  clock.advance(1)
  await flush()
  t.equal(p.state, 'rejected', 'rejected at exactly the timeout')
  t.ok(p.error instanceof ServerRequestTimeout)
  t.equal(p.error?.name, 'ServerRequestTimeout')
  t.equal(p.error?.message, 'test/q timed out after 10000ms')
  t.equal((p.error as ServerRequestTimeout).method, 'test/q')
  t.equal((p.error as ServerRequestTimeout).timeoutMs, 10_000)
  t.equal(sr.size, 0, 'nothing pending after the timeout')

  const mark = logs.lines.length
  t.equal(sr.resolve(sentId, { late: true }), false, 'a late result returns false')
  t.equal(sr.reject(sentId, { code: 1, message: 'late' }), false, 'a late error returns false')
  const warns = logs.lines.slice(mark)
  t.equal(warns.length, 2, 'one line per late reply')
  t.ok(warns.every((l) => l.level === WARN), 'logged at WARN')
  t.match(warns[0], { id: sentId, msg: /late or unknown reply/ })
  t.match(warns[1], { id: sentId, msg: /late or unknown error reply/ })
  t.equal(p.state, 'rejected', 'the late reply changed nothing')
})

t.test('unknown ids are dropped with a WARN', async (t) => {
  const clock = new ManualClock()
  const { logs, log } = unitLog()
  const sr = new ServerRequests(new RequestIdAllocator(), clock, log)
  const p = track(sr.request('test/q', 1000, () => {}))
  t.equal(sr.resolve(7, {}), false, 'unknown integer id')
  t.equal(sr.resolve('0', {}), false, 'a string id never matches (our ids are integers)')
  t.equal(sr.reject(99, { code: 1, message: 'x' }), false)
  t.equal(sr.resolve({ id: 0 }, {}), false, 'an object id')
  t.equal(sr.resolve('some-id', {}), false, 'an unknown string id')
  t.equal(sr.size, 1, 'the real request is still pending')
  t.equal(p.state, 'pending')
  const warns = logs.lines.filter((l) => l.level === WARN)
  t.equal(warns.length, 5)
  t.strictSame(
    warns.map((w) => w.id),
    [7, '0', 99, null, 'some-id'],
    'the id is logged (an object id as null)',
  )
  sr.abortAll()
  await flush()
})

t.test('abortAll rejects everything pending with ServerRequestAborted and clears the timers', async (t) => {
  const clock = new ManualClock()
  const { log } = unitLog()
  const sr = new ServerRequests(new RequestIdAllocator(), clock, log)
  const ps = ['a/one', 'b/two', 'c/three'].map((m) => track(sr.request(m, 5_000, () => {})))
  t.equal(clock.pendingCount, 3)
  sr.abortAll()
  await flush()
  t.equal(sr.size, 0)
  t.equal(clock.pendingCount, 0, 'every timeout cleared')
  t.ok(ps.every((p) => p.state === 'rejected' && p.error instanceof ServerRequestAborted), 'all rejected with ServerRequestAborted')
  t.strictSame(
    ps.map((p) => p.error?.message),
    ['connection closed before a/one was answered', 'connection closed before b/two was answered', 'connection closed before c/three was answered'],
  )
  t.strictSame(
    ps.map((p) => (p.error as ServerRequestAborted).method),
    ['a/one', 'b/two', 'c/three'],
  )
  clock.advance(10_000)
  await flush()
  t.ok(ps.every((p) => p.error instanceof ServerRequestAborted), 'no timeout fires afterwards')
  t.equal(sr.resolve(0, {}), false, 'a reply after the abort is dropped')
})

t.test('a send that throws rejects the request and leaves nothing pending', async (t) => {
  const clock = new ManualClock()
  const { log } = unitLog()
  const sr = new ServerRequests(new RequestIdAllocator(), clock, log)
  const p = track(
    sr.request('test/q', 1000, () => {
      throw new Error('socket gone')
    }),
  )
  await flush()
  t.equal(p.state, 'rejected')
  t.equal(p.error?.message, 'socket gone')
  t.equal(sr.size, 0)
  t.equal(clock.pendingCount, 0)
})

// ---- units: through Session ----

class RecordingTransport implements SessionTransport {
  readonly sent: string[] = []
  send(text: string): void {
    this.sent.push(text)
  }
  close(): void {}
}

t.test('Session.request: frames, replies through handleText, shared ids, close and detach', async (t) => {
  const clock = new ManualClock()
  const { logs, log } = unitLog()
  const deps: SessionDeps = {
    dispatcher: new Dispatcher<object>([], {}),
    inFlight: new InFlightLimit(10),
    serverRequestIds: new RequestIdAllocator(),
    clock,
    maxInFlightPerConnection: 128,
    ratePerSecond: 0,
    burst: 1,
    lifecycle: { draining: false },
  }
  const ta = new RecordingTransport()
  const tb = new RecordingTransport()
  const a = new Session('a', fullPrincipal('queryToken'), ta, log, deps)
  const b = new Session('b', fullPrincipal('queryToken'), tb, log, deps)

  const pa = track(a.request('test/question', { x: 1 }, 1000))
  const pb = track(b.request('test/question', { y: 2 }, 1000))
  const pa2 = track(a.request('test/noParams', undefined, 1000))
  t.strictSame(
    ta.sent.map((s) => JSON.parse(s)),
    [
      { id: 0, method: 'test/question', params: { x: 1 } },
      { id: 2, method: 'test/noParams' },
    ],
  )
  t.strictSame(
    tb.sent.map((s) => JSON.parse(s)),
    [{ id: 1, method: 'test/question', params: { y: 2 } }],
  )
  t.notOk([...ta.sent, ...tb.sent].some((s) => s.includes('jsonrpc')), 'no jsonrpc member')

  a.handleText(JSON.stringify({ id: 0, result: { ok: 'yes' } }))
  b.handleText(JSON.stringify({ jsonrpc: '2.0', id: 1, error: { code: -1, message: 'nope' } }))
  a.handleText(JSON.stringify({ id: 1, result: {} })) // b's id, sent to a: dropped
  await flush()
  t.equal(pa.state, 'resolved')
  t.strictSame(pa.value, { ok: 'yes' })
  t.equal(pb.state, 'rejected')
  t.equal(pb.error?.message, 'code=-1 message=nope')
  t.equal(logs.lines.filter((l) => l.level === WARN && l.id === 1).length, 1, "b's id replied on a: WARN, dropped")

  a.close(1000, 'bye')
  await flush()
  t.ok(pa2.error instanceof ServerRequestAborted, 'close aborts pending server requests')
  const after = track(a.request('test/question', {}, 1000))
  await flush()
  t.ok(after.error instanceof ServerRequestAborted, 'a request on a closed session is aborted at once')
  t.equal(ta.sent.length, 2, 'nothing sent after close')

  const pb2 = track(b.request('test/question', {}, 1000))
  b.detach()
  await flush()
  t.ok(pb2.error instanceof ServerRequestAborted, 'detach aborts pending server requests')
  t.equal(clock.pendingCount, 0, 'no timers left')
})

// ---- over real sockets ----

interface Outcome {
  readonly ok?: unknown
  readonly name?: string
  readonly message?: string
  readonly error?: unknown
}

/** `test/askClient` asks the client `test/question` and reports what happened on a side channel. */
function askClientProbe() {
  const outcomes: Outcome[] = []
  let waiters: (() => void)[] = []
  const AskParams = Type.Object({ timeoutMs: Type.Integer({ minimum: 1 }) })
  const methods: MethodDefinition<AppServices, any>[] = [
    defineMethod<AppServices, typeof AskParams>({
      name: 'test/askClient',
      scope: 'session',
      params: AskParams,
      async handler(params, { session }) {
        try {
          const answer = await session.request('test/question', { x: 1 }, params.timeoutMs)
          outcomes.push({ ok: answer })
          return { answer }
        } catch (err) {
          const e = err as Error
          outcomes.push({ name: e.name, message: e.message, error: e })
          throw new RpcError(-32000, `${e.name}: ${e.message}`)
        } finally {
          const w = waiters
          waiters = []
          for (const f of w) f()
        }
      },
    }),
  ]
  return {
    methods,
    outcomes,
    /** Resolves once `n` outcomes have been recorded. */
    async outcome(n: number): Promise<Outcome> {
      while (outcomes.length < n) await new Promise<void>((r) => waiters.push(r))
      return outcomes[n - 1]!
    },
  }
}

async function open(t: Test, server: TestServer): Promise<RpcClient> {
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  return client
}

async function question(client: RpcClient, seen: number): Promise<Json> {
  await client.waitForFrame(() => client.serverRequests.length > seen)
  return client.serverRequests[seen]!
}

function warnsSince(server: TestServer, mark: number): LogLine[] {
  return server.logs.lines.slice(mark).filter((l) => l.level === WARN)
}

t.test('socket: the client answers; the request frame is {id, method, params} with no jsonrpc', async (t) => {
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize()

  const call = client.request('test/askClient', { timeoutMs: 10_000 }, 'ask-1')
  const q = await question(client, 0)
  t.strictSame(q, { id: 0, method: 'test/question', params: { x: 1 } }, 'the first server request of a server has id 0')
  const raw = client.frames.find((f) => f.includes('"test/question"'))!
  t.notOk(raw.includes('jsonrpc'), 'no jsonrpc member on the wire')
  t.ok(Number.isInteger(q.id), 'an integer id')
  client.sendRaw(JSON.stringify({ id: q.id, result: 'forty-two' }))
  const reply = await call
  t.strictSame(reply, { id: 'ask-1', result: { answer: 'forty-two' } }, 'the outer call returns the answer')
  t.strictSame(probe.outcomes[0], { ok: 'forty-two' })

  // The next one, on the same connection, takes the next id; a jsonrpc member on the answer is ignored.
  const call2 = client.request('test/askClient', { timeoutMs: 10_000 }, 'ask-2')
  const q2 = await question(client, 1)
  t.strictSame(q2, { id: 1, method: 'test/question', params: { x: 1 } })
  client.sendRaw(JSON.stringify({ jsonrpc: '2.0', id: q2.id, result: { nested: [1, 2] } }))
  t.strictSame((await call2).result, { answer: { nested: [1, 2] } })

  // Ids are per server: a second connection continues the sequence.
  const other = await open(t, server)
  await other.initialize()
  const call3 = other.request('test/askClient', { timeoutMs: 10_000 }, 'ask-3')
  const q3 = await question(other, 0)
  t.equal(q3.id, 2, 'a second connection continues the server-wide sequence')
  other.sendRaw(JSON.stringify({ id: q3.id, result: null }))
  t.strictSame((await call3).result, { answer: null })
  t.equal(client.serverRequests.length, 2, 'the first client saw only its own server requests')
  t.same(warnsSince(server, 0), [], 'no WARN for answered requests')
})

t.test('socket: a client error reply surfaces as code=C message=M', async (t) => {
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize()
  const call = client.request('test/askClient', { timeoutMs: 10_000 }, 'ask-err')
  const q = await question(client, 0)
  client.sendRaw(JSON.stringify({ id: q.id, error: { code: -1, message: 'nope' } }))
  const reply = await call
  t.strictSame(reply, { error: { code: -32000, message: 'ServerRequestError: code=-1 message=nope' }, id: 'ask-err' })
  const o = await probe.outcome(1)
  t.equal(o.name, 'ServerRequestError')
  t.equal(o.message, 'code=-1 message=nope')
  t.ok(o.error instanceof ServerRequestError)
  t.strictSame((o.error as ServerRequestError).error, { code: -1, message: 'nope' })
})

t.test('socket: no answer → ServerRequestTimeout at exactly the timeout (manual clock); a late reply is a WARN', async (t) => {
  const clock = new ManualClock()
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods, timers: clock })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize()

  const call = client.request('test/askClient', { timeoutMs: 10_000 }, 'ask-timeout')
  let answered = false
  void call.then(() => (answered = true))
  const q = await question(client, 0)
  t.strictSame(clock.pendingDelays(), [10_000], 'the timeout is scheduled with exactly the given delay')
  clock.advance(9_999)
  await client.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' } }) // a round trip
  t.notOk(answered, 'no reply 1 ms before the timeout')
  t.equal(probe.outcomes.length, 0)
  clock.advance(1)
  const reply = await call
  t.strictSame(reply, { error: { code: -32000, message: 'ServerRequestTimeout: test/question timed out after 10000ms' }, id: 'ask-timeout' })
  const o = await probe.outcome(1)
  t.ok(o.error instanceof ServerRequestTimeout, 'the handler saw a ServerRequestTimeout')

  const mark = server.logs.lines.length
  const lateSecret = canary('late-reply')
  client.sendRaw(JSON.stringify({ id: q.id, result: { accessToken: lateSecret } }))
  client.sendRaw(JSON.stringify({ id: q.id, error: { code: -1, message: `late too ${lateSecret}` } }))
  const ping = await client.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' } })
  t.strictSame(ping.error, { code: -32600, message: 'Already initialized' }, 'the connection still answers')
  const warns = warnsSince(server, mark)
  t.equal(warns.length, 2, 'one WARN per late reply')
  t.match(warns[0], { id: q.id, msg: /dropped late or unknown reply/ })
  t.match(warns[1], { id: q.id, msg: /dropped late or unknown error reply/ })
  t.same(leakedCanaries(server.logs.text()), [], 'the late reply bodies are not logged')
  t.equal(probe.outcomes.length, 1, 'the late reply settled nothing')
  t.ok(client.ws.readyState === client.ws.OPEN)
})

t.test('socket: no answer → timeout with real timers (200 ms)', async (t) => {
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize()
  const started = performance.now()
  const call = client.request('test/askClient', { timeoutMs: 200 }, 'ask-real')
  const q = await question(client, 0)
  const reply = await call
  const elapsed = performance.now() - started
  t.strictSame(reply.error, { code: -32000, message: 'ServerRequestTimeout: test/question timed out after 200ms' })
  t.ok(elapsed >= 190, `took ${elapsed.toFixed(0)} ms (not before the timeout)`)
  const mark = server.logs.lines.length
  client.sendRaw(JSON.stringify({ id: q.id, result: {} }))
  await client.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' } })
  t.equal(warnsSince(server, mark).length, 1, 'late reply: one WARN')
})

t.test('socket: the client disconnects mid-request → ServerRequestAborted, nothing crashes', async (t) => {
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize()
  void client.request('test/askClient', { timeoutMs: 60_000 }, 'ask-abort')
  await question(client, 0)
  client.ws.terminate()
  const o = await probe.outcome(1)
  t.equal(o.name, 'ServerRequestAborted', 'the handler promise rejected with ServerRequestAborted')
  t.equal(o.message, 'connection closed before test/question was answered')
  t.ok(o.error instanceof ServerRequestAborted)

  // Also when the client closes cleanly.
  const second = await open(t, server)
  await second.initialize()
  void second.request('test/askClient', { timeoutMs: 60_000 }, 'ask-abort-2')
  await question(second, 0)
  await second.close()
  const o2 = await probe.outcome(2)
  t.equal(o2.name, 'ServerRequestAborted')

  const third = await open(t, server)
  t.ok('userAgent' in (await third.initialize()), 'the server still serves new connections')
  t.equal(server.app.sessions.size, 1, 'closed sessions were removed')
  t.same(
    server.logs.lines.filter((l) => l.level >= 50),
    [],
    'no ERROR or FATAL log lines',
  )
})

t.test('socket: an uninitialized connection cannot ask the client anything', async (t) => {
  const probe = askClientProbe()
  const server = await startServer({ extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  const reply = await client.request('test/askClient', { timeoutMs: 1000 }, 'early')
  t.strictSame(reply, { error: { code: -32600, message: 'Not initialized' }, id: 'early' })
  const bad = await client.request('test/askClient', { timeoutMs: 'soon' }, 'early-bad')
  t.match((bad.error as Json).message, /^Invalid request: params/, 'bad params are reported before Not initialized')
  t.equal(client.serverRequests.length, 0, 'no server request was sent')
  t.equal(probe.outcomes.length, 0, 'the handler never ran')
})

t.test('socket: over the connection rate limit a reply to a pending server request is still delivered; an unsolicited one is dropped', async (t) => {
  const probe = askClientProbe()
  const clock = new ManualClock({ monotonicMs: 3_000_000 })
  const server = await startServer({ argv: ['--rpc-rate', '10', '--rpc-burst', '3'], timers: clock, extraMethods: probe.methods })
  t.teardown(() => server.close())
  const client = await open(t, server)
  await client.initialize() // 2 tokens left
  const call = client.request('test/askClient', { timeoutMs: 10_000 }, 'ask') // 1 left
  const q = await question(client, 0)
  client.sendRaw('junk') // none left: time stands still
  const mark = server.logs.lines.length
  client.sendRaw(JSON.stringify({ id: 'nobody-asked', result: {} }))
  client.sendRaw(JSON.stringify({ id: q.id, result: 'still heard' }))
  t.strictSame(await call, { id: 'ask', result: { answer: 'still heard' } }, 'the answer to what was asked got through')
  const over = await client.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' } }, 'over')
  t.equal((over.error as Json).code, -32001, 'the bucket is empty: a request gets -32001')
  const warns = warnsSince(server, mark)
  t.equal(warns.filter((l) => /late or unknown/.test(String(l.msg))).length, 0, 'the unsolicited reply over the limit is not logged by itself')
  t.equal(warns.filter((l) => l.msg === 'frame over the connection rate limit dropped').length, 1, 'it was dropped with the over-limit line')
})
