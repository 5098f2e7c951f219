import fp from 'fastify-plugin'
import { createAccountService } from '../src/account/create.js'
import type { Clock } from '../src/clock.js'
import type { RateLimitsReader } from '../src/account/methods.js'
import type { AccountService } from '../src/account/service.js'
import type { KeyringBackend } from '../src/account/stores/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    accounts: AccountService
    rateLimitsReader: RateLimitsReader
  }
}

export interface AccountPluginOptions {
  /** Tests inject an OS keyring stand-in. */
  readonly keyring?: KeyringBackend
  readonly fetch?: typeof fetch
  /** Runs the logins' polling and deadlines (tests drive it). */
  readonly clock?: Clock
}

/** Decorates the app with the account service; its events become JSON-RPC broadcasts, sent after the requester's result. */
export default fp<AccountPluginOptions>(
  async (app, opts) => {
    const { accounts, rateLimits } = await createAccountService(app.config, {
      log: app.log,
      ...(opts.keyring ? { keyring: opts.keyring } : {}),
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.clock ? { clock: opts.clock } : {}),
      onEvent(event) {
        if (event.type === 'loginCompleted') {
          app.sessions.broadcastAfterResults('account/login/completed', { loginId: event.loginId, success: event.success, error: event.error })
        } else {
          app.sessions.broadcastAfterResults('account/updated', { authMode: event.authMode, planType: event.planType })
        }
      },
    })
    app.decorate('accounts', accounts)
    app.decorate('rateLimitsReader', rateLimits)
  },
  { name: 'account', fastify: '5.x', decorators: { fastify: ['config', 'sessions'] } },
)
