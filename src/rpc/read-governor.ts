/**
 * Keeps the process answerable when many connections, each within its own rate limit,
 * together send more than it can handle: a heavy sender's socket stops being read, so its
 * frames wait in TCP (the sender feels the push-back), and heavy senders take turns.
 *
 * The rate limit alone cannot do this: 200 connections at their default 1000/s are 200,000
 * requests a second, and each socket read hands ws up to 64 KiB of frames that are all parsed
 * and answered before anything else runs. Probes and light clients then wait seconds.
 *
 * Every `tickMs` the governor looks at how late its own timer fired (the event loop's lag) and
 * at how many frames each session received since the last look, in this order:
 *
 * 1. Lag above `lagLimitMs`: every session that received more than `heavyFrames` frames is
 *    held (not read, at most `holdMaxMs`, the transport's own safety net) and joins the back
 *    of the line of held sessions.
 * 2. Otherwise one held session, the longest waiting, is read again. One per tick: a socket
 *    read can be a thousand frames, so letting them all go at once would be the stall again.
 * 3. A closed session leaves the line.
 *
 * Light sessions (an IDE, a probe's client) never reach `heavyFrames` and are never held;
 * plain HTTP (`/healthz`, `/readyz`) never goes through here at all.
 */
import type { Clock, TimerHandle } from '../clock.js'

/** What the governor needs of a session (`Session` fits). */
export interface GovernedSession {
  readonly isClosed: boolean
  readonly framesReceived: number
  /** Stops reading the client's socket for at most `ms`; false when it cannot (a remote connection, a closing socket). */
  holdReading(ms: number): boolean
  /** Reads it again (no-op when not held). */
  releaseReading(): void
}

export interface ReadGovernorOptions {
  readonly tickMs: number
  readonly lagLimitMs: number
  readonly heavyFrames: number
  readonly holdMaxMs: number
}

export const DEFAULT_READ_GOVERNOR: ReadGovernorOptions = {
  tickMs: 10,
  lagLimitMs: 10,
  // A tick's worth at the default rate (1000/s) is 10 frames: 64 is clearly more than a client
  // within its rate sends, and far less than one socket read of a flooder.
  heavyFrames: 64,
  holdMaxMs: 60_000,
}

/** How much less often an idle process (no session) is looked at. */
const IDLE_FACTOR = 25

export class ReadGovernor<S extends GovernedSession = GovernedSession> {
  private readonly seen = new WeakMap<S, number>()
  private readonly held: S[] = []
  private readonly heldSet = new Set<S>()
  private timer: TimerHandle = null
  private expectedAt = 0

  constructor(
    private readonly sessions: () => Iterable<S>,
    private readonly clock: Clock,
    private readonly options: ReadGovernorOptions = DEFAULT_READ_GOVERNOR,
  ) {}

  /** How many sessions are held now. */
  get heldCount(): number {
    return this.heldSet.size
  }

  start(): void {
    if (this.timer !== null) return
    this.schedule()
  }

  stop(): void {
    this.clock.clearTimeout(this.timer)
    this.timer = null
    for (const s of this.held.splice(0)) s.releaseReading()
    this.heldSet.clear()
  }

  /** One look (the timer's callback; tests call it through the clock). */
  private tick(): void {
    const lagMs = this.clock.monotonicMs() - this.expectedAt
    this.dropClosed()
    if (lagMs > this.options.lagLimitMs) this.holdHeavy()
    else this.releaseOne()
    this.schedule(this.remember() || this.held.length > 0)
  }

  private holdHeavy(): void {
    for (const s of this.sessions()) {
      if (s.isClosed || this.heldSet.has(s)) continue
      const received = s.framesReceived - (this.seen.get(s) ?? 0)
      if (received <= this.options.heavyFrames) continue
      if (!s.holdReading(this.options.holdMaxMs)) continue
      this.held.push(s)
      this.heldSet.add(s)
    }
  }

  private releaseOne(): void {
    const s = this.held.shift()
    if (s === undefined) return
    this.heldSet.delete(s)
    s.releaseReading()
  }

  private dropClosed(): void {
    for (let i = this.held.length - 1; i >= 0; i--) {
      const s = this.held[i]!
      if (!s.isClosed) continue
      this.held.splice(i, 1)
      this.heldSet.delete(s)
    }
  }

  /** Frames counted from here on belong to the next look. True when there is any session. */
  private remember(): boolean {
    let any = false
    for (const s of this.sessions()) {
      this.seen.set(s, s.framesReceived)
      any = true
    }
    return any
  }

  /** Every `tickMs` while there are sessions; an idle process is looked at `IDLE_FACTOR` times less often. */
  private schedule(busy = true): void {
    const ms = busy ? this.options.tickMs : this.options.tickMs * IDLE_FACTOR
    this.expectedAt = this.clock.monotonicMs() + ms
    this.timer = this.clock.setTimeout(() => this.tick(), ms)
  }
}
