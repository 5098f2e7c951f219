import { randomUUID } from 'node:crypto'
import t from 'tap'
import { Writable } from 'node:stream'
import { createLogger } from '../src/log/logger.js'
import { CredentialClearFailed, CredentialRejected, NotLoggedIn } from '../src/account/errors.js'
import type { BrowserLoginHandle } from '../src/account/logins.js'
import { RefreshError, type RefreshedTokens } from '../src/account/oauth-client.js'
import type { TokenAuthority } from '../src/account/recovery.js'
import { AccountService, type AccountEvent } from '../src/account/service.js'
import { StoreError, type AuthDotJson, type CredentialStore, type ManagedTokens, type PlanType } from '../src/account/types.js'
import { ServerRequestError } from '../src/rpc/server-requests.js'
import { canary, record } from './helpers/canary.js'

const sink = new Writable({ write: (c: Buffer, _e, done) => (record(c.toString()), done()) })
const log = createLogger('debug', sink)

/** A JWT-shaped token whose payload the fake claims reader decodes. */
function token(claims: Record<string, unknown>): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return `${enc({ alg: 'none' })}.${enc({ ...claims, nonce: canary('jwt') })}.sig`
}
function readClaims(jwt: string) {
  try {
    const p = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
    const auth = (p['https://api.openai.com/auth'] ?? {}) as Record<string, unknown>
    return {
      email: typeof p.email === 'string' ? p.email : null,
      chatgptAccountId: typeof auth.chatgpt_account_id === 'string' ? auth.chatgpt_account_id : null,
      chatgptPlanType: typeof auth.chatgpt_plan_type === 'string' ? (auth.chatgpt_plan_type as PlanType) : null,
      exp: typeof p.exp === 'number' ? p.exp : null,
    }
  } catch {
    return { email: null, chatgptAccountId: null, chatgptPlanType: null, exp: null }
  }
}

class MemoryStore implements CredentialStore {
  readonly mode = 'ephemeral' as const
  doc: AuthDotJson | null = null
  saves = 0
  failSave = false
  failClear = false
  async load() {
    return this.doc === null ? null : structuredClone(this.doc)
  }
  async save(d: AuthDotJson) {
    if (this.failSave) throw new Error('disk full')
    this.saves++
    this.doc = structuredClone(d)
  }
  async clear() {
    if (this.failClear) throw new StoreError('read-only file system', 'cannot create lock /somewhere/auth.json.lock: EROFS')
    this.doc = null
  }
}

class FakeAuthority implements TokenAuthority {
  refreshed: string[] = []
  revoked: string[] = []
  failure: Error | null = null
  /** What the next refreshes answer; by default a new access token and a rotated refresh token. */
  reply: (() => RefreshedTokens) | null = null
  async refresh(refreshToken: string): Promise<RefreshedTokens> {
    this.refreshed.push(refreshToken)
    if (this.failure) throw this.failure
    if (this.reply) return this.reply()
    return { accessToken: token({ exp: Math.floor(Date.now() / 1000) + 3600 }), idToken: null, refreshToken: canary('rt') }
  }
  async revoke(t: string) {
    this.revoked.push(t)
  }
}

function managed(accountId = 'acct-1', expInSeconds = 3600): ManagedTokens {
  return {
    idToken: token({ email: 'a@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: accountId, chatgpt_plan_type: 'plus' } }),
    accessToken: token({ exp: Math.floor(Date.now() / 1000) + expInSeconds }),
    refreshToken: canary('refresh'),
    accountId,
  }
}

function storedManaged(tokens: ManagedTokens, lastRefresh = new Date()): AuthDotJson {
  return {
    auth_mode: 'chatgpt',
    OPENAI_API_KEY: null,
    tokens: { id_token: tokens.idToken, access_token: tokens.accessToken, refresh_token: tokens.refreshToken, account_id: tokens.accountId },
    last_refresh: lastRefresh.toISOString(),
  }
}

function setup(options: { rules?: { forcedLoginMethod?: 'chatgpt' | 'api' | null; forcedWorkspaceIds?: string[] | null } } = {}) {
  const store = new MemoryStore()
  const authority = new FakeAuthority()
  const events: AccountEvent[] = []
  const logins: { handle: BrowserLoginHandle; resolve: (t: ManagedTokens) => void; reject: (e: Error) => void; canceled: boolean }[] = []
  const service = new AccountService({
    store,
    authority,
    readClaims,
    log,
    rules: { forcedLoginMethod: options.rules?.forcedLoginMethod ?? null, forcedWorkspaceIds: options.rules?.forcedWorkspaceIds ?? null },
    onEvent: (e) => events.push(e),
    browserLogin: {
      async start() {
        const loginId = randomUUID()
        let resolve!: (t: ManagedTokens) => void
        let reject!: (e: Error) => void
        const result = new Promise<ManagedTokens>((res, rej) => ((resolve = res), (reject = rej)))
        const entry = {
          handle: {
            loginId,
            authUrl: `http://issuer.test/oauth/authorize?state=x`,
            result,
            cancel: () => {
              entry.canceled = true
              reject(new Error('Login was canceled'))
            },
          },
          resolve,
          reject,
          canceled: false,
        }
        logins.push(entry)
        return entry.handle
      },
    },
  })
  return { service, store, authority, events, logins }
}

const unauthorized = () => new CredentialRejected(new Error('backend said 401'))

t.test('API key login saves, then notifies completed and updated', async (t) => {
  const { service, store, events } = setup()
  const key = canary('sk')
  await service.loginApiKey(key)
  t.same(store.doc, { auth_mode: 'apikey', OPENAI_API_KEY: key })
  t.same(events, [
    { type: 'loginCompleted', loginId: null, success: true, error: null },
    { type: 'accountUpdated', authMode: 'apikey', planType: null },
  ])
  t.same(await service.read(), { account: { type: 'apiKey' }, requiresOpenaiAuth: true })
})

t.test('a failed save is -32603 failed to save api key', async (t) => {
  const { service, store, events } = setup()
  store.failSave = true
  await t.rejects(service.loginApiKey(canary('sk')), { name: 'CredentialSaveFailed', message: 'failed to save api key: disk full' })
  t.same(events, [])
  t.equal(service.current, null)
})

t.test('forced login methods and external auth block the other logins', async (t) => {
  const api = setup({ rules: { forcedLoginMethod: 'api' } })
  await t.rejects(api.service.loginChatgpt(), { name: 'LoginRuleViolation', message: 'ChatGPT login is disabled. Use API key login instead.' })
  await t.rejects(api.service.loginExternal({ accessToken: canary('at'), chatgptAccountId: 'w1' }, async () => ({})), {
    message: 'External ChatGPT auth is disabled. Use API key login instead.',
  })
  const chat = setup({ rules: { forcedLoginMethod: 'chatgpt' } })
  await t.rejects(chat.service.loginApiKey(canary('sk')), { message: 'API key login is disabled. Use ChatGPT login instead.' })

  const ext = setup()
  await ext.service.loginExternal({ accessToken: token({ email: 'e@x.io' }), chatgptAccountId: 'w1', chatgptPlanType: 'pro' }, async () => ({}))
  const active = 'External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it.'
  await t.rejects(ext.service.loginApiKey(canary('sk')), { name: 'LoginRuleViolation', message: active })
  await t.rejects(ext.service.loginChatgpt(), { name: 'LoginRuleViolation', message: active })
  t.same(ext.service.view(), { type: 'chatgpt', email: 'e@x.io', planType: 'pro' })
  t.equal(ext.store.doc, null, 'external tokens are never stored')
  t.same(ext.events.at(-1), { type: 'accountUpdated', authMode: 'chatgptAuthTokens', planType: 'pro' })
})

t.test('forced workspaces, one or several', async (t) => {
  const one = setup({ rules: { forcedWorkspaceIds: ['a'] } })
  await t.rejects(one.service.loginExternal({ accessToken: canary('at'), chatgptAccountId: 'X' }, async () => ({})), {
    message: 'External auth must use one of workspace(s) ["a"], but received "X".',
  })
  const two = setup({ rules: { forcedWorkspaceIds: ['a', 'b'] } })
  await t.rejects(two.service.loginExternal({ accessToken: canary('at'), chatgptAccountId: 'X' }, async () => ({})), {
    message: 'External auth must use one of workspace(s) ["a", "b"], but received "X".',
  })
  await two.service.loginExternal({ accessToken: token({}), chatgptAccountId: 'b' }, async () => ({}))
  t.equal(two.service.current?.kind, 'chatgptExternal')
})

t.test('browser login: success saves and notifies; a new login cancels the old one; cancel by id', async (t) => {
  const { service, store, events, logins } = setup()
  const first = await service.loginChatgpt()
  t.match(first, { loginId: /^[0-9a-f-]{36}$/, authUrl: /^http:\/\/issuer\.test\// })
  const second = await service.loginChatgpt()
  t.ok(logins[0]!.canceled, 'starting a login cancels the one in progress')
  await new Promise((r) => setImmediate(r))
  t.same(events.shift(), { type: 'loginCompleted', loginId: first.loginId, success: false, error: 'Login was canceled' })

  const tokens = managed()
  logins[1]!.resolve(tokens)
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  t.same(events, [
    { type: 'loginCompleted', loginId: second.loginId, success: true, error: null },
    { type: 'accountUpdated', authMode: 'chatgpt', planType: 'plus' },
  ])
  t.equal(store.doc?.tokens?.refresh_token, tokens.refreshToken)
  t.same(service.view(), { type: 'chatgpt', email: 'a@example.com', planType: 'plus' })

  await t.rejects(service.cancelLogin('not-a-uuid'), { name: 'InvalidLoginId', message: 'invalid login id: not-a-uuid' })
  t.same(await service.cancelLogin('00000000-0000-4000-8000-000000000000'), { status: 'notFound' })
  const third = await service.loginChatgpt()
  events.length = 0
  t.same(await service.cancelLogin(third.loginId), { status: 'canceled' })
  await new Promise((r) => setImmediate(r))
  t.same(events, [{ type: 'loginCompleted', loginId: third.loginId, success: false, error: 'Login was canceled' }])
})

t.test('logout cancels the login, revokes managed tokens, clears the store, notifies', async (t) => {
  const { service, store, authority, events, logins } = setup()
  const tokens = managed()
  store.doc = storedManaged(tokens)
  await service.init()
  await service.loginChatgpt()
  events.length = 0
  await service.logout()
  t.ok(logins[0]!.canceled)
  t.same(authority.revoked, [tokens.refreshToken])
  t.equal(store.doc, null)
  t.same(events.at(-1), { type: 'accountUpdated', authMode: null, planType: null })
  t.equal(service.current, null)
})

t.test('a logout that cannot clear the store fails and changes nothing: no revocation, no event, still logged in', async (t) => {
  const { service, store, authority, events } = setup()
  const tokens = managed()
  store.doc = storedManaged(tokens)
  await service.init()
  const before = service.current
  store.failClear = true
  events.length = 0
  await t.rejects(service.logout(), new CredentialClearFailed('failed to log out: read-only file system'))
  t.same(authority.revoked, [], 'the stored tokens still work: not revoked')
  t.same(events, [], 'no account/updated')
  t.equal(service.current, before, 'still logged in')
  store.failClear = false
  await service.logout()
  t.same(authority.revoked, [tokens.refreshToken], 'a logout that clears the store revokes')
  t.equal(service.current, null)
})

t.test('proactive refresh: exp within 5 minutes, or last refresh older than 8 days', async (t) => {
  const soon = setup()
  soon.store.doc = storedManaged(managed('a', 120))
  await soon.service.init()
  await soon.service.withChatgptAuth(async () => 'ok')
  t.equal(soon.authority.refreshed.length, 1, 'expiring token refreshed before use')
  t.equal(soon.store.saves, 1)

  const old = setup()
  old.store.doc = storedManaged(managed('a', 3600), new Date(Date.now() - 9 * 24 * 3600 * 1000))
  await old.service.init()
  await old.service.withChatgptAuth(async () => 'ok')
  t.equal(old.authority.refreshed.length, 1, 'old credential refreshed')

  const fresh = setup()
  fresh.store.doc = storedManaged(managed('a', 3600))
  await fresh.service.init()
  await fresh.service.withChatgptAuth(async () => 'ok')
  t.equal(fresh.authority.refreshed.length, 0, 'fresh credential used as is')
})

t.test('refresh re-reads storage first and uses tokens another process rotated', async (t) => {
  const { service, store, authority } = setup()
  const mine = managed('a', 60)
  store.doc = storedManaged(mine)
  await service.init()
  const theirs = managed('a', 3600)
  store.doc = storedManaged(theirs)
  const seen: string[] = []
  await service.withChatgptAuth(async (auth) => seen.push(auth.accessToken))
  t.same(authority.refreshed, [], 'no refresh: the stored tokens were already rotated')
  t.same(seen, [theirs.accessToken])
})

t.test('the 401 loop for managed credentials: reload, then refresh, then give up', async (t) => {
  const { service, store, authority } = setup()
  const mine = managed('a')
  store.doc = storedManaged(mine)
  await service.init()

  // Another process refreshed: the reload gives new tokens for the same account.
  const theirs = managed('a')
  store.doc = storedManaged(theirs)
  const calls: string[] = []
  const result = await service.withChatgptAuth(async (auth) => {
    calls.push(auth.accessToken)
    if (auth.accessToken === mine.accessToken) throw unauthorized()
    return 'ok'
  })
  t.equal(result, 'ok')
  t.same(calls, [mine.accessToken, theirs.accessToken])
  t.same(authority.refreshed, [])

  // Nothing newer stored: refresh, retry.
  const calls2: string[] = []
  let n = 0
  await service.withChatgptAuth(async (auth) => {
    calls2.push(auth.accessToken)
    if (n++ === 0) throw unauthorized()
    return 'ok'
  })
  t.equal(authority.refreshed.length, 1)
  t.equal(calls2.length, 2)
  t.not(calls2[1], calls2[0], 'retried with the refreshed token')

  // Still 401 after refresh: the call's own error surfaces, not the wrapper.
  const stillRejected = unauthorized()
  const surfaced = await service.withChatgptAuth(async () => Promise.reject(stillRejected)).catch((e: unknown) => e)
  t.equal(surfaced, stillRejected.cause, 'the error the call wrapped')
  t.equal((surfaced as Error).message, 'backend said 401')
})

t.test('a permanent refresh failure is cached until the credential changes', async (t) => {
  const { service, store, authority } = setup()
  store.doc = storedManaged(managed('a', 60))
  await service.init()
  authority.failure = new RefreshError(true, 'expired', 'Your refresh token has expired. Please log out and sign in again.')
  await t.rejects(service.withChatgptAuth(async () => 'x'), { name: 'RefreshFailed', permanent: true, message: /refresh token has expired/ })
  await t.rejects(service.withChatgptAuth(async () => 'x'), { message: /refresh token has expired/ })
  t.equal(authority.refreshed.length, 1, 'not retried against the issuer')
  await service.loginApiKey(canary('sk'))
  authority.failure = null
  t.equal(service.current?.kind, 'apiKey', 'a new credential clears the cached failure')
})

t.test('the 401 loop for external tokens asks the client once, then retries', async (t) => {
  const { service } = setup({ rules: { forcedWorkspaceIds: ['w1', 'w2'] } })
  const asked: unknown[] = []
  const fresh = token({ email: 'n@x.io' })
  await service.loginExternal({ accessToken: token({}), chatgptAccountId: 'w1' }, async (p) => {
    asked.push(p)
    return { accessToken: fresh, chatgptAccountId: 'w2', chatgptPlanType: 'team' }
  })
  const seen: string[] = []
  const out = await service.withChatgptAuth(async (auth) => {
    seen.push(auth.accessToken)
    if (seen.length === 1) throw unauthorized()
    return auth.accountId
  })
  t.equal(out, 'w2')
  t.same(asked, [{ reason: 'unauthorized', previousAccountId: 'w1' }])
  t.same(service.view(), { type: 'chatgpt', email: 'n@x.io', planType: 'team' })

  const err = setup()
  await err.service.loginExternal({ accessToken: token({}), chatgptAccountId: 'w1' }, async () => {
    throw new ServerRequestError({ code: -1, message: 'no tokens' })
  })
  await t.rejects(err.service.withChatgptAuth(async () => Promise.reject(unauthorized())), {
    name: 'ExternalRefreshFailed',
    message: 'auth refresh request failed: code=-1 message=no tokens',
  })

  const wrong = setup({ rules: { forcedWorkspaceIds: ['w1'] } })
  await wrong.service.loginExternal({ accessToken: token({}), chatgptAccountId: 'w1' }, async () => ({ accessToken: token({}), chatgptAccountId: 'evil' }))
  await t.rejects(wrong.service.withChatgptAuth(async () => Promise.reject(unauthorized())), {
    name: 'LoginRuleViolation',
    message: 'External auth must use one of workspace(s) ["w1"], but received "evil".',
  })
})

t.test('API keys get no recovery', async (t) => {
  const { service } = setup()
  await service.loginApiKey(canary('sk'))
  await t.rejects(service.withChatgptAuth(async () => 'x'), NotLoggedIn)
})

t.test("refreshed tokens merge by codex's rule: sent tokens replace, omitted ones stay, the account id never moves", async (t) => {
  const { service, store, authority } = setup()
  const mine = managed('acct-login', 60)
  store.doc = storedManaged(mine)
  await service.init()

  // The issuer answers with a new id token for another workspace claim, and no refresh token.
  const movedIdToken = token({ email: 'moved@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-moved', chatgpt_plan_type: 'pro' } })
  const access1 = token({ exp: Math.floor(Date.now() / 1000) + 3600 })
  authority.reply = () => ({ accessToken: access1, idToken: movedIdToken, refreshToken: null })
  const seen: Array<{ accessToken: string; accountId: string | null }> = []
  await service.withChatgptAuth(async (auth) => seen.push(auth))
  t.same(authority.refreshed, [mine.refreshToken], 'refreshed once, with the stored refresh token')
  t.same(store.doc?.tokens, { id_token: movedIdToken, access_token: access1, refresh_token: mine.refreshToken, account_id: 'acct-login' }, 'id and access replaced; refresh kept; account id kept')
  t.same(seen, [{ accessToken: access1, accountId: 'acct-login' }], 'the call used the new access token with the login’s account id')
  t.equal(service.chatgptAccountId, 'acct-login')

  // Every token sent: all three replaced, the account id still the login's.
  const access2 = token({ exp: Math.floor(Date.now() / 1000) + 3600 })
  const id2 = token({ email: 'a@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-other' } })
  const refresh2 = canary('rt2')
  authority.reply = () => ({ accessToken: access2, idToken: id2, refreshToken: refresh2 })
  await service.read({ refreshToken: true })
  t.same(store.doc?.tokens, { id_token: id2, access_token: access2, refresh_token: refresh2, account_id: 'acct-login' })
  const now = service.current
  t.equal(now?.kind, 'chatgptManaged')
  if (now?.kind !== 'chatgptManaged') return
  t.same(now.tokens, { idToken: id2, accessToken: access2, refreshToken: refresh2, accountId: 'acct-login' }, 'memory holds what was stored')
  t.equal(store.doc?.last_refresh, now.lastRefresh?.toISOString(), 'last_refresh stored')
})

t.test('without a ChatGPT credential, withChatgptAuth says so without naming a caller’s purpose', async (t) => {
  const none = setup()
  await t.rejects(none.service.withChatgptAuth(async () => 'x'), { name: 'NotLoggedIn', message: 'codex account authentication required' })
  const key = setup()
  await key.service.loginApiKey(canary('sk'))
  let called = false
  await t.rejects(key.service.withChatgptAuth(async () => (called = true)), NotLoggedIn)
  t.notOk(called, 'the call never runs with an API key')
})

t.test('a malformed external refresh reply is refused plainly; the old tokens stay', async (t) => {
  const replies: Array<[string, unknown]> = [
    ['nothing', undefined],
    ['null', null],
    ['an array', [canary('at')]],
    ['no accessToken', { chatgptAccountId: 'w1' }],
    ['accessToken a number', { accessToken: 7, chatgptAccountId: 'w1' }],
    ['no chatgptAccountId', { accessToken: canary('at') }],
    ['chatgptPlanType a number', { accessToken: canary('at'), chatgptAccountId: 'w1', chatgptPlanType: 3 }],
  ]
  for (const [what, reply] of replies) {
    const { service } = setup()
    const old = token({ email: 'old@x.io' })
    await service.loginExternal({ accessToken: old, chatgptAccountId: 'w1', chatgptPlanType: 'plus' }, async () => reply)
    let calls = 0
    await t.rejects(
      service.withChatgptAuth(async () => {
        calls++
        throw unauthorized()
      }),
      { name: 'ExternalRefreshFailed', message: 'auth refresh request failed: malformed refresh response' },
      what,
    )
    t.equal(calls, 1, `${what}: no retry without usable tokens`)
    t.same(service.current, { kind: 'chatgptExternal', accessToken: old, accountId: 'w1', planType: 'plus' }, `${what}: the old tokens stay`)
  }

  const { service } = setup()
  await service.loginExternal({ accessToken: token({}), chatgptAccountId: 'w1' }, async () => ({ accessToken: token({ email: 'n@x.io' }), chatgptAccountId: 'w1', chatgptPlanType: null, extra: true }))
  let n = 0
  t.equal(await service.withChatgptAuth(async () => (n++ === 0 ? Promise.reject(unauthorized()) : 'ok')), 'ok', 'a null plan and unknown members are fine')
  t.same(service.view(), { type: 'chatgpt', email: 'n@x.io', planType: 'unknown' })
})
