import fp from 'fastify-plugin'
import { BackendClient } from '../src/account/backend-client.js'
import { BrowserLogin } from '../src/account/browser-login.js'
import { readAccessTokenClaims } from '../src/account/jwt-claims.js'
import type { RateLimitsReader } from '../src/account/methods.js'
import { OAuthClient } from '../src/account/oauth-client.js'
import { AccountService } from '../src/account/service.js'
import { createStore, withFileLock, type KeyringBackend } from '../src/account/stores/index.js'
import { mapUsage } from '../src/account/usage.js'
import { VERSION } from '../src/version.js'

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
}

/**
 * Builds the account service from the config (store, OAuth issuer, usage backend, login
 * rules) and turns its events into `account/login/completed` and `account/updated`
 * broadcasts.
 */
export default fp<AccountPluginOptions>(
  async (app, opts) => {
    const { config } = app
    const settings = config.accounts
    const store = createStore(settings.credentialsStore, config.home, {
      ...(opts.keyring ? { keyring: opts.keyring } : {}),
      log: app.log,
    })
    const oauth = new OAuthClient({ issuer: config.authIssuer, clientId: settings.loginClientId, ...(opts.fetch ? { fetch: opts.fetch } : {}) })
    const backend = new BackendClient({ baseUrl: config.chatgptBaseUrl, userAgent: `app-server/${VERSION}`, ...(opts.fetch ? { fetch: opts.fetch } : {}) })
    const usesFile = settings.credentialsStore === 'file' || settings.credentialsStore === 'auto'

    const accounts = new AccountService({
      store,
      rules: { forcedLoginMethod: settings.forcedLoginMethod, forcedWorkspaceIds: settings.forcedWorkspaceIds },
      readClaims: readAccessTokenClaims,
      log: app.log,
      authority: {
        refresh: (refreshToken) => oauth.refresh(refreshToken),
        revoke: async (token) => {
          await oauth.revoke(token)
        },
      },
      browserLogin: {
        async start({ allowedWorkspaceIds }) {
          const port = settings.loginCallbackPort
          const login = await BrowserLogin.start({
            oauth,
            port,
            fallbackPort: port === 1455 ? 1457 : null,
            allowedWorkspaceIds,
          })
          return {
            loginId: login.loginId,
            authUrl: login.authUrl,
            result: login.done.then((o) => (o.ok ? o.tokens : Promise.reject(o.error))),
            cancel: () => login.cancel(),
          }
        },
      },
      onEvent(event) {
        if (event.type === 'loginCompleted') {
          app.sessions.broadcast('account/login/completed', { loginId: event.loginId, success: event.success, error: event.error })
        } else {
          app.sessions.broadcast('account/updated', { authMode: event.authMode, planType: event.planType })
        }
      },
      ...(usesFile ? { withStoreLock: <T>(fn: () => Promise<T>) => withFileLock(config.home, fn) } : {}),
    })
    await accounts.init()
    app.decorate('accounts', accounts)
    app.decorate('rateLimitsReader', { read: async (auth) => mapUsage(await backend.fetchUsage(auth)) })
  },
  { name: 'account', fastify: '5.x', decorators: { fastify: ['config', 'sessions'] } },
)
