import { hostname } from 'node:os'
import { fullPrincipal } from '../auth/principal.js'
import type { AccountService } from '../account/service.js'
import { systemClock, type Clock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import { lazyChild } from '../log/logger.js'
import type { Session } from '../rpc/session.js'
import type { SessionFactory } from '../rpc/session-factory.js'
import { VERSION } from '../version.js'
import { remoteControlUrls } from './base-url.js'
import { RemoteControlController } from './controller.js'
import { EnrollmentClient, hostPlatform } from './enrollment-client.js'
import { EnrollmentStore } from './enrollment-store.js'
import { loadOrCreateInstallationId } from './installation-id.js'
import { describeHttpFailure } from './preview.js'
import { logRefreshDeferrals } from './refresh-deferral-log.js'
import { RemoteRelay } from './relay.js'
import { ServerTokenCache } from './token-cache.js'
import type { RemoteControlStatusView } from './types.js'
import { wsOpener } from './ws-opener.js'

export interface RemoteControlWiring {
  readonly home: string
  readonly chatgptBaseUrl: string
  readonly accounts: AccountService
  /** Opens the sessions of remote clients, beside the local ones. */
  readonly sessions: SessionFactory
  readonly log: AppLogger
  readonly onStatus: (view: RemoteControlStatusView) => void
  readonly maxMessageBytes: number
  /** Virtual connections open at once (`--remote-control-max-connections`). */
  readonly maxConnections: number
  readonly clock?: Clock
  readonly fetch?: typeof fetch
  readonly serverName?: string
}


/**
 * Builds remote control from its parts: the enrollment client and SQLite identity store, the
 * memory-only token cache, the relay whose virtual connections are ordinary sessions (principal
 * `remote`) in the same registry and dispatcher, and the controller that keeps the socket up.
 */
export async function createRemoteControl(w: RemoteControlWiring): Promise<{ controller: RemoteControlController; close(): Promise<void> }> {
  const clock = w.clock ?? systemClock
  const urls = remoteControlUrls(w.chatgptBaseUrl)
  const installationId = await loadOrCreateInstallationId(w.home, { warn: (m) => w.log.warn(m) })
  const store = EnrollmentStore.open(w.home)
  const client = new EnrollmentClient({ baseUrl: w.chatgptBaseUrl, ...(w.fetch ? { fetch: w.fetch } : {}) })
  const platform = hostPlatform()

  let send: ((text: string) => void) | null = null
  const relay = new RemoteRelay<Session>({
    clock,
    log: w.log,
    limits: { maxMessageBytes: w.maxMessageBytes, maxConnections: w.maxConnections },
    send: (text) => send?.(text),
    createSession(key, transport) {
      const id = w.sessions.nextId('remote')
      const log = lazyChild(w.log, { connectionId: id, remoteClientId: key.clientId })
      return w.sessions.open(id, fullPrincipal('remote'), transport, log)
    },
    sessionEnded: (session) => w.sessions.ended(session),
  })
  relay.startIdleSweep()

  const accounts = w.accounts
  const controller = new RemoteControlController({
    log: w.log,
    clock,
    websocketUrl: urls.websocketUrl,
    serverName: w.serverName ?? hostname(),
    installationId,
    clientName: 'app-server',
    version: VERSION,
    os: platform.os,
    arch: platform.arch,
    accounts: {
      kind: () => {
        const c = accounts.current
        return c === null ? 'none' : c.kind === 'apiKey' ? 'apiKey' : 'chatgpt'
      },
      accountId: () => accounts.chatgptAccountId,
      withChatgptAuth: (fn) =>
        accounts.withChatgptAuth((auth) => {
          if (auth.accountId === null) return Promise.reject(new Error('the ChatGPT credential has no account id'))
          return fn({ accessToken: auth.accessToken, accountId: auth.accountId })
        }),
      onChange: (listener) => accounts.onCredentialChange(listener),
    },
    api: client,
    store,
    tokens: (refresh) => new ServerTokenCache({ clock, refresh, onDeferred: logRefreshDeferrals(w.log) }),
    opener: wsOpener((status, headers, body) => describeHttpFailure(status, headers, body)),
    relay: {
      handleEnvelope: (text) => relay.handleText(text),
      connected(s) {
        send = s
        relay.onReconnect()
      },
      disconnected() {
        send = null
      },
      get cursor() {
        return relay.subscribeCursor
      },
      closeAll: () => relay.closeAll(),
    },
    onStatus: w.onStatus,
  })
  return {
    controller,
    async close() {
      await controller.close()
      store.close()
    },
  }
}
