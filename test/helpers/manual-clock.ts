/**
 * The clock tests drive by hand: time stands still until the test advances it, and timeouts
 * fire only then, in due order, each with the clock reading its due time. Both readings move
 * together; they start where the test says (the wall reading at a fixed, readable instant by
 * default, so nothing depends on when the suite runs).
 */
import type { Clock, TimerHandle } from '../../src/clock.js'

export const DEFAULT_WALL_START_MS = Date.UTC(2025, 0, 1)

interface Scheduled {
  readonly at: number
  readonly fn: () => void
}

export class ManualClock implements Clock {
  private elapsed = 0
  private nextHandle = 1
  private readonly scheduled = new Map<number, Scheduled>()
  private readonly monotonicStart: number
  private readonly wallStart: number

  constructor(start: { readonly monotonicMs?: number; readonly wallMs?: number } = {}) {
    this.monotonicStart = start.monotonicMs ?? 0
    this.wallStart = start.wallMs ?? DEFAULT_WALL_START_MS
  }

  // Arrows: code under test may take a reading unbound (the token bucket does).
  readonly monotonicMs = (): number => this.monotonicStart + this.elapsed
  readonly wallMs = (): number => this.wallStart + this.elapsed

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const handle = this.nextHandle++
    this.scheduled.set(handle, { at: this.elapsed + Math.max(0, ms), fn })
    return handle
  }

  clearTimeout(handle: TimerHandle): void {
    this.scheduled.delete(handle as number)
  }

  /** How many timeouts are waiting. */
  get pendingCount(): number {
    return this.scheduled.size
  }

  /** The time left on each waiting timeout, shortest first. */
  pendingDelays(): number[] {
    return [...this.scheduled.values()].map((s) => s.at - this.elapsed).sort((a, b) => a - b)
  }

  /** Moves time forward by `ms`, firing every timeout that falls due (and any they schedule). */
  advance(ms: number): void {
    const end = this.elapsed + ms
    for (let due = this.nextDue(end); due !== null; due = this.nextDue(end)) this.fire(due)
    this.elapsed = end
  }

  /** `advance` up to the wall instant `wallMs` (time never runs backwards). */
  advanceToWall(wallMs: number): void {
    const ms = wallMs - this.wallMs()
    if (ms < 0) throw new Error(`the manual clock cannot go back ${-ms} ms`)
    this.advance(ms)
  }

  /**
   * `advance`, but letting promise callbacks and I/O callbacks run after each timeout (code
   * whose timers resume async work, such as a reconnect loop).
   */
  async advanceSettling(ms: number): Promise<void> {
    const end = this.elapsed + ms
    for (let due = this.nextDue(end); due !== null; due = this.nextDue(end)) {
      this.fire(due)
      await settle()
    }
    this.elapsed = end
    await settle()
  }

  private nextDue(end: number): [number, Scheduled] | null {
    let due: [number, Scheduled] | null = null
    for (const entry of this.scheduled) {
      if (entry[1].at <= end && (due === null || entry[1].at < due[1].at)) due = entry
    }
    return due
  }

  private fire([handle, timer]: [number, Scheduled]): void {
    this.scheduled.delete(handle)
    this.elapsed = timer.at
    timer.fn()
  }
}

/** A few turns of the event loop (no time passes on any clock). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
}
