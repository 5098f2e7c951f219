/**
 * The JSON text envelopes of the remote-control backend WebSocket, as codex's
 * `remote_control/protocol.rs` and `segment.rs` write them:
 * `type` snake_case, the ids flattened beside the event's own fields, and `message` a JSON-RPC
 * message embedded as a JSON value (not a string).
 *
 * Parsing never quotes a value in its problem text: an envelope may carry a client's
 * credential inside `message`, and problems are logged.
 */
import { Type, Compile, type Validator } from '../util/typebox.js'
import { OptionalNullable } from '../util/typebox-nullable.js'
import { isJsonObject, tryParseJson } from '../util/json.js'

// ---------------------------------------------------------------------------------------------
// Limits (codex `segment.rs`).

/** An outbound envelope above this many bytes is sent as chunks; an inbound chunk above it is dropped. */
export const SEGMENT_MAX_BYTES = 150 * 1024
/**
 * Base64 characters per outbound chunk: 100 KiB of base64 here, where codex cuts 100 KiB of raw
 * bytes (≈137 KiB of base64). Both keep every chunk envelope under 150 KiB.
 */
export const SEGMENT_BASE64_BYTES = 100 * 1024
/** Raw message bytes per chunk: a multiple of 3, so only the last chunk carries base64 padding. */
const SEGMENT_RAW_BYTES = (SEGMENT_BASE64_BYTES / 4) * 3
/** Most chunks one message may be cut into (either direction). */
export const SEGMENT_COUNT_MAX = 1024

// ---------------------------------------------------------------------------------------------
// Inbound (backend → server).

/** serde's `Option` reads a missing member and `null` alike. */
const Count = Type.Integer({ minimum: 0 })

const Ids = {
  client_id: Type.String(),
  stream_id: OptionalNullable(Type.String()),
  seq_id: OptionalNullable(Count),
  cursor: OptionalNullable(Type.String()),
}

// Unknown members are ignored, as serde does. `message` must at least be an object: codex
// fails the whole envelope when it is not a JSON-RPC message.
const ClientMessageWire = Type.Object({ ...Ids, message: Type.Object({}) })
const ClientMessageChunkWire = Type.Object({
  ...Ids,
  segment_id: Count,
  segment_count: Count,
  message_size_bytes: Count,
  message_chunk_base64: Type.String(),
})
// An ack must name `stream_id` and `seq_id` (what it acknowledges); codex ignores one without them.
const AckWire = Type.Object({ ...Ids, stream_id: Type.String(), seq_id: Count, segment_id: OptionalNullable(Count) })
const IdsOnlyWire = Type.Object(Ids)

const VALIDATORS: Readonly<Record<ClientEnvelope['type'], Validator>> = {
  client_message: Compile(ClientMessageWire),
  client_message_chunk: Compile(ClientMessageChunkWire),
  ack: Compile(AckWire),
  ping: Compile(IdsOnlyWire),
  client_closed: Compile(IdsOnlyWire),
}

/** The ids every inbound envelope carries, `null` when absent. */
export interface ClientIds {
  readonly clientId: string
  readonly streamId: string | null
  readonly seqId: number | null
  /** The backend's subscribe cursor; sent back as `x-codex-subscribe-cursor` on reconnect. */
  readonly cursor: string | null
}

export type JsonObject = Record<string, unknown>

export interface ClientMessage extends ClientIds {
  readonly type: 'client_message'
  readonly message: JsonObject
}

export interface ClientMessageChunk extends ClientIds {
  readonly type: 'client_message_chunk'
  readonly segmentId: number
  readonly segmentCount: number
  readonly messageSizeBytes: number
  readonly chunkBase64: string
}

export interface Ack extends ClientIds {
  readonly type: 'ack'
  readonly streamId: string
  readonly seqId: number
  /** Set when acking part of a chunked envelope: chunks up to this one of `seqId` are received. */
  readonly segmentId: number | null
}

export interface Ping extends ClientIds {
  readonly type: 'ping'
}

export interface ClientClosed extends ClientIds {
  readonly type: 'client_closed'
}

export type ClientEnvelope = ClientMessage | ClientMessageChunk | Ack | Ping | ClientClosed

/** One frame's text → an envelope, or why it is none (no value of the frame is quoted). */
export function parseClientEnvelope(text: string): ClientEnvelope | { readonly problem: string } {
  const raw = tryParseJson(text)
  if (raw === undefined) return { problem: 'not JSON' }
  if (!isJsonObject(raw)) return { problem: 'not a JSON object' }
  const type = raw.type
  if (typeof type !== 'string' || !Object.hasOwn(VALIDATORS, type)) return { problem: 'unknown envelope type' }
  const kind = type as ClientEnvelope['type']
  const validator = VALIDATORS[kind]
  if (!validator.Check(raw)) {
    const [first] = validator.Errors(raw)
    const where = first === undefined || first.instancePath === '' ? '/' : first.instancePath
    return { problem: `${kind} at ${where}: ${first?.message ?? 'does not match the expected shape'}` }
  }
  const ids: ClientIds = {
    clientId: raw.client_id as string,
    streamId: (raw.stream_id as string | null | undefined) ?? null,
    seqId: (raw.seq_id as number | null | undefined) ?? null,
    cursor: (raw.cursor as string | null | undefined) ?? null,
  }
  switch (kind) {
    case 'client_message':
      return { type: kind, ...ids, message: raw.message as JsonObject }
    case 'client_message_chunk':
      return {
        type: kind,
        ...ids,
        segmentId: raw.segment_id as number,
        segmentCount: raw.segment_count as number,
        messageSizeBytes: raw.message_size_bytes as number,
        chunkBase64: raw.message_chunk_base64 as string,
      }
    case 'ack':
      return { type: kind, ...ids, streamId: raw.stream_id as string, seqId: raw.seq_id as number, segmentId: (raw.segment_id as number | null | undefined) ?? null }
    case 'ping':
    case 'client_closed':
      return { type: kind, ...ids }
  }
}

// ---------------------------------------------------------------------------------------------
// Outbound (server → backend). Member order as serde writes them: the event's, then the ids.

/** Every outbound envelope, pongs included, carries a `seq_id` from its stream's counter (codex). */
export interface ServerIds {
  readonly clientId: string
  readonly streamId: string
  readonly seqId: number
}

function idsTail(ids: ServerIds): string {
  return `"client_id":${JSON.stringify(ids.clientId)},"stream_id":${JSON.stringify(ids.streamId)},"seq_id":${ids.seqId}}`
}

/**
 * `messageJson` is spliced in as it is, so a large reply is not parsed and re-serialized: it
 * must be one JSON value, which is what `rpc/wire.ts` encodes.
 */
function encodeServerMessage(ids: ServerIds, messageJson: string): string {
  return `{"type":"server_message","message":${messageJson},${idsTail(ids)}`
}

function encodeServerMessageChunk(ids: ServerIds, segmentId: number, segmentCount: number, messageSizeBytes: number, chunkBase64: string): string {
  return (
    `{"type":"server_message_chunk","segment_id":${segmentId},"segment_count":${segmentCount},` +
    `"message_size_bytes":${messageSizeBytes},"message_chunk_base64":"${chunkBase64}",${idsTail(ids)}`
  )
}

export type PongStatus = 'active' | 'unknown'

export function encodePong(ids: ServerIds, status: PongStatus): string {
  return `{"type":"pong","status":"${status}",${idsTail(ids)}`
}

/** One envelope on the wire: a whole `server_message` (`segmentId` null) or one chunk of it. */
export interface OutboundPiece {
  readonly seqId: number
  readonly segmentId: number | null
  readonly text: string
}

/**
 * The envelopes that carry one JSON-RPC message: itself, or, when its envelope exceeds
 * 150 KiB, chunks of the message's UTF-8 JSON (all with the message's `seq_id`, `segment_id`
 * from 0). Null when even `SEGMENT_COUNT_MAX` chunks cannot hold it.
 */
export function serverMessagePieces(ids: ServerIds, messageJson: string): OutboundPiece[] | null {
  const size = Buffer.byteLength(messageJson)
  if (size <= SEGMENT_MAX_BYTES) {
    const whole = encodeServerMessage(ids, messageJson)
    if (Buffer.byteLength(whole) <= SEGMENT_MAX_BYTES) return [{ seqId: ids.seqId, segmentId: null, text: whole }]
  }
  const count = Math.ceil(size / SEGMENT_RAW_BYTES)
  if (count > SEGMENT_COUNT_MAX) return null
  const raw = Buffer.from(messageJson, 'utf8')
  const pieces: OutboundPiece[] = []
  for (let i = 0; i < count; i++) {
    const chunk = raw.subarray(i * SEGMENT_RAW_BYTES, (i + 1) * SEGMENT_RAW_BYTES).toString('base64')
    pieces.push({ seqId: ids.seqId, segmentId: i, text: encodeServerMessageChunk(ids, i, count, raw.length, chunk) })
  }
  return pieces
}

// ---------------------------------------------------------------------------------------------
// Inbound chunk reassembly.

export interface ReassemblyLimits {
  /** Largest reassembled message (the server's max payload). */
  readonly maxMessageBytes: number
  /** Most messages being reassembled at once; the least recently fed is dropped first. */
  readonly maxAssemblies: number
  /** Bound on the declared sizes of all messages being reassembled at once. */
  readonly maxBufferedBytes: number
}

export type ChunkOutcome =
  /** `problem` set when an unfinished earlier message of the stream was abandoned for this one. */
  | { readonly kind: 'pending'; readonly problem: string | null }
  | { readonly kind: 'complete'; readonly message: JsonObject }
  /** `problem` null: a stale or repeated chunk, dropped without a warning. */
  | { readonly kind: 'dropped'; readonly problem: string | null }

interface Assembly {
  readonly seqId: number
  readonly segmentCount: number
  readonly messageSizeBytes: number
  readonly parts: Buffer[]
  bytes: number
  received: number
  /** A set found bad: later chunks of the same `seq_id` are dropped quietly. */
  dead: boolean
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

function streamKey(clientId: string, streamId: string): string {
  return JSON.stringify([clientId, streamId])
}

/**
 * Puts `client_message_chunk`s back together, one message at a time per (client_id,
 * stream_id), keyed by its `seq_id`. Chunks must come in order from segment 0 (a repeated
 * chunk is ignored, so a resend from the start after a reconnect works); an inconsistent set
 * is dropped whole with a warning. Memory is bounded by `ReassemblyLimits`.
 */
export class ChunkReassembler {
  // Map order is recency order: a fed assembly is moved to the end.
  private readonly assemblies = new Map<string, Assembly>()
  private bufferedBytes = 0

  constructor(private readonly limits: ReassemblyLimits) {}

  get size(): number {
    return this.assemblies.size
  }

  observe(chunk: ClientMessageChunk): ChunkOutcome {
    if (chunk.streamId === null || chunk.seqId === null) return { kind: 'dropped', problem: 'chunk without stream_id or seq_id' }
    const key = streamKey(chunk.clientId, chunk.streamId)
    const seqId = chunk.seqId
    const current = this.assemblies.get(key)

    if (current !== undefined && seqId < current.seqId) return { kind: 'dropped', problem: null }
    if (current !== undefined && seqId === current.seqId) {
      if (current.dead) return { kind: 'dropped', problem: null }
      if (chunk.segmentCount !== current.segmentCount || chunk.messageSizeBytes !== current.messageSizeBytes) {
        return this.fail(key, seqId, 'chunk metadata differs from earlier chunks of the message')
      }
      if (chunk.segmentId < current.received) return { kind: 'dropped', problem: null }
      if (chunk.segmentId > current.received) return this.fail(key, seqId, 'chunk out of order')
      return this.append(key, current, chunk)
    }

    // A new message on this stream (an unfinished earlier one, if any, is abandoned).
    const invalid = this.invalidMetadata(chunk)
    if (invalid !== null) return this.fail(key, seqId, invalid)
    if (chunk.segmentId !== 0) return this.fail(key, seqId, 'chunk out of order')
    const abandoned = current !== undefined && !current.dead
    this.remove(key)
    if (!this.makeRoom(chunk.messageSizeBytes)) return this.fail(key, seqId, 'too many bytes being reassembled')
    const assembly: Assembly = { seqId, segmentCount: chunk.segmentCount, messageSizeBytes: chunk.messageSizeBytes, parts: [], bytes: 0, received: 0, dead: false }
    this.assemblies.set(key, assembly)
    this.bufferedBytes += assembly.messageSizeBytes
    const outcome = this.append(key, assembly, chunk)
    if (abandoned && outcome.kind === 'pending') return { kind: 'pending', problem: 'unfinished chunked message abandoned for a newer one' }
    return outcome
  }

  /** The stream is gone: whatever was being reassembled for it is dropped. */
  forget(clientId: string, streamId: string): void {
    this.remove(streamKey(clientId, streamId))
  }

  clear(): void {
    this.assemblies.clear()
    this.bufferedBytes = 0
  }

  private invalidMetadata(chunk: ClientMessageChunk): string | null {
    if (chunk.segmentCount === 0 || chunk.segmentCount > SEGMENT_COUNT_MAX) return 'chunk segment_count out of range'
    if (chunk.segmentId >= chunk.segmentCount) return 'chunk segment_id out of range'
    if (chunk.messageSizeBytes === 0) return 'chunk message_size_bytes is zero'
    if (chunk.messageSizeBytes > this.limits.maxMessageBytes) return 'chunked message larger than the limit'
    return null
  }

  private append(key: string, assembly: Assembly, chunk: ClientMessageChunk): ChunkOutcome {
    if (chunk.chunkBase64.length === 0 || !BASE64.test(chunk.chunkBase64)) return this.fail(key, assembly.seqId, 'chunk is not base64')
    const bytes = Buffer.from(chunk.chunkBase64, 'base64')
    if (assembly.bytes + bytes.length > assembly.messageSizeBytes) return this.fail(key, assembly.seqId, 'chunks exceed message_size_bytes')
    assembly.parts.push(bytes)
    assembly.bytes += bytes.length
    assembly.received++
    this.assemblies.delete(key)
    this.assemblies.set(key, assembly)
    if (assembly.received < assembly.segmentCount) return { kind: 'pending', problem: null }
    if (assembly.bytes !== assembly.messageSizeBytes) return this.fail(key, assembly.seqId, 'chunks do not add up to message_size_bytes')
    const message = tryParseJson(Buffer.concat(assembly.parts).toString('utf8'))
    if (message === undefined) return this.fail(key, assembly.seqId, 'reassembled message is not JSON')
    this.remove(key)
    if (!isJsonObject(message)) return { kind: 'dropped', problem: 'reassembled message is not a JSON object' }
    return { kind: 'complete', message }
  }

  /** Drops the set and remembers its `seq_id`, so its remaining chunks go quietly. */
  private fail(key: string, seqId: number, problem: string): ChunkOutcome {
    this.remove(key)
    this.assemblies.set(key, { seqId, segmentCount: 0, messageSizeBytes: 0, parts: [], bytes: 0, received: 0, dead: true })
    this.evictBeyondCount()
    return { kind: 'dropped', problem }
  }

  private remove(key: string): void {
    const a = this.assemblies.get(key)
    if (a === undefined) return
    this.bufferedBytes -= a.messageSizeBytes
    this.assemblies.delete(key)
  }

  /** Evicts the least recently fed assemblies until `bytes` more fit, if they ever can. */
  private makeRoom(bytes: number): boolean {
    if (bytes > this.limits.maxBufferedBytes) return false
    for (const key of this.assemblies.keys()) {
      if (this.assemblies.size < this.limits.maxAssemblies && this.bufferedBytes + bytes <= this.limits.maxBufferedBytes) break
      this.remove(key)
    }
    return true
  }

  private evictBeyondCount(): void {
    for (const key of this.assemblies.keys()) {
      if (this.assemblies.size <= this.limits.maxAssemblies) break
      this.remove(key)
    }
  }
}
