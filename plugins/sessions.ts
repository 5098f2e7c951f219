import fp from 'fastify-plugin'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { ReadGovernor } from '../src/rpc/read-governor.js'
import { SessionRegistry } from '../src/rpc/registry.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { SessionFactory } from '../src/rpc/session-factory.js'
import { DEFAULT_TURN_BUDGET_MS, TurnBudget } from '../src/rpc/turn-budget.js'
import type { InboundFrame } from '../src/rpc/websocket-transport.js'
import { systemClock, type Clock } from '../src/clock.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every live session, local or remote: broadcasts and shutdown go through it. */
    sessions: SessionRegistry
    /** The app's bound on requests in flight (also read by `/readyz`). */
    inFlight: InFlightLimit
    /** Opens every session; complete once the dispatcher plugin has registered. */
    sessionFactory: SessionFactory
    /** Ids of every server→client request, the gateway's own and the engine's alike. */
    serverRequestIds: RequestIdAllocator
    /** How long client frames may run per turn of the event loop (every local socket's frames go through it). */
    turnBudget: TurnBudget<InboundFrame>
  }
}

export interface SessionsPluginOptions {
  /** Timers for server requests and rate limits (tests drive time). */
  readonly timers?: Clock
  /** Tests: the turn budget in ms (0: every frame after a turn's first waits for the next turn). */
  readonly turnBudgetMs?: number
}

/**
 * Registered first among the services: what every session shares (registry, in-flight bound,
 * server-request ids, timers, rate limit) exists before the services that broadcast or open
 * sessions. The dispatcher, built last from those services, completes the session factory
 * (see `SessionFactory` for why it comes last).
 */
export default fp<SessionsPluginOptions>(
  async (app, opts) => {
    const limits = app.config.limits
    const registry = new SessionRegistry()
    const inFlight = new InFlightLimit(limits.maxInFlight)
    const serverRequestIds = new RequestIdAllocator()
    app.decorate('sessions', registry)
    // Heavy senders take turns when the process falls behind (real time: lag is real).
    const governor = new ReadGovernor(() => registry, systemClock)
    app.addHook('onReady', async () => governor.start())
    app.addHook('preClose', async () => governor.stop())
    // Real time too: a turn is as long as it really runs.
    app.decorate('turnBudget', new TurnBudget<InboundFrame>(systemClock, opts.turnBudgetMs ?? DEFAULT_TURN_BUDGET_MS))
    app.decorate('inFlight', inFlight)
    app.decorate('serverRequestIds', serverRequestIds)
    app.decorate(
      'sessionFactory',
      new SessionFactory(
        {
          inFlight,
          maxInFlightPerConnection: limits.maxInFlightPerConnection,
          serverRequestIds,
          clock: opts.timers ?? systemClock,
          ratePerSecond: limits.rpcRatePerSecond,
          burst: limits.rpcBurst,
          lifecycle: app.lifecycle,
          observer: app.metrics,
        },
        registry,
      ),
    )
  },
  { name: 'sessions', fastify: '5.x', decorators: { fastify: ['config', 'lifecycle', 'metrics'] } },
)
