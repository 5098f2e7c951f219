import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { onRequestHookHandler } from 'fastify'
import type {} from '@fastify/websocket'
import { clientKey } from '../src/auth/client-key.js'
import { SharedUpgradeThrottle } from '../src/auth/shared-upgrade-throttle.js'
import { FailedUpgradeThrottle, type UpgradeThrottle } from '../src/auth/upgrade-throttle.js'
import { openSharedRedis } from '../src/redis/connection.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-address limit for health routes and upgrade attempts (an onRequest hook), or null when off. */
    httpRateLimit: onRequestHookHandler | null
    /** Per-client budget of failed upgrades. */
    upgradeThrottle: UpgradeThrottle
  }
}

/**
 * Wires the HTTP limits: @fastify/rate-limit keyed by client address for health routes and
 * upgrade attempts, and the tighter budget for failed upgrades. With `--redis-url` both live
 * in Redis, shared by every replica; while Redis is unreachable the HTTP limit lets requests
 * through (the WARN is the connection's) and the failed-upgrade budget is this process's own.
 */
export default fp<{ now?: () => number }>(
  async (app, opts) => {
    const { httpPerMinute, failedUpgradesPerMinute } = app.config.limits
    const now = opts.now ?? Date.now
    const redis = app.config.redisUrl === null ? null : await openSharedRedis(app.config.redisUrl, app.log)
    if (redis !== null) app.addHook('onClose', () => redis.close())
    await app.register(rateLimit, {
      global: false,
      ...(redis !== null ? { redis: redis.client, nameSpace: 'app-server:http:', skipOnError: true } : {}),
    })
    app.decorate(
      'httpRateLimit',
      httpPerMinute > 0
        ? (app.rateLimit({
            max: httpPerMinute,
            timeWindow: 60_000,
            // Loopback is one client and IPv6 counts per /64, as for failed upgrades.
            keyGenerator: (request) => clientKey(request.ip),
            // A refused upgrade is an upgrade decision: it gets its ws.auth line like any other.
            onExceeded: (request) => {
              app.metrics?.refused('http')
              if (request.ws) app.upgradeAudit.rejected(request.log, 'rate limited', request.ip)
            },
          }) as onRequestHookHandler)
        : null,
    )
    const throttle: UpgradeThrottle =
      redis !== null ? new SharedUpgradeThrottle(redis.client, failedUpgradesPerMinute, now, app.log) : new FailedUpgradeThrottle(failedUpgradesPerMinute, now)
    app.decorate('upgradeThrottle', throttle)
  },
  { name: 'rate-limit', fastify: '5.x', decorators: { fastify: ['config'] } },
)
