/**
 * The server token, in memory only (codex `server_token_refresh_requirement_at` and
 * `refresh_remote_control_server`).
 *
 * `get()` hands out a usable grant, refreshing when needed:
 * - required:  no token, or `expires_at <= now` → refresh, and fail if that fails;
 * - proactive: within 300 s of expiry → refresh, but keep the still-valid token if that fails
 *   transiently;
 * - a transient failure (no answer, timeout, 429, 5xx) defers the next try to `Retry-After`
 *   (seconds or HTTP date) or now + 24–36 s. Until then a proactive refresh is not tried and a
 *   required one fails at once without touching the network (so a backend in trouble is not
 *   hammered by every reconnect).
 *
 * The caller supplies `refresh()` and decides in it whether that means enroll or refresh: the
 * cache only knows about the token. The token is never persisted, logged or put in a message.
 */
import { isTransientRemoteControlError } from './enrollment-client.js'
import type { Clock } from '../clock.js'
import { RemoteControlHttpError, type ServerTokenGrant } from './types.js'

/** Codex's `REMOTE_CONTROL_SERVER_TOKEN_REFRESH_SKEW_SECS` (5 minutes). */
export const PROACTIVE_REFRESH_WINDOW_MS = 300_000
/** Codex's fallback deferral after a transient failure: a whole number of seconds in [24, 36]. */
export const DEFERRAL_MIN_SECONDS = 24
export const DEFERRAL_MAX_SECONDS = 36

export type RefreshRequirement = 'required' | 'proactive' | 'not-needed'

export interface ServerTokenCacheOptions {
  /** Only the wall reading is used: expiry and `Retry-After` are instants the backend named. */
  readonly clock: Pick<Clock, 'wallMs'>
  /** Enroll or refresh, as the caller sees fit; its errors decide what the cache does. */
  readonly refresh: () => Promise<ServerTokenGrant>
  /** In [0, 1), for the 24–36 s deferral; defaults to Math.random. */
  readonly random?: () => number
  /**
   * Told of every transient failure and the deferral it caused (for a warning log: the
   * error's message is safe to log).
   */
  readonly onDeferred?: (event: { readonly required: boolean; readonly error: unknown; readonly retryAt: number }) => void
}

/** A required refresh asked for during a deferral: nothing was sent; try again at `retryAt`. */
export class RemoteControlRefreshDeferredError extends Error {
  override name = 'RemoteControlRefreshDeferredError'
  readonly transient = true
  constructor(
    /** ms since the epoch, on the cache's clock. */
    readonly retryAt: number,
    /** The transient failure that caused the deferral. */
    override readonly cause: unknown,
  ) {
    super(`remote control server token refresh deferred until ${new Date(retryAt).toISOString()}`)
  }
}

/** `clear()` was called while a refresh was in flight: its grant belongs to a state now gone. */
export class RemoteControlTokenCacheClearedError extends Error {
  override name = 'RemoteControlTokenCacheClearedError'
  constructor() {
    super('remote control server token cache was cleared while a refresh was in flight')
  }
}

export class ServerTokenCache {
  private grant: ServerTokenGrant | null = null
  /** When the next refresh may be tried after a transient failure (ms), or null. */
  private retryAt: number | null = null
  private lastFailure: unknown = null
  private inflight: Promise<ServerTokenGrant> | null = null
  /** Bumped by `clear()`, so a refresh started before it cannot repopulate the cache. */
  private epoch = 0
  private readonly clock: Pick<Clock, 'wallMs'>
  private readonly refreshFn: () => Promise<ServerTokenGrant>
  private readonly random: () => number
  private readonly onDeferred: ServerTokenCacheOptions['onDeferred']

  constructor(options: ServerTokenCacheOptions) {
    this.clock = options.clock
    this.refreshFn = options.refresh
    this.random = options.random ?? Math.random
    this.onDeferred = options.onDeferred
  }

  /** The cached grant, whatever its state (for status and for `clearIfSame`). */
  get current(): ServerTokenGrant | null {
    return this.grant
  }

  /** When a deferred refresh may be tried again (ms on the cache's clock), or null. */
  get nextRefreshAt(): number | null {
    return this.retryAt
  }

  /** Codex's classification: a deferral in the future turns a proactive refresh into none. */
  requirement(now: number = this.clock.wallMs()): RefreshRequirement {
    const expiresAt = this.grant?.expiresAt.getTime()
    // An unparsable expiry (NaN) counts as no expiry.
    if (this.grant === null || expiresAt === undefined || !Number.isFinite(expiresAt) || expiresAt <= now) return 'required'
    if (expiresAt > now + PROACTIVE_REFRESH_WINDOW_MS) return 'not-needed'
    if (this.retryAt !== null && this.retryAt > now) return 'not-needed'
    return 'proactive'
  }

  /**
   * A usable grant. Throws the refresh's own error (required refresh failed, or any
   * non-transient failure), `RemoteControlRefreshDeferredError` (required, during a deferral),
   * or `RemoteControlTokenCacheClearedError`. Concurrent callers share one refresh.
   */
  async get(): Promise<ServerTokenGrant> {
    const now = this.clock.wallMs()
    const requirement = this.requirement(now)
    if (requirement === 'not-needed' && this.grant !== null) return this.grant
    if (requirement === 'required' && this.retryAt !== null && this.retryAt > now) {
      throw new RemoteControlRefreshDeferredError(this.retryAt, this.lastFailure)
    }
    if (this.inflight === null) {
      const flight = this.runRefresh()
      this.inflight = flight
      const settle = (): void => {
        if (this.inflight === flight) this.inflight = null
      }
      flight.then(settle, settle)
    }
    return this.inflight
  }

  /** Stores a grant obtained elsewhere (e.g. the enrollment that created the server). */
  set(grant: ServerTokenGrant): void {
    this.grant = grant
    this.retryAt = null
    this.lastFailure = null
  }

  /** Forgets the token, the deferral and any refresh in flight (disable, account change). */
  clear(): void {
    this.epoch += 1
    this.grant = null
    this.retryAt = null
    this.lastFailure = null
    this.inflight = null
  }

  /**
   * For a websocket handshake refused with 401/403: forget the token only if it is still the
   * one that was used (a refresh may already have replaced it). The deferral is kept, as codex
   * does. Returns whether it cleared.
   */
  clearIfSame(token: string): boolean {
    if (this.grant === null || this.grant.remoteControlToken !== token) return false
    this.grant = null
    return true
  }

  private async runRefresh(): Promise<ServerTokenGrant> {
    const epoch = this.epoch
    let grant: ServerTokenGrant
    try {
      grant = await this.refreshFn()
    } catch (err) {
      if (epoch !== this.epoch) throw err
      // The credential or the enrollment was refused: the token is no good either (the
      // caller recovers the ChatGPT credential or re-enrolls, then asks again).
      if (err instanceof RemoteControlHttpError && (err.status === 401 || err.status === 403 || err.status === 404)) {
        this.grant = null
        throw err
      }
      // Anything else that is not transient (400, a malformed or mismatched grant) is for the
      // caller to see, as codex does, without a deferral.
      if (!isTransientRemoteControlError(err)) throw err
      // Judged again now: the token may have expired while the request was out.
      const now = this.clock.wallMs()
      const required = this.requirement(now) === 'required'
      const retryAfter = err instanceof RemoteControlHttpError ? err.retryAfter : null
      this.retryAt = refreshDeferral(retryAfter, now, this.random)
      this.lastFailure = err
      this.onDeferred?.({ required, error: err, retryAt: this.retryAt })
      if (required || this.grant === null) throw err
      return this.grant
    }
    if (epoch !== this.epoch) throw new RemoteControlTokenCacheClearedError()
    this.set(grant)
    return grant
  }
}

/**
 * When to try again after a transient failure: `Retry-After` if it names a time after `now`,
 * else now + a random whole number of seconds in [24, 36] (codex `refresh_deferral`).
 */
export function refreshDeferral(retryAfter: string | null, now: number, random: () => number = Math.random): number {
  const retryAt = parseRetryAfter(retryAfter, now)
  if (retryAt !== null) return retryAt
  const span = DEFERRAL_MAX_SECONDS - DEFERRAL_MIN_SECONDS + 1
  const seconds = DEFERRAL_MIN_SECONDS + Math.min(span - 1, Math.max(0, Math.floor(random() * span)))
  return now + seconds * 1000
}

// The three HTTP-date forms (RFC 9110 §5.6.7), matched before Date.parse, which would also
// take a bare year, ISO strings and much else.
const IMF_FIXDATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/
const RFC850_DATE = /^[A-Z][a-z]{5,8}, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/
const ASCTIME_DATE = /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/

/**
 * `Retry-After` as delay-seconds or an HTTP date, as ms since the epoch; null when absent,
 * unparsable, or not after `now` (codex `parse_retry_after`).
 */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null
  const text = value.trim()
  let retryAt: number
  if (/^\d+$/.test(text)) retryAt = now + Number(text) * 1000
  else if (IMF_FIXDATE.test(text) || RFC850_DATE.test(text)) retryAt = Date.parse(text)
  // asctime has no zone; HTTP dates are always GMT (Date.parse would take local time).
  else if (ASCTIME_DATE.test(text)) retryAt = Date.parse(`${text} GMT`)
  else return null
  return Number.isFinite(retryAt) && retryAt > now ? retryAt : null
}
