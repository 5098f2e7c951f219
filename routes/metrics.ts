import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { refuseUpgradeHere } from './refuse-upgrade.js'

const PLAIN_TEXT = 'text/plain; charset=utf-8'

/**
 * `/metrics` (only under `--metrics`), in Prometheus text format. It asks for the credential
 * the WebSocket upgrade asks for, in the same order and under the same limits, so it is no
 * side door for guessing one:
 * 1. the per-address HTTP limit;
 * 2. a token from the failed-upgrade budget (429 when it is spent), given back on success;
 * 3. the auth policy's decision (401), then the `metrics:read` scope (403) — a JWT must grant
 *    it; a query or capability token holds every scope; a degraded connection does not.
 * The refusal bodies are fixed text; the decision is not an upgrade, so it writes no `ws.auth`
 * line and is not counted as one.
 */
export default async function metricsRoutes(app: FastifyInstance): Promise<void> {
  const metrics = app.metrics
  if (metrics === null) return

  async function authorize(request: FastifyRequest, reply: FastifyReply) {
    const reservation = await app.upgradeThrottle.reserve(request.ip)
    if (!reservation.ok) {
      metrics!.refused('failed_upgrades')
      reply.header('retry-after', String(reservation.retryAfterSeconds))
      return reply.code(429).type(PLAIN_TEXT).send('too many failed attempts')
    }
    const decision = await app.wsAuth.authorize({ url: request.url, headers: request.headers })
    if (!decision.ok) return reply.code(401).type(PLAIN_TEXT).send('unauthorized')
    if (decision.degradedReason !== null || !decision.principal.scopes.has('metrics:read')) {
      return reply.code(403).type(PLAIN_TEXT).send('the credential does not grant metrics:read')
    }
    app.upgradeThrottle.refund(reservation)
  }

  app.addHook('onRequest', refuseUpgradeHere)
  app.get('/metrics', { onRequest: app.httpRateLimit ? [app.httpRateLimit, authorize] : authorize }, async (_request, reply) => {
    const { contentType, text } = await metrics.scrape()
    return reply.type(contentType).send(text)
  })
}
