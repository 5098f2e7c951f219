/**
 * Account types shared by the account service, its stores, the login flows and the backend
 * clients. Wire names are camelCase; file and backend payloads are snake_case.
 */

export const PLAN_TYPES = [
  'free',
  'go',
  'plus',
  'pro',
  'prolite',
  'team',
  'self_serve_business_usage_based',
  'business',
  'enterprise_cbp_usage_based',
  'enterprise',
  'edu',
  'unknown',
] as const
export type PlanType = (typeof PLAN_TYPES)[number]

/** Any other plan name the backend or a token claims maps to `unknown`. */
export function toPlanType(value: unknown): PlanType {
  return typeof value === 'string' && (PLAN_TYPES as readonly string[]).includes(value) ? (value as PlanType) : 'unknown'
}

/** Reads claims from a JWT without verifying it (the backend's token, not ours). */
export interface ClaimsReader {
  (jwt: string): { email: string | null; chatgptAccountId: string | null; chatgptPlanType: PlanType | null; exp: number | null }
}

/** Tokens of a ChatGPT login this server manages (holds the refresh token, refreshes it). */
export interface ManagedTokens {
  readonly idToken: string
  readonly accessToken: string
  readonly refreshToken: string
  readonly accountId: string | null
}

/**
 * The current credential, a disjoint union: each variant holds only what makes sense for it.
 * `chatgptExternal` tokens belong to a parent application: memory only, refreshed by asking
 * the client (`account/chatgptAuthTokens/refresh`).
 */
export type Credential =
  | { readonly kind: 'apiKey'; readonly apiKey: string }
  | { readonly kind: 'chatgptManaged'; readonly tokens: ManagedTokens; readonly lastRefresh: Date | null }
  | {
      readonly kind: 'chatgptExternal'
      readonly accessToken: string
      readonly accountId: string
      readonly planType: PlanType | null
    }

/**
 * What a store holds: exactly the `auth.json` document (snake_case), so the file, keyring and
 * ephemeral stores all persist the same thing. External tokens are never stored.
 */
export interface AuthDotJson {
  auth_mode?: 'apikey' | 'chatgpt'
  OPENAI_API_KEY: string | null
  tokens?: {
    id_token: string
    access_token: string
    refresh_token: string
    account_id: string | null
  }
  /** RFC 3339. */
  last_refresh?: string
}

export type CredentialsStoreMode = 'file' | 'keyring' | 'auto' | 'ephemeral'

/** Where `auth.json` lives. Implementations: file, keyring, auto (keyring → file), ephemeral. */
export interface CredentialStore {
  readonly mode: CredentialsStoreMode
  /** The stored document, or null when nothing is stored. Throws `StoreError` when unreadable. */
  load(): Promise<AuthDotJson | null>
  save(auth: AuthDotJson): Promise<void>
  /** Removes whatever is stored; succeeds when nothing was. */
  clear(): Promise<void>
  /** Start-up housekeeping: removes what saves that never finished left behind. Never throws. */
  removeLeftovers?(): Promise<void>
}

/** Where stores report what they fixed or fell back from; pino's (and so Fastify's) logger fits. */
export interface StoreLog {
  warn(obj: Record<string, unknown>, msg: string): void
}

/**
 * A store failed. The message says why in words a client may see (`disk full`, `store locked
 * by another process`): never a secret, never a path. `detail` is for logs: the same failure
 * with the path and the errno code, still never a secret.
 */
export class StoreError extends Error {
  override name = 'StoreError'
  readonly detail: string

  constructor(message: string, detail?: string) {
    super(message)
    this.detail = detail ?? message
  }
}

/**
 * The store holds something that is not a credential document (truncated, garbage, wrong
 * shape). Not "logged out": the user's credential may be in there, so it is reported and kept.
 */
export class CorruptStoreError extends StoreError {
  override name = 'CorruptStoreError'
}

/** A store failure's fields for a log line: the client-safe reason and the detail. */
export function storeFailureFields(err: unknown): { reason: string; detail?: string } {
  if (err instanceof StoreError) return { reason: err.message, detail: err.detail }
  return { reason: err instanceof Error ? `unexpected ${err.name}` : 'unexpected error' }
}
