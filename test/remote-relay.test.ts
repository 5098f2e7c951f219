/**
 * The remote-control relay and its envelopes on the backend WebSocket: virtual connections opened
 * only by `initialize`, inbound dedupe, outbound numbering, acks and replay, the 128-unacked bound,
 * chunking both ways, ping/pong, client_closed, idle close; and, with real Sessions over the real
 * Dispatcher, a real `initialize` result.
 */
import t from 'tap'
import { Type } from '../src/util/typebox.js'
import { fullPrincipal } from '../src/auth/principal.js'
import { createLogger } from '../src/log/logger.js'
import { Dispatcher } from '../src/rpc/dispatcher.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { defineMethod } from '../src/rpc/method.js'
import { initializeMethods, type ServerInfo } from '../src/rpc/methods/initialize.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { Session, type SessionDeps, type SessionTransport } from '../src/rpc/session.js'
import { UserAgent } from '../src/rpc/user-agent.js'
import {
  ChunkReassembler,
  parseClientEnvelope,
  SEGMENT_BASE64_BYTES,
  SEGMENT_MAX_BYTES,
  serverMessagePieces,
} from '../src/remote-control/envelopes.js'
import { RemoteRelay, TOO_MANY_REMOTE_CONNECTIONS, type RelayLimits, type RelaySession, type VirtualConnectionKey } from '../src/remote-control/relay.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture } from './helpers/server.js'

type Json = Record<string, any>
type Test = import('tap').Test

const KIB = 1024
const TEN_MINUTES = 10 * 60 * 1000

/** A session that records what it is handed and sends what the test tells it to. */
class FakeSession implements RelaySession {
  readonly received: string[] = []
  detached = false
  constructor(
    readonly key: VirtualConnectionKey,
    readonly transport: SessionTransport,
  ) {}
  handleText(text: string): void {
    this.received.push(text)
  }
  detach(): void {
    this.detached = true
  }
  reply(message: Json): void {
    this.transport.send(JSON.stringify(message))
  }
  get messages(): Json[] {
    return this.received.map((r) => JSON.parse(r) as Json)
  }
}

interface Harness {
  relay: RemoteRelay<FakeSession>
  clock: ManualClock
  logs: LogCapture
  sent: string[]
  sessions: FakeSession[]
  ended: FakeSession[]
  /** Everything sent, parsed. */
  envelopes(): Json[]
  /** Sends one inbound envelope (an object, serialized here). */
  feed(env: Json): void
  warnings(): string[]
}

function harness(limits: Partial<RelayLimits> = {}): Harness {
  const clock = new ManualClock()
  const logs = new LogCapture()
  const sent: string[] = []
  const sessions: FakeSession[] = []
  const ended: FakeSession[] = []
  const relay = new RemoteRelay<FakeSession>({
    createSession(key, transport) {
      const s = new FakeSession(key, transport)
      sessions.push(s)
      return s
    },
    sessionEnded(s) {
      ended.push(s)
    },
    send: (text) => sent.push(text),
    clock,
    log: createLogger('debug', logs),
    limits,
  })
  return {
    relay,
    clock,
    logs,
    sent,
    sessions,
    ended,
    envelopes: () => sent.map((s) => JSON.parse(s) as Json),
    feed: (env) => relay.handleText(JSON.stringify(env)),
    warnings: () => logs.lines.filter((l) => l.level === 40).map((l) => String(l.msg)),
  }
}

const INIT_PARAMS = { clientInfo: { name: 'remote-test-client', version: '0.1.0' } }

function initialize(clientId: string, streamId: string | undefined, seqId?: number, id: number | string = 1): Json {
  const env: Json = { type: 'client_message', client_id: clientId, message: { id, method: 'initialize', params: INIT_PARAMS } }
  if (streamId !== undefined) env.stream_id = streamId
  if (seqId !== undefined) env.seq_id = seqId
  return env
}

function clientMessage(clientId: string, streamId: string | undefined, seqId: number | undefined, message: Json): Json {
  const env: Json = { type: 'client_message', client_id: clientId, message }
  if (streamId !== undefined) env.stream_id = streamId
  if (seqId !== undefined) env.seq_id = seqId
  return env
}

/** Client-side chunking, written independently of the server's: 100 KiB of raw bytes per chunk. */
function clientChunks(clientId: string, streamId: string, seqId: number, message: Json, rawChunk = 100 * KIB): Json[] {
  const raw = Buffer.from(JSON.stringify(message), 'utf8')
  const count = Math.ceil(raw.length / rawChunk)
  const out: Json[] = []
  for (let i = 0; i < count; i++) {
    out.push({
      type: 'client_message_chunk',
      client_id: clientId,
      stream_id: streamId,
      seq_id: seqId,
      segment_id: i,
      segment_count: count,
      message_size_bytes: raw.length,
      message_chunk_base64: raw.subarray(i * rawChunk, (i + 1) * rawChunk).toString('base64'),
    })
  }
  return out
}

/** Puts `server_message_chunk`s of one seq_id back together, checking their metadata. */
function reassembleServerChunks(t: Test, chunks: Json[]): Json {
  t.ok(chunks.length > 1, 'more than one chunk')
  const first = chunks[0] as Json
  const parts: Buffer[] = []
  chunks.forEach((c, i) => {
    t.equal(c.type, 'server_message_chunk')
    t.equal(c.segment_id, i, `chunk ${i}: segment_id in order`)
    t.equal(c.segment_count, chunks.length, `chunk ${i}: segment_count`)
    t.equal(c.message_size_bytes, first.message_size_bytes, `chunk ${i}: same message_size_bytes`)
    t.equal(c.seq_id, first.seq_id, `chunk ${i}: the message's seq_id`)
    parts.push(Buffer.from(c.message_chunk_base64 as string, 'base64'))
  })
  const raw = Buffer.concat(parts)
  t.equal(raw.length, first.message_size_bytes, 'message_size_bytes is the UTF-8 length of the message JSON')
  return JSON.parse(raw.toString('utf8')) as Json
}

/** A JSON-RPC result whose JSON is about `bytes` long, with multi-byte characters in it. */
function bigResult(id: number, bytes: number): Json {
  const unit = 'abcdefghij€ü漢字'
  return { id, result: { blob: unit.repeat(Math.floor(bytes / Buffer.byteLength(unit))) } }
}

const K1: VirtualConnectionKey = { clientId: 'client-1', streamId: 'stream-1' }

// ---------------------------------------------------------------------------------------------

t.test('a virtual connection is opened only by a client_message holding an initialize request', async (t) => {
  const h = harness()
  h.feed(clientMessage('client-1', 'stream-1', 1, { method: 'initialized' }))
  h.feed(clientMessage('client-1', 'stream-1', 2, { id: 1, method: 'account/read', params: {} }))
  h.feed(clientMessage('client-1', 'stream-1', 3, { method: 'initialize', params: INIT_PARAMS }))
  h.feed(clientMessage('client-1', 'stream-1', 4, { id: 9, result: {} }))
  t.equal(h.sessions.length, 0, 'notifications, other requests, an initialize notification and replies open nothing')
  t.equal(h.relay.connectionCount, 0)

  h.feed(initialize('client-1', 'stream-1', 5, 7))
  t.equal(h.sessions.length, 1, 'an initialize request opens one')
  const s = h.sessions[0] as FakeSession
  t.strictSame(s.key, K1, 'keyed by (client_id, stream_id)')
  t.strictSame(s.messages, [{ id: 7, method: 'initialize', params: INIT_PARAMS }], 'the session is handed the initialize itself, as text')
  t.ok(h.relay.has(K1))

  h.feed(clientMessage('client-1', 'stream-1', 6, { method: 'initialized' }))
  t.equal(s.received.length, 2, 'later messages reach the session')
  t.equal(s.received[1], JSON.stringify({ method: 'initialized' }))

  h.feed(initialize('client-1', 'stream-2', 1))
  h.feed(initialize('client-2', 'stream-1', 1))
  t.equal(h.sessions.length, 3, 'another stream of the same client, or another client, is another connection')
  t.same(h.sent, [], 'nothing is sent on its own')
})

t.test('past maxConnections an initialize is answered -32001 and opens nothing; a replacing initialize still works', async (t) => {
  const h = harness({ maxConnections: 2 })
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-2', 'stream-2', 1))
  t.equal(h.sessions.length, 2)
  h.feed(initialize('client-3', 'stream-3', 1, 'init-3'))
  t.equal(h.sessions.length, 2, 'the third connection gets no session')
  t.same(h.envelopes(), [
    {
      type: 'server_message',
      message: { id: 'init-3', error: { code: -32001, message: TOO_MANY_REMOTE_CONNECTIONS } },
      client_id: 'client-3',
      stream_id: 'stream-3',
      seq_id: 1,
    },
  ])
  t.match(h.warnings(), ['refused a remote-control connection: too many open'])
  h.feed(clientMessage('client-3', 'stream-3', 2, { id: 2, method: 'account/read', params: {} }))
  t.equal(h.sessions.length, 2, 'later messages on the refused stream go nowhere')
  h.feed(initialize('client-1', 'stream-1', 2))
  t.equal(h.sessions.length, 3, 'replacing an open connection is not a new one')
  t.ok(h.sessions[0]!.detached, 'the replaced session ends')
  h.sessions[2]!.transport.close(1000, 'done')
  h.feed(initialize('client-3', 'stream-3', 3, 'init-3b'))
  t.equal(h.sessions.length, 4, 'a closed connection frees its place')
  t.equal(h.sessions[3]!.key.clientId, 'client-3')
})

t.test('envelopes for unknown keys are ignored', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  h.feed(clientMessage('client-1', 'other-stream', 2, { method: 'initialized' }))
  h.feed(clientMessage('other-client', 'stream-1', 2, { method: 'initialized' }))
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'other-stream', seq_id: 5 })
  h.feed({ type: 'client_closed', client_id: 'client-1', stream_id: 'other-stream' })
  h.feed({ type: 'client_closed', client_id: 'client-9' })
  h.feed(clientMessage('client-1', undefined, 2, { method: 'initialized' }))
  t.equal(s.received.length, 1, 'the known session got only its initialize')
  t.equal(h.sessions.length, 1, 'nothing else was opened')
  t.notOk(s.detached, 'nothing was closed')
  t.same(h.sent, [], 'nothing was answered')
})

t.test('a repeat initialize replaces the connection', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const old = h.sessions[0] as FakeSession
  old.reply({ id: 1, result: { first: true } })
  h.feed(clientMessage('client-1', 'stream-1', 2, { method: 'initialized' }))

  // Even at a seq_id already seen: as in codex, an initialize resets the inbound baseline.
  h.feed(initialize('client-1', 'stream-1', 1, 'again'))
  t.equal(h.sessions.length, 2, 'a new session')
  const fresh = h.sessions[1] as FakeSession
  t.ok(old.detached, 'the old session is detached')
  t.same(h.ended, [old], 'and reported ended')
  t.equal(h.relay.connectionCount, 1, 'still one connection for the key')
  t.strictSame(fresh.messages, [{ id: 'again', method: 'initialize', params: INIT_PARAMS }])

  old.reply({ id: 2, result: { late: true } })
  t.equal(h.sent.length, 1, 'output of the replaced session goes nowhere')

  h.feed(clientMessage('client-1', 'stream-1', 2, { method: 'initialized' }))
  t.equal(fresh.received.length, 2, 'seq 2 is new again for the new connection')

  fresh.reply({ id: 'again', result: {} })
  t.equal(h.envelopes()[1]?.seq_id, 2, 'outbound seq_id keeps counting on the key (the backend acks by it)')
})

t.test('an inbound seq_id at or below the last one is dropped', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  const n = (seq: number | undefined, tag: string) => h.feed(clientMessage('client-1', 'stream-1', seq, { method: 'note', params: { tag } }))
  n(2, 'a')
  n(2, 'a-again')
  n(1, 'older')
  n(4, 'b')
  n(3, 'skipped-back')
  n(undefined, 'no-seq')
  n(5, 'c')
  t.strictSame(
    s.messages.slice(1).map((m) => m.params.tag),
    ['a', 'b', 'no-seq', 'c'],
    'repeats and older seq_ids are dropped; a message without seq_id is delivered',
  )
  t.same(h.warnings(), [], 'duplicates are routine after a reconnect: no warning')
})

t.test('outbound envelopes: server_message, seq_id from 1 per virtual connection, message a JSON value', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-1', 'stream-2', 1))
  const [a, b] = h.sessions as [FakeSession, FakeSession]
  a.reply({ id: 1, result: { n: 1 } })
  a.reply({ method: 'note', params: { n: 2 } })
  b.reply({ id: 1, result: { n: 3 } })
  a.reply({ error: { code: -32600, message: 'x' }, id: 3 })
  t.strictSame(h.envelopes(), [
    { type: 'server_message', message: { id: 1, result: { n: 1 } }, client_id: 'client-1', stream_id: 'stream-1', seq_id: 1 },
    { type: 'server_message', message: { method: 'note', params: { n: 2 } }, client_id: 'client-1', stream_id: 'stream-1', seq_id: 2 },
    { type: 'server_message', message: { id: 1, result: { n: 3 } }, client_id: 'client-1', stream_id: 'stream-2', seq_id: 1 },
    { type: 'server_message', message: { error: { code: -32600, message: 'x' }, id: 3 }, client_id: 'client-1', stream_id: 'stream-1', seq_id: 3 },
  ])
})

t.test('acks remove envelopes up to their seq_id', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  for (let i = 1; i <= 5; i++) s.reply({ method: 'n', params: { i } })
  t.equal(h.relay.unackedCount(K1), 5, 'every sent envelope is kept')
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 3 })
  t.equal(h.relay.unackedCount(K1), 2, 'ack 3 frees 1..3')
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 2 })
  t.equal(h.relay.unackedCount(K1), 2, 'an older ack changes nothing')
  h.feed({ type: 'ack', client_id: 'client-2', stream_id: 'stream-1', seq_id: 5 })
  t.equal(h.relay.unackedCount(K1), 2, "another key's ack changes nothing")
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 99 })
  t.equal(h.relay.unackedCount(K1), 0, 'an ack beyond the last frees everything')
  h.feed({ type: 'ack', client_id: 'client-1', seq_id: 99 })
  t.match(h.warnings(), [/malformed/], 'an ack without stream_id is malformed')
})

t.test('onReconnect re-sends every unacked envelope, in order, before new output', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-2', 'stream-9', 1))
  const [a, b] = h.sessions as [FakeSession, FakeSession]
  for (let i = 1; i <= 4; i++) a.reply({ method: 'a', params: { i } })
  b.reply({ method: 'b', params: { i: 1 } })
  b.reply({ method: 'b', params: { i: 2 } })
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 2 })
  const before = [...h.sent]
  h.sent.length = 0

  h.relay.onReconnect()
  t.strictSame(h.sent, [before[2], before[3], before[4], before[5]], 'the unacked envelopes, byte for byte, in order')
  const again = h.envelopes()
  t.strictSame(
    again.map((e) => [e.client_id, e.seq_id]),
    [
      ['client-1', 3],
      ['client-1', 4],
      ['client-2', 1],
      ['client-2', 2],
    ],
  )
  a.reply({ method: 'a', params: { i: 5 } })
  t.equal(h.envelopes()[4]?.seq_id, 5, 'new output continues the numbering after the replay')
  h.sent.length = 0
  h.relay.onReconnect()
  t.equal(h.sent.length, 5, 'still unacked: replayed again on the next reconnect')
})

t.test('a send that throws keeps the envelope for replay', async (t) => {
  const sent: string[] = []
  let up = false
  let session: FakeSession | null = null
  const relay = new RemoteRelay({
    createSession: (key, transport) => (session = new FakeSession(key, transport)),
    send: (text) => {
      if (!up) throw new Error('socket is down')
      sent.push(text)
    },
    clock: new ManualClock(),
    log: createLogger('silent'),
  })
  relay.handleText(JSON.stringify(initialize('client-1', 'stream-1', 1)))
  ;(session as FakeSession | null)?.reply({ id: 1, result: {} })
  t.equal(relay.unackedCount(K1), 1, 'kept')
  t.same(sent, [])
  up = true
  relay.onReconnect()
  t.equal(sent.length, 1, 'sent once the socket is back')
})

t.test('at 128 unacked envelopes, output waits until acks arrive', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-2', 'stream-1', 1))
  const [s, other] = h.sessions as [FakeSession, FakeSession]
  for (let i = 1; i <= 200; i++) s.reply({ method: 'n', params: { i } })
  t.equal(h.sent.length, 128, 'only 128 are sent')
  t.equal(h.relay.unackedCount(K1), 128)

  other.reply({ method: 'other' })
  t.equal(h.sent.length, 129, 'another virtual connection is not held back')

  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1' })
  t.equal(h.sent.length, 129, 'a pong waits its turn too')

  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 10 })
  t.equal(h.sent.length, 139, 'ten acked: ten more go out')
  t.equal(h.relay.unackedCount(K1), 128)

  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1000 })
  const mine = h.envelopes().filter((e) => e.client_id === 'client-1')
  t.equal(mine.length, 201, 'all 200 messages and the pong went out')
  t.strictSame(
    mine.map((e) => e.seq_id),
    Array.from({ length: 201 }, (_, i) => i + 1),
    'numbered in order, without gaps',
  )
  t.strictSame(
    mine.slice(0, 200).map((e) => e.message.params.i),
    Array.from({ length: 200 }, (_, i) => i + 1),
    'in the order the session sent them',
  )
  t.equal(mine[200]?.type, 'pong', 'the pong after the output queued before it')
})

t.test('output queued past its byte bound closes the connection as a slow consumer', async (t) => {
  const h = harness({ maxUnacked: 2, maxQueuedBytes: 1000 })
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  s.reply({ method: 'a' })
  s.reply({ method: 'b' })
  s.reply({ method: 'c', params: { pad: 'x'.repeat(500) } })
  t.notOk(s.detached, 'under the bound: queued')
  s.reply({ method: 'd', params: { pad: 'x'.repeat(600) } })
  t.ok(s.detached, 'over it: closed')
  t.same(h.ended, [s])
  t.notOk(h.relay.has(K1))
  t.match(h.warnings(), [/slow remote-control client/])
})

t.test('outbound chunking above 150 KiB: ~100 KiB base64 chunks that round-trip a 400 KiB message', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  const message = bigResult(42, 400 * KIB)
  s.reply(message)
  const chunks = h.envelopes()
  t.equal(chunks.length, Math.ceil(Buffer.byteLength(JSON.stringify(message)) / ((SEGMENT_BASE64_BYTES / 4) * 3)), 'as many chunks as 100 KiB of base64 needs')
  for (const [i, text] of h.sent.entries()) {
    t.ok(Buffer.byteLength(text) <= SEGMENT_MAX_BYTES, `chunk ${i}: envelope within 150 KiB`)
    const b64 = (chunks[i] as Json).message_chunk_base64 as string
    if (i < chunks.length - 1) t.equal(b64.length, 100 * KIB, `chunk ${i}: 100 KiB of base64`)
    else t.ok(b64.length > 0 && b64.length <= 100 * KIB, 'last chunk: the rest')
    t.equal((chunks[i] as Json).client_id, 'client-1')
    t.equal((chunks[i] as Json).stream_id, 'stream-1')
  }
  t.strictSame(reassembleServerChunks(t, chunks), message, 'the chunks put back together are the message')
  t.equal(h.relay.unackedCount(K1), chunks.length, 'each chunk is kept until acked')

  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1, segment_id: 1 })
  t.equal(h.relay.unackedCount(K1), chunks.length - 2, 'a segment ack frees chunks 0..1 of that seq_id')
  h.sent.length = 0
  h.relay.onReconnect()
  t.strictSame(
    h.envelopes().map((e) => e.segment_id),
    Array.from({ length: chunks.length - 2 }, (_, i) => i + 2),
    'only the unacked chunks are replayed',
  )
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1 })
  t.equal(h.relay.unackedCount(K1), 0, 'an ack without segment_id frees every chunk of its seq_id')

  h.sent.length = 0
  const justUnder = bigResult(2, 140 * KIB)
  s.reply(justUnder)
  t.equal(h.envelopes()[0]?.type, 'server_message', 'an envelope within 150 KiB is not chunked')
  t.ok(Buffer.byteLength(h.sent[0] as string) <= SEGMENT_MAX_BYTES)
})

t.test('serverMessagePieces gives up on a message beyond the chunk count limit', async (t) => {
  const huge = JSON.stringify({ id: 1, result: 'x'.repeat(1024 * 76_800 + 10) })
  t.equal(serverMessagePieces({ clientId: 'c', streamId: 's', seqId: 1 }, huge), null)
})

t.test('inbound chunks are reassembled and round-trip a 400 KiB message', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  const request = { id: 5, method: 'test/echo', params: bigResult(0, 400 * KIB).result as Json }
  const chunks = clientChunks('client-1', 'stream-1', 2, request)
  t.equal(chunks.length, Math.ceil(Buffer.byteLength(JSON.stringify(request)) / (100 * KIB)), 'cut by the client into 100 KiB pieces')
  for (const c of chunks.slice(0, -1)) h.feed(c)
  t.equal(s.received.length, 1, 'nothing is delivered before the last chunk')
  h.feed(chunks[1] as Json)
  t.equal(s.received.length, 1, 'a repeated chunk is ignored')
  h.feed(chunks[chunks.length - 1] as Json)
  t.equal(s.received.length, 2, 'the whole message is delivered once')
  t.equal(s.received[1], JSON.stringify(request), 'as the text of the message')

  for (const c of chunks) h.feed(c)
  t.equal(s.received.length, 2, 'a replay of a delivered chunked message is dropped by its seq_id')

  // The session echoes it back: chunked on the way out, and equal after both trips.
  s.reply({ id: 5, result: request.params })
  t.strictSame(reassembleServerChunks(t, h.envelopes()), { id: 5, result: request.params }, 'round trip')
  t.same(h.warnings(), [])
})

t.test('an initialize may itself arrive chunked', async (t) => {
  const h = harness()
  for (const c of clientChunks('client-1', 'stream-1', 1, { id: 1, method: 'initialize', params: INIT_PARAMS }, 20)) h.feed({ ...c, cursor: 'cur-9' })
  t.equal(h.sessions.length, 1)
  t.strictSame(h.sessions[0]?.messages, [{ id: 1, method: 'initialize', params: INIT_PARAMS }])
  t.equal(h.relay.subscribeCursor, 'cur-9', 'the completing chunk’s cursor is recorded')
})

t.test('bad chunk sets are dropped with a warning, and never logged', async (t) => {
  const h = harness({ maxMessageBytes: 64 * KIB })
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  const secret = canary('chunked-secret')
  const msg = { id: 2, method: 'account/login/start', params: { type: 'apiKey', apiKey: secret, pad: 'p'.repeat(300) } }
  const good = (seq: number) => clientChunks('client-1', 'stream-1', seq, msg, 100)
  // [label, chunks, warnings]: a set without seq_id cannot be remembered, so each chunk warns.
  const cases: [string, (seq: number) => Json[], number?][] = [
    ['out of order', (seq) => { const c = good(seq); return [c[0], c[2], c[1], ...c.slice(3)] as Json[] }],
    ['first chunk missing', (seq) => good(seq).slice(1)],
    ['segment_count changes', (seq) => good(seq).map((c, i) => (i === 2 ? { ...c, segment_count: (c.segment_count as number) + 1 } : c))],
    ['message_size_bytes changes', (seq) => good(seq).map((c, i) => (i === 1 ? { ...c, message_size_bytes: (c.message_size_bytes as number) + 1 } : c))],
    ['declared size larger than the chunks', (seq) => good(seq).map((c) => ({ ...c, message_size_bytes: (c.message_size_bytes as number) + 5 }))],
    ['chunks larger than the declared size', (seq) => good(seq).map((c) => ({ ...c, message_size_bytes: c.message_size_bytes - 5 }))],
    ['not base64', (seq) => good(seq).map((c, i) => (i === 1 ? { ...c, message_chunk_base64: '!!!!' + String(c.message_chunk_base64).slice(4) } : c))],
    ['empty chunk', (seq) => good(seq).map((c, i) => (i === 1 ? { ...c, message_chunk_base64: '' } : c))],
    ['segment_id beyond segment_count', (seq) => good(seq).map((c) => ({ ...c, segment_id: (c.segment_id as number) + (c.segment_count as number) }))],
    ['segment_count zero', (seq) => good(seq).map((c) => ({ ...c, segment_count: 0 }))],
    ['declared size over the limit', (seq) => good(seq).map((c) => ({ ...c, message_size_bytes: 65 * KIB }))],
    ['not JSON once reassembled', (seq) => clientChunks('client-1', 'stream-1', seq, msg, 100).map((c, i, all) => (i === all.length - 1 ? { ...c, message_chunk_base64: Buffer.from(Buffer.from(String(c.message_chunk_base64), 'base64').toString('utf8').replace(/}$/, ']')).toString('base64') } : c))],
    ['no seq_id', (seq) => good(seq).map(({ seq_id: _omit, ...c }) => c), good(0).length],
  ]
  let seq = 10
  for (const [label, make, warnings = 1] of cases) {
    const mark = h.logs.lines.length
    for (const c of make(++seq)) h.feed(c)
    t.equal(s.received.length, 1, `${label}: nothing delivered`)
    const warned = h.logs.lines.slice(mark).filter((l) => l.level === 40)
    t.equal(warned.length, warnings, `${label}: ${warnings === 1 ? 'one warning for the set' : 'one warning per chunk'}`)
  }
  for (const c of good(++seq)) h.feed(c)
  t.equal(s.received.length, 2, 'a good set afterwards still goes through')
  t.strictSame(s.messages[1], msg)
  t.same(leakedCanaries(h.logs.text()), [], 'no chunk content in the logs')

  const oversized = { ...(good(++seq)[0] as Json), message_chunk_base64: 'A'.repeat(SEGMENT_MAX_BYTES + 4) }
  h.feed(oversized)
  t.match(h.warnings().at(-1), /oversized/, 'a chunk envelope over 150 KiB is dropped')
})

t.test('ChunkReassembler: bounded in count and bytes', async (t) => {
  const r = new ChunkReassembler({ maxMessageBytes: 1000, maxAssemblies: 2, maxBufferedBytes: 1500 })
  const chunk = (clientId: string, seq: number, size: number) => ({
    type: 'client_message_chunk' as const,
    clientId,
    streamId: 's',
    seqId: seq,
    cursor: null,
    segmentId: 0,
    segmentCount: 2,
    messageSizeBytes: size,
    chunkBase64: Buffer.from('{"a":').toString('base64'),
  })
  t.equal(r.observe(chunk('a', 1, 600)).kind, 'pending')
  t.equal(r.observe(chunk('b', 1, 600)).kind, 'pending')
  t.equal(r.size, 2)
  t.equal(r.observe(chunk('c', 1, 600)).kind, 'pending', 'a third evicts the least recently fed')
  t.equal(r.size, 2)
  t.equal(r.observe(chunk('d', 1, 1000)).kind, 'pending', 'bytes bound: older sets make room')
  t.equal(r.size, 1)
  const last = { ...chunk('d', 1, 1000), segmentId: 1, chunkBase64: Buffer.from('1}').toString('base64') }
  t.match(r.observe(last), { kind: 'dropped', problem: /add up/ })
  t.match(r.observe({ ...last, segmentId: 0 }), { kind: 'dropped', problem: null }, 'later chunks of a dropped set go quietly')

  const whole = Buffer.from('{"a":1}')
  const part = (seq: number, id: number, bytes: Buffer) => ({ ...chunk('e', seq, whole.length), segmentId: id, chunkBase64: bytes.toString('base64') })
  t.strictSame(r.observe(part(1, 0, whole.subarray(0, 3))), { kind: 'pending', problem: null })
  t.match(r.observe(part(2, 0, whole.subarray(0, 3))), { kind: 'pending', problem: /abandoned/ }, 'a newer message abandons an unfinished one')
  t.match(r.observe(part(1, 1, whole.subarray(3))), { kind: 'dropped', problem: null }, 'chunks of the abandoned one are stale')
  t.strictSame(r.observe(part(2, 1, whole.subarray(3))), { kind: 'complete', message: { a: 1 } })
  r.forget('e', 's')
  r.clear()
  t.equal(r.size, 0)
})

t.test('ping: pong active for a live connection, unknown otherwise', async (t) => {
  const h = harness()
  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1' })
  t.strictSame(h.envelopes(), [{ type: 'pong', status: 'unknown', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1 }], 'unknown key: unknown')

  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  s.reply({ id: 1, result: {} })
  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1' })
  t.strictSame(h.envelopes().slice(1), [
    { type: 'server_message', message: { id: 1, result: {} }, client_id: 'client-1', stream_id: 'stream-1', seq_id: 2 },
    { type: 'pong', status: 'active', client_id: 'client-1', stream_id: 'stream-1', seq_id: 3 },
  ], 'live: active, numbered with the connection’s output (which continues after the unknown pong)')
  t.equal(h.relay.unackedCount(K1), 2, 'an active pong is kept until acked, like any envelope')

  h.feed({ type: 'ping', client_id: 'client-7' })
  const last = h.envelopes().at(-1) as Json
  t.match(last, { type: 'pong', status: 'unknown', client_id: 'client-7', seq_id: 1 }, 'no stream_id: answered on a fresh stream id, unknown')
  t.type(last.stream_id, 'string')
})

t.test('legacy clients without stream_id: one connection per client_id (codex fallback)', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', undefined, 1))
  t.equal(h.sessions.length, 1)
  const s = h.sessions[0] as FakeSession
  h.feed(clientMessage('client-1', undefined, 2, { method: 'initialized' }))
  t.equal(s.received.length, 2, 'later messages without stream_id reach it')
  h.feed({ type: 'ping', client_id: 'client-1' })
  const pong = h.envelopes()[0] as Json
  t.match(pong, { type: 'pong', status: 'active', seq_id: 1 })
  t.equal(pong.stream_id, s.key.streamId, 'on the stream id it was given')
  h.feed(initialize('client-1', undefined, 1))
  t.equal(h.sessions.length, 2, 'a repeat initialize replaces it')
  t.ok(s.detached)
  h.feed({ type: 'client_closed', client_id: 'client-1' })
  t.ok(h.sessions[1]?.detached, 'client_closed without stream_id closes it')
})

t.test('client_closed closes that session only', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-1', 'stream-2', 1))
  const [a, b] = h.sessions as [FakeSession, FakeSession]
  a.reply({ id: 1, result: {} })
  h.feed({ type: 'client_closed', client_id: 'client-1', stream_id: 'stream-1' })
  t.ok(a.detached, 'detached')
  t.same(h.ended, [a], 'reported ended')
  t.notOk(b.detached, 'the other stream lives on')
  t.notOk(h.relay.has(K1))
  t.equal(h.relay.unackedCount(K1), 0, 'its unacked envelopes are dropped: no client is left for them')

  h.feed(clientMessage('client-1', 'stream-1', 5, { method: 'initialized' }))
  t.equal(a.received.length, 1, 'later messages are ignored')
  h.sent.length = 0
  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1' })
  t.match(h.envelopes(), [{ type: 'pong', status: 'unknown', seq_id: 2 }], 'ping: unknown (numbering continues on the key)')

  h.feed(initialize('client-1', 'stream-1', 1))
  h.sessions[2]?.reply({ id: 1, result: {} })
  t.equal(h.envelopes().at(-1)?.seq_id, 3, 'a reopened key keeps counting')
})

t.test('a session that closes itself ends its virtual connection', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  s.transport.close(1001, 'server shutting down')
  t.notOk(h.relay.has(K1))
  t.same(h.ended, [s], 'reported ended')
  t.notOk(s.detached, 'not detached again: it closed itself')
  s.reply({ id: 1, result: {} })
  t.same(h.sent, [], 'nothing more is sent')
})

t.test('idle virtual connections close after 10 minutes without an inbound message', async (t) => {
  const h = harness()
  h.feed(initialize('client-1', 'stream-1', 1))
  h.feed(initialize('client-2', 'stream-1', 1))
  const [a, b] = h.sessions as [FakeSession, FakeSession]
  h.clock.advance(TEN_MINUTES - 1)
  h.relay.sweep()
  t.notOk(a.detached, 'just under 10 minutes: alive')
  h.feed(clientMessage('client-2', 'stream-1', 2, { method: 'initialized' }))
  a.reply({ method: 'server-output-is-not-activity' })
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1 })
  h.clock.advance(1)
  h.relay.sweep()
  t.ok(a.detached, '10 minutes: closed (outbound output and acks are not activity)')
  t.notOk(b.detached, 'the other one had a message: alive')
  t.notOk(h.relay.has(K1))

  h.feed({ type: 'ping', client_id: 'client-2', stream_id: 'stream-1' })
  h.clock.advance(TEN_MINUTES - 1)
  h.relay.sweep()
  t.notOk(b.detached, 'a ping counts as activity')
  h.clock.advance(1)
  h.relay.sweep()
  t.ok(b.detached)
})

t.test('startIdleSweep sweeps on the clock until closeAll', async (t) => {
  const h = harness()
  h.relay.startIdleSweep()
  h.feed(initialize('client-1', 'stream-1', 1))
  const s = h.sessions[0] as FakeSession
  h.clock.advance(TEN_MINUTES + 30_000)
  t.ok(s.detached, 'closed by the periodic sweep')
  h.feed(initialize('client-1', 'stream-2', 1))
  h.relay.closeAll()
  t.ok(h.sessions[1]?.detached, 'closeAll ends every connection')
  t.equal(h.relay.connectionCount, 0)
  t.equal(h.clock.pendingCount, 0, 'and stops the sweep')
})

t.test('the latest cursor is remembered (memory only)', async (t) => {
  const h = harness()
  t.equal(h.relay.subscribeCursor, null)
  h.feed({ ...initialize('client-1', 'stream-1', 1), cursor: 'c1' })
  t.equal(h.relay.subscribeCursor, 'c1')
  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1', cursor: 'c2' })
  t.equal(h.relay.subscribeCursor, 'c2', 'from any envelope')
  h.feed({ type: 'ack', client_id: 'client-1', stream_id: 'stream-1', seq_id: 1 })
  t.equal(h.relay.subscribeCursor, 'c2', 'an envelope without one leaves it')
  const [first] = clientChunks('client-1', 'stream-1', 5, { method: 'x', params: 'y'.repeat(300) }, 100)
  h.feed({ ...first, cursor: 'c3' })
  t.equal(h.relay.subscribeCursor, 'c2', 'an unfinished chunk set does not move it')
  h.feed({ type: 'ping', client_id: 'client-1', stream_id: 'stream-1', cursor: null })
  t.equal(h.relay.subscribeCursor, 'c2', 'null is no cursor')
})

t.test('malformed envelopes are dropped with a warning that quotes nothing', async (t) => {
  const h = harness()
  const secret = canary('envelope-secret')
  const frames = [
    `not json ${secret}`,
    JSON.stringify([secret]),
    JSON.stringify({ type: secret, client_id: 'c' }),
    JSON.stringify({ type: 'client_message', message: { id: 1, method: 'initialize', token: secret } }),
    JSON.stringify({ type: 'client_message', client_id: 'c', message: secret }),
    JSON.stringify({ type: 'client_message', client_id: 'c', seq_id: -1, message: { token: secret } }),
    JSON.stringify({ type: 'client_message_chunk', client_id: 'c', stream_id: 's', seq_id: 1, segment_id: 0, segment_count: 1, message_size_bytes: 3 }),
    JSON.stringify({ type: 'ping', client_id: 7 }),
  ]
  for (const f of frames) h.relay.handleText(f)
  t.equal(h.warnings().length, frames.length, 'one warning each')
  t.equal(h.sessions.length, 0)
  t.same(h.sent, [])
  t.same(leakedCanaries(h.logs.text()), [], 'no frame content in the logs')
  t.match(parseClientEnvelope(frames[5] as string), { problem: /client_message at \/seq_id/ }, 'the problem names the member')
  t.match(parseClientEnvelope(JSON.stringify({ type: 'ack', client_id: 'c', stream_id: 's', seq_id: 3, segment_id: null, extra: 1 })), {
    type: 'ack',
    seqId: 3,
    segmentId: null,
    cursor: null,
  }, 'null members read as absent; unknown members are ignored')
})

// ---- with real Sessions over the real Dispatcher ----

t.test('an initialize through the relay gets a real initialize result', async (t) => {
  interface Services {
    readonly serverInfo: ServerInfo
  }
  const services: Services = {
    serverInfo: {
      home: '/home/remote/.codex',
      userAgent: new UserAgent({ version: '0.1.0', osType: 'Linux', osRelease: '6.1', arch: 'x64', terminal: 'unknown' }),
      platformFamily: 'unix',
      platformOs: 'linux',
    },
  }
  const whoAmI = defineMethod<Services, null>({
    name: 'test/whoami',
    scope: 'session',
    params: null,
    handler: (_p, { session }) => ({ kind: session.principal.kind, id: session.id }),
  })
  const echo = defineMethod<Services, ReturnType<typeof Type.Object>>({
    name: 'test/echo',
    scope: 'session',
    params: Type.Object({ blob: Type.String() }),
    handler: (p) => ({ blob: (p as { blob: string }).blob }),
  })
  const dispatcher = new Dispatcher<Services>([...initializeMethods<Services>(), whoAmI, echo], services, { validateResults: true })
  const logs = new LogCapture()
  const log = createLogger('debug', logs)
  const deps: SessionDeps = {
    dispatcher,
    inFlight: new InFlightLimit(100),
    serverRequestIds: new RequestIdAllocator(),
    clock: new ManualClock(),
    maxInFlightPerConnection: 128,
    ratePerSecond: 0,
    burst: 1,
    lifecycle: { draining: false },
  }
  const sent: string[] = []
  const live = new Set<Session>()
  let n = 0
  const relay = new RemoteRelay<Session>({
    createSession: (key, transport) => {
      const id = `r${++n}`
      const s = new Session(id, fullPrincipal('remote'), transport, log.child({ connectionId: id, remoteClient: key.clientId }), deps)
      live.add(s)
      return s
    },
    sessionEnded: (s) => live.delete(s),
    send: (text) => sent.push(text),
    clock: new ManualClock(),
    log,
  })
  const settle = () => new Promise((r) => setImmediate(r))
  const envs = () => sent.map((s) => JSON.parse(s) as Json)

  relay.handleText(JSON.stringify(clientMessage('phone', 'tab-1', 1, { id: 'x', method: 'test/whoami' })))
  await settle()
  t.same(sent, [], 'a request before initialize on an unknown key is ignored (not answered Not initialized)')

  relay.handleText(JSON.stringify(initialize('phone', 'tab-1', 2, 'init-1')))
  await settle()
  t.equal(sent.length, 1)
  const reply = envs()[0] as Json
  t.match(reply, { type: 'server_message', client_id: 'phone', stream_id: 'tab-1', seq_id: 1 })
  t.strictSame(reply.message, {
    id: 'init-1',
    result: {
      userAgent: 'remote-test-client/0.1.0 (Linux 6.1; x86_64) unknown (remote-test-client; 0.1.0)',
      codexHome: '/home/remote/.codex',
      platformFamily: 'unix',
      platformOs: 'linux',
    },
  }, 'the real initialize result')

  relay.handleText(JSON.stringify(clientMessage('phone', 'tab-1', 3, { method: 'initialized' })))
  relay.handleText(JSON.stringify(clientMessage('phone', 'tab-1', 4, { id: 2, method: 'test/whoami' })))
  await settle()
  t.strictSame(envs()[1], { type: 'server_message', message: { id: 2, result: { kind: 'remote', id: 'r1' } }, client_id: 'phone', stream_id: 'tab-1', seq_id: 2 }, 'principal remote')

  relay.handleText(JSON.stringify(clientMessage('phone', 'tab-1', 5, { id: 3, method: 'initialize', params: INIT_PARAMS })))
  await settle()
  t.equal(live.size, 1, 'a repeat initialize replaced the session')
  t.match(envs()[2], { seq_id: 3, message: { id: 3, result: { codexHome: '/home/remote/.codex' } } }, 'the new session initializes afresh')

  const blob = 'ü'.repeat(200 * KIB)
  for (const c of clientChunks('phone', 'tab-1', 6, { id: 4, method: 'test/echo', params: { blob } })) relay.handleText(JSON.stringify(c))
  await settle()
  const chunks = envs().slice(3)
  t.ok(chunks.every((c) => c.type === 'server_message_chunk'), 'a 400 KiB reply comes back in chunks')
  t.strictSame(reassembleServerChunks(t, chunks), { id: 4, result: { blob } }, 'chunked request in, chunked reply out, through a real session')

  relay.handleText(JSON.stringify({ type: 'client_closed', client_id: 'phone', stream_id: 'tab-1' }))
  t.equal(live.size, 0, 'client_closed ends the real session')
  t.same(leakedCanaries(logs.text()), [])
})
