/**
 * The process-wide bound on JSON-RPC requests being handled at once. Past it, requests are
 * shed with -32001 and `/readyz` reports the process as not ready.
 */
export class InFlightLimit {
  private count = 0

  constructor(private readonly max: number) {}

  get current(): number {
    return this.count
  }

  get saturated(): boolean {
    return this.count >= this.max
  }

  tryAcquire(): boolean {
    if (this.count >= this.max) return false
    this.count++
    return true
  }

  release(): void {
    if (this.count > 0) this.count--
  }
}
