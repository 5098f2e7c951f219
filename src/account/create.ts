import type { Clock } from '../clock.js'
import type { Config } from '../config/types.js'
import type { AppLogger } from '../log/logger.js'
import { VERSION } from '../version.js'
import { BackendClient } from './backend-client.js'
import { BrowserLogin } from './browser-login.js'
import { DeviceAuthClient } from './device-auth-client.js'
import { DeviceLogin } from './device-login.js'
import { readAccessTokenClaims } from './jwt-claims.js'
import type { LoginOutcome } from './login-outcome.js'
import { OAuthClient } from './oauth-client.js'
import { backendRateLimits, type RateLimitsReader } from './rate-limits.js'
import { AccountService, type AccountEvent } from './service.js'
import { createStore, withFileLock, type KeyringBackend } from './stores/index.js'
import type { ManagedTokens } from './types.js'

export interface AccountWiring {
  readonly log: AppLogger
  readonly onEvent: (event: AccountEvent) => void
  /** Tests inject an OS keyring stand-in and outbound HTTP. */
  readonly keyring?: KeyringBackend
  readonly fetch?: typeof fetch
  /** Runs the logins' polling and deadlines (tests drive it). */
  readonly clock?: Clock
  /** The CLI: a store that cannot be loaded is returned as `loadError` for the command to report, not logged. */
  readonly quietLoad?: boolean
}

/**
 * Builds the account service and the rate-limits reader from the config: store, OAuth
 * issuer, usage backend, login rules. The server's plugin and the CLI commands both call
 * this, so both go through the same service.
 */
export async function createAccountService(
  config: Config,
  wiring: AccountWiring,
): Promise<{ accounts: AccountService; rateLimits: RateLimitsReader; /** Why the stored credential could not be loaded; null when it could. */ loadError: unknown }> {
  const settings = config.accounts
  const store = createStore(settings.credentialsStore, config.home, {
    ...(wiring.keyring ? { keyring: wiring.keyring } : {}),
    log: wiring.log,
  })
  const http = wiring.fetch ? { fetch: wiring.fetch } : {}
  const oauth = new OAuthClient({ issuer: config.authIssuer, clientId: settings.loginClientId, ...http })
  const device = new DeviceAuthClient({ issuer: config.authIssuer, clientId: settings.loginClientId, ...http })
  const clock = wiring.clock ? { clock: wiring.clock } : {}
  const backend = new BackendClient({ baseUrl: config.chatgptBaseUrl, userAgent: `app-server/${VERSION}`, ...http })
  const usesFile = settings.credentialsStore === 'file' || settings.credentialsStore === 'auto'

  const accounts = new AccountService({
    store,
    rules: { forcedLoginMethod: settings.forcedLoginMethod, forcedWorkspaceIds: settings.forcedWorkspaceIds },
    readClaims: readAccessTokenClaims,
    log: wiring.log,
    authority: {
      refresh: (refreshToken) => oauth.refresh(refreshToken),
      revoke: async (token) => {
        await oauth.revoke(token)
      },
    },
    browserLogin: {
      async start({ allowedWorkspaceIds }) {
        // The callback server picks the fallback port (only for the default port).
        const login = await BrowserLogin.start({ oauth, port: settings.loginCallbackPort, allowedWorkspaceIds, ...clock })
        return { loginId: login.loginId, authUrl: login.authUrl, result: tokensOf(login.done), cancel: () => login.cancel() }
      },
    },
    deviceLogin: {
      async start({ allowedWorkspaceIds }) {
        const login = await DeviceLogin.start({ oauth, device, allowedWorkspaceIds, ...clock })
        return {
          loginId: login.loginId,
          verificationUrl: login.verificationUrl,
          userCode: login.userCode,
          result: tokensOf(login.done),
          cancel: () => login.cancel(),
        }
      },
    },
    onEvent: wiring.onEvent,
    ...(usesFile ? { withStoreLock: <T>(fn: () => Promise<T>) => withFileLock(config.home, fn) } : {}),
  })
  const loadError = await accounts.init({ quiet: wiring.quietLoad === true })
  return { accounts, rateLimits: backendRateLimits(backend), loadError }
}

/** A login's outcome as the account service takes it: the tokens, or a rejection with the reason. */
function tokensOf(done: Promise<LoginOutcome>): Promise<ManagedTokens> {
  return done.then((o) => (o.ok ? o.tokens : Promise.reject(o.error)))
}
