/**
 * The `account/*` JSON-RPC methods over real sockets: logins and their broadcasts, login rules,
 * cancel, logout, the file store, rate limits against a fake usage backend (with the external-token
 * 401 loop, and concurrent reads sharing one backend request, degraded floods included), and
 * scopes. Every result, notification and server request a client receives here is checked
 * against codex 0.169.0's schemas.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { OVERLOADED_MESSAGE } from '../src/rpc/errors.js'
import { httpGet } from './helpers/client.js'
import { FakeUsageBackend, type BackendCall } from './helpers/fake-usage-backend.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { codexErrors } from './helpers/codex-schemas.js'
import { contextTest, type Conn, type Ctx, type Json, type TestT } from './helpers/rpc-context.js'
import { until } from './helpers/wait.js'


const EPHEMERAL = ['--credentials-store', 'ephemeral']
const EXTERNAL_AUTH_ACTIVE = 'External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it.'
const AUTH_CLAIM = 'https://api.openai.com/auth'

/** The codex schema of each method's result (paths below test/fixtures/codex-0.169.0). */
const RESULT_SCHEMAS: Record<string, string> = {
  initialize: 'v1/InitializeResponse',
  'account/read': 'v2/GetAccountResponse',
  'account/login/start': 'v2/LoginAccountResponse',
  'account/login/cancel': 'v2/CancelLoginAccountResponse',
  'account/logout': 'v2/LogoutAccountResponse',
  'account/rateLimits/read': 'v2/GetAccountRateLimitsResponse',
}
const NOTIFICATION_SCHEMAS: Record<string, string> = {
  'account/login/completed': 'v2/AccountLoginCompletedNotification',
  'account/updated': 'v2/AccountUpdatedNotification',
}
const SERVER_REQUEST_SCHEMAS: Record<string, string> = {
  'account/chatgptAuthTokens/refresh': 'ChatgptAuthTokensRefreshParams',
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/** An unsigned (never verified) JWT-shaped access token, registered as a canary. */
function accessToken(claims: Json): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  // Three non-empty segments (codex refuses an empty signature segment); the last is junk.
  const jwt = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ ...claims, jti: randomBytes(8).toString('hex') })}.${randomBytes(16).toString('base64url')}`
  return registerCanary(jwt)
}

function plusToken(email = 'user@example.com'): string {
  return accessToken({ email, [AUTH_CLAIM]: { chatgpt_plan_type: 'plus' } })
}

/** A test whose frames are checked against codex's schemas and whose logs against canaries when it ends. */
function rpcTest(name: string, fn: (t: TestT, ctx: Ctx) => Promise<void>): void {
  contextTest(name, { results: RESULT_SCHEMAS, notifications: NOTIFICATION_SCHEMAS, serverRequests: SERVER_REQUEST_SCHEMAS }, 'account-rpc-test', fn)
}

/** Index of the first frame matching `pred`, or -1. */
function frameIndex(conn: Conn, pred: (m: Json) => boolean): number {
  return conn.frames().findIndex(pred)
}

/**
 * Asserts the frames a login produced on the connection that asked: the result, then
 * completed, then updated, in that order.
 */
function assertResultThenNotifications(t: TestT, conn: Conn, reply: Json, methods: string[]): void {
  const resultAt = frameIndex(conn, (m) => m.id === reply.id && 'result' in m)
  t.ok(resultAt >= 0, 'the result arrived')
  let last = resultAt
  for (const method of methods) {
    const at = conn.frames().findIndex((m, i) => i > last && !('id' in m) && m.method === method)
    t.ok(at > last, `${method} follows the result${methods.length > 1 ? ' and the notifications before it' : ''} on the requesting connection`)
    if (at > last) last = at
  }
}

function errorOf(reply: Json): { code: number; message: string } {
  return (reply.error ?? { code: 0, message: `no error: ${JSON.stringify(reply.result)}` }) as { code: number; message: string }
}

// ---------------------------------------------------------------------------------------------
// The fake ChatGPT usage backend's payload.

/** A realistic `/wham/usage` payload, in the backend's snake_case shape. */
const USAGE = {
  plan_type: 'plus',
  rate_limit: {
    allowed: true,
    limit_reached: false,
    primary_window: { used_percent: 42.6, limit_window_seconds: 18000, reset_after_seconds: 3600, reset_at: 1767225600 },
    secondary_window: { used_percent: 7, limit_window_seconds: 604800, reset_after_seconds: 86400, reset_at: 1767830400 },
  },
  credits: { has_credits: true, unlimited: false, balance: '12.50' },
  additional_rate_limits: [
    {
      limit_name: 'GPT-5-Codex-Spark',
      metered_feature: 'codex_bengalfox',
      rate_limit: {
        allowed: true,
        limit_reached: false,
        primary_window: { used_percent: 3, limit_window_seconds: 18001, reset_after_seconds: 100, reset_at: 1767222000 },
        secondary_window: null,
      },
    },
  ],
  rate_limit_reached_type: { kind: 'workspace_member_usage_limit_reached' },
}

async function backendFor(t: TestT): Promise<FakeUsageBackend> {
  const b = await FakeUsageBackend.start(USAGE)
  t.teardown(() => b.close())
  return b
}

/** Logs in with external tokens on `conn` and waits for the broadcasts. */
async function loginExternal(t: TestT, conn: Conn, token: string, accountId: string, planType?: string | null): Promise<void> {
  const before = conn.notifications.length
  const reply = await conn.call('account/login/start', {
    type: 'chatgptAuthTokens',
    accessToken: token,
    chatgptAccountId: accountId,
    ...(planType === undefined ? {} : { chatgptPlanType: planType }),
  })
  t.same(reply.result, { type: 'chatgptAuthTokens' }, 'chatgptAuthTokens login accepted')
  await conn.until(() => conn.notifications.length >= before + 2)
}

// ---------------------------------------------------------------------------------------------
// account/read and API key login.

rpcTest('account/read without a credential', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const c = await ctx.initialized(server)
  const reply = await c.call('account/read', {})
  t.same(reply.result, { account: null, requiresOpenaiAuth: true })
  const withRefresh = await c.call('account/read', { refreshToken: true })
  t.same(withRefresh.result, { account: null, requiresOpenaiAuth: true }, 'refreshToken:true without a credential is the same')
})

rpcTest('API key login: result, then completed and updated, to every initialized connection that wants them', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const a = await ctx.initialized(server)
  const b = await ctx.initialized(server)
  const uninitialized = await ctx.open(server)
  const optedOut = await ctx.initialized(server, { optOutNotificationMethods: ['account/updated'] })

  const apiKey = canary('sk')
  const reply = await a.call('account/login/start', { type: 'apiKey', apiKey })
  t.same(reply.result, { type: 'apiKey' })

  const completed = { method: 'account/login/completed', params: { loginId: null, success: true, error: null } }
  const updated = { method: 'account/updated', params: { authMode: 'apikey', planType: null } }
  for (const [name, conn] of [['requesting connection', a], ['second connection', b]] as const) {
    await conn.until(() => conn.notifications.length >= 2)
    t.same(conn.notifications, [completed, updated], `${name}: completed then updated, exactly`)
  }
  assertResultThenNotifications(t, a, reply, ['account/login/completed', 'account/updated'])

  // Round trips after the broadcast: anything broadcast to these sockets has arrived by now.
  const early = await uninitialized.call('account/read', {})
  t.same(early.error, { code: -32600, message: 'Not initialized' })
  t.same(uninitialized.notifications, [], 'an uninitialized connection gets no broadcast')
  await optedOut.call('account/read', {})
  t.same(optedOut.notifications, [completed], 'a connection that opted out of account/updated gets only completed')

  const read = await b.call('account/read', {})
  t.same(read.result, { account: { type: 'apiKey' }, requiresOpenaiAuth: true })
  t.notOk(server.logs.text().includes(apiKey), 'the API key is never logged')
})

rpcTest('file store: auth.json written 0600 in a 0700 directory, read back by a new server, removed by logout', async (t, ctx) => {
  const home = join(mkdtempSync(join(tmpdir(), 'account-rpc-')), 'nested', 'home')
  const server = await ctx.server({ argv: ['--home', home] })
  t.equal(server.config.home, home)
  t.equal(server.config.accounts.credentialsStore, 'file', 'file is the default store')
  const c = await ctx.initialized(server)

  const apiKey = canary('sk')
  const reply = await c.call('account/login/start', { type: 'apiKey', apiKey })
  t.same(reply.result, { type: 'apiKey' })
  await c.until(() => c.notifications.length >= 2)

  const file = join(home, 'auth.json')
  t.ok(existsSync(file), 'auth.json exists')
  t.equal(statSync(file).mode & 0o777, 0o600, 'auth.json is 0600')
  t.equal(statSync(home).mode & 0o777, 0o700, 'its directory is 0700')
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Json
  t.same(doc, { auth_mode: 'apikey', OPENAI_API_KEY: apiKey }, 'snake_case document with the key')

  const second = await ctx.server({ argv: ['--home', home] })
  const c2 = await ctx.initialized(second)
  const read = await c2.call('account/read', {})
  t.same(read.result, { account: { type: 'apiKey' }, requiresOpenaiAuth: true }, 'a new server on the same home reads the key back')

  const before = c2.notifications.length
  const out = await c2.call('account/logout')
  t.same(out.result, {})
  await c2.until(() => c2.notifications.length > before)
  t.same(c2.notifications.slice(before), [{ method: 'account/updated', params: { authMode: null, planType: null } }])
  t.notOk(existsSync(file), 'auth.json is gone after logout')
  const after = await c2.call('account/read', {})
  t.same(after.result, { account: null, requiresOpenaiAuth: true })
})

// ---------------------------------------------------------------------------------------------
// External ChatGPT tokens.

rpcTest('chatgptAuthTokens login: claims from the token, chatgptPlanType wins, external auth blocks other logins', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const c = await ctx.initialized(server)
  const other = await ctx.initialized(server)

  const token = plusToken('dev@example.com')
  const reply = await c.call('account/login/start', { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: 'ws-1' })
  t.same(reply.result, { type: 'chatgptAuthTokens' })
  const expected = [
    { method: 'account/login/completed', params: { loginId: null, success: true, error: null } },
    { method: 'account/updated', params: { authMode: 'chatgptAuthTokens', planType: 'plus' } },
  ]
  await c.until(() => c.notifications.length >= 2)
  t.same(c.notifications, expected, 'completed(null) then updated with the plan claim')
  assertResultThenNotifications(t, c, reply, ['account/login/completed', 'account/updated'])
  await other.until(() => other.notifications.length >= 2)
  t.same(other.notifications, expected, 'other connections get them too')

  const read = await c.call('account/read', {})
  t.same(read.result, { account: { type: 'chatgpt', email: 'dev@example.com', planType: 'plus' }, requiresOpenaiAuth: true })

  // chatgptPlanType given explicitly wins over the claim.
  const before = c.notifications.length
  const token2 = plusToken('dev@example.com')
  const again = await c.call('account/login/start', { type: 'chatgptAuthTokens', accessToken: token2, chatgptAccountId: 'ws-1', chatgptPlanType: 'pro' })
  t.same(again.result, { type: 'chatgptAuthTokens' }, 'external tokens can be replaced while external auth is active')
  await c.until(() => c.notifications.length >= before + 2)
  t.same(c.notifications.slice(before), [
    { method: 'account/login/completed', params: { loginId: null, success: true, error: null } },
    { method: 'account/updated', params: { authMode: 'chatgptAuthTokens', planType: 'pro' } },
  ])
  const read2 = await c.call('account/read', {})
  t.same(read2.result, { account: { type: 'chatgpt', email: 'dev@example.com', planType: 'pro' }, requiresOpenaiAuth: true })

  const apiKey = canary('sk')
  const blocked = await c.call('account/login/start', { type: 'apiKey', apiKey })
  t.same(blocked.error, { code: -32600, message: EXTERNAL_AUTH_ACTIVE }, 'API key login while external auth is active')
  const blockedChatgpt = await c.call('account/login/start', { type: 'chatgpt' })
  t.same(blockedChatgpt.error, { code: -32600, message: EXTERNAL_AUTH_ACTIVE }, 'ChatGPT login while external auth is active')
  const still = await c.call('account/read', {})
  t.same(still.result, read2.result, 'the external credential is untouched')

  for (const r of [blocked, blockedChatgpt]) t.same(leakedCanaries(JSON.stringify(r)), [], 'no secret in the error')
})

rpcTest('chatgptAuthTokens: email from the profile claim, unknown plan names map to unknown', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const c = await ctx.initialized(server)
  const token = accessToken({ 'https://api.openai.com/profile': { email: 'profile@example.com' }, [AUTH_CLAIM]: { chatgpt_plan_type: 'galactic' } })
  await loginExternal(t, c, token, 'ws-1')
  t.same(c.notifications.at(-1), { method: 'account/updated', params: { authMode: 'chatgptAuthTokens', planType: 'unknown' } })
  const read = await c.call('account/read', {})
  t.same(read.result, { account: { type: 'chatgpt', email: 'profile@example.com', planType: 'unknown' }, requiresOpenaiAuth: true })
})

// ---------------------------------------------------------------------------------------------
// Login rules.

rpcTest('--forced-login-method chatgpt refuses API keys', async (t, ctx) => {
  const server = await ctx.server({ argv: [...EPHEMERAL, '--forced-login-method', 'chatgpt'] })
  const c = await ctx.initialized(server)
  const reply = await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  t.same(reply.error, { code: -32600, message: 'API key login is disabled. Use ChatGPT login instead.' })
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true }, 'nothing stored')
  t.same(c.notifications, [], 'no notification for a refused login')
})

rpcTest('--forced-login-method api refuses ChatGPT and external tokens', async (t, ctx) => {
  const server = await ctx.server({ argv: [...EPHEMERAL, '--forced-login-method', 'api'] })
  const c = await ctx.initialized(server)
  const chatgpt = await c.call('account/login/start', { type: 'chatgpt' })
  t.same(chatgpt.error, { code: -32600, message: 'ChatGPT login is disabled. Use API key login instead.' })
  const external = await c.call('account/login/start', { type: 'chatgptAuthTokens', accessToken: plusToken(), chatgptAccountId: 'ws-1' })
  t.same(external.error, { code: -32600, message: 'External ChatGPT auth is disabled. Use API key login instead.' })
  t.same(c.notifications, [], 'no notification for a refused login')
  const ok = await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  t.same(ok.result, { type: 'apiKey' }, 'API key login still works')
})

rpcTest('--forced-chatgpt-workspace-id (several) refuses tokens for another workspace', async (t, ctx) => {
  const server = await ctx.server({ argv: [...EPHEMERAL, '--forced-chatgpt-workspace-id', 'a', '--forced-chatgpt-workspace-id', 'b'] })
  const c = await ctx.initialized(server)
  const token = plusToken()
  const reply = await c.call('account/login/start', { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: 'X' })
  t.same(reply.error, { code: -32600, message: 'External auth must use one of workspace(s) ["a", "b"], but received "X".' })
  t.same(leakedCanaries(JSON.stringify(reply)), [], 'the token is not in the error')
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true }, 'nothing stored')
  await loginExternal(t, c, plusToken(), 'b')
  const read2 = await c.call('account/read', {})
  t.match(read2.result, { account: { type: 'chatgpt' } }, 'an allowed workspace is accepted')
})

// ---------------------------------------------------------------------------------------------
// Cancel and logout.

rpcTest('account/login/cancel: bad id, unknown id, and a browser login in progress', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL, env: { AUTH_ISSUER: 'http://127.0.0.1:9' } })
  const c = await ctx.initialized(server)
  const bad = await c.call('account/login/cancel', { loginId: 'not-a-uuid' })
  t.same(bad.error, { code: -32600, message: 'invalid login id: not-a-uuid' })
  const unknown = await c.call('account/login/cancel', { loginId: randomUUID() })
  t.same(unknown.result, { status: 'notFound' })

  const start = await c.call('account/login/start', { type: 'chatgpt' })
  const result = start.result as { type: string; loginId: string; authUrl: string }
  t.equal(result.type, 'chatgpt')
  t.match(result.loginId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'loginId is a uuid')
  t.match(result.authUrl, /^http:\/\/127\.0\.0\.1:9\/oauth\/authorize\?/, 'authUrl points at the issuer')
  const before = c.notifications.length
  const cancel = await c.call('account/login/cancel', { loginId: result.loginId })
  t.same(cancel.result, { status: 'canceled' })
  await c.until(() => c.notifications.length > before)
  t.match(c.notifications.slice(before), [{ method: 'account/login/completed', params: { loginId: result.loginId, success: false, error: String } }])
  const twice = await c.call('account/login/cancel', { loginId: result.loginId })
  t.same(twice.result, { status: 'notFound' }, 'a canceled login is gone')
  await c.call('account/read', {})
  t.notOk(c.notifications.some((n) => n.method === 'account/updated'), 'a canceled login does not update the account')
})

rpcTest('account/logout clears an API key and notifies', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const c = await ctx.initialized(server)
  const other = await ctx.initialized(server)
  await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  await c.until(() => c.notifications.length >= 2)
  await other.until(() => other.notifications.length >= 2)

  const out = await c.call('account/logout')
  t.same(out.result, {})
  const updated = { method: 'account/updated', params: { authMode: null, planType: null } }
  await c.until(() => c.notifications.length >= 3)
  t.same(c.notifications.slice(2), [updated])
  assertResultThenNotifications(t, c, out, ['account/updated'])
  await other.until(() => other.notifications.length >= 3)
  t.same(other.notifications.slice(2), [updated], 'other connections are told too')
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })
})

rpcTest('account/logout clears external tokens', async (t, ctx) => {
  const server = await ctx.server({ argv: EPHEMERAL })
  const c = await ctx.initialized(server)
  await loginExternal(t, c, plusToken(), 'ws-1')
  const out = await c.call('account/logout')
  t.same(out.result, {})
  await c.until(() => c.notifications.length >= 3)
  t.same(c.notifications[2], { method: 'account/updated', params: { authMode: null, planType: null } })
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })
  const apiKey = await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  t.same(apiKey.result, { type: 'apiKey' }, 'after logout an API key login is allowed again')
})

// ---------------------------------------------------------------------------------------------
// Rate limits.

rpcTest('account/rateLimits/read needs a ChatGPT credential', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  const none = await c.call('account/rateLimits/read')
  t.same(none.error, { code: -32600, message: 'codex account authentication required to read rate limits' })
  await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  const apiKey = await c.call('account/rateLimits/read')
  t.same(apiKey.error, { code: -32600, message: 'chatgpt authentication required to read rate limits' })
  t.equal(backend.calls.length, 0, 'the backend is never called without ChatGPT auth')
})

rpcTest('account/rateLimits/read with external tokens maps the usage payload', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  const token = plusToken()
  await loginExternal(t, c, token, 'acct-123')

  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, 'no error')
  const result = reply.result as Json
  t.equal(codexErrors('v2/GetAccountRateLimitsResponse', result), '', "valid against codex's GetAccountRateLimitsResponse")

  t.equal(backend.calls.length, 1, 'one backend call')
  const call = backend.calls[0] as BackendCall
  t.ok(call.authorization === `Bearer ${token}`, 'Authorization: Bearer <access token>')
  t.equal(call.accountId, 'acct-123', 'ChatGPT-Account-Id is the account id')
  t.ok(typeof call.userAgent === 'string' && call.userAgent.length > 0, 'a User-Agent is sent')

  const codex = {
    limitId: 'codex',
    limitName: null,
    primary: { usedPercent: 43, windowDurationMins: 300, resetsAt: 1767225600 },
    secondary: { usedPercent: 7, windowDurationMins: 10080, resetsAt: 1767830400 },
    credits: { hasCredits: true, unlimited: false, balance: '12.50' },
    planType: 'plus',
    rateLimitReachedType: 'workspace_member_usage_limit_reached',
  }
  t.same(result.rateLimits, codex, 'rateLimits is the codex snapshot')
  const byId = result.rateLimitsByLimitId as Record<string, Json>
  t.same(Object.keys(byId).sort(), ['codex', 'codex_bengalfox'], 'one snapshot per limit id')
  t.same(byId.codex, codex, 'rateLimitsByLimitId.codex is the codex snapshot')
  t.match(byId.codex_bengalfox, {
    limitId: 'codex_bengalfox',
    limitName: 'GPT-5-Codex-Spark',
    primary: { usedPercent: 3, windowDurationMins: 301, resetsAt: 1767222000 },
    secondary: null,
    planType: 'plus',
  })
})

rpcTest('the 401 loop: the client is asked for fresh tokens and the call is retried once', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  const first = plusToken()
  const fresh = plusToken()
  backend.respond = (call) =>
    call.authorization === `Bearer ${first}` ? { status: 401, body: { detail: 'token expired' } } : { status: 200, body: USAGE }
  await loginExternal(t, c, first, 'acct-7')

  const pending = c.call('account/rateLimits/read')
  const request = await c.client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && 'id' in m)
  t.ok(Number.isInteger(request.id), 'the server request id is an integer')
  t.same(request.params, { reason: 'unauthorized', previousAccountId: 'acct-7' })
  t.equal(codexErrors('ChatgptAuthTokensRefreshParams', request.params), '', "valid against codex's ChatgptAuthTokensRefreshParams")
  const response = { accessToken: fresh, chatgptAccountId: 'acct-7', chatgptPlanType: null }
  t.equal(codexErrors('ChatgptAuthTokensRefreshResponse', response), '', 'our reply is a valid ChatgptAuthTokensRefreshResponse')
  c.reply(request.id, { result: response })

  const reply = await pending
  t.notOk('error' in reply, 'the retried call succeeds')
  t.match(reply.result, { rateLimits: { limitId: 'codex', planType: 'plus' } })
  t.equal(codexErrors('v2/GetAccountRateLimitsResponse', reply.result), '')
  t.equal(backend.calls.length, 2, 'exactly one retry')
  t.ok(backend.calls[0]?.authorization === `Bearer ${first}`, 'first call with the old token')
  t.ok(backend.calls[1]?.authorization === `Bearer ${fresh}`, 'retry with the new token')
  t.equal(backend.calls[1]?.accountId, 'acct-7')

  const again = await c.call('account/rateLimits/read')
  t.notOk('error' in again, 'a later call succeeds')
  t.ok(backend.calls[2]?.authorization === `Bearer ${fresh}`, 'the new token is kept')
  t.equal(c.client.serverRequests.length, 1, 'no second refresh request')
})

rpcTest('the 401 loop: a client error reply fails the call with -32603', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  backend.respond = () => ({ status: 401, body: { detail: 'nope' } })
  const token = plusToken()
  await loginExternal(t, c, token, 'acct-7')

  const pending = c.call('account/rateLimits/read')
  const request = await c.client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && 'id' in m)
  c.reply(request.id, { error: { code: -1, message: 'no' } })
  const reply = await pending
  t.same(reply.error, { code: -32603, message: 'failed to fetch codex rate limits: auth refresh request failed: code=-1 message=no' })
  t.equal(backend.calls.length, 1, 'no retry without new tokens')
  const read = await c.call('account/read', {})
  t.match(read.result, { account: { type: 'chatgpt' } }, 'the server keeps serving')
})

rpcTest('the 401 loop: a malformed refresh reply fails the call with -32603, and the server keeps serving', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  backend.respond = () => ({ status: 401, body: {} })
  await loginExternal(t, c, plusToken(), 'acct-8')

  const pending = c.call('account/rateLimits/read')
  const request = await c.client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && 'id' in m)
  const secret = canary('at')
  c.reply(request.id, { result: { accessToken: secret, chatgptPlanType: 42 } })
  const reply = await pending
  t.same(reply.error, { code: -32603, message: 'failed to fetch codex rate limits: auth refresh request failed: malformed refresh response' })
  t.equal(backend.calls.length, 1, 'no retry with a malformed reply')
  t.notOk(backend.calls.some((b) => b.authorization === `Bearer ${secret}`), 'its token is never sent')
  const read = await c.call('account/read', {})
  t.match(read.result, { account: { type: 'chatgpt', planType: 'plus' } }, 'the old credential stays')
})

rpcTest('the 401 loop: fresh tokens for another workspace are refused under the workspace rule', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: [...EPHEMERAL, '--forced-chatgpt-workspace-id', 'ws-allowed'], env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  backend.respond = () => ({ status: 401, body: {} })
  await loginExternal(t, c, plusToken(), 'ws-allowed')

  const pending = c.call('account/rateLimits/read')
  const request = await c.client.waitForFrame((m) => m.method === 'account/chatgptAuthTokens/refresh' && 'id' in m)
  t.same(request.params, { reason: 'unauthorized', previousAccountId: 'ws-allowed' })
  const fresh = plusToken()
  c.reply(request.id, { result: { accessToken: fresh, chatgptAccountId: 'ws-other', chatgptPlanType: null } })
  const reply = await pending
  t.same(reply.error, { code: -32600, message: 'External auth must use one of workspace(s) ["ws-allowed"], but received "ws-other".' })
  t.equal(backend.calls.length, 1, 'the refused token is never sent to the backend')
})

rpcTest('backend failures are -32603 without secrets, and the server keeps serving', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const c = await ctx.initialized(server)
  const token = plusToken()
  await loginExternal(t, c, token, 'acct-9')

  // A 500 whose body echoes the token back.
  backend.respond = (call) => ({ status: 500, body: { error: `internal error for ${call.authorization ?? ''}` } })
  const failed = await c.call('account/rateLimits/read')
  t.equal(errorOf(failed).code, -32603)
  t.match(errorOf(failed).message, /^failed to fetch codex rate limits: /)
  t.same(leakedCanaries(errorOf(failed).message), [], 'the echoed token is not in the message')

  backend.respond = () => ({ status: 200, body: '{"plan_type": "plus", "rate_limit": ', contentType: 'application/json' })
  const malformed = await c.call('account/rateLimits/read')
  t.equal(errorOf(malformed).code, -32603)
  t.match(errorOf(malformed).message, /^failed to fetch codex rate limits: /)
  t.same(leakedCanaries(errorOf(malformed).message), [])

  backend.respond = () => ({ status: 200, body: { rate_limit: 'not an object' } })
  const wrongShape = await c.call('account/rateLimits/read')
  t.equal(errorOf(wrongShape).code, -32603)
  t.match(errorOf(wrongShape).message, /^failed to fetch codex rate limits: /)

  t.equal(c.client.serverRequests.length, 0, 'no refresh request for failures other than 401')
  const read = await c.call('account/read', {})
  t.match(read.result, { account: { type: 'chatgpt', planType: 'plus' } }, 'account/read still works')
  backend.respond = () => ({ status: 200, body: USAGE })
  const ok = await c.call('account/rateLimits/read')
  t.match(ok.result, { rateLimits: { limitId: 'codex' } }, 'rate limits work again once the backend recovers')
  t.same(leakedCanaries(server.logs.text()), [], 'no token in the captured log')
})

// ---------------------------------------------------------------------------------------------
// Starvation: degraded connections polling a backend that does not answer.

const OVERLOADED = { code: -32001, message: OVERLOADED_MESSAGE }

rpcTest('degraded connections flooding account/rateLimits/read share one backend request and never starve a full client', async (t, ctx) => {
  const backend = await backendFor(t)
  const answer = backend.hold()
  t.teardown(() => answer({ status: 500, body: {} }))
  const bound = 8
  const server = await ctx.server({ argv: [...EPHEMERAL, '--no-token-check', '--max-in-flight-per-connection', String(bound)], env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const full = await ctx.initialized(server)
  await loginExternal(t, full, plusToken(), 'acct-flood')

  const degraded = await Promise.all([1, 2, 3].map(() => ctx.open(server, server.wsBase)))
  for (const d of degraded) await d.init()
  const perConnection = 3 * bound
  const pending = degraded.map((d) => Array.from({ length: perConnection }, () => d.call('account/rateLimits/read')))
  // Past the bound each connection is refused at once; the rest wait on the backend.
  const refused = await Promise.all(pending.map((calls) => Promise.all(calls.slice(bound))))
  for (const replies of refused) t.same(replies.map((r) => r.error), replies.map(() => OVERLOADED), `${perConnection - bound} reads past the bound: -32001`)
  await until(() => backend.calls.length >= 1, 'the backend to be asked')

  t.equal(server.app.inFlight.current, 3 * bound, 'each connection holds no more than its bound')
  const read = await full.call('account/read', {})
  t.match(read.result, { account: { type: 'chatgpt' } }, 'a full client is served meanwhile')
  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.same([ready.status, JSON.parse(ready.body)], [200, { status: 'ready' }], '/readyz stays ready')
  t.equal(backend.calls.length, 1, `${3 * bound} concurrent reads of one credential: one outbound request`)

  answer({ status: 200, body: USAGE })
  const served = await Promise.all(pending.map((calls) => Promise.all(calls.slice(0, bound))))
  const results = served.flat().map((r) => r.result)
  t.equal(results.length, 3 * bound)
  t.ok(results.every((r) => codexErrors('v2/GetAccountRateLimitsResponse', r) === ''), 'every held read gets the result')
  t.same(results, results.map(() => results[0]), 'the same result for each')
  t.equal(backend.calls.length, 1, 'still one outbound request')
  await until(() => server.app.inFlight.current === 0, 'the slots to be released')

  // Settled: a later read asks the backend again.
  backend.respond = () => ({ status: 200, body: USAGE })
  const later = await degraded[0]!.call('account/rateLimits/read')
  t.ok('result' in later, 'a later read is served')
  t.equal(backend.calls.length, 2, 'and makes a new request')
})

rpcTest('a shared backend failure reaches every caller that shared it', async (t, ctx) => {
  const backend = await backendFor(t)
  const answer = backend.hold()
  t.teardown(() => answer({ status: 500, body: {} }))
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: backend.baseUrl } })
  const a = await ctx.initialized(server)
  const b = await ctx.initialized(server)
  await loginExternal(t, a, plusToken(), 'acct-shared')
  await b.until(() => b.notifications.length >= 2)
  const pending = [a.call('account/rateLimits/read'), b.call('account/rateLimits/read'), a.call('account/rateLimits/read')]
  await until(() => backend.calls.length >= 1, 'the backend to be asked')
  await a.call('account/read', {})
  await b.call('account/read', {})
  answer({ status: 500, body: { detail: 'backend down' } })
  const replies = await Promise.all(pending)
  for (const r of replies) {
    t.equal(errorOf(r).code, -32603)
    t.match(errorOf(r).message, /^failed to fetch codex rate limits: /)
  }
  t.same(new Set(replies.map((r) => errorOf(r).message)).size, 1, 'the same error for each')
  t.equal(backend.calls.length, 1, 'one outbound request')

  backend.respond = () => ({ status: 200, body: USAGE })
  const again = await a.call('account/rateLimits/read')
  t.ok('result' in again, 'the next read after a failure asks again and is served')
  t.equal(backend.calls.length, 2)
})

rpcTest('an unreachable backend is -32603 too', async (t, ctx) => {
  // Nothing can listen on port 0: every connection there is refused.
  const base = 'http://127.0.0.1:0/backend-api'
  const server = await ctx.server({ argv: EPHEMERAL, env: { CHATGPT_BASE_URL: base } })
  const c = await ctx.initialized(server)
  await loginExternal(t, c, plusToken(), 'acct-9')
  const reply = await c.call('account/rateLimits/read')
  t.equal(errorOf(reply).code, -32603)
  t.match(errorOf(reply).message, /^failed to fetch codex rate limits: /)
  t.same(leakedCanaries(errorOf(reply).message), [])
})

// ---------------------------------------------------------------------------------------------
// Scopes.

rpcTest('a degraded connection may read but not write the account', async (t, ctx) => {
  const server = await ctx.server({ argv: [...EPHEMERAL, '--no-token-check'] })
  const c = await ctx.open(server, server.wsBase)
  await c.init()
  const login = await c.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  t.same(login.error, { code: -32600, message: 'method account/login/start requires scope account:write' })
  const logout = await c.call('account/logout')
  t.same(logout.error, { code: -32600, message: 'method account/logout requires scope account:write' })
  const cancel = await c.call('account/login/cancel', { loginId: randomUUID() })
  t.same(cancel.error, { code: -32600, message: 'method account/login/cancel requires scope account:write' })
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true }, 'account/read is allowed')
  const limits = await c.call('account/rateLimits/read')
  t.same(limits.error, { code: -32600, message: 'codex account authentication required to read rate limits' }, 'account/rateLimits/read passes the scope check')
  t.same(c.notifications, [], 'nothing changed, nothing broadcast')

  // A full-scope connection on the same server can log in; the degraded one, initialized, hears about it.
  const full = await ctx.initialized(server)
  const ok = await full.call('account/login/start', { type: 'apiKey', apiKey: canary('sk') })
  t.same(ok.result, { type: 'apiKey' })
  await c.until(() => c.notifications.length >= 2)
  t.same(
    c.notifications.map((n) => n.method),
    ['account/login/completed', 'account/updated'],
    'broadcasts reach a degraded but initialized connection',
  )
})
