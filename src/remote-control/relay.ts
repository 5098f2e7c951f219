/**
 * The remote-control relay: turns the envelopes of the one backend WebSocket into many virtual
 * connections, each a session like a local socket's. It knows nothing of the socket: it is
 * handed each text frame (`handleText`), sends through `send`, and is told when a new backend
 * socket is up (`onReconnect`).
 *
 * Semantics follow codex's `client_tracker.rs` and `websocket.rs`:
 * - A virtual connection is a (client_id, stream_id). Only a `client_message` holding an
 *   `initialize` request opens one; a repeat `initialize` replaces it (its `seq_id` becomes the
 *   new baseline, so it is never dropped as a duplicate); anything else for an unknown key is
 *   ignored, except `ping`, answered `pong {status: "unknown"}`.
 * - An inbound `seq_id` at or below the last one delivered on the connection is dropped.
 * - Outbound `seq_id`s count from 1 per (client_id, stream_id) and keep counting across a
 *   replacing `initialize` and after a close: the backend acks by that counter, so restarting
 *   it would let an old ack remove new envelopes.
 * - Every sent envelope (pongs and chunks too) is kept until acked and sent again, in order,
 *   by `onReconnect`. With `maxUnacked` (128) unacked on a connection, its further output waits
 *   in a bounded queue and goes out as acks arrive; past the queue's bound the connection is
 *   closed as a slow consumer (as a local socket would be).
 * - Idle connections (no `client_message` or `ping` for 10 minutes) are closed by `sweep`.
 * - The latest `cursor` received is kept in memory only (`subscribeCursor`).
 */
import { randomUUID } from 'node:crypto'
import { withheldError, type AppLogger } from '../log/logger.js'
import type { SessionTransport } from '../rpc/session.js'
import {
  ChunkReassembler,
  encodePong,
  parseClientEnvelope,
  SEGMENT_MAX_BYTES,
  serverMessagePieces,
  type Ack,
  type ClientEnvelope,
  type ClientMessage,
  type ClientMessageChunk,
  type JsonObject,
  type OutboundPiece,
} from './envelopes.js'
import type { Clock } from '../clock.js'
import { OVERLOADED } from '../rpc/errors.js'

/** The error an `initialize` past `maxConnections` is answered with. */
export const TOO_MANY_REMOTE_CONNECTIONS = 'too many remote-control connections'

export interface VirtualConnectionKey {
  readonly clientId: string
  readonly streamId: string
}

/** What the relay needs of a session (`rpc/session.ts` `Session` fits). */
export interface RelaySession {
  handleText(text: string): void
  /** The remote client is gone: nothing more is sent, pending server requests fail. */
  detach(): void
}

export interface RelayLimits {
  /** Unacked envelopes per virtual connection before its output waits (codex: 128). */
  readonly maxUnacked: number
  /** Bytes of output one virtual connection may have waiting behind `maxUnacked`. */
  readonly maxQueuedBytes: number
  /** A virtual connection with no inbound message for this long is closed (codex: 10 min). */
  readonly idleTimeoutMs: number
  /** How often `startIdleSweep` sweeps (codex: 30 s). */
  readonly sweepIntervalMs: number
  /** Largest reassembled inbound message (the server's max payload). */
  readonly maxMessageBytes: number
  /** Most inbound chunked messages being reassembled at once (codex: 128). */
  readonly maxAssemblies: number
  /** Bound on the bytes of all inbound chunked messages being reassembled at once. */
  readonly maxReassemblyBytes: number
  /**
   * Most virtual connections open at once. Each holds a session (and, with the engine on, an
   * engine connection: a file descriptor); a backend that opens more gets its `initialize`
   * answered -32001 instead of a session. Codex has no such bound; the default is far above what
   * remote clients open in practice (`--remote-control-max-connections`).
   */
  readonly maxConnections: number
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  maxUnacked: 128,
  maxQueuedBytes: 16 * 1024 * 1024,
  idleTimeoutMs: 10 * 60 * 1000,
  sweepIntervalMs: 30 * 1000,
  maxMessageBytes: 16 * 1024 * 1024,
  maxAssemblies: 128,
  maxReassemblyBytes: 64 * 1024 * 1024,
  maxConnections: 128,
}

export interface RemoteRelayOptions<S extends RelaySession> {
  /** Builds the session of a new virtual connection (principal `remote`); it sends through `transport`. */
  createSession(key: VirtualConnectionKey, transport: SessionTransport): S
  /** The session ended (closed by either side or replaced): e.g. remove it from the registry. */
  sessionEnded?(session: S, key: VirtualConnectionKey): void
  /** Sends one envelope on the backend socket; may drop it while disconnected (it is replayed). */
  send(envelopeText: string): void
  clock: Clock
  log: AppLogger
  limits?: Partial<RelayLimits>
}

type Queued = { readonly kind: 'message'; readonly text: string; readonly bytes: number } | { readonly kind: 'pong' }

/** One live virtual connection: its session and what came in on it. */
interface Connection<S> {
  session: S | null
  lastInboundSeq: number | null
  lastActivity: number
}

/** The outbound state of a (client_id, stream_id), which outlives a replaced connection. */
interface Stream<S> {
  readonly mapKey: string
  readonly key: VirtualConnectionKey
  conn: Connection<S>
  nextSeq: number
  readonly unacked: OutboundPiece[]
  queue: Queued[]
  queuedBytes: number
}

/** How many closed streams' outbound counters are remembered (oldest forgotten first). */
const RETIRED_COUNTERS_MAX = 4096

function mapKeyOf(clientId: string, streamId: string): string {
  return JSON.stringify([clientId, streamId])
}

/** A JSON-RPC `initialize` request (not a notification or a reply). */
function isInitializeRequest(message: JsonObject): boolean {
  const id = message.id
  return message.method === 'initialize' && (typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)))
}

export class RemoteRelay<S extends RelaySession = RelaySession> {
  private readonly limits: RelayLimits
  private readonly streams = new Map<string, Stream<S>>()
  /** client_id → the stream_id given to its connection opened without one (codex's legacy clients). */
  private readonly legacyStreams = new Map<string, string>()
  /** Next outbound `seq_id` of closed streams, so a reopened one keeps counting (Map order: oldest first). */
  private readonly retiredCounters = new Map<string, number>()
  private readonly reassembler: ChunkReassembler
  private cursor: string | null = null
  private sweepHandle: unknown = null

  constructor(private readonly opts: RemoteRelayOptions<S>) {
    this.limits = { ...DEFAULT_RELAY_LIMITS, ...opts.limits }
    this.reassembler = new ChunkReassembler({
      maxMessageBytes: this.limits.maxMessageBytes,
      maxAssemblies: this.limits.maxAssemblies,
      maxBufferedBytes: this.limits.maxReassemblyBytes,
    })
  }

  /** The latest `cursor` the backend sent: `x-codex-subscribe-cursor` on the next handshake. */
  get subscribeCursor(): string | null {
    return this.cursor
  }

  get connectionCount(): number {
    return this.streams.size
  }

  has(key: VirtualConnectionKey): boolean {
    return this.streams.has(mapKeyOf(key.clientId, key.streamId))
  }

  /** Envelopes sent on a virtual connection and not yet acked (chunks count one each). */
  unackedCount(key: VirtualConnectionKey): number {
    return this.streams.get(mapKeyOf(key.clientId, key.streamId))?.unacked.length ?? 0
  }

  /** One text frame from the backend. */
  handleText(text: string): void {
    const env = parseClientEnvelope(text)
    if ('problem' in env) {
      // Never the frame: a client's message may hold a credential.
      this.opts.log.warn({ bytes: text.length, problem: env.problem }, 'dropped malformed remote-control envelope')
      return
    }
    if (env.type === 'client_message_chunk') {
      this.handleChunk(env, text)
      return
    }
    this.handleEnvelope(env)
    // As codex: recorded once the envelope was handled, whatever became of it.
    if (env.cursor !== null) this.cursor = env.cursor
  }

  /**
   * A new backend socket is up: everything unacked goes out again before anything new, each
   * virtual connection's envelopes in `seq_id` order (connections one after another).
   */
  onReconnect(): void {
    for (const stream of this.streams.values()) {
      for (const piece of stream.unacked) this.transmit(piece.text)
    }
  }

  /** Closes virtual connections idle for `idleTimeoutMs`. */
  sweep(): void {
    const now = this.opts.clock.monotonicMs()
    for (const stream of [...this.streams.values()]) {
      if (now - stream.conn.lastActivity >= this.limits.idleTimeoutMs) this.close(stream, 'idle remote client closed')
    }
  }

  /** Sweeps every `sweepIntervalMs` on the clock until `closeAll`. */
  startIdleSweep(): void {
    if (this.sweepHandle !== null) return
    const tick = (): void => {
      this.sweep()
      this.sweepHandle = this.opts.clock.setTimeout(tick, this.limits.sweepIntervalMs)
    }
    this.sweepHandle = this.opts.clock.setTimeout(tick, this.limits.sweepIntervalMs)
  }

  /** Remote control turned off: every virtual connection ends (the cursor is kept). */
  closeAll(): void {
    if (this.sweepHandle !== null) {
      this.opts.clock.clearTimeout(this.sweepHandle)
      this.sweepHandle = null
    }
    for (const stream of [...this.streams.values()]) this.close(stream, 'remote control stopped')
    this.reassembler.clear()
    this.legacyStreams.clear()
  }

  // ---- inbound ----

  private handleChunk(chunk: ClientMessageChunk, text: string): void {
    if (Buffer.byteLength(text) > SEGMENT_MAX_BYTES) {
      if (chunk.streamId !== null) this.reassembler.forget(chunk.clientId, chunk.streamId)
      this.opts.log.warn({ clientId: chunk.clientId, bytes: text.length }, 'dropped oversized remote-control chunk')
      return
    }
    // A chunk of a message already delivered (a replay after a reconnect) is not reassembled again.
    const stream = chunk.streamId === null ? undefined : this.streams.get(mapKeyOf(chunk.clientId, chunk.streamId))
    if (stream !== undefined && chunk.seqId !== null && stream.conn.lastInboundSeq !== null && chunk.seqId <= stream.conn.lastInboundSeq) return
    const outcome = this.reassembler.observe(chunk)
    if (outcome.kind !== 'complete') {
      if (outcome.problem !== null) {
        this.opts.log.warn({ clientId: chunk.clientId, seqId: chunk.seqId, problem: outcome.problem }, 'dropped remote-control chunked message')
      }
      return
    }
    this.handleEnvelope({ type: 'client_message', clientId: chunk.clientId, streamId: chunk.streamId, seqId: chunk.seqId, cursor: chunk.cursor, message: outcome.message })
    if (chunk.cursor !== null) this.cursor = chunk.cursor
  }

  private handleEnvelope(env: Exclude<ClientEnvelope, ClientMessageChunk>): void {
    switch (env.type) {
      case 'client_message':
        this.handleClientMessage(env)
        return
      case 'ack':
        this.handleAck(env)
        return
      case 'ping': {
        const streamId = this.streamIdFor(env.clientId, env.streamId, 'ping')
        if (streamId !== null) this.handlePing(env.clientId, streamId)
        return
      }
      case 'client_closed': {
        const streamId = this.streamIdFor(env.clientId, env.streamId, 'other')
        const stream = streamId === null ? undefined : this.streams.get(mapKeyOf(env.clientId, streamId))
        if (stream !== undefined) this.close(stream, 'remote client closed')
        return
      }
    }
  }

  /**
   * The stream_id an envelope without one belongs to (codex's fallback for clients that predate
   * stream ids): a new `initialize` gets the client's legacy stream or a fresh one; a `ping`
   * for none gets a fresh one (so it is answered `unknown`); anything else is ignored (null).
   */
  private streamIdFor(clientId: string, streamId: string | null, kind: 'initialize' | 'ping' | 'other'): string | null {
    if (streamId !== null) return streamId
    const legacy = this.legacyStreams.get(clientId)
    if (legacy !== undefined) return legacy
    return kind === 'other' ? null : randomUUID()
  }

  private handleClientMessage(env: ClientMessage): void {
    const initialize = isInitializeRequest(env.message)
    const streamId = this.streamIdFor(env.clientId, env.streamId, initialize ? 'initialize' : 'other')
    if (streamId === null) return
    const key: VirtualConnectionKey = { clientId: env.clientId, streamId }
    let stream = this.streams.get(mapKeyOf(key.clientId, key.streamId))
    if (initialize) {
      if (stream === undefined && this.streams.size >= this.limits.maxConnections) {
        this.refuseOpen(key, env.message.id)
        return
      }
      stream = this.open(key, stream)
      if (stream === undefined) return
      if (env.streamId === null) this.legacyStreams.set(env.clientId, streamId)
    } else if (stream === undefined) {
      this.opts.log.debug({ clientId: env.clientId }, 'ignored remote-control message for an unknown connection')
      return
    } else if (env.seqId !== null && stream.conn.lastInboundSeq !== null && env.seqId <= stream.conn.lastInboundSeq) {
      this.opts.log.debug({ clientId: env.clientId, seqId: env.seqId }, 'dropped repeated remote-control message')
      return
    }
    const conn = stream.conn
    conn.lastActivity = this.opts.clock.monotonicMs()
    if (env.seqId !== null) conn.lastInboundSeq = env.seqId
    // The session parses the text itself, exactly as a local socket's frame.
    conn.session?.handleText(JSON.stringify(env.message))
  }

  private handleAck(ack: Ack): void {
    const stream = this.streams.get(mapKeyOf(ack.clientId, ack.streamId))
    if (stream === undefined) return
    // Unacked pieces are in (seq_id, segment_id) order, so the acked ones are a prefix. An ack
    // without segment_id covers every chunk of its seq_id (codex compares (seq, segment ?? 0)
    // with (ack seq, ack segment ?? MAX)).
    let n = 0
    for (const piece of stream.unacked) {
      const acked = piece.seqId < ack.seqId || (piece.seqId === ack.seqId && (ack.segmentId === null || (piece.segmentId ?? 0) <= ack.segmentId))
      if (!acked) break
      n++
    }
    if (n === 0) return
    stream.unacked.splice(0, n)
    this.drain(stream)
  }

  private handlePing(clientId: string, streamId: string): void {
    const stream = this.streams.get(mapKeyOf(clientId, streamId))
    if (stream !== undefined) {
      stream.conn.lastActivity = this.opts.clock.monotonicMs()
      this.enqueue(stream, { kind: 'pong' })
      return
    }
    // No connection owns this pong, so it is not kept for replay: nothing would ever free it.
    const mapKey = mapKeyOf(clientId, streamId)
    const seqId = this.retiredCounters.get(mapKey) ?? 1
    this.retireCounter(mapKey, seqId + 1)
    this.transmit(encodePong({ clientId, streamId, seqId }, 'unknown'))
  }

  /**
   * Answers an `initialize` that would open one connection too many with -32001, outside any
   * stream (like a pong for an unknown connection: not kept for replay, nothing would free it).
   */
  private refuseOpen(key: VirtualConnectionKey, id: unknown): void {
    this.opts.log.warn({ clientId: key.clientId, open: this.streams.size }, 'refused a remote-control connection: too many open')
    const mapKey = mapKeyOf(key.clientId, key.streamId)
    const seqId = this.retiredCounters.get(mapKey) ?? 1
    this.retireCounter(mapKey, seqId + 1)
    const reply = JSON.stringify({ id, error: { code: OVERLOADED, message: TOO_MANY_REMOTE_CONNECTIONS } })
    for (const piece of serverMessagePieces({ clientId: key.clientId, streamId: key.streamId, seqId }, reply) ?? []) this.transmit(piece.text)
  }

  // ---- connections ----

  /** Opens (or replaces) the connection of `key`; undefined when its session cannot be made. */
  private open(key: VirtualConnectionKey, existing: Stream<S> | undefined): Stream<S> | undefined {
    const mapKey = mapKeyOf(key.clientId, key.streamId)
    const conn: Connection<S> = { session: null, lastInboundSeq: null, lastActivity: this.opts.clock.monotonicMs() }
    let stream = existing
    if (stream !== undefined) {
      this.endSession(stream)
      // What the old session had not sent yet answered its requests, not the new one's.
      stream.queue = []
      stream.queuedBytes = 0
      stream.conn = conn
      this.opts.log.debug({ clientId: key.clientId }, 'remote-control connection replaced by a new initialize')
    } else {
      const nextSeq = this.retiredCounters.get(mapKey) ?? 1
      this.retiredCounters.delete(mapKey)
      stream = { mapKey, key, conn, nextSeq, unacked: [], queue: [], queuedBytes: 0 }
      this.streams.set(mapKey, stream)
    }
    const owner = stream
    const transport: SessionTransport = {
      // Output of a replaced or closed session goes nowhere.
      send: (text) => {
        if (owner.conn === conn && this.streams.get(mapKey) === owner) this.enqueue(owner, { kind: 'message', text, bytes: Buffer.byteLength(text) })
      },
      close: () => {
        if (owner.conn === conn && this.streams.get(mapKey) === owner) this.close(owner, 'remote connection closed by the server', false)
      },
    }
    try {
      conn.session = this.opts.createSession(key, transport)
    } catch (err) {
      this.opts.log.error({ error: withheldError(err) }, 'could not create a remote-control session')
      this.close(stream, 'session creation failed', false)
      return undefined
    }
    return stream
  }

  /**
   * Ends a virtual connection: its session is detached (unless it closed itself), and what it
   * had unacked or queued is dropped, since no client is left to receive it.
   */
  private close(stream: Stream<S>, why: string, detach = true): void {
    if (this.streams.get(stream.mapKey) !== stream) return
    this.streams.delete(stream.mapKey)
    this.retireCounter(stream.mapKey, stream.nextSeq)
    this.reassembler.forget(stream.key.clientId, stream.key.streamId)
    if (this.legacyStreams.get(stream.key.clientId) === stream.key.streamId) this.legacyStreams.delete(stream.key.clientId)
    this.endSession(stream, detach)
    this.opts.log.debug({ clientId: stream.key.clientId }, why)
  }

  private endSession(stream: Stream<S>, detach = true): void {
    const session = stream.conn.session
    if (session === null) return
    stream.conn.session = null
    if (detach) session.detach()
    this.opts.sessionEnded?.(session, stream.key)
  }

  private retireCounter(mapKey: string, nextSeq: number): void {
    this.retiredCounters.delete(mapKey)
    this.retiredCounters.set(mapKey, nextSeq)
    if (this.retiredCounters.size > RETIRED_COUNTERS_MAX) {
      const oldest = this.retiredCounters.keys().next().value
      if (oldest !== undefined) this.retiredCounters.delete(oldest)
    }
  }

  // ---- outbound ----

  /** Sends now, or queues behind earlier output while `maxUnacked` envelopes await acks. */
  private enqueue(stream: Stream<S>, item: Queued): void {
    if (stream.queue.length === 0 && stream.unacked.length < this.limits.maxUnacked) {
      this.emit(stream, item)
      return
    }
    const bytes = item.kind === 'message' ? item.bytes : 0
    if (stream.queuedBytes + bytes > this.limits.maxQueuedBytes) {
      this.opts.log.warn({ clientId: stream.key.clientId, unacked: stream.unacked.length }, 'closing slow remote-control client')
      this.close(stream, 'slow remote client closed')
      return
    }
    stream.queue.push(item)
    stream.queuedBytes += bytes
  }

  private drain(stream: Stream<S>): void {
    while (stream.queue.length > 0 && stream.unacked.length < this.limits.maxUnacked) {
      const item = stream.queue.shift() as Queued
      if (item.kind === 'message') stream.queuedBytes -= item.bytes
      this.emit(stream, item)
    }
  }

  /** Numbers one outbound message, keeps its envelope(s) for replay, and sends them. */
  private emit(stream: Stream<S>, item: Queued): void {
    const ids = { clientId: stream.key.clientId, streamId: stream.key.streamId, seqId: stream.nextSeq++ }
    const pieces = item.kind === 'pong' ? [{ seqId: ids.seqId, segmentId: null, text: encodePong(ids, 'active') }] : serverMessagePieces(ids, item.text)
    if (pieces === null) {
      // As codex: a message too large for any chunking is dropped (its seq_id is skipped).
      this.opts.log.warn({ clientId: stream.key.clientId, bytes: item.kind === 'message' ? item.bytes : 0 }, 'dropped remote-control message too large to chunk')
      return
    }
    for (const piece of pieces) {
      stream.unacked.push(piece)
      this.transmit(piece.text)
    }
  }

  private transmit(text: string): void {
    try {
      this.opts.send(text)
    } catch (err) {
      // Kept in the unacked buffer: it goes out again on the next reconnect.
      this.opts.log.debug({ error: withheldError(err) }, 'remote-control send failed')
    }
  }
}
