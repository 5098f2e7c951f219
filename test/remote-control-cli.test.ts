/**
 * `app-server remote-control [--json]` against the fake backend (helpers/fake-remote-backend.ts):
 * the server starts logged in with ChatGPT tokens from `$APP_SERVER_HOME/auth.json`, enrolls,
 * connects, and prints one announcement line on stdout (`This machine is available for remote
 * control as NAME.`, or the `--json` object).
 *
 * The process itself is tested once, as a real subprocess (`dist/src/main.js`): stdout holds
 * the one line while the banner and logs go to stderr, the enroll request and the handshake the
 * backend saw, the server being a real app server (banner, local client with the printed token,
 * `remoteControl/status/read`), a remote client initializing through the relay, SIGTERM → exit
 * 0, and no secret on stdout or stderr. What the announcement says in the other cases (`--json`
 * connected, a backend that never accepts, waiting for a login, an API key) is the command's
 * announcement of an in-process server, as `runCli` makes it; the never-accepting backend's wait
 * and the reconnect backoff run on a manual clock.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { Writable } from 'node:stream'
import { join } from 'node:path'
import t from 'tap'
import { VERSION } from '../src/version.js'
import { canary, leakedCanaries, record, registerCanary } from './helpers/canary.js'
import { connect, httpGet, refuse } from './helpers/client.js'
import { codexErrors } from './helpers/codex-schemas.js'
import { ENROLL_PATH, FakeRemoteBackend, WEBSOCKET_PATH, type BackendRequest, type Json } from './helpers/fake-remote-backend.js'
import { startCli, type RunningServer } from './helpers/process.js'
import { startServer, type TestServer } from './helpers/server.js'
import { runCommand } from './helpers/cli.js'
import { ManualClock } from './helpers/manual-clock.js'
import { accountKindOf, announceRemoteControl } from '../src/cli/remote-control-command.js'
import { until, withTimeout } from './helpers/wait.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]

/** The server name the CLI uses: the machine's hostname. */
const HOST = hostname()
const ACCOUNT_ID = 'acct-rc-cli-1'
const AUTH_CLAIM = 'https://api.openai.com/auth'
const STATUS_SCHEMA = 'v2/RemoteControlStatusChangedNotification'
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
/** Enroll + connect happen right after start-up; generous for a loaded machine. */
const ANNOUNCE_WAIT_MS = 20_000

/** An empty working directory, so no stray `.env` is read. */
const cwd = mkdtempSync(join(tmpdir(), 'app-server-rc-cli-'))
t.teardown(() => rmSync(cwd, { recursive: true, force: true }))

function announcement(name: string): string {
  return `This machine is available for remote control as ${name}.\n`
}

function b64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64')
}

function header(req: BackendRequest | undefined, name: string): string | undefined {
  const v = req?.headers[name]
  return Array.isArray(v) ? v.join(',') : v
}

/** An unsigned JWT-shaped token (non-empty third segment: a token needs three non-empty parts), registered as a canary. */
function unsignedJwt(claims: Record<string, unknown>): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return registerCanary(`${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ ...claims, jti: canary('jti') })}.c2ln`)
}

interface Run {
  readonly backend: FakeRemoteBackend
  readonly home: string
  readonly srv: RunningServer
  /** The ChatGPT access, id and refresh tokens written to auth.json (canaries). */
  readonly access: string
  readonly idToken: string
  readonly refresh: string
  /** stdout once the announcement line has arrived. */
  readonly line: string
}

/** A home whose auth.json holds ChatGPT tokens with an account id (the CLI starts logged in). */
function chatgptHome(home = mkdtempSync(join(tmpdir(), 'app-server-rc-cli-home-'))): { home: string; access: string; idToken: string; refresh: string } {
  const exp = Math.floor(Date.now() / 1000) + 3600
  const access = unsignedJwt({ exp, [AUTH_CLAIM]: { chatgpt_account_id: ACCOUNT_ID, chatgpt_plan_type: 'plus' } })
  const idToken = unsignedJwt({ exp, email: 'rc-cli@example.com', [AUTH_CLAIM]: { chatgpt_account_id: ACCOUNT_ID, chatgpt_plan_type: 'plus' } })
  const refresh = canary('rt')
  // Written whole and renamed into place, as a `login` in another process writes it.
  writeFileSync(
    join(home, 'auth.json.new'),
    JSON.stringify({
      auth_mode: 'chatgpt',
      OPENAI_API_KEY: null,
      tokens: { id_token: idToken, access_token: access, refresh_token: refresh, account_id: ACCOUNT_ID },
      last_refresh: new Date().toISOString(),
    }),
    { mode: 0o600 },
  )
  renameSync(join(home, 'auth.json.new'), join(home, 'auth.json'))
  return { home, access, idToken, refresh }
}

/**
 * `app-server remote-control …` against `backend`, in `home`. Teardown: SIGKILL if still running,
 * stdout and stderr recorded for the canary check, backend closed, home removed.
 */
async function startForeground(t: TestT, args: readonly string[], home: string, backend: FakeRemoteBackend): Promise<RunningServer> {
  const srv = await startCli(['remote-control', ...args], { cwd, env: { APP_SERVER_HOME: home, CHATGPT_BASE_URL: backend.baseUrl } })
  t.teardown(async () => {
    await srv.stop('SIGKILL')
    record(srv.stdout())
    record(srv.stderr())
    await backend.close()
    rmSync(home, { recursive: true, force: true })
  })
  return srv
}

/**
 * Starts the fake backend and `app-server remote-control` against it, and waits for the
 * announcement line on stdout. Teardown: SIGKILL if still running, backend closed; stdout and
 * stderr recorded for the canary check.
 */
async function startRemoteControl(t: TestT): Promise<Run> {
  const backend = await FakeRemoteBackend.start()
  const { home, access, idToken, refresh } = chatgptHome()
  const srv = await startForeground(t, ['--listen', 'ws://127.0.0.1:0', '--login-callback-port', '0', '--log-level', 'debug'], home, backend)
  try {
    await until(() => srv.stdout().includes('\n'), 'the announcement line on stdout', ANNOUNCE_WAIT_MS)
  } catch (err) {
    throw new Error(`${(err as Error).message}; stdout: ${JSON.stringify(srv.stdout())}; backend: ${backend.requests.map((r) => `${r.endpoint}:${r.status}`).join(' ')}; stderr: ${srv.stderr()}`)
  }
  return { backend, home, srv, access, idToken, refresh, line: srv.stdout() }
}

/** No ChatGPT token, refresh token or remote_control_token on stdout or stderr (asserted, and recorded for the exit-time canary check). */
function assertNoSecrets(t: TestT, run: Run): void {
  assertNoSecretsIn(t, run, run.backend, [
    ['stdout', run.srv.stdout()],
    ['stderr', run.srv.stderr()],
  ])
}

/** No ChatGPT token, refresh token or remote_control_token in any of `outputs` (asserted, and recorded for the exit-time canary check). */
function assertNoSecretsIn(
  t: TestT,
  tokens: { readonly access: string; readonly idToken: string; readonly refresh: string },
  backend: FakeRemoteBackend,
  outputs: readonly (readonly [string, string])[],
): void {
  for (const [, text] of outputs) record(text)
  const secrets: [string, string][] = [
    ['ChatGPT access token', tokens.access],
    ['ChatGPT id token', tokens.idToken],
    ['ChatGPT refresh token', tokens.refresh],
    ...backend.grants.map((g, i): [string, string] => [`remote_control_token #${i + 1}`, g.token]),
  ]
  t.ok(backend.grants.length >= 1, 'at least one remote_control_token was issued (and checked)')
  for (const [stream, text] of outputs) {
    t.same(
      secrets.filter(([, s]) => text.includes(s) || text.includes(encodeURIComponent(s)) || text.includes(Buffer.from(s).toString('base64'))).map(([what]) => what),
      [],
      `${stream}: no ChatGPT token, refresh token or remote_control_token (${secrets.length} checked)`,
    )
    t.same(leakedCanaries(text), [], `${stream}: no canary at all`)
  }
}

/** Last on its server: ends it with SIGTERM. */
async function announcesAndExits(t: TestT, run: Run): Promise<void> {
  const { backend, srv } = run
  t.equal(run.line, announcement(HOST), 'stdout: exactly "This machine is available for remote control as <hostname>."')

  // What the backend saw: one enroll with the ChatGPT credential, then the handshake.
  t.same(
    backend.requests.map((r) => `${r.endpoint}:${r.status}`),
    ['enroll:200', 'websocket:101'],
    'enroll, then an accepted handshake',
  )
  const enroll = backend.of('enroll')[0]
  t.equal(enroll?.url, ENROLL_PATH)
  t.equal(enroll?.body?.name, HOST, 'enroll names the server after the hostname')
  t.match(enroll?.body?.installation_id, UUID_RE)
  t.equal(header(enroll, 'authorization'), `Bearer ${run.access}`, 'enroll uses the stored ChatGPT access token')
  t.equal(header(enroll, 'chatgpt-account-id'), ACCOUNT_ID, 'and the stored account id')
  const grant = backend.grants[0]
  const conn = backend.connections[0]
  t.ok(conn, 'the backend accepted a WebSocket')
  const ws = conn?.request
  t.equal(ws?.url, WEBSOCKET_PATH)
  t.equal(header(ws, 'authorization'), `Bearer ${grant?.token}`, 'the handshake carries the remote_control_token')
  t.equal(header(ws, 'x-codex-server-id'), grant?.serverId)
  t.equal(header(ws, 'x-codex-name'), b64(HOST), 'x-codex-name is the base64 of the hostname')
  t.equal(header(ws, 'x-codex-protocol-version'), '3')
  t.equal(header(ws, 'x-codex-installation-id'), enroll?.body?.installation_id)
  t.equal(header(ws, 'chatgpt-account-id'), undefined, 'no chatgpt-account-id on the websocket')
  t.notOk(JSON.stringify(ws?.headers).includes(run.access), 'no ChatGPT token in the handshake')

  // One line only: nothing more is printed on stdout while it runs (it answers a probe meanwhile).
  t.equal((await httpGet(`http://127.0.0.1:${srv.port}/readyz`)).status, 200, 'the server is up and answering')
  t.equal(srv.stdout(), announcement(HOST), 'stdout still holds only the announcement')
  t.notOk(srv.stdout().includes('listening on:'), 'the banner is not on stdout')

  const exit = await srv.stop('SIGTERM')
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: a graceful exit with code 0')
  t.equal(srv.stdout(), announcement(HOST), 'stdout after exit: exactly the one line')
  const closed = await withTimeout(conn!.closed, 5_000, 'the backend socket to close')
  t.ok(closed, 'the backend socket is closed after the exit')
  assertNoSecrets(t, run)
}

async function servesLocalClients(t: TestT, run: Run): Promise<void> {
  const { backend, srv } = run
  // The banner block (log lines may come before it on stderr).
  const lines = srv.stderr().split('\n')
  const at = lines.indexOf(`app-server ${VERSION} (WebSockets)`)
  t.ok(at >= 0, 'the banner is on stderr')
  t.match(lines[at + 1], /^ {2}listening on: ws:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]+$/, 'with the connection URL and its token')
  t.equal(lines[at + 1], `  listening on: ${srv.url}`)
  t.equal(lines[at + 2], `  readyz: http://127.0.0.1:${srv.port}/readyz`)
  t.equal(lines[at + 3], `  healthz: http://127.0.0.1:${srv.port}/healthz`)
  t.equal(lines[at + 4], '  note: binds localhost only (use SSH port-forwarding for remote access)')
  t.ok(srv.port > 0, 'a real port was bound')
  // Logs (JSON lines from pino) go to stderr, never to stdout.
  const logLines = srv
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{'))
  t.ok(logLines.length > 0, `log lines are on stderr (${logLines.length})`)
  t.ok(
    logLines.every((l) => {
      try {
        return typeof JSON.parse(l) === 'object'
      } catch {
        return false
      }
    }),
    'each is a JSON log record',
  )
  t.equal(srv.stdout(), announcement(HOST), 'stdout holds only the announcement')

  // Without the printed token the upgrade is refused; with it, a client connects.
  const refused = await refuse(`ws://127.0.0.1:${srv.port}/`)
  t.equal(refused.status, 401, 'no token: refused')
  const local = await connect(srv.url)
  t.teardown(() => local.ws.close())
  const init = await local.request('initialize', { clientInfo: { name: 'rc-cli-local', title: null, version: '1.0.0' } })
  t.ok(init.result, `initialize answered: ${JSON.stringify(init.error ?? null)}`)
  const reply = await local.request('remoteControl/status/read')
  const status = reply.result as Json
  t.equal(codexErrors(STATUS_SCHEMA, status), '', "the status is valid against codex's schema")
  const installationId = readFileSync(join(run.home, 'installation_id'), 'utf8').trim()
  t.same(
    status,
    { status: 'connected', serverName: HOST, installationId, environmentId: backend.grants[0]?.environmentId },
    'remoteControl/status/read: connected, hostname, installation id, environment id',
  )
  const account = await local.request('account/read', {})
  t.match(account.result, { account: { type: 'chatgpt' } }, 'the CLI is logged in with the stored ChatGPT tokens')
  local.ws.close()
}

async function relaysRemoteClients(t: TestT, run: Run): Promise<void> {
  const { backend } = run
  const conn = await backend.waitForConnection(1)
  conn.sendInitialize({ clientId: 'phone-cli', streamId: 'stream-cli', seqId: 1 }, 1)
  const init = await conn.waitForReply('phone-cli', 1, 10_000)
  t.equal(init.type, 'server_message', 'a server_message envelope')
  t.equal(init.client_id, 'phone-cli')
  t.equal(init.stream_id, 'stream-cli')
  t.equal(init.seq_id, 1, 'first outbound seq_id is 1')
  t.equal(init.message.id, 1)
  t.ok(init.message.result, `initialize answered with a result: ${JSON.stringify(init.message.error ?? null)}`)
  t.equal(codexErrors('v1/InitializeResponse', init.message.result), '', "the result is valid against codex's InitializeResponse")
  conn.sendAck('phone-cli', 'stream-cli', 1)

  conn.sendClientMessage({ clientId: 'phone-cli', streamId: 'stream-cli', seqId: 2 }, { id: 2, method: 'remoteControl/status/read' })
  const st = await conn.waitForReply('phone-cli', 2, 10_000)
  t.match(st.message.result, { status: 'connected', serverName: HOST, environmentId: backend.grants[0]?.environmentId }, 'status through the relay: connected')
}

// The process boundary, once: its checks run in turn on one server, the one that stops it last.
t.test('remote-control (one server, a subprocess)', async (t) => {
  const run = await startRemoteControl(t)
  await t.test('runs a real app server: banner and logs on stderr, a local client reads the status', (t) => servesLocalClients(t, run))
  await t.test('a remote client initializes through the backend relay', (t) => relaysRemoteClients(t, run))
  await t.test('enrolls, connects, announces the hostname on stdout; SIGTERM exits 0', (t) => announcesAndExits(t, run))
})

// ---------------------------------------------------------------------------------------------
// The announcement of an in-process server, as the command makes it.

/** A stream standing in for the command's stdout; `text()` is everything written to it. */
function stdoutCollector(): { readonly stream: Writable; text(): string } {
  let out = ''
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString()
      done()
    },
  })
  return { stream, text: () => out }
}

/**
 * An in-process app server as `app-server remote-control` starts one: in `home` (auth.json,
 * watched for a login by another process), against `backend`, named after the hostname.
 * Teardown: server and backend closed, home removed.
 */
async function startInProcess(t: TestT, home: string, backend: FakeRemoteBackend, clock?: ManualClock): Promise<TestServer> {
  const server = await startServer({
    argv: ['--home', home, '--credentials-store', 'file'],
    env: { CHATGPT_BASE_URL: backend.baseUrl },
    remoteControl: { serverName: HOST, ...(clock ? { clock } : {}) },
  })
  t.teardown(async () => {
    await server.close()
    await backend.close()
    rmSync(home, { recursive: true, force: true })
  })
  return server
}

/** The command's announcement (`--json` unless said otherwise) of `server`'s remote control, written to `stdout`. */
function announce(server: TestServer, stdout: Writable, options: { waitMs: number; json?: boolean; clock?: ManualClock }): Promise<void> {
  return announceRemoteControl(server.app.remoteControl, {
    json: options.json ?? true,
    stdout,
    log: server.app.log,
    waitMs: options.waitMs,
    accountKind: () => accountKindOf(server.app.accounts),
    ...(options.clock ? { clock: options.clock } : {}),
  })
}

t.test('remote-control --json: exactly one JSON line {mode, status connected, serverName, environmentId, timedOut false}', async (t) => {
  const backend = await FakeRemoteBackend.start()
  const tokens = chatgptHome()
  const server = await startInProcess(t, tokens.home, backend)
  const out = stdoutCollector()
  await announce(server, out.stream, { waitMs: server.config.remoteControlWaitMs })
  const line = out.text()
  const grant = backend.grants[0]
  t.ok(grant, 'the backend issued a grant')
  const expected = { mode: 'foreground', status: 'connected', serverName: HOST, environmentId: grant?.environmentId, timedOut: false }
  t.equal(line.split('\n').length, 2, 'one line, newline-terminated')
  let parsed: unknown = null
  try {
    parsed = JSON.parse(line)
  } catch {
    t.fail(`stdout is not JSON: ${JSON.stringify(line)}`)
  }
  t.same(parsed, expected, 'the JSON object')
  t.equal(line, JSON.stringify(expected) + '\n', 'stdout: exactly that JSON line (keys in the documented order)')
  t.notOk(line.includes('This machine is available'), 'no human sentence with --json')
  t.same(
    backend.requests.map((r) => `${r.endpoint}:${r.status}`),
    ['enroll:200', 'websocket:101'],
    'enroll, then an accepted handshake',
  )
  t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 200, 'the server is up and answering')
  t.equal(out.text(), line, 'nothing else is printed on stdout')
  assertNoSecretsIn(t, tokens, backend, [
    ['stdout', out.text()],
    ['the logs', server.logs.text()],
  ])
})

t.test('remote-control --json: a backend that never accepts is reported as connecting, timedOut true', async (t) => {
  const backend = await FakeRemoteBackend.start()
  backend.script('websocket', ...Array.from({ length: 20 }, () => ({ status: 503, body: { detail: 'down for maintenance' } })))
  const { home } = chatgptHome()
  // Remote control's backoff and the command's wait (as `--remote-control-wait-seconds 1`), on one manual clock.
  const clock = new ManualClock({ wallMs: Date.now() })
  const server = await startInProcess(t, home, backend, clock)
  const out = stdoutCollector()
  const announced = announce(server, out.stream, { waitMs: 1_000, clock })
  await backend.until(() => backend.of('websocket').length >= 1, 'the first handshake')
  // The first reconnect backoff (200 ms ± 10 %; the command's poll is 100 ms, the relay's sweep 30 s).
  const backoff = (): number | undefined => clock.pendingDelays().find((d) => d >= 180 && d <= 220)
  await until(() => backoff() !== undefined, 'the reconnect backoff')
  await clock.advanceSettling(backoff() as number)
  await backend.until(() => backend.of('websocket').length >= 2, 'the second handshake')
  t.equal(out.text(), '', 'nothing is announced before the wait is over')
  await clock.advanceSettling(1_000)
  await withTimeout(announced, 5_000, 'the announcement once the wait is over')
  const grant = backend.grants[0]
  t.ok(grant, 'it enrolled')
  t.equal(out.text(), JSON.stringify({ mode: 'foreground', status: 'connecting', serverName: HOST, environmentId: grant?.environmentId, timedOut: true }) + '\n')
  t.ok(backend.of('websocket').every((r) => r.status === 503), 'every handshake was refused')
  t.ok(backend.of('websocket').length >= 2, 'it kept retrying the handshake')
})
const SERVE_FLAGS = ['--listen', 'ws://127.0.0.1:0', '--login-callback-port', '0']

t.test('remote-control with an API key: the refusal and exit 1, before serving', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'app-server-rc-cli-home-'))
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  writeFileSync(join(home, 'auth.json'), JSON.stringify({ auth_mode: 'apikey', OPENAI_API_KEY: canary('sk-proj') }), { mode: 0o600 })
  // In-process (it finishes). Nothing listens on the discard port: had it tried the backend, it could not reach one.
  const r = await runCommand(['remote-control', '--json', ...SERVE_FLAGS], { env: { APP_SERVER_HOME: home, CHATGPT_BASE_URL: 'http://127.0.0.1:9/backend-api' }, refused: true })
  record(r.stderr)
  t.equal(r.code, 1, 'exit 1')
  const refusal = 'remote control requires ChatGPT authentication; API key auth is not supported'
  t.equal(r.stdout, JSON.stringify({ mode: 'foreground', status: 'errored', serverName: HOST, environmentId: null, timedOut: false, error: refusal }) + '\n', '--json says so')
  t.equal(r.stderr, `error: ${refusal}\n`, 'the refusal, and no banner: it never served')
  t.notOk(r.stdout.includes('connecting') || r.stderr.includes('connecting'), 'not "still connecting"')
  t.same(leakedCanaries(r.stdout + r.stderr), [])
})

t.test('remote-control not logged in: the announcement says it waits for a ChatGPT login, not "still connecting"', async (t) => {
  // The announcement of a real (in-process) server's remote control, as the command makes it.
  const server = await startServer({ remoteControl: { serverName: 'rc-waiting-host' }, env: { CHATGPT_BASE_URL: 'http://127.0.0.1:9/backend-api' } })
  t.teardown(() => server.close())
  const out = stdoutCollector()
  void announce(server, out.stream, { json: false, waitMs: 0 })
  await until(() => out.text().includes('\n'), 'the announcement')
  t.equal(out.text(), 'Remote control is waiting for ChatGPT login; sign in (`app-server login` in the same home, or from a client) to make this machine available as rc-waiting-host.\n')
})

t.test('remote-control --json not logged in: waitingForLogin, then a login in the same home connects it', async (t) => {
  const backend = await FakeRemoteBackend.start()
  const home = mkdtempSync(join(tmpdir(), 'app-server-rc-cli-home-'))
  const server = await startInProcess(t, home, backend)
  const out = stdoutCollector()
  const announced = announce(server, out.stream, { waitMs: server.config.remoteControlWaitMs })
  await until(() => out.text().includes('\n'), 'the waiting line', ANNOUNCE_WAIT_MS)
  const waiting = JSON.stringify({ mode: 'foreground', status: 'waitingForLogin', serverName: HOST, environmentId: null, timedOut: false }) + '\n'
  t.equal(out.text(), waiting)
  t.same(backend.requests, [], 'nothing asked of the backend without an account')

  // Another process logs in (auth.json written and renamed into place): the server notices the store, enrolls and connects.
  const tokens = chatgptHome(home)
  await withTimeout(announced, ANNOUNCE_WAIT_MS, 'the connected line after the login')
  const grant = backend.grants[0]
  t.equal(out.text(), waiting + JSON.stringify({ mode: 'foreground', status: 'connected', serverName: HOST, environmentId: grant?.environmentId, timedOut: false }) + '\n')
  t.equal(header(backend.of('enroll')[0], 'authorization'), `Bearer ${tokens.access}`, 'enrolled with the new login')
  assertNoSecretsIn(t, tokens, backend, [
    ['stdout', out.text()],
    ['the logs', server.logs.text()],
  ])
})
