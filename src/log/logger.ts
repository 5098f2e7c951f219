import { pino, stdSerializers, type DestinationStream, type LogFn, type Logger } from 'pino'
import type { LogLevel } from '../config/types.js'
import { redactUrl, scrubText } from './scrub.js'
import { REDACTED } from '../util/redaction-markers.js'

/** The logging surface the framework-free code uses (pino's, and so Fastify's, loggers fit). */
export interface AppLogger {
  trace: LogFn
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
  fatal: LogFn
  child(bindings: Record<string, unknown>): AppLogger
}

interface RequestLike {
  method?: string
  url?: string
  ip?: string
  host?: string
  socket?: { remotePort?: number }
}

/**
 * The request serializer Fastify would use, minus every secret: the query string keeps its
 * keys but loses its values, and no header (so no `authorization`) is written.
 */
function serializeRequest(req: RequestLike): Record<string, unknown> {
  return {
    method: req.method,
    url: redactUrl(req.url),
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  }
}

/**
 * pino's error serializer copies every enumerable property: strings are scrubbed, and raw
 * bytes are dropped (Node's client errors carry `rawPacket`, the request as received, token
 * and `Authorization` header included).
 */
function serializeError(err: Error): Record<string, unknown> {
  // Anything thrown can reach here; a thrown string or number may itself be a secret.
  if (err === null || typeof err !== 'object') return { type: typeof err }
  const out = stdSerializers.err(err) as unknown as Record<string, unknown>
  for (const key of Object.keys(out)) {
    const value = out[key]
    if (typeof value === 'string') out[key] = scrubText(value)
    else if (value instanceof Uint8Array || isSerializedBuffer(value)) delete out[key]
  }
  return out
}

function isSerializedBuffer(value: unknown): boolean {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data)
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      serializers: { req: serializeRequest, err: serializeError },
      // Belt and braces: should a header object ever be logged, its credentials are censored.
      redact: {
        paths: ['authorization', '*.authorization', 'headers.authorization', '*.headers.authorization', 'req.headers', 'token', '*.token'],
        censor: REDACTED,
      },
      hooks: {
        logMethod(args, method) {
          // `log.error(err)` would copy the unscrubbed `err.message` into `msg`: pass it as
          // `{ err }` (through the serializer) with a scrubbed message instead.
          const first = args[0]
          if (first instanceof Error) {
            ;(args as unknown[])[0] = { err: first }
            if (typeof args[1] !== 'string') (args as unknown[]).splice(1, 0, first.message)
          }
          for (let i = 0; i < args.length; i++) {
            const a = args[i]
            if (typeof a === 'string') args[i] = scrubText(a)
          }
          return method.apply(this, args)
        },
      },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  )
}

/**
 * For failures whose message may carry data we must not write (a handler's error can quote a
 * token, a path, a response body): the error's type and its stack frames, without the message.
 */
export function withheldError(err: unknown): { type: string; frames?: string } {
  if (!(err instanceof Error)) return { type: typeof err }
  const frames = (err.stack ?? '')
    .split('\n')
    .filter((line) => /^\s+at /.test(line))
    .map((line) => scrubText(line.trim()))
    .join('\n')
  return { type: err.name, frames }
}

/**
 * A child logger made only when first used. Most connections never log after their upgrade
 * line, and a pino child per idle connection costs more memory than the rest of its session.
 * Prototype methods only, so an instance is three fields.
 */
export class LazyChildLogger {
  private made: AppLogger | null = null

  constructor(
    private readonly parent: AppLogger,
    private readonly bindings: Record<string, unknown>,
  ) {}

  private real(): AppLogger {
    return (this.made ??= this.parent.child(this.bindings))
  }

  // The casts are needed (pino's overloaded log functions take no spread of unknowns), though
  // the lint's overload-blind check calls them unnecessary.
  /* eslint-disable @typescript-eslint/no-unnecessary-type-assertion */
  trace(...args: unknown[]): void {
    ;(this.real().trace as (...a: unknown[]) => void)(...args)
  }
  debug(...args: unknown[]): void {
    ;(this.real().debug as (...a: unknown[]) => void)(...args)
  }
  info(...args: unknown[]): void {
    ;(this.real().info as (...a: unknown[]) => void)(...args)
  }
  warn(...args: unknown[]): void {
    ;(this.real().warn as (...a: unknown[]) => void)(...args)
  }
  error(...args: unknown[]): void {
    ;(this.real().error as (...a: unknown[]) => void)(...args)
  }
  fatal(...args: unknown[]): void {
    ;(this.real().fatal as (...a: unknown[]) => void)(...args)
  }
  /* eslint-enable @typescript-eslint/no-unnecessary-type-assertion */
  child(bindings: Record<string, unknown>): AppLogger {
    return this.real().child(bindings)
  }
}

export function lazyChild(parent: AppLogger, bindings: Record<string, unknown>): AppLogger {
  return new LazyChildLogger(parent, bindings)
}
