import { compactVerify } from 'jose'
import { parseJsonObject, type JsonObject } from '../util/json.js'
import { hasDuplicateTopLevelKey } from '../util/json-scan.js'

/** What an HS256 bearer must satisfy; blank issuer/audience are `null` (not checked). */
export interface SignedBearerRules {
  readonly sharedSecret: Uint8Array
  readonly issuer: string | null
  readonly audience: string | null
  readonly maxClockSkewSeconds: number
  /** Longest `exp − iat` (or `exp − now` without `iat`) accepted; 0: not checked. */
  readonly maxTokenLifetimeSeconds: number
}

export type JwtResult = { ok: true; claims: Record<string, unknown> } | { ok: false; reason: string }

const INVALID = 'invalid websocket jwt'
// A byte-order mark is kept (so JSON.parse refuses it): a BOM-prefixed header or claims set is
// not the canonical encoding, and parsers disagree on whether to skip it.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** The JOSE header parameters this server understands; any other (`b64`, `crit`, `jku`, …) is refused. */
const KNOWN_HEADER_PARAMETERS: ReadonlySet<string> = new Set(['alg', 'typ', 'kid'])
const BASE64URL = /^[A-Za-z0-9_-]*$/

/**
 * Verifies a signed bearer, in this order, every failure `invalid websocket jwt` unless named:
 * 1. the token's shape: three parts of canonical base64url (no padding, no stray bits), a
 *    header that is one JSON object (UTF-8 without a byte-order mark) without duplicate names and with no parameter but `alg`,
 *    `typ` and `kid` (so RFC 7797's `b64:false` and any `crit` are refused);
 * 2. the signature and `alg` (HS256 only, so `none` and every other algorithm are refused) by
 *    `jose`;
 * 3. the claims: one JSON object without duplicate names, then codex's order of reasons:
 *    invalid → expired → not valid yet → issuer → audience; then, when configured, the
 *    lifetime (`websocket jwt lifetime too long`).
 */
export async function verifySignedBearer(token: string, rules: SignedBearerRules, nowMs: number): Promise<JwtResult> {
  if (!strictShape(token)) return { ok: false, reason: INVALID }
  let payloadBytes: Uint8Array
  try {
    const verified = await compactVerify(token, rules.sharedSecret, { algorithms: ['HS256'] })
    payloadBytes = verified.payload
  } catch {
    return { ok: false, reason: INVALID }
  }
  const c = uniqueObject(payloadBytes)
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
  if (rules.maxTokenLifetimeSeconds > 0) {
    const iat = c.iat
    if (iat !== undefined && (typeof iat !== 'number' || !Number.isFinite(iat))) return { ok: false, reason: INVALID }
    // From the earlier of `iat` and now: a future `iat` must not shorten the lifetime measured.
    if (exp - Math.min(iat ?? now, now) > rules.maxTokenLifetimeSeconds) return { ok: false, reason: 'websocket jwt lifetime too long' }
  }
  return { ok: true, claims: c }
}

function strictShape(token: string): boolean {
  const parts = token.split('.')
  if (parts.length !== 3 || !parts.every(isCanonicalBase64url)) return false
  const header = uniqueObject(Buffer.from(parts[0]!, 'base64url'))
  return header !== null && Object.keys(header).every((name) => KNOWN_HEADER_PARAMETERS.has(name))
}

/** Decoding and encoding again gives the same text: no `=`, no stray bits in the last character. */
function isCanonicalBase64url(part: string): boolean {
  return BASE64URL.test(part) && Buffer.from(part, 'base64url').toString('base64url') === part
}

/** A UTF-8 JSON object without duplicate top-level names, or null. */
function uniqueObject(bytes: Uint8Array): JsonObject | null {
  let text: string
  try {
    text = decoder.decode(bytes)
  } catch {
    return null
  }
  const value = parseJsonObject(text)
  return value === null || hasDuplicateTopLevelKey(text) ? null : value
}

function audienceMatches(aud: unknown, expected: string): boolean {
  if (typeof aud === 'string') return aud === expected
  if (Array.isArray(aud)) return aud.some((a) => a === expected)
  return false
}
