/**
 * Starts the real app on 127.0.0.1:0 with all logs captured at debug level, and gives tests
 * the URLs to talk to it over real sockets.
 */
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp, drainAndClose, type BuildOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/types.js'
import { createLogger } from '../../src/log/logger.js'
import { record, registerCanary } from './canary.js'
import { tempDir } from './temp-dir.js'

export interface LogLine {
  level: number
  msg?: string
  [key: string]: unknown
}

/** Collects every log line the app writes; each line is also recorded for the canary check. */
export class LogCapture extends Writable {
  readonly lines: LogLine[] = []
  readonly raw: string[] = []

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    const text = chunk.toString('utf8')
    record(text)
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue
      this.raw.push(line)
      try {
        this.lines.push(JSON.parse(line) as LogLine)
      } catch {
        this.lines.push({ level: 0, msg: line })
      }
    }
    done()
  }

  /** Lines whose `event` is `ws.auth`. */
  authEvents(): LogLine[] {
    return this.lines.filter((l) => l.event === 'ws.auth')
  }

  text(): string {
    return this.raw.join('\n')
  }
}

export interface TestServer {
  readonly app: FastifyInstance
  readonly config: Config
  readonly logs: LogCapture
  readonly port: number
  /** `http://127.0.0.1:PORT` */
  readonly httpBase: string
  /** `ws://127.0.0.1:PORT/` */
  readonly wsBase: string
  /** The generated query token (query mode), registered as a canary. */
  readonly token: string | null
  /** The full connection URL as the banner would print it. */
  readonly wsUrl: string
  close(): Promise<void>
  drainAndClose(): Promise<void>
}

export interface StartOptions {
  /** Extra command-line flags; `--listen ws://127.0.0.1:0` is added unless given. */
  readonly argv?: readonly string[]
  readonly env?: Record<string, string>
  readonly now?: () => number
  readonly extraMethods?: BuildOptions['extraMethods']
  readonly timers?: BuildOptions['timers']
  readonly account?: BuildOptions['account']
  readonly remoteControl?: BuildOptions['remoteControl']
  /** An engine already listening (a fake engine's socket); without it and without `--engine`, the engine is off. */
  readonly engine?: BuildOptions['engine']
  readonly turnBudgetMs?: BuildOptions['turnBudgetMs']
}

export async function startServer(options: StartOptions = {}): Promise<TestServer> {
  const argv = [...(options.argv ?? [])]
  if (!argv.some((a) => a === '--listen' || a.startsWith('--listen='))) argv.push('--listen', 'ws://127.0.0.1:0')
  // Never the developer's real home, nor the real login callback port.
  if (!argv.some((a) => a.startsWith('--home'))) argv.push('--home', tempDir('home'))
  if (!argv.some((a) => a.startsWith('--login-callback-port'))) argv.push('--login-callback-port', '0')
  // No test spawns the installed engine (nor reads the developer's ~/.codex) unless it asks.
  if (options.engine === undefined && !argv.some((a) => a.startsWith('--engine'))) argv.push('--engine', 'off')
  // Many tests make dozens of failed upgrades on purpose; the throttle has its own tests.
  if (!argv.some((a) => a.startsWith('--failed-upgrade-limit'))) argv.push('--failed-upgrade-limit', '0')
  const config = loadConfig(argv, { env: options.env ?? {}, dotenvPath: null })
  const logs = new LogCapture()
  const logger = createLogger('debug', logs)
  const app = await buildApp(config, {
    logger,
    // Every result the suite sees is checked against its method's schema.
    validateResults: true,
    ...(options.now ? { now: options.now } : {}),
    ...(options.extraMethods ? { extraMethods: options.extraMethods } : {}),
    ...(options.timers ? { timers: options.timers } : {}),
    ...(options.account ? { account: options.account } : {}),
    ...(options.remoteControl ? { remoteControl: options.remoteControl } : {}),
    ...(options.engine ? { engine: options.engine } : {}),
    ...(options.turnBudgetMs !== undefined ? { turnBudgetMs: options.turnBudgetMs } : {}),
  })
  await app.listen({ host: config.listen.host, port: config.listen.port })
  const port = (app.server.address() as AddressInfo).port
  const token = app.wsAuth.queryToken
  if (token !== null) registerCanary(token)
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const wsBase = `ws://${host}:${port}/`
  let closed = false
  return {
    app,
    config,
    logs,
    port,
    httpBase: `http://${host}:${port}`,
    wsBase,
    token,
    wsUrl: token === null ? wsBase : `${wsBase}?token=${token}`,
    async close() {
      if (closed) return
      closed = true
      await app.close()
    },
    async drainAndClose() {
      if (closed) return
      closed = true
      await drainAndClose(app)
    },
  }
}
