import fp from 'fastify-plugin'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import type { MethodDefinition } from '../src/rpc/method.js'
import { initializeMethods } from '../src/rpc/methods/initialize.js'
import { accountMethods } from '../src/account/methods.js'
import { remoteControlMethods } from '../src/remote-control/methods.js'
import { SessionRegistry } from '../src/rpc/registry.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import type { SessionDeps } from '../src/rpc/session.js'
import { systemClock, type Clock } from '../src/clock.js'
import type { AppServices } from '../src/services.js'

declare module 'fastify' {
  interface FastifyInstance {
    dispatcher: Dispatcher<AppServices>
    sessions: SessionRegistry
    /** The process-wide bound on requests in flight (also read by `/readyz`). */
    inFlight: InFlightLimit
    /** What every session shares: dispatcher, limits, server-request ids, timers. */
    sessionDeps: SessionDeps
  }
}

export interface RpcPluginOptions {
  readonly services: AppServices
  /** Methods beyond the product's own (tests register probes here). */
  readonly extraMethods?: readonly MethodDefinition<AppServices, any>[]
  readonly timers?: Clock
  /** Check every result against its schema (tests). */
  readonly validateResults?: boolean
}

/** Decorates the app with the JSON-RPC dispatcher (every method, compiled once), the session registry and the limits. */
export default fp<RpcPluginOptions>(
  async (app, opts) => {
    const methods = [...initializeMethods<AppServices>(), ...accountMethods<AppServices>(), ...remoteControlMethods<AppServices>(), ...(opts.extraMethods ?? [])]
    const dispatcher = new Dispatcher<AppServices>(methods, opts.services, { validateResults: opts.validateResults ?? false })
    const limits = app.config.limits
    const inFlight = new InFlightLimit(limits.maxInFlight)
    app.decorate('dispatcher', dispatcher)
    app.decorate('sessions', new SessionRegistry())
    app.decorate('inFlight', inFlight)
    app.decorate('sessionDeps', {
      dispatcher,
      inFlight,
      serverRequestIds: new RequestIdAllocator(),
      clock: opts.timers ?? systemClock,
      ratePerSecond: limits.rpcRatePerSecond,
      burst: limits.rpcBurst,
    })
  },
  { name: 'rpc', fastify: '5.x', decorators: { fastify: ['config'] } },
)
