/**
 * Whether the process takes new work. Draining (shutdown has begun) is for good and refuses
 * new sockets too; overloaded (the in-flight bound is full) passes as soon as requests finish,
 * so a load balancer should only hold off; `engine unavailable`: an engine is configured but
 * not running (starting, or failed), so engine methods would fail. Reported in that order:
 * draining is the lasting state, overload the one that passes soonest on its own.
 */
export type Readiness = 'ready' | 'draining' | 'overloaded' | 'engine unavailable'

/** The process's drain state. `/readyz` and the upgrade hook read it. */
export class Lifecycle {
  private drainingSince: number | null = null

  get draining(): boolean {
    return this.drainingSince !== null
  }

  beginDrain(now: number = Date.now()): void {
    this.drainingSince ??= now
  }
}

export function readiness(
  lifecycle: { readonly draining: boolean },
  inFlight: { readonly saturated: boolean },
  engine: { readonly expected: boolean; readonly running: boolean } = { expected: false, running: false },
): Readiness {
  if (lifecycle.draining) return 'draining'
  if (inFlight.saturated) return 'overloaded'
  if (engine.expected && !engine.running) return 'engine unavailable'
  return 'ready'
}
