/**
 * One JSON-RPC connection to the engine, over its private unix socket, in codex framing (no
 * `jsonrpc` member, one message per text frame). The supervisor uses it to see the engine
 * answer `initialize`; the gateway's control connection (credentials hand-off) uses it too.
 *
 * Policy:
 * - `call` gives every request its own id and settles on the response, the error, the
 *   timeout (injected timers) or the connection's end, whichever comes first; a response
 *   that comes after its call gave up is dropped.
 * - A request from the engine goes to the one `onRequest` handler; what the handler returns
 *   is the result, an `RpcError` it throws is the error, anything else it throws becomes
 *   -32603 `internal error` (its text is logged as type and frames only, never sent). With
 *   no handler the engine gets -32601.
 * - A frame that is not a codex message (bad JSON, binary, no id or method) is dropped with
 *   a WARN that gives its size and why, never its text: it may carry thread content.
 * - Keepalive (`keepAlive`, the control connection only): a WebSocket ping every 10 s; when
 *   nothing at all (pong or frame) has come back for 30 s the engine is taken as hung and the
 *   caller is told once. A stopped or wedged engine keeps its socket open, so only silence can
 *   tell it from an idle one; the kernel still accepts our pings, so sending never fails.
 */
import WebSocket from 'ws'
import { withheldError, type AppLogger } from '../log/logger.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import type { Clock } from '../clock.js'
import { encodeError, encodeNotification, encodeRequest, encodeResult, parseIncoming, type RequestId, type RpcErrorBody } from '../rpc/wire.js'

const METHOD_NOT_FOUND = -32601

export type NotificationListener = (method: string, params: unknown) => void
export type RequestHandler = (method: string, params: unknown, id: RequestId) => unknown

/** The engine answered a call with a JSON-RPC error. */
export class EngineRpcError extends Error {
  override name = 'EngineRpcError'
  constructor(readonly body: RpcErrorBody) {
    super(body.message)
  }
}

/** The call got no answer in time, or the connection ended before it did. */
export class EngineRpcUnanswered extends Error {
  override name = 'EngineRpcUnanswered'
  constructor(
    readonly method: string,
    readonly why: 'timeout' | 'closed',
  ) {
    super(why === 'timeout' ? `engine did not answer ${method} in time` : `engine connection closed before ${method} was answered`)
  }
}

export interface EngineRpcClientOptions {
  readonly log: AppLogger
  readonly timers: Clock
  /** How long the WebSocket handshake over the socket may take. */
  readonly connectTimeoutMs?: number
}

export interface KeepAliveOptions {
  readonly intervalMs?: number
  readonly timeoutMs?: number
  /** Called once when the engine has been silent for `timeoutMs`; the connection stays as it is. */
  readonly onUnresponsive: (silentMs: number) => void
  /** The keepalive's clock, when not the connection's. */
  readonly timers?: Clock
}

export const KEEPALIVE_INTERVAL_MS = 10_000
export const KEEPALIVE_TIMEOUT_MS = 30_000

interface PendingCall {
  readonly method: string
  readonly timer: unknown
  resolve(result: unknown): void
  reject(err: Error): void
}

export class EngineRpcClient {
  private nextId = 1
  private readonly pending = new Map<RequestId, PendingCall>()
  private readonly notificationListeners = new Set<NotificationListener>()
  private readonly closeListeners = new Set<() => void>()
  private requestHandler: RequestHandler | null = null
  private closed = false
  /** Something (a pong or a frame) came from the engine since the keepalive last looked. */
  private heard = false
  private keepAliveRun: { readonly timers: Clock; timer: unknown } | null = null

  private constructor(
    private readonly ws: WebSocket,
    private readonly log: AppLogger,
    private readonly timers: Clock,
  ) {
    ws.on('message', (data, isBinary) => {
      this.heard = true
      this.receive(data, isBinary)
    })
    ws.on('pong', () => (this.heard = true))
    ws.on('close', () => this.ended())
    // A socket error is followed by `close`, which settles everything.
    ws.on('error', () => {})
  }

  /** Opens a connection to the engine listening on `socketPath`. Rejects with the socket error. */
  static connect(socketPath: string, options: EngineRpcClientOptions): Promise<EngineRpcClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws+unix://${socketPath}:/`, { perMessageDeflate: false })
      const timer = options.timers.setTimeout(() => {
        ws.terminate()
        reject(new Error('engine socket handshake timed out'))
      }, options.connectTimeoutMs ?? 5_000)
      const fail = (err: Error): void => {
        options.timers.clearTimeout(timer)
        reject(err)
      }
      ws.once('error', fail)
      ws.once('unexpected-response', (_req, res) => {
        ws.terminate()
        fail(new Error(`engine socket answered the upgrade with HTTP ${res.statusCode ?? '?'}`))
      })
      ws.once('open', () => {
        options.timers.clearTimeout(timer)
        ws.off('error', fail)
        resolve(new EngineRpcClient(ws, options.log, options.timers))
      })
    })
  }

  get isClosed(): boolean {
    return this.closed
  }

  /** Sends a request; resolves with its result, rejects with `EngineRpcError` or `EngineRpcUnanswered`. */
  call(method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    if (this.closed) return Promise.reject(new EngineRpcUnanswered(method, 'closed'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.pending.delete(id)
        reject(new EngineRpcUnanswered(method, 'timeout'))
      }, timeoutMs)
      this.pending.set(id, { method, timer, resolve, reject })
      this.ws.send(encodeRequest(id, method, params))
    })
  }

  notify(method: string, params?: unknown): void {
    if (!this.closed) this.ws.send(encodeNotification(method, params))
  }

  /** Every notification the engine sends; returns the unsubscribe function. */
  onNotification(listener: NotificationListener): () => void {
    this.notificationListeners.add(listener)
    return () => this.notificationListeners.delete(listener)
  }

  /** The one handler for requests from the engine (approvals, token refresh, …). */
  onRequest(handler: RequestHandler | null): void {
    this.requestHandler = handler
  }

  /** Called once when the connection has ended, whoever ended it. */
  onClose(listener: () => void): () => void {
    this.closeListeners.add(listener)
    return () => this.closeListeners.delete(listener)
  }

  /**
   * Pings the engine every `intervalMs` until the connection ends; see the header for the
   * policy. Silence is measured from the last interval in which something came back, so it is
   * known to the interval (a hang is found 30 to 40 s after the engine's last word).
   */
  keepAlive(options: KeepAliveOptions): void {
    this.stopKeepAlive()
    const timers = options.timers ?? this.timers
    const intervalMs = options.intervalMs ?? KEEPALIVE_INTERVAL_MS
    const timeoutMs = options.timeoutMs ?? KEEPALIVE_TIMEOUT_MS
    const state = { timers, timer: null as unknown }
    let lastHeardMs = timers.monotonicMs()
    this.heard = false
    const tick = (): void => {
      state.timer = null
      if (this.closed) return
      const now = timers.monotonicMs()
      if (this.heard) lastHeardMs = now
      this.heard = false
      if (now - lastHeardMs >= timeoutMs) return options.onUnresponsive(now - lastHeardMs)
      if (this.ws.readyState === WebSocket.OPEN) this.ws.ping()
      state.timer = timers.setTimeout(tick, intervalMs)
    }
    state.timer = timers.setTimeout(tick, intervalMs)
    this.keepAliveRun = state
  }

  private stopKeepAlive(): void {
    const keepAlive = this.keepAliveRun
    this.keepAliveRun = null
    if (keepAlive !== null && keepAlive.timer !== null) keepAlive.timers.clearTimeout(keepAlive.timer)
  }

  /** Ends the connection; calls still waiting reject with `EngineRpcUnanswered('closed')`. */
  close(): void {
    if (this.closed) return
    this.ws.close(1000)
    // Settle now rather than at the close handshake: the caller is done with this connection.
    this.ended()
  }

  private receive(data: WebSocket.RawData, isBinary: boolean): void {
    if (isBinary) return this.dropMalformed('binary frame', rawLength(data))
    const text = data.toString()
    const msg = parseIncoming(text)
    if (typeof msg === 'string') return this.dropMalformed(msg, text.length)
    switch (msg.kind) {
      case 'response':
      case 'error': {
        const call = this.pending.get(msg.id)
        if (call === undefined) {
          this.log.debug({ source: 'engine', event: 'engine.rpc.unmatched_response' }, 'engine answered a request that is no longer waiting')
          return
        }
        this.pending.delete(msg.id)
        this.timers.clearTimeout(call.timer)
        if (msg.kind === 'response') call.resolve(msg.result)
        else call.reject(new EngineRpcError(msg.error))
        return
      }
      case 'notification':
        for (const listener of this.notificationListeners) listener(msg.method, msg.params)
        return
      case 'request':
        void this.answer(msg.id, msg.method, msg.params)
        return
    }
  }

  private async answer(id: RequestId, method: string, params: unknown): Promise<void> {
    const handler = this.requestHandler
    if (handler === null) {
      this.reply(encodeError(id, { code: METHOD_NOT_FOUND, message: `method not found: ${method}` }))
      return
    }
    try {
      this.reply(encodeResult(id, await handler(method, params, id)))
    } catch (err) {
      if (err instanceof RpcError) return this.reply(encodeError(id, err.toBody()))
      this.log.error({ source: 'engine', event: 'engine.rpc.handler_failed', method, err: withheldError(err) }, 'handler for an engine request failed')
      this.reply(encodeError(id, { code: INTERNAL_ERROR, message: 'internal error' }))
    }
  }

  private reply(text: string): void {
    // The engine may have gone while the handler ran; there is no one left to answer.
    if (!this.closed) this.ws.send(text)
  }

  private dropMalformed(why: string, bytes: number): void {
    this.log.warn({ source: 'engine', event: 'engine.rpc.malformed_frame', why, bytes }, 'dropped a malformed frame from the engine')
  }

  private ended(): void {
    if (this.closed) return
    this.closed = true
    this.stopKeepAlive()
    for (const [id, call] of this.pending) {
      this.pending.delete(id)
      this.timers.clearTimeout(call.timer)
      call.reject(new EngineRpcUnanswered(call.method, 'closed'))
    }
    for (const listener of this.closeListeners) listener()
  }
}

function rawLength(data: WebSocket.RawData): number {
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0)
  return data instanceof ArrayBuffer ? data.byteLength : data.length
}
