/**
 * The one clock every part of the server reads time and schedules with.
 *
 * Two readings, because they answer different questions:
 * - `monotonicMs()` never jumps (NTP, a user changing the date), so durations, rates and idle
 *   checks use it; its origin is arbitrary, so it is never shown or stored;
 * - `wallMs()` is milliseconds since the epoch, for instants compared with someone else's
 *   (token expiry, `updatedAt`).
 *
 * Everything takes a `Clock` instead of calling the globals, so tests drive time with a manual
 * clock instead of sleeping. The real clock's timers are unref'd: a pending timeout (a login
 * deadline, a keepalive) never keeps the process alive on its own.
 */

/** Opaque: only the clock that returned it can clear it. */
export type TimerHandle = unknown

export interface Clock {
  /** Milliseconds from an arbitrary origin; never goes backwards. Safe to pass around unbound. */
  monotonicMs(this: void): number
  /** Milliseconds since the Unix epoch. */
  wallMs(): number
  setTimeout(fn: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

/** The process's clock. Members are arrows, so callers may pass a reading around unbound. */
export const systemClock: Clock = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}
