import fp from 'fastify-plugin'
import type { Socket } from 'node:net'
import { connectionCap, PROBE_HEADROOM, SocketGuard } from '../src/auth/socket-guard.js'
import { openFileLimit } from '../src/util/fd-limit.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Pending sockets per client and the socket cap (see src/auth/socket-guard.ts). */
    socketGuard: SocketGuard<Socket>
    /** WebSocket connections allowed at once; upgrades past it get 503. */
    connectionCap: number
  }
}

/**
 * Wires the pre-auth limits to the HTTP server: every accepted socket is pending until its
 * request (plain or upgrade) arrives. The header timeout itself is set on the server by the app.
 */
export default fp(
  async (app) => {
    const { maxConnections, maxPendingPerClient } = app.config.limits
    const cap = connectionCap(maxConnections, openFileLimit(), app.config.engine.mode === 'off' ? 1 : 2)
    const guard = new SocketGuard<Socket>({ maxSockets: cap + PROBE_HEADROOM, maxPendingPerClient })
    app.decorate('socketGuard', guard)
    app.decorate('connectionCap', cap)
    app.server.on('connection', (socket: Socket) => guard.accepted(socket, socket.remoteAddress))
    app.server.on('request', (request: { socket: Socket }) => guard.requested(request.socket))
    app.server.on('upgrade', (_request: unknown, socket: Socket) => guard.requested(socket))
  },
  { name: 'socket-guard', fastify: '5.x', dependencies: ['config'] },
)
