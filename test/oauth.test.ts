/**
 * The ChatGPT browser login (PKCE) and token refresh, end to end against a real OAuth server
 * (oidc-provider, test/helpers/oauth-server.ts) over loopback sockets: the authorize URL, the
 * callback server, the code exchange, claims, refresh and its failures, revocation, the forced
 * workspace, the timeout, cancellation and the port fallback.
 *
 * Every token, code, state and verifier seen is a canary; every error text and page the
 * project produces is recorded, and the file fails if any canary appears in them.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { BrowserLogin, LOGIN_TIMEOUT_MS, type BrowserLoginOptions, type BrowserLoginOutcome } from '../src/account/browser-login.js'
import { workspaceViolation } from '../src/account/login-outcome.js'
import { readAccessTokenClaims, readIdTokenClaims } from '../src/account/jwt-claims.js'
import { DEFAULT_LOGIN_PORT, FALLBACK_LOGIN_PORT, LoginServerError, startLoginServer, type CallbackFailure } from '../src/account/login-server.js'
import {
  OAuthClient,
  RefreshError,
  TokenExchangeError,
  type ExchangedTokens,
  type RefreshedTokens,
} from '../src/account/oauth-client.js'
import { createPkce, createState, s256Challenge } from '../src/account/pkce.js'
import { flagDefault } from '../src/config/flags.js'
import { canary, leakedCanaries, record, registerCanary } from './helpers/canary.js'
import { ManualClock } from './helpers/manual-clock.js'
import { getCallback, TestOAuthServer } from './helpers/oauth-server.js'

const ACCESS_TTL = 90
const MSG = {
  expired: 'Your access token could not be refreshed because your refresh token has expired. Please log out and sign in again.',
  reused: 'Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again.',
  invalidated: 'Your access token could not be refreshed because your refresh token was revoked. Please log out and sign in again.',
  unknown: 'Your access token could not be refreshed. Please log out and sign in again.',
}

const srv = await TestOAuthServer.start({ accessTokenTtlSeconds: ACCESS_TTL })
t.teardown(() => srv.close())
const oauth = new OAuthClient({ issuer: srv.issuer, clientId: srv.clientId })
/** Nothing can listen on port 0, so a connection there is always refused (no port is released and hoped to stay free). */
const UNREACHABLE_ISSUER = 'http://127.0.0.1:0'

/** A login on a free port whose state is registered as a canary. */
async function startLogin(options: Partial<BrowserLoginOptions> = {}): Promise<BrowserLogin> {
  const login = await BrowserLogin.start({ oauth, port: 0, ...options })
  registerCanary(new URL(login.authUrl).searchParams.get('state') ?? '')
  return login
}

function registerTokens(tokens: ExchangedTokens | RefreshedTokens): void {
  for (const v of [tokens.idToken, tokens.accessToken, tokens.refreshToken]) if (v) registerCanary(v)
}

/** The outcome, with its tokens registered and its error text recorded. */
async function outcomeOf(login: BrowserLogin): Promise<BrowserLoginOutcome> {
  const outcome = await login.done
  if (outcome.ok) registerTokens(outcome.tokens)
  else record(outcome.error.message)
  return outcome
}

async function loginFor(account: { accountId: string; planType?: string; email?: string }): Promise<ExchangedTokens> {
  const login = await startLogin()
  await srv.driveBrowserLogin(login.authUrl, account)
  const outcome = await outcomeOf(login)
  if (!outcome.ok) throw new Error(`login failed: ${outcome.error.message}`)
  return outcome.tokens
}

async function refreshError(p: Promise<unknown>): Promise<RefreshError> {
  try {
    await p
  } catch (err) {
    if (err instanceof RefreshError) {
      record(err.message)
      return err
    }
    throw err
  }
  throw new Error('refresh succeeded')
}

/** True when nothing listens on the port any more. */
async function refused(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) })
    return false
  } catch {
    return true
  }
}

function listenOn(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

/** `header.payload.signature` with a canary signature (decoded, never verified). */
function fakeJwt(payload: unknown): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return registerCanary(`${enc({ alg: 'RS256', typ: 'JWT' })}.${enc(payload)}.${canary('sig')}`)
}

// ---------------------------------------------------------------------------------------------
t.test('authorize URL', async (t) => {
  t.equal(flagDefault('loginClientId'), 'app_EMoamEEZ73f0CkXaXp7hrann', "codex's public client id")
  const client = new OAuthClient({ issuer: 'https://auth.example.test/', clientId: 'app_test' })
  const base = client.authorizeUrl({ redirectUri: 'http://localhost:1455/auth/callback', codeChallenge: 'CHALLENGE', state: 'STATE' })
  t.equal(
    base,
    'https://auth.example.test/oauth/authorize?response_type=code&client_id=app_test' +
      '&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback' +
      '&scope=openid%20profile%20email%20offline_access' +
      '&code_challenge=CHALLENGE&code_challenge_method=S256' +
      '&id_token_add_organizations=true&codex_cli_simplified_flow=true' +
      '&state=STATE&originator=codex_cli_rs',
    "codex's parameters and order, this server's narrower scope, %20 for spaces, no trailing slash on the issuer",
  )
  const forced = client.authorizeUrl({ redirectUri: 'http://localhost:1455/auth/callback', codeChallenge: 'C', state: 'S', allowedWorkspaceIds: ['ws-a', 'ws-b'] })
  t.ok(forced.endsWith('&originator=codex_cli_rs&allowed_workspace_id=ws-a%2Cws-b'), 'forced workspaces last, comma-joined')
  const none = client.authorizeUrl({ redirectUri: 'http://localhost:1455/auth/callback', codeChallenge: 'C', state: 'S', allowedWorkspaceIds: [] })
  t.notMatch(none, /allowed_workspace_id/, 'an empty list adds nothing')
  const named = client.authorizeUrl({ redirectUri: 'r', codeChallenge: 'C', state: 'S', originator: 'codex_vscode' })
  t.match(named, /&originator=codex_vscode$/, 'the originator can be the client name')

  const login = await startLogin({ allowedWorkspaceIds: ['ws-x'] })
  t.teardown(() => login.cancel())
  const url = new URL(login.authUrl)
  t.equal(`${url.origin}${url.pathname}`, `${srv.issuer}/oauth/authorize`)
  const q = url.searchParams
  t.equal(q.get('redirect_uri'), `http://localhost:${login.port}/auth/callback`)
  t.equal(login.redirectUri, q.get('redirect_uri'))
  t.equal(q.get('client_id'), srv.clientId)
  t.equal(q.get('code_challenge_method'), 'S256')
  t.match(q.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/, 'a base64url SHA-256')
  t.match(q.get('state'), /^[A-Za-z0-9_-]{43}$/, '32 random bytes')
  t.equal(q.get('allowed_workspace_id'), 'ws-x')
  t.notMatch(login.authUrl, /code_verifier/, 'the verifier never leaves the process')
  t.match(login.loginId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'loginId is a v4 uuid')
})

t.test('pkce and state', async (t) => {
  // RFC 7636, appendix B.
  t.equal(s256Challenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'), 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM')
  const a = createPkce()
  const b = createPkce()
  registerCanary(a.codeVerifier)
  registerCanary(b.codeVerifier)
  t.match(a.codeVerifier, /^[A-Za-z0-9_-]{86}$/, '64 bytes, base64url without padding')
  t.equal(a.codeChallenge, createHash('sha256').update(a.codeVerifier).digest('base64url'))
  t.not(a.codeVerifier, b.codeVerifier)
  const s = createState()
  t.match(s, /^[A-Za-z0-9_-]{43}$/)
  t.not(s, createState())
})

t.test('jwt claims: decoded without verification, malformed → nulls', async (t) => {
  const auth = { chatgpt_account_id: 'ws-1', chatgpt_plan_type: 'team' }
  t.same(readIdTokenClaims(fakeJwt({ email: 'a@example.com', exp: 1700000000, 'https://api.openai.com/auth': auth })), {
    email: 'a@example.com',
    chatgptAccountId: 'ws-1',
    chatgptPlanType: 'team',
    exp: 1700000000,
  })
  t.equal(readIdTokenClaims(fakeJwt({ 'https://api.openai.com/profile': { email: 'nested@example.com' } })).email, 'nested@example.com', "codex's nested profile claim")
  t.equal(readAccessTokenClaims(fakeJwt({ 'https://api.openai.com/profile.email': 'flat@example.com' })).email, 'flat@example.com', 'the flat spelling')
  t.equal(readIdTokenClaims(fakeJwt({ email: 'top@example.com', 'https://api.openai.com/profile': { email: 'x@example.com' } })).email, 'top@example.com', '`email` wins')
  t.equal(readIdTokenClaims(fakeJwt({ 'https://api.openai.com/auth': { chatgpt_plan_type: 'galactic' } })).chatgptPlanType, 'unknown', 'unknown plans map to unknown')
  t.same(readIdTokenClaims(fakeJwt({ 'https://api.openai.com/auth': 'nope', email: 42, exp: 'soon' })), { email: null, chatgptAccountId: null, chatgptPlanType: null, exp: null })

  const nulls = { email: null, chatgptAccountId: null, chatgptPlanType: null, exp: null }
  const payload = Buffer.from(JSON.stringify({ email: 'a@example.com' })).toString('base64url')
  const secretish = canary('tok')
  const malformed = [
    '',
    secretish,
    `${secretish}.${payload}`,
    `h.${payload}.`,
    `.${payload}.s`,
    `h.${payload}.s.extra`,
    'h.!!!.s',
    `h.${Buffer.from('not json').toString('base64url')}.s`,
    `h.${Buffer.from('[1,2]').toString('base64url')}.s`,
    `h.${Buffer.from('null').toString('base64url')}.s`,
    `h.${'A'.repeat(70_000)}.s`,
  ]
  for (const token of malformed) {
    t.same(readIdTokenClaims(token), nulls)
    t.same(readAccessTokenClaims(token), nulls)
  }
  t.same(readIdTokenClaims(undefined as unknown as string), nulls, 'not even a string')
})

t.test('browser login end to end: tokens, claims, success page, server closed', async (t) => {
  const login = await startLogin()
  const page = await srv.driveBrowserLogin(login.authUrl, { accountId: 'ws-e2e', planType: 'pro', email: 'e2e@example.com' })
  t.equal(page.status, 200)
  t.match(page.body, /Signed in/, 'the success page')
  t.notOk(page.params.get('error'))
  const outcome = await outcomeOf(login)
  if (!outcome.ok) return t.fail(outcome.error.message)
  t.same(outcome.claims.email, 'e2e@example.com')
  t.same(outcome.claims.chatgptAccountId, 'ws-e2e')
  t.same(outcome.claims.chatgptPlanType, 'pro')
  t.equal(outcome.tokens.accountId, 'ws-e2e', 'account id from the id token')
  t.ok(outcome.tokens.refreshToken, 'a refresh token without prompt=consent')

  const access = readAccessTokenClaims(outcome.tokens.accessToken)
  t.same([access.email, access.chatgptAccountId, access.chatgptPlanType], ['e2e@example.com', 'ws-e2e', 'pro'], 'the access token carries the same claims')
  const now = Math.floor(Date.now() / 1000)
  t.ok(access.exp !== null && Math.abs(access.exp - (now + ACCESS_TTL)) <= 5, 'access token exp follows the server TTL')

  t.ok(await refused(login.port), 'the callback server is closed once the login is done')
  t.equal(login.isSettled, true)
})

t.test('refresh: a new access token, rotation, and permanent failures', async (t) => {
  const tokens = await loginFor({ accountId: 'ws-refresh', planType: 'plus', email: 'r@example.com' })

  const r1 = await oauth.refresh(tokens.refreshToken)
  registerTokens(r1)
  t.not(r1.accessToken, tokens.accessToken, 'a new access token')
  t.ok(r1.refreshToken && r1.refreshToken !== tokens.refreshToken, 'the refresh token rotated')
  t.ok(r1.idToken, 'a new id token')
  t.equal(readAccessTokenClaims(r1.accessToken).chatgptAccountId, 'ws-refresh')

  const reused = await refreshError(oauth.refresh(tokens.refreshToken))
  t.equal(reused.permanent, true, 'a rotated-out refresh token is dead (invalid_grant)')
  t.equal(reused.reason, 'unauthorized')
  t.equal(reused.message, MSG.unknown)

  // The reuse above made the server revoke the whole grant, so log in again for the rest.
  const fresh = await loginFor({ accountId: 'ws-refresh' })
  t.ok(srv.revokeRefreshToken(fresh.refreshToken), 'the server revoked it')
  const revoked = await refreshError(oauth.refresh(fresh.refreshToken))
  t.equal(revoked.permanent, true, 'a revoked refresh token fails permanently')
  t.notMatch(revoked.message, fresh.refreshToken)

  const other = await loginFor({ accountId: 'ws-refresh' })
  t.ok(srv.expireRefreshToken(other.refreshToken))
  const expired = await refreshError(oauth.refresh(other.refreshToken))
  t.equal(expired.permanent, true, 'an expired refresh token fails permanently')
})

t.test("refresh: auth.openai.com's error codes and transient failures", async (t) => {
  const rt = canary('rt')
  const cases = [
    { status: 401, body: { error: { code: 'refresh_token_expired', message: 'expired' } }, reason: 'expired', permanent: true, message: MSG.expired },
    { status: 401, body: { error: 'refresh_token_reused' }, reason: 'reused', permanent: true, message: MSG.reused },
    { status: 401, body: { code: 'REFRESH_TOKEN_INVALIDATED' }, reason: 'invalidated', permanent: true, message: MSG.invalidated },
    { status: 400, body: { error: { code: 'refresh_token_expired' } }, reason: 'expired', permanent: true, message: MSG.expired },
    { status: 401, body: {}, reason: 'unauthorized', permanent: true, message: MSG.unknown },
    { status: 503, body: { error: 'temporarily_unavailable' }, reason: 'transient', permanent: false, message: 'Failed to refresh token: 503: temporarily_unavailable' },
    { status: 500, body: { error_description: `cannot use ${rt} right now` }, reason: 'transient', permanent: false, message: 'Failed to refresh token: 500: cannot use [redacted] right now' },
    { status: 400, body: { error: 'invalid_request' }, reason: 'transient', permanent: false, message: 'Failed to refresh token: 400: invalid_request' },
  ] as const
  for (const c of cases) {
    srv.failNextTokenRequest({ status: c.status, body: c.body })
    const err = await refreshError(oauth.refresh(rt))
    t.same({ permanent: err.permanent, reason: err.reason, message: err.message }, { permanent: c.permanent, reason: c.reason, message: c.message }, `${c.status} ${JSON.stringify(c.body).replace(rt, 'RT')}`)
  }

  const unreachable = new OAuthClient({ issuer: UNREACHABLE_ISSUER, clientId: srv.clientId })
  const down = await refreshError(unreachable.refresh(rt))
  t.same([down.permanent, down.reason, down.message], [false, 'transient', 'Failed to refresh token: could not reach the auth server (ECONNREFUSED)'])

  const hang = createServer(() => {})
  await listenOn(hang, 0)
  t.teardown(() => closeServer(hang))
  const slow = new OAuthClient({ issuer: `http://127.0.0.1:${(hang.address() as { port: number }).port}`, clientId: srv.clientId, timeoutMs: 150 })
  const timedOut = await refreshError(slow.refresh(rt))
  t.same([timedOut.permanent, timedOut.reason], [false, 'transient'])
  t.match(timedOut.message, /did not answer within/)
})

t.test('revoke is best-effort and never throws', async (t) => {
  const tokens = await loginFor({ accountId: 'ws-revoke' })
  const before = srv.hits.get('/oauth/revoke') ?? 0
  t.equal(await oauth.revoke(tokens.refreshToken), true, 'accepted')
  t.equal(srv.hits.get('/oauth/revoke'), before + 1, 'POST /oauth/revoke')
  const err = await refreshError(oauth.refresh(tokens.refreshToken))
  t.equal(err.permanent, true, 'the revoked refresh token no longer refreshes')

  t.equal(await new OAuthClient({ issuer: UNREACHABLE_ISSUER, clientId: 'x' }).revoke(canary('rt')), false, 'unreachable → false')

  const hang = createServer(() => {})
  await listenOn(hang, 0)
  t.teardown(() => closeServer(hang))
  const started = Date.now()
  const slow = new OAuthClient({ issuer: `http://127.0.0.1:${(hang.address() as { port: number }).port}`, clientId: 'x', revokeTimeoutMs: 150 })
  t.equal(await slow.revoke(canary('rt')), false, 'a hanging server → false')
  t.ok(Date.now() - started < 3000, 'within its timeout')
})

t.test('state mismatch: 400 `State mismatch`, nothing exchanged, and the login keeps waiting for the real callback', async (t) => {
  const login = await startLogin()
  const callback = await srv.driveToCallback(login.authUrl, { accountId: 'ws-state' })
  const tokenCalls = srv.hits.get('/oauth/token') ?? 0
  const state = callback.searchParams.get('state') ?? ''

  const wrong = new URL(callback)
  wrong.searchParams.set('state', 'not-the-state')
  const page = await getCallback(wrong)
  t.same([page.status, page.body], [400, 'State mismatch'])
  const missing = await getCallback(`http://localhost:${login.port}/auth/callback?code=${canary('code')}`)
  t.same([missing.status, missing.body], [400, 'State mismatch'], 'a missing state is a mismatch')
  const denial = await getCallback(`http://localhost:${login.port}/auth/callback?error=access_denied&state=guess`)
  t.same([denial.status, denial.body], [400, 'State mismatch'], 'a stray denial without the state changes nothing either')
  t.equal(srv.hits.get('/oauth/token') ?? 0, tokenCalls, 'no token request')
  t.notOk(login.isSettled, 'the login is still waiting')

  const real = await getCallback(callback)
  t.equal(real.status, 200, 'the real callback still completes the login')
  const outcome = await outcomeOf(login)
  t.ok(outcome.ok, 'with tokens')
  t.equal(outcome.ok ? outcome.tokens.accountId : null, 'ws-state')
  t.ok(state.length > 0 && !page.body.includes(state))
  t.ok(await refused(login.port), 'the callback server closed after the real callback')
})

t.test('denial and other callback errors', async (t) => {
  const login = await startLogin()
  const page = await srv.driveBrowserLogin(login.authUrl, { deny: true })
  t.equal(page.params.get('error'), 'access_denied', 'the auth server redirected with access_denied')
  t.equal(page.status, 200)
  t.match(page.body, /Sign-in could not be completed/)
  t.match(page.body, /Sign-in failed: End-User aborted interaction/)
  const outcome = await outcomeOf(login)
  t.same(outcome.ok ? null : [outcome.error.reason, outcome.error.message], ['denied', 'Sign-in failed: End-User aborted interaction'])

  const direct = async (query: Record<string, string>) => {
    const l = await startLogin()
    const state = new URL(l.authUrl).searchParams.get('state') as string
    const p = await getCallback(`${l.redirectUri}?${new URLSearchParams({ ...query, state }).toString()}`)
    const o = await outcomeOf(l)
    return { page: p, reason: o.ok ? null : o.error.reason, message: o.ok ? null : o.error.message }
  }
  const entitlement = await direct({ error: 'access_denied', error_description: 'missing_codex_entitlement' })
  t.same([entitlement.reason, entitlement.message], ['denied', 'Codex is not enabled for your workspace. Contact your workspace administrator to request access to Codex.'])
  const other = await direct({ error: 'server_error' })
  t.same([other.reason, other.message], ['oauth_error', 'Sign-in failed: server_error'])
  const escaped = await direct({ error: 'invalid_request', error_description: '<script>x</script>' })
  t.notMatch(escaped.page.body, /<script>/, 'the description is escaped on the page')
  const missing = await direct({})
  t.same([missing.page.status, missing.reason, missing.message], [400, 'missing_code', 'Missing authorization code. Sign-in could not be completed.'])
})

t.test('a code the server rejects: exchange_failed, with no code in the message', async (t) => {
  const login = await startLogin()
  const callback = await srv.driveToCallback(login.authUrl, { accountId: 'ws-bad-code' })
  const bogus = canary('code')
  callback.searchParams.set('code', bogus)
  const page = await getCallback(callback)
  t.equal(page.status, 200)
  t.match(page.body, /Token exchange failed: token endpoint returned status 400/)
  const outcome = await outcomeOf(login)
  t.equal(outcome.ok ? null : outcome.error.reason, 'exchange_failed')
  t.notMatch(outcome.ok ? '' : outcome.error.message, bogus)
})

t.test('timeout (manual clock): `Login timed out`, server closed', async (t) => {
  const clock = new ManualClock()
  const login = await startLogin({ clock })
  t.same(clock.pendingDelays(), [LOGIN_TIMEOUT_MS], '10 minutes by default')
  t.equal(LOGIN_TIMEOUT_MS, 600_000)
  clock.advance(LOGIN_TIMEOUT_MS - 1)
  t.equal(login.isSettled, false, 'not a millisecond early')
  clock.advance(1)
  const outcome = await outcomeOf(login)
  t.same(outcome.ok ? null : [outcome.error.reason, outcome.error.message], ['timeout', 'Login timed out'])
  t.ok(await refused(login.port))

  const custom = new ManualClock()
  const ok = await startLogin({ clock: custom, timeoutMs: 1234 })
  t.same(custom.pendingDelays(), [1234])
  await srv.driveBrowserLogin(ok.authUrl, { accountId: 'ws-timer' })
  const done = await outcomeOf(ok)
  t.equal(done.ok, true)
  t.equal(custom.pendingCount, 0, 'the timer is cleared when the login ends')
  custom.advance(1234)
})

t.test('cancel: by the service and by GET /cancel', async (t) => {
  const login = await startLogin()
  login.cancel()
  login.cancel()
  const outcome = await outcomeOf(login)
  t.same(outcome.ok ? null : [outcome.error.reason, outcome.error.message], ['cancelled', 'Login cancelled'])
  t.ok(await refused(login.port))

  const viaHttp = await startLogin()
  const res = await fetch(`http://127.0.0.1:${viaHttp.port}/cancel`)
  t.same([res.status, await res.text()], [200, 'Login cancelled'])
  const o2 = await outcomeOf(viaHttp)
  t.equal(o2.ok ? null : o2.error.reason, 'cancelled')
  t.ok(await refused(viaHttp.port))
})

t.test('forced workspace', async (t) => {
  t.equal(workspaceViolation(null, 'ws'), null)
  t.equal(workspaceViolation([], 'ws'), null)
  t.equal(workspaceViolation(['a'], null), 'Login is restricted to a specific workspace, but the token did not include an chatgpt_account_id claim.')

  const login = await startLogin({ allowedWorkspaceIds: ['ws-allowed', 'ws-other'] })
  t.equal(new URL(login.authUrl).searchParams.get('allowed_workspace_id'), 'ws-allowed,ws-other')
  const revokes = srv.hits.get('/oauth/revoke') ?? 0
  const page = await srv.driveBrowserLogin(login.authUrl, { accountId: 'ws-intruder' })
  t.match(page.body, /Login is restricted to workspace id\(s\) ws-allowed, ws-other\./)
  const outcome = await outcomeOf(login)
  t.same(outcome.ok ? null : [outcome.error.reason, outcome.error.message], ['workspace', 'Login is restricted to workspace id(s) ws-allowed, ws-other.'])
  t.equal(srv.hits.get('/oauth/revoke'), revokes + 1, 'the unwanted tokens are revoked, best-effort')

  const allowed = await startLogin({ allowedWorkspaceIds: ['ws-allowed', 'ws-other'] })
  await srv.driveBrowserLogin(allowed.authUrl, { accountId: 'ws-other' })
  const ok = await outcomeOf(allowed)
  t.equal(ok.ok ? ok.tokens.accountId : null, 'ws-other')
})

t.test('callback server port: fallback, cancelling an earlier login, both busy', async (t) => {
  t.equal(DEFAULT_LOGIN_PORT, 1455)
  t.equal(FALLBACK_LOGIN_PORT, 1457)
  const retry = { attempts: 3, delayMs: 20 }
  const failures: CallbackFailure[] = []
  const base = { state: canary('state'), onCode: async () => ({ ok: true }) as const, onFailure: (f: CallbackFailure) => void failures.push(f), bindRetry: retry }

  // Something that is not a login server holds the preferred port (whatever port 0 gave it): it
  // gets one `/cancel` and ignores it. The fallback is port 0 too, so the login server binds a
  // port nobody released for it; it is the fallback because it is the only other candidate.
  const seen: string[] = []
  const occupier = createServer((req, res) => {
    seen.push(req.url ?? '')
    res.writeHead(404).end()
  })
  await listenOn(occupier, 0)
  const preferred = (occupier.address() as AddressInfo).port
  const moved = await startLoginServer({ ...base, port: preferred, fallbackPort: 0 })
  const fallback = moved.port
  t.not(fallback, preferred, 'the fallback port')
  t.not(fallback, 0)
  t.equal(moved.redirectUri, `http://localhost:${fallback}/auth/callback`)
  t.same(seen, ['/cancel'], 'one cancel request to the busy port first')

  // Both busy.
  await t.rejects(startLoginServer({ ...base, port: preferred, fallbackPort: fallback }), new LoginServerError(`Port 127.0.0.1:${fallback} is already in use`))
  await moved.close()
  await closeServer(occupier)

  // An earlier login of ours holds the port: it is cancelled and the new one takes the port.
  const first = await startLogin({ port: 0, bindRetry: retry })
  const held = first.port
  const second = await startLogin({ port: held, fallbackPort: 0, bindRetry: { attempts: 20, delayMs: 20 } })
  t.teardown(() => second.cancel())
  const firstOutcome = await outcomeOf(first)
  t.equal(firstOutcome.ok ? null : firstOutcome.error.reason, 'cancelled', 'the earlier login was cancelled')
  t.equal(second.port, held, 'the new login got the preferred port')
  t.same(failures, [])
})

t.test('no code, verifier or token in any error', async (t) => {
  const code = canary('code')
  const { codeVerifier } = createPkce()
  registerCanary(codeVerifier)
  let exchangeError: unknown
  try {
    await oauth.exchangeCode({ code, codeVerifier, redirectUri: 'http://localhost:1/auth/callback' })
  } catch (err) {
    exchangeError = err
  }
  t.ok(exchangeError instanceof TokenExchangeError)
  const message = (exchangeError as Error).message
  record(message)
  t.match(message, /^Token exchange failed: token endpoint returned status 400: /)
  t.notMatch(message, code)
  t.notMatch(message, codeVerifier)

  const rt = canary('rt')
  const err = await refreshError(oauth.refresh(rt))
  t.notMatch(err.message, rt)
  t.notMatch(err.stack ?? '', rt)

  t.same(leakedCanaries(), [], 'nothing recorded so far holds a canary')
})
