import type { FastifyReply, FastifyRequest } from 'fastify'
import type {} from '@fastify/websocket'

/**
 * An `onRequest` hook for the plain-HTTP routes (probes, metrics): an upgrade aimed at them is
 * refused here, before any other hook and before @fastify/websocket would log its URL.
 */
export async function refuseUpgradeHere(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  if (!request.ws) return
  request.server.upgradeAudit.rejected(request.log, 'not a websocket path', request.ip)
  return reply.code(400).type('text/plain; charset=utf-8').send('websocket upgrades are served on other paths')
}
