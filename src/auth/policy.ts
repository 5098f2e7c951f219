import type { IncomingHttpHeaders } from 'node:http'
import type { AuthModeName, WsAuthConfig } from '../config/types.js'
import { parseBearer } from './bearer.js'
import { verifySignedBearer } from './jwt.js'
import { degradedPrincipal, fullPrincipal, jwtPrincipal, type Principal } from './principal.js'
import { readQueryToken } from './query-token.js'
import { generateConnectionToken, matchesDigest } from './token.js'
import { sha256 } from '../util/sha256.js'

export type AuthDecision =
  | { readonly ok: true; readonly principal: Principal; readonly degradedReason: string | null }
  | { readonly ok: false; readonly reason: string }

export interface UpgradeRequest {
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

export interface AuthPolicyOptions {
  /** Clock for JWT checks, in ms. */
  readonly now?: () => number
  /** Fixed query token (tests, benchmarks); otherwise a fresh one per process. */
  readonly queryToken?: string
}

/**
 * Decides, before the 101, whether an upgrade may proceed and with which principal.
 * Framework-free: it sees only the URL and headers. Reasons are short, fixed strings that
 * never echo what the client sent.
 */
export class AuthPolicy {
  readonly mode: AuthModeName
  readonly enforced: boolean
  /** The generated connection token (query mode only). For the banner and `--url-file` only. */
  readonly queryToken: string | null
  private readonly queryDigest: Buffer | null
  private readonly now: () => number

  constructor(
    private readonly config: WsAuthConfig,
    options: AuthPolicyOptions = {},
  ) {
    this.mode = config.mode
    this.enforced = config.mode !== 'queryToken' || config.enforce
    this.queryToken = config.mode === 'queryToken' ? (options.queryToken ?? generateConnectionToken()) : null
    this.queryDigest = this.queryToken === null ? null : sha256(this.queryToken)
    this.now = options.now ?? Date.now
  }

  async authorize(req: UpgradeRequest): Promise<AuthDecision> {
    const config = this.config
    switch (config.mode) {
      case 'queryToken':
        return this.authorizeQuery(req.url, config.enforce)
      case 'capabilityToken': {
        const bearer = parseBearer(req.headers.authorization)
        if (!bearer.ok) return bearer
        if (!matchesDigest(bearer.token, config.tokenSha256)) return { ok: false, reason: 'invalid websocket bearer token' }
        return { ok: true, principal: fullPrincipal('capabilityToken'), degradedReason: null }
      }
      case 'signedBearerToken': {
        const bearer = parseBearer(req.headers.authorization)
        if (!bearer.ok) return bearer
        const result = await verifySignedBearer(bearer.token, config, this.now())
        if (!result.ok) return result
        return { ok: true, principal: jwtPrincipal(result.claims.scope, result.claims.sub), degradedReason: null }
      }
    }
  }

  private authorizeQuery(url: string, enforce: boolean): AuthDecision {
    const found = readQueryToken(url)
    let reason: string | null
    if (found.kind === 'multiple') reason = 'multiple websocket query tokens'
    else if (found.kind === 'missing') reason = 'missing generated websocket query token'
    else reason = matchesDigest(found.token, this.queryDigest as Buffer) ? null : 'invalid generated websocket query token'

    if (reason === null) return { ok: true, principal: fullPrincipal('queryToken'), degradedReason: null }
    if (!enforce) return { ok: true, principal: degradedPrincipal(), degradedReason: reason }
    return { ok: false, reason }
  }
}
