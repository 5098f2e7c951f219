import fp from 'fastify-plugin'
import type { RemoteControlApi } from '../src/remote-control/methods.js'
import type { Clock } from '../src/clock.js'
import { createRemoteControlOrStandIn } from '../src/remote-control/unavailable.js'

declare module 'fastify' {
  interface FastifyInstance {
    remoteControl: RemoteControlApi
  }
}

export interface RemoteControlPluginOptions {
  readonly clock?: Clock
  readonly fetch?: typeof fetch
  readonly serverName?: string
}

/**
 * Decorates the app with remote control (or its stand-in, when it cannot be set up); status
 * changes become `remoteControl/status/changed` broadcasts.
 */
export default fp<RemoteControlPluginOptions>(
  async (app, opts) => {
    const rc = await createRemoteControlOrStandIn({
      home: app.config.home,
      chatgptBaseUrl: app.config.chatgptBaseUrl,
      accounts: app.accounts,
      sessions: app.sessionFactory,
      log: app.log,
      maxMessageBytes: app.config.maxPayloadBytes,
      maxConnections: app.config.remoteControlMaxConnections,
      onStatus: (view) => app.sessions.broadcast('remoteControl/status/changed', view),
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.serverName ? { serverName: opts.serverName } : {}),
    })
    app.decorate('remoteControl', rc.api)
    app.addHook('preClose', async () => rc.close())
  },
  { name: 'remote-control', fastify: '5.x', decorators: { fastify: ['config', 'accounts', 'sessions', 'sessionFactory'] } },
)
