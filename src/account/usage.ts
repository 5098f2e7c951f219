/**
 * The backend usage payload (`GET {base}/wham/usage`, snake_case) and its mapping to the
 * `account/rateLimits/read` result (camelCase), as codex's backend client maps it.
 *
 * The payload schema is tolerant: every field codex treats as optional may be missing or
 * null, and unknown members are ignored, so a backend that grows fields does not break us.
 * The result schemas are strict the other way: every nullable member is present (explicit
 * null), so a codex client never sees a field silently omitted.
 */
import { Type, Compile, type Static } from '../util/typebox.js'
import { schemaProblem } from './schema-problem.js'
import { PLAN_TYPES, toPlanType, type PlanType } from './types.js'
import { Nullable, OptionalNullable } from '../util/typebox-nullable.js'

// ---------------------------------------------------------------------------------------------
// Backend payload (what `/wham/usage` returns).

/** Missing and null mean the same thing: the backend has nothing to say. */

export const UsageWindowPayload = Type.Object({
  // A window without its percentage says nothing: the one required member.
  used_percent: Type.Number(),
  limit_window_seconds: OptionalNullable(Type.Number()),
  reset_after_seconds: OptionalNullable(Type.Number()),
  /** Unix seconds. */
  reset_at: OptionalNullable(Type.Number()),
})

export const RateLimitDetailsPayload = Type.Object({
  allowed: OptionalNullable(Type.Boolean()),
  limit_reached: OptionalNullable(Type.Boolean()),
  primary_window: OptionalNullable(UsageWindowPayload),
  secondary_window: OptionalNullable(UsageWindowPayload),
})

export const CreditsPayload = Type.Object({
  has_credits: Type.Boolean(),
  unlimited: Type.Boolean(),
  // A decimal string ("12.50"); a bare number is accepted and kept as its text.
  balance: OptionalNullable(Type.Union([Type.String(), Type.Number()])),
})

export const AdditionalRateLimitPayload = Type.Object({
  limit_name: OptionalNullable(Type.String()),
  metered_feature: Type.String(),
  rate_limit: OptionalNullable(RateLimitDetailsPayload),
})

/**
 * The usage payload names the member `kind`; codex's backend model reads it from `type`.
 * Both are accepted (`kind` first), and so is a bare string.
 */
export const RateLimitReachedPayload = Type.Union([
  Type.Object({ kind: OptionalNullable(Type.String()), type: OptionalNullable(Type.String()) }),
  Type.String(),
])

export const UsagePayload = Type.Object({
  plan_type: OptionalNullable(Type.String()),
  rate_limit: OptionalNullable(RateLimitDetailsPayload),
  credits: OptionalNullable(CreditsPayload),
  additional_rate_limits: OptionalNullable(Type.Array(AdditionalRateLimitPayload)),
  rate_limit_reached_type: OptionalNullable(RateLimitReachedPayload),
})
export type UsagePayload = Static<typeof UsagePayload>
type UsageWindowPayload = Static<typeof UsageWindowPayload>
type RateLimitDetailsPayload = Static<typeof RateLimitDetailsPayload>
type CreditsPayload = Static<typeof CreditsPayload>

const usagePayloadValidator = Compile(UsagePayload)

/**
 * Why `value` is not a usage payload, as `at /path: message` (the first problem only), or
 * null when it is one. Values are never quoted: the text may end up in an error reply.
 */
export function usagePayloadProblem(value: unknown): string | null {
  return schemaProblem(usagePayloadValidator, value)
}

export function isUsagePayload(value: unknown): value is UsagePayload {
  return usagePayloadValidator.Check(value)
}

// ---------------------------------------------------------------------------------------------
// Wire result (`account/rateLimits/read`, codex's GetAccountRateLimitsResponse).

const INT32_MIN = -2147483648
const INT32_MAX = 2147483647

export const RATE_LIMIT_REACHED_TYPES = [
  'rate_limit_reached',
  'workspace_owner_credits_depleted',
  'workspace_member_credits_depleted',
  'workspace_owner_usage_limit_reached',
  'workspace_member_usage_limit_reached',
] as const
export type RateLimitReachedType = (typeof RATE_LIMIT_REACHED_TYPES)[number]


export const PlanTypeSchema = Type.Union(PLAN_TYPES.map((p) => Type.Literal(p)))
export const RateLimitReachedTypeSchema = Type.Union(RATE_LIMIT_REACHED_TYPES.map((k) => Type.Literal(k)))

export const RateLimitWindow = Type.Object({
  usedPercent: Type.Integer({ minimum: INT32_MIN, maximum: INT32_MAX }),
  windowDurationMins: Nullable(Type.Integer()),
  /** Unix seconds. */
  resetsAt: Nullable(Type.Integer()),
})
export type RateLimitWindow = Static<typeof RateLimitWindow>

export const CreditsSnapshot = Type.Object({
  hasCredits: Type.Boolean(),
  unlimited: Type.Boolean(),
  balance: Nullable(Type.String()),
})
export type CreditsSnapshot = Static<typeof CreditsSnapshot>

export const RateLimitSnapshot = Type.Object({
  limitId: Nullable(Type.String()),
  limitName: Nullable(Type.String()),
  primary: Nullable(RateLimitWindow),
  secondary: Nullable(RateLimitWindow),
  credits: Nullable(CreditsSnapshot),
  planType: Nullable(PlanTypeSchema),
  rateLimitReachedType: Nullable(RateLimitReachedTypeSchema),
})
/** Written out (not `Static`) so handlers and tests get readable types. */
export interface RateLimitSnapshot {
  limitId: string | null
  limitName: string | null
  primary: RateLimitWindow | null
  secondary: RateLimitWindow | null
  credits: CreditsSnapshot | null
  planType: PlanType | null
  rateLimitReachedType: RateLimitReachedType | null
}

export const GetAccountRateLimitsResult = Type.Object({
  rateLimits: RateLimitSnapshot,
  rateLimitsByLimitId: Type.Record(Type.String(), RateLimitSnapshot),
})
export interface GetAccountRateLimitsResult {
  rateLimits: RateLimitSnapshot
  rateLimitsByLimitId: Record<string, RateLimitSnapshot>
}

// ---------------------------------------------------------------------------------------------
// Mapping.

/** The bucket every account has; additional limits are keyed by their metered feature. */
export const CODEX_LIMIT_ID = 'codex'

export interface MapUsageOptions {
  /** Clock for `reset_after_seconds` when the backend sends no `reset_at` (ms since epoch). */
  readonly nowMs?: number
}

/**
 * Maps a validated usage payload exactly as codex's backend client does: the `codex`
 * snapshot carries credits and the reached type; each additional limit is its own snapshot
 * with the same plan, no credits and no reached type. `rateLimits` is the `codex` snapshot.
 */
export function mapUsage(payload: UsagePayload, options: MapUsageOptions = {}): GetAccountRateLimitsResult {
  const nowMs = options.nowMs ?? Date.now()
  const planType = mapPlanType(payload.plan_type)
  const codex: RateLimitSnapshot = {
    limitId: CODEX_LIMIT_ID,
    limitName: null,
    ...mapWindows(payload.rate_limit, nowMs),
    credits: mapCredits(payload.credits),
    planType,
    rateLimitReachedType: mapReachedType(payload.rate_limit_reached_type),
  }
  const entries: [string, RateLimitSnapshot][] = [[CODEX_LIMIT_ID, codex]]
  const seen = new Set([CODEX_LIMIT_ID])
  for (const extra of payload.additional_rate_limits ?? []) {
    // First one wins, so `rateLimitsByLimitId.codex` is always `rateLimits` itself even if
    // the backend lists `codex` again among the additional limits.
    if (seen.has(extra.metered_feature)) continue
    seen.add(extra.metered_feature)
    entries.push([
      extra.metered_feature,
      {
        limitId: extra.metered_feature,
        limitName: extra.limit_name ?? null,
        ...mapWindows(extra.rate_limit, nowMs),
        credits: null,
        planType,
        rateLimitReachedType: null,
      },
    ])
  }
  // fromEntries defines own properties, so a feature named `__proto__` stays a plain key.
  return { rateLimits: codex, rateLimitsByLimitId: Object.fromEntries(entries) }
}

function mapWindows(details: RateLimitDetailsPayload | null | undefined, nowMs: number): Pick<RateLimitSnapshot, 'primary' | 'secondary'> {
  return {
    primary: mapWindow(details?.primary_window, nowMs),
    secondary: mapWindow(details?.secondary_window, nowMs),
  }
}

function mapWindow(window: UsageWindowPayload | null | undefined, nowMs: number): RateLimitWindow | null {
  if (window === null || window === undefined) return null
  return {
    usedPercent: roundPercent(window.used_percent),
    windowDurationMins: windowMinutes(window.limit_window_seconds),
    resetsAt: resetsAt(window, nowMs),
  }
}

/**
 * codex: `used_percent.round() as i32`. Rust rounds halves away from zero (Math.round would
 * take -2.5 to -2) and `as i32` saturates at the i32 bounds (the wire type is int32).
 */
export function roundPercent(value: number): number {
  if (Number.isNaN(value)) return 0
  const rounded = Math.sign(value) * Math.round(Math.abs(value))
  return Math.min(INT32_MAX, Math.max(INT32_MIN, rounded)) + 0 // `+ 0` turns -0 into 0
}

/** codex: `(seconds + 59) / 60` for positive seconds, else none. */
export function windowMinutes(seconds: number | null | undefined): number | null {
  if (seconds === null || seconds === undefined || !(seconds > 0) || !Number.isFinite(seconds)) return null
  return Math.ceil(seconds / 60)
}

/**
 * codex sends `reset_at` (Unix seconds) as is. Without it, `reset_after_seconds` from now is
 * the same instant; with neither, the reset time is unknown.
 */
function resetsAt(window: UsageWindowPayload, nowMs: number): number | null {
  const at = window.reset_at
  if (typeof at === 'number' && Number.isFinite(at)) return Math.floor(at)
  const after = window.reset_after_seconds
  if (typeof after === 'number' && Number.isFinite(after)) return Math.floor(nowMs / 1000 + after)
  return null
}

function mapCredits(credits: CreditsPayload | null | undefined): CreditsSnapshot | null {
  if (credits === null || credits === undefined) return null
  const balance = credits.balance
  return {
    hasCredits: credits.has_credits,
    unlimited: credits.unlimited,
    balance: balance === null || balance === undefined ? null : String(balance),
  }
}

/**
 * Any plan name outside our list is `unknown`; a missing plan is null (not reported).
 * `education` is the backend's other spelling of `edu` (codex maps it so).
 */
function mapPlanType(value: string | null | undefined): PlanType | null {
  if (value === null || value === undefined) return null
  return value === 'education' ? 'edu' : toPlanType(value)
}

/** An unknown kind is no reached type at all (codex: `Unknown => None`). */
function mapReachedType(value: Static<typeof RateLimitReachedPayload> | null | undefined): RateLimitReachedType | null {
  if (value === null || value === undefined) return null
  const kind = typeof value === 'string' ? value : (value.kind ?? value.type)
  return typeof kind === 'string' && (RATE_LIMIT_REACHED_TYPES as readonly string[]).includes(kind) ? (kind as RateLimitReachedType) : null
}
