import fp from 'fastify-plugin'
import { RpcError, INTERNAL_ERROR } from '../src/rpc/errors.js'
import type { RemoteControlApi } from '../src/remote-control/methods.js'
import { createRemoteControl } from '../src/remote-control/create.js'
import type { Clock } from '../src/clock.js'
import { withheldError } from '../src/log/logger.js'

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
 * Decorates the app with remote control; status changes become `remoteControl/status/changed`
 * broadcasts. When it cannot be built (a base URL off the allow-list, an unreadable
 * database), the server still starts and `remoteControl/enable` says why.
 */
export default fp<RemoteControlPluginOptions>(
  async (app, opts) => {
    try {
      const rc = await createRemoteControl({
        home: app.config.home,
        chatgptBaseUrl: app.config.chatgptBaseUrl,
        accounts: app.accounts,
        sessions: app.sessions,
        sessionDeps: app.sessionDeps,
        log: app.log,
        maxMessageBytes: app.config.maxPayloadBytes,
        onStatus: (view) => app.sessions.broadcast('remoteControl/status/changed', view),
        ...(opts.clock ? { clock: opts.clock } : {}),
        ...(opts.fetch ? { fetch: opts.fetch } : {}),
        ...(opts.serverName ? { serverName: opts.serverName } : {}),
      })
      app.decorate('remoteControl', rc.controller)
      app.addHook('preClose', async () => rc.close())
    } catch (err) {
      const reason = err instanceof Error ? err.message : 'remote control is unavailable'
      app.log.warn({ error: withheldError(err) }, 'remote control unavailable')
      const status = { status: 'disabled' as const, serverName: '', installationId: '', environmentId: null }
      app.decorate('remoteControl', {
        enable: () => Promise.reject(new RpcError(INTERNAL_ERROR, reason)),
        disable: async () => status,
        status: () => status,
      })
    }
  },
  { name: 'remote-control', fastify: '5.x', decorators: { fastify: ['config', 'accounts', 'sessions', 'sessionDeps'] } },
)
