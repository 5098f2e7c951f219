/** Whether the process still takes new work. `/readyz` and the upgrade hook read it. */
export class Lifecycle {
  private drainingSince: number | null = null

  get draining(): boolean {
    return this.drainingSince !== null
  }

  beginDrain(now: number = Date.now()): void {
    this.drainingSince ??= now
  }
}
