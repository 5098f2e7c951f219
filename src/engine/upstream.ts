/**
 * One client's link to the engine: exactly one upstream WebSocket (over the engine's unix
 * socket) per client connection, so nothing the engine sends on it can reach another client.
 *
 * Client → engine: requests and notifications travel as the client's original frame text,
 * with the client's own ids (the gateway's checks have run before they get here). The ids of
 * forwarded requests are tracked until the engine answers them.
 *
 * Engine → client, reading only `id` and `method` (from the frame's head when it can be read
 * with certainty, see frame-head.ts; else from a full parse, and a frame that names a
 * top-level member twice is dropped):
 * 1. a response goes to the client as written if it answers a request this client has in
 *    flight; any other (a forged or stale id) is dropped;
 * 2. a notification is relayed as written, except the account and remote-control ones (the
 *    gateway is their source of truth and sends its own), and `serverRequest/resolved`, whose
 *    `requestId` is rewritten to the id the client saw — the one re-serialised engine frame;
 * 3. a request: `account/chatgptAuthTokens/refresh` goes to the injected handler (never to the
 *    client); an approval request to a client without `exec` is declined by the gateway (an
 *    elicitation marked as an approval included, see approval-decline.ts);
 *    anything else reaches the client under an id from the gateway's allocator, and the
 *    client's reply goes back under the engine's id (an unknown id is dropped).
 *
 * Flow: while the client's outbound buffer is over its bound, the upstream stops reading the
 * engine (the engine's own socket buffers fill, and it waits); reading resumes once the
 * client has drained. What a client that never drains gets is the transport's rule (see
 * src/rpc/websocket-transport.ts).
 *
 * Endings: when the client goes (`close()`), each engine request it left unanswered is
 * answered with an error, so no turn hangs, and the upstream is closed. When the upstream
 * closes unexpectedly, each request in flight gets -32603 `engine unavailable` and the client
 * is closed with 1012 `engine restarted`.
 *
 * No frame text or handler error text is logged: frames carry prompts, files and tokens.
 */
import WebSocket from 'ws'
import { withheldError, type AppLogger } from '../log/logger.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import type { RequestIdAllocator } from '../rpc/server-requests.js'
import type { RequestOutcome } from '../rpc/session.js'
import type { Clock } from '../clock.js'
import { encodeError, encodeNotification, encodeRequest, encodeResult, parseIncoming, type RequestId, type RpcErrorBody } from '../rpc/wire.js'
import { approvalDecline } from './approval-decline.js'
import { hasDuplicateTopLevelKey } from '../util/json-scan.js'
import { DUPLICATE_MEMBER } from './frame-check.js'
import { frameHead } from './frame-head.js'
import { withFrameId } from './frame-id.js'
import { ServerRequestMap } from './server-request-map.js'
import { BurstCork } from '../util/burst-cork.js'

/** The client-facing side, as the gateway's session offers it. */
export interface UpstreamClient {
  /**
   * Sends a frame to the client. False: the client's outbound buffer is over its bound, and
   * the upstream stops reading the engine until `resume` is called.
   */
  sendToClient(text: string, resume: () => void): boolean
  closeClient(code: number, reason: string): void
  /** Whether the client's principal holds `exec` (may answer approval requests). */
  readonly holdsExec: boolean
}

/** Answers the engine's `account/chatgptAuthTokens/refresh` (the account service, later). */
export type TokenRefreshHandler = (params: unknown) => Promise<unknown>

export interface EngineUpstreamOptions {
  /** The engine's unix socket. */
  readonly socketPath: string
  readonly client: UpstreamClient
  /** The process-wide allocator the gateway's own server requests use. */
  readonly serverRequestIds: RequestIdAllocator
  readonly onTokenRefresh: TokenRefreshHandler
  readonly timers: Clock
  readonly log: AppLogger
  /** How long `open` waits for the engine's `initialize` answer. */
  readonly openTimeoutMs?: number
}

export const ENGINE_UNAVAILABLE: RpcErrorBody = { code: INTERNAL_ERROR, message: 'engine unavailable' }
export const ENGINE_RESTARTED_CLOSE_CODE = 1012
export const ENGINE_RESTARTED_REASON = 'engine restarted'

/** Engine notifications the gateway sends its own version of. */
const DROPPED_NOTIFICATIONS: ReadonlySet<string> = new Set(['account/updated', 'account/login/completed', 'remoteControl/status/changed'])
const TOKEN_REFRESH_METHOD = 'account/chatgptAuthTokens/refresh'
const RESOLVED_METHOD = 'serverRequest/resolved'
/** The upstream's own `initialize`: a string id no client request is forwarded with before it is answered. */
const INITIALIZE_ID = 'gateway-initialize'
const CLIENT_GONE: RpcErrorBody = { code: INTERNAL_ERROR, message: 'client disconnected' }
const UNRELAYABLE_REPLY: RpcErrorBody = { code: INTERNAL_ERROR, message: 'client reply could not be relayed' }
const REFRESH_FAILED: RpcErrorBody = { code: INTERNAL_ERROR, message: 'token refresh failed' }
const DEFAULT_OPEN_TIMEOUT_MS = 30_000
const ANSWERED: RequestOutcome = { kind: 'result' }
const UNANSWERED: RequestOutcome = { kind: 'unanswered' }

/**
 * How an upstream opens its WebSocket to the engine. The engine is the gateway's own child on a
 * unix socket, with nothing in between: its text is not checked for valid UTF-8 (a bad byte
 * would become U+FFFD on its way to the client anyway), and frames to it carry a zero mask,
 * which `ws` does not apply. Masking guards proxies on the way from bytes a client chose;
 * there is no proxy here. (The benchmark's no-logic relay opens its upstreams the same way.)
 */
export const ENGINE_SOCKET_OPTIONS: WebSocket.ClientOptions = {
  perMessageDeflate: false,
  skipUTF8Validation: true,
  generateMask: (mask: Buffer): void => {
    mask.fill(0)
  },
}

/** The engine could not be reached, refused `initialize`, or went away. */
export class EngineUnavailableError extends Error {
  override name = 'EngineUnavailableError'
  constructor(
    message: string,
    /** The engine's error answer to `initialize`, when that was the cause. */
    readonly engineError: RpcErrorBody | null = null,
  ) {
    super(message)
  }
}

type State = 'new' | 'opening' | 'open' | 'closed'

export class EngineUpstream {
  private state: State = 'new'
  private ws: WebSocket | null = null
  /** Set once open: requests of one burst leave in one write. */
  private burst: BurstCork | null = null
  /** Client requests forwarded and not yet answered, each with what settles its `forwardRequest`. */
  private readonly inFlight = new Map<RequestId, (outcome: RequestOutcome) => void>()
  private readonly engineRequests: ServerRequestMap
  private readonly client: UpstreamClient
  private readonly log: AppLogger

  constructor(private readonly options: EngineUpstreamOptions) {
    this.client = options.client
    this.log = options.log
    this.engineRequests = new ServerRequestMap(options.serverRequestIds)
  }

  /** Client requests forwarded and not yet answered. */
  get requestsInFlight(): number {
    return this.inFlight.size
  }

  /** Engine requests the client has not answered yet. */
  get engineRequestsPending(): number {
    return this.engineRequests.size
  }

  /**
   * Connects and sends `initialize` with the client's params; resolves with the engine's
   * result (the client's own `initialize` answer). The client's `initialized` notification is
   * relayed by `forwardNotification` like any other. Rejects with `EngineUnavailableError`.
   */
  open(initializeParams: unknown): Promise<unknown> {
    if (this.state !== 'new') return Promise.reject(new Error('upstream already opened'))
    this.state = 'opening'
    const { timers } = this.options
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws+unix://${this.options.socketPath}:/`, ENGINE_SOCKET_OPTIONS)
      this.ws = ws
      let settled = false
      const fail = (message: string, engineError: RpcErrorBody | null = null): void => {
        if (settled) return
        settled = true
        timers.clearTimeout(timer)
        this.state = 'closed'
        ws.removeAllListeners('message')
        ws.terminate()
        reject(new EngineUnavailableError(message, engineError))
      }
      const timer = timers.setTimeout(() => fail('engine did not answer initialize in time'), this.options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS)
      ws.on('error', (err) => {
        this.log.debug({ error: withheldError(err) }, 'engine upstream socket error')
        fail('engine connection failed')
      })
      ws.on('close', () => {
        if (!settled) fail('engine closed the connection during initialize')
        else this.onUpstreamClosed()
      })
      ws.once('open', () => ws.send(encodeRequest(INITIALIZE_ID, 'initialize', initializeParams)))
      const onInitializeAnswer = (data: WebSocket.RawData): void => {
        const msg = parseIncoming(data.toString())
        if (typeof msg === 'string' || !('id' in msg) || msg.id !== INITIALIZE_ID) return
        ws.off('message', onInitializeAnswer)
        if (msg.kind !== 'response') {
          fail('engine refused initialize', msg.kind === 'error' ? msg.error : null)
          return
        }
        settled = true
        timers.clearTimeout(timer)
        this.state = 'open'
        this.burst = new BurstCork(ws)
        ws.on('message', (frame, isBinary) => {
          if (!isBinary) this.fromEngine(frame.toString())
        })
        resolve(msg.result)
      }
      ws.on('message', onInitializeAnswer)
    })
  }

  /**
   * A client request that passed the gateway's checks: forwarded as `text`, tracked by `id`.
   * Resolves once it is answered (by the engine, or with `engine unavailable` when the link
   * fails), or the client has gone.
   */
  forwardRequest(id: RequestId, text: string): Promise<RequestOutcome> {
    if (!this.sendToEngine(text)) {
      this.toClient(encodeError(id, ENGINE_UNAVAILABLE))
      return Promise.resolve({ kind: 'error', code: ENGINE_UNAVAILABLE.code })
    }
    // A client reusing the id of a request still in flight: the engine answers both under it;
    // the first answer settles the older one, so no slot is held for ever.
    this.settle(id, UNANSWERED)
    return new Promise((resolve) => this.inFlight.set(id, resolve))
  }

  /** A client notification (e.g. `initialized`), forwarded as `text`. */
  forwardNotification(text: string): void {
    this.sendToEngine(text)
  }

  /** Whether a client reply with `id` answers one of the engine's requests (the gateway's own are not). */
  awaitsReply(id: unknown): boolean {
    return this.engineRequests.awaits(id)
  }

  /**
   * A client reply (`{id, result}` or `{id, error}`, as `text`; null when it cannot go as
   * written, see src/engine/frame-check.ts). Returns false when `id` names no engine request
   * (it may be one of the gateway's own; never forwarded). A reply that cannot be relayed is
   * answered to the engine with an error, so its request does not wait for ever.
   */
  forwardReply(id: unknown, text: string | null): boolean {
    const request = this.engineRequests.take(id)
    if (request === undefined) return false
    const rewritten = text === null ? null : withFrameId(text, request.engineId)
    this.sendToEngine(rewritten ?? encodeError(request.engineId, UNRELAYABLE_REPLY))
    return true
  }

  /** The client went away: its unanswered engine requests are answered with an error; the upstream closes. */
  close(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    for (const request of this.engineRequests.drain()) this.sendRaw(encodeError(request.engineId, CLIENT_GONE))
    this.settleAll()
    const ws = this.ws
    if (ws !== null && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      // Reading again (it may have been stopped for a full client), or the engine's close frame
      // would never be read; what the engine still sends now goes nowhere.
      ws.resume()
      ws.close(1000)
    }
  }

  private onUpstreamClosed(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.log.warn({ inFlight: this.inFlight.size, engineRequests: this.engineRequests.size }, 'engine upstream closed unexpectedly')
    for (const id of this.inFlight.keys()) this.toClient(encodeError(id, ENGINE_UNAVAILABLE))
    this.settleAll()
    this.engineRequests.drain()
    this.client.closeClient(ENGINE_RESTARTED_CLOSE_CODE, ENGINE_RESTARTED_REASON)
  }

  private fromEngine(text: string): void {
    if (this.state !== 'open') return
    // Most frames (deltas, results) are routed on their head alone; the rest are parsed in full.
    const head = frameHead(text)
    if (head !== null && head.kind === 'response') return this.engineReply(head.id, text, ANSWERED)
    if (head !== null && head.method !== RESOLVED_METHOD) return this.engineNotification(head.method, undefined, text)
    const msg = parseIncoming(text)
    // A member named twice: the gateway would route on the last, a client may read the first.
    if (typeof msg === 'string' || hasDuplicateTopLevelKey(text)) {
      this.log.warn({ bytes: text.length, problem: typeof msg === 'string' ? msg : DUPLICATE_MEMBER }, 'dropped malformed engine frame')
      return
    }
    switch (msg.kind) {
      case 'notification':
        this.engineNotification(msg.method, msg.params, text)
        return
      case 'request':
        this.engineRequest(msg.id, msg.method, msg.params, text)
        return
      case 'response':
        this.engineReply(msg.id, text, ANSWERED)
        return
      case 'error':
        this.engineReply(msg.id, text, { kind: 'error', code: msg.error.code })
        return
    }
  }

  /** Only an answer to this client's own request in flight; a forged or stale id goes nowhere. */
  private engineReply(id: RequestId, text: string, outcome: RequestOutcome): void {
    if (this.inFlight.has(id)) {
      this.toClient(text)
      this.settle(id, outcome)
    } else this.log.warn({ kind: outcome.kind === 'result' ? 'response' : 'error' }, 'dropped engine reply to no request in flight')
  }

  private settle(id: RequestId, outcome: RequestOutcome): void {
    const done = this.inFlight.get(id)
    this.inFlight.delete(id)
    done?.(outcome)
  }

  private settleAll(): void {
    const all = [...this.inFlight.values()]
    this.inFlight.clear()
    for (const done of all) done(UNANSWERED)
  }

  private engineNotification(method: string, params: unknown, text: string): void {
    if (DROPPED_NOTIFICATIONS.has(method)) return
    if (method !== RESOLVED_METHOD) {
      this.toClient(text)
      return
    }
    if (params === null || typeof params !== 'object') return
    const clientId = this.engineRequests.resolve((params as Record<string, unknown>).requestId)
    // A request the client never saw (declined or answered by the gateway): nothing to resolve.
    if (clientId === undefined) return
    this.toClient(encodeNotification(method, { ...params, requestId: clientId }))
  }

  private engineRequest(engineId: RequestId, method: string, params: unknown, text: string): void {
    if (method === TOKEN_REFRESH_METHOD) {
      void this.answerTokenRefresh(engineId, params)
      return
    }
    const decline = this.client.holdsExec ? undefined : approvalDecline(method, params)
    if (decline !== undefined) {
      this.log.info({ method }, 'declined an approval request for a connection without exec')
      this.sendToEngine(encodeResult(engineId, decline))
      return
    }
    const clientId = this.engineRequests.add(engineId, method)
    this.toClient(withFrameId(text, clientId) ?? encodeRequest(clientId, method, params))
  }

  private async answerTokenRefresh(engineId: RequestId, params: unknown): Promise<void> {
    let reply: string
    try {
      reply = encodeResult(engineId, await this.options.onTokenRefresh(params))
    } catch (err) {
      if (err instanceof RpcError) reply = encodeError(engineId, err.toBody())
      else {
        this.log.warn({ error: withheldError(err) }, 'engine token refresh failed')
        reply = encodeError(engineId, REFRESH_FAILED)
      }
    }
    this.sendToEngine(reply)
  }

  /** Sends a frame to the client; stops reading the engine while the client's buffer is full. */
  private toClient(text: string): void {
    if (!this.client.sendToClient(text, this.resumeReading)) this.ws?.pause()
  }

  private readonly resumeReading = (): void => {
    if (this.state === 'open') this.ws?.resume()
  }

  /** Sends while the link is open; false when it is not. */
  private sendToEngine(text: string): boolean {
    if (this.state !== 'open') return false
    return this.sendRaw(text)
  }

  private sendRaw(text: string): boolean {
    const ws = this.ws
    if (ws === null || ws.readyState !== WebSocket.OPEN) return false
    this.burst?.cork()
    ws.send(text)
    return true
  }
}
