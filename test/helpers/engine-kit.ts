/**
 * What the engine tests share: a log capture that can be awaited, timers the test drives,
 * and a stand-in engine binary (a small node script) for the paths the real engine cannot be
 * made to take on demand (ignoring SIGTERM, never listening).
 */
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LogCapture, type LogLine } from './server.js'

/** A `LogCapture` whose lines can be waited for (no polling, no sleeping). */
export class WaitableLogs extends LogCapture {
  private waiters: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = []

  override _write(chunk: Buffer, enc: BufferEncoding, done: (err?: Error | null) => void): void {
    const before = this.lines.length
    super._write(chunk, enc, (err) => {
      for (const line of this.lines.slice(before)) this.settle(line)
      done(err)
    })
  }

  /** The first line (already written or still to come) that `match` accepts. */
  waitFor(match: (line: LogLine) => boolean): Promise<LogLine> {
    const seen = this.lines.find(match)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve) => this.waiters.push({ match, resolve }))
  }

  private settle(line: LogLine): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(line)) return true
      w.resolve(line)
      return false
    })
  }
}

/**
 * Writes an executable stand-in for `codex` into `dir`. Its behaviour comes from
 * `FAKE_ENGINE_MODE` in its environment:
 * - `idle`: prints `FAKE_ENGINE_LINES` (newline-separated) to stderr, then waits forever;
 * - `ignore-term`: as idle, but ignores SIGTERM (says `fake engine: got SIGTERM` when sent one);
 * - `exit`: prints `Error: fake failure` and exits with code 3.
 * Every mode first prints `fake engine: up` once its signal handlers are in place.
 */
export function writeFakeEngine(dir: string, name = 'fake-codex'): string {
  const path = join(dir, name)
  const script = `#!${process.execPath}
const mode = process.env.FAKE_ENGINE_MODE ?? 'idle'
if (mode === 'ignore-term') process.on('SIGTERM', () => process.stderr.write('fake engine: got SIGTERM\\n'))
for (const line of (process.env.FAKE_ENGINE_LINES ?? '').split('\\n')) if (line !== '') process.stderr.write(line + '\\n')
process.stderr.write('fake engine: up\\n')
if (mode === 'exit') {
  process.stderr.write('Error: fake failure\\n')
  process.exitCode = 3
} else setInterval(() => {}, 1 << 30)
`
  writeFileSync(path, script)
  chmodSync(path, 0o755)
  return path
}
