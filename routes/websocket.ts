import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type {} from '@fastify/websocket'
import type { WebSocket } from 'ws'
import type { Principal } from '../src/auth/principal.js'
import { lazyChild } from '../src/log/logger.js'
import { boundedTransport, Heartbeat, serveSocket } from '../src/rpc/websocket-transport.js'
import { checkHandshake } from '../src/auth/handshake-shape.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the upgrade hook for an admitted connection. */
    wsAdmission: { principal: Principal; connectionId: string } | null
  }
}

/**
 * The JSON-RPC WebSocket, on every path (the path is ignored, as in codex). Who may connect is
 * decided in `onRequest`, before any 101: a refused client gets a plain-text 401 and no socket;
 * a request that is no WebSocket handshake this server completes (src/auth/handshake-shape.ts)
 * gets a 400 before it is admitted, so the `ws.auth` line never calls it accepted.
 */
export default async function websocketRoutes(app: FastifyInstance): Promise<void> {
  app.decorateRequest('wsAdmission', null)
  const maxOutbound = app.config.limits.maxOutboundBufferBytes
  const heartbeat = app.config.pingIntervalMs > 0 ? new Heartbeat(app.config.pingIntervalMs) : null
  app.addHook('onClose', async () => heartbeat?.stop())
  const clock = app.sessionFactory.clock
  const slowConsumer = () => app.metrics?.slowConsumerClosed()

  async function admit(request: FastifyRequest, reply: FastifyReply) {
    if (!request.ws) return
    const remote = request.ip
    const reservation = await app.upgradeThrottle.reserve(remote)
    if (!reservation.ok) {
      app.metrics?.refused('failed_upgrades')
      app.upgradeAudit.rejected(request.log, 'too many failed upgrades', remote)
      // The headers describe the limit that fired, not the HTTP limit's (set before this hook).
      const wait = String(reservation.retryAfterSeconds)
      reply.headers({ 'retry-after': wait, 'x-ratelimit-limit': String(app.upgradeThrottle.budget), 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': wait })
      return reply.code(429).type('text/plain; charset=utf-8').send('too many failed websocket upgrades')
    }
    if (app.lifecycle.draining) {
      app.upgradeThrottle.refund(reservation)
      app.upgradeAudit.rejected(request.log, 'server draining', remote)
      return reply.code(503).type('text/plain; charset=utf-8').send('server shutting down')
    }
    if (app.websocketServer.clients.size >= app.connectionCap) {
      app.upgradeThrottle.refund(reservation)
      app.upgradeAudit.rejected(request.log, 'too many connections', remote)
      return reply.code(503).type('text/plain; charset=utf-8').send('too many connections')
    }
    const decision = await app.wsAuth.authorize({ url: request.url, headers: request.headers })
    if (!decision.ok) {
      app.upgradeAudit.rejected(request.log, decision.reason, remote)
      return reply.code(401).type('text/plain; charset=utf-8').send(decision.reason)
    }
    app.upgradeThrottle.refund(reservation)
    const handshake = checkHandshake(request.raw)
    if (!handshake.ok) {
      app.upgradeAudit.rejected(request.log, handshake.reason, remote)
      return reply.code(400).headers(handshake.headers).type('text/plain; charset=utf-8').send(handshake.reason)
    }
    const connectionId = app.sessionFactory.nextId('local')
    app.upgradeAudit.admitted(request.log, remote, connectionId, decision.principal, decision.degradedReason)
    request.wsAdmission = { principal: decision.principal, connectionId }
  }

  app.route({
    method: 'GET',
    url: '/*',
    // The per-address HTTP limit runs first, then the auth decision.
    onRequest: app.httpRateLimit ? [app.httpRateLimit, admit] : admit,
    // A plain GET on the socket path: same answer as codex.
    handler: async (_request, reply) =>
      reply.code(400).type('text/plain; charset=utf-8').send("Connection header did not include 'upgrade'"),
    wsHandler: (socket: WebSocket, request: FastifyRequest) => {
      const admission = request.wsAdmission
      if (admission === null) return socket.close(1011, 'not admitted')
      const log = lazyChild(app.log, { connectionId: admission.connectionId })
      const session = app.sessionFactory.open(admission.connectionId, admission.principal, boundedTransport(socket, maxOutbound, log, clock, slowConsumer), log)
      serveSocket(socket, session, log, heartbeat, clock, app.turnBudget, () => app.sessionFactory.ended(session))
    },
  })
}
