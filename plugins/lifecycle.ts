import fp from 'fastify-plugin'
import { Lifecycle } from '../src/rpc/lifecycle.js'

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

/** Decorates the app with its drain state (read by `/readyz` and the upgrade hook). */
export default fp(
  async (app) => {
    app.decorate('lifecycle', new Lifecycle())
  },
  { name: 'lifecycle', fastify: '5.x' },
)
