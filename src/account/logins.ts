/**
 * The login flows: API key, the browser (PKCE) ChatGPT login, tokens handed in by a parent
 * app, cancelling a browser login, and logout. The account service runs them one at a time.
 *
 * Checks come in this order: a parent app's tokens block the other logins, then the
 * administrator's rules, then a browser login in progress is cancelled (a new login of any
 * kind supersedes it). A credential is stored before it is used, so a failed save leaves the
 * old one in place. Every flow reports its outcome (`completed`, then `updated`).
 */
import type { AppLogger } from '../log/logger.js'
import { withheldError } from '../log/logger.js'
import { shortReason } from '../log/scrub.js'
import { apiKeyDocument, managedDocument } from './auth-document.js'
import { CredentialClearFailed, CredentialSaveFailed, InvalidLoginId } from './errors.js'
import type { CredentialHolder, CredentialRecovery, ExternalRefresher, TokenAuthority } from './recovery.js'
import {
  checkApiKeyLoginAllowed,
  checkChatgptLoginAllowed,
  checkExternalLoginAllowed,
  checkExternalWorkspaceAllowed,
  checkNotExternallyManaged,
  type LoginRules,
} from './rules.js'
import { storeFailureFields, toPlanType, type Credential, type CredentialStore, type ManagedTokens } from './types.js'
import { isUuid } from '../util/uuid.js'

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

/** How a flow tells the world what happened (the service turns these into events). */
export interface LoginReporter {
  completed(loginId: string | null, error: string | null): void
  /** The credential changed: the account as it now is. */
  updated(): void
}

export interface LoginFlowDeps {
  readonly store: CredentialStore
  readonly authority: Pick<TokenAuthority, 'revoke'>
  readonly browserLogin: BrowserLoginStarter
  readonly rules: LoginRules
  readonly log: AppLogger
  readonly now: () => number
  readonly holder: CredentialHolder
  readonly recovery: Pick<CredentialRecovery, 'useExternalRefresher'>
  readonly report: LoginReporter
}

export class LoginFlows {
  private login: BrowserLoginHandle | null = null

  constructor(private readonly deps: LoginFlowDeps) {}

  async apiKey(apiKey: string): Promise<void> {
    checkNotExternallyManaged(this.deps.holder.current())
    checkApiKeyLoginAllowed(this.deps.rules)
    this.cancelInProgress()
    try {
      await this.deps.store.save(apiKeyDocument(apiKey))
    } catch (err) {
      this.logStoreFailure(err, 'could not save the api key')
      throw new CredentialSaveFailed(`failed to save api key: ${shortReason(err)}`)
    }
    this.deps.holder.replace({ kind: 'apiKey', apiKey })
    this.deps.report.completed(null, null)
    this.deps.report.updated()
  }

  /** Starts a browser login; it finishes (or fails) later, reported through `completed`. */
  async chatgpt(): Promise<{ loginId: string; authUrl: string }> {
    checkNotExternallyManaged(this.deps.holder.current())
    checkChatgptLoginAllowed(this.deps.rules)
    this.cancelInProgress()
    const handle = await this.deps.browserLogin.start({ allowedWorkspaceIds: this.deps.rules.forcedWorkspaceIds })
    this.login = handle
    void this.finishBrowserLogin(handle)
    return { loginId: handle.loginId, authUrl: handle.authUrl }
  }

  /** Tokens a parent app owns: memory only, refreshed by asking that client through `refresher`. */
  async external(params: { accessToken: string; chatgptAccountId: string; chatgptPlanType?: string | null }, refresher: ExternalRefresher): Promise<void> {
    checkExternalLoginAllowed(this.deps.rules)
    checkExternalWorkspaceAllowed(this.deps.rules, params.chatgptAccountId)
    this.cancelInProgress()
    this.deps.recovery.useExternalRefresher(refresher)
    this.deps.holder.replace({
      kind: 'chatgptExternal',
      accessToken: params.accessToken,
      accountId: params.chatgptAccountId,
      planType: params.chatgptPlanType === undefined || params.chatgptPlanType === null ? null : toPlanType(params.chatgptPlanType),
    })
    this.deps.report.completed(null, null)
    this.deps.report.updated()
  }

  async cancel(loginId: string): Promise<{ status: 'canceled' | 'notFound' }> {
    if (!isUuid(loginId)) throw new InvalidLoginId(loginId)
    if (this.login === null || this.login.loginId !== loginId) return { status: 'notFound' }
    this.cancelInProgress()
    return { status: 'canceled' }
  }

  /**
   * Clears storage, then revokes managed tokens (best effort) and forgets the credential. A
   * store that could not be cleared still holds the credential: the logout fails and nothing
   * changes (the tokens are not revoked either, so what is stored still works).
   */
  async logout(): Promise<void> {
    this.cancelInProgress()
    const c = this.deps.holder.current()
    try {
      await this.deps.store.clear()
    } catch (err) {
      this.logStoreFailure(err, 'could not clear stored credentials')
      throw new CredentialClearFailed(`failed to log out: ${shortReason(err)}`)
    }
    if (c?.kind === 'chatgptManaged') await this.deps.authority.revoke(c.tokens.refreshToken)
    this.deps.recovery.useExternalRefresher(null)
    this.deps.holder.replace(null)
    this.deps.report.updated()
  }

  private async finishBrowserLogin(handle: BrowserLoginHandle): Promise<void> {
    let tokens: ManagedTokens
    try {
      tokens = await handle.result
    } catch (err) {
      if (this.login === handle) this.login = null
      this.deps.report.completed(handle.loginId, shortReason(err))
      return
    }
    if (this.login !== handle) return // canceled or replaced meanwhile
    this.login = null
    const next: Credential = { kind: 'chatgptManaged', tokens, lastRefresh: new Date(this.deps.now()) }
    try {
      await this.deps.store.save(managedDocument(next))
    } catch (err) {
      this.logStoreFailure(err, 'could not save the ChatGPT login')
      this.deps.report.completed(handle.loginId, `failed to save credentials: ${shortReason(err)}`)
      return
    }
    this.deps.holder.replace(next)
    this.deps.report.completed(handle.loginId, null)
    this.deps.report.updated()
  }

  /** The log keeps what the client's error leaves out: the path and the errno code. */
  private logStoreFailure(err: unknown, msg: string): void {
    this.deps.log.warn({ error: withheldError(err), store: this.deps.store.mode, ...storeFailureFields(err) }, msg)
  }

  private cancelInProgress(): void {
    const l = this.login
    if (l === null) return
    this.login = null
    l.cancel()
  }
}
