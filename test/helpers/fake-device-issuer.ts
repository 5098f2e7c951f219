/**
 * The device-code side of the test auth server (test/helpers/oauth-server.ts mounts it on the
 * issuer's origin): the two endpoints codex's login crate calls, with the answers
 * auth.openai.com gives and the RFC 8628 ones a standard server adds.
 *
 * - `POST /api/accounts/deviceauth/usercode` `{client_id}` → `{device_auth_id, user_code,
 *   interval}` (the interval a string of seconds, as auth.openai.com sends it); 404 when the
 *   test turned device login off.
 * - `POST /api/accounts/deviceauth/token` `{device_auth_id, user_code}` → 403 while pending;
 *   400 `{error: "slow_down"}` for each slow-down the test queued; 400 `access_denied` or
 *   `expired_token` once denied or expired; once approved, 200 `{authorization_code,
 *   code_challenge, code_verifier}`; or, once, whatever failure the test queued.
 *
 * Approval is real: `approve` runs the issuer's authorization-code flow (consent included)
 * with a PKCE pair made here and the redirect URI `{issuer}/deviceauth/callback`, so the
 * code the server exchanges at `/oauth/token` is one the issuer actually issued.
 *
 * The device auth id, the authorization code and the verifier are canaries. The user code is
 * not (it is shown to the user, and so to recorded stdout and result frames); tests check the
 * logs for it by hand.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { canary, registerCanary } from './canary.js'
import { readBody, sendJson } from './http-body.js'

export const DEVICE_CALLBACK_PATH = '/deviceauth/callback'
const USERCODE_PATH = '/api/accounts/deviceauth/usercode'
const TOKEN_PATH = '/api/accounts/deviceauth/token'

export type DeviceCodeState = 'pending' | 'approved' | 'denied' | 'expired'

interface DeviceCode {
  readonly deviceAuthId: string
  readonly userCode: string
  state: DeviceCodeState
  approval: { authorization_code: string; code_challenge: string; code_verifier: string } | null
  slowDowns: number
  polls: number
}

export interface Approver {
  /** Follows an authorize URL as the user's browser would, up to the redirect to `redirect_uri`. */
  driveToCallback(authUrl: string, account: { accountId?: string; email?: string; planType?: string }): Promise<URL>
}

export class FakeDeviceAuth {
  /** Off: the user-code endpoint answers 404, as a server without device login does. */
  enabled = true
  /** What `interval` says, in seconds. */
  interval = '5'
  /** Every user-code request's `client_id`, in order. */
  readonly clientIds: string[] = []
  private readonly codes: DeviceCode[] = []
  private pollWaiters: (() => void)[] = []
  private nextFailure: [number, unknown] | null = null

  constructor(
    private readonly issuer: string,
    private readonly clientId: string,
    private readonly approver: Approver,
  ) {}

  /** The redirect URI device codes are issued for (registered with the client). */
  get redirectUri(): string {
    return `${this.issuer}${DEVICE_CALLBACK_PATH}`
  }

  /** Answers the request when it is one of the device endpoints; false otherwise. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    if (path !== USERCODE_PATH && path !== TOKEN_PATH) return false
    if (req.method !== 'POST') return json(res, 405, { error: 'method' })
    let body: Record<string, unknown>
    try {
      body = JSON.parse(await readBody(req)) as Record<string, unknown>
    } catch {
      return json(res, 400, { error: 'invalid_request' })
    }
    if (path === USERCODE_PATH) return this.userCode(res, body)
    return this.token(res, body)
  }

  /** The one code issued last: tests read its user code from what the client shows. */
  latest(): { userCode: string; polls: number; state: DeviceCodeState } {
    const c = this.codes[this.codes.length - 1]
    if (!c) throw new Error('fake device auth: no code issued yet')
    return c
  }

  /** The next poll (of any code) gets this answer instead, e.g. a 500. */
  failNextPoll(status: number, body: unknown): void {
    this.nextFailure = [status, body]
  }

  /** Every user code handed out (for the by-hand log check). */
  issuedUserCodes(): string[] {
    return this.codes.map((c) => c.userCode)
  }

  /** The user signs in at the verification page and approves `userCode`. */
  async approve(userCode: string, account: { accountId: string; email: string; planType?: string }): Promise<void> {
    const code = this.find(userCode)
    const codeVerifier = registerCanary(randomBytes(64).toString('base64url'))
    const codeChallenge = createHash('sha256').update(codeVerifier, 'ascii').digest('base64url')
    const query = new URLSearchParams({
      response_type: 'code',
      client_id: this.clientId,
      redirect_uri: this.redirectUri,
      scope: 'openid profile email offline_access',
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
      state: canary('device-state'),
    })
    const callback = await this.approver.driveToCallback(`${this.issuer}/oauth/authorize?${query.toString()}`, account)
    const authorizationCode = callback.searchParams.get('code')
    if (!authorizationCode) throw new Error(`fake device auth: the issuer gave no code (${callback.searchParams.get('error') ?? 'no error'})`)
    code.approval = { authorization_code: registerCanary(authorizationCode), code_challenge: codeChallenge, code_verifier: codeVerifier }
    code.state = 'approved'
  }

  deny(userCode: string): void {
    this.find(userCode).state = 'denied'
  }

  expire(userCode: string): void {
    this.find(userCode).state = 'expired'
  }

  /** The next `times` polls of `userCode` are told to slow down. */
  slowDown(userCode: string, times = 1): void {
    this.find(userCode).slowDowns += times
  }

  /** Resolves once the total number of polls answered (all codes) reaches `count`. */
  async polled(count: number): Promise<void> {
    while (this.totalPolls() < count) await new Promise<void>((resolve) => this.pollWaiters.push(resolve))
  }

  totalPolls(): number {
    return this.codes.reduce((n, c) => n + c.polls, 0)
  }

  private userCode(res: ServerResponse, body: Record<string, unknown>): boolean {
    this.clientIds.push(String(body.client_id))
    if (!this.enabled) return json(res, 404, { error: 'not_found' })
    const digits = randomBytes(4).readUInt32BE() % 100_000_000
    const userCode = `${String(digits).padStart(8, '0').slice(0, 4)}-${String(digits).padStart(8, '0').slice(4)}`
    const code: DeviceCode = { deviceAuthId: canary('device-auth'), userCode, state: 'pending', approval: null, slowDowns: 0, polls: 0 }
    this.codes.push(code)
    return json(res, 200, { device_auth_id: code.deviceAuthId, user_code: code.userCode, interval: this.interval })
  }

  private token(res: ServerResponse, body: Record<string, unknown>): boolean {
    const code = this.codes.find((c) => c.deviceAuthId === body.device_auth_id && c.userCode === body.user_code)
    if (!code) return json(res, 400, { error: 'invalid_request' })
    code.polls++
    const [status, answer] = this.answer(code)
    json(res, status, answer)
    for (const w of this.pollWaiters.splice(0)) w()
    return true
  }

  private answer(code: DeviceCode): [number, unknown] {
    const failure = this.nextFailure
    this.nextFailure = null
    if (failure !== null) return failure
    if (code.slowDowns > 0) {
      code.slowDowns--
      return [400, { error: 'slow_down' }]
    }
    switch (code.state) {
      case 'pending':
        return [403, { error: { message: 'Device authorization is pending', code: 'deviceauth_authorization_unknown' } }]
      case 'denied':
        return [400, { error: 'access_denied' }]
      case 'expired':
        return [400, { error: 'expired_token' }]
      case 'approved':
        return [200, code.approval]
    }
  }

  private find(userCode: string): DeviceCode {
    const code = this.codes.find((c) => c.userCode === userCode)
    if (!code) throw new Error(`fake device auth: no such user code`)
    return code
  }
}

function json(res: ServerResponse, status: number, body: unknown): true {
  sendJson(res, status, body)
  return true
}
