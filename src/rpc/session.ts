import type { Principal } from '../auth/principal.js'
import { ENGINE_UNAVAILABLE, engineNotificationRefusal, engineRequestRefusal, goesToEngine } from '../engine/forward.js'
import { DUPLICATE_MEMBER, engineFrameProblem } from '../engine/frame-check.js'
import { withheldError, type AppLogger } from '../log/logger.js'
import { WarnBudget } from '../log/warn-budget.js'
import { boundedClientText } from '../util/client-text.js'
import { tryParseJson, type JsonObject } from '../util/json.js'
import { hasDuplicateTopLevelKey } from '../util/json-scan.js'
import type { Dispatcher } from './dispatcher.js'
import { INTERNAL_ERROR, INVALID_REQUEST, OVERLOADED, OVERLOADED_MESSAGE, SHUTTING_DOWN_REFUSAL } from './errors.js'
import type { InFlightLimit } from './in-flight.js'
import { ServerRequestAborted, ServerRequests, type RequestIdAllocator } from './server-requests.js'
import type { Clock } from '../clock.js'
import { TokenBucket } from './token-bucket.js'
import { classifyMessage, encodeError, encodeNotification, encodeRequest, encodeResult, type RequestId, type RpcErrorBody } from './wire.js'

/** The socket side of a session: a local WebSocket, or a remote-control virtual connection. */
export interface SessionTransport {
  send(text: string): void
  /**
   * Sends a frame from a source that can stop reading (the engine's upstream). False: the
   * client's outbound buffer is full, and the source should stop until `resume` is called
   * (once). A transport without it takes every frame through `send`.
   */
  sendPaced?(text: string, resume: () => void): boolean
  /**
   * Stops reading the client for `ms` on behalf of `reason` (frames already read are still
   * handled), so a client that floods is held back by TCP instead of being read and answered
   * frame by frame. Each reason's pause is its own: the socket is read again once none is
   * left. False when the pause did not take (already paused for this reason, or closing). A
   * transport without it is always read.
   */
  pauseReading?(ms: number, reason: PauseReason): boolean
  /** Ends `reason`'s pause before its time is up (a slot it waited for is free). */
  resumeReading?(reason: PauseReason): void
  close(code: number, reason: string): void
}

/** Why a client's socket is not read: over its rate, waiting for an in-flight slot, or held by the read governor. */
export type PauseReason = 'rate' | 'slot' | 'governor' | 'turn'

export interface ClientInfo {
  readonly name: string
  readonly title: string | null
  readonly version: string
}

/** The session's link to the engine (an `EngineUpstream`), once its `initialize` opened one. */
export interface SessionUpstream {
  /** Resolves once the engine has answered (or the link failed, or the client went), with how. */
  forwardRequest(id: RequestId, text: string): Promise<RequestOutcome>
  forwardNotification(text: string): void
  /**
   * False when `id` names no engine request (it may be one of the gateway's own). `text` null:
   * the reply cannot go as written (the engine could not read it); the engine gets an error.
   */
  forwardReply(id: unknown, text: string | null): boolean
  /** Whether `forwardReply` would take a reply with `id` (asked before the reply is checked). */
  awaitsReply(id: unknown): boolean
  close(): void
}

/** How a JSON-RPC request ended: its result, its error code, or no answer (the link went first). */
export type RequestOutcome = { readonly kind: 'result' } | { readonly kind: 'error'; readonly code: number } | { readonly kind: 'unanswered' }

/** Told of every request a session answers (metrics). Never its params. */
export interface RequestObserver {
  requestAnswered(method: string, outcome: RequestOutcome, ms: number): void
}

/** What every session of an app shares besides the dispatcher (see `SessionFactory`). */
export interface SessionSettings {
  readonly inFlight: InFlightLimit
  /** Requests one connection may have in flight, so one connection cannot fill `inFlight`. */
  readonly maxInFlightPerConnection: number
  readonly serverRequestIds: RequestIdAllocator
  readonly clock: Clock
  /** Messages per second per connection (0: unlimited) and the burst above it. */
  readonly ratePerSecond: number
  readonly burst: number
  /** The process's drain state: while it drains, new requests are refused. */
  readonly lifecycle: { readonly draining: boolean }
  readonly observer?: RequestObserver | null
}

/** What every session of an app shares. */
export interface SessionDeps extends SessionSettings {
  readonly dispatcher: Dispatcher<any>
}

const OVERLOADED_BODY = { code: OVERLOADED, message: OVERLOADED_MESSAGE }
const DUPLICATE_MEMBER_BODY = { code: INVALID_REQUEST, message: `Invalid request: ${DUPLICATE_MEMBER}` }
const OVERLOADED_OUTCOME: RequestOutcome = { kind: 'error', code: OVERLOADED }
const DROP_WARN_INTERVAL_MS = 1_000
const FRAME_OVER_RATE = 'frame over the connection rate limit dropped'
const NO_OPT_OUT: ReadonlySet<string> = new Set()
/** Requests refused in a row (over the rate, or the in-flight bound) that make a connection a flooder, whose socket is then not read. */
export const FLOOD_FRAMES = 32

/** The transport's safety net for a turn hold: frames that waited this long would mean a stuck loop, not a busy one. */
export const TURN_HOLD_MAX_MS = 60_000
/** The longest a flooder goes unread at a time: the time its bucket takes to refill, at most this. */
export const FLOOD_PAUSE_MAX_MS = 1_000

/**
 * One JSON-RPC connection: its principal, its handshake state, its rate limit, the requests
 * it has in flight, the server requests it has not answered, and its upstream to the engine.
 * It knows nothing of sockets beyond `SessionTransport`.
 *
 * A request is refused at once while the process drains (-32001 `server shutting down`), so
 * a client that keeps sending cannot keep a drain open. Otherwise it passes the rate limit
 * and the in-flight bounds (the connection's, then the process's), then goes to the dispatcher or, for an engine method, through the engine path's
 * checks to the upstream (see src/engine/forward.ts); its in-flight slots are held until it is
 * answered. A request that names a top-level member twice is refused on either path
 * (`JSON.parse` would keep the last; nothing ambiguous is resolved by a guess). Notifications
 * are forwarded to the upstream after the rate limit and the engine path's notification
 * checks. A reply goes to the upstream if it answers an engine request (one the engine could
 * not read as written is answered to the engine with an error instead, see frame-check.ts),
 * else to the session's own server requests.
 *
 * Every inbound frame is charged to the rate limit, junk included: over it, a request is
 * answered -32001 and anything else is dropped (cheaply: no answer); after `FLOOD_FRAMES`
 * frames in a row refused or dropped for the rate (junk counts: a flood of it must not keep
 * its socket read) the socket is not read until the bucket has refilled (at most `FLOOD_PAUSE_MAX_MS`): what was
 * already read is still answered, the rest waits in TCP, so a flood costs the process a few
 * refusals per refill, not one per frame sent. Likewise after `FLOOD_FRAMES` requests in a row
 * refused for the connection's in-flight bound, it is not read until one of its requests is
 * answered (or `FLOOD_PAUSE_MAX_MS` has passed) (a reply that answers a request still pending
 * is delivered: it answers what was asked, and dropping it would only fail that request).
 * WARN lines about one frame go through a `WarnBudget`, so a flood of junk writes a bounded
 * number of lines, and a client-chosen value in a line is bounded (`boundedClientText`).
 *
 * Every request answered, refused ones included, writes one DEBUG line (method, id, time,
 * outcome — never its params) and is told to the `RequestObserver`; the session counts the
 * frames it received and sent, for the line its transport writes when it closes.
 */
export class Session {
  private initializedState: { clientInfo: ClientInfo; optOut: ReadonlySet<string> } | null = null
  private inFlight = 0
  /** Ids of the requests in flight (with a count: a client may reuse an id still in flight). */
  private readonly unanswered = new Map<RequestId, number>()
  private idleWaiters: (() => void)[] = []
  /** Requests the drain's deadline answered (see `answerUnanswered`), with the error they got. */
  private answeredAtDeadline: { readonly error: RpcErrorBody; readonly ids: Map<RequestId, number> } | null = null
  private closed = false
  private readonly bucket: TokenBucket | null
  private readonly serverRequests: ServerRequests
  private readonly warns: WarnBudget
  private lastDropWarning = -Infinity
  private overRateInARow = 0
  /** Requests refused in a row for the connection's in-flight bound (see `FLOOD_FRAMES`). */
  private overBoundInARow = 0
  /** Not read until one of its requests is answered. */
  private waitingForSlot = false
  private upstream: SessionUpstream | null = null
  private framesIn = 0
  private framesOut = 0
  /** When the session opened, on the clock's monotonic reading. */
  readonly openedAtMs: number

  constructor(
    readonly id: string,
    readonly principal: Principal,
    private readonly transport: SessionTransport,
    readonly log: AppLogger,
    private readonly deps: SessionDeps,
  ) {
    this.bucket = deps.ratePerSecond > 0 ? new TokenBucket(deps.ratePerSecond, deps.burst, deps.clock.monotonicMs) : null
    this.warns = new WarnBudget(log, deps.clock.monotonicMs)
    this.serverRequests = new ServerRequests(deps.serverRequestIds, deps.clock, this.warns)
    this.openedAtMs = deps.clock.monotonicMs()
  }

  /** Stops reading the client's socket for at most `ms` (the process is overloaded: see read-governor.ts); false when it cannot. */
  holdReading(ms: number): boolean {
    return this.transport.pauseReading?.(ms, 'governor') ?? false
  }

  /** Ends the governor's hold. */
  releaseReading(): void {
    this.transport.resumeReading?.('governor')
  }

  /** Stops reading the client's socket while its frames wait their turn (see turn-budget.ts); false when it cannot. */
  holdForTurn(): boolean {
    return this.transport.pauseReading?.(TURN_HOLD_MAX_MS, 'turn') ?? false
  }

  /** Its frames have all had their turn: read it again. */
  releaseForTurn(): void {
    this.transport.resumeReading?.('turn')
  }

  /** Frames received from the client so far (read by the read governor every tick: no allocation). */
  get framesReceived(): number {
    return this.framesIn
  }

  /** Frames received from and sent to the client so far. */
  get frames(): { readonly received: number; readonly sent: number } {
    return { received: this.framesIn, sent: this.framesOut }
  }

  get initialized(): boolean {
    return this.initializedState !== null
  }

  get clientInfo(): ClientInfo | null {
    return this.initializedState?.clientInfo ?? null
  }

  get isClosed(): boolean {
    return this.closed
  }

  /** Called by the `initialize` handler once the handshake succeeded. */
  markInitialized(clientInfo: ClientInfo, optOutNotificationMethods: readonly string[]): void {
    const optOut = optOutNotificationMethods.length === 0 ? NO_OPT_OUT : new Set(optOutNotificationMethods)
    this.initializedState = { clientInfo, optOut }
  }

  /** Takes the engine upstream; false when there already is one or the session has closed. */
  attachUpstream(upstream: SessionUpstream): boolean {
    if (this.closed || this.upstream !== null) return false
    this.upstream = upstream
    return true
  }

  /** Whether a broadcast notification should reach this connection. */
  wantsNotification(method: string): boolean {
    return this.initializedState !== null && !this.initializedState.optOut.has(method)
  }

  handleText(text: string): void {
    this.framesIn++
    const withinRate = this.takeToken()
    const value = tryParseJson(text)
    const msg = classifyMessage(value)
    if (typeof msg === 'string') {
      // Never the frame itself: it may hold a credential the client meant for a method.
      if (withinRate) this.warns.warn({ bytes: text.length, problem: msg }, 'dropped malformed JSON-RPC frame')
      else this.droppedOverRate(FRAME_OVER_RATE)
      return
    }
    switch (msg.kind) {
      case 'request':
        if (this.deps.lifecycle.draining) {
          this.send(encodeError(msg.id, SHUTTING_DOWN_REFUSAL))
          this.answered(msg.id, msg.method, this.deps.clock.monotonicMs(), { kind: 'error', code: SHUTTING_DOWN_REFUSAL.code })
          return
        }
        if (!withinRate) {
          this.refuseOverloaded(msg.id, msg.method, 'request over the connection rate limit answered with -32001')
          this.refusedOverRate()
          return
        }
        this.overRateInARow = 0
        // The connection's own bound first: a connection past it takes no process-wide slot.
        if (this.inFlight >= this.deps.maxInFlightPerConnection) {
          this.refuseOverloaded(msg.id, msg.method, 'request over the connection in-flight bound answered with -32001')
          if (++this.overBoundInARow >= FLOOD_FRAMES && this.transport.pauseReading !== undefined) {
            this.overBoundInARow = 0
            this.waitingForSlot = this.transport.pauseReading(FLOOD_PAUSE_MAX_MS, 'slot')
          }
          return
        }
        this.overBoundInARow = 0
        if (!this.deps.inFlight.tryAcquire()) return this.refuseOverloaded(msg.id, msg.method, 'request over the process in-flight bound answered with -32001')
        // A classified message is always a JSON object.
        if (goesToEngine(msg.method, this.deps.dispatcher.has(msg.method), this.upstream !== null)) void this.runForwarded(msg.id, msg.method, text, value as JsonObject)
        else void this.runRequest(msg.id, msg.method, msg.params, text)
        return
      case 'notification':
        if (!withinRate) {
          this.droppedOverRate('notification over the connection rate limit dropped')
          return
        }
        // `initialized` needs no reply from the gateway; without an engine, codex drops other
        // client notifications silently.
        if (this.upstream === null) this.log.debug({ method: boundedClientText(msg.method) }, 'client notification')
        else this.forwardNotification(msg.method, text, value as JsonObject)
        return
      // Charged above, but delivered even over the limit (see the header).
      case 'response':
        if (this.forwardReply(msg.id, text, value as JsonObject)) return
        if (withinRate || this.serverRequests.awaits(msg.id)) this.serverRequests.resolve(msg.id, msg.result)
        else this.droppedOverRate(FRAME_OVER_RATE)
        return
      case 'error':
        if (this.forwardReply(msg.id, text, value as JsonObject)) return
        if (withinRate || this.serverRequests.awaits(msg.id)) this.serverRequests.reject(msg.id, msg.error)
        else this.droppedOverRate(FRAME_OVER_RATE)
        return
    }
  }

  handleBinary(): void {
    this.framesIn++
    if (!this.takeToken()) this.droppedOverRate(FRAME_OVER_RATE)
    else this.warns.warn({}, 'ignored binary WebSocket frame')
  }

  /**
   * Sends a frame written elsewhere (by the engine), as it is. False: the source should stop
   * until `resume` is called (see `SessionTransport.sendPaced`).
   */
  relay(text: string, resume: () => void): boolean {
    if (this.closed) return true
    this.framesOut++
    if (this.transport.sendPaced !== undefined) return this.transport.sendPaced(text, resume)
    this.transport.send(text)
    return true
  }

  sendNotification(method: string, params: unknown): void {
    this.send(encodeNotification(method, params))
  }

  /**
   * Sends a server→client request and resolves with the client's `result`. Rejects with
   * `ServerRequestError` (client error reply), `ServerRequestTimeout` or `ServerRequestAborted`.
   */
  request(method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    if (this.closed) return Promise.reject(new ServerRequestAborted(method))
    return this.serverRequests.request(method, timeoutMs, (id) => this.send(encodeRequest(id, method, params)))
  }

  /** Resolves once no request of this session is being handled. */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /**
   * Answers every request still in flight with `error` (a drain's deadline): the client hears
   * about each one before its socket closes. Their handlers' late answers are not sent, since
   * `close` follows.
   */
  answerUnanswered(error: RpcErrorBody): void {
    for (const [id, count] of this.unanswered) {
      for (let i = 0; i < count; i++) this.send(encodeError(id, error))
    }
    // What the client got is what its request's line and metrics say, whatever the handler ends with.
    this.answeredAtDeadline = { error, ids: new Map(this.unanswered) }
    this.unanswered.clear()
  }

  close(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.serverRequests.abortAll()
    this.upstream?.close()
    this.warns.flush()
    this.transport.close(code, reason)
  }

  /** The transport went away: nothing more is sent, and pending server requests fail. */
  detach(): void {
    this.closed = true
    this.serverRequests.abortAll()
    this.upstream?.close()
    this.warns.flush()
  }

  private send(text: string): void {
    if (this.closed) return
    this.framesOut++
    this.transport.send(text)
  }

  private refuseOverloaded(id: RequestId, method: string, warning: string): void {
    this.send(encodeError(id, OVERLOADED_BODY))
    this.warnDropped(warning)
    this.answered(id, method, this.deps.clock.monotonicMs(), OVERLOADED_OUTCOME)
  }

  /** The request's one DEBUG line and its observation. */
  private answered(id: RequestId, method: string, startedMs: number, handlerOutcome: RequestOutcome): void {
    const outcome = this.outcomeSent(id, handlerOutcome)
    const ms = this.deps.clock.monotonicMs() - startedMs
    const code = outcome.kind === 'error' ? outcome.code : outcome.kind
    this.log.debug({ method: boundedClientText(method), id: typeof id === 'string' ? boundedClientText(id) : id, ms, outcome: code }, 'request answered')
    this.deps.observer?.requestAnswered(method, outcome, ms)
  }

  /** The handler's outcome, unless the drain's deadline answered the request first (`answerUnanswered`). */
  private outcomeSent(id: RequestId, handlerOutcome: RequestOutcome): RequestOutcome {
    const atDeadline = this.answeredAtDeadline
    const count = atDeadline?.ids.get(id)
    if (atDeadline === null || count === undefined) return handlerOutcome
    if (count === 1) atDeadline.ids.delete(id)
    else atDeadline.ids.set(id, count - 1)
    return { kind: 'error', code: atDeadline.error.code }
  }

  /** Charges one inbound frame to the connection's bucket; false when it is over the limit. */
  private takeToken(): boolean {
    return this.bucket === null || this.bucket.take()
  }

  /** A frame dropped over the rate (junk, a notification, a stray reply): counted as a refused request is. */
  private droppedOverRate(warning: string): void {
    this.warnDropped(warning)
    this.refusedOverRate()
  }

  /** A frame refused over the rate: past `FLOOD_FRAMES` in a row, the socket waits for the refill. */
  private refusedOverRate(): void {
    if (this.bucket === null || ++this.overRateInARow < FLOOD_FRAMES) return
    this.overRateInARow = 0
    this.transport.pauseReading?.(Math.min(FLOOD_PAUSE_MAX_MS, this.bucket.msUntilFull()), 'rate')
  }

  private warnDropped(what: string): void {
    const now = this.deps.clock.monotonicMs()
    if (now - this.lastDropWarning < DROP_WARN_INTERVAL_MS) return
    this.lastDropWarning = now
    this.log.warn(what)
  }

  /** A client notification: to the upstream as written if the engine path's checks pass, else dropped. */
  private forwardNotification(method: string, text: string, frame: JsonObject): void {
    const refusal = engineNotificationRefusal(this.principal, method, text, frame)
    if (refusal === null) this.upstream?.forwardNotification(text)
    else this.warns.warn({ method: boundedClientText(method), problem: refusal }, 'client notification not forwarded to the engine')
  }

  /** True when the reply answered an engine request (as written, or as an error the engine can read). */
  private forwardReply(id: RequestId, text: string, frame: JsonObject): boolean {
    // Replies to the gateway's own requests skip the engine's frame check.
    if (this.upstream === null || !this.upstream.awaitsReply(id)) return false
    return this.upstream.forwardReply(id, engineFrameProblem(text, frame) === null ? text : null)
  }

  /** An engine-bound request: the engine path's checks, then the original frame to the upstream. */
  private async runForwarded(id: RequestId, method: string, text: string, frame: JsonObject): Promise<void> {
    const startedMs = this.deps.clock.monotonicMs()
    this.requestStarted(id)
    let outcome: RequestOutcome = { kind: 'unanswered' }
    try {
      const refusal = engineRequestRefusal(this, method, text, frame) ?? (this.upstream === null ? ENGINE_UNAVAILABLE : null)
      if (refusal !== null) {
        this.send(encodeError(id, refusal))
        outcome = { kind: 'error', code: refusal.code }
      } else outcome = await this.upstream!.forwardRequest(id, text)
    } finally {
      this.requestDone(id)
      this.answered(id, method, startedMs, outcome)
    }
  }

  private async runRequest(id: RequestId, method: string, params: unknown, text: string): Promise<void> {
    const startedMs = this.deps.clock.monotonicMs()
    this.requestStarted(id)
    let answer: RequestOutcome = { kind: 'error', code: INTERNAL_ERROR }
    try {
      const outcome = hasDuplicateTopLevelKey(text) ? { error: DUPLICATE_MEMBER_BODY } : await this.deps.dispatcher.dispatch(this, method, params)
      this.send('result' in outcome ? encodeResult(id, outcome.result) : encodeError(id, outcome.error))
      answer = 'result' in outcome ? { kind: 'result' } : { kind: 'error', code: outcome.error.code }
    } catch (err) {
      // The dispatcher answers handler failures itself; this is the last guard (e.g. a result
      // that cannot be encoded), so a request is always answered and never crashes the process.
      this.log.error({ method: boundedClientText(method), error: withheldError(err) }, 'request failed outside its handler')
      this.send(encodeError(id, { code: INTERNAL_ERROR, message: 'internal error' }))
    } finally {
      this.requestDone(id)
      this.answered(id, method, startedMs, answer)
    }
  }

  private requestStarted(id: RequestId): void {
    this.inFlight++
    this.unanswered.set(id, (this.unanswered.get(id) ?? 0) + 1)
  }

  private requestDone(id: RequestId): void {
    const count = this.unanswered.get(id)
    if (count === 1) this.unanswered.delete(id)
    else if (count !== undefined) this.unanswered.set(id, count - 1)
    this.deps.inFlight.release()
    this.inFlight--
    if (this.waitingForSlot) {
      this.waitingForSlot = false
      this.transport.resumeReading?.('slot')
    }
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const w of waiters) w()
    }
  }
}
