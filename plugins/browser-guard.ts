import fp from 'fastify-plugin'
import type {} from '@fastify/websocket'
import { checkBrowserRequest } from '../src/auth/browser-guard.js'

/**
 * Shuts browsers and DNS rebinding out of every path, health routes included: a request with
 * a foreign `Origin`, or (on a loopback listener) a non-loopback `Host`, gets an empty 403.
 */
export default fp(
  async (app) => {
    const rules = { allowOrigins: app.config.allowOrigins, loopbackListener: app.config.listen.loopback }
    app.addHook('onRequest', async (request, reply) => {
      const verdict = checkBrowserRequest(request.headers, rules)
      if (verdict.ok) return
      if (request.ws) {
        app.upgradeAudit.rejected(request.log, verdict.reason, request.ip)
      } else {
        request.log.debug({ reason: verdict.reason }, 'browser request refused')
      }
      return reply.code(403).send()
    })
  },
  { name: 'browser-guard', fastify: '5.x', dependencies: ['ws-auth', '@fastify/websocket'] },
)
