/**
 * Remote control end to end, over real sockets: the real app server on 127.0.0.1 with a fake
 * backend (helpers/fake-remote-backend.ts) serving enroll, refresh and the backend WebSocket.
 * Covered: `remoteControl/*` methods and `remoteControl/status/changed` (every status checked
 * against codex 0.169.0's schema, notifications only on change), the account wait (none / API key /
 * ChatGPT), the enroll request and the handshake headers, the relay into the same dispatcher
 * (principal `remote`), each backend status the controller acts on, restart with a persisted
 * enrollment, the raw bytes of the SQLite store (no token, expiry or cursor), redacted error
 * previews, disable, and canaries in logs.
 *
 * Scenarios that reconnect run the controller on a manual clock (its wall reading starts now,
 * as the backend's token expiries do): once a failure is seen the test finds the reconnect
 * backoff waiting on the clock (200 ms × 2^(n−1) ± 10 % for the n-th failure in a row), checks
 * nothing reaches the backend meanwhile, and advances past it, so no scenario waits real time.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { hostPlatform } from '../src/remote-control/enrollment-client.js'
import { ENROLLMENT_DB_FILE } from '../src/remote-control/enrollment-store.js'
import type { Clock } from '../src/clock.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { VERSION } from '../src/version.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { codexErrors } from './helpers/codex-schemas.js'
import {
  ENROLL_PATH,
  FakeRemoteBackend,
  NOT_FOUND_BODY,
  REFRESH_PATH,
  WEBSOCKET_PATH,
  type BackendConnection,
  type BackendRequest,
  type FakeRemoteBackendOptions,
  type Json,
} from './helpers/fake-remote-backend.js'
import { startServer, type TestServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]

/** Non-ASCII on purpose: `x-codex-name` is the base64 of its UTF-8. */
const SERVER_NAME = 'rc-e2e-host-é✓'
const ACCOUNT_ID = 'acct-rc-1'
const AUTH_CLAIM = 'https://api.openai.com/auth'
const STATUS_SCHEMA = 'v2/RemoteControlStatusChangedNotification'
const STATUS_CHANGED = 'remoteControl/status/changed'
const API_KEY_REFUSAL = 'remote control requires ChatGPT authentication; API key auth is not supported'
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
/** A deadline for events over real sockets (a hang fails with a name, not tap's timeout). */
const RECONNECT_WAIT_MS = 10_000

// ---------------------------------------------------------------------------------------------
// Small helpers.

/** An unsigned, never-verified JWT-shaped ChatGPT access token (third segment junk), registered as a canary. */
function chatgptToken(accountId = ACCOUNT_ID): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const claims = { email: 'rc@example.com', [AUTH_CLAIM]: { chatgpt_plan_type: 'plus', chatgpt_account_id: accountId }, jti: randomBytes(8).toString('hex') }
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.${randomBytes(16).toString('base64url')}`)
}

function header(req: BackendRequest | undefined, name: string): string | undefined {
  const v = req?.headers[name]
  return Array.isArray(v) ? v.join(',') : v
}

function b64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64')
}

function describeRequests(reqs: readonly BackendRequest[]): string {
  return reqs.map((r) => `${r.endpoint}:${r.status}`).join(' ')
}

// ---------------------------------------------------------------------------------------------
// The app server (test/helpers/server.ts, so the engine is off: nothing here is about it), with
// remote control against the fake backend and an in-memory credential store.

interface RcServer extends TestServer {
  readonly home: string
}

interface RcServerOptions {
  readonly home?: string
  readonly argv?: readonly string[]
  readonly clock?: Clock
}

async function startRcServer(backend: FakeRemoteBackend, options: RcServerOptions = {}): Promise<RcServer> {
  const home = options.home ?? mkdtempSync(join(tmpdir(), 'app-server-rc-home-'))
  const server = await startServer({
    argv: ['--home', home, '--credentials-store', 'ephemeral', ...(options.argv ?? [])],
    env: { CHATGPT_BASE_URL: backend.baseUrl },
    remoteControl: { serverName: SERVER_NAME, ...(options.clock ? { clock: options.clock } : {}) },
  })
  return { ...server, home }
}

/** A local JSON-RPC client; remembers which method each request id was for. */
class Local {
  private nextId = 1
  readonly methodsById = new Map<number, string>()
  constructor(readonly client: RpcClient) {}

  call(method: string, params?: unknown): Promise<Json> {
    const id = this.nextId++
    this.methodsById.set(id, method)
    return this.client.request(method, params, id)
  }

  async result(method: string, params?: unknown): Promise<Json> {
    const reply = await this.call(method, params)
    if (!('result' in reply)) throw new Error(`${method} failed: ${JSON.stringify(reply.error)}`)
    return reply.result as Json
  }

  frames(): Json[] {
    return this.client.frames.map((f) => JSON.parse(f) as Json)
  }

  /** Params of every `remoteControl/status/changed` received, in order. */
  statuses(): Json[] {
    return this.client.notifications.filter((n) => n.method === STATUS_CHANGED).map((n) => n.params as Json)
  }

  async waitForStatus(pred: (s: Json) => boolean, label: string, timeoutMs = RECONNECT_WAIT_MS, from = 0): Promise<Json> {
    await until(() => this.statuses().slice(from).some(pred), label, timeoutMs)
    return this.statuses().slice(from).find(pred) as Json
  }

  async waitForServerRequest(method: string, timeoutMs = RECONNECT_WAIT_MS): Promise<Json> {
    await until(() => this.client.serverRequests.some((r) => r.method === method), `server request ${method}`, timeoutMs)
    return this.client.serverRequests.find((r) => r.method === method) as Json
  }

  reply(id: unknown, body: { result: unknown } | { error: unknown }): void {
    this.client.sendRaw(JSON.stringify({ id, ...body }))
  }

  /** `account/login/start` with external ChatGPT tokens; waits for its `account/updated`. */
  async loginExternal(token: string, accountId = ACCOUNT_ID): Promise<void> {
    const before = this.client.notifications.filter((n) => n.method === 'account/updated').length
    const r = await this.result('account/login/start', { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: accountId })
    if (r.type !== 'chatgptAuthTokens') throw new Error(`unexpected login result ${JSON.stringify(r)}`)
    await until(() => this.client.notifications.filter((n) => n.method === 'account/updated').length > before, 'account/updated')
  }
}

/** Per-test context: backend, servers and clients are closed, and every status and log checked, at the end. */
class Ctx {
  backend!: FakeRemoteBackend
  readonly servers: RcServer[] = []
  readonly locals: Local[] = []
  /** ChatGPT tokens handed to the server (canaries, checked explicitly against the logs). */
  readonly chatgptTokens: string[] = []
  /** Other secrets the test made (pairing-code canaries, cursors). */
  readonly secrets: string[] = []
  constructor(readonly t: TestT) {}

  async startBackend(options: FakeRemoteBackendOptions = {}): Promise<FakeRemoteBackend> {
    this.backend = await FakeRemoteBackend.start(options)
    return this.backend
  }

  async server(options: RcServerOptions = {}): Promise<RcServer> {
    const s = await startRcServer(this.backend, options)
    this.servers.push(s)
    return s
  }

  async local(server: RcServer): Promise<Local> {
    const l = new Local(await connect(server.wsUrl))
    this.locals.push(l)
    await l.result('initialize', { clientInfo: { name: 'rc-local', title: null, version: '1.0.0' } })
    return l
  }

  token(accountId = ACCOUNT_ID): string {
    const tok = chatgptToken(accountId)
    this.chatgptTokens.push(tok)
    return tok
  }

  /**
   * Every status a client saw (results of `remoteControl/*` and `remoteControl/status/changed`,
   * locally and through the relay) against codex's schema; notifications never repeat; no
   * secret in any server log.
   */
  verify(): void {
    const problems: string[] = []
    let checked = 0
    this.locals.forEach((l, i) => {
      for (const m of l.frames()) {
        if ('id' in m && 'result' in m && typeof m.id === 'number' && l.methodsById.get(m.id)?.startsWith('remoteControl/')) {
          checked++
          const e = codexErrors(STATUS_SCHEMA, m.result)
          if (e) problems.push(`local ${i}: ${l.methodsById.get(m.id)} result: ${e}`)
        } else if (!('id' in m) && m.method === STATUS_CHANGED) {
          checked++
          const e = codexErrors(STATUS_SCHEMA, m.params)
          if (e) problems.push(`local ${i}: ${STATUS_CHANGED}: ${e}`)
          const env = codexErrors('JSONRPCNotification', m)
          if (env) problems.push(`local ${i}: notification envelope: ${env}`)
        } else if ('id' in m && m.method === 'account/chatgptAuthTokens/refresh') {
          const e = codexErrors('ChatgptAuthTokensRefreshParams', m.params)
          if (e) problems.push(`local ${i}: account/chatgptAuthTokens/refresh params: ${e}`)
        }
      }
      const s = l.statuses()
      for (let k = 1; k < s.length; k++) {
        if (JSON.stringify(s[k]) === JSON.stringify(s[k - 1])) problems.push(`local ${i}: ${STATUS_CHANGED} #${k} repeats the previous one: ${JSON.stringify(s[k])}`)
      }
    })
    for (const c of this.backend?.connections ?? []) {
      for (const e of c.received) {
        if (e.type === 'server_message' && e.message?.method === STATUS_CHANGED) {
          checked++
          const err = codexErrors(STATUS_SCHEMA, e.message.params)
          if (err) problems.push(`relay ${String(e.client_id)}: ${STATUS_CHANGED}: ${err}`)
        }
      }
    }
    this.t.same(problems, [], `all ${checked} remote-control statuses match codex's schema and notifications never repeat`)

    const secrets = [...this.chatgptTokens, ...this.secrets, ...(this.backend?.grants.map((g) => g.token) ?? [])]
    this.servers.forEach((s, i) => {
      const text = s.logs.text()
      this.t.same(leakedCanaries(text), [], `server ${i}: no canary in the log`)
      this.t.same(
        secrets.filter((x) => text.includes(x)),
        [],
        `server ${i}: no server token, ChatGPT token or pairing code in the log (${secrets.length} checked)`,
      )
    })
  }

  async close(): Promise<void> {
    for (const l of this.locals) l.client.ws.close()
    for (const s of this.servers) await s.close()
    await this.backend?.close()
  }
}

function rcTest(name: string, fn: (t: TestT, ctx: Ctx) => Promise<void>): void {
  t.test(name, async (t) => {
    const ctx = new Ctx(t)
    try {
      await fn(t, ctx)
      ctx.verify()
    } finally {
      await ctx.close()
    }
  })
}

interface Connected {
  readonly server: RcServer
  readonly local: Local
  readonly chatgpt: string
  readonly conn: BackendConnection
  readonly installationId: string
}

/** Backend + server + a local client logged in with external tokens, remote control enabled and connected. */
async function connectedSetup(ctx: Ctx, options: { backend?: FakeRemoteBackendOptions; server?: RcServerOptions } = {}): Promise<Connected> {
  await ctx.startBackend(options.backend)
  const server = await ctx.server(options.server)
  const local = await ctx.local(server)
  const chatgpt = ctx.token()
  await local.loginExternal(chatgpt)
  const enabled = await local.result('remoteControl/enable')
  const conn = await ctx.backend.waitForConnection(1, RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'status connected')
  return { server, local, chatgpt, conn, installationId: enabled.installationId as string }
}

/** The rows of the enrollment table (opened read-only beside the server's own connection). */
function enrollmentRows(home: string): Json[] {
  const db = new Database(join(home, ENROLLMENT_DB_FILE), { readonly: true, fileMustExist: true })
  try {
    return db.prepare('SELECT * FROM remote_control_enrollments').all() as Json[]
  } finally {
    db.close()
  }
}

/** The controller's clock in scenarios that reconnect: manual, its wall reading now (the backend stamps token expiries in real time). */
function reconnectClock(): ManualClock {
  return new ManualClock({ wallMs: Date.now() })
}

/**
 * Waits until the reconnect loop sleeps on the backoff that follows its n-th failure in a row (a
 * timeout of 200 ms × 2^(n−1) ± 10 % on `clock`; the relay's sweep and the keepalive are far
 * longer), checks that nothing reaches the backend while it waits, and advances the clock past
 * it. Returns how many backend requests came before the retry.
 */
async function passBackoff(t: TestT, clock: ManualClock, backend: FakeRemoteBackend, n: number): Promise<number> {
  const base = 200 * 2 ** (n - 1)
  const backoff = (): number | undefined => clock.pendingDelays().find((d) => d >= base * 0.9 && d <= base * 1.1)
  await until(() => backoff() !== undefined, `reconnect backoff #${n}`, RECONNECT_WAIT_MS)
  const before = backend.requests.length
  await settle()
  const delay = backoff() as number
  t.equal(backend.requests.length, before, `nothing reaches the backend during backoff #${n} (${delay} ms)`)
  await clock.advanceSettling(delay)
  return before
}

/** The warn lines of failed attempts (`problem` is the error text). */
function problems(server: RcServer): string[] {
  return server.logs.lines.filter((l) => typeof l.problem === 'string').map((l) => l.problem as string)
}

// ---------------------------------------------------------------------------------------------
// Methods, status, and the account wait.

rcTest('status before enabling: disabled, server name, installation id, no environment', async (t, ctx) => {
  await ctx.startBackend()
  const clock = new ManualClock()
  const server = await ctx.server({ clock })
  const local = await ctx.local(server)
  const status = await local.result('remoteControl/status/read')
  t.equal(codexErrors(STATUS_SCHEMA, status), '', 'valid against codex RemoteControlStatusChangedNotification')
  t.equal(status.status, 'disabled')
  t.equal(status.serverName, SERVER_NAME)
  t.match(status.installationId, UUID_RE, 'installationId is a UUID')
  t.equal(status.environmentId, null)
  t.same(Object.keys(status).sort(), ['environmentId', 'installationId', 'serverName', 'status'])
  const file = readFileSync(join(server.home, 'installation_id'), 'utf8').trim()
  t.equal(status.installationId, file, 'the id is the one kept in $home/installation_id')
  await clock.advanceSettling(60_000)
  t.same(ctx.backend.requests, [], 'nothing is sent to the backend while disabled')
  t.same(local.statuses(), [], 'no status notification while nothing changes')
})

rcTest('API key credential: errored with the refusal, never enrolls', async (t, ctx) => {
  await ctx.startBackend()
  const clock = new ManualClock()
  const server = await ctx.server({ clock })
  const local = await ctx.local(server)
  const apiKey = canary('sk-rc')
  ctx.secrets.push(apiKey)
  t.same(await local.result('account/login/start', { type: 'apiKey', apiKey }), { type: 'apiKey' })
  const enabled = await local.result('remoteControl/enable')
  t.ok(['connecting', 'errored'].includes(enabled.status as string), `enable answers ${String(enabled.status)}`)
  const errored = await local.waitForStatus((s) => s.status === 'errored', 'status errored')
  t.equal(errored.environmentId, null)
  const read = await local.result('remoteControl/status/read')
  t.equal(read.status, 'errored', 'status/read says errored')
  await until(() => problems(server).some((p) => p.includes(API_KEY_REFUSAL)), 'the refusal in the log')
  t.ok(problems(server).includes(API_KEY_REFUSAL), `the error is "${API_KEY_REFUSAL}"`)
  // Several of the refusal's re-checks.
  await clock.advanceSettling(30_000)
  t.same(ctx.backend.requests, [], 'no enroll (nor anything else) reaches the backend')
  t.equal((await local.result('remoteControl/disable')).status, 'disabled')
})

rcTest('no credential: connecting without an error; a chatgptAuthTokens login then enrolls and connects', async (t, ctx) => {
  await ctx.startBackend()
  const clock = new ManualClock()
  const server = await ctx.server({ clock })
  const local = await ctx.local(server)
  const enabled = await local.result('remoteControl/enable')
  t.equal(enabled.status, 'connecting')
  t.equal(enabled.environmentId, null)
  // Longer than the 1 s account poll: waiting is not an error.
  await clock.advanceSettling(1_300)
  t.equal((await local.result('remoteControl/status/read')).status, 'connecting', 'still connecting after the account poll')
  t.same(
    local.statuses().map((s) => s.status),
    ['connecting'],
    'one notification: connecting (no errored while waiting for an account)',
  )
  t.same(problems(server), [], 'no failed attempt logged while waiting')
  t.same(ctx.backend.requests, [], 'nothing sent without an account')

  const chatgpt = ctx.token()
  // The account poll waits on the manual clock, which stands still from here on: a connection
  // can only come from the login waking the loop (a wall-clock bound here failed under load).
  t.ok(clock.pendingDelays().some((d) => d > 0), 'the loop is waiting on its poll timer')
  const pollClockAtLogin = clock.monotonicMs()
  await local.loginExternal(chatgpt)
  await ctx.backend.waitForConnection(1)
  t.equal(clock.monotonicMs(), pollClockAtLogin, 'the login woke the loop (no poll interval passed)')
  const connected = await local.waitForStatus((s) => s.status === 'connected', 'connected')
  t.equal(connected.environmentId, ctx.backend.grants[0]?.environmentId)
  t.same(
    ctx.backend.requests.map((r) => r.endpoint),
    ['enroll', 'websocket'],
    'enroll, then the handshake',
  )
  t.notOk(local.statuses().some((s) => s.status === 'errored'), 'never errored')
})

// ---------------------------------------------------------------------------------------------
// Enroll, handshake, notifications.

rcTest('enroll request, handshake headers, connecting → connected notified only on change', async (t, ctx) => {
  const clock = new ManualClock()
  const { local, chatgpt, conn, installationId } = await connectedSetup(ctx, { server: { clock } })
  const backend = ctx.backend
  t.match(installationId, UUID_RE)

  const [enroll, ws, ...rest] = backend.requests
  t.same(rest, [], 'exactly one enroll and one handshake')
  t.equal(enroll?.endpoint, 'enroll')
  t.equal(enroll?.method, 'POST')
  t.equal(enroll?.url, ENROLL_PATH, 'POST {base}/wham/remote/control/server/enroll')
  const platform = hostPlatform()
  t.same(
    enroll?.body,
    { name: SERVER_NAME, os: platform.os, arch: platform.arch, app_server_version: VERSION, installation_id: installationId },
    'JSON body {name, os, arch, app_server_version, installation_id}',
  )
  t.match(header(enroll, 'content-type'), /^application\/json/)
  t.equal(header(enroll, 'authorization'), `Bearer ${chatgpt}`, 'Authorization: Bearer <ChatGPT access token>')
  t.equal(header(enroll, 'chatgpt-account-id'), ACCOUNT_ID)
  t.equal(header(enroll, 'x-codex-installation-id'), installationId)
  t.equal(enroll?.status, 200)

  const grant = backend.grants[0]
  t.ok(grant, 'a grant was issued')
  t.equal(ws, conn.request)
  t.equal(ws?.url, WEBSOCKET_PATH, 'GET {base}/wham/remote/control/server')
  t.equal(header(ws, 'authorization'), `Bearer ${grant?.token}`, 'authorization: Bearer <remote_control_token>')
  t.equal(header(ws, 'x-codex-server-id'), grant?.serverId)
  t.equal(header(ws, 'x-codex-name'), b64(SERVER_NAME), 'x-codex-name is the base64 of the UTF-8 server name')
  t.equal(header(ws, 'x-codex-protocol-version'), '3')
  t.equal(header(ws, 'x-codex-installation-id'), installationId)
  t.equal(header(ws, 'chatgpt-account-id'), undefined, 'no chatgpt-account-id on the websocket')
  t.equal(header(ws, 'x-codex-subscribe-cursor'), undefined, 'no cursor before one was received')
  const allHeaders = JSON.stringify(ws?.headers)
  t.notOk(allHeaders.includes(chatgpt), 'the ChatGPT token is nowhere in the handshake')
  t.notOk(allHeaders.includes(ACCOUNT_ID), 'nor the account id')

  const read = await local.result('remoteControl/status/read')
  t.same(read, { status: 'connected', serverName: SERVER_NAME, installationId, environmentId: grant?.environmentId })
  const statuses = local.statuses()
  t.same(statuses.at(-1), read, 'the last notification is the current status')
  t.same(statuses[0], { status: 'connecting', serverName: SERVER_NAME, installationId, environmentId: null }, 'first: connecting')
  const order = statuses.map((s) => s.status).filter((s, i, a) => i === 0 || a[i - 1] !== s)
  t.same(order, ['connecting', 'connected'], 'connecting → connected')
  t.ok(
    statuses.every((s) => s.status !== 'connected' || s.environmentId === grant?.environmentId),
    'connected is published with the environment id',
  )
  // Nothing changes now: no further notification.
  const count = statuses.length
  // Short of the keepalive ping: no timer is due, nothing may change.
  await clock.advanceSettling(5_000)
  await local.result('remoteControl/status/read')
  t.equal(local.statuses().length, count, 'no notification without a change')
  const again = await local.result('remoteControl/enable')
  t.same(again, read, 'enable while enabled is a no-op')
  await clock.advanceSettling(1_000)
  t.equal(local.statuses().length, count, 'and notifies nothing')
  t.equal(backend.requests.length, 2, 'and sends nothing')
})

// ---------------------------------------------------------------------------------------------
// The relay.

rcTest('--remote-control-max-connections 1: a second remote client gets -32001 for its initialize and no session; the first is still served', async (t, ctx) => {
  const { server, conn } = await connectedSetup(ctx, { server: { argv: ['--remote-control-max-connections', '1'] } })
  conn.sendInitialize({ clientId: 'cap-1', streamId: 's1', seqId: 1 }, 1)
  t.ok((await conn.waitForReply('cap-1', 1)).message.result, 'the first remote client is initialized')
  const sessionsBefore = server.app.sessions.size
  conn.sendInitialize({ clientId: 'cap-2', streamId: 's2', seqId: 1 }, 1)
  const refused = await conn.waitForReply('cap-2', 1)
  t.equal((refused.message.error as { code?: number } | undefined)?.code, -32001, 'the second is refused -32001')
  t.equal(server.app.sessions.size, sessionsBefore, 'and opens no session')
  conn.sendClientMessage({ clientId: 'cap-1', streamId: 's1', seqId: 2 }, { id: 2, method: 'account/read', params: {} })
  t.ok((await conn.waitForReply('cap-1', 2)).message.result, 'the first is still served')
})

rcTest('relay: initialize and account/read through the backend socket, remote principal has full scopes', async (t, ctx) => {
  const { server, local, conn } = await connectedSetup(ctx)
  const cursor = canary('cursor')
  ctx.secrets.push(cursor)

  conn.sendInitialize({ clientId: 'phone-1', streamId: 'stream-1', seqId: 1, cursor }, 1)
  const init = await conn.waitForReply('phone-1', 1)
  t.equal(init.type, 'server_message')
  t.equal(init.stream_id, 'stream-1')
  t.equal(init.seq_id, 1, 'the first outbound envelope of the virtual connection has seq_id 1')
  t.equal(init.message.id, 1)
  t.ok(init.message.result, 'initialize answered with a result')
  t.equal(codexErrors('v1/InitializeResponse', init.message.result), '', "the result is valid against codex's InitializeResponse")
  conn.sendAck('phone-1', 'stream-1', 1)

  conn.sendClientMessage({ clientId: 'phone-1', streamId: 'stream-1', seqId: 2 }, { id: 2, method: 'account/read', params: {} })
  const account = await conn.waitForReply('phone-1', 2)
  t.ok(account.seq_id > 1, 'outbound seq_id keeps counting')
  t.match(account.message.result, { account: { type: 'chatgpt' }, requiresOpenaiAuth: true }, 'account/read answered by the same dispatcher')
  t.equal(codexErrors('v2/GetAccountResponse', account.message.result), '')

  conn.sendClientMessage({ clientId: 'phone-1', streamId: 'stream-1', seqId: 3 }, { id: 3, method: 'remoteControl/status/read' })
  const st = await conn.waitForReply('phone-1', 3)
  t.equal(codexErrors(STATUS_SCHEMA, st.message.result), '')
  t.equal(st.message.result.status, 'connected', 'remoteControl/status/read through the relay')

  // A repeated seq_id is dropped.
  conn.sendClientMessage({ clientId: 'phone-1', streamId: 'stream-1', seqId: 3 }, { id: 33, method: 'account/read', params: {} })
  // Messages for an unknown virtual connection (no initialize) are ignored.
  conn.sendClientMessage({ clientId: 'ghost', streamId: 'stream-x', seqId: 1 }, { id: 1, method: 'account/read', params: {} })
  conn.sendPing('phone-1', 'stream-1')
  const pong = await conn.waitForEnvelope((e) => e.type === 'pong' && e.client_id === 'phone-1', RECONNECT_WAIT_MS, 'pong')
  t.equal(pong.status, 'active', 'a ping on a live virtual connection is answered pong active')
  t.equal(pong.stream_id, 'stream-1')
  conn.sendPing('nobody', 'stream-z')
  const unknown = await conn.waitForEnvelope((e) => e.type === 'pong' && e.client_id === 'nobody', RECONNECT_WAIT_MS, 'pong unknown')
  t.equal(unknown.status, 'unknown', 'a ping for no connection is answered pong unknown')
  t.notOk(conn.received.some((e) => e.message?.id === 33), 'the repeated seq_id was dropped')
  t.same(conn.serverMessages('ghost'), [], 'nothing answers a client that never sent initialize')

  // client_closed ends a virtual connection: later messages for it are ignored.
  conn.sendInitialize({ clientId: 'phone-2', streamId: 'stream-2', seqId: 1 }, 'init-2')
  await conn.waitForReply('phone-2', 'init-2')
  conn.sendClientClosed('phone-2', 'stream-2')
  conn.sendPing('phone-2', 'stream-2')
  const gone = await conn.waitForEnvelope((e) => e.type === 'pong' && e.client_id === 'phone-2', RECONNECT_WAIT_MS, 'pong after client_closed')
  t.equal(gone.status, 'unknown', 'client_closed ended the virtual connection (a ping for it is answered unknown)')
  conn.sendClientMessage({ clientId: 'phone-2', streamId: 'stream-2', seqId: 2 }, { id: 'after-close', method: 'account/read', params: {} })

  // Full scopes: account:write (login) and remote:write (disable) are allowed to `remote`.
  const remoteToken = ctx.token()
  conn.sendClientMessage(
    { clientId: 'phone-1', streamId: 'stream-1', seqId: 4 },
    { id: 4, method: 'account/login/start', params: { type: 'chatgptAuthTokens', accessToken: remoteToken, chatgptAccountId: ACCOUNT_ID } },
  )
  const login = await conn.waitForReply('phone-1', 4)
  t.notOk(login.message.error, `account/login/start is allowed: ${JSON.stringify(login.message.error ?? null)}`)
  t.same(login.message.result, { type: 'chatgptAuthTokens' })
  t.notOk(conn.received.some((e) => e.message?.id === 'after-close'), 'a message after client_closed is ignored')

  const before = local.statuses().length
  conn.sendClientMessage({ clientId: 'phone-1', streamId: 'stream-1', seqId: 5 }, { id: 5, method: 'remoteControl/disable' })
  const closed = await withTimeout(conn.closed, RECONNECT_WAIT_MS, 'the backend socket to close')
  t.ok(closed, 'remoteControl/disable from the remote client closes the backend socket')
  const disabled = await local.waitForStatus((s) => s.status === 'disabled', 'disabled', RECONNECT_WAIT_MS, before)
  t.equal(disabled.status, 'disabled')
  t.notOk(
    conn.received.some((e) => e.message?.id === 5 && e.message?.error),
    'the remote disable was not refused (scope remote:write)',
  )
  t.equal((await local.result('remoteControl/status/read')).status, 'disabled')
  t.same(
    server.logs.lines.filter((l) => typeof l.msg === 'string' && /requires scope/.test(l.msg)),
    [],
    'no scope refusal logged',
  )
})

// ---------------------------------------------------------------------------------------------
// The status table.

for (const status of [401, 403] as const) {
  rcTest(`refresh ${status}: server token cleared, ChatGPT credential recovered (client asked), retry succeeds`, async (t, ctx) => {
    // Tokens within 300 s of expiry: every reconnect refreshes (proactively).
    const clock = reconnectClock()
    const { local, chatgpt, conn, server } = await connectedSetup(ctx, { backend: { tokenTtlMs: 120_000 }, server: { clock } })
    const backend = ctx.backend
    const first = backend.grants[0]!
    const serverId = first.serverId
    backend.script('refresh', { status, body: { detail: 'Unauthorized' }, headers: { 'x-request-id': `req-refresh-${status}` } })
    const mark = backend.requests.length - 1
    const fromStatus = local.statuses().length
    conn.terminate()
    await passBackoff(t, clock, backend, 1)

    const ask = await local.waitForServerRequest('account/chatgptAuthTokens/refresh')
    t.same(ask.params, { reason: 'unauthorized', previousAccountId: ACCOUNT_ID }, 'the local client is asked for fresh ChatGPT tokens')
    const fresh = ctx.token()
    local.reply(ask.id, { result: { accessToken: fresh, chatgptAccountId: ACCOUNT_ID, chatgptPlanType: null } })

    const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
    await local.waitForStatus((s) => s.status === 'connected', 'connected again', RECONNECT_WAIT_MS, fromStatus)
    const after = backend.since(mark)
    const refreshes = after.filter((r) => r.endpoint === 'refresh')
    t.equal(refreshes[0]?.status, status, `the refresh was answered ${status}`)
    t.equal(header(refreshes[0], 'authorization'), `Bearer ${chatgpt}`, 'with the first ChatGPT token')
    t.same(refreshes[0]?.body, { server_id: serverId, installation_id: header(refreshes[0], 'x-codex-installation-id') }, 'refresh body {server_id, installation_id}')
    t.equal(refreshes[0]?.url, REFRESH_PATH)
    t.equal(refreshes[1]?.status, 200, 'the retry succeeds')
    t.equal(header(refreshes[1], 'authorization'), `Bearer ${fresh}`, 'the retry uses the recovered ChatGPT token')
    t.ok(
      after.filter((r) => r.endpoint !== 'websocket').slice(1).every((r) => header(r, 'authorization') === `Bearer ${fresh}`),
      'every later call uses the recovered credential',
    )
    t.same(after.filter((r) => r.endpoint === 'enroll'), [], 'no re-enroll: the enrollment is kept')
    const retryGrant = refreshes[1]?.grant
    t.not(header(conn2.request, 'authorization'), `Bearer ${first.token}`, 'the cleared server token is not used again')
    t.equal(header(conn2.request, 'x-codex-server-id'), serverId)
    // The status table: "retry" — the successful retry's token is the one the socket opens with.
    t.equal(
      header(conn2.request, 'authorization'),
      `Bearer ${retryGrant?.token}`,
      'the handshake uses the token from the retried refresh',
    )
    t.equal(refreshes.filter((r) => r.index < conn2.request.index).length, 2, `one ${status}, one successful retry, then the handshake (got ${describeRequests(after)})`)
    t.equal(local.client.serverRequests.length, 1, 'the client was asked once')
    const seen = local.statuses().slice(fromStatus).map((s) => s.status)
    t.notOk(seen.includes('errored'), `the recovered attempt is not reported as a failure (statuses: ${seen.join(' → ')}; logged: ${JSON.stringify(problems(server))})`)
  })

  rcTest(`enroll ${status}: ChatGPT credential recovered (client asked), retry succeeds`, async (t, ctx) => {
    const backend = await ctx.startBackend()
    const server = await ctx.server()
    const local = await ctx.local(server)
    const chatgpt = ctx.token()
    await local.loginExternal(chatgpt)
    backend.script('enroll', { status, body: { detail: 'Unauthorized' } })
    await local.result('remoteControl/enable')

    const ask = await local.waitForServerRequest('account/chatgptAuthTokens/refresh')
    t.same(ask.params, { reason: 'unauthorized', previousAccountId: ACCOUNT_ID })
    const fresh = ctx.token()
    local.reply(ask.id, { result: { accessToken: fresh, chatgptAccountId: ACCOUNT_ID, chatgptPlanType: null } })

    const conn = await backend.waitForConnection(1, RECONNECT_WAIT_MS)
    await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS)
    const enrolls = backend.of('enroll')
    t.equal(enrolls[0]?.status, status)
    t.equal(header(enrolls[0], 'authorization'), `Bearer ${chatgpt}`)
    t.equal(enrolls[1]?.status, 200, 'the retried enroll succeeds')
    t.equal(header(enrolls[1], 'authorization'), `Bearer ${fresh}`, 'with the recovered ChatGPT token')
    t.equal(enrolls.length, 2, 'enrolled once after the recovery')
    t.equal(header(conn.request, 'authorization'), `Bearer ${enrolls[1]?.grant?.token}`, 'the handshake uses the token from the retried enroll')
    const beforeHandshake = backend.requests.filter((r) => r.index < conn.request.index)
    t.same(
      beforeHandshake.map((r) => `${r.endpoint}:${r.status}`),
      [`enroll:${status}`, 'enroll:200'],
      `enroll ${status}, the retry, then the handshake (got ${describeRequests(beforeHandshake)})`,
    )
    const seen = local.statuses().map((s) => s.status)
    t.notOk(seen.includes('errored'), `the recovered attempt is not reported as a failure (statuses: ${seen.join(' → ')}; logged: ${JSON.stringify(problems(server))})`)
  })
}

rcTest('refresh 404: persisted row deleted, environmentId null published, re-enroll in the same attempt', async (t, ctx) => {
  const clock = reconnectClock()
  const { local, conn, server } = await connectedSetup(ctx, { backend: { tokenTtlMs: 120_000 }, server: { clock } })
  const backend = ctx.backend
  const first = backend.grants[0]!
  t.same(
    enrollmentRows(server.home).map((r) => r.server_id),
    [first.serverId],
    'the enrollment is persisted',
  )
  // The re-enroll fails (twice), so the state between the 404 and the next enrollment can be seen.
  backend.script('refresh', { status: 404, body: { detail: 'Not Found' } })
  backend.script('enroll', { status: 400, body: { detail: 'try again' } }, { status: 400, body: { detail: 'try again' } })
  const mark = backend.requests.length - 1
  const fromStatus = local.statuses().length
  conn.terminate()
  await passBackoff(t, clock, backend, 1)

  await backend.until(() => backend.of('enroll').some((r) => r.status === 400), 'the re-enroll', RECONNECT_WAIT_MS)
  t.same(enrollmentRows(server.home), [], 'the persisted row is deleted')
  const nulled = await local.waitForStatus((s) => s.environmentId === null, 'environmentId null', RECONNECT_WAIT_MS, fromStatus)
  t.equal(nulled.environmentId, null, 'environmentId: null is published')
  t.equal((await local.result('remoteControl/status/read')).environmentId, null)
  const after = backend.since(mark)
  t.same(
    after.slice(0, 2).map((r) => `${r.endpoint}:${r.status}`),
    ['refresh:404', 'enroll:400'],
    're-enrolled right after the 404, in the same attempt (no handshake in between)',
  )

  // Each failed re-enroll backs off before the next.
  await passBackoff(t, clock, backend, 2)
  await passBackoff(t, clock, backend, 3)
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS, fromStatus)
  const enrolled = backend.of('enroll').find((r) => r.status === 200 && r.index > mark)
  t.ok(enrolled, 'a new enrollment')
  t.equal(header(conn2.request, 'x-codex-server-id'), enrolled?.grant?.serverId, 'the socket opens as the new server')
  t.same(
    enrollmentRows(server.home).map((r) => [r.server_id, r.environment_id]),
    [[enrolled?.grant?.serverId, enrolled?.grant?.environmentId]],
    'the new enrollment is persisted',
  )
  t.equal((await local.result('remoteControl/status/read')).environmentId, enrolled?.grant?.environmentId)
})

rcTest('refresh 404: the token of the re-enrollment opens the socket (no further refresh)', async (t, ctx) => {
  const clock = reconnectClock()
  const { local, conn } = await connectedSetup(ctx, { backend: { tokenTtlMs: 120_000 }, server: { clock } })
  const backend = ctx.backend
  backend.script('refresh', { status: 404, body: NOT_FOUND_BODY })
  const mark = backend.requests.length - 1
  const fromStatus = local.statuses().length
  conn.terminate()
  await passBackoff(t, clock, backend, 1)
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS, fromStatus)
  const after = backend.since(mark).filter((r) => r.index <= conn2.request.index)
  t.equal(after[0]?.endpoint, 'refresh')
  t.equal(after[0]?.status, 404)
  t.equal(after[1]?.endpoint, 'enroll', 'the enroll follows the 404 at once')
  t.equal(after[1]?.status, 200)
  t.same(
    after.map((r) => r.endpoint),
    ['refresh', 'enroll', 'websocket'],
    `refresh 404 → enroll → handshake, in one attempt (got ${describeRequests(after)})`,
  )
  t.equal(header(conn2.request, 'authorization'), `Bearer ${after[1]?.grant?.token}`, 'the handshake uses the token the re-enrollment issued')
  t.equal(header(conn2.request, 'x-codex-server-id'), after[1]?.grant?.serverId)
  const seen = local.statuses().slice(fromStatus).map((s) => s.status)
  t.notOk(seen.includes('errored'), `the re-enrolling attempt is not reported as a failure (statuses: ${seen.join(' → ')})`)
  const envs = local.statuses().slice(fromStatus).map((s) => s.environmentId)
  t.ok(envs.includes(null), 'environmentId null was published')
  t.equal(envs.at(-1), after[1]?.grant?.environmentId, 'then the new environment')
})

for (const status of [401, 403] as const) {
  rcTest(`websocket ${status}: the used token is cleared and refreshed before reconnecting`, async (t, ctx) => {
    const clock = reconnectClock()
    const { conn, local } = await connectedSetup(ctx, { server: { clock } })
    const backend = ctx.backend
    const first = backend.grants[0]!
    backend.script('websocket', { status, body: { detail: 'bad server token' } })
    const mark = backend.requests.length - 1
    const fromStatus = local.statuses().length
    conn.terminate()
    await passBackoff(t, clock, backend, 1)
    await passBackoff(t, clock, backend, 2)
    const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
    await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS, fromStatus)
    const after = backend.since(mark).filter((r) => r.index <= conn2.request.index)
    t.same(
      after.map((r) => `${r.endpoint}:${r.status}`),
      [`websocket:${status}`, 'refresh:200', 'websocket:101'],
      `refused handshake → refresh → handshake (got ${describeRequests(after)})`,
    )
    t.equal(header(after[0], 'authorization'), `Bearer ${first.token}`, 'the refused handshake used the first token')
    t.same(after[1]?.body?.server_id, first.serverId, 'a refresh of the same server (not an enroll)')
    t.equal(header(conn2.request, 'authorization'), `Bearer ${after[1]?.grant?.token}`, 'the new socket uses the refreshed token')
    t.equal(header(conn2.request, 'x-codex-server-id'), first.serverId)
    t.equal(backend.of('enroll').length, 1, 'the enrollment is kept')
  })
}

rcTest('websocket 404 "Remote app server not found": enrollment cleared, re-enroll next attempt', async (t, ctx) => {
  const clock = reconnectClock()
  const { conn, local, server } = await connectedSetup(ctx, { server: { clock } })
  const backend = ctx.backend
  const first = backend.grants[0]!
  backend.script('websocket', { status: 404, body: NOT_FOUND_BODY })
  const mark = backend.requests.length - 1
  const fromStatus = local.statuses().length
  conn.terminate()
  await passBackoff(t, clock, backend, 1)
  await passBackoff(t, clock, backend, 2)
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS, fromStatus)
  const after = backend.since(mark).filter((r) => r.index <= conn2.request.index)
  t.same(
    after.map((r) => `${r.endpoint}:${r.status}`),
    ['websocket:404', 'enroll:200', 'websocket:101'],
    `refused handshake → enroll → handshake (got ${describeRequests(after)})`,
  )
  const grant = after[1]?.grant
  t.not(grant?.serverId, first.serverId, 'a new server')
  t.equal(header(conn2.request, 'x-codex-server-id'), grant?.serverId)
  t.equal(header(conn2.request, 'authorization'), `Bearer ${grant?.token}`)
  const envs = local.statuses().slice(fromStatus).map((s) => s.environmentId)
  t.ok(envs.includes(null), 'environmentId null was published when the enrollment was cleared')
  t.equal(envs.at(-1), grant?.environmentId)
  t.same(
    enrollmentRows(server.home).map((r) => r.server_id),
    [grant?.serverId],
    'the new enrollment replaced the old one on disk',
  )
})

const KEEP_CASES: { name: string; status: number; body: unknown; redacted?: boolean }[] = [
  { name: 'other 404 (JSON detail)', status: 404, body: { detail: 'Not Found' } },
  { name: 'other 404 (HTML)', status: 404, body: '<html>Remote app server not found</html>' },
  { name: '500', status: 500, body: { error: 'internal' } },
  { name: '502', status: 502, body: '' },
  { name: '503 with secrets in the body', status: 503, body: null, redacted: true },
]

for (const c of KEEP_CASES) {
  rcTest(`websocket ${c.name}: enrollment and token kept, backed off, retried`, async (t, ctx) => {
    const clock = reconnectClock()
    const { conn, local, server } = await connectedSetup(ctx, { server: { clock } })
    const backend = ctx.backend
    const first = backend.grants[0]!
    const secrets = c.redacted ? [canary('rct-echo'), canary('pair'), canary('manualpair')] : []
    ctx.secrets.push(...secrets)
    const body = c.redacted ? { error: 'overloaded', remote_control_token: secrets[0], pairing_code: secrets[1], manual_pairing_code: secrets[2] } : c.body
    backend.script('websocket', { status: c.status, body, headers: { 'x-request-id': `req-ws-${c.status}`, 'cf-ray': `ray-ws-${c.status}` } })
    const mark = backend.requests.length - 1
    const fromStatus = local.statuses().length
    conn.terminate()
    await passBackoff(t, clock, backend, 1)
    const retryMark = await passBackoff(t, clock, backend, 2)
    const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
    await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS, fromStatus)
    const after = backend.since(mark).filter((r) => r.index <= conn2.request.index)
    t.same(
      after.map((r) => `${r.endpoint}:${r.status}`),
      [`websocket:${c.status}`, 'websocket:101'],
      `refused handshake → the same handshake again (got ${describeRequests(after)})`,
    )
    t.equal(header(conn2.request, 'authorization'), `Bearer ${first.token}`, 'the server token is kept')
    t.equal(header(conn2.request, 'x-codex-server-id'), first.serverId, 'the enrollment is kept')
    t.ok((after[0]?.index ?? Infinity) < retryMark && (after[1]?.index ?? -1) >= retryMark, 'backed off before retrying (the retry came once the backoff had passed)')
    t.notOk(
      local.statuses().slice(fromStatus).some((s) => s.environmentId === null),
      'environmentId is never reset',
    )
    t.equal(backend.of('enroll').length, 1, 'no new enroll')
    t.equal(backend.of('refresh').length, 0, 'no refresh')
    t.same(enrollmentRows(server.home).map((r) => r.server_id), [first.serverId])
    const text = problems(server).find((p) => p.includes(`HTTP ${c.status}`))
    t.ok(text, 'the failure is logged with its status')
    t.match(text, `request-id: req-ws-${c.status}`, 'with x-request-id')
    t.match(text, `cf-ray: ray-ws-${c.status}`, 'with cf-ray')
    if (c.status === 502) t.match(text, 'body: <empty>', 'an empty body previews as <empty>')
    if (c.redacted) {
      for (const field of ['remote_control_token', 'pairing_code', 'manual_pairing_code']) {
        t.match(text, `"${field}":"<redacted>"`, `${field} is redacted in the error text`)
      }
      t.same(secrets.filter((s) => server.logs.text().includes(s)), [], 'no echoed secret in the logs')
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Restart, the database, previews, disable.

rcTest('restart: a second server on the same home refreshes the persisted enrollment before opening the socket', async (t, ctx) => {
  const { server, installationId } = await connectedSetup(ctx)
  const backend = ctx.backend
  const first = backend.grants[0]!
  await server.close()
  await backend.until(() => backend.connections[0]!.isClosed, 'the first socket closed')

  const server2 = await ctx.server({ home: server.home })
  const local2 = await ctx.local(server2)
  const before = await local2.result('remoteControl/status/read')
  t.equal(before.installationId, installationId, 'the same installation id')
  t.equal(before.status, 'disabled', 'remote control is not on until enabled')
  const chatgpt2 = ctx.token()
  await local2.loginExternal(chatgpt2)
  const mark = backend.requests.length - 1
  await local2.result('remoteControl/enable')
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  await local2.waitForStatus((s) => s.status === 'connected', 'connected')
  const after = backend.since(mark)
  t.same(
    after.map((r) => `${r.endpoint}:${r.status}`),
    ['refresh:200', 'websocket:101'],
    'refresh (not enroll), then the handshake',
  )
  t.same(after[0]?.body, { server_id: first.serverId, installation_id: installationId })
  t.equal(after[0]?.url, REFRESH_PATH)
  t.equal(header(after[0], 'authorization'), `Bearer ${chatgpt2}`)
  t.equal(header(after[0], 'chatgpt-account-id'), ACCOUNT_ID)
  t.equal(header(after[0], 'x-codex-installation-id'), installationId)
  t.equal(header(conn2.request, 'authorization'), `Bearer ${after[0]?.grant?.token}`, 'the refreshed token opens the socket')
  t.equal(header(conn2.request, 'x-codex-server-id'), first.serverId)
  t.not(after[0]?.grant?.token, first.token)
  t.equal((await local2.result('remoteControl/status/read')).environmentId, first.environmentId)
})

rcTest('the database holds the identity only: no server token, expiry or cursor in the raw bytes', async (t, ctx) => {
  const clock = reconnectClock()
  const { server, conn, local } = await connectedSetup(ctx, { backend: { tokenTtlMs: 120_000 }, server: { clock } })
  const backend = ctx.backend
  const cursor1 = canary('cursor')
  const cursor2 = canary('cursor')
  ctx.secrets.push(cursor1, cursor2)
  conn.sendInitialize({ clientId: 'db-phone', streamId: 's1', seqId: 1, cursor: cursor1 })
  await conn.waitForReply('db-phone', 1)
  conn.sendClientMessage({ clientId: 'db-phone', streamId: 's1', seqId: 2, cursor: cursor2 }, { id: 2, method: 'account/read', params: {} })
  const read1 = await conn.waitForReply('db-phone', 2)
  // Not acked: it must be replayed on the next socket.
  conn.terminate()
  await passBackoff(t, clock, backend, 1)
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  t.equal(header(conn2.request, 'x-codex-subscribe-cursor'), cursor2, 'the latest cursor is sent on the next handshake')
  t.equal(backend.of('refresh').filter((r) => r.status === 200).length, 1, 'the reconnect refreshed the token')
  const replayed = await conn2.waitForReply('db-phone', 2)
  t.equal(replayed.seq_id, read1.seq_id, 'unacked envelopes are sent again after the reconnect, same seq_id')
  conn2.sendAck('db-phone', 's1', read1.seq_id as number)
  conn2.sendClientMessage({ clientId: 'db-phone', streamId: 's1', seqId: 3 }, { id: 3, method: 'account/read', params: {} })
  await conn2.waitForReply('db-phone', 3)
  await local.waitForStatus((s) => s.status === 'connected', 'connected')
  const homeFiles = () => readdirSync(server.home).filter((f) => f.startsWith(ENROLLMENT_DB_FILE))

  const check = (when: string): void => {
    const files = homeFiles()
    t.ok(files.includes(ENROLLMENT_DB_FILE), `${when}: ${ENROLLMENT_DB_FILE} exists (${files.join(', ')})`)
    const bytes = Buffer.concat(files.map((f) => readFileSync(join(server.home, f))))
    const latin = bytes.toString('latin1')
    const serverIds = [...new Set(backend.grants.map((g) => g.serverId))]
    t.ok(serverIds.every((id) => latin.includes(id)), `${when}: the server_id is stored`)
    t.ok(latin.includes(backend.grants[0]!.environmentId), `${when}: the environment_id is stored`)
    const leaks: string[] = []
    for (const g of backend.grants) {
      if (latin.includes(g.token)) leaks.push(`token of ${g.endpoint}`)
      if (bytes.includes(Buffer.from(g.token, 'utf16le'))) leaks.push(`token (UTF-16) of ${g.endpoint}`)
      const ms = Date.parse(g.expiresAt)
      const forms = [g.expiresAt, g.expiresAt.replace(/\.\d+Z$/, 'Z'), String(ms), String(Math.floor(ms / 1000)), new Date(ms).toISOString().replace('T', ' ')]
      for (const f of forms) if (latin.includes(f)) leaks.push(`expires_at ${f}`)
      const be8 = Buffer.alloc(8)
      be8.writeBigInt64BE(BigInt(ms))
      if (bytes.includes(be8.subarray(2))) leaks.push('expires_at as a 48-bit integer')
      const sec4 = Buffer.alloc(4)
      sec4.writeUInt32BE(Math.floor(ms / 1000))
      if (bytes.includes(sec4)) leaks.push('expires_at seconds as a 32-bit integer')
      const f8 = Buffer.alloc(8)
      f8.writeDoubleBE(ms)
      if (bytes.includes(f8)) leaks.push('expires_at as a float')
    }
    for (const c of [cursor1, cursor2]) if (latin.includes(c)) leaks.push('a cursor')
    for (const c of ctx.chatgptTokens) if (latin.includes(c)) leaks.push('a ChatGPT token')
    t.same(leaks, [], `${when}: no token, expiry or cursor in ${files.join(' + ')}`)
  }
  check('while running')
  const db = new Database(join(server.home, ENROLLMENT_DB_FILE), { readonly: true })
  const columns = (db.prepare('SELECT name FROM pragma_table_info(?)').all('remote_control_enrollments') as { name: string }[]).map((c) => c.name).sort()
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name)
  db.close()
  t.same(tables, ['remote_control_enrollments'], 'one table')
  t.same(
    columns,
    ['account_id', 'app_server_client_name', 'environment_id', 'server_id', 'server_name', 'updated_at', 'websocket_url'],
    'the enrollment columns, nothing for a token, expiry or cursor',
  )
  await server.close()
  check('after shutdown')
})

rcTest('redacted previews: an enroll failure echoing secrets is logged with <redacted>, never the values', async (t, ctx) => {
  const backend = await ctx.startBackend()
  const clock = reconnectClock()
  const server = await ctx.server({ clock })
  const local = await ctx.local(server)
  await local.loginExternal(ctx.token())
  const rct = canary('rct-echo')
  const pairing = canary('pairing')
  const manual = canary('manual-pairing')
  ctx.secrets.push(rct, pairing, manual)
  backend.script('enroll', {
    status: 400,
    body: { error: 'bad enrollment', remote_control_token: rct, pairing_code: pairing, manual_pairing_code: manual, nested: { pairing_code: pairing } },
    headers: { 'x-oai-request-id': 'oai-req-400', 'cf-ray': 'ray-400' },
  })
  await local.result('remoteControl/enable')
  await local.waitForStatus((s) => s.status === 'errored', 'errored')
  await passBackoff(t, clock, backend, 1)
  await backend.waitForConnection(1, RECONNECT_WAIT_MS)
  const text = problems(server).find((p) => p.includes('HTTP 400'))
  t.ok(text, 'the enroll failure is logged')
  t.match(text, /^remote control server enrollment failed at `http:\/\/127\.0\.0\.1:\d+\/backend-api\/wham\/remote\/control\/server\/enroll`: HTTP 400 Bad Request/)
  t.match(text, 'request-id: oai-req-400', 'x-oai-request-id when there is no x-request-id')
  t.match(text, 'cf-ray: ray-400')
  for (const field of ['remote_control_token', 'pairing_code', 'manual_pairing_code']) {
    t.match(text, `"${field}":"<redacted>"`, `${field} replaced by "<redacted>"`)
  }
  t.match(text, '"error":"bad enrollment"', 'the rest of the body is kept')
  const all = server.logs.text()
  t.same([rct, pairing, manual].filter((s) => all.includes(s)), [], 'no echoed secret anywhere in the logs')
  t.same(leakedCanaries(all), [])
  for (const l of ctx.locals) {
    t.same([rct, pairing, manual].filter((s) => l.client.frames.join('\n').includes(s)), [], 'nor in anything a client received')
  }
  t.equal((await local.result('remoteControl/status/read')).status, 'connected', 'the next attempt enrolls and connects')
})

rcTest('remoteControl/disable: status disabled, backend socket closed, no reconnect; enable again reuses the enrollment', async (t, ctx) => {
  const clock = new ManualClock()
  const { conn, local } = await connectedSetup(ctx, { server: { clock } })
  const backend = ctx.backend
  const disabled = await local.result('remoteControl/disable')
  t.equal(disabled.status, 'disabled')
  t.equal(disabled.serverName, SERVER_NAME)
  const closed = await withTimeout(conn.closed, RECONNECT_WAIT_MS, 'the backend socket to close')
  t.ok(closed, 'the backend socket is closed')
  await local.waitForStatus((s) => s.status === 'disabled', 'disabled notification', RECONNECT_WAIT_MS)
  const count = backend.requests.length
  // Past any reconnect backoff.
  await clock.advanceSettling(10 * 60_000)
  t.equal(backend.requests.length, count, 'no reconnect while disabled')
  t.equal((await local.result('remoteControl/status/read')).status, 'disabled')
  const again = await local.result('remoteControl/disable')
  t.equal(again.status, 'disabled', 'disable twice is harmless')

  const from = local.statuses().length
  await local.result('remoteControl/enable')
  const conn2 = await backend.waitForConnection(2, RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'connected again', RECONNECT_WAIT_MS, from)
  t.equal(backend.of('enroll').length, 1, 'no second enroll')
  t.equal(header(conn2.request, 'x-codex-server-id'), backend.grants[0]?.serverId)
})

rcTest('canaries: server token, ChatGPT token and pairing fields never reach logs or client-visible errors', async (t, ctx) => {
  const clock = reconnectClock()
  const { server, conn, local, chatgpt } = await connectedSetup(ctx, { backend: { tokenTtlMs: 120_000 }, server: { clock } })
  const backend = ctx.backend
  const pairing = canary('pairing')
  ctx.secrets.push(pairing)
  // A refused refresh and a refused handshake, both echoing secrets; then back to connected.
  backend.script('refresh', { status: 400, body: { remote_control_token: backend.grants[0]!.token, pairing_code: pairing } })
  backend.script('websocket', { status: 500, body: { manual_pairing_code: pairing, remote_control_token: backend.grants[0]!.token } })
  conn.terminate()
  for (let n = 1; n <= 3; n++) await passBackoff(t, clock, backend, n)
  await backend.until(() => backend.connections.length >= 2, 'reconnect', RECONNECT_WAIT_MS)
  await local.waitForStatus((s) => s.status === 'connected', 'connected', RECONNECT_WAIT_MS)
  const logs = server.logs.text()
  t.ok(logs.length > 0, 'logs were captured')
  for (const g of backend.grants) t.notOk(logs.includes(g.token), `the ${g.endpoint} server token is not in the logs`)
  t.notOk(logs.includes(chatgpt), 'the ChatGPT token is not in the logs')
  t.notOk(logs.includes(pairing), 'the pairing code is not in the logs')
  t.ok(logs.includes('<redacted>'), 'the echoed fields were redacted')
  const frames = local.client.frames.join('\n')
  t.same(leakedCanaries(frames), [], 'no canary in anything the local client received')
  t.same(leakedCanaries(backend.connections.flatMap((c) => c.received.map((e) => JSON.stringify(e))).join('\n')), [], 'no canary in any envelope')
})
