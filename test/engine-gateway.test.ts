/**
 * The engine behind the whole gateway (engine.md "One upstream per client", "Credentials
 * hand-off", "Connection authority is not execution authority"), with the fake engine on a
 * unix socket: `initialize` answered by the engine, engine methods forwarded as the client's
 * own frame text after the gateway's checks (their in-flight slots held until answered),
 * scopes refused before anything reaches the engine, no engine → `engine unavailable`,
 * credentials handed off over the control connection (and never logged), the engine's refresh
 * request answered by the account service, approvals only for `exec` clients,
 * `serverRequest/resolved` rewritten, and pending engine requests errored when their client
 * goes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { connect, httpGet, type RpcClient } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FAKE_ENGINE_INITIALIZE_RESULT, FakeEngine, type FakeEngineConnection } from './helpers/fake-engine.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startServer, type TestServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test
type Json = Record<string, any>

const SECRET = 'engine-gateway-test-shared-secret-0123456789'
const AUTH_CLAIM = 'https://api.openai.com/auth'

interface Rig {
  readonly engine: FakeEngine
  readonly runner: AttachedEngine
  readonly server: TestServer
}

async function rig(t: Test, argv: string[] = [], clock?: ManualClock): Promise<Rig> {
  const engine = await FakeEngine.start()
  engine.on('account/login/start', (p) => ({ result: { type: (p as Json).type as string } }))
  engine.on('account/logout', () => ({ result: {} }))
  engine.on('account/read', () => ({ result: { account: null, requiresOpenaiAuth: false } }))
  const runner = new AttachedEngine(engine.socketPath)
  const server = await startServer({ argv, engine: { runner, ...(clock ? { clock } : {}) } })
  t.teardown(async () => {
    await server.close()
    await engine.close()
  })
  return { engine, runner, server }
}

/** The fake engine's connection whose `initialize` named `clientName`. */
function engineConn(engine: FakeEngine, clientName: string): Promise<FakeEngineConnection> {
  return engine.connectionOf(clientName)
}

const control = (engine: FakeEngine) => engineConn(engine, 'app-server-gateway')

/** Waits until the control connection has received `n` frames for `method`. */
async function nthCall(conn: FakeEngineConnection, method: string, n: number): Promise<Json> {
  const frames = (): Json[] => conn.frames.map((f) => JSON.parse(f) as Json).filter((f) => f.method === method)
  while (frames().length < n) await conn.waitFor((f) => f.method === method && frames().length >= n)
  return frames()[n - 1]!
}

function jwtServerArgs(t: Test): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'engine-gateway-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'secret')
  writeFileSync(file, SECRET)
  return ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', file]
}

async function jwtClient(server: TestServer, scope: string | undefined): Promise<RpcClient> {
  const jwt = await signJwt(SECRET, { exp: nowSeconds() + 600, ...(scope === undefined ? {} : { scope }) })
  return connect(server.wsBase, { Authorization: `Bearer ${jwt}` })
}

function externalToken(label: string): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc({ email: 'dev@example.com', [AUTH_CLAIM]: { chatgpt_plan_type: 'plus' }, jti: canary(label) })}.c2ln`)
}

t.test('initialize is answered by the engine; engine methods travel as the client wrote them', async (t) => {
  const { engine, server } = await rig(t)
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  const init = await client.request('initialize', { clientInfo: { name: 'ide', title: null, version: '1' }, capabilities: { experimentalApi: true } })
  t.same(init.result, FAKE_ENGINE_INITIALIZE_RESULT, "the engine's initialize result")
  const upstream = await engineConn(engine, 'ide')
  t.match(JSON.parse(upstream.frames[0]!), { method: 'initialize', params: { clientInfo: { name: 'ide' }, capabilities: { experimentalApi: true } } }, 'the client params, unchanged')

  const again = await client.request('initialize', { clientInfo: { name: 'ide', title: null, version: '1' } })
  t.same(again.error, { code: -32600, message: 'Already initialized' })

  client.notify('initialized')
  t.equal(await upstream.waitFor((f) => f.method === 'initialized'), '{"method":"initialized"}', 'client notifications are forwarded')

  // Odd spacing, member order and a number beyond 2^53: byte-identical at the engine.
  const raw = '{ "params" : {"limit":12345678901234567890, "cursor":null},"method":"thread/list",  "id":41}'
  engine.on('thread/list', () => ({ result: { data: [], nextCursor: null } }))
  client.sendRaw(raw)
  t.equal(await upstream.waitFor((f) => f.method === 'thread/list'), raw, 'the original frame text, with the client id')
  const reply = await client.waitForFrame((m) => m.id === 41)
  t.same(reply, { id: 41, result: { data: [], nextCursor: null } })

  // The in-flight slot is held until the engine answers.
  client.sendRaw('{"id":42,"method":"thread/read","params":{"threadId":"t1"}}')
  const pending = await upstream.request('thread/read')
  t.equal(server.app.inFlight.current, 1, 'held while the engine has not answered')
  upstream.answer(pending.id, { error: { code: -32600, message: 'thread not found: t1' } })
  t.same(await client.waitForFrame((m) => m.id === 42), { error: { code: -32600, message: 'thread not found: t1' }, id: 42 }, "the engine's error, as written")
  t.equal(server.app.inFlight.current, 0, 'released once it has')

  const account = await client.request('account/read', {})
  t.same(account.result, { account: null, requiresOpenaiAuth: false }, "requiresOpenaiAuth is the engine's answer")

  const health = await httpGet(`${server.httpBase}/healthz`)
  t.same(JSON.parse(health.body).engine, { state: 'running', version: '0.169.0' })
  t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 200)
})

t.test('--max-in-flight-per-connection: engine requests hold their slot until the engine answers; past the bound -32001, the engine never sees it', async (t) => {
  const { engine, server } = await rig(t, ['--max-in-flight-per-connection', '2'])
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  await client.request('initialize', { clientInfo: { name: 'ide', title: null, version: '1' } })
  const upstream = await engineConn(engine, 'ide')

  client.sendRaw('{"id":101,"method":"thread/read","params":{"threadId":"t1"}}')
  client.sendRaw('{"id":102,"method":"thread/read","params":{"threadId":"t2"}}')
  const first = await upstream.request('thread/read')
  await until(() => upstream.frames.filter((f) => f.includes('"thread/read"')).length === 2, 'both requests at the engine')
  client.sendRaw('{"id":103,"method":"thread/read","params":{"threadId":"t3"}}')
  t.same(await client.waitForFrame((m) => m.id === 103), { error: { code: -32001, message: 'Server overloaded; retry later.' }, id: 103 }, 'a third: -32001')
  t.equal(upstream.frames.filter((f) => f.includes('"t3"')).length, 0, 'the refused request never reached the engine')
  t.equal(server.app.inFlight.current, 2, 'two slots held while the engine has not answered')

  t.equal(first.id, 101)
  upstream.answer(first.id, { result: { thread: null } })
  await client.waitForFrame((m) => m.id === 101)
  t.equal(server.app.inFlight.current, 1, 'an answered request frees its slot')
  client.sendRaw('{"id":104,"method":"thread/read","params":{"threadId":"t4"}}')
  await until(() => upstream.frames.some((f) => f.includes('"t4"')), 'the next request to reach the engine')
  t.pass('the connection may send again once a slot is free')
})

t.test('scopes are checked before anything reaches the engine; degraded reaches no engine method', async (t) => {
  const { engine, server } = await rig(t, jwtServerArgs(t))
  const reader = await jwtClient(server, 'session account:read thread:read')
  t.teardown(() => reader.close())
  await reader.initialize('reader')
  const upstream = await engineConn(engine, 'reader')
  const refused = await reader.request('thread/start', {})
  t.same(refused.error, { code: -32600, message: 'method thread/start requires scope thread:write' })
  const unknown = await reader.request('thread/somethingNew', {})
  t.same(unknown.error, { code: -32600, message: 'method thread/somethingNew requires scope account:write' }, 'an unknown method needs every scope')
  const huge = await reader.request(`thread/\n${'h'.repeat(10_000)}`, {})
  t.same(
    huge.error,
    { code: -32600, message: `method thread/\\x0a${'h'.repeat(53)}…(+9947 chars) requires scope account:write` },
    'an unknown method is echoed bounded and escaped',
  )
  t.notOk(
    upstream.frames.some((f) => f.includes('thread/start') || f.includes('somethingNew')),
    'the engine saw neither',
  )

  const uninitialized = await jwtClient(server, undefined)
  t.teardown(() => uninitialized.close())
  t.same((await uninitialized.request('thread/list', {})).error, { code: -32600, message: 'Not initialized' })

  // A degraded principal (no-token-check) holds session and account:read only.
  const degradedRig = await rig(t, ['--no-token-check'])
  const degraded = await connect(degradedRig.server.wsBase)
  t.teardown(() => degraded.close())
  await degraded.initialize('degraded')
  const degradedUpstream = await engineConn(degradedRig.engine, 'degraded')
  for (const method of ['thread/list', 'model/list', 'config/read', 'command/exec', 'fs/readFile']) {
    const reply = await degraded.request(method, {})
    t.match(reply.error, { code: -32600, message: new RegExp(`^method ${method} requires scope `) }, `${method} refused`)
  }
  t.equal(degradedUpstream.frames.length, 1, 'only its initialize reached the engine')
})

t.test('without an engine: engine methods answer engine unavailable; the gateway serves its own', async (t) => {
  const server = await startServer({ argv: ['--engine', 'off'] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  const init = await client.initialize('alone')
  t.match(init.userAgent, /^alone\//, "the gateway's own initialize result")
  t.same((await client.request('thread/start', {})).error, { code: -32603, message: 'engine unavailable' })
  t.match(((await client.request('nope/never', {})).error as Json).message, /^Invalid request: unknown variant `nope\/never`/)
  t.same((await client.request('account/read', {})).result, { account: null, requiresOpenaiAuth: true })
  const health = JSON.parse((await httpGet(`${server.httpBase}/healthz`)).body) as Json
  t.same(health.engine, { state: 'off', version: null })
  t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 200, 'no engine configured: ready')

  // `--engine on` with no binary: unavailable (retried with backoff), not ready, the gateway still answers.
  const expected = await startServer({ argv: ['--engine', 'on', '--engine-bin', '/nonexistent/codex'] })
  t.teardown(() => expected.close())
  await until(() => expected.app.engine.status.state === 'unavailable', 'the first spawn to fail')
  t.same(JSON.parse((await httpGet(`${expected.httpBase}/healthz`)).body).engine, { state: 'unavailable', version: null, reason: 'engine binary not found' }, 'and says why, without the path')
  const ready = await httpGet(`${expected.httpBase}/readyz`)
  t.equal(ready.status, 503)
  t.same(JSON.parse(ready.body), { status: 'engine unavailable' })
  t.ok(expected.logs.lines.some((l) => l.level === 50 && l.event === 'engine.missing'), 'logged as an error')
  t.notOk(expected.logs.text().includes('/nonexistent'), 'the path is not in the reason')
})

t.test('credentials are handed to the engine on every change, and never logged', async (t) => {
  const { engine, server } = await rig(t)
  const ctl = await control(engine)
  t.same((await nthCall(ctl, 'account/logout', 1)).params, undefined, 'logged out at engine start')

  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  await client.initialize('ide')
  const apiKey = canary('sk-engine')
  await client.request('account/login/start', { type: 'apiKey', apiKey })
  t.same((await nthCall(ctl, 'account/login/start', 1)).params, { type: 'apiKey', apiKey })

  await client.request('account/logout')
  await nthCall(ctl, 'account/logout', 2)

  const token = externalToken('access')
  const login = await client.request('account/login/start', { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: 'ws-1', chatgptPlanType: 'plus' })
  t.same(login.result, { type: 'chatgptAuthTokens' })
  t.same((await nthCall(ctl, 'account/login/start', 2)).params, { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: 'ws-1', chatgptPlanType: 'plus' })

  // The engine got a 401: the gateway asks the client that owns the tokens, and answers the engine.
  const fresh = externalToken('fresh')
  const asked = ctl.askTokenRefresh({ reason: 'unauthorized', previousAccountId: 'ws-1' })
  const refresh = await client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh')
  client.sendRaw(JSON.stringify({ id: refresh.id, result: { accessToken: fresh, chatgptAccountId: 'ws-1', chatgptPlanType: 'plus' } }))
  t.same((await asked).result, { accessToken: fresh, chatgptAccountId: 'ws-1', chatgptPlanType: 'plus' })
  t.same((await nthCall(ctl, 'account/login/start', 3)).params.accessToken, fresh, 'the refreshed tokens are handed off again')

  // A failed recovery answers the engine with an error.
  const failing = ctl.askTokenRefresh()
  const again = await client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && m.id !== refresh.id)
  client.sendRaw(JSON.stringify({ id: again.id, error: { code: -32000, message: 'no tokens for you' } }))
  t.same((await failing).error, { code: -32603, message: 'token refresh failed' })

  // A client upstream's refresh request is answered by the account service too, never forwarded.
  const upstream = await engineConn(engine, 'ide')
  const viaUpstream = upstream.askTokenRefresh()
  const third = await client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && m.id !== refresh.id && m.id !== again.id)
  const newest = externalToken('newest')
  client.sendRaw(JSON.stringify({ id: third.id, result: { accessToken: newest, chatgptAccountId: 'ws-1' } }))
  t.same((await viaUpstream).result, { accessToken: newest, chatgptAccountId: 'ws-1', chatgptPlanType: 'plus' })

  const health = await httpGet(`${server.httpBase}/healthz`)
  t.ok(server.logs.lines.some((l) => l.event === 'engine.credentials' && l.kind === 'chatgptAuthTokens'), 'the hand-off is logged, by kind')
  t.same(leakedCanaries(server.logs.text()), [], 'no key or token in any log line')
  t.same(leakedCanaries(health.body), [])
  t.same(leakedCanaries(client.frames.filter((f) => f.includes('"error"')).join('\n')), [], 'nor in error text')
})

t.test('approval requests reach only exec clients; replies and resolutions are mapped', async (t) => {
  const { engine, server } = await rig(t, jwtServerArgs(t))
  const executor = await jwtClient(server, undefined)
  const chatter = await jwtClient(server, 'session account:read thread:read thread:write')
  t.teardown(() => executor.close())
  t.teardown(() => chatter.close())
  await executor.initialize('executor')
  await chatter.initialize('chatter')
  const up1 = await engineConn(engine, 'executor')
  const up2 = await engineConn(engine, 'chatter')

  const params = { threadId: 'th', turnId: 'tu', itemId: 'it', command: 'echo hi', cwd: '/tmp' }
  const answered = up1.ask('item/commandExecution/requestApproval', params, 77)
  const seen = await executor.waitForFrame((m) => m.method === 'item/commandExecution/requestApproval')
  t.type(seen.id, 'number')
  t.not(seen.id, 77, 'an id from the gateway allocator, not the engine one')
  executor.sendRaw(JSON.stringify({ id: seen.id, result: { decision: 'accept' } }))
  t.same(await answered, { id: 77, result: { decision: 'accept' } }, 'the approval reaches the engine under its id')
  up1.notify('serverRequest/resolved', { threadId: 'th', requestId: 77 })
  const resolved = await executor.waitForFrame((m) => m.method === 'serverRequest/resolved')
  t.same(resolved.params, { threadId: 'th', requestId: seen.id }, 'resolved names the id the client saw')

  const declined = await up2.ask('item/commandExecution/requestApproval', params, 0)
  t.same(declined.result, { decision: 'decline' }, 'declined for a connection without exec')
  t.notOk(chatter.serverRequests.length, 'the non-exec client never saw it')

  // A client that goes with an engine request pending: the engine gets an error, no turn hangs.
  const pending = up1.ask('item/tool/requestUserInput', { threadId: 'th', turnId: 'tu', itemId: 'x', questions: [] }, 'q-1')
  await executor.waitForFrame((m) => m.method === 'item/tool/requestUserInput')
  await executor.close()
  t.same((await pending).error, { code: -32603, message: 'client disconnected' })
  await up1.closed()
})

t.test('an engine that goes away: clients are closed with 1012; /readyz turns 503', async (t) => {
  // The restart waits on this clock, which never moves here: the engine stays gone.
  const { engine, runner, server } = await rig(t, [], new ManualClock())
  const client = await connect(server.wsUrl)
  await client.initialize('ide')
  const upstream = await engineConn(engine, 'ide')
  client.sendRaw('{"id":5,"method":"thread/list","params":{}}')
  await upstream.request('thread/list')
  runner.exit()
  engine.crash()
  t.same(await client.waitForFrame((m) => m.id === 5), { id: 5, error: { code: -32603, message: 'engine unavailable' } })
  t.same(await client.closed, { code: 1012, reason: 'engine restarted' })
  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.equal(ready.status, 503)
  t.same(JSON.parse(ready.body), { status: 'engine unavailable' })
})
