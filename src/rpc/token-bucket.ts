/**
 * A token bucket refilled lazily from the clock: `burst` tokens at most, `ratePerSecond`
 * added per second. No timers: each `take()` computes the refill since the last one.
 */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst
    this.last = now()
  }

  take(): boolean {
    this.refill()
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** Puts a taken token back (never past `burst`). */
  give(): void {
    this.refill()
    this.tokens = Math.min(this.burst, this.tokens + 1)
  }

  /** Whether the bucket holds all it can (so forgetting it loses nothing). */
  get full(): boolean {
    this.refill()
    return this.tokens >= this.burst
  }

  /** Milliseconds until the bucket is full again; 0 when it is. */
  msUntilFull(): number {
    this.refill()
    if (this.tokens >= this.burst) return 0
    if (this.ratePerSecond <= 0) return Infinity
    return Math.ceil(((this.burst - this.tokens) * 1000) / this.ratePerSecond)
  }

  /** Milliseconds until a `take()` would succeed; 0 when one would now. */
  msUntilToken(): number {
    this.refill()
    if (this.tokens >= 1) return 0
    if (this.ratePerSecond <= 0) return Infinity
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond)
  }

  private refill(): void {
    const t = this.now()
    const elapsed = t - this.last
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000)
      this.last = t
    }
  }
}
