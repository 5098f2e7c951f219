import type { AppLogger } from '../log/logger.js'
import { withheldError } from '../log/logger.js'
import { credentialFromDocument } from './auth-document.js'
import { LoginFlows, type BrowserLoginStarter, type DeviceLoginStarter } from './logins.js'
import { CredentialRecovery, type ChatgptCall, type CredentialHolder, type ExternalRefresher, type TokenAuthority } from './recovery.js'
import { NotLoggedIn } from './errors.js'
import type { LoginRules } from './rules.js'
import { OwnWrites, sameCredential } from './store-reload.js'
import { storeFailureFields, StoreError, type ClaimsReader, type Credential, type CredentialStore, type PlanType } from './types.js'

export type AccountEvent =
  | { type: 'loginCompleted'; loginId: string | null; success: boolean; error: string | null }
  | { type: 'accountUpdated'; authMode: 'apikey' | 'chatgpt' | 'chatgptAuthTokens' | null; planType: PlanType | null }

export interface AccountServiceDeps {
  readonly store: CredentialStore
  readonly authority: TokenAuthority
  readonly browserLogin: BrowserLoginStarter
  readonly deviceLogin: DeviceLoginStarter
  readonly readClaims: ClaimsReader
  readonly rules: LoginRules
  readonly log: AppLogger
  readonly now?: () => number
  /** Broadcast hook: the plugin turns events into notifications. */
  readonly onEvent: (event: AccountEvent) => void
  /** Held while re-reading storage and refreshing, so two processes never refresh at once. */
  readonly withStoreLock?: <T>(fn: () => Promise<T>) => Promise<T>
}

/** ChatGPT tokens as codex takes them (`account/login/start {type:"chatgptAuthTokens"}`, refresh replies). */
export interface ChatgptAuthTokens {
  readonly accessToken: string
  readonly chatgptAccountId: string
  readonly chatgptPlanType: string | null
}

/** The wire `Account` of `account/read`. */
export type AccountView = null | { type: 'apiKey' } | { type: 'chatgpt'; email: string | null; planType: PlanType }

/**
 * The one owner of the current credential and the façade every caller uses: JSON-RPC
 * handlers, the CLI and remote control all ask it; nobody else reads the store.
 *
 * It holds the credential, runs logins one at a time (`LoginFlows`), hands backend calls to
 * the refresh and recovery loop (`CredentialRecovery`), and tells listeners and the event hook
 * what changed. Failures are the account errors of `errors.ts`.
 */
export class AccountService {
  private credential: Credential | null = null
  private unreadableStore: StoreError | null = null
  private queue: Promise<unknown> = Promise.resolve()
  private readonly listeners = new Set<() => void>()
  private readonly recovery: CredentialRecovery
  private readonly logins: LoginFlows
  /** The store every flow writes through, so a re-read recognises this process's own writes. */
  private readonly store: OwnWrites

  constructor(private readonly deps: AccountServiceDeps) {
    const now = deps.now ?? Date.now
    this.store = new OwnWrites(deps.store)
    const holder: CredentialHolder = {
      current: () => this.credential,
      adopt: (c) => {
        this.credential = c
      },
      replace: (c) => this.setCredential(c),
    }
    this.recovery = new CredentialRecovery(
      {
        store: this.store,
        authority: deps.authority,
        readClaims: deps.readClaims,
        rules: deps.rules,
        now,
        withStoreLock: deps.withStoreLock ?? ((fn) => fn()),
      },
      holder,
    )
    this.logins = new LoginFlows({
      store: this.store,
      authority: deps.authority,
      browserLogin: deps.browserLogin,
      deviceLogin: deps.deviceLogin,
      rules: deps.rules,
      log: deps.log,
      now,
      holder,
      recovery: this.recovery,
      report: {
        completed: (loginId, error) => this.emit({ type: 'loginCompleted', loginId, success: error === null, error }),
        updated: () => this.emitUpdated(),
      },
    })
  }

  /**
   * Removes what crashed saves left behind, then loads the stored credential. A store that
   * cannot be read is not fatal: nobody is logged in, but the store is not empty either — the
   * failure (a `StoreError`, normally) is kept as `storeProblem`, returned, and logged unless
   * `quiet` (the CLI, which tells the user in its own words instead).
   */
  async init(options: { quiet?: boolean } = {}): Promise<unknown> {
    await this.deps.store.removeLeftovers?.()
    try {
      this.credential = credentialFromDocument(await this.deps.store.load())
      return null
    } catch (err) {
      if (err instanceof StoreError) this.unreadableStore = err
      if (!options.quiet) this.deps.log.error({ error: withheldError(err), store: this.deps.store.mode, ...storeFailureFields(err) }, 'could not load stored credentials')
      return err
    }
  }

  /**
   * Re-reads the store after another process may have changed it (a CLI `login` or `logout`
   * in the same home) and takes what it holds, telling listeners and clients (`accountUpdated`).
   * Returns whether the credential changed. Not when a parent app's tokens are active: they
   * take precedence over anything stored. Not this process's own writes (store-reload.ts). An
   * unreadable store changes nothing: the credential in memory stays usable. Runs in turn with
   * the logins, so it never lands in the middle of one.
   */
  reloadFromStore(): Promise<boolean> {
    return this.serial(async () => {
      let stored: Credential | null
      try {
        stored = credentialFromDocument(await this.store.load())
        // Readable again (another process logged in or out over the bad file): no longer news.
        this.unreadableStore = null
      } catch (err) {
        this.deps.log.debug({ error: withheldError(err), store: this.store.mode }, 'could not re-read stored credentials')
        return false
      }
      const current = this.credential
      if (current?.kind === 'chatgptExternal') return false
      if (sameCredential(stored, current) || this.store.isOwnWrite(stored)) return false
      // Tokens another process rotated for the same login are no new login: the refresh and
      // the 401 recovery take them up when they need them (recovery.ts), as before.
      if (stored?.kind === 'chatgptManaged' && current?.kind === 'chatgptManaged' && stored.tokens.accountId === current.tokens.accountId) return false
      this.store.caughtUp()
      this.setCredential(stored)
      this.emitUpdated()
      return true
    })
  }

  get current(): Credential | null {
    return this.credential
  }

  /** Why the store could not be read at start (corrupt, unreadable); null once a login or logout rewrote it. */
  get storeProblem(): StoreError | null {
    return this.unreadableStore
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
    // Asked to refresh: another process may have logged in or out since the last look.
    if (options.refreshToken) await this.reloadFromStore()
    const problem = this.credential === null ? this.unreadableStore : null
    if (problem !== null) this.deps.log.warn({ store: this.deps.store.mode, ...storeFailureFields(problem) }, 'stored credentials are unreadable; answering as logged out')
    if (options.refreshToken && this.credential?.kind === 'chatgptManaged') {
      await this.recovery.refreshManaged({ force: true })
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
    return this.serial(() => this.logins.apiKey(apiKey))
  }

  loginChatgpt(): Promise<{ loginId: string; authUrl: string }> {
    return this.serial(() => this.logins.chatgpt())
  }

  loginChatgptDeviceCode(): Promise<{ loginId: string; verificationUrl: string; userCode: string }> {
    return this.serial(() => this.logins.deviceCode())
  }

  loginExternal(params: { accessToken: string; chatgptAccountId: string; chatgptPlanType?: string | null }, refresher: ExternalRefresher): Promise<void> {
    return this.serial(() => this.logins.external(params, refresher))
  }

  cancelLogin(loginId: string): Promise<{ status: 'canceled' | 'notFound' }> {
    return this.serial(() => this.logins.cancel(loginId))
  }

  logout(): Promise<void> {
    return this.serial(() => this.logins.logout())
  }

  // ---- backend calls ------------------------------------------------------------------

  /**
   * Runs a backend call with the current ChatGPT credential, refreshed first when due. A call
   * that throws `CredentialRejected` is retried once after recovery (see recovery.ts).
   * Without a ChatGPT credential: `NotLoggedIn`.
   */
  withChatgptAuth<T>(call: ChatgptCall<T>): Promise<T> {
    return this.recovery.withChatgptAuth(call)
  }

  /** The current ChatGPT credential as tokens to hand to the engine; null without one (or without an account id). */
  chatgptTokens(): ChatgptAuthTokens | null {
    const c = this.credential
    const accountId = this.chatgptAccountId
    if (accountId === null) return null
    const view = this.view()
    // `unknown` is no plan: codex then reads the plan from the token's claims itself.
    const planType = view !== null && view.type === 'chatgpt' && view.planType !== 'unknown' ? view.planType : null
    if (c?.kind === 'chatgptManaged') return { accessToken: c.tokens.accessToken, chatgptAccountId: accountId, chatgptPlanType: planType }
    if (c?.kind === 'chatgptExternal') return { accessToken: c.accessToken, chatgptAccountId: accountId, chatgptPlanType: planType }
    return null
  }

  /**
   * After a 401 elsewhere (the engine's `account/chatgptAuthTokens/refresh`): runs the 401
   * recovery (recovery.ts) and returns the tokens it left. Rejects with the account errors
   * (`NotLoggedIn`, `RefreshFailed`, `ExternalRefreshFailed`, …) when it could not recover.
   */
  async recoverAfterUnauthorized(): Promise<ChatgptAuthTokens> {
    await this.recovery.recoverUnauthorized()
    const tokens = this.chatgptTokens()
    if (tokens === null) throw new NotLoggedIn()
    return tokens
  }

  // ---- internals ----------------------------------------------------------------------

  private setCredential(c: Credential | null): void {
    this.credential = c
    // Every change but external tokens (memory only) follows a successful save or clear.
    if (c?.kind !== 'chatgptExternal') this.unreadableStore = null
    this.recovery.credentialChanged()
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
