/** Client-side load generators. Bounded in time and count; loopback only. */
import WebSocket from 'ws'
import { rssBytes } from './targets.js'

const INIT = JSON.stringify({ id: 0, method: 'initialize', params: { clientInfo: { name: 'bench', title: null, version: '1.0.0' } } })

function open(url: string): Promise<WebSocket> {
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

function closed(ws: WebSocket): Promise<void> {
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
  readonly p50Ms: number
  readonly p99Ms: number
  readonly count: number
}

/**
 * Request/response throughput and latency: `connections` sockets, each initialized once, each
 * keeping `inFlight` copies of `frame` outstanding for `durationMs`.
 */
export async function roundTrips(url: string, connections: number, inFlight: number, durationMs: number, frame: string): Promise<RoundTripResult> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => open(url)))
  await Promise.all(sockets.map((ws) => oneReply(ws, INIT)))
  const latencies: number[] = []
  let count = 0
  const start = performance.now()
  const deadline = start + durationMs
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          const sentAt: number[] = []
          let outstanding = 0
          const sendOne = () => {
            sentAt.push(performance.now())
            outstanding++
            ws.send(frame)
          }
          ws.on('message', () => {
            const t0 = sentAt.shift()!
            const now = performance.now()
            latencies.push(now - t0)
            count++
            outstanding--
            if (now < deadline) sendOne()
            else if (outstanding === 0) resolve()
          })
          for (let i = 0; i < inFlight; i++) sendOne()
        }),
    ),
  )
  const seconds = (performance.now() - start) / 1000
  await Promise.all(sockets.map(closed))
  latencies.sort((a, b) => a - b)
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0
  return { perSecond: count / seconds, p50Ms: pct(50), p99Ms: pct(99), count }
}
