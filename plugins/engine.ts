import fp from 'fastify-plugin'
import { systemClock, type Clock } from '../src/clock.js'
import { EngineService, type EngineRunner, type EngineServiceOptions } from '../src/engine/service.js'
import { VERSION } from '../src/version.js'

declare module 'fastify' {
  interface FastifyInstance {
    engine: EngineService
  }
}

export interface EnginePluginOptions {
  /** An engine process other than the one the settings resolve and spawn (tests: a fake engine's socket). */
  readonly runner?: EngineRunner
  readonly clock?: Clock
  /** The control connection's keepalive clock and intervals (tests). */
  readonly keepAlive?: EngineServiceOptions['keepAlive']
  /** The restart delay's jitter source (tests). */
  readonly random?: () => number
}

/**
 * Decorates the app with the engine service. The engine starts once the app is ready, without
 * holding up the listener, and stops when the app closes (after the client drain).
 */
export default fp<EnginePluginOptions>(
  async (app, opts) => {
    const engine = new EngineService({
      settings: app.config.engine,
      gatewayHome: app.config.home,
      clientVersion: VERSION,
      accounts: app.accounts,
      serverRequestIds: app.serverRequestIds,
      log: app.log,
      clock: opts.clock ?? systemClock,
      ...(opts.runner ? { runner: opts.runner } : {}),
      ...(opts.keepAlive ? { keepAlive: opts.keepAlive } : {}),
      ...(opts.random ? { random: opts.random } : {}),
    })
    app.decorate('engine', engine)
    app.addHook('onReady', async () => engine.start())
    app.addHook('onClose', async () => engine.stop())
  },
  { name: 'engine', fastify: '5.x', decorators: { fastify: ['config', 'accounts', 'serverRequestIds'] } },
)
