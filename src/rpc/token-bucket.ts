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
    const t = this.now()
    const elapsed = t - this.last
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000)
      this.last = t
    }
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}
