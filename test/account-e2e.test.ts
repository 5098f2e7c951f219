/**
 * Accounts end to end: the ChatGPT browser login through JSON-RPC, its failures (denial, forced
 * workspace, cancel, a newer login, logout), proactive refresh and the managed 401 recovery loop,
 * permanent refresh failures, logout's revocation, and the `login` / `status` / `logout` commands,
 * all over real sockets against a real OAuth server (oidc-provider,
 * test/helpers/oauth-server.ts) and a fake usage backend.
 *
 * Every result and notification a client receives is checked against codex 0.169.0's
 * schemas; every token seen is a canary and must not appear in any server log or output.
 */
import { randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { FakeUsageBackend } from './helpers/fake-usage-backend.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { contextTest, type Conn, type Ctx, type Json, type TestT } from './helpers/rpc-context.js'
import { getCallback, TestOAuthServer } from './helpers/oauth-server.js'
import { runCommand } from './helpers/cli.js'


const AUTH_CLAIM = 'https://api.openai.com/auth'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const LOGIN_SCOPE = 'openid profile email offline_access'
/** Access tokens from this issuer always expire within 5 minutes: every use is a refresh. */
const SHORT_TTL_SECONDS = 60

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

// Two real issuers: long-lived access tokens (no proactive refresh), and short-lived ones.
const issuer = await TestOAuthServer.start()
const shortIssuer = await TestOAuthServer.start({ accessTokenTtlSeconds: SHORT_TTL_SECONDS })
t.teardown(async () => {
  await issuer.close()
  await shortIssuer.close()
})

// ---------------------------------------------------------------------------------------------
// The fake ChatGPT usage backend's payload.

const USAGE = {
  plan_type: 'pro',
  rate_limit: {
    allowed: true,
    limit_reached: false,
    primary_window: { used_percent: 12.4, limit_window_seconds: 18000, reset_after_seconds: 3600, reset_at: 1767225600 },
    secondary_window: { used_percent: 3, limit_window_seconds: 604800, reset_after_seconds: 86400, reset_at: 1767830400 },
  },
  credits: { has_credits: false, unlimited: false, balance: null },
  additional_rate_limits: [],
  rate_limit_reached_type: null,
}

async function backendFor(t: TestT): Promise<FakeUsageBackend> {
  const b = await FakeUsageBackend.start(USAGE)
  t.teardown(() => b.close())
  return b
}

// ---------------------------------------------------------------------------------------------
// Connections and per-test context (every frame schema-checked, every log canary-checked).

/** A test whose frames are checked against codex's schemas and whose logs against canaries when it ends. */
function e2eTest(name: string, fn: (t: TestT, ctx: Ctx) => Promise<void>): void {
  contextTest(name, { results: RESULT_SCHEMAS, notifications: NOTIFICATION_SCHEMAS }, 'account-e2e-test', fn)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function serverEnv(oauth: TestOAuthServer, backend?: FakeUsageBackend): Record<string, string> {
  // Never the real chatgpt.com: an unreachable backend unless one is given.
  return { AUTH_ISSUER: oauth.issuer, CHATGPT_BASE_URL: backend?.baseUrl ?? 'http://127.0.0.1:9/backend-api' }
}

function errorOf(reply: Json): { code: number; message: string } {
  return (reply.error ?? { code: 0, message: `no error: ${JSON.stringify(reply.result)}` }) as { code: number; message: string }
}

function jwtPayload(token: string): Json {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Json
}

function hits(oauth: TestOAuthServer, path: '/oauth/token' | '/oauth/revoke'): number {
  return oauth.hits.get(path) ?? 0
}

interface StoredTokens {
  id_token: string
  access_token: string
  refresh_token: string
  account_id: string | null
}
interface AuthDoc {
  auth_mode?: string
  OPENAI_API_KEY: string | null
  tokens?: StoredTokens
  last_refresh?: string
}

/** The server's auth.json, every token in it registered as a canary. */
function readAuth(home: string): AuthDoc {
  const doc = JSON.parse(readFileSync(join(home, 'auth.json'), 'utf8')) as AuthDoc
  if (doc.tokens) for (const v of [doc.tokens.id_token, doc.tokens.access_token, doc.tokens.refresh_token]) registerCanary(v)
  return doc
}

function storedTokens(home: string): StoredTokens {
  const doc = readAuth(home)
  if (!doc.tokens) throw new Error('auth.json holds no tokens')
  return doc.tokens
}

/** Another process's atomic write of auth.json (temp file + rename, 0600). */
function writeAuth(home: string, doc: AuthDoc): void {
  const tmp = join(home, `.auth.json.${randomUUID()}.tmp`)
  writeFileSync(tmp, JSON.stringify(doc, null, 2), { mode: 0o600 })
  renameSync(tmp, join(home, 'auth.json'))
}

/** A refresh straight at the issuer, as another process holding the same auth.json would do. */
async function refreshElsewhere(oauth: TestOAuthServer, refreshToken: string): Promise<{ status: number; tokens: StoredTokens | null }> {
  const res = await fetch(`${oauth.issuer}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: oauth.clientId }).toString(),
  })
  const body = (await res.json()) as Json
  if (!res.ok) return { status: res.status, tokens: null }
  const tokens = {
    id_token: registerCanary(body.id_token as string),
    access_token: registerCanary(body.access_token as string),
    refresh_token: registerCanary(body.refresh_token as string),
    account_id: null,
  }
  return { status: res.status, tokens }
}

/** `account/login/start {type:'chatgpt'}`: the result, its shape checked. */
async function startChatgptLogin(t: TestT, conn: Conn): Promise<{ loginId: string; authUrl: string }> {
  const reply = await conn.call('account/login/start', { type: 'chatgpt' })
  const result = reply.result as { type: string; loginId: string; authUrl: string } | undefined
  if (!result) throw new Error(`login start failed: ${JSON.stringify(reply.error)}`)
  t.equal(result.type, 'chatgpt')
  t.match(result.loginId, UUID, 'loginId is a uuid')
  return { loginId: result.loginId, authUrl: result.authUrl }
}

interface Account {
  accountId: string
  email: string
  planType?: string
}

/** A whole browser login over JSON-RPC; resolves once completed and updated arrived. */
async function browserLogin(t: TestT, conn: Conn, oauth: TestOAuthServer, account: Account): Promise<string> {
  const updatesBefore = conn.updatedCount()
  const { loginId, authUrl } = await startChatgptLogin(t, conn)
  const page = await oauth.driveBrowserLogin(authUrl, { planType: 'pro', ...account })
  t.equal(page.status, 200, 'the callback page answers 200')
  const completed = await conn.completed(loginId)
  t.same(completed, { loginId, success: true, error: null }, 'login completed successfully')
  await conn.updates(updatesBefore + 1)
  return loginId
}

// ---------------------------------------------------------------------------------------------
// 1. Browser login through JSON-RPC.

e2eTest('browser login over JSON-RPC: authUrl with PKCE, completed then updated, account/read, auth.json 0600', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(issuer, backend) })
  const c = await ctx.initialized(server)
  const other = await ctx.initialized(server)

  const { loginId, authUrl } = await startChatgptLogin(t, c)
  const url = new URL(authUrl)
  t.equal(`${url.origin}${url.pathname}`, `${issuer.issuer}/oauth/authorize`, 'authUrl points at the issuer’s /oauth/authorize')
  const q = url.searchParams
  t.equal(q.get('response_type'), 'code')
  t.equal(q.get('client_id'), issuer.clientId)
  t.match(q.get('redirect_uri'), /^http:\/\/localhost:\d+\/auth\/callback$/, 'redirect to the local callback server')
  t.not(q.get('redirect_uri'), 'http://localhost:1455/auth/callback', 'the configured port 0, not 1455')
  t.equal(q.get('scope'), LOGIN_SCOPE)
  t.equal(q.get('code_challenge_method'), 'S256')
  t.match(q.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/, 'a base64url SHA-256 challenge')
  t.match(q.get('state'), /^[A-Za-z0-9_-]{43,}$/, 'a random state')
  t.notOk(q.has('code_verifier'), 'the verifier never leaves the server')
  t.notOk(q.has('allowed_workspace_id'), 'no workspace restriction by default')
  const state = q.get('state') ?? ''

  const account = { accountId: 'ws-e2e-login', planType: 'pro', email: 'login@example.com' }
  const page = await issuer.driveBrowserLogin(authUrl, account)
  t.equal(page.status, 200, 'the browser is shown a success page')

  const completed = await c.completed(loginId)
  t.same(completed, { loginId, success: true, error: null })
  const [updated] = await c.updates(1)
  t.same(updated, { authMode: 'chatgpt', planType: 'pro' })
  const frames = c.frames()
  const completedAt = frames.findIndex((m) => m.method === 'account/login/completed')
  const updatedAt = frames.findIndex((m) => m.method === 'account/updated')
  t.ok(completedAt >= 0 && completedAt < updatedAt, 'completed comes before updated')
  await other.completed(loginId)
  t.same(await other.updates(1), [{ authMode: 'chatgpt', planType: 'pro' }], 'other connections are told too')

  const read = await c.call('account/read', {})
  t.same(read.result, { account: { type: 'chatgpt', email: 'login@example.com', planType: 'pro' }, requiresOpenaiAuth: true })

  const file = join(server.config.home, 'auth.json')
  t.ok(existsSync(file), 'auth.json written in the server home')
  t.equal(statSync(file).mode & 0o777, 0o600, 'auth.json is 0600')
  const doc = readAuth(server.config.home)
  t.same(Object.keys(doc).filter((k) => !['auth_mode', 'OPENAI_API_KEY', 'tokens', 'last_refresh'].includes(k)), [], 'only the documented keys')
  t.equal(doc.OPENAI_API_KEY, null, 'OPENAI_API_KEY is null')
  if (doc.auth_mode !== undefined) t.equal(doc.auth_mode, 'chatgpt')
  t.same(Object.keys(doc.tokens ?? {}).sort(), ['access_token', 'account_id', 'id_token', 'refresh_token'], 'snake_case tokens')
  const tokens = doc.tokens as StoredTokens
  t.equal(tokens.account_id, 'ws-e2e-login', 'account_id from the id token')
  t.match(jwtPayload(tokens.id_token), { email: 'login@example.com', [AUTH_CLAIM]: { chatgpt_account_id: 'ws-e2e-login', chatgpt_plan_type: 'pro' } }, 'the issuer’s id token')
  t.match(jwtPayload(tokens.access_token), { [AUTH_CLAIM]: { chatgpt_account_id: 'ws-e2e-login' } }, 'the issuer’s access token')
  t.ok(tokens.refresh_token.length > 0, 'a refresh token')
  t.match(doc.last_refresh, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/, 'last_refresh is RFC 3339')
  t.ok(Math.abs(Date.parse(doc.last_refresh ?? '') - Date.now()) < 60_000, 'last_refresh is now')

  // The stored tokens work against the backend (no refresh: long-lived access token).
  const tokenHits = hits(issuer, '/oauth/token')
  const limits = await c.call('account/rateLimits/read')
  t.match(limits.result, { rateLimits: { limitId: 'codex', planType: 'pro' } })
  t.ok(backend.calls[0]?.authorization === `Bearer ${tokens.access_token}`, 'Bearer <stored access token>')
  t.equal(backend.calls[0]?.accountId, 'ws-e2e-login', 'ChatGPT-Account-Id')
  t.equal(hits(issuer, '/oauth/token'), tokenHits, 'no refresh for a fresh token')

  const logText = server.logs.text()
  t.notOk(state !== '' && logText.includes(state), 'the state is never logged')
  t.notOk(logText.includes(q.get('code_challenge') ?? '\u0000'), 'the challenge is never logged')
})

// ---------------------------------------------------------------------------------------------
// 2. Failures.

e2eTest('browser login denied by the user: completed success:false with an error, no account/updated', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const { loginId, authUrl } = await startChatgptLogin(t, c)
  const page = await issuer.driveBrowserLogin(authUrl, { deny: true, accountId: 'ws-deny', email: 'deny@example.com' })
  t.equal(page.params.get('error'), 'access_denied', 'the issuer sent access_denied')
  const completed = await c.completed(loginId)
  t.equal(completed.success, false)
  t.type(completed.error, 'string')
  t.ok((completed.error as string).length > 0, `an error string: ${String(completed.error)}`)
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true }, 'no account')
  t.equal(c.updatedCount(), 0, 'no account/updated')
  t.notOk(existsSync(join(server.config.home, 'auth.json')), 'nothing stored')
})

e2eTest('forced workspace: a login for another workspace fails with codex’s wording', async (t, ctx) => {
  const server = await ctx.server({ argv: ['--forced-chatgpt-workspace-id', 'other'], env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const { loginId, authUrl } = await startChatgptLogin(t, c)
  t.equal(new URL(authUrl).searchParams.get('allowed_workspace_id'), 'other', 'the issuer is told the allowed workspace')
  await issuer.driveBrowserLogin(authUrl, { accountId: 'ws-mine', planType: 'pro', email: 'ws@example.com' })
  const completed = await c.completed(loginId)
  t.same(completed, { loginId, success: false, error: 'Login is restricted to workspace id(s) other.' })
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })
  t.equal(c.updatedCount(), 0, 'no account/updated')
  t.notOk(existsSync(join(server.config.home, 'auth.json')), 'nothing stored')

  // The allowed workspace logs in.
  await browserLogin(t, c, issuer, { accountId: 'other', email: 'ok@example.com' })
  const ok = await c.call('account/read', {})
  t.same(ok.result, { account: { type: 'chatgpt', email: 'ok@example.com', planType: 'pro' }, requiresOpenaiAuth: true })
})

e2eTest('a callback with the wrong state is refused with 400 State mismatch, and the login goes on', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const { loginId, authUrl } = await startChatgptLogin(t, c)
  const callback = await issuer.driveToCallback(authUrl, { accountId: 'ws-state', email: 'state@example.com' })
  const wrong = new URL(callback)
  wrong.searchParams.set('state', 'not-the-state')
  const page = await getCallback(wrong)
  t.equal(page.status, 400)
  t.equal(page.body, 'State mismatch')
  const bare = new URL(callback)
  bare.searchParams.delete('state')
  t.equal((await getCallback(bare)).status, 400, 'no state: 400 too')
  t.notOk(c.notifications.some((n) => n.method === 'account/login/completed'), 'no completed: no local process can end the login')
  const real = await getCallback(callback)
  t.equal(real.status, 200, 'the real callback still signs in')
  t.same(await c.completed(loginId), { loginId, success: true, error: null })
  t.same((await c.call('account/read', {})).result, { account: { type: 'chatgpt', email: 'state@example.com', planType: 'plus' }, requiresOpenaiAuth: true })
})

e2eTest('account/login/cancel: canceled, completed success:false, the callback server is gone', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const { loginId, authUrl } = await startChatgptLogin(t, c)
  const cancel = await c.call('account/login/cancel', { loginId })
  t.same(cancel.result, { status: 'canceled' })
  const completed = await c.completed(loginId)
  t.equal(completed.success, false)
  t.type(completed.error, 'string')
  const again = await c.call('account/login/cancel', { loginId })
  t.same(again.result, { status: 'notFound' }, 'a canceled login is gone')
  await t.rejects(issuer.driveBrowserLogin(authUrl, { accountId: 'ws-cancel' }), 'the callback server no longer answers')
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })
  t.equal(c.updatedCount(), 0, 'no account/updated')
})

e2eTest('a second login start cancels the first', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const first = await startChatgptLogin(t, c)
  const second = await startChatgptLogin(t, c)
  t.not(second.loginId, first.loginId)
  const firstDone = await c.completed(first.loginId)
  t.equal(firstDone.success, false, 'the first login ends unsuccessfully')
  t.type(firstDone.error, 'string')
  const cancelFirst = await c.call('account/login/cancel', { loginId: first.loginId })
  t.same(cancelFirst.result, { status: 'notFound' }, 'the first login is no longer in progress')
  await t.rejects(issuer.driveBrowserLogin(first.authUrl, { accountId: 'ws-first' }), 'the first callback server is gone')

  await issuer.driveBrowserLogin(second.authUrl, { accountId: 'ws-second', planType: 'pro', email: 'second@example.com' })
  t.same(await c.completed(second.loginId), { loginId: second.loginId, success: true, error: null }, 'the second login completes')
  t.same(await c.updates(1), [{ authMode: 'chatgpt', planType: 'pro' }])
  t.equal(storedTokens(server.config.home).account_id, 'ws-second')
})

e2eTest('logout during a login cancels it', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const c = await ctx.initialized(server)
  const { loginId, authUrl } = await startChatgptLogin(t, c)
  const out = await c.call('account/logout')
  t.same(out.result, {})
  const completed = await c.completed(loginId)
  t.equal(completed.success, false, 'the login ends unsuccessfully')
  t.type(completed.error, 'string')
  t.same(await c.updates(1), [{ authMode: null, planType: null }], 'account/updated with nulls')
  const cancel = await c.call('account/login/cancel', { loginId })
  t.same(cancel.result, { status: 'notFound' })
  await t.rejects(issuer.driveBrowserLogin(authUrl, { accountId: 'ws-logout' }), 'the callback server is gone')
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })
})

// ---------------------------------------------------------------------------------------------
// 3. Proactive refresh against the real issuer.

e2eTest('proactive refresh: an access token expiring within 5 minutes is refreshed before the backend call', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(shortIssuer, backend) })
  const home = server.config.home
  const c = await ctx.initialized(server)
  await browserLogin(t, c, shortIssuer, { accountId: 'ws-proactive', email: 'proactive@example.com' })
  const before = readAuth(home)
  const old = before.tokens as StoredTokens
  const exp = jwtPayload(old.access_token).exp as number
  t.ok(exp * 1000 - Date.now() < 5 * 60_000, 'the stored access token expires within 5 minutes')

  const tokenHits = hits(shortIssuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, `no error: ${JSON.stringify(reply.error)}`)
  t.match(reply.result, { rateLimits: { limitId: 'codex', planType: 'pro' } })
  t.equal(hits(shortIssuer, '/oauth/token'), tokenHits + 1, 'one refresh at the issuer’s token endpoint')

  const after = readAuth(home)
  const fresh = after.tokens as StoredTokens
  t.not(fresh.access_token, old.access_token, 'a new access token is stored')
  t.not(fresh.refresh_token, old.refresh_token, 'the rotated refresh token is stored')
  t.equal(fresh.account_id, 'ws-proactive', 'same account')
  t.ok(Date.parse(after.last_refresh ?? '') >= Date.parse(before.last_refresh ?? ''), 'last_refresh updated')
  t.equal(statSync(join(home, 'auth.json')).mode & 0o777, 0o600, 'still 0600')
  t.equal(backend.calls.length, 1, 'one backend call')
  t.ok(backend.calls[0]?.authorization === `Bearer ${fresh.access_token}`, 'the backend saw the NEW access token')
  t.equal(backend.calls[0]?.accountId, 'ws-proactive')
  t.match(jwtPayload(fresh.access_token), { [AUTH_CLAIM]: { chatgpt_account_id: 'ws-proactive' } }, 'an access token from the issuer')

  // account/read {refreshToken:true} forces a refresh.
  const forcedHits = hits(shortIssuer, '/oauth/token')
  const read = await c.call('account/read', { refreshToken: true })
  t.same(read.result, { account: { type: 'chatgpt', email: 'proactive@example.com', planType: 'pro' }, requiresOpenaiAuth: true })
  t.equal(hits(shortIssuer, '/oauth/token'), forcedHits + 1, 'account/read {refreshToken:true} refreshed at the issuer')
  const forced = storedTokens(home)
  t.not(forced.refresh_token, fresh.refresh_token, 'rotated again')
  t.not(forced.access_token, fresh.access_token)

  // A plain account/read does not refresh.
  const plainHits = hits(shortIssuer, '/oauth/token')
  await c.call('account/read', {})
  t.equal(hits(shortIssuer, '/oauth/token'), plainHits, 'account/read without refreshToken does not refresh')
})

e2eTest('proactive refresh is skipped when another process already rotated the tokens', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(shortIssuer, backend) })
  const home = server.config.home
  const c = await ctx.initialized(server)
  await browserLogin(t, c, shortIssuer, { accountId: 'ws-rotated', email: 'rotated@example.com' })
  const doc = readAuth(home)
  const old = doc.tokens as StoredTokens

  // Another process refreshes (the server's refresh token is now spent) and saves its tokens.
  const other = await refreshElsewhere(shortIssuer, old.refresh_token)
  t.equal(other.status, 200, 'the other process refreshed')
  const theirs = { ...(other.tokens as StoredTokens), account_id: old.account_id }
  writeAuth(home, { ...doc, tokens: theirs, last_refresh: new Date().toISOString() })

  const tokenHits = hits(shortIssuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, `no error: ${JSON.stringify(reply.error)}`)
  t.equal(hits(shortIssuer, '/oauth/token'), tokenHits, 'no refresh at the issuer: the stored tokens were used')
  t.ok(backend.calls.at(-1)?.authorization === `Bearer ${theirs.access_token}`, 'the backend saw the other process’s access token')
  t.same(storedTokens(home), theirs, 'auth.json left as the other process wrote it')
})

e2eTest('proactive refresh when last_refresh is older than 8 days (a new server reading auth.json)', async (t, ctx) => {
  const backend = await backendFor(t)
  const first = await ctx.server({ env: serverEnv(issuer, backend) })
  const home = first.config.home
  const c = await ctx.initialized(first)
  await browserLogin(t, c, issuer, { accountId: 'ws-stale', email: 'stale@example.com' })
  await first.close()
  const doc = readAuth(home)
  const old = doc.tokens as StoredTokens
  t.ok((jwtPayload(old.access_token).exp as number) * 1000 - Date.now() > 30 * 60_000, 'the access token itself is far from expiry')
  writeAuth(home, { ...doc, last_refresh: new Date(Date.now() - 9 * 24 * 3600_000).toISOString() })

  const second = await ctx.server({ argv: ['--home', home], env: serverEnv(issuer, backend) })
  const c2 = await ctx.initialized(second)
  const read = await c2.call('account/read', {})
  t.same(read.result, { account: { type: 'chatgpt', email: 'stale@example.com', planType: 'pro' }, requiresOpenaiAuth: true }, 'the stored login is read back')
  const tokenHits = hits(issuer, '/oauth/token')
  const reply = await c2.call('account/rateLimits/read')
  t.notOk('error' in reply, `no error: ${JSON.stringify(reply.error)}`)
  t.equal(hits(issuer, '/oauth/token'), tokenHits + 1, 'refreshed at the issuer first')
  const after = readAuth(home)
  t.not(after.tokens?.refresh_token, old.refresh_token, 'rotated refresh token stored')
  t.ok(Date.now() - Date.parse(after.last_refresh ?? '') < 60_000, 'last_refresh is now')
  t.ok(backend.calls.at(-1)?.authorization === `Bearer ${after.tokens?.access_token ?? ''}`, 'the backend saw the new access token')
})

// ---------------------------------------------------------------------------------------------
// 4. Permanent refresh failures.

e2eTest('a revoked refresh token: -32603 said plainly, cached, cleared by a new login', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(shortIssuer, backend) })
  const c = await ctx.initialized(server)
  await browserLogin(t, c, shortIssuer, { accountId: 'ws-revoked', email: 'revoked@example.com' })
  const old = storedTokens(server.config.home)
  t.ok(shortIssuer.revokeRefreshToken(old.refresh_token), 'the issuer revoked the refresh token')

  const tokenHits = hits(shortIssuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  const err = errorOf(reply)
  t.equal(err.code, -32603)
  t.match(err.message, /refresh/i, `the message says the refresh failed: ${err.message}`)
  t.match(err.message, /(sign in again|log in again|log out)/i, 'and what to do')
  t.same(leakedCanaries(err.message), [], 'no token in the message')
  t.equal(hits(shortIssuer, '/oauth/token'), tokenHits + 1, 'the issuer was asked once')
  t.equal(backend.calls.length, 0, 'the expiring token was not sent to the backend')

  const second = await c.call('account/rateLimits/read')
  t.same(second.error, reply.error, 'the same error again')
  t.equal(hits(shortIssuer, '/oauth/token'), tokenHits + 1, 'cached: the issuer is not asked again')

  // A new credential clears the cached failure.
  const apiKey = canary('sk')
  const login = await c.call('account/login/start', { type: 'apiKey', apiKey })
  t.same(login.result, { type: 'apiKey' })
  await c.completed(null)
  const withKey = await c.call('account/rateLimits/read')
  t.same(withKey.error, { code: -32600, message: 'chatgpt authentication required to read rate limits' }, 'the API key is current, not the cached failure')

  await browserLogin(t, c, shortIssuer, { accountId: 'ws-revoked', email: 'revoked@example.com' })
  const retryHits = hits(shortIssuer, '/oauth/token')
  const ok = await c.call('account/rateLimits/read')
  t.notOk('error' in ok, `a fresh ChatGPT login works again: ${JSON.stringify(ok.error)}`)
  t.equal(hits(shortIssuer, '/oauth/token'), retryHits + 1, 'and refreshes at the issuer again')
})

e2eTest('refresh_token_expired from the issuer is permanent; a transient failure is not cached', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(shortIssuer, backend) })
  const c = await ctx.initialized(server)
  await browserLogin(t, c, shortIssuer, { accountId: 'ws-expired', email: 'expired@example.com' })

  // Transient: 503, then the next call refreshes fine.
  shortIssuer.failNextTokenRequest({ status: 503, body: { error: 'temporarily_unavailable' } })
  const transient = await c.call('account/rateLimits/read')
  t.equal(errorOf(transient).code, -32603, `transient failure: ${errorOf(transient).message}`)
  const hitsAfterTransient = hits(shortIssuer, '/oauth/token')
  const recovered = await c.call('account/rateLimits/read')
  t.notOk('error' in recovered, 'a transient failure is not cached')
  t.equal(hits(shortIssuer, '/oauth/token'), hitsAfterTransient + 1)

  shortIssuer.failNextTokenRequest({ status: 401, body: { error: { code: 'refresh_token_expired', message: 'expired' } } })
  const expired = await c.call('account/rateLimits/read')
  t.equal(errorOf(expired).code, -32603)
  t.match(errorOf(expired).message, /refresh token has expired/i, `said plainly: ${errorOf(expired).message}`)
  const cachedHits = hits(shortIssuer, '/oauth/token')
  const again = await c.call('account/rateLimits/read')
  t.same(again.error, expired.error, 'cached')
  t.equal(hits(shortIssuer, '/oauth/token'), cachedHits, 'the issuer is not asked again')
})

// ---------------------------------------------------------------------------------------------
// 5. The managed 401 loop.

e2eTest('managed 401: reload (no change), refresh at the issuer, retry with the new token', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(issuer, backend) })
  const home = server.config.home
  const c = await ctx.initialized(server)
  await browserLogin(t, c, issuer, { accountId: 'ws-401', email: 'u401@example.com' })
  const old = storedTokens(home)
  backend.respond = (call) => (call.authorization === `Bearer ${old.access_token}` ? { status: 401, body: { detail: 'token expired' } } : { status: 200, body: USAGE })

  const tokenHits = hits(issuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, `the retried call succeeds: ${JSON.stringify(reply.error)}`)
  t.match(reply.result, { rateLimits: { limitId: 'codex' } })
  t.equal(hits(issuer, '/oauth/token'), tokenHits + 1, 'one refresh at the issuer')
  const fresh = storedTokens(home)
  t.not(fresh.access_token, old.access_token, 'new access token stored')
  t.not(fresh.refresh_token, old.refresh_token, 'rotated refresh token stored')
  t.equal(backend.calls.length, 2, 'exactly one retry')
  t.ok(backend.calls[0]?.authorization === `Bearer ${old.access_token}`, 'first with the old token')
  t.ok(backend.calls[1]?.authorization === `Bearer ${fresh.access_token}`, 'retry with the refreshed token')
  t.equal(backend.calls[1]?.accountId, 'ws-401')

  const next = await c.call('account/rateLimits/read')
  t.notOk('error' in next)
  t.ok(backend.calls[2]?.authorization === `Bearer ${fresh.access_token}`, 'the new token is kept')
  t.equal(hits(issuer, '/oauth/token'), tokenHits + 1, 'no further refresh')
})

e2eTest('managed 401: tokens rotated by another process are reloaded and used, without a refresh', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(issuer, backend) })
  const home = server.config.home
  const c = await ctx.initialized(server)
  await browserLogin(t, c, issuer, { accountId: 'ws-reload', email: 'reload@example.com' })
  const doc = readAuth(home)
  const old = doc.tokens as StoredTokens

  const other = await refreshElsewhere(issuer, old.refresh_token)
  t.equal(other.status, 200, 'the other process refreshed at the issuer')
  const theirs = { ...(other.tokens as StoredTokens), account_id: old.account_id }
  writeAuth(home, { ...doc, tokens: theirs, last_refresh: new Date().toISOString() })
  backend.respond = (call) => (call.authorization === `Bearer ${theirs.access_token}` ? { status: 200, body: USAGE } : { status: 401, body: { detail: 'token expired' } })

  const tokenHits = hits(issuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, `the retried call succeeds: ${JSON.stringify(reply.error)}`)
  t.equal(hits(issuer, '/oauth/token'), tokenHits, 'no refresh at the issuer')
  t.equal(backend.calls.length, 2)
  t.ok(backend.calls[0]?.authorization === `Bearer ${old.access_token}`, 'first with the old token')
  t.ok(backend.calls[1]?.authorization === `Bearer ${theirs.access_token}`, 'retry with the reloaded token')
  t.same(storedTokens(home), theirs, 'auth.json as the other process wrote it')

  const read = await c.call('account/read', {})
  t.same(read.result, { account: { type: 'chatgpt', email: 'reload@example.com', planType: 'pro' }, requiresOpenaiAuth: true })
})

e2eTest('managed 401: still 401 after the refresh → give up with -32603', async (t, ctx) => {
  const backend = await backendFor(t)
  const server = await ctx.server({ env: serverEnv(issuer, backend) })
  const c = await ctx.initialized(server)
  await browserLogin(t, c, issuer, { accountId: 'ws-giveup', email: 'giveup@example.com' })
  backend.respond = () => ({ status: 401, body: { detail: 'no' } })
  const tokenHits = hits(issuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.equal(errorOf(reply).code, -32603)
  t.match(errorOf(reply).message, /^failed to fetch codex rate limits: /)
  t.same(leakedCanaries(errorOf(reply).message), [], 'no token in the message')
  t.equal(hits(issuer, '/oauth/token'), tokenHits + 1, 'one refresh')
  t.equal(backend.calls.length, 2, 'the call, and one retry after the refresh')
  t.not(backend.calls[0]?.authorization, backend.calls[1]?.authorization, 'the retry used the refreshed token')
})

e2eTest('managed 401: a reloaded file for another account is not used', async (t, ctx) => {
  const backend = await backendFor(t)
  // The store watch would take the other account as a new login (as it should:
  // account-store-watch.test.ts); this is about the 401 recovery's own re-read, so it is off.
  const server = await ctx.server({ env: serverEnv(issuer, backend), account: { watchStore: false } })
  const home = server.config.home
  const c = await ctx.initialized(server)
  await browserLogin(t, c, issuer, { accountId: 'ws-mine', email: 'mine@example.com' })
  const doc = readAuth(home)
  const mine = doc.tokens as StoredTokens

  // Another process logged in as someone else (tokens from a separate login at the issuer).
  const stranger = await ctx.server({ env: serverEnv(issuer) })
  const s = await ctx.initialized(stranger)
  await browserLogin(t, s, issuer, { accountId: 'ws-stranger', email: 'stranger@example.com' })
  const foreign = readAuth(stranger.config.home)
  writeAuth(home, foreign)
  const foreignAccess = (foreign.tokens as StoredTokens).access_token
  backend.respond = (call) => (call.authorization === `Bearer ${mine.access_token}` ? { status: 401, body: {} } : { status: 200, body: USAGE })

  const tokenHits = hits(issuer, '/oauth/token')
  const reply = await c.call('account/rateLimits/read')
  t.notOk('error' in reply, `recovered by a refresh: ${JSON.stringify(reply.error)}`)
  t.notOk(backend.calls.some((b) => b.authorization === `Bearer ${foreignAccess}`), 'another account’s token is never sent')
  t.equal(hits(issuer, '/oauth/token'), tokenHits + 1, 'refreshed its own tokens at the issuer')
  t.equal(backend.calls.at(-1)?.accountId, 'ws-mine')
})

// ---------------------------------------------------------------------------------------------
// 6. Logout with managed tokens.

e2eTest('logout with managed tokens revokes at the issuer, removes auth.json, notifies nulls', async (t, ctx) => {
  const server = await ctx.server({ env: serverEnv(issuer) })
  const home = server.config.home
  const c = await ctx.initialized(server)
  const other = await ctx.initialized(server)
  await browserLogin(t, c, issuer, { accountId: 'ws-logout', email: 'logout@example.com' })
  const tokens = storedTokens(home)

  const revokes = hits(issuer, '/oauth/revoke')
  const out = await c.call('account/logout')
  t.same(out.result, {})
  t.equal(hits(issuer, '/oauth/revoke'), revokes + 1, 'a revoke request reached the issuer')
  t.notOk(existsSync(join(home, 'auth.json')), 'auth.json removed')
  const updates = await c.updates(2)
  t.same(updates[1], { authMode: null, planType: null }, 'account/updated with nulls')
  t.same((await other.updates(2))[1], { authMode: null, planType: null }, 'other connections too')
  const read = await c.call('account/read', {})
  t.same(read.result, { account: null, requiresOpenaiAuth: true })

  const reuse = await refreshElsewhere(issuer, tokens.refresh_token)
  t.not(reuse.status, 200, 'the revoked refresh token no longer works at the issuer')
  const limits = await c.call('account/rateLimits/read')
  t.same(limits.error, { code: -32600, message: 'codex account authentication required to read rate limits' })
})

// ---------------------------------------------------------------------------------------------
// 7. The command line: `login` (it prints the URL, waits for the browser, exits 0), `status` and
// `logout` through the CLI's own entry point in this process. The real binary's login is
// cli-account.test.ts's (a key on its real stdin) and device-login.test.ts's (Ctrl-C).

/** Shared by the two CLI subtests: one home, logged in by the first, logged out by the second. */
const cli = {
  home: mkdtempSync(join(tmpdir(), 'account-e2e-cli-')),
  backend: null as FakeUsageBackend | null,
  outputs: [] as string[],
  env(): Record<string, string> {
    return {
      AUTH_ISSUER: issuer.issuer,
      APP_SERVER_HOME: this.home,
      APP_SERVER_LOGIN_CALLBACK_PORT: '0',
      CHATGPT_BASE_URL: this.backend?.baseUrl ?? 'http://127.0.0.1:9/backend-api',
    }
  },
}
t.teardown(() => cli.backend?.close())

t.test('CLI: `login` prints the URL, the browser flow completes, `status` shows the account', async (t) => {
  cli.backend = await FakeUsageBackend.start(USAGE)
  const env = cli.env()
  let stderr = ''
  let urlShown!: (url: string) => void
  const shown = new Promise<string>((resolve) => (urlShown = resolve))
  const login = runCommand(['login'], {
    env,
    onStderr: (text) => {
      stderr = text
      const m = /http:\/\/127\.0\.0\.1:\d+\/oauth\/authorize\?\S+/.exec(text)
      if (m) urlShown(m[0])
    },
  })
  const authUrl = await shown
  t.equal(authUrl.startsWith(`${issuer.issuer}/oauth/authorize?`), true, 'the URL is the issuer’s authorize endpoint')
  const q = new URL(authUrl).searchParams
  t.equal(q.get('code_challenge_method'), 'S256')
  t.match(q.get('redirect_uri'), /^http:\/\/localhost:\d+\/auth\/callback$/)
  const page = await issuer.driveBrowserLogin(authUrl, { accountId: 'ws-cli', planType: 'pro', email: 'cli@example.com' })
  t.equal(page.status, 200)
  const done = await login
  t.equal(done.code, 0, `login exits 0; stderr: ${stderr}`)
  t.equal(done.stdout, 'Successfully logged in\n')
  cli.outputs.push(done.stdout + done.stderr)
  // The command has finished with nothing left listening (a login left running would keep
  // this process from ending, as it would the real one).
  await t.rejects(issuer.driveBrowserLogin(authUrl, { accountId: 'ws-cli' }), 'the callback server is gone')
  const file = join(cli.home, 'auth.json')
  t.equal(statSync(file).mode & 0o777, 0o600, 'auth.json 0600')
  const tokens = storedTokens(cli.home)
  t.equal(tokens.account_id, 'ws-cli')

  const status = await runCommand(['status'], { env })
  cli.outputs.push(status.stdout + status.stderr)
  t.equal(status.code, 0, `status exits 0; stderr: ${status.stderr}`)
  t.equal(status.stdout.split('\n')[0], 'Logged in using ChatGPT - cli@example.com (plan: pro)')
  t.ok(cli.backend.calls.at(-1)?.authorization === `Bearer ${tokens.access_token}`, 'status read the rate limits with the stored token')
})

t.test('CLI: `logout` revokes at the issuer and clears auth.json', async (t) => {
  const env = cli.env()
  const file = join(cli.home, 'auth.json')
  if (!existsSync(file)) return t.fail('the login subtest left no auth.json')
  const revokes = hits(issuer, '/oauth/revoke')
  const logout = await runCommand(['logout'], { env })
  cli.outputs.push(logout.stdout + logout.stderr)
  t.equal(logout.code, 0, `logout exits 0; stderr: ${logout.stderr}`)
  t.equal(logout.stdout, 'Successfully logged out\n')
  t.notOk(existsSync(file), 'auth.json removed')
  t.equal(hits(issuer, '/oauth/revoke'), revokes + 1, 'the refresh token was revoked at the issuer')

  const after = await runCommand(['status'], { env })
  t.equal(after.stdout, 'Not logged in\n')
  for (const out of cli.outputs) t.same(leakedCanaries(out), [], 'no token in the CLI output')
})

t.test('nothing recorded holds a token', async (t) => {
  t.same(leakedCanaries(), [])
})
