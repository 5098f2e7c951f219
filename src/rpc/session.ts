import type { Principal } from '../auth/principal.js'
import type { AppLogger } from '../log/logger.js'
import type { Dispatcher } from './dispatcher.js'
import { encodeError, encodeNotification, encodeResult, parseIncoming, type RequestId } from './wire.js'

/** The socket side of a session: a local WebSocket, or a remote-control virtual connection. */
export interface SessionTransport {
  send(text: string): void
  close(code: number, reason: string): void
}

export interface ClientInfo {
  readonly name: string
  readonly title: string | null
  readonly version: string
}

/**
 * One JSON-RPC connection: its principal, its handshake state, and the requests it has in
 * flight. It knows nothing of sockets beyond `SessionTransport`.
 */
export class Session {
  private initializedState: { clientInfo: ClientInfo; optOut: ReadonlySet<string> } | null = null
  private inFlight = 0
  private idleWaiters: (() => void)[] = []
  private closed = false

  constructor(
    readonly id: string,
    readonly principal: Principal,
    private readonly transport: SessionTransport,
    private readonly dispatcher: Dispatcher<any>,
    readonly log: AppLogger,
  ) {}

  get initialized(): boolean {
    return this.initializedState !== null
  }

  get clientInfo(): ClientInfo | null {
    return this.initializedState?.clientInfo ?? null
  }

  get requestsInFlight(): number {
    return this.inFlight
  }

  /** Called by the `initialize` handler once the handshake succeeded. */
  markInitialized(clientInfo: ClientInfo, optOutNotificationMethods: readonly string[]): void {
    this.initializedState = { clientInfo, optOut: new Set(optOutNotificationMethods) }
  }

  /** Whether a broadcast notification should reach this connection. */
  wantsNotification(method: string): boolean {
    return this.initializedState !== null && !this.initializedState.optOut.has(method)
  }

  handleText(text: string): void {
    const msg = parseIncoming(text)
    if (typeof msg === 'string') {
      // Never the frame itself: it may hold a credential the client meant for a method.
      this.log.warn({ bytes: text.length, problem: msg }, 'dropped malformed JSON-RPC frame')
      return
    }
    switch (msg.kind) {
      case 'request':
        void this.runRequest(msg.id, msg.method, msg.params)
        return
      case 'notification':
        // `initialized` needs no reply; codex drops other client notifications silently.
        this.log.debug({ method: msg.method }, 'client notification')
        return
      case 'response':
      case 'error':
        this.log.debug({ id: msg.id }, 'dropped reply to no pending server request')
        return
    }
  }

  handleBinary(): void {
    this.log.warn('ignored binary WebSocket frame')
  }

  sendNotification(method: string, params: unknown): void {
    this.send(encodeNotification(method, params))
  }

  /** Resolves once no request of this session is being handled. */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  close(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.transport.close(code, reason)
  }

  /** The transport went away: nothing more is sent. */
  detach(): void {
    this.closed = true
  }

  private send(text: string): void {
    if (!this.closed) this.transport.send(text)
  }

  private async runRequest(id: RequestId, method: string, params: unknown): Promise<void> {
    this.inFlight++
    try {
      const outcome = await this.dispatcher.dispatch(this, method, params)
      this.send('result' in outcome ? encodeResult(id, outcome.result) : encodeError(id, outcome.error))
    } finally {
      this.inFlight--
      if (this.inFlight === 0 && this.idleWaiters.length > 0) {
        const waiters = this.idleWaiters
        this.idleWaiters = []
        for (const w of waiters) w()
      }
    }
  }
}
