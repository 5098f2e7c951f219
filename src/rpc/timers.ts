/** The timer functions code schedules with, injectable so tests drive time instead of sleeping. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
  /** Milliseconds, monotonic enough for rate limiting. */
  now(): number
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const h = setTimeout(fn, ms)
    h.unref()
    return h
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  now: () => performance.now(),
}
