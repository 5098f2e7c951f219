/**
 * One client's upstream to the engine (one upstream per client), against a fake engine on a real
 * unix socket: what is forwarded as written, what is rewritten, what is dropped, who answers what,
 * and what happens when either side goes away.
 */
import t from 'tap'
import { Socket } from 'node:net'
import { createLogger } from '../src/log/logger.js'
import { ENGINE_RESTARTED_CLOSE_CODE, ENGINE_RESTARTED_REASON, EngineUpstream, type TokenRefreshHandler } from '../src/engine/upstream.js'
import { RpcError } from '../src/rpc/errors.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { systemClock } from '../src/clock.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { FAKE_ENGINE_INITIALIZE_RESULT, FakeEngine, type FakeEngineConnection, type Frame } from './helpers/fake-engine.js'
import { LogCapture } from './helpers/server.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]

const INIT_PARAMS = {
  clientInfo: { name: 'upstream-test', title: null, version: '1.0.0' },
  capabilities: { experimentalApi: true, optOutNotificationMethods: ['thread/tokenUsage/updated'] },
}

/** The client side: what the upstream sent the client, and how it closed it. */
class RecordingClient {
  readonly sent: string[] = []
  closedWith: { code: number; reason: string } | null = null
  private waiters: { match: (f: Frame) => boolean; resolve: (text: string) => void }[] = []
  private closeWaiters: (() => void)[] = []

  constructor(readonly holdsExec: boolean) {}

  /** Always true: this client takes everything at once. */
  sendToClient(text: string): boolean {
    this.sent.push(text)
    const frame = JSON.parse(text) as Frame
    const pending = this.waiters
    this.waiters = []
    for (const w of pending) {
      if (w.match(frame)) w.resolve(text)
      else this.waiters.push(w)
    }
    return true
  }

  closeClient(code: number, reason: string): void {
    this.closedWith = { code, reason }
    for (const w of this.closeWaiters) w()
  }

  /** The first frame sent to the client that `match` accepts, as raw text. */
  waitFor(match: (f: Frame) => boolean): Promise<string> {
    const found = this.sent.find((text) => match(JSON.parse(text) as Frame))
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve) => this.waiters.push({ match, resolve }))
  }

  async waitForParsed(match: (f: Frame) => boolean): Promise<Frame> {
    return JSON.parse(await this.waitFor(match)) as Frame
  }

  closed(): Promise<void> {
    if (this.closedWith !== null) return Promise.resolve()
    return new Promise((resolve) => this.closeWaiters.push(resolve))
  }
}

interface Linked {
  readonly upstream: EngineUpstream
  readonly client: RecordingClient
  readonly engineSide: FakeEngineConnection
  readonly initializeResult: unknown
}

interface Harness {
  readonly engine: FakeEngine
  readonly ids: RequestIdAllocator
  readonly logs: LogCapture
  link(options?: { holdsExec?: boolean; onTokenRefresh?: TokenRefreshHandler }): Promise<Linked>
}

async function harness(t: TestT): Promise<Harness> {
  const engine = await FakeEngine.start()
  t.teardown(() => engine.close())
  const ids = new RequestIdAllocator()
  const logs = new LogCapture()
  const log = createLogger('debug', logs)
  let opened = 0
  return {
    engine,
    ids,
    logs,
    async link(options = {}) {
      const client = new RecordingClient(options.holdsExec ?? true)
      const upstream = new EngineUpstream({
        socketPath: engine.socketPath,
        client,
        serverRequestIds: ids,
        onTokenRefresh: options.onTokenRefresh ?? (() => Promise.reject(new Error('no refresh handler in this test'))),
        timers: systemClock,
        log,
      })
      t.teardown(() => upstream.close())
      const initializeResult = await upstream.open(INIT_PARAMS)
      const engineSide = await engine.connection(opened++)
      return { upstream, client, engineSide, initializeResult }
    },
  }
}

/** A notification both sides agree marks "everything sent before this has arrived". */
async function engineBarrier(link: Linked, label: string): Promise<void> {
  link.engineSide.notify('test/barrier', { label })
  await link.client.waitFor((f) => f.method === 'test/barrier' && (f.params as { label?: string }).label === label)
}

async function clientBarrier(link: Linked, label: string): Promise<void> {
  link.upstream.forwardNotification(JSON.stringify({ method: 'test/clientBarrier', params: { label } }))
  await link.engineSide.waitFor((f) => f.method === 'test/clientBarrier' && (f.params as { label?: string }).label === label)
}

t.test('open: the client initialize params go to the engine unchanged and the engine result comes back', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  t.same(link.initializeResult, FAKE_ENGINE_INITIALIZE_RESULT, "the engine's initialize result")
  const init = await link.engineSide.request('initialize')
  t.same(init.params, INIT_PARAMS, 'clientInfo and capabilities unchanged')

  const initialized = '{"method":"initialized"}'
  link.upstream.forwardNotification(initialized)
  t.equal(await link.engineSide.waitFor((f) => f.method === 'initialized'), initialized, "the client's own initialized is relayed")
})

t.test('open fails with EngineUnavailableError when nothing listens', async (t) => {
  const h = await harness(t)
  h.engine.crash()
  const client = new RecordingClient(true)
  const upstream = new EngineUpstream({
    socketPath: h.engine.socketPath,
    client,
    serverRequestIds: h.ids,
    onTokenRefresh: () => Promise.resolve({}),
    timers: systemClock,
    log: createLogger('debug', h.logs),
  })
  await t.rejects(upstream.open(INIT_PARAMS), { name: 'EngineUnavailableError', message: 'engine connection failed' })
  t.equal(client.closedWith, null, 'a failed open does not close the client (the gateway answers as without an engine)')
})

t.test('client frames reach the engine as written; engine replies reach the client as written', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  const request = '{ "method" : "thread/read",  "id":7, "params":{"threadId":"thr_1","big":12345678901234567890123} }'
  void link.upstream.forwardRequest(7, request)
  t.equal(await link.engineSide.waitFor((f) => f.id === 7), request, 'request text byte for byte')
  t.equal(link.upstream.requestsInFlight, 1, 'tracked in flight')

  const reply = '{"id":7,"result":{"thread":{"id":"thr_1","n":98765432109876543210987}},  "extra":true}'
  link.engineSide.sendRaw(reply)
  t.equal(await link.client.waitFor((f) => f.id === 7), reply, 'response text byte for byte')
  t.equal(link.upstream.requestsInFlight, 0, 'answered, no longer in flight')

  const stringId = '{"id":"req-a","method":"model/list","params":{}}'
  void link.upstream.forwardRequest('req-a', stringId)
  await link.engineSide.waitFor((f) => f.id === 'req-a')
  const errorReply = '{"error":{"code":-32600,"message":"Invalid request: nope"},"id":"req-a"}'
  link.engineSide.sendRaw(errorReply)
  t.equal(await link.client.waitFor((f) => f.id === 'req-a'), errorReply, 'error replies too')

  const note = '{"method":"item/agentMessage/delta","params":{"threadId":"thr_1","delta":"hé \\u00e9"}}'
  link.engineSide.sendRaw(note)
  t.equal(await link.client.waitFor((f) => f.method === 'item/agentMessage/delta'), note, 'notification text byte for byte')
})

t.test('requests forwarded in one burst reach the engine in order, in one write (not a syscall each)', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  // Socket writes this process makes while the burst is sent (each is a write or writev syscall).
  const proto = Socket.prototype as unknown as { _writeGeneric: (...args: unknown[]) => unknown }
  const original = proto._writeGeneric
  let writes = 0
  proto._writeGeneric = function (this: unknown, ...args: unknown[]) {
    writes++
    return original.apply(this, args)
  }
  t.teardown(() => {
    proto._writeGeneric = original
  })
  const burst = 50
  for (let i = 0; i < burst; i++) void link.upstream.forwardRequest(`b${i}`, JSON.stringify({ id: `b${i}`, method: 'thread/loaded/list', params: {} }))
  await link.engineSide.waitFor((f) => f.id === `b${burst - 1}`)
  proto._writeGeneric = original
  const ids = link.engineSide.frames.map((f) => (JSON.parse(f) as { id?: unknown }).id).filter((id) => typeof id === 'string' && id.startsWith('b'))
  t.same(ids, Array.from({ length: burst }, (_, i) => `b${i}`), 'every request, in order')
  t.ok(writes >= 1 && writes < 5, `the burst left in ${writes} write(s), not ${burst}`)
})

t.test('engine account and remote-control notifications are dropped; the rest relayed', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  link.engineSide.notify('account/updated', { authMode: 'apikey', planType: null })
  link.engineSide.notify('account/login/completed', { loginId: null, success: true, error: null })
  link.engineSide.notify('remoteControl/status/changed', { status: 'disabled', serverName: 'x', installationId: 'i', environmentId: null })
  link.engineSide.notify('thread/started', { thread: { id: 'thr_2' } })
  await link.client.waitFor((f) => f.method === 'thread/started')
  t.same(
    link.client.sent.map((s) => (JSON.parse(s) as Frame).method),
    ['thread/started'],
    'only thread/started reached the client',
  )
})

t.test('engine requests get gateway ids; replies go back under the engine id', async (t) => {
  const h = await harness(t)
  const a = await h.link()
  const b = await h.link()
  const gatewayOwn = h.ids.allocate()

  const params = { threadId: 'thr_a', turnId: 'turn_1', itemId: 'item_1', questions: [] }
  const engineIdA = a.engineSide.sendRequest('item/tool/requestUserInput', params)
  const engineIdB = b.engineSide.sendRequest('item/tool/requestUserInput', params)
  t.equal(engineIdA, engineIdB, 'both engine connections used the same engine id')

  const seenA = await a.client.waitForParsed((f) => f.method === 'item/tool/requestUserInput')
  const seenB = await b.client.waitForParsed((f) => f.method === 'item/tool/requestUserInput')
  t.type(seenA.id, 'number')
  t.type(seenB.id, 'number')
  t.not(seenA.id, seenB.id, 'the two clients see distinct ids')
  t.not(seenA.id, gatewayOwn, "never the id of one of the gateway's own server requests")
  t.not(seenB.id, gatewayOwn)
  t.same(seenA.params, params, 'params unchanged')
  t.equal(a.upstream.engineRequestsPending, 1)

  const replyText = `{"id":${String(seenA.id)},"result":{"answers":{"q":{"answers":["yes"]}},"big":123456789012345678901}}`
  t.ok(a.upstream.forwardReply(seenA.id, replyText), 'a reply to an engine request is taken')
  const atEngine = await a.engineSide.waitFor((f) => f.id === engineIdA && 'result' in f)
  t.equal(atEngine, replyText.replace(`"id":${String(seenA.id)}`, `"id":${String(engineIdA)}`), 'only the id changed')
  t.equal(a.upstream.engineRequestsPending, 0)

  t.notOk(a.upstream.forwardReply(seenA.id, replyText), 'a second reply to the same id is not forwarded')
  t.notOk(a.upstream.forwardReply(seenB.id, replyText.replace(String(seenA.id), String(seenB.id))), "another client's id is unknown here")
  t.notOk(a.upstream.forwardReply(999_999, '{"id":999999,"result":{}}'), 'an unknown id is not forwarded')

  const errorText = `{"id":${String(seenB.id)},"error":{"code":-32000,"message":"user closed the prompt"}}`
  t.ok(b.upstream.forwardReply(seenB.id, errorText))
  const errAtEngine = await b.engineSide.reply(engineIdB)
  t.same(errAtEngine.error, { code: -32000, message: 'user closed the prompt' }, 'error replies map back too')

  const stringEngineId = a.engineSide.sendRequest('mcpServer/elicitation/request', { threadId: 'thr_a' }, 'elicit-1')
  const seenString = await a.client.waitForParsed((f) => f.method === 'mcpServer/elicitation/request')
  t.type(seenString.id, 'number', 'a string engine id becomes a gateway integer id')
  a.upstream.forwardReply(seenString.id, `{"id":${String(seenString.id)},"result":{"action":"decline","content":null}}`)
  t.same((await a.engineSide.reply(stringEngineId)).result, { action: 'decline', content: null })

  await clientBarrier(a, 'after-replies')
  const repliesAtA = a.engineSide.frames.filter((f) => !f.includes('"method"'))
  t.equal(repliesAtA.length, 2, 'engine A received exactly the two mapped replies (nothing from unknown ids)')
})

t.test('serverRequest/resolved carries the id the client saw', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  h.ids.allocate()
  h.ids.allocate()
  const engineId = link.engineSide.sendRequest('item/tool/requestUserInput', { threadId: 'thr_r' })
  const seen = await link.client.waitForParsed((f) => f.method === 'item/tool/requestUserInput')
  t.not(seen.id, engineId, 'the client id differs from the engine id')

  link.engineSide.notify('serverRequest/resolved', { threadId: 'thr_r', requestId: engineId })
  const resolved = await link.client.waitForParsed((f) => f.method === 'serverRequest/resolved')
  t.same(resolved.params, { threadId: 'thr_r', requestId: seen.id })
  t.notOk(link.upstream.forwardReply(seen.id, `{"id":${String(seen.id)},"result":{}}`), 'a resolved request takes no late reply')

  link.engineSide.notify('serverRequest/resolved', { threadId: 'thr_r', requestId: 4242 })
  await engineBarrier(link, 'after-unknown-resolved')
  t.equal(link.client.sent.filter((s) => s.includes('serverRequest/resolved')).length, 1, 'a resolution of a request the client never saw is dropped')
})

const APPROVALS: [string, unknown][] = [
  ['item/commandExecution/requestApproval', { decision: 'decline' }],
  ['item/fileChange/requestApproval', { decision: 'decline' }],
  ['item/permissions/requestApproval', { permissions: {}, scope: 'turn' }],
  ['applyPatchApproval', { decision: 'denied' }],
  ['execCommandApproval', { decision: 'denied' }],
]

t.test('approval requests: declined by the gateway for a client without exec', async (t) => {
  const h = await harness(t)
  const link = await h.link({ holdsExec: false })
  for (const [method, decline] of APPROVALS) {
    const reply = await link.engineSide.ask(method, { threadId: 'thr_x', turnId: 't', itemId: 'i', command: 'rm -rf /' })
    t.same(reply.result, decline, `${method} declined`)
  }
  await engineBarrier(link, 'after-approvals')
  t.same(link.client.sent.map((s) => (JSON.parse(s) as Frame).method), ['test/barrier'], 'no approval request reached the client')
  t.equal(link.upstream.engineRequestsPending, 0)

  link.engineSide.sendRequest('item/tool/requestUserInput', { threadId: 'thr_x' })
  await link.client.waitFor((f) => f.method === 'item/tool/requestUserInput')
  t.pass('other engine requests still reach a client without exec')
})

t.test('approval requests: reach a client holding exec, and its decision reaches the engine', async (t) => {
  const h = await harness(t)
  const link = await h.link({ holdsExec: true })
  for (const [method] of APPROVALS) {
    const engineId = link.engineSide.sendRequest(method, { threadId: 'thr_y' })
    const seen = await link.client.waitForParsed((f) => f.method === method)
    link.upstream.forwardReply(seen.id, `{"id":${String(seen.id)},"result":{"decision":"accept"}}`)
    t.same((await link.engineSide.reply(engineId)).result, { decision: 'accept' }, `${method}: the client's answer`)
  }
})

t.test('account/chatgptAuthTokens/refresh goes to the handler, never to the client', async (t) => {
  const token = canary('engine-refresh-access-token')
  const handlerSecret = canary('refresh-handler-failure')
  const calls: unknown[] = []
  let mode: 'ok' | 'rpc' | 'throw' = 'ok'
  const h = await harness(t)
  const link = await h.link({
    onTokenRefresh: async (params) => {
      calls.push(params)
      if (mode === 'rpc') throw new RpcError(-32000, 'external token refresh failed')
      if (mode === 'throw') throw new Error(`backend said ${handlerSecret}`)
      return { accessToken: token, chatgptAccountId: 'acct_1', chatgptPlanType: 'plus' }
    },
  })
  const params = { reason: 'unauthorized', previousAccountId: 'acct_1' }
  const ok = await link.engineSide.askTokenRefresh(params)
  t.same(ok.result, { accessToken: token, chatgptAccountId: 'acct_1', chatgptPlanType: 'plus' }, "the handler's result")
  t.same(calls, [params], 'the handler got the engine params')

  mode = 'rpc'
  const refused = await link.engineSide.askTokenRefresh(params)
  t.same(refused.error, { code: -32000, message: 'external token refresh failed' }, "an RpcError's body")

  mode = 'throw'
  const failed = await link.engineSide.askTokenRefresh(params)
  t.same(failed.error, { code: -32603, message: 'token refresh failed' }, 'any other failure: a fixed message')

  await engineBarrier(link, 'after-refresh')
  t.same(link.client.sent.map((s) => (JSON.parse(s) as Frame).method), ['test/barrier'], 'the client saw none of it')
  const everything = h.logs.text() + link.engineSide.frames.join('\n')
  t.same(leakedCanaries(h.logs.text()), [], 'no token or handler error text in the logs')
  t.notOk(everything.includes(handlerSecret), 'handler error text reaches neither log nor engine')
})

t.test('a client that goes away: its pending engine requests are answered with an error, the upstream closes', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  const first = link.engineSide.sendRequest('item/commandExecution/requestApproval', { threadId: 'thr_c' })
  const second = link.engineSide.sendRequest('item/tool/requestUserInput', { threadId: 'thr_c' }, 'input-1')
  await link.client.waitFor((f) => f.method === 'item/tool/requestUserInput')
  t.equal(link.upstream.engineRequestsPending, 2)

  link.upstream.close()
  const [a, b] = await Promise.all([link.engineSide.reply(first), link.engineSide.reply(second)])
  t.same(a.error, { code: -32603, message: 'client disconnected' })
  t.same(b.error, { code: -32603, message: 'client disconnected' })
  await link.engineSide.closed()
  t.pass('the upstream connection closed')
  t.equal(link.client.closedWith, null, 'the upstream does not close a client that closed itself')
})

t.test('the engine goes away: in-flight requests get -32603 engine unavailable, the client is closed 1012', async (t) => {
  const h = await harness(t)
  const link = await h.link()
  const other = await h.link()
  void link.upstream.forwardRequest(1, '{"id":1,"method":"turn/start","params":{"threadId":"thr_d","input":[]}}')
  void link.upstream.forwardRequest('two', '{"id":"two","method":"thread/list","params":{}}')
  await link.engineSide.waitFor((f) => f.id === 'two')
  link.engineSide.answer(1, { result: { turn: { id: 'turn_d' } } })
  await link.client.waitFor((f) => f.id === 1)
  void link.upstream.forwardRequest(3, '{"id":3,"method":"thread/read","params":{"threadId":"thr_d"}}')
  await link.engineSide.waitFor((f) => f.id === 3)

  h.engine.crash()
  await Promise.all([link.client.closed(), other.client.closed()])
  t.same(link.client.closedWith, { code: ENGINE_RESTARTED_CLOSE_CODE, reason: ENGINE_RESTARTED_REASON })
  const errors = link.client.sent.map((s) => JSON.parse(s) as Frame).filter((f) => 'error' in f)
  t.same(
    errors.map((f) => [f.id, f.error]),
    [
      ['two', { code: -32603, message: 'engine unavailable' }],
      [3, { code: -32603, message: 'engine unavailable' }],
    ],
    'exactly the requests still in flight, each once',
  )
  t.same(other.client.closedWith, { code: ENGINE_RESTARTED_CLOSE_CODE, reason: ENGINE_RESTARTED_REASON }, 'an idle client is closed too')
  t.equal(other.client.sent.length, 0, 'with nothing in flight, nothing to answer')

  void link.upstream.forwardRequest(4, '{"id":4,"method":"thread/list","params":{}}')
  t.same(JSON.parse(link.client.sent.at(-1) ?? '{}'), { error: { code: -32603, message: 'engine unavailable' }, id: 4 }, 'a request after the loss is answered at once')
})

t.test('forged or stale response ids from the engine reach no client', async (t) => {
  const h = await harness(t)
  const a = await h.link()
  const b = await h.link()
  void b.upstream.forwardRequest(5, '{"id":5,"method":"thread/read","params":{"threadId":"thr_b"}}')
  await b.engineSide.waitFor((f) => f.id === 5)

  // On A's connection, the engine answers B's id, an id A never sent, and a malformed frame.
  a.engineSide.answer(5, { result: { thread: { id: 'forged' } } })
  a.engineSide.answer('never-sent', { result: {} })
  a.engineSide.sendRaw('{"id":')
  await engineBarrier(a, 'after-forged')
  t.same(a.client.sent.map((s) => (JSON.parse(s) as Frame).method), ['test/barrier'], 'A got none of them')

  b.engineSide.answer(5, { result: { thread: { id: 'thr_b' } } })
  const real = await b.client.waitForParsed((f) => f.id === 5)
  t.same(real.result, { thread: { id: 'thr_b' } }, "B got only its engine's real answer")
  t.equal(b.client.sent.length, 1)

  b.engineSide.answer(5, { result: { thread: { id: 'again' } } })
  await engineBarrier(b, 'after-duplicate')
  t.equal(b.client.sent.filter((s) => s.includes('"again"')).length, 0, 'a second answer to an answered id is dropped')
})
