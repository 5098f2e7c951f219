import fp from 'fastify-plugin'
import type {} from '@fastify/websocket'
import { checkRequestShape } from '../src/auth/request-shape.js'

const BODY = { 400: 'bad request', 431: 'too many header fields' } as const

/**
 * Refuses ambiguous requests (too many header fields: 431; duplicate Host or Authorization,
 * asterisk-form, fragment, or an absolute-form target naming another authority: 400), on every
 * path, before the browser guard and the auth decision read them.
 */
export default fp(
  async (app) => {
    app.addHook('onRequest', async (request, reply) => {
      const verdict = checkRequestShape(request.raw.rawHeaders, request.raw.url ?? '', request.headers.host)
      if (verdict.ok) return
      if (request.ws) app.upgradeAudit.rejected(request.log, verdict.reason, request.ip)
      else request.log.debug({ reason: verdict.reason }, 'ambiguous request refused')
      reply.header('connection', 'close')
      return reply.code(verdict.status).type('text/plain; charset=utf-8').send(BODY[verdict.status])
    })
  },
  { name: 'request-shape', fastify: '5.x', dependencies: ['ws-auth', '@fastify/websocket'] },
)
