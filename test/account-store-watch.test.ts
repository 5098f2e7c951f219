/**
 * One truth across processes: a server running in this process and the CLI's commands (run
 * in-process too, helpers/cli.ts) share a home. A CLI `login` or `logout` reaches the server's
 * connected clients as `account/updated` and, with the engine on, reaches the engine; the
 * server's own writes are not echoed; `account/read {refreshToken:true}` sees the store as it is.
 *
 * The store watch's periodic check runs on a manual clock that these tests never advance where
 * the watch itself is under test: a notification can then only come from `fs.watch`, which is
 * immediate, not from a timer. The periodic check has its own test (a home that appears later).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { StoreWatch } from '../src/account/store-watch.js'
import { createLogger } from '../src/log/logger.js'
import { canary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { connect, type RpcClient } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FakeEngine, type FakeEngineConnection } from './helpers/fake-engine.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture, startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]
type Json = Record<string, any>

/** A guard against a hang, not a measure: the notification is event-driven (fs.watch). */
const GUARD_MS = 10_000

async function serverWithClient(t: Test, options: { engine?: FakeEngine } = {}): Promise<{ home: string; server: TestServer; client: RpcClient }> {
  const home = tempDir('watch-home', t)
  const server = await startServer({
    argv: ['--home', home],
    account: { clock: new ManualClock() },
    ...(options.engine ? { engine: { runner: new AttachedEngine(options.engine.socketPath) } } : {}),
  })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  await client.initialize()
  return { home, server, client }
}

function updates(client: RpcClient): unknown[] {
  return client.notifications.filter((n) => n.method === 'account/updated').map((n) => n.params)
}

/** Waits for the `n`-th `account/updated` the client has received. */
async function nthUpdate(client: RpcClient, n: number, what: string): Promise<unknown> {
  await withTimeout(
    client.waitForFrame(() => updates(client).length >= n),
    GUARD_MS,
    what,
  )
  return updates(client)[n - 1]
}

const cli = (home: string, args: string[], input?: string) => runCommand(args, { env: { APP_SERVER_HOME: home }, ...(input === undefined ? {} : { input }) })

t.test('a CLI login and logout in the same home reach a connected client as account/updated', async (t) => {
  const { home, client } = await serverWithClient(t)
  t.same((await client.request('account/read', {})).result, { account: null, requiresOpenaiAuth: true })

  const key = canary('sk-proj')
  const login = await cli(home, ['login', '--with-api-key'], key)
  t.equal(login.code, 0, login.stderr)
  t.same(await nthUpdate(client, 1, 'account/updated after the CLI login'), { authMode: 'apikey', planType: null })
  t.same((await client.request('account/read', {})).result, { account: { type: 'apiKey' }, requiresOpenaiAuth: true }, 'the server answers the new account')

  const logout = await cli(home, ['logout'])
  t.equal(logout.code, 0, logout.stderr)
  t.same(await nthUpdate(client, 2, 'account/updated after the CLI logout'), { authMode: null, planType: null })
  t.same((await client.request('account/read', {})).result, { account: null, requiresOpenaiAuth: true })
  t.equal(updates(client).length, 2, 'one notification per change')
})

t.test("the server's own login is not echoed back by the watch", async (t) => {
  const { home, client } = await serverWithClient(t)
  const login = await client.request('account/login/start', { type: 'apiKey', apiKey: canary('sk-proj') })
  t.same(login.result, { type: 'apiKey' })
  t.same(await nthUpdate(client, 1, 'the login’s own account/updated'), { authMode: 'apikey', planType: null })
  // A later change from the CLI: had the server's own write been taken for news, its echo
  // (an event written before this one) would come first.
  const logout = await cli(home, ['logout'])
  t.equal(logout.code, 0, logout.stderr)
  t.same(await nthUpdate(client, 2, 'account/updated after the CLI logout'), { authMode: null, planType: null })
  t.same(updates(client), [
    { authMode: 'apikey', planType: null },
    { authMode: null, planType: null },
  ])
})

t.test('account/read {refreshToken:true} answers what the store holds now', async (t) => {
  const { home, client } = await serverWithClient(t)
  // Written as another process writes it: a whole file renamed into place.
  writeFileSync(join(home, 'auth.json.other'), JSON.stringify({ auth_mode: 'apikey', OPENAI_API_KEY: canary('sk-proj') }), { mode: 0o600 })
  renameSync(join(home, 'auth.json.other'), join(home, 'auth.json'))
  // Whichever comes first — the watch or this read — the answer is the stored account.
  const read = await client.request('account/read', { refreshToken: true })
  t.same(read.result, { account: { type: 'apiKey' }, requiresOpenaiAuth: true })
  t.same(await nthUpdate(client, 1, 'account/updated for the new account'), { authMode: 'apikey', planType: null })
})

/** Waits until the control connection has received `n` frames for `method`. */
async function nthCall(conn: FakeEngineConnection, method: string, n: number): Promise<Json> {
  const frames = (): Json[] => conn.frames.map((f) => JSON.parse(f) as Json).filter((f) => f.method === method)
  await withTimeout(
    conn.waitFor((f) => f.method === method && frames().length >= n),
    GUARD_MS,
    `${method} #${n} on the control connection`,
  )
  return frames()[n - 1]!
}

t.test('with the engine on, a CLI login and logout are handed to the engine', async (t) => {
  const engine = await FakeEngine.start()
  t.teardown(() => engine.close())
  const { home, client } = await serverWithClient(t, { engine })
  const control = await engine.connectionOf('app-server-gateway')
  await nthCall(control, 'account/logout', 1) // the start-up hand-off: nobody logged in

  const key = canary('sk-proj')
  t.equal((await cli(home, ['login', '--with-api-key'], key)).code, 0)
  t.same((await nthCall(control, 'account/login/start', 1)).params, { type: 'apiKey', apiKey: key }, 'the engine receives the new key')
  await nthUpdate(client, 1, 'account/updated after the CLI login')

  t.equal((await cli(home, ['logout'])).code, 0)
  await nthCall(control, 'account/logout', 2)
  t.pass('the engine is logged out too')
  t.same(updates(client), [
    { authMode: 'apikey', planType: null },
    { authMode: null, planType: null },
  ])
})

t.test('the periodic check notices a home that appears later, and the watch then attaches', async (t) => {
  const home = join(tempDir('watch-late', t), 'home')
  const clock = new ManualClock()
  let reloads = 0
  const watch = new StoreWatch({ mode: 'file', home, clock, log: createLogger('debug', new LogCapture()), reload: async () => void reloads++ })
  await watch.start()
  t.teardown(() => watch.close())
  t.equal(reloads, 0, 'nothing to read yet')

  mkdirSync(home, { mode: 0o700 })
  writeFileSync(join(home, 'auth.json'), '{}')
  clock.advance(999)
  t.equal(reloads, 0, 'no check before the period')
  clock.advance(1)
  await until(() => reloads === 1, 'the periodic check to re-read')

  // The watch attached on that check: the next change needs no clock.
  writeFileSync(join(home, 'auth.json.tmp'), '{"OPENAI_API_KEY":null}')
  renameSync(join(home, 'auth.json.tmp'), join(home, 'auth.json'))
  await until(() => reloads >= 2, 'fs.watch to report the rename', GUARD_MS)
  t.pass('reported by fs.watch')
})

t.test('an ephemeral store is not watched; close stops the periodic check', async (t) => {
  const clock = new ManualClock()
  const log = createLogger('debug', new LogCapture())
  const none = new StoreWatch({ mode: 'ephemeral', home: tempDir('watch-eph', t), clock, log, reload: async () => undefined })
  await none.start()
  t.equal(clock.pendingCount, 0, 'no timer for an ephemeral store')
  const keyring = new StoreWatch({ mode: 'keyring', home: tempDir('watch-kr', t), clock, log, reload: async () => undefined })
  await keyring.start()
  t.same(clock.pendingDelays(), [15_000], 'the keyring is re-read every 15 s')
  await keyring.close()
  t.equal(clock.pendingCount, 0, 'close cancels it')
})
