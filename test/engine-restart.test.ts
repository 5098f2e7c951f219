/**
 * The engine restart policy behind the whole gateway, with the fake engine on a unix socket and
 * the engine's timers on manual clocks: an engine that goes away is restarted after the backoff
 * (`restarting` with its reason on `/healthz`, `/readyz` 503 meanwhile), its clients are
 * answered and closed 1012 while a client without an upstream is untouched and keeps the
 * gateway's own methods, no client upstream opens before the restarted engine has the
 * credentials, and an engine that stops answering pings is killed and restarted.
 */
import t from 'tap'
import { connect, httpGet } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FAKE_ENGINE_INITIALIZE_RESULT, FakeEngine, type FakeEngineConnection } from './helpers/fake-engine.js'
import { ManualClock } from './helpers/manual-clock.js'
import { until } from './helpers/wait.js'
import { startServer, type TestServer } from './helpers/server.js'

type Test = import('tap').Test
type Json = Record<string, any>

interface Rig {
  readonly engine: FakeEngine
  readonly runner: AttachedEngine
  readonly server: TestServer
  /** The engine service's clock: restart delays, upstream and control timeouts. */
  readonly clock: ManualClock
  /** The control connection's keepalive clock. */
  readonly keepAliveClock: ManualClock
}

async function rig(t: Test): Promise<Rig> {
  const engine = await FakeEngine.start()
  engine.on('account/logout', () => ({ result: {} }))
  engine.on('account/read', () => ({ result: { account: null, requiresOpenaiAuth: false } }))
  engine.on('thread/list', () => ({ result: { data: [], nextCursor: null } }))
  const runner = new AttachedEngine(engine.socketPath)
  const clock = new ManualClock()
  const keepAliveClock = new ManualClock()
  const server = await startServer({ engine: { runner, clock, random: () => 0.5, keepAlive: { timers: keepAliveClock } } })
  t.teardown(async () => {
    await server.close()
    await engine.close()
  })
  return { engine, runner, server, clock, keepAliveClock }
}

/** The fake engine's `n`-th connection whose `initialize` named `clientName` (0-based). */
async function engineConn(engine: FakeEngine, clientName: string, n = 0): Promise<FakeEngineConnection> {
  let seen = 0
  for (let i = 0; ; i++) {
    const conn = await engine.connection(i)
    const init = JSON.parse(await conn.waitFor((f) => f.method === 'initialize')) as Json
    if (init.params?.clientInfo?.name === clientName && seen++ === n) return conn
  }
}

const health = async (server: TestServer): Promise<Json> => JSON.parse((await httpGet(`${server.httpBase}/healthz`)).body).engine as Json
const readyStatus = async (server: TestServer): Promise<number> => (await httpGet(`${server.httpBase}/readyz`)).status

t.test('an engine that goes away is restarted after the backoff; the credentials go first', async (t) => {
  const { engine, runner, server, clock } = await rig(t)
  await (await engineConn(engine, 'app-server-gateway')).request('account/logout')

  const a = await connect(server.wsUrl)
  t.teardown(() => a.close())
  await a.initialize('ide-a')
  const upstreamA = await engineConn(engine, 'ide-a')
  engine.off('thread/list')
  a.sendRaw('{"id":5,"method":"thread/list","params":{}}')
  await upstreamA.request('thread/list')
  // Connected, not initialized: no upstream, nothing of the engine's to lose.
  const b = await connect(server.wsUrl)
  t.teardown(() => b.close())
  let bClosed = false
  void b.closed.then(() => (bClosed = true))

  engine.off('account/logout')
  runner.exit()
  engine.dropConnections()
  t.same(await a.waitForFrame((m) => m.id === 5), { id: 5, error: { code: -32603, message: 'engine unavailable' } }, 'the request in flight is answered')
  t.same(await a.closed, { code: 1012, reason: 'engine restarted' })
  t.same(await health(server), { state: 'restarting', version: '0.169.0', reason: 'engine exited (code 1)' })
  t.equal(await readyStatus(server), 503)
  t.same(clock.pendingDelays(), [200], 'the first restart waits 200 ms (fixed jitter)')
  t.match(server.logs.lines.find((l) => l.event === 'engine.restart_scheduled'), { level: 40, reason: 'engine exited (code 1)', attempt: 1, delayMs: 200 })

  // B meanwhile: the gateway's own methods.
  t.match(await b.initialize('ide-b'), { userAgent: /^ide-b\// }, "the gateway's own initialize while the engine is down")
  t.same((await b.request('account/read', {})).result, { account: null, requiresOpenaiAuth: true })

  clock.advance(200)
  const control = await engineConn(engine, 'app-server-gateway', 1)
  const logout = await control.request('account/logout')
  t.equal(runner.status.state, 'running')

  // A client that initializes now waits for the hand-off: its upstream opens only after it is answered.
  const c = await connect(server.wsUrl)
  t.teardown(() => c.close())
  const initC = c.request('initialize', { clientInfo: { name: 'ide-c', title: null, version: '1' } })
  await health(server)
  await health(server)
  const before = engine.connections.length
  control.answer(logout.id, { result: {} })
  t.same((await initC).result, FAKE_ENGINE_INITIALIZE_RESULT, "the restarted engine's initialize")
  const upstreamC = await engineConn(engine, 'ide-c')
  t.ok(engine.connections.indexOf(upstreamC) >= before, 'the client upstream opened only after the hand-off was answered')

  t.same(await health(server), { state: 'running', version: '0.169.0' })
  t.equal(await readyStatus(server), 200)
  // A reconnecting client gets a working engine.
  engine.on('thread/list', () => ({ result: { data: [], nextCursor: null } }))
  const again = await connect(server.wsUrl)
  t.teardown(() => again.close())
  await again.initialize('ide-a')
  t.same((await again.request('thread/list', {})).result, { data: [], nextCursor: null })
  t.equal(bClosed, false, 'the client without an upstream was never closed')
  t.same((await b.request('account/read', {})).result, { account: null, requiresOpenaiAuth: false }, 'and now hears the engine')
})

t.test('restarts back off: 200, 400, 800 ms … and a minute up starts again at 200 ms', async (t) => {
  const { engine, runner, server, clock } = await rig(t)
  await engineConn(engine, 'app-server-gateway')
  const scheduled = (): number[] => server.logs.lines.filter((l) => l.event === 'engine.restart_scheduled').map((l) => l.delayMs as number)
  for (let n = 1; n <= 4; n++) {
    runner.exit()
    t.equal(runner.status.state, 'unavailable')
    clock.advance(scheduled()[n - 1]!)
    t.equal(runner.status.state, 'running', `restarted after ${scheduled()[n - 1]} ms (${n})`)
  }
  t.same(scheduled(), [200, 400, 800, 1600])
  clock.advance(60_000)
  runner.exit()
  t.same(scheduled().slice(4), [200], 'back to the first delay after a minute up')
  await server.close()
  clock.advance(200)
  t.equal(runner.status.state, 'unavailable', 'closing the gateway cancelled the pending restart')
})

t.test('an engine that stops answering pings is killed and restarted', async (t) => {
  const { engine, runner, server, clock, keepAliveClock } = await rig(t)
  const control = await engineConn(engine, 'app-server-gateway')
  await control.request('account/read')
  let pings = 0
  control.socket.on('ping', () => (pings += 1))
  const pinged = async (n: number): Promise<void> => {
    while (pings < n) await new Promise((resolve) => control.socket.once('ping', resolve))
  }
  // Healthy: every 10 s a ping, and whatever comes back keeps it alive (checked past 30 s).
  for (let n = 1; n <= 4; n++) {
    keepAliveClock.advance(10_000)
    await pinged(n)
    // The gateway answering proves it has read the pong before it.
    t.match((await control.ask('probe/unknown', {})).error, { code: -32601 })
  }
  t.equal(runner.kills, 0, 'a healthy engine is left alone')

  // Its last word came after the 40 s tick; from now on the pings go unread.
  control.socket.pause()
  for (let n = 1; n <= 3; n++) keepAliveClock.advance(10_000)
  t.equal(runner.kills, 0, 'heard in the interval before the 50 s tick: 30 s later, not yet')
  keepAliveClock.advance(10_000)
  t.equal(runner.kills, 1, 'nothing back for 30 s of ticks: killed')
  t.match(server.logs.lines.find((l) => l.event === 'engine.hung'), { level: 50, silentMs: 30_000 })
  t.same(await health(server), { state: 'restarting', version: '0.169.0', reason: 'engine stopped answering' })
  t.equal(await readyStatus(server), 503)
  clock.advance(200)
  await (await engineConn(engine, 'app-server-gateway', 1)).request('account/logout')
  t.same(await health(server), { state: 'running', version: '0.169.0' })
})

t.test('a control connection lost while the engine runs: the engine is killed and restarted, no upstream opens without it', async (t) => {
  const { engine, runner, server, clock } = await rig(t)
  const control = await engineConn(engine, 'app-server-gateway')
  await control.request('account/logout')
  await until(() => server.app.engine.running, 'the engine to run')
  // The engine keeps running; only the gateway's control connection goes.
  control.socket.terminate()
  await until(() => clock.pendingDelays().includes(1_000), 'the grace before calling the loss a fault')
  t.equal(runner.kills, 0, 'not killed at once: a crashing engine closes it just before its exit')
  clock.advance(1_000)
  await until(() => runner.kills === 1, 'the engine to be killed')
  t.match(server.logs.lines.find((l) => l.event === 'engine.control_lost'), { level: 50 }, 'logged as an error')
  await until(() => server.logs.lines.some((l) => l.event === 'engine.restart_scheduled'), 'a restart to be scheduled')
  t.match(server.logs.lines.find((l) => l.event === 'engine.restart_scheduled'), { reason: 'lost the control connection' })
  t.equal((await health(server)).state, 'restarting')
  clock.advance(200)
  await until(() => server.app.engine.running, 'the engine to run again')
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  const init = await client.initialize('after-loss')
  t.type(init.userAgent, 'string', 'a client initializes against the restarted engine')
})
