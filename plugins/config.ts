import fp from 'fastify-plugin'
import type { Config } from '../src/config/types.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** Decorates the app with its validated configuration. */
export default fp<{ config: Config }>(
  async (app, opts) => {
    app.decorate('config', opts.config)
  },
  { name: 'config', fastify: '5.x' },
)
