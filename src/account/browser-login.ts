/**
 * One ChatGPT browser login (OAuth authorization code with PKCE): PKCE and state, the local
 * callback server, the code exchange, the forced-workspace rule and the 10-minute limit.
 *
 * It only produces tokens. Saving them, notifying clients (`account/login/completed`) and
 * opening a browser are the account service's and the client's jobs, so a login that is
 * cancelled or superseded leaves nothing behind.
 */
import { randomUUID } from 'node:crypto'
import { systemClock, type Clock } from '../clock.js'
import { startLoginServer, type BindRetry, type CodeResult, type LoginServer } from './login-server.js'
import { exchangeForLogin, LOGIN_CANCELLED, LoginError, type LoginOutcome } from './login-outcome.js'
import type { OAuthClient } from './oauth-client.js'
import { createPkce, createState } from './pkce.js'

export const LOGIN_TIMEOUT_MS = 10 * 60 * 1000

export type BrowserLoginOutcome = LoginOutcome

export interface BrowserLoginOptions {
  readonly oauth: OAuthClient
  /** Callback server port (0 in tests), fallback and bind address; `startLoginServer`'s defaults. */
  readonly port?: number
  readonly fallbackPort?: number | null
  readonly host?: string
  readonly bindRetry?: BindRetry
  /** `forcedChatgptWorkspaceId`: the id token's `chatgpt_account_id` must be one of these. */
  readonly allowedWorkspaceIds?: readonly string[] | null
  readonly timeoutMs?: number
  /** Runs the login's deadline (tests drive it). */
  readonly clock?: Clock
  readonly originator?: string
}

export class BrowserLogin {
  readonly loginId = randomUUID()
  /** For the client to open; it carries the PKCE challenge and the state, not the verifier. */
  readonly authUrl: string
  readonly port: number
  readonly redirectUri: string
  /** Settles once, never rejects; the callback server is closed by then. */
  readonly done: Promise<BrowserLoginOutcome>

  private settled = false
  private resolveDone!: (outcome: BrowserLoginOutcome) => void
  private timer: unknown = null

  /** Binds the callback server (it may cancel an earlier login holding the port) and starts the clock. */
  static async start(options: BrowserLoginOptions): Promise<BrowserLogin> {
    const pkce = createPkce()
    const state = createState()
    // The server's callbacks need the login; the login needs the server: join them late.
    let login: BrowserLogin | null = null
    const server = await startLoginServer({
      port: options.port,
      fallbackPort: options.fallbackPort,
      host: options.host,
      bindRetry: options.bindRetry,
      state,
      onCode: (code) => (login === null ? Promise.resolve({ ok: false, message: 'Login is not ready' }) : login.exchange(code, pkce.codeVerifier)),
      onFailure: (failure) => login?.finish({ ok: false, error: new LoginError(failure.reason, failure.message) }, false),
    })
    const authUrl = options.oauth.authorizeUrl({
      redirectUri: server.redirectUri,
      codeChallenge: pkce.codeChallenge,
      state,
      allowedWorkspaceIds: options.allowedWorkspaceIds,
      originator: options.originator,
    })
    login = new BrowserLogin(options, server, authUrl)
    return login
  }

  private constructor(
    private readonly options: BrowserLoginOptions,
    private readonly server: LoginServer,
    authUrl: string,
  ) {
    this.authUrl = authUrl
    this.port = server.port
    this.redirectUri = server.redirectUri
    this.done = new Promise((resolve) => (this.resolveDone = resolve))
    this.timer = (options.clock ?? systemClock).setTimeout(
      () => this.finish({ ok: false, error: new LoginError('timeout', 'Login timed out') }, true),
      options.timeoutMs ?? LOGIN_TIMEOUT_MS,
    )
  }

  /** Ends the login now (a newer login, `account/login/cancel`, logout). */
  cancel(): void {
    this.finish({ ok: false, error: new LoginError('cancelled', LOGIN_CANCELLED) }, true)
  }

  get isSettled(): boolean {
    return this.settled
  }

  private async exchange(code: string, codeVerifier: string): Promise<CodeResult> {
    const outcome = await exchangeForLogin(this.options.oauth, { code, redirectUri: this.redirectUri, codeVerifier }, this.options.allowedWorkspaceIds, () => this.settled)
    if (outcome === null) return { ok: false, message: LOGIN_CANCELLED }
    this.finish(outcome, false)
    return outcome.ok ? { ok: true } : { ok: false, message: outcome.error.message }
  }

  /**
   * Settles once. `force` cuts the callback server now (timeout, cancel); otherwise it is
   * closing itself after answering the browser, and the outcome waits for that.
   */
  private finish(outcome: BrowserLoginOutcome, force: boolean): void {
    if (this.settled) return
    this.settled = true
    ;(this.options.clock ?? systemClock).clearTimeout(this.timer)
    const closing = force ? this.server.close() : this.server.closed
    void closing.then(() => this.resolveDone(outcome))
  }
}
