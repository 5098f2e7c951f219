import type { FastifyInstance, FastifyRequest } from 'fastify'
import type {} from '@fastify/websocket'
import type { WebSocket, RawData } from 'ws'
import type { Principal } from '../src/auth/principal.js'
import { Session } from '../src/rpc/session.js'
import { Heartbeat } from '../src/transport/heartbeat.js'
import { logUpgradeAdmitted, logUpgradeRejected } from '../src/auth/audit.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the upgrade hook for an admitted connection. */
    wsAdmission: { principal: Principal; connectionId: string } | null
  }
}

let nextConnectionId = 1

/**
 * The JSON-RPC WebSocket, on every path (the path is ignored, as in codex). Who may connect is
 * decided in `onRequest`, before any 101: a refused client gets a plain-text 401 and no socket.
 */
export default async function websocketRoutes(app: FastifyInstance): Promise<void> {
  app.decorateRequest('wsAdmission', null)
  const heartbeat = app.config.pingIntervalMs > 0 ? new Heartbeat(app.config.pingIntervalMs) : null
  app.addHook('onClose', async () => heartbeat?.stop())

  async function admit(request: FastifyRequest, reply: import('fastify').FastifyReply) {
    if (!request.ws) return
    const mode = app.wsAuth.mode
    const remote = request.ip
    if (app.lifecycle.draining) {
      logUpgradeRejected(request.log, mode, 'server draining', remote)
      return reply.code(503).type('text/plain; charset=utf-8').send('server shutting down')
    }
    const decision = await app.wsAuth.authorize({ url: request.url, headers: request.headers })
    if (!decision.ok) {
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
    onRequest: admit,
    // A plain GET on the socket path: same answer as codex.
    handler: async (_request, reply) =>
      reply.code(400).type('text/plain; charset=utf-8').send("Connection header did not include 'upgrade'"),
    wsHandler: (socket: WebSocket, request: FastifyRequest) => {
      const admission = request.wsAdmission
      if (admission === null) return socket.close(1011, 'not admitted')
      const log = app.log.child({ connectionId: admission.connectionId })
      const session = new Session(
        admission.connectionId,
        admission.principal,
        { send: (text) => socket.send(text), close: (code, reason) => socket.close(code, reason) },
        app.dispatcher,
        log,
      )
      app.sessions.add(session)
      heartbeat?.track(socket)
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
