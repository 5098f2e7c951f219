/**
 * Graceful shutdown: `/readyz` turns 503, new upgrades get 503, new requests are refused
 * -32001, open sockets get 1001 `server shutting down` after in-flight requests are answered
 * — at `--shutdown-timeout-seconds` by the server itself (-32603 `server shutting down`) —
 * then the process exits 0.
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type WebSocket from 'ws'
import { defineMethod } from '../src/rpc/method.js'
import type { AppServices } from '../src/services.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { connect, httpGet, tryUpgrade, type RpcClient } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FakeEngine } from './helpers/fake-engine.js'
import { FakeUsageBackend } from './helpers/fake-usage-backend.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startCli } from './helpers/process.js'
import { startServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

const SHUTDOWN = { code: 1001, reason: 'server shutting down' }
const REFUSED = { code: -32001, message: 'server shutting down' }
const UNANSWERED = { code: -32603, message: 'server shutting down' }
const DEFAULT_DEADLINE_MS = 10_000

/** `test/held`: never answers on its own (a backend that never replies). */
const held = defineMethod<AppServices, null>({
  name: 'test/held',
  scope: 'session',
  params: null,
  handler: () => new Promise<never>(() => {}),
})

/** Every frame and the close, in the order the client saw them. */
function recordEvents(client: RpcClient): string[] {
  const events: string[] = []
  client.ws.on('message', (data: WebSocket.RawData) => events.push(`frame ${data.toString()}`))
  client.ws.on('close', (code: number, reason: Buffer) => events.push(`close ${code} ${reason.toString()}`))
  return events
}

/** An unsigned JWT-shaped ChatGPT access token (never verified), registered as a canary. */
function chatgptAccessToken(): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const claims = { email: 'drain@example.com', 'https://api.openai.com/auth': { chatgpt_plan_type: 'plus' }, jti: randomBytes(8).toString('hex') }
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.${randomBytes(16).toString('base64url')}`)
}

t.test('subprocess: SIGTERM with a request held at the backend: answered -32603 at the deadline, then 1001, exit 0', async (t) => {
  const backend = await FakeUsageBackend.start({})
  const answerBackend = backend.hold()
  t.teardown(async () => {
    answerBackend({ status: 500, body: {} })
    await backend.close()
  })
  const srv = await startCli(['--listen', 'ws://127.0.0.1:0', '--credentials-store', 'ephemeral', '--shutdown-timeout-seconds', '1'], {
    env: { CHATGPT_BASE_URL: backend.baseUrl },
  })
  t.teardown(() => srv.stop('SIGKILL').then(() => undefined))
  const client = await connect(srv.url)
  t.teardown(() => client.ws.terminate())
  await client.initialize('held-at-backend', '1.0.0')
  const login = await client.request('account/login/start', { type: 'chatgptAuthTokens', accessToken: chatgptAccessToken(), chatgptAccountId: 'acct-drain' })
  t.same(login.result, { type: 'chatgptAuthTokens' }, 'logged in')
  const events = recordEvents(client)
  const reply = client.request('account/rateLimits/read', undefined, 'held-1')
  await until(() => backend.calls.length >= 1, 'the backend to be asked')

  const exited = srv.stop('SIGTERM')
  t.same(await withTimeout(reply, 20_000, 'the held request to be answered'), { id: 'held-1', error: UNANSWERED }, 'the held request is answered -32603')
  t.same(await withTimeout(client.closed, 20_000, 'close frame after the deadline'), SHUTDOWN, 'then the socket closes 1001, not 1006')
  const replyIndex = events.findIndex((e) => e.includes('"held-1"'))
  t.ok(replyIndex >= 0 && replyIndex < events.findIndex((e) => e.startsWith('close ')), 'the answer came before the close frame')
  t.same(await withTimeout(exited, 30_000, 'process exit'), { code: 0, signal: null }, 'a signal-initiated stop exits 0')
  t.notMatch(srv.stdout(), /killed by timeout/, 'close-with-grace did not cut the drain short')
  t.same(leakedCanaries(srv.stdout() + srv.stderr()), [])
})

t.test('in-process: during a drain new requests are refused at once; at the deadline a held request is answered -32603, then 1001', async (t) => {
  const clock = new ManualClock()
  const server = await startServer({ timers: clock, extraMethods: [held] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('drain-deadline', '1')
  const events = recordEvents(client)
  const heldReply = client.request('test/held', undefined, 'held-1')
  await until(() => server.app.inFlight.current === 1, 'the held request to be in flight')

  let drainDone = false
  const drained = server.drainAndClose().then(() => (drainDone = true))
  t.same(clock.pendingDelays(), [DEFAULT_DEADLINE_MS], 'the drain waits at most --shutdown-timeout-seconds (default 10)')
  // A client that keeps sending during the drain: each request refused at once, none holds it open.
  for (let i = 0; i < 20; i++) {
    const r = await client.request('account/read', {}, `during-${i}`)
    t.same(r, { id: `during-${i}`, error: REFUSED }, `request ${i} during the drain: -32001 server shutting down`)
  }
  t.notOk(drainDone, 'the drain still waits for the held request')
  t.equal(client.ws.readyState, client.ws.OPEN, 'and the socket is still open')

  clock.advance(DEFAULT_DEADLINE_MS)
  t.same(await withTimeout(heldReply, 5000, 'the held request answer'), { id: 'held-1', error: UNANSWERED }, 'at the deadline: -32603 server shutting down')
  t.same(await withTimeout(client.closed, 5000, 'close after the deadline'), SHUTDOWN)
  await withTimeout(drained, 5000, 'drainAndClose')
  const replyIndex = events.findIndex((e) => e.includes('"held-1"'))
  t.ok(replyIndex >= 0 && replyIndex < events.findIndex((e) => e.startsWith('close ')), 'the answer came before the close frame')
  t.same(leakedCanaries(server.logs.text()), [])
})

t.test('in-process: a request answered -32603 at the deadline is logged and counted as such, even when its handler finishes later', async (t) => {
  const clock = new ManualClock()
  let finish: () => void = () => {}
  const late = defineMethod<AppServices, null>({
    name: 'test/late',
    scope: 'session',
    params: null,
    handler: () => new Promise<{ ok: true }>((resolve) => (finish = () => resolve({ ok: true }))),
  })
  const server = await startServer({ timers: clock, extraMethods: [late], argv: ['--metrics'] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('late-handler', '1')
  const reply = client.request('test/late', undefined, 'late-1')
  await until(() => server.app.inFlight.current === 1, 'the request to be in flight')
  const drained = server.drainAndClose()
  clock.advance(DEFAULT_DEADLINE_MS)
  t.same(await withTimeout(reply, 5000, 'the answer at the deadline'), { id: 'late-1', error: UNANSWERED })
  finish() // the handler ends with a result the client never gets
  await withTimeout(drained, 5000, 'drainAndClose')
  await until(() => server.logs.lines.some((l) => l.msg === 'request answered' && l.id === 'late-1'), 'the request line')
  const line = server.logs.lines.find((l) => l.msg === 'request answered' && l.id === 'late-1')!
  t.equal(line.outcome, UNANSWERED.code, 'its line says what the client got: -32603')
  const counted = await server.app.metrics!.registry.metrics()
  t.match(counted, /app_server_rpc_requests_total\{method="(?:test\/late|other)",outcome="-32603"\} 1\n/, 'and so does its metric')
  t.notMatch(counted, /app_server_rpc_requests_total\{method="(?:test\/late|other)",outcome="result"\} [1-9]/, 'never as a result')
})

t.test('in-process: an engine request in flight at the deadline is answered -32603 before the 1001', async (t) => {
  const clock = new ManualClock()
  const engine = await FakeEngine.start()
  // No answer for `thread/loaded/list`: the engine leaves it in flight.
  const server = await startServer({
    argv: ['--shutdown-timeout-seconds', '3'],
    timers: clock,
    engine: { runner: new AttachedEngine(engine.socketPath), keepAlive: { timers: new ManualClock() } },
  })
  t.teardown(async () => {
    await server.close()
    await engine.close()
  })
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('engine-drain', '1')
  const upstream = await engine.connectionOf('engine-drain')
  const events = recordEvents(client)
  const reply = client.request('thread/loaded/list', {}, 'engine-held')
  await upstream.waitFor((f) => f.id === 'engine-held')

  const drained = server.drainAndClose()
  t.same(clock.pendingDelays().filter((d) => d === 3000), [3000], 'the drain deadline is armed')
  clock.advance(3000)
  t.same(await withTimeout(reply, 5000, 'the engine request answer'), { id: 'engine-held', error: UNANSWERED }, 'answered -32603 server shutting down')
  t.same(await withTimeout(client.closed, 5000, 'close after the deadline'), SHUTDOWN)
  await withTimeout(drained, 5000, 'drainAndClose')
  t.ok(events.findIndex((e) => e.includes('"engine-held"')) < events.findIndex((e) => e.startsWith('close ')), 'the answer came before the close frame')
  await withTimeout(upstream.closed(), 5000, 'the upstream to close')
})

// SIGTERM is taken by the held-request test above, which checks the 1001 and the exit code too.
for (const signal of ['SIGINT'] as const) {
  t.test(`subprocess: ${signal} closes sockets with 1001 and exits 0`, async (t) => {
    const srv = await startCli(['--listen', 'ws://127.0.0.1:0'])
    t.teardown(() => srv.stop('SIGKILL').then(() => undefined))
    const client = await connect(srv.url)
    t.teardown(() => client.ws.terminate())
    const init = await client.initialize('shutdown-probe', '1.0.0')
    t.type(init.userAgent, 'string', 'initialized')

    const exited = srv.stop(signal)
    const closed = await withTimeout(client.closed, 8000, 'close frame after the signal')
    t.same(closed, SHUTDOWN, `client sees 1001 "server shutting down" after ${signal}`)
    const exit = await withTimeout(exited, 8000, 'process exit')
    t.same(exit, { code: 0, signal: null }, `process exits with code 0 after ${signal}`)
    t.same(leakedCanaries(srv.stdout()), [])
  })
}

// What the process adds on a signal (exit 0 once the drain is done) is the SIGINT and SIGTERM
// tests' above; whether the drain waits when no one is connected is the server's.
t.test('in-process: with no client connected, the drain does not wait for its deadline', async (t) => {
  const clock = new ManualClock()
  const server = await startServer({ timers: clock })
  t.teardown(() => server.close())
  const hz = await httpGet(`${server.httpBase}/healthz`)
  t.equal(hz.status, 200)
  // The clock never moves: a drain that waited for its deadline would never end.
  await withTimeout(server.drainAndClose(), 5000, 'drainAndClose with no client')
  t.notOk(server.app.server.listening, 'drained and closed without the clock moving')
})

t.test('in-process: drainAndClose sends 1001 to a connected client', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const a = await connect(server.wsUrl)
  const b = await connect(server.wsUrl)
  t.teardown(() => {
    a.ws.terminate()
    b.ws.terminate()
  })
  await a.initialize('drain-a', '1')
  // b never initializes: it is closed all the same.
  await withTimeout(server.drainAndClose(), 5000, 'drainAndClose')
  t.same(await withTimeout(a.closed, 2000, 'a closed'), SHUTDOWN, 'initialized client gets 1001')
  t.same(await withTimeout(b.closed, 2000, 'b closed'), SHUTDOWN, 'uninitialized client gets 1001')
  t.ok(server.logs.lines.some((l) => l.msg === 'websocket connection closed'), 'close logged')
})

t.test('in-process: while draining, /readyz is 503, /healthz 200, new upgrades 503', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const before = await httpGet(`${server.httpBase}/readyz`)
  t.equal(before.status, 200)
  t.same(JSON.parse(before.body), { status: 'ready' })

  const open = await connect(server.wsUrl)
  t.teardown(() => open.ws.terminate())
  await open.initialize('already-open', '1')

  server.app.lifecycle.beginDrain()
  t.ok(server.app.lifecycle.draining, 'lifecycle reports draining')

  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.equal(ready.status, 503, '/readyz answers 503')
  t.same(JSON.parse(ready.body), { status: 'draining' }, '/readyz body')
  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 200, '/healthz still 200')
  t.same(JSON.parse(health.body), { status: 'ok', auth: { mode: 'queryToken', enforced: true }, engine: { state: 'off', version: null } })

  const upgrade = await tryUpgrade(server.wsUrl)
  if ('ws' in upgrade) {
    upgrade.ws.terminate()
    t.fail('a new upgrade with a valid token was accepted (101) while draining')
  } else {
    t.equal(upgrade.refused.status, 503, 'a new upgrade with a valid token gets 503')
    t.same(leakedCanaries(upgrade.refused.body), [])
  }
  const wrong = await tryUpgrade(`${server.wsBase}?token=${canary('drain-wrong')}`)
  t.ok('refused' in wrong, 'a wrong token is refused too')
  if ('ws' in wrong) wrong.ws.terminate()

  const line = server.logs.authEvents().find((l) => l.outcome === 'rejected' && l.reason === 'server draining')
  t.ok(line, 'the 503 is explained by a ws.auth line')
  t.equal(line?.mode, 'queryToken')
  t.same(leakedCanaries(server.logs.text()), [])
})

t.test('in-process: a request in flight when draining begins is answered before the 1001', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())

  // Frame order as the client sees it.
  const events: string[] = []
  client.ws.on('message', (data: WebSocket.RawData) => events.push(`frame ${data.toString()}`))
  client.ws.on('close', (code: number, reason: Buffer) => events.push(`close ${code} ${reason.toString()}`))

  // Begin draining on the server the moment the request frame has been handed to the session
  // (the product's listener runs first and starts the request; ours runs after it).
  const [serverSocket] = [...server.app.websocketServer.clients]
  if (serverSocket === undefined) throw new Error('no server-side socket')
  let drained: Promise<void> | null = null
  let repliedBeforeDrain = false
  serverSocket.once('message', () => {
    // The reply is sent asynchronously, so at this point it cannot have gone out yet.
    repliedBeforeDrain = events.some((e) => e.includes('"inflight-1"'))
    drained = server.drainAndClose()
  })

  const reply = client.request('initialize', { clientInfo: { name: 'in-flight', title: null, version: '1' } }, 'inflight-1')
  const closed = await withTimeout(client.closed, 5000, 'close after drain')
  t.same(closed, SHUTDOWN)
  t.ok(drained !== null, 'draining began while the request was being handled')
  t.notOk(repliedBeforeDrain, 'the request was still unanswered when draining began')
  await withTimeout(drained ?? Promise.resolve(), 5000, 'drainAndClose')

  const replyIndex = events.findIndex((e) => e.startsWith('frame ') && e.includes('"inflight-1"'))
  const closeIndex = events.findIndex((e) => e.startsWith('close '))
  t.ok(replyIndex >= 0, 'the in-flight request was answered')
  t.ok(closeIndex > replyIndex, 'its reply arrived before the close frame')
  t.equal(events[closeIndex], 'close 1001 server shutting down')
  const r = await withTimeout(reply, 1000, 'reply promise')
  t.ok('result' in r, 'the reply is a result')
})
