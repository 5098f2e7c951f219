import type { AppLogger } from '../log/logger.js'
import { withheldError } from '../log/logger.js'
import { scrubText } from '../log/scrub.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import { needsProactiveRefresh } from './refresh-policy.js'
import {
  checkApiKeyLoginAllowed,
  checkChatgptLoginAllowed,
  checkExternalLoginAllowed,
  EXTERNAL_AUTH_ACTIVE,
  workspaceViolation,
  type LoginRules,
} from './rules.js'
import { toPlanType, type AuthDotJson, type Credential, type CredentialStore, type ManagedTokens, type PlanType } from './types.js'

/** What the account service needs from the OAuth issuer. */
export interface TokenAuthority {
  refresh(refreshToken: string): Promise<{ idToken?: string | null; accessToken: string; refreshToken?: string | null }>
  /** Best effort: never throws. */
  revoke(token: string): Promise<void>
}

/** One browser (PKCE) login in progress. */
export interface BrowserLoginHandle {
  readonly loginId: string
  readonly authUrl: string
  /** Resolves with the new tokens, rejects with an error whose message can be shown. */
  readonly result: Promise<ManagedTokens>
  cancel(): void
}

export interface BrowserLoginStarter {
  start(options: { allowedWorkspaceIds: readonly string[] | null }): Promise<BrowserLoginHandle>
}

/** Reads claims from a JWT without verifying it (the backend's token, not ours). */
export interface ClaimsReader {
  (jwt: string): { email: string | null; chatgptAccountId: string | null; chatgptPlanType: PlanType | null; exp: number | null }
}

/** Asks the client that handed in external tokens for fresh ones (`account/chatgptAuthTokens/refresh`). */
export type ExternalRefresher = (params: { reason: 'unauthorized'; previousAccountId: string | null }) => Promise<unknown>

export type AccountEvent =
  | { type: 'loginCompleted'; loginId: string | null; success: boolean; error: string | null }
  | { type: 'accountUpdated'; authMode: 'apikey' | 'chatgpt' | 'chatgptAuthTokens' | null; planType: PlanType | null }

export interface AccountServiceDeps {
  readonly store: CredentialStore
  readonly authority: TokenAuthority
  readonly browserLogin: BrowserLoginStarter
  readonly readClaims: ClaimsReader
  readonly rules: LoginRules
  readonly log: AppLogger
  readonly now?: () => number
  /** Broadcast hook: the plugin turns events into notifications. */
  readonly onEvent: (event: AccountEvent) => void
  /** Held while re-reading storage and refreshing, so two processes never refresh at once. */
  readonly withStoreLock?: <T>(fn: () => Promise<T>) => Promise<T>
}

/** The wire `Account` of `account/read`. */
export type AccountView = null | { type: 'apiKey' } | { type: 'chatgpt'; email: string | null; planType: PlanType }

/** A refresh failure that will not heal by retrying: cached until the credential changes. */
class PermanentAuthFailure extends Error {
  override name = 'PermanentAuthFailure'
}

/** How long the client may take to hand over fresh external tokens (codex: 10 s). */
export const EXTERNAL_REFRESH_TIMEOUT_MS = 10_000

/**
 * The one owner of the current credential: loading, saving, refresh and the 401 recovery.
 * JSON-RPC handlers, the CLI and remote control all ask it; nobody else reads the store.
 */
export class AccountService {
  private credential: Credential | null = null
  private externalRefresher: ExternalRefresher | null = null
  private login: BrowserLoginHandle | null = null
  private permanentFailure: string | null = null
  private queue: Promise<unknown> = Promise.resolve()
  private refreshing: Promise<void> | null = null
  private readonly now: () => number
  private readonly listeners = new Set<() => void>()

  constructor(private readonly deps: AccountServiceDeps) {
    this.now = deps.now ?? Date.now
  }

  /** Loads the stored credential at start-up. A broken store is logged, not fatal. */
  async init(): Promise<void> {
    try {
      this.credential = fromStored(await this.deps.store.load())
    } catch (err) {
      this.deps.log.warn({ error: withheldError(err), store: this.deps.store.mode }, 'could not load stored credentials')
    }
  }

  get current(): Credential | null {
    return this.credential
  }

  /** Calls `listener` whenever the credential changes (login, logout, refresh, reload). Returns an unsubscribe. */
  onCredentialChange(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** The ChatGPT account id of the current credential, if any. */
  get chatgptAccountId(): string | null {
    const c = this.credential
    if (c?.kind === 'chatgptExternal') return c.accountId
    if (c?.kind === 'chatgptManaged') return c.tokens.accountId ?? this.deps.readClaims(c.tokens.idToken).chatgptAccountId
    return null
  }

  // ---- account/read -------------------------------------------------------------------

  async read(options: { refreshToken?: boolean } = {}): Promise<{ account: AccountView; requiresOpenaiAuth: true }> {
    if (options.refreshToken && this.credential?.kind === 'chatgptManaged') {
      await this.refreshManaged({ force: true })
    }
    return { account: this.view(), requiresOpenaiAuth: true }
  }

  view(): AccountView {
    const c = this.credential
    if (c === null) return null
    if (c.kind === 'apiKey') return { type: 'apiKey' }
    if (c.kind === 'chatgptManaged') {
      const claims = this.deps.readClaims(c.tokens.idToken)
      return { type: 'chatgpt', email: claims.email, planType: claims.chatgptPlanType ?? 'unknown' }
    }
    const claims = this.deps.readClaims(c.accessToken)
    return { type: 'chatgpt', email: claims.email, planType: c.planType ?? claims.chatgptPlanType ?? 'unknown' }
  }

  // ---- logins (one at a time) ---------------------------------------------------------

  loginApiKey(apiKey: string): Promise<void> {
    return this.serial(async () => {
      if (this.credential?.kind === 'chatgptExternal') throw RpcError.invalidRequest(EXTERNAL_AUTH_ACTIVE)
      checkApiKeyLoginAllowed(this.deps.rules)
      this.cancelLoginInProgress()
      try {
        await this.deps.store.save({ auth_mode: 'apikey', OPENAI_API_KEY: apiKey })
      } catch (err) {
        throw new RpcError(INTERNAL_ERROR, `failed to save api key: ${shortReason(err)}`)
      }
      this.setCredential({ kind: 'apiKey', apiKey })
      this.emit({ type: 'loginCompleted', loginId: null, success: true, error: null })
      this.emitUpdated()
    })
  }

  loginChatgpt(): Promise<{ loginId: string; authUrl: string }> {
    return this.serial(async () => {
      if (this.credential?.kind === 'chatgptExternal') throw RpcError.invalidRequest(EXTERNAL_AUTH_ACTIVE)
      checkChatgptLoginAllowed(this.deps.rules)
      this.cancelLoginInProgress()
      const handle = await this.deps.browserLogin.start({ allowedWorkspaceIds: this.deps.rules.forcedWorkspaceIds })
      this.login = handle
      void this.finishBrowserLogin(handle)
      return { loginId: handle.loginId, authUrl: handle.authUrl }
    })
  }

  loginExternal(
    params: { accessToken: string; chatgptAccountId: string; chatgptPlanType?: string | null },
    refresher: ExternalRefresher,
  ): Promise<void> {
    return this.serial(async () => {
      checkExternalLoginAllowed(this.deps.rules)
      const violation = workspaceViolation(this.deps.rules, params.chatgptAccountId)
      if (violation !== null) throw RpcError.invalidRequest(violation)
      this.cancelLoginInProgress()
      this.externalRefresher = refresher
      this.setCredential({
        kind: 'chatgptExternal',
        accessToken: params.accessToken,
        accountId: params.chatgptAccountId,
        planType: params.chatgptPlanType === undefined || params.chatgptPlanType === null ? null : toPlanType(params.chatgptPlanType),
      })
      this.emit({ type: 'loginCompleted', loginId: null, success: true, error: null })
      this.emitUpdated()
    })
  }

  cancelLogin(loginId: string): Promise<{ status: 'canceled' | 'notFound' }> {
    return this.serial(async () => {
      if (!isUuid(loginId)) throw RpcError.invalidRequest(`invalid login id: ${loginId}`)
      if (this.login === null || this.login.loginId !== loginId) return { status: 'notFound' as const }
      this.cancelLoginInProgress()
      return { status: 'canceled' as const }
    })
  }

  logout(): Promise<void> {
    return this.serial(async () => {
      this.cancelLoginInProgress()
      const c = this.credential
      if (c?.kind === 'chatgptManaged') {
        await this.deps.authority.revoke(c.tokens.refreshToken)
      }
      try {
        await this.deps.store.clear()
      } catch (err) {
        this.deps.log.warn({ error: withheldError(err), store: this.deps.store.mode }, 'could not clear stored credentials')
      }
      this.externalRefresher = null
      this.setCredential(null)
      this.emit({ type: 'accountUpdated', authMode: null, planType: null })
    })
  }

  // ---- backend calls and the 401 loop -------------------------------------------------

  /**
   * Runs a backend call with the current ChatGPT credential. Before it, a managed credential
   * is refreshed when due. On a 401: managed → reload from storage (same account only), then
   * refresh, then give up; external → ask the client for new tokens and retry once; API key →
   * no recovery.
   */
  async withChatgptAuth<T>(call: (auth: { accessToken: string; accountId: string | null }) => Promise<T>): Promise<T> {
    if (this.credential?.kind === 'chatgptManaged' && this.isDue(this.credential)) {
      await this.refreshManaged({ force: false })
    }
    const first = this.chatgptAuth()
    try {
      return await call(first)
    } catch (err) {
      if (!isUnauthorized(err)) throw err
    }
    const c = this.credential
    if (c?.kind === 'chatgptExternal') {
      await this.refreshExternal(c)
      return call(this.chatgptAuth())
    }
    if (c?.kind === 'chatgptManaged') {
      if (await this.reloadSameAccount(c)) {
        try {
          return await call(this.chatgptAuth())
        } catch (err) {
          if (!isUnauthorized(err)) throw err
        }
      }
      await this.refreshManaged({ force: true })
      return call(this.chatgptAuth())
    }
    throw RpcError.invalidRequest('codex account authentication required to read rate limits')
  }

  private chatgptAuth(): { accessToken: string; accountId: string | null } {
    const c = this.credential
    if (c?.kind === 'chatgptManaged') return { accessToken: c.tokens.accessToken, accountId: c.tokens.accountId }
    if (c?.kind === 'chatgptExternal') return { accessToken: c.accessToken, accountId: c.accountId }
    throw RpcError.invalidRequest('codex account authentication required to read rate limits')
  }

  private isDue(c: Extract<Credential, { kind: 'chatgptManaged' }>): boolean {
    return needsProactiveRefresh(this.deps.readClaims(c.tokens.accessToken).exp, c.lastRefresh, this.now())
  }

  /** Refreshes the managed tokens once at a time; a permanent failure is cached until the credential changes. */
  async refreshManaged(options: { force: boolean }): Promise<void> {
    if (this.permanentFailure !== null) throw new RpcError(INTERNAL_ERROR, this.permanentFailure)
    this.refreshing ??= this.doRefresh(options.force).finally(() => (this.refreshing = null))
    return this.refreshing
  }

  private async doRefresh(force: boolean): Promise<void> {
    const lock = this.deps.withStoreLock ?? (<T>(fn: () => Promise<T>) => fn())
    await lock(async () => {
      const before = this.credential
      if (before?.kind !== 'chatgptManaged') return
      // Another process may have rotated the tokens already: use theirs.
      const stored = fromStored(await this.deps.store.load().catch(() => null))
      if (stored?.kind === 'chatgptManaged' && stored.tokens.accountId === before.tokens.accountId && stored.tokens.refreshToken !== before.tokens.refreshToken) {
        this.credential = stored
        if (!force || !this.isDue(stored)) return
      }
      const current = this.credential as Extract<Credential, { kind: 'chatgptManaged' }>
      let fresh: Awaited<ReturnType<TokenAuthority['refresh']>>
      try {
        fresh = await this.deps.authority.refresh(current.tokens.refreshToken)
      } catch (err) {
        if ((err as { permanent?: boolean }).permanent === true) {
          this.permanentFailure = (err as Error).message
          throw new RpcError(INTERNAL_ERROR, this.permanentFailure)
        }
        throw new RpcError(INTERNAL_ERROR, `failed to refresh ChatGPT tokens: ${shortReason(err)}`)
      }
      const tokens: ManagedTokens = {
        idToken: fresh.idToken ?? current.tokens.idToken,
        accessToken: fresh.accessToken,
        refreshToken: fresh.refreshToken ?? current.tokens.refreshToken,
        accountId: current.tokens.accountId,
      }
      const next: Credential = { kind: 'chatgptManaged', tokens, lastRefresh: new Date(this.now()) }
      await this.deps.store.save(toStored(next))
      this.credential = next
      this.notifyChange()
    })
  }

  /** After a 401: another process may hold newer tokens for the same account. */
  private async reloadSameAccount(c: Extract<Credential, { kind: 'chatgptManaged' }>): Promise<boolean> {
    const stored = fromStored(await this.deps.store.load().catch(() => null))
    if (stored?.kind !== 'chatgptManaged' || stored.tokens.accountId !== c.tokens.accountId) return false
    if (stored.tokens.accessToken === c.tokens.accessToken) return false
    this.credential = stored
    return true
  }

  private async refreshExternal(c: Extract<Credential, { kind: 'chatgptExternal' }>): Promise<void> {
    const refresher = this.externalRefresher
    if (refresher === null) throw new RpcError(INTERNAL_ERROR, 'auth refresh request failed: no client to ask')
    let reply: unknown
    try {
      // The refresher is a server→client request with its own 10 s timeout.
      reply = await refresher({ reason: 'unauthorized', previousAccountId: c.accountId })
    } catch (err) {
      const e = err as { error?: { code?: number; message?: string } }
      if (e.error && typeof e.error.code === 'number') {
        throw new RpcError(INTERNAL_ERROR, `auth refresh request failed: code=${e.error.code} message=${e.error.message ?? ''}`)
      }
      throw new RpcError(INTERNAL_ERROR, `auth refresh request failed: ${shortReason(err)}`)
    }
    const r = reply as { accessToken?: unknown; chatgptAccountId?: unknown; chatgptPlanType?: unknown }
    if (typeof r?.accessToken !== 'string' || typeof r.chatgptAccountId !== 'string') {
      throw new RpcError(INTERNAL_ERROR, 'auth refresh request failed: malformed refresh response')
    }
    const violation = workspaceViolation(this.deps.rules, r.chatgptAccountId)
    if (violation !== null) throw RpcError.invalidRequest(violation)
    this.setCredential({
      kind: 'chatgptExternal',
      accessToken: r.accessToken,
      accountId: r.chatgptAccountId,
      planType: typeof r.chatgptPlanType === 'string' ? toPlanType(r.chatgptPlanType) : null,
    })
  }

  // ---- internals ----------------------------------------------------------------------

  private async finishBrowserLogin(handle: BrowserLoginHandle): Promise<void> {
    let tokens: ManagedTokens
    try {
      tokens = await handle.result
    } catch (err) {
      if (this.login === handle) this.login = null
      this.emit({ type: 'loginCompleted', loginId: handle.loginId, success: false, error: shortReason(err) })
      return
    }
    if (this.login !== handle) return // canceled or replaced meanwhile
    this.login = null
    const next: Credential = { kind: 'chatgptManaged', tokens, lastRefresh: new Date(this.now()) }
    try {
      await this.deps.store.save(toStored(next))
    } catch (err) {
      this.emit({ type: 'loginCompleted', loginId: handle.loginId, success: false, error: `failed to save credentials: ${shortReason(err)}` })
      return
    }
    this.setCredential(next)
    this.emit({ type: 'loginCompleted', loginId: handle.loginId, success: true, error: null })
    this.emitUpdated()
  }

  private cancelLoginInProgress(): void {
    const l = this.login
    if (l === null) return
    this.login = null
    l.cancel()
  }

  private setCredential(c: Credential | null): void {
    this.credential = c
    this.permanentFailure = null
    this.notifyChange()
  }

  private notifyChange(): void {
    for (const l of this.listeners) {
      try {
        l()
      } catch (err) {
        this.deps.log.error({ error: withheldError(err) }, 'credential listener failed')
      }
    }
  }

  private emitUpdated(): void {
    const c = this.credential
    const view = this.view()
    const authMode = c === null ? null : c.kind === 'apiKey' ? 'apikey' : c.kind === 'chatgptManaged' ? 'chatgpt' : 'chatgptAuthTokens'
    this.emit({ type: 'accountUpdated', authMode, planType: view !== null && view.type === 'chatgpt' ? view.planType : null })
  }

  private emit(event: AccountEvent): void {
    try {
      this.deps.onEvent(event)
    } catch (err) {
      this.deps.log.error({ error: withheldError(err) }, 'account event listener failed')
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => undefined)
    return run
  }
}

export function fromStored(doc: AuthDotJson | null): Credential | null {
  if (doc === null) return null
  if (doc.tokens && doc.auth_mode !== 'apikey') {
    const t = doc.tokens
    const lastRefresh = doc.last_refresh ? new Date(doc.last_refresh) : null
    return {
      kind: 'chatgptManaged',
      tokens: { idToken: t.id_token, accessToken: t.access_token, refreshToken: t.refresh_token, accountId: t.account_id },
      lastRefresh: lastRefresh && !Number.isNaN(lastRefresh.getTime()) ? lastRefresh : null,
    }
  }
  if (typeof doc.OPENAI_API_KEY === 'string' && doc.OPENAI_API_KEY.length > 0) return { kind: 'apiKey', apiKey: doc.OPENAI_API_KEY }
  return null
}

export function toStored(c: Extract<Credential, { kind: 'chatgptManaged' }>): AuthDotJson {
  return {
    auth_mode: 'chatgpt',
    OPENAI_API_KEY: null,
    tokens: {
      id_token: c.tokens.idToken,
      access_token: c.tokens.accessToken,
      refresh_token: c.tokens.refreshToken,
      account_id: c.tokens.accountId,
    },
    ...(c.lastRefresh ? { last_refresh: c.lastRefresh.toISOString() } : {}),
  }
}

function isUnauthorized(err: unknown): boolean {
  return (err as { status?: unknown }).status === 401
}

function isUuid(s: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)
}

/** An error's message for a client, without anything that looks like a credential. */
export function shortReason(err: unknown): string {
  const message = err instanceof Error ? err.message : typeof err === 'string' ? err : 'unknown error'
  return scrubText(message).slice(0, 300)
}
