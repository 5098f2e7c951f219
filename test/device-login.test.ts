/**
 * Device-code login end to end: `account/login/start {type:"chatgptDeviceCode"}` over a real
 * socket, the gateway polling a real issuer on loopback (oidc-provider plus the device
 * endpoints, test/helpers/fake-device-issuer.ts) on a clock the test drives, and every way it
 * ends: approved (completed, then updated, saved, readable), `slow_down`, denied, expired, the
 * 15-minute limit, cancelled, superseded by a newer login, a forbidden workspace, a server
 * without device login. Then the hand-off to the engine, which sees the new tokens as it sees
 * a browser login's.
 *
 * Frames are checked against codex 0.169.0's schemas and logs for canaries (the device auth
 * id, codes, verifier and tokens); the user code is shown to the client, so it is checked
 * against the logs by hand.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { leakedCanaries, registerCanary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { connect } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FakeEngine } from './helpers/fake-engine.js'
import { ManualClock } from './helpers/manual-clock.js'
import { TestOAuthServer } from './helpers/oauth-server.js'
import { contextTest, type Conn, type Ctx, type Json, type TestT } from './helpers/rpc-context.js'
import { cliEnv, MAIN, spawnProcess } from './helpers/process.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const INTERVAL_MS = 5_000
const FIFTEEN_MINUTES_MS = 15 * 60 * 1000

const SCHEMAS = {
  results: {
    initialize: 'v1/InitializeResponse',
    'account/read': 'v2/GetAccountResponse',
    'account/login/start': 'v2/LoginAccountResponse',
    'account/login/cancel': 'v2/CancelLoginAccountResponse',
  },
  notifications: {
    'account/login/completed': 'v2/AccountLoginCompletedNotification',
    'account/updated': 'v2/AccountUpdatedNotification',
  },
}

const issuer = await TestOAuthServer.start()
t.teardown(() => issuer.close())
const device = issuer.device

interface Rig {
  readonly server: TestServer
  readonly clock: ManualClock
  readonly c: Conn
}

function deviceTest(name: string, fn: (t: TestT, ctx: Ctx, rig: Rig) => Promise<void>, argv: string[] = []): void {
  contextTest(name, SCHEMAS, 'device-login-test', async (t, ctx) => {
    device.enabled = true
    device.interval = String(INTERVAL_MS / 1000)
    const clock = new ManualClock()
    const server = await ctx.server({ argv, env: { AUTH_ISSUER: issuer.issuer, CHATGPT_BASE_URL: 'http://127.0.0.1:9/backend-api' }, account: { clock, watchStore: false } })
    const c = await ctx.initialized(server)
    await fn(t, ctx, { server, clock, c })
    const userCodes = device.issuedUserCodes()
    t.notOk(userCodes.some((code) => server.logs.text().includes(code)), 'no user code in the server log')
  })
}

async function startDevice(t: TestT, c: Conn): Promise<{ loginId: string; userCode: string }> {
  const reply = await c.call('account/login/start', { type: 'chatgptDeviceCode' })
  const result = reply.result as { type: string; loginId: string; verificationUrl: string; userCode: string } | undefined
  if (!result) throw new Error(`device login start failed: ${JSON.stringify(reply.error)}`)
  t.equal(result.type, 'chatgptDeviceCode')
  t.match(result.loginId, UUID, 'loginId is a uuid')
  t.equal(result.verificationUrl, `${issuer.issuer}/codex/device`, 'the issuer’s device page')
  t.equal(result.userCode, device.latest().userCode, 'the user code the issuer gave')
  return { loginId: result.loginId, userCode: result.userCode }
}

/** The waiting poll timer's delay (the other timer is the login's 15-minute limit; the store watch, whose timer would be a third, is off here). */
async function nextPollDelay(clock: ManualClock): Promise<number> {
  await until(() => clock.pendingCount === 2, 'the next poll to be scheduled')
  return clock.pendingDelays()[0]!
}

/** Lets the next poll happen and waits for the issuer to have answered it. */
async function poll(clock: ManualClock): Promise<void> {
  const before = device.totalPolls()
  clock.advance(await nextPollDelay(clock))
  await device.polled(before + 1)
}

function storedTokens(server: TestServer): { access_token: string; account_id: string | null } {
  const doc = JSON.parse(readFileSync(join(server.config.home, 'auth.json'), 'utf8')) as { tokens: { id_token: string; access_token: string; refresh_token: string; account_id: string | null } }
  for (const v of [doc.tokens.id_token, doc.tokens.access_token, doc.tokens.refresh_token]) registerCanary(v)
  return doc.tokens
}

async function noAccount(t: TestT, c: Conn, server: TestServer): Promise<void> {
  t.same((await c.call('account/read', {})).result, { account: null, requiresOpenaiAuth: true }, 'no account')
  t.equal(c.updatedCount(), 0, 'no account/updated')
  t.notOk(existsSync(join(server.config.home, 'auth.json')), 'nothing stored')
}

deviceTest('approved: polls at the issuer’s interval, exchanges, saves, then completed and updated', async (t, ctx, { server, clock, c }) => {
  const other = await ctx.initialized(server)
  const { loginId, userCode } = await startDevice(t, c)
  t.same(device.clientIds.at(-1), issuer.clientId, 'the user code is asked for with the client id')
  t.equal(await nextPollDelay(clock), INTERVAL_MS, 'the first poll waits the interval')
  clock.advance(INTERVAL_MS - 1)
  t.equal(device.totalPolls(), 0, 'not a poll before the interval')

  await poll(clock)
  t.equal(device.latest().polls, 1, 'one poll: still pending')
  t.equal(await nextPollDelay(clock), INTERVAL_MS, 'pending: the same interval again')

  await device.approve(userCode, { accountId: 'ws-device', email: 'device@example.com', planType: 'pro' })
  await poll(clock)
  t.same(await c.completed(loginId), { loginId, success: true, error: null })
  t.same(await c.updates(1), [{ authMode: 'chatgpt', planType: 'pro' }])
  const frames = c.frames()
  t.ok(frames.findIndex((m) => m.method === 'account/login/completed') < frames.findIndex((m) => m.method === 'account/updated'), 'completed before updated')
  await other.completed(loginId)
  t.same(await other.updates(1), [{ authMode: 'chatgpt', planType: 'pro' }], 'every connection is told')
  t.same((await c.call('account/read', {})).result, { account: { type: 'chatgpt', email: 'device@example.com', planType: 'pro' }, requiresOpenaiAuth: true })
  t.equal(storedTokens(server).account_id, 'ws-device', 'saved through the account service')
  t.equal(clock.pendingCount, 0, 'no poll and no deadline left')
})

deviceTest('slow_down lengthens the interval by 5 s each time, for the rest of the login', async (t, _ctx, { clock, c }) => {
  const { loginId, userCode } = await startDevice(t, c)
  device.slowDown(userCode, 2)
  await poll(clock)
  t.equal(await nextPollDelay(clock), INTERVAL_MS + 5_000, 'first slow_down: 10 s')
  await poll(clock)
  t.equal(await nextPollDelay(clock), INTERVAL_MS + 10_000, 'second slow_down: 15 s')
  await poll(clock)
  t.equal(await nextPollDelay(clock), INTERVAL_MS + 10_000, 'a pending answer keeps the longer interval')
  await device.approve(userCode, { accountId: 'ws-slow', email: 'slow@example.com' })
  await poll(clock)
  t.same(await c.completed(loginId), { loginId, success: true, error: null })
  t.equal(device.latest().polls, 4)
})

deviceTest('the interval: "0" is floored at 1 s, an unreadable one is 5 s; another poll error ends the login', async (t, _ctx, { server, clock, c }) => {
  device.interval = '0'
  const fast = await startDevice(t, c)
  t.equal(await nextPollDelay(clock), 1_000, 'never a busy loop')
  device.interval = 'soon'
  const unreadable = await startDevice(t, c)
  t.same(await c.completed(fast.loginId), { loginId: fast.loginId, success: false, error: 'Login cancelled' })
  t.equal(await nextPollDelay(clock), 5_000, 'the default')
  device.failNextPoll(500, { error: { message: `echo ${unreadable.userCode}` } })
  await poll(clock)
  t.same(await c.completed(unreadable.loginId), { loginId: unreadable.loginId, success: false, error: 'device auth failed with status 500' })
  await noAccount(t, c, server)
})

deviceTest('denied: completed success:false with a clear error, nothing stored', async (t, _ctx, { server, clock, c }) => {
  const { loginId, userCode } = await startDevice(t, c)
  device.deny(userCode)
  await poll(clock)
  t.same(await c.completed(loginId), { loginId, success: false, error: 'Device code login was denied.' })
  await noAccount(t, c, server)
  t.equal(clock.pendingCount, 0, 'polling stopped')
})

deviceTest('expired at the issuer, or 15 minutes without approval: completed success:false', async (t, _ctx, { server, clock, c }) => {
  const first = await startDevice(t, c)
  device.expire(first.userCode)
  await poll(clock)
  t.same(await c.completed(first.loginId), { loginId: first.loginId, success: false, error: 'The device code expired before it was used. Start the login again.' })

  const second = await startDevice(t, c)
  await nextPollDelay(clock)
  const before = device.totalPolls()
  clock.advance(FIFTEEN_MINUTES_MS)
  await device.polled(before + 1)
  t.same(await c.completed(second.loginId), { loginId: second.loginId, success: false, error: 'device auth timed out after 15 minutes' })
  await until(() => clock.pendingCount === 0, 'polling to stop')
  await noAccount(t, c, server)
})

deviceTest('account/login/cancel and a newer login stop the polling', async (t, _ctx, { server, clock, c }) => {
  const { loginId } = await startDevice(t, c)
  await poll(clock)
  t.same((await c.call('account/login/cancel', { loginId })).result, { status: 'canceled' })
  t.same(await c.completed(loginId), { loginId, success: false, error: 'Login cancelled' })
  const polls = device.totalPolls()
  clock.advance(FIFTEEN_MINUTES_MS)
  t.equal(device.totalPolls(), polls, 'no poll after the cancel')
  t.same((await c.call('account/login/cancel', { loginId })).result, { status: 'notFound' })

  const superseded = await startDevice(t, c)
  const browser = (await c.call('account/login/start', { type: 'chatgpt' })).result as { loginId: string }
  t.same(await c.completed(superseded.loginId), { loginId: superseded.loginId, success: false, error: 'Login cancelled' }, 'a browser login supersedes it')
  // Less than the browser login's own 10-minute limit, many device intervals.
  clock.advance(60_000)
  t.equal(device.totalPolls(), polls, 'no poll after a newer login')
  const next = await startDevice(t, c)
  t.same(await c.completed(browser.loginId), { loginId: browser.loginId, success: false, error: 'Login cancelled' }, 'and a device login supersedes a browser one')
  t.same((await c.call('account/login/cancel', { loginId: next.loginId })).result, { status: 'canceled' })
  await noAccount(t, c, server)
})

deviceTest(
  'forced workspace: an approval for another workspace fails with codex’s wording and is revoked',
  async (t, _ctx, { server, clock, c }) => {
    const { loginId, userCode } = await startDevice(t, c)
    await device.approve(userCode, { accountId: 'ws-elsewhere', email: 'elsewhere@example.com' })
    const revokes = issuer.hits.get('/oauth/revoke') ?? 0
    await poll(clock)
    t.same(await c.completed(loginId), { loginId, success: false, error: 'Login is restricted to workspace id(s) ws-allowed.' })
    t.equal(issuer.hits.get('/oauth/revoke') ?? 0, revokes + 1, 'the unwanted tokens are revoked')
    await noAccount(t, c, server)
  },
  ['--forced-chatgpt-workspace-id', 'ws-allowed'],
)

deviceTest('no device login at the issuer (404), or ChatGPT login forbidden: refused with codex’s wording', async (t, _ctx, { c }) => {
  device.enabled = false
  const reply = await c.call('account/login/start', { type: 'chatgptDeviceCode' })
  t.same(reply.error, { code: -32600, message: 'device code login is not enabled for this Codex server. Use the browser login or verify the server URL.' })
})

deviceTest(
  'forced API login refuses the device login before asking the issuer',
  async (t, _ctx, { c }) => {
    const asked = device.clientIds.length
    const reply = await c.call('account/login/start', { type: 'chatgptDeviceCode' })
    t.same(reply.error, { code: -32600, message: 'ChatGPT login is disabled. Use API key login instead.' })
    t.equal(device.clientIds.length, asked, 'the issuer was not asked')
  },
  ['--forced-login-method', 'api'],
)

t.test('with the engine on, a device login’s tokens are handed to the engine like a browser login’s', async (t) => {
  const engine = await FakeEngine.start()
  engine.on('account/login/start', (p) => ({ result: { type: (p as Json).type as string } }))
  engine.on('account/logout', () => ({ result: {} }))
  engine.on('account/read', () => ({ result: { account: null, requiresOpenaiAuth: true } }))
  const clock = new ManualClock()
  const server = await startServer({
    env: { AUTH_ISSUER: issuer.issuer, CHATGPT_BASE_URL: 'http://127.0.0.1:9/backend-api' },
    engine: { runner: new AttachedEngine(engine.socketPath) },
    account: { clock, watchStore: false },
  })
  t.teardown(async () => {
    await server.close()
    await engine.close()
  })
  const ctl = await engine.connectionOf('app-server-gateway')
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  await client.initialize('ide')
  device.enabled = true
  const start = await client.request('account/login/start', { type: 'chatgptDeviceCode' })
  const { loginId, userCode } = start.result as { loginId: string; userCode: string }
  await device.approve(userCode, { accountId: 'ws-engine', email: 'engine@example.com', planType: 'plus' })
  await poll(clock)
  await client.waitForFrame((m) => m.method === 'account/login/completed' && (m.params as Json).loginId === loginId)
  const handoff = JSON.parse(await ctl.waitFor((f) => f.method === 'account/login/start')) as Json
  const stored = storedTokens(server)
  t.same(handoff.params, { type: 'chatgptAuthTokens', accessToken: stored.access_token, chatgptAccountId: 'ws-engine', chatgptPlanType: 'plus' })
  t.notOk(server.logs.text().includes(userCode), 'no user code in the log')
})

// ---------------------------------------------------------------------------------------------
// The command line: `login --device-auth`, and the browser login's wait, in-process on a clock
// the test drives; Ctrl-C in a real process (the signal is the point).

function cliEnvFor(home: string): Record<string, string> {
  return { APP_SERVER_HOME: home, AUTH_ISSUER: issuer.issuer, APP_SERVER_LOGIN_CALLBACK_PORT: '0', CHATGPT_BASE_URL: 'http://127.0.0.1:9/backend-api' }
}

/** Resolves with the first match of `re` in a stream `runCommand` reports through `onStdout` / `onStderr`. */
function watch(re: RegExp): { seen: Promise<RegExpExecArray>; onText: (text: string) => void } {
  let found!: (m: RegExpExecArray) => void
  const seen = new Promise<RegExpExecArray>((resolve) => (found = resolve))
  return {
    seen,
    onText: (text) => {
      const m = re.exec(text)
      if (m) found(m)
    },
  }
}

const CODE_LINE = /one-time code[^\n]*\n {3}(\S+)\n/

t.test('CLI: login --device-auth prints the URL and the code, waits, signs in', async (t) => {
  const home = tempDir('device-cli')
  const clock = new ManualClock()
  const shown = watch(CODE_LINE)
  const run = runCommand(['login', '--device-auth'], { env: cliEnvFor(home), clock, onStdout: shown.onText })
  const userCode = (await shown.seen)[1]!
  t.equal(userCode, device.latest().userCode)
  await device.approve(userCode, { accountId: 'ws-cli-device', email: 'cli-device@example.com', planType: 'plus' })
  await poll(clock)
  const r = await run
  t.equal(r.code, 0, r.stderr)
  t.equal(
    r.stdout,
    [
      'To sign in with ChatGPT from any device:',
      '',
      '1. Open this link in a browser and sign in:',
      `   ${issuer.issuer}/codex/device`,
      '',
      '2. Enter this one-time code (expires in 15 minutes):',
      `   ${userCode}`,
      '',
      'Device codes are a common phishing target. Never share this code.',
      'Successfully logged in',
      '',
    ].join('\n'),
  )
  t.equal(r.stderr, 'Waiting up to 15 minutes for the sign-in to complete (Ctrl-C to cancel)...\n', 'piped: one plain line, no countdown')
  const doc = JSON.parse(readFileSync(join(home, 'auth.json'), 'utf8')) as { tokens: { id_token: string; access_token: string; refresh_token: string; account_id: string } }
  for (const v of [doc.tokens.id_token, doc.tokens.access_token, doc.tokens.refresh_token]) registerCanary(v)
  t.equal(doc.tokens.account_id, 'ws-cli-device')
  t.same(leakedCanaries(r.stdout + r.stderr), [], 'no token in the output')
})

t.test('CLI: --device-auth with --with-api-key is refused; an issuer without device login says so', async (t) => {
  const both = await runCommand(['login', '--device-auth', '--with-api-key'], { env: cliEnvFor(tempDir('device-cli-both')), input: '' })
  t.same([both.code, both.stderr], [2, 'error: --with-api-key and --device-auth cannot be used together\n'])
  device.enabled = false
  t.teardown(() => (device.enabled = true))
  const off = await runCommand(['login', '--device-auth'], { env: cliEnvFor(tempDir('device-cli-off')) })
  t.same([off.code, off.stdout, off.stderr], [1, '', 'error: device code login is not enabled for this Codex server. Use the browser login or verify the server URL.\n'])
})

t.test('CLI: on a terminal the device login counts down; a denial ends it with exit 1', async (t) => {
  const clock = new ManualClock()
  const shown = watch(CODE_LINE)
  let stderr = ''
  const run = runCommand(['login', '--device-auth'], { env: cliEnvFor(tempDir('device-cli-tty')), clock, tty: true, onStdout: shown.onText, onStderr: (s) => (stderr = s) })
  const userCode = (await shown.seen)[1]!
  await until(() => stderr.includes('Time left: 15:00'), 'the countdown')
  clock.advance(1_000)
  t.match(stderr, /\r\x1b\[KTime left: 14:59$/, 'rewritten in place each second')
  const before = device.totalPolls()
  clock.advance(4_000)
  await device.polled(before + 1)
  t.match(stderr, /Time left: 14:55$/)
  device.deny(userCode)
  await until(() => clock.pendingDelays().length === 3, 'the next poll to be scheduled')
  clock.advance(INTERVAL_MS)
  const r = await run
  t.equal(r.code, 1)
  t.match(r.stderr, /\r\x1b\[Kerror: login failed: Device code login was denied\.\n$/, 'the countdown line is cleared first')
})

t.test('CLI: the browser login says how long it waits, counts down on a terminal, and times out', async (t) => {
  const clock = new ManualClock()
  const url = watch(/http:\/\/127\.0\.0\.1:\d+\/oauth\/authorize\?\S+/)
  let stderr = ''
  const run = runCommand(['login'], {
    env: cliEnvFor(tempDir('browser-cli-tty')),
    clock,
    tty: true,
    onStderr: (s) => {
      stderr = s
      url.onText(s)
    },
  })
  const authUrl = (await url.seen)[0]
  registerCanary(new URL(authUrl).searchParams.get('state') ?? '')
  t.match(stderr, /Waiting up to 10 minutes for the sign-in to complete \(Ctrl-C to cancel\)\.\.\.\n\r\x1b\[KTime left: 10:00$/)
  clock.advance(61_000)
  t.match(stderr, /Time left: 8:59$/)
  // A stray request cannot end it.
  const redirect = new URL(authUrl).searchParams.get('redirect_uri') ?? ''
  t.equal((await fetch(`${redirect}?code=stray&state=wrong`)).status, 400)
  clock.advance(10 * 60_000 - 61_000)
  const r = await run
  t.equal(r.code, 1)
  t.match(r.stderr, /error: login failed: Login timed out\n$/)
})

t.test('CLI: the browser login completes while counting down', async (t) => {
  const clock = new ManualClock()
  const url = watch(/http:\/\/127\.0\.0\.1:\d+\/oauth\/authorize\?\S+/)
  const run = runCommand(['login'], { env: cliEnvFor(tempDir('browser-cli')), clock, tty: true, onStderr: url.onText })
  const authUrl = (await url.seen)[0]
  clock.advance(5_000)
  const page = await issuer.driveBrowserLogin(authUrl, { accountId: 'ws-cli-browser', email: 'cli-browser@example.com' })
  t.equal(page.status, 200)
  const r = await run
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'Successfully logged in\n')
  t.match(r.stderr, /Time left: 9:55\r\x1b\[K$/, 'the countdown line is cleared at the end')
})

t.test('CLI: Ctrl-C cancels a device login cleanly (exit 130)', async (t) => {
  const home = tempDir('device-cli-sigint')
  const login = spawnProcess(process.execPath, [MAIN, 'login', '--device-auth'], { env: cliEnv(cliEnvFor(home)) })
  t.teardown(() => login.kill())
  await login.waitFor('stdout', CODE_LINE)
  await login.waitFor('stderr', /Ctrl-C to cancel/)
  login.child.kill('SIGINT')
  const exit = await login.exited
  t.same(exit, { code: 130, signal: null })
  t.match(login.stderr(), /Login cancelled\n$/)
  t.notOk(existsSync(join(home, 'auth.json')), 'nothing stored')
})
