import type { AppLogger } from './logger.js'

/** Where a WARN line about one client's input goes. */
export interface WarnSink {
  warn(fields: Record<string, unknown>, msg: string): void
}

/** WARN lines one connection may cause per window. */
export const WARN_LINES_PER_WINDOW = 20
export const WARN_WINDOW_MS = 60_000

/**
 * A bound on the WARN lines one client can cause: at most `WARN_LINES_PER_WINDOW` in each
 * `WARN_WINDOW_MS` window (counted from the window's first line), the rest suppressed and
 * counted. The first line written after some were suppressed carries `suppressed: K`;
 * `flush()` (when the connection ends) writes a last line for any still uncounted. Without
 * it, every junk frame a client sends is a log line it wrote into our disk.
 *
 * No timers: the window is judged from the injected clock at each line.
 */
export class WarnBudget implements WarnSink {
  private windowStart = -Infinity
  private written = 0
  private suppressed = 0

  constructor(
    private readonly log: AppLogger,
    private readonly now: () => number,
  ) {}

  warn(fields: Record<string, unknown>, msg: string): void {
    const t = this.now()
    if (t - this.windowStart >= WARN_WINDOW_MS) {
      this.windowStart = t
      this.written = 0
    }
    if (this.written >= WARN_LINES_PER_WINDOW) {
      this.suppressed++
      return
    }
    this.written++
    if (this.suppressed === 0) {
      this.log.warn(fields, msg)
      return
    }
    this.log.warn({ ...fields, suppressed: this.suppressed }, msg)
    this.suppressed = 0
  }

  /** Reports lines suppressed since the last one written (if any). */
  flush(): void {
    if (this.suppressed === 0) return
    this.log.warn({ suppressed: this.suppressed }, 'WARN lines about this connection were suppressed')
    this.suppressed = 0
  }
}
