import { CredentialRejected } from '../account/errors.js'
import type { Clock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import { withheldError } from '../log/logger.js'
import { reconnectDelayMs } from './backoff.js'
import { RemoteControlHttpError, type ChatgptAuth, type Enrollment, type RemoteControlStatus, type RemoteControlStatusView, type ServerTokenGrant } from './types.js'

/** The ChatGPT side the controller needs from the account service. */
export interface AccountAccess {
  /** 'none' | 'apiKey' | 'chatgpt' and the ChatGPT account id when known. */
  kind(): 'none' | 'apiKey' | 'chatgpt'
  accountId(): string | null
  /** Runs a call with the ChatGPT credential; a call that throws `CredentialRejected` is recovered and retried once. */
  withChatgptAuth<T>(fn: (auth: ChatgptAuth) => Promise<T>): Promise<T>
  onChange(listener: () => void): () => void
}

export interface EnrollmentApi {
  enroll(auth: ChatgptAuth, body: { name: string; os: string; arch: string; appServerVersion: string; installationId: string }): Promise<ServerTokenGrant>
  /** Fails when the answer names another server or environment. */
  refresh(auth: ChatgptAuth, body: { serverId: string; environmentId: string; installationId: string }): Promise<ServerTokenGrant>
}

export interface EnrollmentPersistence {
  get(key: EnrollmentKey): Enrollment | null
  upsert(e: Enrollment): void
  delete(key: EnrollmentKey): unknown
}

export interface EnrollmentKey {
  readonly websocketUrl: string
  readonly accountId: string
  readonly appServerClientName: string
}

/** The server token: memory only. `get` refreshes when required or due (token-cache.ts). */
export interface ServerTokens {
  get(): Promise<ServerTokenGrant>
  clear(): void
  clearIfSame(token: string): unknown
}

/** One open backend socket, as the controller sees it. */
export interface BackendSocket {
  send(text: string): void
  ping(): void
  close(): void
  onMessage(fn: (text: string) => void): void
  onPong(fn: () => void): void
  onClose(fn: () => void): void
}

export interface SocketOpener {
  /** Resolves with an open socket, or rejects with a handshake refusal (an error with `status` and `body`) or a network error. */
  open(url: string, headers: Record<string, string>): Promise<BackendSocket>
}

/** The relay of virtual connections (relay.ts), seen through what the controller drives. */
export interface RelayPort {
  handleEnvelope(text: string): void
  /** A socket opened: replay unacked envelopes through the new `send`. */
  connected(send: (text: string) => void): void
  disconnected(): void
  readonly cursor: string | null
  closeAll(): void
}

export interface ControllerOptions {
  readonly log: AppLogger
  readonly clock: Clock
  readonly random?: () => number
  readonly websocketUrl: string
  readonly serverName: string
  readonly installationId: string
  readonly clientName: string
  readonly version: string
  readonly os: string
  readonly arch: string
  readonly accounts: AccountAccess
  readonly api: EnrollmentApi
  readonly store: EnrollmentPersistence
  /** Builds the token cache around the controller's enroll-or-refresh. */
  readonly tokens: (refresh: () => Promise<ServerTokenGrant>) => ServerTokens
  readonly opener: SocketOpener
  readonly relay: RelayPort
  /** Called on every status change (not on repeats). */
  readonly onStatus: (view: RemoteControlStatusView) => void
}

export const API_KEY_REFUSAL = 'remote control requires ChatGPT authentication; API key auth is not supported'
const PING_INTERVAL_MS = 10_000
const PONG_TIMEOUT_MS = 60_000
const ACCOUNT_POLL_MS = 1_000
const NOT_FOUND_DETAIL = 'Remote app server not found'

/**
 * Keeps this server connected to the backend while remote control is enabled: waits for a
 * ChatGPT account, enrolls or refreshes the memory-only server token, opens the backend
 * socket, keeps it alive, and reconnects with backoff. A 401/403 drops the server token (and,
 * from enroll or refresh, recovers the ChatGPT credential); a 404 on refresh, or "not found"
 * on the handshake, forgets the enrollment and re-enrolls; any other failure keeps the
 * enrollment and backs off.
 */
export class RemoteControlController {
  private enabled = false
  private state: RemoteControlStatus = 'disabled'
  private environmentId: string | null = null
  private enrollment: Enrollment | null = null
  private socket: BackendSocket | null = null
  private failures = 0
  private wake: (() => void) | null = null
  private timer: unknown = null
  private loop: Promise<void> | null = null
  private lastError: string | null = null
  private readonly unsubscribe: () => void
  private readonly tokens: ServerTokens

  constructor(private readonly o: ControllerOptions) {
    this.tokens = o.tokens(() => {
      const accountId = o.accounts.accountId()
      if (accountId === null) return Promise.reject(new Error('no ChatGPT account to enroll with'))
      return this.obtainGrant(accountId)
    })
    this.unsubscribe = o.accounts.onChange(() => {
      // A new account: start over quickly, and its enrollment is a different row.
      this.failures = 0
      if (this.enrollment !== null && this.enrollment.accountId !== o.accounts.accountId()) {
        this.enrollment = null
        this.tokens.clear()
        this.socket?.close()
      }
      this.wake?.()
    })
  }

  status(): RemoteControlStatusView {
    return { status: this.state, serverName: this.o.serverName, installationId: this.o.installationId, environmentId: this.environmentId }
  }

  get error(): string | null {
    return this.lastError
  }

  async enable(): Promise<RemoteControlStatusView> {
    if (!this.enabled) {
      this.enabled = true
      this.failures = 0
      this.setState('connecting')
      this.loop = this.run().catch((err: unknown) => this.o.log.error({ error: withheldError(err) }, 'remote control loop failed'))
    }
    return this.status()
  }

  async disable(): Promise<RemoteControlStatusView> {
    this.enabled = false
    this.wake?.()
    this.socket?.close()
    this.socket = null
    this.o.relay.closeAll()
    await this.loop
    this.loop = null
    this.setState('disabled')
    return this.status()
  }

  async close(): Promise<void> {
    this.unsubscribe()
    await this.disable()
  }

  // ---- the loop -----------------------------------------------------------------------

  private async run(): Promise<void> {
    while (this.enabled) {
      const kind = this.o.accounts.kind()
      if (kind === 'apiKey') {
        this.fail(API_KEY_REFUSAL)
        await this.sleep(ACCOUNT_POLL_MS * 5)
        continue
      }
      const accountId = this.o.accounts.accountId()
      if (kind === 'none' || accountId === null) {
        // No account yet: wait without an error status; a login wakes us.
        this.setState('connecting')
        await this.sleep(ACCOUNT_POLL_MS)
        continue
      }
      this.setState('connecting')
      try {
        await this.connectOnce(accountId)
        // The socket closed (or was closed): reconnect.
      } catch (err) {
        this.fail(describe(err))
      }
      if (!this.enabled) break
      this.failures++
      await this.sleep(reconnectDelayMs(this.failures, this.o.random))
    }
  }

  private key(accountId: string): EnrollmentKey {
    return { websocketUrl: this.o.websocketUrl, accountId, appServerClientName: this.o.clientName }
  }

  /** One attempt: token, handshake, then serve until the socket closes. */
  private async connectOnce(accountId: string): Promise<void> {
    this.enrollment ??= this.o.store.get(this.key(accountId))
    if (this.enrollment !== null) this.publishEnvironment(this.enrollment.environmentId)
    const token = (await this.tokens.get()).remoteControlToken
    const headers: Record<string, string> = {
      authorization: `Bearer ${token}`,
      'x-codex-server-id': this.enrollment?.serverId ?? '',
      'x-codex-name': Buffer.from(this.o.serverName, 'utf8').toString('base64'),
      'x-codex-protocol-version': '3',
      'x-codex-installation-id': this.o.installationId,
    }
    const cursor = this.o.relay.cursor
    if (cursor !== null) headers['x-codex-subscribe-cursor'] = cursor

    let socket: BackendSocket
    try {
      socket = await this.o.opener.open(this.o.websocketUrl, headers)
    } catch (err) {
      const status = (err as { status?: unknown }).status
      if (status === 401 || status === 403) {
        this.tokens.clearIfSame(token)
      } else if (status === 404 && isNotFoundDetail((err as { body?: unknown }).body)) {
        this.forgetEnrollment(accountId, true)
      }
      throw err
    }
    if (!this.enabled) {
      socket.close()
      return
    }
    await this.serve(socket)
  }

  /** Enroll when there is no enrollment; refresh otherwise (404 → forget, re-enroll now). */
  private async obtainGrant(accountId: string): Promise<ServerTokenGrant> {
    const e = this.enrollment
    if (e !== null) {
      try {
        return await this.withAuth((auth) =>
          this.o.api.refresh(auth, { serverId: e.serverId, environmentId: e.environmentId, installationId: this.o.installationId }),
        )
      } catch (err) {
        if (!(err instanceof RemoteControlHttpError && err.status === 404)) throw err
        // Re-enroll in this same attempt; the cache keeps the grant this call returns.
        this.forgetEnrollment(accountId, false)
      }
    }
    const grant = await this.withAuth((auth) =>
      this.o.api.enroll(auth, {
        name: this.o.serverName,
        os: this.o.os,
        arch: this.o.arch,
        appServerVersion: this.o.version,
        installationId: this.o.installationId,
      }),
    )
    const enrollment: Enrollment = {
      ...this.key(accountId),
      serverId: grant.serverId,
      environmentId: grant.environmentId,
      serverName: this.o.serverName,
      updatedAt: new Date(this.o.clock.wallMs()),
    }
    this.o.store.upsert(enrollment)
    this.enrollment = enrollment
    this.publishEnvironment(grant.environmentId)
    return grant
  }

  /** Enroll/refresh with the ChatGPT credential; a 401 or 403 goes through the account service's recovery. */
  private withAuth<T>(call: (auth: ChatgptAuth) => Promise<T>): Promise<T> {
    return this.o.accounts.withChatgptAuth(async (auth) => {
      try {
        return await call(auth)
      } catch (err) {
        if (err instanceof RemoteControlHttpError && (err.status === 401 || err.status === 403)) {
          // The token cache already drops its token on these; clearing it here would also throw
          // away the retry's grant. The account service recovers (reload, refresh, or ask the
          // client) and retries once; if that fails too, this error is what surfaces.
          throw new CredentialRejected(err)
        }
        throw err
      }
    })
  }

  /** Deletes the persisted row and the in-memory enrollment; `clearToken` also drops the server token. */
  private forgetEnrollment(accountId: string, clearToken: boolean): void {
    this.o.store.delete(this.key(accountId))
    this.enrollment = null
    if (clearToken) this.tokens.clear()
    this.publishEnvironment(null)
  }

  /** Serves one open socket until it closes: envelopes in and out, keepalive. */
  private serve(socket: BackendSocket): Promise<void> {
    this.socket = socket
    this.failures = 0
    this.lastError = null
    this.setState('connected')
    let lastPong = this.o.clock.monotonicMs()
    return new Promise<void>((resolve) => {
      let ping: unknown = null
      const keepalive = () => {
        if (this.o.clock.monotonicMs() - lastPong > PONG_TIMEOUT_MS) {
          this.o.log.warn('remote control backend missed its pongs; reconnecting')
          socket.close()
          return
        }
        socket.ping()
        ping = this.o.clock.setTimeout(keepalive, PING_INTERVAL_MS)
      }
      ping = this.o.clock.setTimeout(keepalive, PING_INTERVAL_MS)
      socket.onPong(() => (lastPong = this.o.clock.monotonicMs()))
      socket.onMessage((text) => this.o.relay.handleEnvelope(text))
      socket.onClose(() => {
        this.o.clock.clearTimeout(ping)
        this.o.relay.disconnected()
        if (this.socket === socket) this.socket = null
        resolve()
      })
      this.o.relay.connected((text) => socket.send(text))
    })
  }

  // ---- status -------------------------------------------------------------------------

  private fail(message: string): void {
    this.lastError = message
    this.o.log.warn({ problem: message }, 'remote control attempt failed')
    this.setState('errored')
  }

  private setState(next: RemoteControlStatus): void {
    if (this.state === next) return
    this.state = next
    this.o.onStatus(this.status())
  }

  private publishEnvironment(id: string | null): void {
    if (this.environmentId === id) return
    this.environmentId = id
    this.o.onStatus(this.status())
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.o.clock.clearTimeout(this.timer)
        this.wake = null
        resolve()
      }
      this.wake = done
      this.timer = this.o.clock.setTimeout(done, ms)
    })
  }
}

function isNotFoundDetail(body: unknown): boolean {
  return typeof body === 'object' && body !== null && (body as { detail?: unknown }).detail === NOT_FOUND_DETAIL
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : 'remote control failed'
}
