/** Real-socket clients: HTTP via fetch, WebSocket via `ws`, JSON-RPC helpers on top. */
import WebSocket from 'ws'
import { record } from './canary.js'

export interface HttpResult {
  status: number
  body: string
  headers: Headers
}

/** A GET whose body is recorded for the canary check. */
export async function httpGet(url: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  const res = await fetch(url, { headers })
  const body = await res.text()
  record(body)
  return { status: res.status, body, headers: res.headers }
}

export interface UpgradeRefusal {
  status: number
  body: string
}

/**
 * Attempts an upgrade. Resolves with the open socket, or with the HTTP status and body of a
 * refusal (recorded for the canary check).
 */
export function tryUpgrade(
  url: string,
  options: { headers?: Record<string, string>; maxPayload?: number } = {},
): Promise<{ ws: WebSocket } | { refused: UpgradeRefusal }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: options.headers ?? {}, ...(options.maxPayload ? { maxPayload: options.maxPayload } : {}) })
    ws.once('open', () => resolve({ ws }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        record(body)
        resolve({ refused: { status: res.statusCode ?? 0, body } })
      })
    })
    ws.once('error', (err) => reject(err))
  })
}

/** Opens a socket that must be accepted. */
export async function connect(url: string, headers: Record<string, string> = {}): Promise<RpcClient> {
  const r = await tryUpgrade(url, { headers })
  if ('refused' in r) throw new Error(`upgrade refused: ${r.refused.status} ${r.refused.body}`)
  return new RpcClient(r.ws)
}

/** Opens a socket that must be refused; returns status and body. */
export async function refuse(url: string, headers: Record<string, string> = {}): Promise<UpgradeRefusal> {
  const r = await tryUpgrade(url, { headers })
  if ('ws' in r) {
    r.ws.close()
    throw new Error('upgrade unexpectedly accepted')
  }
  return r.refused
}

type Json = Record<string, unknown>

/** A JSON-RPC client over one socket: requests by id, notifications and server requests queued. */
export class RpcClient {
  private nextId = 1
  private readonly waiting = new Map<string | number, (msg: Json) => void>()
  readonly notifications: Json[] = []
  readonly serverRequests: Json[] = []
  readonly frames: string[] = []
  private frameWaiters: (() => void)[] = []
  readonly closed: Promise<{ code: number; reason: string }>

  constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    ws.on('message', (data, isBinary) => {
      if (isBinary) return
      const text = data.toString()
      record(text)
      this.frames.push(text)
      const msg = JSON.parse(text) as Json
      if ('id' in msg && ('result' in msg || 'error' in msg)) {
        const w = this.waiting.get(msg.id as string | number)
        if (w) {
          this.waiting.delete(msg.id as string | number)
          w(msg)
        }
      } else if ('id' in msg) {
        this.serverRequests.push(msg)
      } else {
        this.notifications.push(msg)
      }
      const fw = this.frameWaiters
      this.frameWaiters = []
      for (const f of fw) f()
    })
  }

  /** Sends a request and resolves with the whole reply frame (`result` or `error`). */
  request(method: string, params?: unknown, id?: string | number): Promise<Json> {
    const reqId = id ?? this.nextId++
    const p = new Promise<Json>((resolve) => this.waiting.set(reqId, resolve))
    this.ws.send(JSON.stringify(params === undefined ? { id: reqId, method } : { id: reqId, method, params }))
    return p
  }

  notify(method: string, params?: unknown): void {
    this.ws.send(JSON.stringify(params === undefined ? { method } : { method, params }))
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary })
  }

  async initialize(name = 'test-client', version = '1.0.0'): Promise<Json> {
    const reply = await this.request('initialize', { clientInfo: { name, title: null, version } })
    if (!('result' in reply)) throw new Error(`initialize failed: ${JSON.stringify(reply)}`)
    return reply.result as Json
  }

  /** Waits until a frame matching `pred` has arrived (checking those already received). */
  async waitForFrame(pred: (msg: Json) => boolean): Promise<Json> {
    for (;;) {
      for (const f of this.frames) {
        const m = JSON.parse(f) as Json
        if (pred(m)) return m
      }
      await new Promise<void>((r) => this.frameWaiters.push(r))
    }
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close()
    return this.closed
  }
}
