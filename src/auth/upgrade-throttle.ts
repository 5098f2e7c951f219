/**
 * Failed upgrades per remote address in fixed one-minute windows. Once an address has spent
 * its budget, every upgrade from it is refused (429) until the window ends — before its
 * token is even looked at, so a guessing loop learns nothing more.
 *
 * (@fastify/rate-limit counts every request; it cannot count only the failed ones, so this
 * small counter sits beside it.) The table is bounded: past `maxAddresses` the oldest entries
 * are dropped, so a flood of source addresses cannot grow memory without limit.
 */
export class FailedUpgradeThrottle {
  private readonly windows = new Map<string, { start: number; failures: number }>()

  constructor(
    private readonly maxFailuresPerWindow: number,
    private readonly now: () => number,
    private readonly windowMs = 60_000,
    private readonly maxAddresses = 10_000,
  ) {}

  get enabled(): boolean {
    return this.maxFailuresPerWindow > 0
  }

  /** True when `remote` has used up its failures for the current window. */
  blocked(remote: string): boolean {
    if (!this.enabled) return false
    const w = this.current(remote)
    return w !== undefined && w.failures >= this.maxFailuresPerWindow
  }

  recordFailure(remote: string): void {
    if (!this.enabled) return
    const w = this.current(remote)
    if (w !== undefined) {
      w.failures++
      return
    }
    if (this.windows.size >= this.maxAddresses) {
      const oldest = this.windows.keys().next().value
      if (oldest !== undefined) this.windows.delete(oldest)
    }
    this.windows.set(remote, { start: this.now(), failures: 1 })
  }

  private current(remote: string): { start: number; failures: number } | undefined {
    const w = this.windows.get(remote)
    if (w === undefined) return undefined
    if (this.now() - w.start >= this.windowMs) {
      this.windows.delete(remote)
      return undefined
    }
    return w
  }
}
