/**
 * One ChatGPT device-code login: for a server the user's browser cannot reach (a container,
 * another machine), where the browser login's callback on 127.0.0.1 never arrives. The user
 * opens the verification URL anywhere and types the user code; this polls the auth server
 * until they have, then exchanges the result like the browser login (login-outcome.ts).
 *
 * Polling, in order: wait the interval the auth server gave; ask once (never two polls at a
 * time); `slow_down` adds 5 s to the interval for the rest of the login (RFC 8628), a pending
 * answer or a network blip waits again; an approval is exchanged; a denial, an expiry or any
 * other answer ends the login. Fifteen minutes after the code was issued the login times out
 * (codex's limit and wording). Cancelling stops the polling at once; a poll in flight is
 * ignored when it returns.
 *
 * Like the browser login it only produces tokens: saving and notifying are the account
 * service's. The device auth id, the codes and the verifier are never logged or put in an
 * error; the user code is for the client to show the user.
 */
import { randomUUID } from 'node:crypto'
import { systemClock, type Clock, type TimerHandle } from '../clock.js'
import type { DeviceAuthClient, PollAnswer, UserCode } from './device-auth-client.js'
import { exchangeForLogin, LOGIN_CANCELLED, LoginError, type LoginOutcome } from './login-outcome.js'
import type { OAuthClient } from './oauth-client.js'

export const DEVICE_LOGIN_TIMEOUT_MS = 15 * 60 * 1000
/** RFC 8628 §3.5: each `slow_down` lengthens the interval by 5 seconds. */
export const SLOW_DOWN_STEP_MS = 5_000

export interface DeviceLoginOptions {
  readonly oauth: Pick<OAuthClient, 'exchangeCode' | 'revoke'>
  readonly device: Pick<DeviceAuthClient, 'requestUserCode' | 'poll' | 'verificationUrl' | 'redirectUri'>
  /** `forcedChatgptWorkspaceId`: the id token's `chatgpt_account_id` must be one of these. */
  readonly allowedWorkspaceIds?: readonly string[] | null
  readonly timeoutMs?: number
  /** Runs the polling and the deadline (tests drive it). */
  readonly clock?: Clock
}

export class DeviceLogin {
  readonly loginId = randomUUID()
  readonly verificationUrl: string
  readonly userCode: string
  /** How long the code is waited for, from when `start` resolved. */
  readonly timeoutMs: number
  /** Settles once, never rejects. */
  readonly done: Promise<LoginOutcome>

  private settled = false
  private resolveDone!: (outcome: LoginOutcome) => void
  private intervalMs: number
  /** The waiting poll's timer; null while a poll is in flight or after the end. */
  private pollTimer: TimerHandle = null
  private readonly deadline: TimerHandle
  private readonly clock: Clock

  /** Asks the auth server for a user code (`DeviceCodeUnavailable`, `DeviceCodeRequestFailed`) and starts polling. */
  static async start(options: DeviceLoginOptions): Promise<DeviceLogin> {
    return new DeviceLogin(options, await options.device.requestUserCode())
  }

  private constructor(
    private readonly options: DeviceLoginOptions,
    private readonly code: UserCode,
  ) {
    this.clock = options.clock ?? systemClock
    this.verificationUrl = options.device.verificationUrl
    this.userCode = code.userCode
    this.intervalMs = code.intervalMs
    this.timeoutMs = options.timeoutMs ?? DEVICE_LOGIN_TIMEOUT_MS
    this.done = new Promise((resolve) => (this.resolveDone = resolve))
    this.deadline = this.clock.setTimeout(() => this.finish({ ok: false, error: new LoginError('timeout', 'device auth timed out after 15 minutes') }), this.timeoutMs)
    this.schedulePoll()
  }

  /** Ends the login now (a newer login, `account/login/cancel`, logout, Ctrl-C). */
  cancel(): void {
    this.finish({ ok: false, error: new LoginError('cancelled', LOGIN_CANCELLED) })
  }

  private schedulePoll(): void {
    this.pollTimer = this.clock.setTimeout(() => {
      this.pollTimer = null
      void this.pollOnce()
    }, this.intervalMs)
  }

  private async pollOnce(): Promise<void> {
    const answer = await this.options.device.poll(this.code)
    if (this.settled) return
    const next = await this.afterAnswer(answer)
    if (next === 'again') this.schedulePoll()
    else if (next !== null) this.finish(next)
  }

  /** What an answer means: poll again, an ending, or null (the login ended meanwhile). */
  private async afterAnswer(answer: PollAnswer): Promise<'again' | LoginOutcome | null> {
    switch (answer.kind) {
      case 'pending':
      case 'retry':
        return 'again'
      case 'slowDown':
        this.intervalMs += SLOW_DOWN_STEP_MS
        return 'again'
      case 'denied':
        return failure('denied', 'Device code login was denied.')
      case 'expired':
        return failure('expired', 'The device code expired before it was used. Start the login again.')
      case 'failed':
        return failure('device_failed', answer.message)
      case 'authorized':
        return exchangeForLogin(
          this.options.oauth,
          { code: answer.authorizationCode, redirectUri: this.options.device.redirectUri, codeVerifier: answer.codeVerifier },
          this.options.allowedWorkspaceIds,
          () => this.settled,
        )
    }
  }

  private finish(outcome: LoginOutcome): void {
    if (this.settled) return
    this.settled = true
    this.clock.clearTimeout(this.deadline)
    this.clock.clearTimeout(this.pollTimer)
    this.pollTimer = null
    this.resolveDone(outcome)
  }
}

function failure(reason: LoginError['reason'], message: string): LoginOutcome {
  return { ok: false, error: new LoginError(reason, message) }
}
