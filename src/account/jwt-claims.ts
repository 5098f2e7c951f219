/**
 * Reads the claims this server needs from ChatGPT id and access tokens. The tokens are the
 * auth server's, not ours, and we only use them to label the account (email, workspace, plan)
 * and to time refreshes, so the payload is decoded, never verified.
 *
 * A malformed token yields nulls: nothing here throws, and nothing echoes token content.
 */
import { decodeJwt } from 'jose'
import { toPlanType, type PlanType } from './types.js'

export interface TokenClaims {
  readonly email: string | null
  /** `https://api.openai.com/auth` → `chatgpt_account_id`: the workspace the login is for. */
  readonly chatgptAccountId: string | null
  readonly chatgptPlanType: PlanType | null
  /** Seconds since the epoch. */
  readonly exp: number | null
}

const AUTH_CLAIM = 'https://api.openai.com/auth'
const PROFILE_CLAIM = 'https://api.openai.com/profile'

/** Tokens larger than this are not decoded at all: no real id or access token comes close. */
const MAX_TOKEN_LENGTH = 64 * 1024
const BASE64URL = /^[A-Za-z0-9_-]+$/

const NO_CLAIMS: TokenClaims = Object.freeze({ email: null, chatgptAccountId: null, chatgptPlanType: null, exp: null })

export function readIdTokenClaims(idToken: string): TokenClaims {
  return readClaims(idToken)
}

/** Access tokens carry the same claims (codex reads the plan from either). */
export function readAccessTokenClaims(accessToken: string): TokenClaims {
  return readClaims(accessToken)
}

function readClaims(token: string): TokenClaims {
  const payload = decodePayload(token)
  if (payload === null) return NO_CLAIMS
  const auth = asObject(payload[AUTH_CLAIM])
  const planRaw = auth?.chatgpt_plan_type
  return {
    email: readEmail(payload),
    chatgptAccountId: nonEmptyString(auth?.chatgpt_account_id),
    chatgptPlanType: typeof planRaw === 'string' && planRaw !== '' ? toPlanType(planRaw) : null,
    exp: typeof payload.exp === 'number' && Number.isFinite(payload.exp) ? payload.exp : null,
  }
}

/**
 * `email`, else the profile claim's email. Codex nests it (`{"https://api.openai.com/profile":
 * {"email": ...}}`); a flat `https://api.openai.com/profile.email` key is read too, so a
 * token written either way yields its email.
 */
function readEmail(payload: Record<string, unknown>): string | null {
  return (
    nonEmptyString(payload.email) ??
    nonEmptyString(asObject(payload[PROFILE_CLAIM])?.email) ??
    nonEmptyString(payload[`${PROFILE_CLAIM}.email`])
  )
}

/**
 * The payload of a `header.payload.signature` token, or null. Like codex, all three segments
 * must be non-empty, so an unsigned `a.b.` token is refused too; `jose` decodes the payload.
 */
function decodePayload(token: unknown): Record<string, unknown> | null {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return null
  const parts = token.split('.')
  if (parts.length !== 3 || parts.some((p) => p === '') || !BASE64URL.test(parts[1] as string)) return null
  try {
    return decodeJwt(token)
  } catch {
    return null
  }
}

function asObject(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null
}

function nonEmptyString(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null
}
