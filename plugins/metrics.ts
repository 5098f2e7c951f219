import fp from 'fastify-plugin'
import { classifiedMethods, GATEWAY_OWNED_METHODS } from '../src/engine/scopes.js'
import type { GatewayMetrics } from '../src/metrics/gateway-metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's metrics under `--metrics`, else null (nothing is counted). */
    metrics: GatewayMetrics | null
  }
}

/**
 * Decorates the app with its metrics (`--metrics`), registered before the plugins that count
 * into them. The gauges read the services (engine, sessions, remote control) only when
 * scraped, so those may be registered later. HTTP answers are timed by route pattern.
 * prom-client (and the ~90 modules it loads) is imported only when metrics are on.
 */
export default fp(
  async (app) => {
    if (!app.config.metrics) {
      app.decorate('metrics', null)
      return
    }
    const { GatewayMetrics } = await import('../src/metrics/gateway-metrics.js')
    // The method→scope table (engine methods and the gateway's own): any other name is `other`.
    const known = new Set([...classifiedMethods(), ...GATEWAY_OWNED_METHODS])
    const metrics = new GatewayMetrics(
      {
        websocketConnections: () => app.websocketServer.clients.size,
        sessions: () => app.sessions.size,
        engineState: () => app.engine.status.state,
        engineRestarts: () => app.engine.restarts,
        remoteControlStatus: () => app.remoteControl.status().status,
      },
      (method) => known.has(method),
    )
    app.decorate('metrics', metrics)
    app.addHook('onResponse', async (request, reply) => {
      // The route's pattern (`/healthz`, `/*`), never the URL: a URL may carry the token.
      metrics.httpAnswered(request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime)
    })
  },
  { name: 'metrics', fastify: '5.x', decorators: { fastify: ['config'] } },
)
