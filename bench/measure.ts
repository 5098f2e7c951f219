/** Client-side load generators. Bounded in time and count; loopback only. */
import WebSocket from 'ws'
import { rssBytes } from './targets.js'

const INIT = JSON.stringify({ id: 0, method: 'initialize', params: { clientInfo: { name: 'bench', title: null, version: '1.0.0' } } })
const INITIALIZED = JSON.stringify({ method: 'initialized' })

/** Opens a WebSocket: `ws://…` or, straight to an engine, `ws+unix://SOCKET:/`. */
export function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)))
  })
}

function oneReply(ws: WebSocket, frame: string): Promise<void> {
  return new Promise((resolve) => {
    ws.once('message', () => resolve())
    ws.send(frame)
  })
}

/** `initialize` answered, then the `initialized` notification, as a codex client does. */
export function initialized(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (data: WebSocket.RawData) => {
      const reply = parseReply(data.toString())
      if (reply?.id !== 0) return
      ws.off('message', onMessage)
      if (reply.error !== null) return reject(new Error(`initialize refused: ${reply.error}`))
      ws.send(INITIALIZED)
      resolve()
    }
    ws.on('message', onMessage)
    ws.send(INIT)
  })
}

export function closed(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve()
    ws.once('close', () => resolve())
    ws.close()
  })
}

export interface HandshakeResult {
  readonly perSecond: number
  readonly count: number
}

/** Authenticated handshakes: open → 101 → close, `concurrency` loops for `durationMs`. */
export async function handshakes(url: string, durationMs: number, concurrency: number, maxCount = 1_000_000): Promise<HandshakeResult> {
  let count = 0
  const start = performance.now()
  const deadline = start + durationMs
  async function loop(): Promise<void> {
    while (performance.now() < deadline && count < maxCount) {
      const ws = await open(url)
      count++
      ws.terminate()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  const seconds = (performance.now() - start) / 1000
  return { perSecond: count / seconds, count }
}

export interface MemoryResult {
  readonly bytesPerConnection: number
  readonly connections: number
}

/**
 * Idle memory: the server's RSS growth for `n` open connections that each completed one
 * initialize round trip, divided by `n`.
 */
export async function idleMemory(url: string, pid: number, n: number): Promise<MemoryResult> {
  await settle()
  const before = rssBytes(pid)
  const sockets: WebSocket[] = []
  const batch = 50
  for (let i = 0; i < n; i += batch) {
    const opened = await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => open(url)))
    await Promise.all(opened.map((ws) => oneReply(ws, INIT)))
    sockets.push(...opened)
  }
  await settle()
  const after = rssBytes(pid)
  await Promise.all(sockets.map(closed))
  return { bytesPerConnection: Math.max(0, after - before) / n, connections: n }
}

function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 1_000))
}

export interface RoundTripResult {
  readonly perSecond: number
  /** Latency percentiles of the answered requests (errors excluded). */
  readonly p50Ms: number
  readonly p99Ms: number
  /** Requests answered with a result. */
  readonly count: number
  /** Requests answered with a JSON-RPC error (e.g. the engine shedding load); not in `perSecond`. */
  readonly errors: number
  /** The first error's message, to say why. */
  readonly firstError: string | null
}

/**
 * Request/response throughput and latency: `connections` sockets, each initialized once
 * (`initialize`, then the `initialized` notification), each keeping `inFlight` requests for
 * `method` outstanding for `durationMs`. Every request has its own id and its answer is matched
 * by id, so a server that answers out of order is measured right; frames without an id
 * (notifications) are not answers. Errors (and requests left unanswered by a connection the
 * server closed) are counted apart from the answers.
 */
export async function roundTrips(url: string, connections: number, inFlight: number, durationMs: number, method: string, params: unknown = {}): Promise<RoundTripResult> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => open(url)))
  await Promise.all(sockets.map((ws) => initialized(ws)))
  const tail = `,"method":${JSON.stringify(method)},"params":${JSON.stringify(params)}}`
  const latencies: number[] = []
  let count = 0
  let errors = 0
  let firstError: string | null = null
  const start = performance.now()
  const deadline = start + durationMs
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          const sentAt = new Map<number, number>()
          let nextId = 1
          const sendOne = () => {
            const id = nextId++
            sentAt.set(id, performance.now())
            ws.send(`{"id":${id}${tail}`)
          }
          ws.on('message', (data) => {
            const reply = parseReply(data.toString())
            const t0 = reply === null ? undefined : sentAt.get(reply.id)
            if (reply === null || t0 === undefined) return
            sentAt.delete(reply.id)
            const now = performance.now()
            if (reply.error === null) {
              latencies.push(now - t0)
              count++
            } else {
              errors++
              firstError ??= reply.error
            }
            if (now < deadline) sendOne()
            else if (sentAt.size === 0) resolve()
          })
          // A connection the server closes ends its loop; what it left unanswered counts as errors.
          ws.once('close', (code) => {
            errors += sentAt.size
            if (sentAt.size > 0) firstError ??= `connection closed (${code})`
            sentAt.clear()
            resolve()
          })
          for (let i = 0; i < inFlight; i++) sendOne()
        }),
    ),
  )
  const seconds = (performance.now() - start) / 1000
  await Promise.all(sockets.map(closed))
  latencies.sort((a, b) => a - b)
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0
  return { perSecond: count / seconds, p50Ms: pct(50), p99Ms: pct(99), count, errors, firstError }
}

/** A response's id and, for an error, its message; null for anything that is not a response. */
function parseReply(text: string): { id: number; error: string | null } | null {
  let msg: { id?: unknown; method?: unknown; error?: { code?: unknown; message?: unknown } }
  try {
    msg = JSON.parse(text) as typeof msg
  } catch {
    return null
  }
  if (typeof msg.id !== 'number' || msg.method !== undefined) return null
  if (msg.error === undefined) return { id: msg.id, error: null }
  return { id: msg.id, error: `${String(msg.error.code)} ${String(msg.error.message)}` }
}
