/**
 * How long to wait before the next engine start after the engine failed (crashed, hung, could
 * not be spawned, exited during start-up, never became ready).
 *
 * Policy:
 * - attempt n (1, 2, 3, …) waits 200 ms × 2^(n−1), moved by up to ±10 % at random so that
 *   gateways sharing a machine do not retry in step, and never more than 30 s: a broken engine
 *   is retried for as long as the gateway runs, but at most about twice a minute;
 * - an engine that stayed up (running) for a minute counts as healthy: its next failure starts
 *   again at attempt 1. Up-time is read from the injected clock when the failure comes, so
 *   nothing has to be scheduled while the engine runs.
 */
import type { Clock } from '../clock.js'
import { reconnectDelayMs } from '../remote-control/backoff.js'

export interface RestartBackoffOptions {
  readonly clock: Pick<Clock, 'monotonicMs'>
  /** A number in [0, 1), as `Math.random`; tests fix it. */
  readonly random?: () => number
  readonly resetAfterUpMs?: number
}

export const RESTART_RESET_AFTER_UP_MS = 60_000

export class RestartBackoff {
  private attemptValue = 0
  private upSince: number | null = null

  constructor(private readonly options: RestartBackoffOptions) {}

  /** Failures since the engine last counted as healthy. */
  get attempt(): number {
    return this.attemptValue
  }

  /** The engine became ready (running). */
  up(): void {
    this.upSince = this.options.clock.monotonicMs()
  }

  /** The engine failed: counts the attempt and returns how long to wait before the next start. */
  nextDelayMs(): number {
    const resetAfterUpMs = this.options.resetAfterUpMs ?? RESTART_RESET_AFTER_UP_MS
    if (this.upSince !== null && this.options.clock.monotonicMs() - this.upSince >= resetAfterUpMs) this.attemptValue = 0
    this.upSince = null
    this.attemptValue += 1
    // The same schedule remote control reconnects on.
    return reconnectDelayMs(this.attemptValue, this.options.random)
  }
}
