import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { onRequestHookHandler } from 'fastify'
import type {} from '@fastify/websocket'
import { logUpgradeRejected } from '../src/auth/audit.js'
import { clientKey } from '../src/auth/client-key.js'
import { FailedUpgradeThrottle } from '../src/auth/upgrade-throttle.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-address limit for health routes and upgrade attempts (an onRequest hook), or null when off. */
    httpRateLimit: onRequestHookHandler | null
    /** Per-client budget of failed upgrades. */
    upgradeThrottle: FailedUpgradeThrottle
  }
}

/**
 * Wires the HTTP limits: @fastify/rate-limit keyed by remote address for health routes and
 * upgrade attempts, and the tighter budget for failed upgrades.
 */
export default fp<{ now?: () => number }>(
  async (app, opts) => {
    const { httpPerMinute, failedUpgradesPerMinute } = app.config.limits
    await app.register(rateLimit, { global: false })
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
              if (request.ws) logUpgradeRejected(request.log, app.config.auth.mode, 'rate limited', request.ip)
            },
          }) as onRequestHookHandler)
        : null,
    )
    app.decorate('upgradeThrottle', new FailedUpgradeThrottle(failedUpgradesPerMinute, opts.now ?? Date.now))
  },
  { name: 'rate-limit', fastify: '5.x', decorators: { fastify: ['config'] } },
)
