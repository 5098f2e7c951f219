/**
 * A real OAuth 2 / OpenID Connect server for the login tests: `oidc-provider` (8.x, the last
 * line that supports Node 20) on node:http at 127.0.0.1:0, shaped like auth.openai.com as the
 * login sees it:
 *
 * - routes `/oauth/authorize`, `/oauth/token`, `/oauth/revoke`;
 * - codex's public client (`token_endpoint_auth_method: none`), PKCE S256 required, redirect
 *   URI `http://localhost/auth/callback` on any port (RFC 8252 loopback rule for native apps);
 * - refresh tokens for every login (codex does not send `prompt=consent`, without which the
 *   OIDC rules drop `offline_access`), rotated on each use, reuse detected;
 * - id tokens with `email` and `https://api.openai.com/auth: {chatgpt_account_id,
 *   chatgpt_plan_type}`; JWT access tokens carrying the same claims, with a settable TTL.
 *
 * Tests act as the browser with `driveBrowserLogin` (plain HTTP, a cookie jar, no redirects
 * followed automatically), and can revoke or expire refresh tokens, or make the next token
 * request fail the way auth.openai.com does (`failNextTokenRequest`).
 *
 * The codes and stored (opaque) tokens that pass through, and its cookie key, are registered
 * as canaries here; JWTs (id and access tokens) are not stored, so tests register those they
 * receive.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { generateKeyPairSync } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Provider, { type Adapter, type AdapterPayload, type Configuration, type JWK } from 'oidc-provider'
import { flagDefault } from '../../src/config/flags.js'
import { canary, record, registerCanary } from './canary.js'
import { FakeDeviceAuth, DEVICE_CALLBACK_PATH } from './fake-device-issuer.js'
import { readBody, sendJson } from './http-body.js'

export interface TestAccount {
  /** `chatgpt_account_id`: the workspace. */
  readonly accountId: string
  readonly planType: string
  readonly email: string
}

export interface OAuthServerOptions {
  readonly clientId?: string
  /** Lifetime of access tokens (and so their `exp`). Default 3600. */
  readonly accessTokenTtlSeconds?: number
}

export interface DriveOptions {
  /** Abort at the login page, as a user who declines: the callback gets `error=access_denied`. */
  readonly deny?: boolean
  readonly accountId?: string
  readonly planType?: string
  readonly email?: string
}

export interface CallbackResponse {
  readonly status: number
  readonly body: string
  /** The callback URL's parameters, as the auth server sent them. */
  readonly params: URLSearchParams
}

export interface FailureReply {
  readonly status: number
  readonly body: unknown
}

const RESOURCE = 'https://api.test.invalid/'
const AUTH_CLAIM = 'https://api.openai.com/auth'
const PROFILE_CLAIM = 'https://api.openai.com/profile'
const MAX_HOPS = 20

export class TestOAuthServer {
  readonly issuer: string
  readonly clientId: string
  /** How many requests each route got, e.g. `/oauth/revoke`. */
  readonly hits = new Map<string, number>()

  /** The device-code endpoints on this issuer's origin. */
  readonly device: FakeDeviceAuth
  private readonly accounts = new Map<string, TestAccount>()
  private readonly storage: AdapterStorage
  private nextFailure: FailureReply | null = null
  private nextSub = 1

  private constructor(
    private readonly server: Server,
    readonly provider: Provider,
    storage: AdapterStorage,
    clientId: string,
  ) {
    this.issuer = provider.issuer
    this.clientId = clientId
    this.storage = storage
    this.device = new FakeDeviceAuth(this.issuer, clientId, this)
  }

  static async start(options: OAuthServerOptions = {}): Promise<TestOAuthServer> {
    const clientId = options.clientId ?? flagDefault('loginClientId')
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const storage = new AdapterStorage()
    let self: TestOAuthServer | null = null
    const provider = new Provider(issuer, configuration(issuer, clientId, options, storage, (sub) => self?.accounts.get(sub)))
    self = new TestOAuthServer(server, provider, storage, clientId)
    const handle = provider.callback()
    const owner = self
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const path = new URL(req.url ?? '/', issuer).pathname
      owner.hits.set(path, (owner.hits.get(path) ?? 0) + 1)
      owner.route(req, res, path, handle).catch(() => {
        if (!res.headersSent) res.writeHead(500).end('test oauth server error')
        else res.destroy()
      })
    })
    return self
  }

  /** Registers the account a login will be for; its `sub` is returned. */
  addAccount(account: TestAccount): string {
    const sub = `user-${this.nextSub++}`
    this.accounts.set(sub, account)
    return sub
  }

  /** Destroys the refresh token, as a server-side revocation would. */
  revokeRefreshToken(token: string): boolean {
    return this.storage.delete('RefreshToken', token)
  }

  /** Moves the refresh token's expiry into the past. */
  expireRefreshToken(token: string): boolean {
    const payload = this.storage.get('RefreshToken', token)
    if (payload === undefined) return false
    payload.exp = Math.floor(Date.now() / 1000) - 60
    return true
  }

  /**
   * The next `POST /oauth/token` (which must be a refresh) gets this answer instead, e.g.
   * auth.openai.com's `401 {"error": {"code": "refresh_token_expired"}}`.
   */
  failNextTokenRequest(reply: FailureReply): void {
    this.nextFailure = reply
  }

  /** Follows the authorize URL as a browser would, up to the redirect to the local callback. */
  async driveToCallback(authUrl: string, options: DriveOptions = {}): Promise<URL> {
    const sub = this.addAccount({
      accountId: options.accountId ?? 'ws-default',
      planType: options.planType ?? 'plus',
      email: options.email ?? 'user@example.com',
    })
    const jar = new CookieJar()
    const issuerOrigin = new URL(this.issuer).origin
    let next: { url: URL; method: 'GET' | 'POST'; form?: Record<string, string> } = { url: new URL(authUrl), method: 'GET' }
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      const res = await fetch(next.url, {
        method: next.method,
        redirect: 'manual',
        headers: {
          ...(jar.header(next.url.pathname) ? { cookie: jar.header(next.url.pathname) } : {}),
          ...(next.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        body: next.form ? new URLSearchParams(next.form).toString() : undefined,
      })
      jar.store(res.headers.getSetCookie())
      // Not recorded for the leak check: these are the auth server's pages (its redirect bodies
      // quote the callback URL, code included), not anything this project says.
      const text = await res.text()
      const location = res.headers.get('location')
      if (res.status >= 300 && res.status < 400 && location) {
        const target = new URL(location, next.url)
        if (target.origin !== issuerOrigin || target.pathname === DEVICE_CALLBACK_PATH) {
          const code = target.searchParams.get('code')
          if (code) registerCanary(code)
          return target
        }
        next = { url: target, method: 'GET' }
        continue
      }
      const interaction = /^\/interaction\/([^/]+)$/.exec(next.url.pathname)
      if (res.status === 200 && interaction) {
        const { prompt } = JSON.parse(text) as { prompt: string }
        const base = `${issuerOrigin}/interaction/${interaction[1]}`
        if (options.deny) next = { url: new URL(`${base}/abort`), method: 'POST', form: {} }
        else if (prompt === 'login') next = { url: new URL(`${base}/login`), method: 'POST', form: { login: sub } }
        else if (prompt === 'consent') next = { url: new URL(`${base}/confirm`), method: 'POST', form: {} }
        else throw new Error(`test oauth server: unexpected prompt ${prompt}`)
        continue
      }
      throw new Error(`test oauth server: unexpected ${res.status} at ${next.url.pathname}: ${text.slice(0, 300)}`)
    }
    throw new Error('test oauth server: too many redirects')
  }

  /** The whole browser side of a login: consent (or denial), then the GET of the local callback. */
  async driveBrowserLogin(authUrl: string, options: DriveOptions = {}): Promise<CallbackResponse> {
    const callback = await this.driveToCallback(authUrl, options)
    return getCallback(callback)
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, handle: ReturnType<Provider['callback']>): Promise<void> {
    if (await this.device.handle(req, res, path)) return
    if (path === '/oauth/token' && req.method === 'POST' && this.nextFailure !== null) {
      const failure = this.nextFailure
      this.nextFailure = null
      const form = new URLSearchParams(await readBody(req))
      if (form.get('grant_type') !== 'refresh_token') return sendJson(res, 500, { error: 'test_setup', error_description: 'a refresh failure was queued' })
      return sendJson(res, failure.status, failure.body)
    }
    const interaction = /^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/.exec(path)
    if (interaction) return this.interaction(req, res, interaction[2] ?? null)
    // oidc-provider is a Koa app; its callback has the node (req, res) signature.
    await (handle as (req: IncomingMessage, res: ServerResponse) => Promise<void>)(req, res)
  }

  /** The login and consent "pages": JSON for GET, and the three form posts. */
  private async interaction(req: IncomingMessage, res: ServerResponse, action: string | null): Promise<void> {
    const details = await this.provider.interactionDetails(req, res)
    if (action === null) {
      if (req.method !== 'GET') return sendJson(res, 405, { error: 'method' })
      return sendJson(res, 200, { uid: details.uid, prompt: details.prompt.name })
    }
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'method' })
    const form = new URLSearchParams(await readBody(req))
    if (action === 'abort') {
      return this.provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false })
    }
    if (action === 'login') {
      const accountId = form.get('login') ?? ''
      if (!this.accounts.has(accountId)) return sendJson(res, 400, { error: 'unknown account' })
      return this.provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false })
    }
    const { prompt, params, session } = details
    const missing = prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> }
    const grant = details.grantId
      ? await this.provider.Grant.find(details.grantId)
      : new this.provider.Grant({ accountId: session?.accountId, clientId: params.client_id as string })
    if (!grant) return sendJson(res, 400, { error: 'grant not found' })
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '))
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims)
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '))
    const grantId = await grant.save()
    return this.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true })
  }
}

let processKey: JWK | undefined

/**
 * The issuers' signing key, made once per process: an RSA key takes a few hundred ms of CPU to
 * generate, and issuers in one test file are told apart by their URL (`iss`), not their key.
 */
function signingKey(): JWK {
  if (processKey === undefined) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    processKey = { ...(privateKey.export({ format: 'jwk' }) as JWK), kid: 'test-key', alg: 'RS256', use: 'sig' }
  }
  // A copy each time: the provider owns what it is given.
  return { ...processKey }
}

function configuration(
  issuer: string,
  clientId: string,
  options: OAuthServerOptions,
  storage: AdapterStorage,
  lookup: (sub: string) => TestAccount | undefined,
): Configuration {
  const jwk = signingKey()
  const accessTokenTTL = options.accessTokenTtlSeconds ?? 3600
  const authClaim = (a: TestAccount) => ({ chatgpt_account_id: a.accountId, chatgpt_plan_type: a.planType })
  return {
    adapter: (name: string) => storage.adapter(name),
    clients: [
      {
        client_id: clientId,
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://localhost/auth/callback', `${issuer}${DEVICE_CALLBACK_PATH}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: [canary('oidc-cookie-key')] },
    routes: { authorization: '/oauth/authorize', token: '/oauth/token', revocation: '/oauth/revoke' },
    pkce: { methods: ['S256'], required: () => true },
    scopes: ['openid', 'offline_access'],
    claims: {
      openid: ['sub', AUTH_CLAIM],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // Scope claims in the id token too, as auth.openai.com does (the login reads them there).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A default resource makes access tokens JWTs, which carry claims as auth.openai.com's do.
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'api', audience: RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL, jwt: { sign: { alg: 'RS256' } } }),
      },
    },
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: () => false,
    rotateRefreshToken: true,
    extraTokenClaims: (_ctx, token) => {
      const sub = 'accountId' in token ? token.accountId : undefined
      const account = sub ? lookup(sub) : undefined
      return account ? { [AUTH_CLAIM]: authClaim(account), [PROFILE_CLAIM]: { email: account.email } } : undefined
    },
    findAccount: (_ctx, sub) => {
      const account = lookup(sub)
      if (!account) return undefined
      return {
        accountId: sub,
        claims: () => ({ sub, email: account.email, email_verified: true, name: 'Test User', [AUTH_CLAIM]: authClaim(account) }),
      }
    },
    // Explicit lifetimes (the library nags about its defaults); refresh tokens live 8 days, as a
    // stale `last_refresh` is one of the refresh triggers.
    ttl: {
      AccessToken: accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 8 * 24 * 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 8 * 24 * 3600,
    },
    renderError: (ctx, out) => {
      ctx.type = 'application/json'
      ctx.body = JSON.stringify(out)
    },
  }
}

/**
 * One server's store (the library's memory adapter is shared by every provider in a process).
 * Every code and opaque token it stores is registered as a canary.
 */
class AdapterStorage {
  private readonly items = new Map<string, { payload: AdapterPayload; expiresAt: number }>()

  adapter(model: string): Adapter {
    const key = (id: string) => `${model}:${id}`
    return {
      upsert: async (id, payload, expiresIn) => {
        if (['AccessToken', 'AuthorizationCode', 'RefreshToken'].includes(model)) registerCanary(id)
        this.items.set(key(id), { payload, expiresAt: Date.now() + expiresIn * 1000 })
        if (model === 'Session' && payload.uid) this.items.set(`SessionUid:${payload.uid}`, { payload: { jti: id }, expiresAt: Date.now() + expiresIn * 1000 })
      },
      find: async (id) => this.read(key(id)),
      findByUid: async (uid) => {
        const ref = this.read(`SessionUid:${uid}`)
        return ref?.jti ? this.read(key(ref.jti)) : undefined
      },
      findByUserCode: async () => undefined,
      consume: async (id) => {
        const item = this.read(key(id))
        if (item) item.consumed = Math.floor(Date.now() / 1000)
      },
      destroy: async (id) => {
        this.items.delete(key(id))
      },
      revokeByGrantId: async (grantId) => {
        for (const [k, v] of this.items) if (v.payload.grantId === grantId) this.items.delete(k)
      },
    }
  }

  get(model: string, id: string): AdapterPayload | undefined {
    return this.read(`${model}:${id}`)
  }

  delete(model: string, id: string): boolean {
    return this.items.delete(`${model}:${id}`)
  }

  private read(k: string): AdapterPayload | undefined {
    const item = this.items.get(k)
    if (!item) return undefined
    if (item.expiresAt <= Date.now()) {
      this.items.delete(k)
      return undefined
    }
    return item.payload
  }
}

/** Enough of a cookie jar for one host: name, value and path; expired cookies are dropped. */
class CookieJar {
  private readonly cookies = new Map<string, { value: string; path: string }>()

  store(setCookies: string[]): void {
    for (const line of setCookies) {
      const [pair = '', ...attrs] = line.split(';').map((s) => s.trim())
      const eq = pair.indexOf('=')
      if (eq <= 0) continue
      const name = pair.slice(0, eq)
      const value = pair.slice(eq + 1)
      let path = '/'
      let expired = value === ''
      for (const attr of attrs) {
        const [k = '', v = ''] = attr.split('=')
        const key = k.toLowerCase()
        if (key === 'path') path = v || '/'
        if (key === 'max-age' && Number(v) <= 0) expired = true
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true
      }
      const id = `${name}|${path}`
      if (expired) this.cookies.delete(id)
      else this.cookies.set(id, { value, path })
    }
  }

  header(requestPath: string): string {
    const out: string[] = []
    for (const [id, c] of this.cookies) {
      if (requestPath === c.path || requestPath.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)) out.push(`${id.split('|')[0]}=${c.value}`)
    }
    return out.join('; ')
  }
}

/** GETs the local login server's callback, as the browser does at the end of the flow. */
export async function getCallback(url: URL | string): Promise<CallbackResponse> {
  const target = new URL(url)
  const res = await fetch(target, { redirect: 'manual' })
  const body = await res.text()
  record(body)
  return { status: res.status, body, params: target.searchParams }
}
