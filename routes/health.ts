import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '../src/util/typebox.js'
import { refuseUpgradeHere } from './refuse-upgrade.js'
import { readiness } from '../src/rpc/lifecycle.js'
import type { EngineStatus } from '../src/engine/supervisor.js'

const Healthz = Type.Object({
  status: Type.Literal('ok'),
  auth: Type.Object({
    mode: Type.Union([Type.Literal('queryToken'), Type.Literal('capabilityToken'), Type.Literal('signedBearerToken')]),
    enforced: Type.Boolean(),
  }),
  // State, version and, while it is down, why (fixed wording plus codes): never the binary's
  // path or its arguments.
  engine: Type.Object({
    state: Type.Union([Type.Literal('off'), Type.Literal('starting'), Type.Literal('running'), Type.Literal('restarting'), Type.Literal('unavailable')]),
    version: Type.Union([Type.String(), Type.Null()]),
    reason: Type.Optional(Type.String()),
  }),
})
const Ready = Type.Object({ status: Type.Literal('ready') })
const NotReady = Type.Object({ status: Type.Union([Type.Literal('draining'), Type.Literal('overloaded'), Type.Literal('engine unavailable')]) })

/** Token-free probes. They say how connections are guarded, never with what. */
export default async function healthRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.addHook('onRequest', refuseUpgradeHere)

  const limit = fastify.httpRateLimit ? { onRequest: fastify.httpRateLimit } : {}

  app.get('/healthz', { ...limit, schema: { response: { 200: Healthz } } }, async () => ({
    status: 'ok' as const,
    auth: { mode: app.wsAuth.mode, enforced: app.wsAuth.enforced },
    engine: engineHealth(app.engine.status),
  }))

  app.get('/readyz', { ...limit, schema: { response: { 200: Ready, 503: NotReady } } }, async (_request, reply) => {
    const status = readiness(app.lifecycle, app.inFlight, app.engine)
    return status === 'ready' ? { status } : reply.code(503).send({ status })
  })
}

/** The reason only while the engine is down or coming back (`off` says enough: it was asked for). */
function engineHealth({ state, version, reason }: EngineStatus): { state: EngineStatus['state']; version: string | null; reason?: string } {
  return state !== 'off' && reason !== null ? { state, version, reason } : { state, version }
}
