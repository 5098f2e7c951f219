/**
 * `app-server remote-control [--json]` as a real subprocess (`dist/src/main.js`) against the fake
 * backend (helpers/fake-remote-backend.ts): the CLI starts logged in with ChatGPT tokens from
 * `$APP_SERVER_HOME/auth.json`, enrolls, connects, and prints one announcement line on stdout
 * (`This machine is available for remote control as NAME.`, or the `--json` object) while the
 * banner and logs go to stderr. Covered: the exact stdout of both forms, the enroll request and the
 * handshake the backend saw, SIGTERM → exit 0, the server being a real app server (banner, local
 * client with the printed token, `remoteControl/status/read`), a remote client initializing through
 * the relay, and no secret on stdout or stderr.
 *
 * One server per output form serves several checks (each start is a node start-up plus an
 * enrollment); the "never connects" `--json` case (`timedOut: true`, after
 * `--remote-control-wait-seconds 1`) has its own backend and server.
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
import { startServer } from './helpers/server.js'
import { runCommand } from './helpers/cli.js'
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
 * Starts the fake backend and `app-server remote-control [--json]` against it, and waits for the
 * announcement line on stdout. Teardown: SIGKILL if still running, backend closed; stdout and
 * stderr recorded for the canary check.
 */
async function startRemoteControl(t: TestT, json: boolean): Promise<Run> {
  const backend = await FakeRemoteBackend.start()
  const { home, access, idToken, refresh } = chatgptHome()
  const srv = await startForeground(t, [...(json ? ['--json'] : []), '--listen', 'ws://127.0.0.1:0', '--login-callback-port', '0', '--log-level', 'debug'], home, backend)
  try {
    await until(() => srv.stdout().includes('\n'), 'the announcement line on stdout', ANNOUNCE_WAIT_MS)
  } catch (err) {
    throw new Error(`${(err as Error).message}; stdout: ${JSON.stringify(srv.stdout())}; backend: ${backend.requests.map((r) => `${r.endpoint}:${r.status}`).join(' ')}; stderr: ${srv.stderr()}`)
  }
  return { backend, home, srv, access, idToken, refresh, line: srv.stdout() }
}

/** No ChatGPT token, refresh token or remote_control_token on stdout or stderr (asserted, and recorded for the exit-time canary check). */
function assertNoSecrets(t: TestT, run: Run): void {
  const out = run.srv.stdout()
  const err = run.srv.stderr()
  record(out)
  record(err)
  const secrets: [string, string][] = [
    ['ChatGPT access token', run.access],
    ['ChatGPT id token', run.idToken],
    ['ChatGPT refresh token', run.refresh],
    ...run.backend.grants.map((g, i): [string, string] => [`remote_control_token #${i + 1}`, g.token]),
  ]
  t.ok(run.backend.grants.length >= 1, 'at least one remote_control_token was issued (and checked)')
  for (const [stream, text] of [
    ['stdout', out],
    ['stderr', err],
  ] as const) {
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

/** Last on its server: ends it with SIGTERM. */
async function printsOneJsonLineAndExits(t: TestT, run: Run): Promise<void> {
  const { backend, srv } = run
  const grant = backend.grants[0]
  t.ok(grant, 'the backend issued a grant')
  const expected = { mode: 'foreground', status: 'connected', serverName: HOST, environmentId: grant?.environmentId, timedOut: false }
  t.equal(run.line.split('\n').length, 2, 'one line, newline-terminated')
  let parsed: unknown = null
  try {
    parsed = JSON.parse(run.line)
  } catch {
    t.fail(`stdout is not JSON: ${JSON.stringify(run.line)}`)
  }
  t.same(parsed, expected, 'the JSON object')
  t.equal(run.line, JSON.stringify(expected) + '\n', 'stdout: exactly that JSON line (keys in the documented order)')
  t.notOk(run.line.includes('This machine is available'), 'no human sentence with --json')
  t.same(
    backend.requests.map((r) => `${r.endpoint}:${r.status}`),
    ['enroll:200', 'websocket:101'],
    'enroll, then an accepted handshake',
  )
  t.equal((await httpGet(`http://127.0.0.1:${srv.port}/readyz`)).status, 200, 'the server is up and answering')
  t.equal(srv.stdout(), run.line, 'nothing else is printed on stdout')
  const exit = await srv.stop('SIGTERM')
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.equal(srv.stdout(), JSON.stringify(expected) + '\n', 'stdout after exit: exactly the one JSON line')
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

// One server per output form (a node start-up and an enrollment each); its checks run in turn,
// the one that stops it last.
t.test('remote-control (one server)', async (t) => {
  const run = await startRemoteControl(t, false)
  await t.test('runs a real app server: banner and logs on stderr, a local client reads the status', (t) => servesLocalClients(t, run))
  await t.test('enrolls, connects, announces the hostname on stdout; SIGTERM exits 0', (t) => announcesAndExits(t, run))
})

t.test('remote-control --json (one server)', async (t) => {
  const run = await startRemoteControl(t, true)
  await t.test('a remote client initializes through the backend relay', (t) => relaysRemoteClients(t, run))
  await t.test('exactly one JSON line {mode, status connected, serverName, environmentId, timedOut false}; SIGTERM exits 0', (t) => printsOneJsonLineAndExits(t, run))
})

t.test('remote-control --json: a backend that never accepts is reported as connecting, timedOut true', async (t) => {
  const backend = await FakeRemoteBackend.start()
  backend.script('websocket', ...Array.from({ length: 200 }, () => ({ status: 503, body: { detail: 'down for maintenance' } })))
  const { home } = chatgptHome()
  const srv = await startForeground(t, ['--json', '--remote-control-wait-seconds', '1', '--listen', 'ws://127.0.0.1:0', '--login-callback-port', '0'], home, backend)
  await until(() => srv.stdout().includes('\n'), 'the JSON line on stdout', ANNOUNCE_WAIT_MS)
  const grant = backend.grants[0]
  t.ok(grant, 'it enrolled')
  t.equal(
    srv.stdout(),
    JSON.stringify({ mode: 'foreground', status: 'connecting', serverName: HOST, environmentId: grant?.environmentId, timedOut: true }) + '\n',
  )
  t.ok(backend.requests.filter((r) => r.endpoint === 'websocket').length >= 2, 'it kept retrying the handshake')
  const exit = await srv.stop('SIGTERM')
  t.same(exit, { code: 0, signal: null })
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
  let out = ''
  const stdout = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString()
      done()
    },
  })
  void announceRemoteControl(server.app.remoteControl, { json: false, stdout, log: server.app.log, waitMs: 0, accountKind: () => accountKindOf(server.app.accounts) })
  await until(() => out.includes('\n'), 'the announcement')
  t.equal(out, 'Remote control is waiting for ChatGPT login; sign in (`app-server login` in the same home, or from a client) to make this machine available as rc-waiting-host.\n')
})

t.test('remote-control --json not logged in: waitingForLogin, then a login in the same home connects it', async (t) => {
  const backend = await FakeRemoteBackend.start()
  const home = mkdtempSync(join(tmpdir(), 'app-server-rc-cli-home-'))
  const srv = await startForeground(t, ['--json', ...SERVE_FLAGS], home, backend)
  await until(() => srv.stdout().includes('\n'), 'the waiting line on stdout', ANNOUNCE_WAIT_MS)
  const waiting = JSON.stringify({ mode: 'foreground', status: 'waitingForLogin', serverName: HOST, environmentId: null, timedOut: false }) + '\n'
  t.equal(srv.stdout(), waiting)
  t.same(backend.requests, [], 'nothing asked of the backend without an account')

  // Another process logs in: the server notices the store, enrolls and connects.
  const { access } = chatgptHome(home)
  await until(() => srv.stdout().split('\n').length === 3, 'the connected line after the login', ANNOUNCE_WAIT_MS)
  const grant = backend.grants[0]
  t.equal(srv.stdout(), waiting + JSON.stringify({ mode: 'foreground', status: 'connected', serverName: HOST, environmentId: grant?.environmentId, timedOut: false }) + '\n')
  t.equal(header(backend.of('enroll')[0], 'authorization'), `Bearer ${access}`, 'enrolled with the new login')
  t.same(await srv.stop('SIGTERM'), { code: 0, signal: null })
})
