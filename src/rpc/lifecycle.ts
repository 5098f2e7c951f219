/**
 * Whether the process takes new work. Draining (shutdown has begun) is for good and refuses
 * new sockets too; overloaded (the in-flight bound is full) passes as soon as requests finish,
 * so a load balancer should only hold off. Draining is reported first: it is the lasting state.
 */
export type Readiness = 'ready' | 'draining' | 'overloaded'

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

export function readiness(lifecycle: { readonly draining: boolean }, inFlight: { readonly saturated: boolean }): Readiness {
  if (lifecycle.draining) return 'draining'
  if (inFlight.saturated) return 'overloaded'
  return 'ready'
}
