/**
 * The failed-upgrade budget shared by every replica through Redis: the same token bucket as
 * `FailedUpgradeThrottle` (same key, same budget, same refill), kept in one Redis hash per
 * client and changed only by a Lua script, so a take or a refund from any replica is atomic
 * and N replicas together allow what one allows.
 *
 * In this order, for every reservation:
 * 1. the script refills the bucket for the time since its last change (never backwards: a
 *    replica whose clock lags gets no refill, not a negative one), takes a token if there is
 *    one, and sets the hash to expire when it would be full again — a full bucket and a missing
 *    one are the same, so nothing is left behind;
 * 2. any Redis failure (down, slow past the command bound) falls back to this process's own
 *    `FailedUpgradeThrottle`: the budget is then per replica, never unlimited. The WARN for
 *    it is budgeted, so a flood while Redis is down writes a bounded number of lines;
 * 3. a refund goes back where its token came from (Redis, or the local fallback).
 */
import type { Redis } from 'ioredis'
import type { AppLogger } from '../log/logger.js'
import { WarnBudget } from '../log/warn-budget.js'
import { clientKey } from './client-key.js'
import { FailedUpgradeThrottle, type Reservation, type UpgradeThrottle } from './upgrade-throttle.js'

const KEY_PREFIX = 'app-server:failed-upgrades:'

// KEYS[1] bucket; ARGV: capacity, tokens per ms, now (ms since the epoch), ms to refill.
// Returns {1, 0} when a token was taken, {0, ms until the next token} when the bucket is empty.
const TAKE = `
local capacity = tonumber(ARGV[1])
local perMs = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then tokens = capacity ts = now end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * perMs)
  ts = now
end
local taken = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) / perMs)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {taken, wait}
`

// KEYS[1] bucket; ARGV[1] capacity. A bucket already gone (expired: full) needs nothing back.
const GIVE = `
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens == nil then return 0 end
redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1)))
return 1
`

type SharedReservation = Reservation & { readonly shared?: true }

export class SharedUpgradeThrottle implements UpgradeThrottle {
  private readonly local: FailedUpgradeThrottle
  private readonly warns: WarnBudget

  constructor(
    private readonly redis: Redis,
    readonly budget: number,
    private readonly now: () => number,
    log: AppLogger,
  ) {
    this.local = new FailedUpgradeThrottle(budget, now)
    this.warns = new WarnBudget(log, now)
  }

  async reserve(remote: string): Promise<Reservation> {
    if (this.budget <= 0) return this.local.reserve(remote)
    const key = clientKey(remote)
    let answer: unknown
    try {
      answer = await this.redis.eval(TAKE, 1, KEY_PREFIX + key, this.budget, this.budget / 60_000, this.now(), 60_000)
    } catch {
      this.warns.warn({ event: 'redis' }, 'redis unreachable: failed upgrades counted against this process only')
      return this.local.reserve(remote)
    }
    const [taken, waitMs] = answer as [number, number]
    if (taken === 1) {
      const reservation: SharedReservation = { ok: true, key, shared: true }
      return reservation
    }
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) }
  }

  refund(reservation: Reservation): void {
    if (!reservation.ok) return
    if ((reservation as SharedReservation).shared !== true) return this.local.refund(reservation)
    // A refund that cannot reach Redis leaves one token spent until the bucket refills.
    this.redis.eval(GIVE, 1, KEY_PREFIX + reservation.key, this.budget).catch(() => undefined)
  }
}
