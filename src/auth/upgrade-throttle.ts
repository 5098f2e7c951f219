/**
 * The budget of failed upgrades per client: a token bucket per client key (see client-key.ts:
 * loopback is one client, IPv6 counts per /64), `budget` tokens, refilled continuously at
 * `budget` per minute — so one stale reconnect loop costs a local IDE seconds, not the rest of
 * a minute.
 *
 * In this order, for every upgrade:
 * 1. `reserve()` takes a token before any credential is evaluated. An empty bucket is a 429
 *    with the wait until the next token, before the token is even looked at, so a guessing
 *    loop learns nothing more — and concurrent attempts each hold a token while they are
 *    evaluated, so no number of requests in flight gets more than the budget verified.
 * 2. an upgrade that is admitted gives its token back (`refund`); a refused one keeps it spent.
 *
 * (@fastify/rate-limit counts every request; it cannot count only the failed ones, so this
 * small table sits beside it.) The table is bounded: a bucket refilled by a refund is
 * forgotten, and past `maxClients` the oldest entry is dropped, so a flood of source addresses cannot grow memory
 * without limit.
 */
import { TokenBucket } from '../rpc/token-bucket.js'
import { clientKey } from './client-key.js'

export type Reservation = { readonly ok: true; readonly key: string } | { readonly ok: false; readonly retryAfterSeconds: number }

const UNLIMITED: Reservation = { ok: true, key: '' }

/** The budget as the upgrade route uses it: this process's table, or the replicas' shared one. */
export interface UpgradeThrottle {
  /** Failed upgrades per minute, also the burst; 0: off. */
  readonly budget: number
  reserve(remote: string): Reservation | Promise<Reservation>
  refund(reservation: Reservation): void
}

export class FailedUpgradeThrottle implements UpgradeThrottle {
  private readonly buckets = new Map<string, TokenBucket>()

  constructor(
    /** Failed upgrades per minute, also the burst; 0 turns the throttle off. */
    readonly budget: number,
    private readonly now: () => number,
    private readonly maxClients = 10_000,
  ) {}

  get enabled(): boolean {
    return this.budget > 0
  }

  /** Takes one token for an upgrade about to be evaluated (rule 1). */
  reserve(remote: string): Reservation {
    if (!this.enabled) return UNLIMITED
    const key = clientKey(remote)
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxClients) this.buckets.delete(this.buckets.keys().next().value!)
      bucket = new TokenBucket(this.budget / 60, this.budget, this.now)
      this.buckets.set(key, bucket)
    }
    if (bucket.take()) return { ok: true, key }
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil(bucket.msUntilToken() / 1000)) }
  }

  /** Gives back the token of an upgrade that was admitted, or never evaluated (rule 2). */
  refund(reservation: Reservation): void {
    if (!reservation.ok || !this.enabled) return
    const bucket = this.buckets.get(reservation.key)
    if (bucket === undefined) return
    bucket.give()
    if (bucket.full) this.buckets.delete(reservation.key)
  }

  /** Clients currently tracked (for tests of the bound). */
  get size(): number {
    return this.buckets.size
  }
}
