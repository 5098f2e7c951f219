import type { FastifyInstance, FastifyRequest } from 'fastify'
import type {} from '@fastify/websocket'
import type { WebSocket, RawData } from 'ws'
import type { Principal } from '../src/auth/principal.js'
import { Session, type SessionTransport } from '../src/rpc/session.js'
import { lazyChild, withheldError, type AppLogger } from '../src/log/logger.js'
import { Heartbeat } from '../src/transport/heartbeat.js'
import { logUpgradeAdmitted, logUpgradeRejected } from '../src/auth/audit.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the upgrade hook for an admitted connection. */
    wsAdmission: { principal: Principal; connectionId: string } | null
  }
}

let nextConnectionId = 1

/** How long a slow consumer's close handshake may take before the socket is destroyed. */
const SLOW_CONSUMER_GRACE_MS = 5_000

/**
 * Sends through the socket, and closes a client that does not read (1008 `slow consumer`)
 * once more than `maxBytes` wait in its outbound buffer, so it never stalls anyone else.
 */
function boundedTransport(socket: WebSocket, maxBytes: number, log: AppLogger): SessionTransport {
  let closing = false
  return {
    send(text) {
      if (closing || socket.readyState !== socket.OPEN) return
      // Judged on what is still queued from earlier sends: one large reply to a client that
      // reads is fine; a client that let `maxBytes` pile up is not.
      if (socket.bufferedAmount > maxBytes) {
        closing = true
        log.warn({ bufferedBytes: socket.bufferedAmount }, 'closing slow consumer')
        socket.close(1008, 'slow consumer')
        setTimeout(() => socket.terminate(), SLOW_CONSUMER_GRACE_MS).unref()
        return
      }
      socket.send(text)
    },
    close(code, reason) {
      closing = true
      socket.close(code, reason)
    },
  }
}

/**
 * The JSON-RPC WebSocket, on every path (the path is ignored, as in codex). Who may connect is
 * decided in `onRequest`, before any 101: a refused client gets a plain-text 401 and no socket.
 */
export default async function websocketRoutes(app: FastifyInstance): Promise<void> {
  app.decorateRequest('wsAdmission', null)
  const maxOutbound = app.config.limits.maxOutboundBufferBytes
  const heartbeat = app.config.pingIntervalMs > 0 ? new Heartbeat(app.config.pingIntervalMs) : null
  app.addHook('onClose', async () => heartbeat?.stop())

  async function admit(request: FastifyRequest, reply: import('fastify').FastifyReply) {
    if (!request.ws) return
    const mode = app.wsAuth.mode
    const remote = request.ip
    if (app.upgradeThrottle.blocked(remote)) {
      logUpgradeRejected(request.log, mode, 'too many failed upgrades', remote)
      return reply.code(429).type('text/plain; charset=utf-8').send('too many failed websocket upgrades')
    }
    if (app.lifecycle.draining) {
      logUpgradeRejected(request.log, mode, 'server draining', remote)
      return reply.code(503).type('text/plain; charset=utf-8').send('server shutting down')
    }
    const decision = await app.wsAuth.authorize({ url: request.url, headers: request.headers })
    if (!decision.ok) {
      app.upgradeThrottle.recordFailure(remote)
      logUpgradeRejected(request.log, mode, decision.reason, remote)
      return reply.code(401).type('text/plain; charset=utf-8').send(decision.reason)
    }
    const connectionId = `c${nextConnectionId++}`
    logUpgradeAdmitted(request.log, mode, remote, connectionId, decision.principal, decision.degradedReason)
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
      const session = new Session(admission.connectionId, admission.principal, boundedTransport(socket, maxOutbound, log), log, app.sessionDeps)
      app.sessions.add(session)
      heartbeat?.track(socket)
      // @fastify/websocket's own error listener holds the Fastify request and reply for the
      // socket's whole life; this one holds neither (same handling: log, then terminate).
      socket.removeAllListeners('error')
      socket.on('error', (err: Error) => {
        log.debug({ error: withheldError(err) }, 'websocket error')
        socket.terminate()
      })
      socket.on('message', (data: RawData, isBinary: boolean) => {
        if (isBinary) session.handleBinary()
        else session.handleText(data.toString())
      })
      socket.on('close', (code: number) => {
        session.detach()
        app.sessions.remove(session)
        heartbeat?.untrack(socket)
        log.debug({ code }, 'websocket connection closed')
      })
    },
  })
}
