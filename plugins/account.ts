import fp from 'fastify-plugin'
import { createAccountService } from '../src/account/create.js'
import type { RateLimitsReader } from '../src/account/methods.js'
import type { AccountService } from '../src/account/service.js'
import { StoreWatch } from '../src/account/store-watch.js'
import type { KeyringBackend } from '../src/account/stores/index.js'
import { systemClock, type Clock } from '../src/clock.js'

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
  /** Runs the logins' polling and deadlines and the store watch's periodic checks (tests drive it); default the system clock. */
  readonly clock?: Clock
  /** Tests of the 401 recovery's own re-read turn the store watch off (default on). */
  readonly watchStore?: boolean
}

/**
 * Decorates the app with the account service; its events become JSON-RPC broadcasts, sent
 * after the requester's result. The store is watched from the moment the app is ready, so a
 * CLI `login` or `logout` in the same home reaches the clients and the engine.
 */
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
    if (opts.watchStore !== false) {
      const watch = new StoreWatch({
        mode: app.config.accounts.credentialsStore,
        home: app.config.home,
        clock: opts.clock ?? systemClock,
        reload: () => accounts.reloadFromStore(),
        log: app.log,
      })
      app.addHook('onReady', () => watch.start())
      app.addHook('preClose', () => watch.close())
    }
  },
  { name: 'account', fastify: '5.x', decorators: { fastify: ['config', 'sessions'] } },
)
