/**
 * The auth server's device-code endpoints as codex's `login` crate uses them (auth.openai.com
 * is not RFC 8628 here): `POST {issuer}/api/accounts/deviceauth/usercode` with JSON
 * `{client_id}` gives `{device_auth_id, user_code, interval}` (the interval in seconds, sent
 * as a string); `POST {issuer}/api/accounts/deviceauth/token` with JSON `{device_auth_id,
 * user_code}` answers 403 or 404 while the user has not approved, and once they have, 200
 * with `{authorization_code, code_challenge, code_verifier}` — a PKCE pair the server made,
 * exchanged at `/oauth/token` with the redirect URI `{issuer}/deviceauth/callback`. The user
 * signs in at `{issuer}/codex/device`.
 *
 * Codex fails on any other poll answer. This client also reads the RFC 8628 error codes a
 * standard server would send — `slow_down` (poll less often), `authorization_pending`,
 * `access_denied`, `expired_token` — so a denial or an expiry reads as one.
 *
 * Errors carry statuses and the server's error codes, never the device auth id, the user
 * code or the authorization code.
 */
import { parseJsonObject } from '../util/json.js'
import { DeviceCodeRequestFailed, DeviceCodeUnavailable } from './errors.js'
import { describeFetchFailure, parseErrorBody, readText } from './oauth-client.js'

/** Codex's poll interval when the server names none is 0 (poll back to back); this waits 5 s, RFC 8628's default. */
export const DEFAULT_POLL_INTERVAL_MS = 5_000
/** The floor: a server saying "0" must not turn the login into a busy loop. */
export const MIN_POLL_INTERVAL_MS = 1_000
const DEFAULT_TIMEOUT_MS = 30_000

export interface DeviceAuthClientOptions {
  readonly issuer: string
  readonly clientId: string
  readonly fetch?: typeof fetch
  readonly timeoutMs?: number
}

export interface UserCode {
  readonly deviceAuthId: string
  readonly userCode: string
  readonly intervalMs: number
}

/** One poll's answer. `retry`: no answer came (a network blip); poll again at the interval. */
export type PollAnswer =
  | { readonly kind: 'authorized'; readonly authorizationCode: string; readonly codeVerifier: string }
  | { readonly kind: 'pending' }
  | { readonly kind: 'slowDown' }
  | { readonly kind: 'retry' }
  | { readonly kind: 'denied' }
  | { readonly kind: 'expired' }
  | { readonly kind: 'failed'; readonly message: string }

export class DeviceAuthClient {
  readonly issuer: string
  private readonly clientId: string
  private readonly fetchFn: typeof fetch
  private readonly timeoutMs: number

  constructor(options: DeviceAuthClientOptions) {
    this.issuer = options.issuer.replace(/\/+$/, '')
    this.clientId = options.clientId
    this.fetchFn = options.fetch ?? fetch
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  }

  /** Where the user enters the code. */
  get verificationUrl(): string {
    return `${this.issuer}/codex/device`
  }

  /** The redirect URI the authorization code was issued for, needed again at the exchange. */
  get redirectUri(): string {
    return `${this.issuer}/deviceauth/callback`
  }

  /** Throws `DeviceCodeUnavailable` (404) or `DeviceCodeRequestFailed`. */
  async requestUserCode(): Promise<UserCode> {
    let response: Response
    try {
      response = await this.post('/api/accounts/deviceauth/usercode', { client_id: this.clientId })
    } catch (err) {
      throw new DeviceCodeRequestFailed(`failed to request device code: ${describeFetchFailure(err, this.timeoutMs)}`)
    }
    const text = await readText(response)
    if (response.status === 404) throw new DeviceCodeUnavailable()
    if (!response.ok) throw new DeviceCodeRequestFailed(`failed to request device code: device code request failed with status ${response.status}`)
    const json = parseJsonObject(text)
    // Codex accepts `usercode` as well as `user_code`.
    const userCode = json?.user_code ?? json?.usercode
    if (json === null || typeof json.device_auth_id !== 'string' || json.device_auth_id === '' || typeof userCode !== 'string' || userCode === '') {
      throw new DeviceCodeRequestFailed('failed to request device code: the answer has no device_auth_id or user_code')
    }
    return { deviceAuthId: json.device_auth_id, userCode, intervalMs: intervalMs(json.interval) }
  }

  async poll(code: Pick<UserCode, 'deviceAuthId' | 'userCode'>): Promise<PollAnswer> {
    let response: Response
    try {
      response = await this.post('/api/accounts/deviceauth/token', { device_auth_id: code.deviceAuthId, user_code: code.userCode })
    } catch {
      return { kind: 'retry' }
    }
    const text = await readText(response)
    if (response.ok) {
      const json = parseJsonObject(text)
      const authorizationCode = json?.authorization_code
      const codeVerifier = json?.code_verifier
      if (typeof authorizationCode !== 'string' || authorizationCode === '' || typeof codeVerifier !== 'string' || codeVerifier === '') {
        return { kind: 'failed', message: 'device auth failed: the answer has no authorization_code or code_verifier' }
      }
      return { kind: 'authorized', authorizationCode, codeVerifier }
    }
    switch (parseErrorBody(text).code?.toLowerCase()) {
      case 'slow_down':
        return { kind: 'slowDown' }
      case 'authorization_pending':
        return { kind: 'pending' }
      case 'access_denied':
        return { kind: 'denied' }
      case 'expired_token':
        return { kind: 'expired' }
    }
    if (response.status === 403 || response.status === 404) return { kind: 'pending' }
    return { kind: 'failed', message: `device auth failed with status ${response.status}` }
  }

  private post(path: string, body: Record<string, string>): Promise<Response> {
    return this.fetchFn(`${this.issuer}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      redirect: 'error',
      signal: AbortSignal.timeout(this.timeoutMs),
    })
  }
}

/** Seconds as a string (codex's) or a number; absent or unreadable: the default. */
function intervalMs(value: unknown): number {
  const seconds = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value.trim()) : NaN
  if (!Number.isFinite(seconds) || seconds < 0) return DEFAULT_POLL_INTERVAL_MS
  return Math.max(MIN_POLL_INTERVAL_MS, Math.round(seconds * 1000))
}

