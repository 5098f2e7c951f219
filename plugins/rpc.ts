import fp from 'fastify-plugin'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { initializeMethods } from '../src/rpc/methods/initialize.js'
import { SessionRegistry } from '../src/rpc/registry.js'
import type { AppServices } from '../src/services.js'

declare module 'fastify' {
  interface FastifyInstance {
    dispatcher: Dispatcher<AppServices>
    sessions: SessionRegistry
  }
}

export interface RpcPluginOptions {
  readonly services: AppServices
}

/** Decorates the app with the JSON-RPC dispatcher (every method, compiled once) and the session registry. */
export default fp<RpcPluginOptions>(
  async (app, opts) => {
    const methods = [...initializeMethods<AppServices>()]
    app.decorate('dispatcher', new Dispatcher<AppServices>(methods, opts.services))
    app.decorate('sessions', new SessionRegistry())
  },
  { name: 'rpc', fastify: '5.x' },
)
