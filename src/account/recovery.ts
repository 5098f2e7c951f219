/**
 * Keeps the ChatGPT credential usable: refreshes managed tokens when due, and runs the
 * recovery loop when the backend rejects the credential.
 *
 * `withChatgptAuth`, in order: a managed credential due for refresh is refreshed first; then
 * the call runs. When it throws `CredentialRejected`: managed → reload storage (same account
 * only) and retry if it held newer tokens, else refresh at the issuer and retry; external →
 * ask the client for new tokens, check the workspace rule, retry once; anything else → no
 * recovery. A rejection recovery could not cure surfaces as the call's own error.
 *
 * One refresh runs at a time, under the store lock, and re-reads storage first so tokens
 * another process rotated are used instead of refreshing again. A permanent failure is
 * answered from memory until the credential changes. Refreshed tokens merge as codex merges
 * them: each token the issuer sent replaces the old one, the rest stay, and the account id
 * stays the one stored at login.
 */
import { Type, Compile } from '../util/typebox.js'
import { shortReason } from '../log/scrub.js'
import { credentialFromDocument, managedDocument } from './auth-document.js'
import { ExternalRefreshFailed, isCredentialRejected, NotLoggedIn, RefreshFailed } from './errors.js'
import { isPermanentRefreshError, type RefreshedTokens } from './oauth-client.js'
import { needsProactiveRefresh } from './refresh-policy.js'
import { checkExternalWorkspaceAllowed, type LoginRules } from './rules.js'
import { toPlanType, type ClaimsReader, type Credential, type CredentialStore, type ManagedTokens } from './types.js'
import { OptionalNullable } from '../util/typebox-nullable.js'

type ManagedCredential = Extract<Credential, { kind: 'chatgptManaged' }>
type ExternalCredential = Extract<Credential, { kind: 'chatgptExternal' }>

/** What the account service needs from the OAuth issuer. */
export interface TokenAuthority {
  /** Rejects with a `RefreshError`; a permanent one means the refresh token is dead. */
  refresh(refreshToken: string): Promise<RefreshedTokens>
  /** Best effort: never throws. */
  revoke(token: string): Promise<void>
}

/**
 * Asks the client that handed in external tokens for fresh ones
 * (`account/chatgptAuthTokens/refresh`). Resolves with the client's reply, unchecked; rejects
 * with `ExternalRefreshFailed` when the client answered with an error.
 */
export type ExternalRefresher = (params: { reason: 'unauthorized'; previousAccountId: string | null }) => Promise<unknown>

/** How long the client may take to hand over fresh external tokens (codex: 10 s). */
export const EXTERNAL_REFRESH_TIMEOUT_MS = 10_000

/** The reply to `account/chatgptAuthTokens/refresh`. */
export const ExternalTokensReply = Type.Object({
  accessToken: Type.String(),
  chatgptAccountId: Type.String(),
  chatgptPlanType: OptionalNullable(Type.String()),
})
const externalTokensReply = Compile(ExternalTokensReply)

/** The account service's hold on the current credential, as the recovery changes it. */
export interface CredentialHolder {
  current(): Credential | null
  /** Tokens of the same login that another process rotated: swapped in without a change event. */
  adopt(c: ManagedCredential): void
  /** A new credential: listeners hear of it, and a cached permanent failure is dropped. */
  replace(c: Credential | null): void
}

export interface RecoveryDeps {
  readonly store: CredentialStore
  readonly authority: TokenAuthority
  readonly readClaims: ClaimsReader
  readonly rules: LoginRules
  readonly now: () => number
  readonly withStoreLock: <T>(fn: () => Promise<T>) => Promise<T>
}

export type ChatgptCall<T> = (auth: { accessToken: string; accountId: string | null }) => Promise<T>

export class CredentialRecovery {
  private externalRefresher: ExternalRefresher | null = null
  private permanentFailure: RefreshFailed | null = null
  private refreshing: Promise<void> | null = null

  constructor(
    private readonly deps: RecoveryDeps,
    private readonly holder: CredentialHolder,
  ) {}

  /** Who to ask when external tokens are rejected (null: nobody, after a logout). */
  useExternalRefresher(refresher: ExternalRefresher | null): void {
    this.externalRefresher = refresher
  }

  /** The credential changed: a cached permanent failure belonged to the old one. */
  credentialChanged(): void {
    this.permanentFailure = null
  }

  async withChatgptAuth<T>(call: ChatgptCall<T>): Promise<T> {
    const c = this.holder.current()
    if (c?.kind === 'chatgptManaged' && this.isDue(c)) await this.refreshManaged({ force: false })
    const first = this.chatgptAuth()
    try {
      return await call(first)
    } catch (err) {
      if (!isCredentialRejected(err)) throw err
    }
    try {
      return await this.recover(call)
    } catch (err) {
      throw isCredentialRejected(err) ? err.cause : err
    }
  }

  /** Refreshes the managed tokens, one refresh at a time. */
  async refreshManaged(options: { force: boolean }): Promise<void> {
    if (this.permanentFailure !== null) throw this.permanentFailure
    this.refreshing ??= this.refreshOnce(options.force).finally(() => (this.refreshing = null))
    return this.refreshing
  }

  /**
   * The engine's backend call got a 401 (it asked `account/chatgptAuthTokens/refresh`): the
   * same recovery as a rejected call of ours, without the call. Managed → newer tokens of the
   * same account in storage, else a forced refresh; external → ask the client; else
   * `NotLoggedIn`.
   */
  async recoverUnauthorized(): Promise<void> {
    const c = this.holder.current()
    if (c?.kind === 'chatgptExternal') return this.refreshExternal(c)
    if (c?.kind === 'chatgptManaged') {
      if (!(await this.reloadSameAccount(c))) await this.refreshManaged({ force: true })
      return
    }
    throw new NotLoggedIn()
  }

  private async recover<T>(call: ChatgptCall<T>): Promise<T> {
    const c = this.holder.current()
    if (c?.kind === 'chatgptExternal') {
      await this.refreshExternal(c)
      return call(this.chatgptAuth())
    }
    if (c?.kind === 'chatgptManaged') {
      if (await this.reloadSameAccount(c)) {
        try {
          return await call(this.chatgptAuth())
        } catch (err) {
          if (!isCredentialRejected(err)) throw err
        }
      }
      await this.refreshManaged({ force: true })
      return call(this.chatgptAuth())
    }
    throw new NotLoggedIn()
  }

  private chatgptAuth(): { accessToken: string; accountId: string | null } {
    const c = this.holder.current()
    if (c?.kind === 'chatgptManaged') return { accessToken: c.tokens.accessToken, accountId: c.tokens.accountId }
    if (c?.kind === 'chatgptExternal') return { accessToken: c.accessToken, accountId: c.accountId }
    throw new NotLoggedIn()
  }

  private isDue(c: ManagedCredential): boolean {
    return needsProactiveRefresh(this.deps.readClaims(c.tokens.accessToken).exp, c.lastRefresh, this.deps.now())
  }

  private async refreshOnce(force: boolean): Promise<void> {
    await this.deps.withStoreLock(async () => {
      const before = this.holder.current()
      if (before?.kind !== 'chatgptManaged') return
      // Another process may have rotated the tokens already: use theirs.
      const stored = await this.loadStored()
      if (stored?.kind === 'chatgptManaged' && stored.tokens.accountId === before.tokens.accountId && stored.tokens.refreshToken !== before.tokens.refreshToken) {
        this.holder.adopt(stored)
        if (!force || !this.isDue(stored)) return
      }
      const current = this.holder.current() as ManagedCredential
      const fresh = await this.askIssuer(current.tokens.refreshToken)
      const next: ManagedCredential = { kind: 'chatgptManaged', tokens: mergeRefreshedTokens(current.tokens, fresh), lastRefresh: new Date(this.deps.now()) }
      await this.deps.store.save(managedDocument(next))
      this.holder.replace(next)
    })
  }

  private async askIssuer(refreshToken: string): Promise<RefreshedTokens> {
    try {
      return await this.deps.authority.refresh(refreshToken)
    } catch (err) {
      if (isPermanentRefreshError(err)) {
        this.permanentFailure = new RefreshFailed(err.message, true)
        throw this.permanentFailure
      }
      throw new RefreshFailed(`failed to refresh ChatGPT tokens: ${shortReason(err)}`, false)
    }
  }

  /** After a rejection: another process may hold newer tokens for the same account. */
  private async reloadSameAccount(c: ManagedCredential): Promise<boolean> {
    const stored = await this.loadStored()
    if (stored?.kind !== 'chatgptManaged' || stored.tokens.accountId !== c.tokens.accountId) return false
    if (stored.tokens.accessToken === c.tokens.accessToken) return false
    this.holder.adopt(stored)
    return true
  }

  /** What storage holds now; unreadable storage counts as nothing newer. */
  private async loadStored(): Promise<Credential | null> {
    return credentialFromDocument(await this.deps.store.load().catch(() => null))
  }

  private async refreshExternal(c: ExternalCredential): Promise<void> {
    const refresher = this.externalRefresher
    if (refresher === null) throw new ExternalRefreshFailed('auth refresh request failed: no client to ask')
    let reply: unknown
    try {
      // The refresher is a server→client request with its own 10 s timeout.
      reply = await refresher({ reason: 'unauthorized', previousAccountId: c.accountId })
    } catch (err) {
      if (err instanceof ExternalRefreshFailed) throw err
      throw new ExternalRefreshFailed(`auth refresh request failed: ${shortReason(err)}`)
    }
    if (!externalTokensReply.Check(reply)) throw new ExternalRefreshFailed('auth refresh request failed: malformed refresh response')
    checkExternalWorkspaceAllowed(this.deps.rules, reply.chatgptAccountId)
    this.holder.replace({
      kind: 'chatgptExternal',
      accessToken: reply.accessToken,
      accountId: reply.chatgptAccountId,
      planType: typeof reply.chatgptPlanType === 'string' ? toPlanType(reply.chatgptPlanType) : null,
    })
  }
}

/** Codex's merge: what the issuer omitted stays as it was; the account id is never taken from the new tokens. */
function mergeRefreshedTokens(current: ManagedTokens, fresh: RefreshedTokens): ManagedTokens {
  return {
    idToken: fresh.idToken ?? current.idToken,
    accessToken: fresh.accessToken,
    refreshToken: fresh.refreshToken ?? current.refreshToken,
    accountId: current.accountId,
  }
}
