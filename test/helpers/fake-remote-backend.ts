/**
 * A scriptable fake of the ChatGPT backend's remote-control endpoints, on 127.0.0.1:0, for
 * end-to-end tests over real sockets:
 *
 * - `POST /backend-api/wham/remote/control/server/enroll`  → a new server, environment and token
 * - `POST /backend-api/wham/remote/control/server/refresh` → a new token for a known server
 *   (an unknown `server_id` gets 404 `{"detail":"Remote app server not found"}`)
 * - `GET  /backend-api/wham/remote/control/server` (WebSocket) → one `BackendConnection`
 *
 * Every request is recorded (headers, raw and parsed body, what was answered) in one ordered
 * list, so a test can assert what happened before what. Each endpoint has a queue of scripted
 * replies: the next request to it takes the first one (status, body, headers such as
 * `Retry-After` or `x-request-id`); with the queue empty it gets the default answer. A scripted
 * WebSocket reply refuses the handshake: an onRequest hook answers before the upgrade.
 *
 * Every `remote_control_token` issued is a canary (helpers/canary.ts). Envelopes the app
 * server sends over the socket are recorded for the canary check, as any client-facing output.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import websocket from '@fastify/websocket'
import type WebSocket from 'ws'
import { canary, record } from './canary.js'

export type Json = Record<string, any>

export const BACKEND_PREFIX = '/backend-api'
export const ENROLL_PATH = `${BACKEND_PREFIX}/wham/remote/control/server/enroll`
export const REFRESH_PATH = `${BACKEND_PREFIX}/wham/remote/control/server/refresh`
export const WEBSOCKET_PATH = `${BACKEND_PREFIX}/wham/remote/control/server`
export const NOT_FOUND_BODY = { detail: 'Remote app server not found' }

export type Endpoint = 'enroll' | 'refresh' | 'websocket'

/** One token the backend handed out (enroll or refresh). */
export interface IssuedGrant {
  readonly endpoint: 'enroll' | 'refresh'
  readonly serverId: string
  readonly environmentId: string
  /** A canary. */
  readonly token: string
  /** RFC 3339, as sent. */
  readonly expiresAt: string
}

/** One request the backend received, in arrival order across all endpoints. */
export interface BackendRequest {
  /** Position in `requests` (0-based). */
  readonly index: number
  readonly endpoint: Endpoint
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  /** The raw body text ('' for the WebSocket). */
  readonly rawBody: string
  /** The body parsed as JSON, or null. */
  readonly body: Json | null
  /** When it arrived (Date.now()). */
  readonly at: number
  /** What was answered (101 for an accepted WebSocket). */
  status: number
  /** The grant issued in the answer, if any. */
  grant: IssuedGrant | null
}

export interface ScriptedReply {
  readonly status: number
  /** An object is sent as JSON; a string as is; absent → empty body. */
  readonly body?: unknown
  readonly headers?: Record<string, string>
  /** Defaults to application/json. */
  readonly contentType?: string
}

/** A scripted entry: a fixed reply, or a function deciding per request ('default' → the normal answer). */
export type Script = ScriptedReply | ((request: BackendRequest) => ScriptedReply | 'default')

export interface FakeRemoteBackendOptions {
  /** Lifetime of issued tokens (expires_at = now + ttl). Default 1 hour. */
  readonly tokenTtlMs?: number
}

/** One open WebSocket from the app server, as the backend sees it. */
export class BackendConnection {
  /** Envelopes received from the app server, parsed, in order. */
  readonly received: Json[] = []
  readonly closed: Promise<{ code: number; reason: string }>
  private closedNow = false
  private waiters: (() => void)[] = []

  constructor(
    /** The server-side socket. */
    readonly socket: WebSocket,
    /** The handshake request (headers). */
    readonly request: BackendRequest,
  ) {
    this.closed = new Promise((resolve) =>
      socket.once('close', (code, reason) => {
        this.closedNow = true
        resolve({ code, reason: reason.toString() })
        this.notify()
      }),
    )
    socket.on('message', (data, isBinary) => {
      const text = data.toString()
      record(text)
      let parsed: Json
      try {
        parsed = isBinary ? { binary: true, text } : (JSON.parse(text) as Json)
      } catch {
        parsed = { unparsable: text }
      }
      this.received.push(parsed)
      this.notify()
    })
  }

  get isClosed(): boolean {
    return this.closedNow
  }

  /** Sends one envelope (an object is JSON-encoded). */
  send(envelope: Json | string): void {
    this.socket.send(typeof envelope === 'string' ? envelope : JSON.stringify(envelope))
  }

  /** `client_message` carrying a JSON-RPC message. */
  sendClientMessage(ids: { clientId: string; streamId?: string | null; seqId?: number | null; cursor?: string | null }, message: Json): void {
    this.send({
      type: 'client_message',
      client_id: ids.clientId,
      ...(ids.streamId === undefined ? {} : { stream_id: ids.streamId }),
      ...(ids.seqId === undefined ? {} : { seq_id: ids.seqId }),
      ...(ids.cursor === undefined ? {} : { cursor: ids.cursor }),
      message,
    })
  }

  /** `client_message` holding an `initialize` request (which opens a virtual connection). */
  sendInitialize(ids: { clientId: string; streamId: string; seqId?: number; cursor?: string }, id: number | string = 1): void {
    this.sendClientMessage(ids, { id, method: 'initialize', params: { clientInfo: { name: 'remote-phone', title: null, version: '1.0.0' } } })
  }

  sendAck(clientId: string, streamId: string, seqId: number, segmentId?: number): void {
    this.send({ type: 'ack', client_id: clientId, stream_id: streamId, seq_id: seqId, ...(segmentId === undefined ? {} : { segment_id: segmentId }) })
  }

  sendPing(clientId: string, streamId?: string): void {
    this.send({ type: 'ping', client_id: clientId, ...(streamId === undefined ? {} : { stream_id: streamId }) })
  }

  sendClientClosed(clientId: string, streamId?: string): void {
    this.send({ type: 'client_closed', client_id: clientId, ...(streamId === undefined ? {} : { stream_id: streamId }) })
  }

  /** The `server_message` envelopes of one virtual connection. */
  serverMessages(clientId: string, streamId?: string): Json[] {
    return this.received.filter((e) => e.type === 'server_message' && e.client_id === clientId && (streamId === undefined || e.stream_id === streamId))
  }

  /** Waits for an envelope matching `pred` (those already received count). */
  async waitForEnvelope(pred: (envelope: Json) => boolean, timeoutMs = 5_000, label = 'an envelope from the app server'): Promise<Json> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.received.find(pred)
      if (found !== undefined) return found
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${label}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** The reply (`server_message` whose message has this id) on one virtual connection. */
  waitForReply(clientId: string, id: number | string, timeoutMs = 5_000): Promise<Json> {
    return this.waitForEnvelope(
      (e) => e.type === 'server_message' && e.client_id === clientId && e.message?.id === id && ('result' in e.message || 'error' in e.message),
      timeoutMs,
      `the reply to request ${String(id)} of remote client ${clientId}`,
    )
  }

  /** A clean close from the backend's side. */
  close(code = 1000, reason = ''): void {
    this.socket.close(code, reason)
  }

  /** Drops the TCP connection without a close handshake. */
  terminate(): void {
    this.socket.terminate()
  }

  private notify(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}

export class FakeRemoteBackend {
  /** Every request, in arrival order. */
  readonly requests: BackendRequest[] = []
  /** Every grant issued, in order. */
  readonly grants: IssuedGrant[] = []
  /** Every accepted WebSocket, in order. */
  readonly connections: BackendConnection[] = []
  /** Lifetime of the tokens issued from now on. */
  tokenTtlMs: number
  /** Servers known to the backend: server_id → environment_id. */
  readonly servers = new Map<string, string>()
  private readonly scripts: Record<Endpoint, Script[]> = { enroll: [], refresh: [], websocket: [] }
  private nextServer = 1
  private waiters: (() => void)[] = []
  private readonly pending = new WeakMap<object, BackendRequest>()

  private constructor(
    private readonly app: FastifyInstance,
    /** `http://127.0.0.1:PORT/backend-api`: what CHATGPT_BASE_URL should be. */
    readonly baseUrl: string,
    options: FakeRemoteBackendOptions,
  ) {
    this.tokenTtlMs = options.tokenTtlMs ?? 3_600_000
  }

  static async start(options: FakeRemoteBackendOptions = {}): Promise<FakeRemoteBackend> {
    const app = Fastify({ logger: false, forceCloseConnections: true })
    await app.register(websocket)
    let self: FakeRemoteBackend | null = null
    const backend = (): FakeRemoteBackend => self as FakeRemoteBackend

    // The raw text is kept (and parsed here) so a test sees exactly what was sent.
    app.removeAllContentTypeParsers()
    app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))

    // The handshake is recorded, and refused here when scripted: before the upgrade happens.
    app.addHook('onRequest', async (request, reply) => {
      if (request.method !== 'GET' || request.url.split('?')[0] !== WEBSOCKET_PATH) return
      const b = backend()
      const rec = b.recordRequest('websocket', request, '')
      b.pending.set(request.raw, rec)
      const scripted = b.takeScript('websocket', rec)
      if (scripted === null) return
      rec.status = scripted.status
      b.notify()
      reply.code(scripted.status).headers(scripted.headers ?? {})
      reply.type(scripted.contentType ?? 'application/json')
      return reply.send(encodeBody(scripted.body))
    })

    app.post(ENROLL_PATH, async (request, reply) => {
      const b = backend()
      const rec = b.recordRequest('enroll', request, typeof request.body === 'string' ? request.body : '')
      const scripted = b.takeScript('enroll', rec)
      const answer = scripted ?? { status: 200, body: b.issue('enroll', b.newServer()) }
      return b.answer(reply, rec, answer)
    })

    app.post(REFRESH_PATH, async (request, reply) => {
      const b = backend()
      const rec = b.recordRequest('refresh', request, typeof request.body === 'string' ? request.body : '')
      const scripted = b.takeScript('refresh', rec)
      let answer: ScriptedReply
      if (scripted !== null) answer = scripted
      else {
        const serverId: unknown = rec.body?.server_id
        const environmentId = typeof serverId === 'string' ? b.servers.get(serverId) : undefined
        answer =
          typeof serverId === 'string' && environmentId !== undefined
            ? { status: 200, body: b.issue('refresh', { serverId, environmentId }) }
            : { status: 404, body: NOT_FOUND_BODY }
      }
      return b.answer(reply, rec, answer)
    })

    app.get(WEBSOCKET_PATH, { websocket: true }, (socket, request) => {
      const b = backend()
      const rec = b.pending.get(request.raw) ?? b.recordRequest('websocket', request, '')
      rec.status = 101
      b.connections.push(new BackendConnection(socket, rec))
      socket.on('close', () => b.notify())
      b.notify()
    })

    await app.listen({ host: '127.0.0.1', port: 0 })
    const port = (app.server.address() as AddressInfo).port
    self = new FakeRemoteBackend(app, `http://127.0.0.1:${port}${BACKEND_PREFIX}`, options)
    return self
  }

  /** Queues scripted replies for the next requests to `endpoint`. */
  script(endpoint: Endpoint, ...replies: Script[]): void {
    this.scripts[endpoint].push(...replies)
  }

  /** Scripted replies not yet used. */
  scriptedLeft(endpoint: Endpoint): number {
    return this.scripts[endpoint].length
  }

  /** The requests to one endpoint, in order. */
  of(endpoint: Endpoint): BackendRequest[] {
    return this.requests.filter((r) => r.endpoint === endpoint)
  }

  /** The requests that came after `index`. */
  since(index: number): BackendRequest[] {
    return this.requests.filter((r) => r.index > index)
  }

  get lastConnection(): BackendConnection | undefined {
    return this.connections.at(-1)
  }

  /** Waits (real time) until `cond` holds; re-checked on every request, connection and envelope. */
  async until(cond: () => boolean, label = 'the backend condition', timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${label}`)
      await new Promise<void>((resolve) => {
        // Polled too: envelopes arrive on connections, which notify their own waiters.
        const timer = setTimeout(resolve, Math.min(left, 20))
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** Waits until `n` WebSockets have been accepted in all; returns the n-th. */
  async waitForConnection(n: number, timeoutMs = 5_000): Promise<BackendConnection> {
    await this.until(() => this.connections.length >= n, `backend websocket #${n}`, timeoutMs)
    return this.connections[n - 1] as BackendConnection
  }

  /** A new server as enroll makes one (also usable by a script to hand out a grant). */
  newServer(): { serverId: string; environmentId: string } {
    const n = this.nextServer++
    const serverId = `srv-${n}-${Math.random().toString(36).slice(2, 8)}`
    const environmentId = `env-${n}-${Math.random().toString(36).slice(2, 8)}`
    this.servers.set(serverId, environmentId)
    return { serverId, environmentId }
  }

  /** A grant body (snake_case, as the backend sends it) with a fresh canary token; recorded in `grants`. */
  issue(endpoint: 'enroll' | 'refresh', ids: { serverId: string; environmentId: string }): Json {
    const grant: IssuedGrant = {
      endpoint,
      serverId: ids.serverId,
      environmentId: ids.environmentId,
      token: canary('rctoken'),
      expiresAt: new Date(Date.now() + this.tokenTtlMs).toISOString(),
    }
    this.grants.push(grant)
    return { server_id: grant.serverId, environment_id: grant.environmentId, remote_control_token: grant.token, expires_at: grant.expiresAt }
  }

  close(): Promise<void> {
    for (const c of this.connections) if (!c.isClosed) c.terminate()
    return this.app.close()
  }

  // ---- internals ----

  private recordRequest(endpoint: Endpoint, request: FastifyRequest, rawBody: string): BackendRequest {
    let body: Json | null = null
    if (rawBody !== '') {
      try {
        const parsed = JSON.parse(rawBody) as unknown
        body = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : null
      } catch {
        body = null
      }
    }
    const rec: BackendRequest = {
      index: this.requests.length,
      endpoint,
      method: request.method,
      url: request.url,
      headers: { ...request.headers },
      rawBody,
      body,
      at: Date.now(),
      status: 0,
      grant: null,
    }
    this.requests.push(rec)
    return rec
  }

  private takeScript(endpoint: Endpoint, rec: BackendRequest): ScriptedReply | null {
    const next = this.scripts[endpoint].shift()
    if (next === undefined) return null
    const reply = typeof next === 'function' ? next(rec) : next
    return reply === 'default' ? null : reply
  }

  private answer(reply: import('fastify').FastifyReply, rec: BackendRequest, answer: ScriptedReply): string {
    rec.status = answer.status
    const body = answer.body as Json | undefined
    if (answer.status >= 200 && answer.status < 300 && body && typeof body === 'object' && typeof body.remote_control_token === 'string') {
      rec.grant = this.grants.find((g) => g.token === body.remote_control_token) ?? null
    }
    this.notify()
    reply.code(answer.status).headers(answer.headers ?? {})
    reply.type(answer.contentType ?? 'application/json')
    return encodeBody(answer.body)
  }

  private notify(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}

function encodeBody(body: unknown): string {
  if (body === undefined) return ''
  return typeof body === 'string' ? body : JSON.stringify(body)
}
