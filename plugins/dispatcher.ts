import fp from 'fastify-plugin'
import { accountMethods } from '../src/account/methods.js'
import { remoteControlMethods } from '../src/remote-control/methods.js'
import { sessionEngine } from '../src/engine/forward.js'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import type { MethodDefinition } from '../src/rpc/method.js'
import { initializeMethods, type ServerInfo } from '../src/rpc/methods/initialize.js'
import type { AppServices } from '../src/services.js'

export interface DispatcherPluginOptions {
  readonly serverInfo: ServerInfo
  /** Methods beyond the product's own (tests register probes here). */
  readonly extraMethods?: readonly MethodDefinition<AppServices, any>[]
  /** Check every result against its schema (tests). */
  readonly validateResults?: boolean
}

/**
 * Builds the JSON-RPC dispatcher (every method, compiled once) from the services registered
 * before it, and hands it to the session factory.
 */
export default fp<DispatcherPluginOptions>(
  async (app, opts) => {
    const services: AppServices = {
      serverInfo: opts.serverInfo,
      accounts: app.accounts,
      rateLimits: app.rateLimitsReader,
      remoteControl: app.remoteControl,
      engine: sessionEngine(app.engine),
      engineRequiresOpenaiAuth: () => app.engine.requiresOpenaiAuth,
    }
    const methods = [...initializeMethods<AppServices>(), ...accountMethods<AppServices>(), ...remoteControlMethods<AppServices>(), ...(opts.extraMethods ?? [])]
    app.sessionFactory.useDispatcher(new Dispatcher<AppServices>(methods, services, { validateResults: opts.validateResults ?? false }))
  },
  { name: 'dispatcher', fastify: '5.x', decorators: { fastify: ['sessionFactory', 'accounts', 'rateLimitsReader', 'engine', 'remoteControl'] } },
)
