/**
 * The one Redis connection an app shares between its limits (the HTTP rate limit's store and
 * the failed-upgrade budget). Its policy is to never make a client wait on Redis:
 * 1. commands are not queued while the connection is down (`enableOfflineQueue: false`): they
 *    fail at once and the caller uses its fallback;
 * 2. connecting and every command have a bound (`CONNECT_TIMEOUT_MS`, `COMMAND_TIMEOUT_MS`),
 *    so a Redis that accepts and then hangs costs an upgrade at most that long;
 * 3. it reconnects on its own, forever, with a capped delay;
 * 4. only changes of state are logged (one WARN when it goes, one INFO when it is back), with
 *    the error's code and never the URL (its user-info may hold the password).
 *
 * ioredis is loaded here, on first use, not when the server starts: most servers run without
 * Redis, and its ~60 modules were a tenth of every start-up's module loading.
 */
import type { Redis } from 'ioredis'
import type { AppLogger } from '../log/logger.js'
import { printableErrorCode } from '../util/error-code.js'

export const CONNECT_TIMEOUT_MS = 1_000
export const COMMAND_TIMEOUT_MS = 250
const MAX_RECONNECT_DELAY_MS = 2_000

export interface SharedRedis {
  readonly client: Redis
  /** Connected and ready for commands. */
  readonly ready: boolean
  close(): Promise<void>
}

/** Connects (waiting at most `CONNECT_TIMEOUT_MS`); an unreachable Redis is a WARN, not a refusal to start. */
export async function openSharedRedis(url: string, log: AppLogger): Promise<SharedRedis> {
  const { Redis } = await import('ioredis')
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, MAX_RECONNECT_DELAY_MS),
  })
  let up = false
  let downLogged = false
  client.on('ready', () => {
    up = true
    if (downLogged) log.info({ event: 'redis' }, 'redis reachable again: limits are shared with the other replicas')
    downLogged = false
  })
  const down = (err?: unknown) => {
    up = false
    if (downLogged) return
    downLogged = true
    log.warn(
      { event: 'redis', code: printableErrorCode(err) ?? 'closed' },
      'redis unreachable: the HTTP rate limit is off and the failed-upgrade budget is per process until it is back',
    )
  }
  client.on('error', down)
  client.on('close', () => down())
  try {
    await client.connect()
  } catch (err) {
    down(err)
  }
  return {
    client,
    get ready() {
      return up
    },
    async close() {
      client.removeAllListeners('close')
      client.disconnect(false)
    },
  }
}
