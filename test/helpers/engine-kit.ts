/**
 * What the engine tests share: a log capture that can be awaited, timers the test drives,
 * an engine runner for an engine already listening, and a stand-in engine binary (a small node script) for the paths the real engine cannot be
 * made to take on demand (ignoring SIGTERM, never listening).
 */
import { chmodSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import type { EngineRunner } from '../../src/engine/service.js'
import type { EngineExit, EngineStatus } from '../../src/engine/supervisor.js'
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
 * - `exit`: prints `Error: fake failure` and exits with code 3;
 * - `listen-shared`: listens as codex does — its real socket in a directory of its own, linked
 *   from the `--listen unix://PATH` it was given — but with the directory and socket opened to
 *   everyone (0755, 0666), and answers `initialize`.
 * Every mode first prints `fake engine: up` once its signal handlers are in place.
 */
export function writeFakeEngine(dir: string, name = 'fake-codex'): string {
  const path = join(dir, name)
  const wsModule = createRequire(import.meta.url).resolve('ws')
  const script = `#!${process.execPath}
const mode = process.env.FAKE_ENGINE_MODE ?? 'idle'
if (mode === 'listen-shared') {
  const fs = require('node:fs'), pathMod = require('node:path'), http = require('node:http')
  const { WebSocketServer } = require(${JSON.stringify(wsModule)})
  const target = process.argv[process.argv.indexOf('--listen') + 1].slice('unix://'.length)
  const shared = fs.mkdtempSync(pathMod.join(require('node:os').tmpdir(), 'fake-engine-shared-'))
  fs.chmodSync(shared, 0o755)
  const real = pathMod.join(shared, 'engine.sock')
  const server = http.createServer()
  new WebSocketServer({ server }).on('connection', (ws) => ws.on('message', (data) => {
    const msg = JSON.parse(String(data))
    if (msg.method === 'initialize') ws.send(JSON.stringify({ id: msg.id, result: { userAgent: 'fake/0.169.0', codexHome: '/x', platformFamily: 'unix', platformOs: 'linux' } }))
  }))
  server.listen(real, () => {
    fs.chmodSync(real, 0o666)
    fs.symlinkSync(real, target)
  })
  process.on('exit', () => fs.rmSync(shared, { recursive: true, force: true }))
  process.on('SIGTERM', () => process.exit(0))
}
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

/**
 * An engine process as the gateway's `EngineService` sees it, for an engine that is already
 * listening (a `FakeEngine`): `start()` makes it `running` at once and announces readiness
 * (again after an exit: a restart); nothing is spawned. `exit()` plays an unexpected exit,
 * `kill()` a SIGKILL.
 */
export class AttachedEngine implements EngineRunner {
  private state: EngineStatus = { state: 'off', version: '0.169.0', reason: null }
  private readonly ready = new Set<(socketPath: string) => void>()
  private readonly exits = new Set<(exit: EngineExit) => void>()

  constructor(readonly socketPath: string) {}

  get status(): EngineStatus {
    return this.state
  }

  start(): Promise<EngineStatus> {
    this.state = { state: 'running', version: '0.169.0', reason: null }
    for (const l of this.ready) l(this.socketPath)
    return Promise.resolve(this.state)
  }

  async stop(): Promise<void> {
    if (this.state.state !== 'running') return
    this.state = { state: 'off', version: '0.169.0', reason: null }
    for (const l of this.exits) l({ code: 0, signal: null, expected: true })
  }

  /** The engine went away unexpectedly. */
  exit(): void {
    this.state = { state: 'unavailable', version: '0.169.0', reason: 'engine exited (code 1)' }
    for (const l of this.exits) l({ code: 1, signal: null, expected: false })
  }

  /** Counted, and played as the SIGKILL's unexpected exit. */
  kills = 0
  kill(): void {
    this.kills += 1
    this.state = { state: 'unavailable', version: '0.169.0', reason: 'engine exited (signal SIGKILL)' }
    for (const l of this.exits) l({ code: null, signal: 'SIGKILL', expected: false })
  }

  onReady(listener: (socketPath: string) => void): () => void {
    this.ready.add(listener)
    return () => this.ready.delete(listener)
  }

  onExit(listener: (exit: EngineExit) => void): () => void {
    this.exits.add(listener)
    return () => this.exits.delete(listener)
  }
}
