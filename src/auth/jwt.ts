import { compactVerify } from 'jose'
import { parseJsonObject } from '../util/json.js'

/** What an HS256 bearer must satisfy; blank issuer/audience are `null` (not checked). */
export interface SignedBearerRules {
  readonly sharedSecret: Uint8Array
  readonly issuer: string | null
  readonly audience: string | null
  readonly maxClockSkewSeconds: number
}

export type JwtResult = { ok: true; claims: Record<string, unknown> } | { ok: false; reason: string }

const INVALID = 'invalid websocket jwt'
const decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * Verifies a signed bearer: the signature and `alg` (HS256 only, so `none` and every other
 * algorithm are refused) by `jose`; then the claims in codex's order of reasons:
 * invalid → expired → not valid yet → issuer → audience.
 */
export async function verifySignedBearer(token: string, rules: SignedBearerRules, nowMs: number): Promise<JwtResult> {
  let payloadBytes: Uint8Array
  try {
    const verified = await compactVerify(token, rules.sharedSecret, { algorithms: ['HS256'] })
    payloadBytes = verified.payload
  } catch {
    return { ok: false, reason: INVALID }
  }
  const c = parseJsonObject(decoder.decode(payloadBytes))
  if (c === null) return { ok: false, reason: INVALID }

  const exp = c.exp
  if (typeof exp !== 'number' || !Number.isSafeInteger(exp)) return { ok: false, reason: INVALID }
  const nbf = c.nbf
  if (nbf !== undefined && (typeof nbf !== 'number' || !Number.isFinite(nbf))) return { ok: false, reason: INVALID }

  const now = Math.floor(nowMs / 1000)
  const skew = rules.maxClockSkewSeconds
  if (now >= exp + skew) return { ok: false, reason: 'expired websocket jwt' }
  if (nbf !== undefined && now + skew < nbf) return { ok: false, reason: 'websocket jwt is not valid yet' }
  if (rules.issuer !== null && c.iss !== rules.issuer) return { ok: false, reason: 'websocket jwt issuer mismatch' }
  if (rules.audience !== null && !audienceMatches(c.aud, rules.audience)) {
    return { ok: false, reason: 'websocket jwt audience mismatch' }
  }
  return { ok: true, claims: c }
}

function audienceMatches(aud: unknown, expected: string): boolean {
  if (typeof aud === 'string') return aud === expected
  if (Array.isArray(aud)) return aud.some((a) => a === expected)
  return false
}
