/**
 * A session's local WebSocket. Three rules live here, each for the sake of every other client:
 * - A client that does not read is closed (1008 `slow consumer`) once more than the bound
 *   waits for it, and destroyed if it will not even finish that close. What waits is what the
 *   gateway holds (`OutboundQueue`: frames handed to the socket and not yet written, each
 *   charged its cost in memory, not only its text).
 *   Frames from a source that can stop reading (the engine's upstream) are paced instead: when
 *   one would take the queue over the bound it is still sent, the source is told to stop, and
 *   it is resumed once that frame has left (so everything before it has too). A client that
 *   does not drain within `SLOW_CONSUMER_STALL_MS` of such a stop is closed as a slow
 *   consumer; while the source is stopped the gateway's own frames still go out (the stall
 *   timer decides), up to `STOPPED_CEILING` times the bound. The gateway holds at most the
 *   bound, the frame that crossed it and what the source had already read when it stopped —
 *   never an unbounded queue — and nothing once the socket has closed.
 * - A client the session finds flooding is not read for a while (`pauseReading`): its frames
 *   wait in TCP, not in the process.
 * - With a heartbeat, every socket must answer each ping before the next, or it is dropped.
 * - A socket's errors are logged without their text and end the socket.
 */
import type { RawData, WebSocket, WebSocketServer } from 'ws'
import { withheldError, type AppLogger } from '../log/logger.js'
import type { PauseReason, Session, SessionTransport } from './session.js'
import { systemClock, type Clock, type TimerHandle } from '../clock.js'
import { OutboundQueue } from './outbound-queue.js'
import type { TurnBudget } from './turn-budget.js'

/** A client frame as the turn budget keeps it: ws's text bytes, or null for a binary frame (only counted). */
export type InboundFrame = RawData | null

/**
 * How long a close handshake the server began may take before the socket is destroyed (a
 * slow consumer's, or a drain's: a peer that never answers must not hold a stop for ws's 30 s).
 */
export const CLOSE_HANDSHAKE_GRACE_MS = 5_000

/** How long a paced source may stay stopped on a client that does not drain before the client is closed. */
export const SLOW_CONSUMER_STALL_MS = 10_000

/** While a paced source is stopped, the gateway's own frames may take the queue this many times over the bound. */
export const STOPPED_CEILING = 2

/**
 * Sends through the socket until more than `maxBytes` wait in its outbound buffer; then the
 * socket is closed and nothing more is sent. `sendPaced` (see the header) stops a source at
 * the bound instead.
 */
export function boundedTransport(
  socket: WebSocket,
  maxBytes: number,
  log: AppLogger,
  timers: Pick<Clock, 'setTimeout' | 'clearTimeout'> = systemClock,
  onSlowConsumer: () => void = () => {},
): SessionTransport {
  let closing = false
  /** The stopped source's resume, while a paced frame is on its way out. */
  let stopped: (() => void) | null = null
  let stallTimer: TimerHandle = null
  /** Why the client's socket is not read, each with the timer that ends that pause; read again once empty. */
  const pauses = new Map<PauseReason, TimerHandle>()
  const endPause = (reason: PauseReason): void => {
    if (!pauses.has(reason)) return
    timers.clearTimeout(pauses.get(reason) ?? null)
    pauses.delete(reason)
    if (pauses.size === 0) socket.resume()
  }
  const readAgain = (): void => {
    for (const reason of [...pauses.keys()]) endPause(reason)
  }
  const queue = new OutboundQueue(socket)
  socket.once('close', () => {
    queue.release()
    for (const timer of pauses.values()) timers.clearTimeout(timer)
    pauses.clear()
  })
  const closeWithGrace = (code: number, reason: string): void => {
    closing = true
    timers.clearTimeout(stallTimer)
    // The peer's close frame must be read.
    readAgain()
    socket.close(code, reason)
    const grace = timers.setTimeout(() => socket.terminate(), CLOSE_HANDSHAKE_GRACE_MS)
    socket.once('close', () => timers.clearTimeout(grace))
  }
  const closeSlow = (): void => {
    log.warn({ bufferedBytes: queue.bytes }, 'closing slow consumer')
    onSlowConsumer()
    closeWithGrace(1008, 'slow consumer')
  }
  // Called once the frame that crossed the bound is written (or the socket failed).
  const drained = (): void => {
    timers.clearTimeout(stallTimer)
    const resume = stopped
    stopped = null
    if (!closing) resume?.()
  }
  const usable = (): boolean => !closing && socket.readyState === socket.OPEN
  return {
    send(text) {
      if (!usable()) return
      // Judged on what is still queued from earlier sends: one large reply to a client that
      // reads is fine; a client that let `maxBytes` pile up is not. While a paced frame is on
      // its way out the queue is over the bound by design: the stall timer decides then,
      // unless the gateway's own frames pile up past the ceiling.
      if (queue.bytes > (stopped === null ? maxBytes : STOPPED_CEILING * maxBytes)) closeSlow()
      else queue.send(text)
    },
    sendPaced(text, resume) {
      if (!usable()) return true
      if (stopped !== null) {
        // Read by the source before it stopped: sent, it is already bounded.
        queue.send(text)
        return false
      }
      // `length` undercounts multi-byte text; such a frame stops the source one frame later.
      if (queue.bytes + text.length <= maxBytes) {
        queue.send(text)
        return true
      }
      stopped = resume
      stallTimer = timers.setTimeout(() => {
        if (stopped !== null && usable()) closeSlow()
      }, SLOW_CONSUMER_STALL_MS)
      queue.send(text, drained)
      return false
    },
    pauseReading(ms, reason) {
      if (pauses.has(reason) || !usable()) return false
      // ws's documented pause: the socket is not read, TCP pushes back on the sender.
      if (pauses.size === 0) socket.pause()
      pauses.set(reason, timers.setTimeout(() => endPause(reason), ms))
      return true
    },
    resumeReading: endPause,
    close(code, reason) {
      if (!closing) closeWithGrace(code, reason)
    },
  }
}

/**
 * Feeds the socket's frames to its session, each in its turn (`budget`, see turn-budget.ts),
 * until it closes; then runs what still waits, and calls `onClosed` (once). The session must
 * already send through a transport over this socket.
 */
export function serveSocket(
  socket: WebSocket,
  session: Session,
  log: AppLogger,
  heartbeat: Heartbeat | null,
  clock: Pick<Clock, 'monotonicMs'>,
  budget: TurnBudget<InboundFrame>,
  onClosed: () => void,
): void {
  heartbeat?.track(socket)
  // @fastify/websocket's own error listener holds the Fastify request and reply for the
  // socket's whole life; this one holds neither (same handling: log, then terminate).
  socket.removeAllListeners('error')
  socket.on('error', (err: Error) => {
    log.debug({ error: withheldError(err) }, 'websocket error')
    socket.terminate()
  })
  const budgeted = budget.track({
    run: (frame) => (frame === null ? session.handleBinary() : session.handleText(frame.toString())),
    pause: () => session.holdForTurn(),
    resume: () => session.releaseForTurn(),
  })
  socket.on('message', (data: RawData, isBinary: boolean) => budget.deliver(budgeted, isBinary ? null : data))
  // The connection's one closing line: how long, how it ended, how much went each way, and
  // what kind of credential it held (never the credential).
  socket.on('close', (code: number) => {
    // Received before the close: handled as ws would have (see turn-budget.ts).
    budget.flush(budgeted)
    session.detach()
    heartbeat?.untrack(socket)
    onClosed()
    const { received, sent } = session.frames
    log.info(
      { code, durationMs: Math.round(clock.monotonicMs() - session.openedAtMs), messagesIn: received, messagesOut: sent, principal: session.principal.kind },
      'websocket connection closed',
    )
  })
}

/**
 * Stops the WebSocket server once sessions are drained (`drainAndClose` drains them; this is
 * not a second drain). A socket still open here belongs to an app closed without a drain: it
 * is closed 1001 at once. Resolves when every socket has finished its close handshake, so the
 * close frames reach the clients before the process exits.
 */
export function closeWebSockets(server: WebSocketServer): Promise<void> {
  for (const socket of server.clients) {
    // A socket not being read (a flooder) is read again, or its peer's close would go unseen.
    socket.resume()
    if (socket.readyState === socket.OPEN) socket.close(1001, 'server shutting down')
  }
  return new Promise((resolve) => server.close(() => resolve()))
}

export interface Pingable {
  /** Not being read (held back as a flooder): its pong could not be seen, so it is not judged. */
  readonly isPaused?: boolean
  ping(): void
  terminate(): void
  on(event: 'pong', listener: () => void): unknown
}

/**
 * Server-side keepalive: every interval each socket must have answered the previous ping,
 * or it is terminated as dead. One timer for all sockets; `tick()` is public so tests can
 * drive it without waiting.
 */
export class Heartbeat {
  private readonly alive = new Map<Pingable, boolean>()
  private timer: NodeJS.Timeout | null = null

  constructor(private readonly intervalMs: number) {}

  track(socket: Pingable): void {
    this.alive.set(socket, true)
    socket.on('pong', () => {
      if (this.alive.has(socket)) this.alive.set(socket, true)
    })
    if (this.timer === null && this.intervalMs > 0) {
      this.timer = setInterval(() => this.tick(), this.intervalMs)
      this.timer.unref()
    }
  }

  untrack(socket: Pingable): void {
    this.alive.delete(socket)
  }

  /** One round: terminate sockets that missed the last ping, ping the rest (a socket not being read is skipped). */
  tick(): void {
    for (const [socket, ok] of this.alive) {
      if (socket.isPaused === true) continue
      if (!ok) {
        this.alive.delete(socket)
        socket.terminate()
        continue
      }
      this.alive.set(socket, false)
      socket.ping()
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }
}
