/**
 * Engine faults against the real codex engine, the gateway in-process with a fake Responses
 * API: the engine SIGKILLed (clients answered and closed 1012, a client without an upstream
 * untouched, `/healthz` `restarting` then `running`, `/readyz` 503 between, a reconnecting
 * client runs a whole turn), the engine SIGSTOPped (found by the control keepalive on a
 * manual clock, killed, restarted), and an engine that exits at once on a bad
 * `--engine-config` (restarted with growing delays, never a storm; the gateway's own methods
 * keep working). Each test logs the timeline a client saw, in ms from the fault.
 *
 * Skips (saying why) only when the engine binary is not installed; under CI it fails instead.
 */
import t from 'tap'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { connect, httpGet, type RpcClient } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test
type Json = Record<string, any>

// The engine's `bash -lc` hangs on the real HOME's login profile; a throwaway one instead.
process.env.HOME = tempDir('engine-faults-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

async function gateway(t: Test, extra: { argv?: string[]; engine?: NonNullable<Parameters<typeof startServer>[0]>['engine'] } = {}): Promise<{ server: TestServer; model: FakeModel }> {
  const model = await FakeModel.start({ defaultText: 'Back after the restart.', defaultDeltas: 3 })
  t.teardown(() => model.close())
  const server = await startServer({
    argv: ['--engine', 'on', '--engine-home', tempDir('engine-faults-codex-home', t), ...model.engineConfigOverrides().flatMap((o) => ['--engine-config', o]), ...(extra.argv ?? [])],
    ...(extra.engine ? { engine: extra.engine } : {}),
  })
  t.teardown(() => server.close())
  return { server, model }
}

const health = async (server: TestServer): Promise<Json> => JSON.parse((await httpGet(`${server.httpBase}/healthz`)).body).engine as Json

/** Kills `pid` in teardown whatever happened, so no stopped engine is left behind. */
function reap(t: Test, pid: number): void {
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  })
}

async function startedThread(c: RpcClient, t: Test): Promise<string> {
  const thread = await c.request('thread/start', { cwd: tempDir('engine-faults-work', t) })
  return (thread.result as Json).thread.id as string
}

async function completedTurn(c: RpcClient, threadId: string): Promise<Json | undefined> {
  const before = c.frames.length
  await c.request('turn/start', { threadId, input: [{ type: 'text', text: 'hello again', text_elements: [] }] })
  await c.waitForFrame(() => c.frames.slice(before).some((f) => (JSON.parse(f) as Json).method === 'turn/completed'))
  return c.frames.slice(before).map((f) => JSON.parse(f) as Json).find((m) => m.method === 'turn/completed')
}

// One gateway and engine for both faults the engine recovers from (each engine start costs most
// of a second of CPU): the SIGKILL's restarted engine is the one SIGSTOPped. The keepalive runs
// on a manual clock throughout, so only the SIGSTOP test's advances can find a hang. An engine
// a test restarts outlives that test: it is reaped with the gateway.
t.test('a running engine that fails', { skip: absent ?? false }, async (group) => {
  const keepAliveClock = new ManualClock()
  const { server } = await gateway(group, { engine: { keepAlive: { timers: keepAliveClock } } })
  const count = (event: string): number => server.logs.lines.filter((l) => l.event === event).length
  // A killed engine's sockets close (and its clients with them) before its exit is reported:
  // health is read once the gateway has seen the exit and scheduled the restart.
  const restartScheduled = (before: number): Promise<void> => until(() => count('engine.restart_scheduled') > before, 'the restart to be scheduled', 20_000)

  group.test('SIGKILL: clients answered and closed 1012, restarting then running, a reconnect runs a turn', async (t) => {
    t.equal((await server.app.engine.settled()).state, 'running')
    const pid = server.app.engine.pid!
    reap(t, pid)
    const a = await connect(server.wsUrl)
    t.teardown(() => a.close())
    await a.initialize('faults-a')
    await startedThread(a, t)
    const b = await connect(server.wsUrl)
    t.teardown(() => b.close())
    let bClosed = false
    void b.closed.then(() => (bClosed = true))

    const timeline: string[] = []
    const t0 = Date.now()
    const at = (what: string): void => void timeline.push(`${Date.now() - t0} ms ${what}`)
    a.sendRaw('{"id":"in-flight","method":"thread/loaded/list","params":{}}')
    const restarts = count('engine.restart_scheduled')
    process.kill(pid, 'SIGKILL')
    const closed = await a.closed
    at(`A closed ${closed.code} ${closed.reason}`)
    t.same(closed, { code: 1012, reason: 'engine restarted' })
    const reply = a.frames.map((f) => JSON.parse(f) as Json).find((m) => m.id === 'in-flight')
    // Forwarded before the upstream closed: answered engine unavailable; read after it: never sent on.
    if (reply !== undefined) t.same(reply.error, { code: -32603, message: 'engine unavailable' }, 'the request in flight is answered')
    at(`A's request in flight: ${reply === undefined ? 'not yet forwarded when the engine went' : JSON.stringify(reply.error)}`)
    await restartScheduled(restarts)
    const down = await health(server)
    at(`/healthz ${down.state} (${down.reason})`)
    t.same(down, { state: 'restarting', version: '0.169.0', reason: 'engine exited (signal SIGKILL)' })
    t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 503)
    t.match(await b.initialize('faults-b'), { userAgent: /^faults-b\// }, "B: the gateway's own initialize while down")

    await until(() => server.app.engine.status.state === 'running' && server.app.engine.pid !== pid, 'the engine back', 20_000)
    at('/healthz running')
    t.not(server.app.engine.pid, pid, 'a new engine process')
    reap(group, server.app.engine.pid!)
    t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 200)

    const again = await connect(server.wsUrl)
    t.teardown(() => again.close())
    await again.initialize('faults-a')
    at('A reconnected and initialized')
    const completed = await completedTurn(again, await startedThread(again, t))
    at('A turn completed')
    t.match(completed?.params, { turn: { status: 'completed' } }, 'a whole turn on the restarted engine')
    t.equal(bClosed, false, 'B (no upstream) was never closed')
    t.same((await b.request('account/read', {})).result, { account: null, requiresOpenaiAuth: false }, "B hears the restarted engine's answer")
    t.comment(`SIGKILL timeline: ${timeline.join('; ')}`)
  })

  group.test('SIGSTOP: the control keepalive finds the hang, kills and restarts', async (t) => {
    t.equal((await server.app.engine.settled()).state, 'running')
    // This engine's hand-off (one per engine start): the keepalive runs on the control connection it opened.
    await until(() => count('engine.credentials') >= count('engine.spawn'), 'the hand-off')
    const pid = server.app.engine.pid!
    reap(t, pid)
    const a = await connect(server.wsUrl)
    t.teardown(() => a.close())
    await a.initialize('hang-a')

    const timeline: string[] = []
    const restarts = count('engine.restart_scheduled')
    process.kill(pid, 'SIGSTOP')
    let silentFor = 0
    while (!server.logs.lines.some((l) => l.event === 'engine.hung') && silentFor < 60_000) {
      keepAliveClock.advance(10_000)
      silentFor += 10_000
    }
    t.match(server.logs.lines.find((l) => l.event === 'engine.hung'), { level: 50 }, 'the hang is logged')
    t.ok(silentFor <= 40_000, `found ${silentFor / 1000} s (keepalive clock) after the stop`)
    timeline.push(`hang found at ${silentFor / 1000} s of keepalive time`)
    const t0 = Date.now()
    const closed = await a.closed
    timeline.push(`${Date.now() - t0} ms after: A closed ${closed.code} ${closed.reason}`)
    t.same(closed, { code: 1012, reason: 'engine restarted' })
    await restartScheduled(restarts)
    t.match(await health(server), { state: 'restarting', reason: 'engine stopped answering' })
    await until(() => server.app.engine.status.state === 'running' && server.app.engine.pid !== pid, 'the engine back', 20_000)
    timeline.push(`${Date.now() - t0} ms after: running again`)
    reap(group, server.app.engine.pid!)
    t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, 'the stopped engine is gone')
    const again = await connect(server.wsUrl)
    t.teardown(() => again.close())
    t.match(await again.initialize('hang-a'), { userAgent: /\/0\.169\.0 / }, "the new engine's initialize")
    t.comment(`SIGSTOP timeline: ${timeline.join('; ')}`)
  })
})

t.test('an engine that exits at once: restarted with growing delays; the gateway serves its own methods', { skip: absent ?? false }, async (t) => {
  const clock = new ManualClock()
  const { server } = await gateway(t, { argv: ['--engine-config', 'approval_policy="not-a-policy"'], engine: { clock, random: () => 0.5 } })
  const scheduled = (): Json[] => server.logs.lines.filter((l) => l.event === 'engine.restart_scheduled')
  for (let n = 1; n <= 3; n++) {
    await until(() => scheduled().length >= n, `restart ${n} scheduled`, 20_000)
    if (n === 1) {
      t.same(await health(server), { state: 'unavailable', version: '0.169.0', reason: 'engine exited during start-up (code 1)' }, 'says it and why')
      t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 503)
      const c = await connect(server.wsUrl)
      t.teardown(() => c.close())
      await c.initialize('bad-start')
      t.same((await c.request('account/read', {})).result, { account: null, requiresOpenaiAuth: true }, "the gateway's own methods work")
      t.same((await c.request('thread/start', {})).error, { code: -32603, message: 'engine unavailable' })
    }
    clock.advance(scheduled()[n - 1]!.delayMs as number)
  }
  await until(() => scheduled().length >= 4, 'restart 4 scheduled', 20_000)
  t.same(scheduled().map((l) => l.delayMs), [200, 400, 800, 1600], 'backing off, not storming')
  t.match(server.logs.lines.find((l) => l.event === 'engine.exit'), { level: 50, code: 1, duringStartup: true }, 'the cause is logged')
  t.equal(server.logs.lines.filter((l) => l.event === 'engine.spawn').length, 4, 'one spawn per attempt, none while waiting')
})
