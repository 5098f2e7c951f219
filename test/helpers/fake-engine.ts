/**
 * A scriptable stand-in for `codex app-server --listen unix://SOCKET`: a WebSocket JSON-RPC
 * server on a unix socket, speaking codex's framing (no `jsonrpc` member; errors as
 * `{error:{code,message},id}`). It answers `initialize` as codex does, answers other methods
 * with per-method functions (or leaves them unanswered, for in-flight tests), records every
 * frame each connection received as raw text, pushes notifications and server→client requests
 * (any id, forged ones included), floods a connection with one frame, and can crash (every
 * socket dropped, listener gone).
 *
 * Clients connect with `new WebSocket('ws+unix://' + socketPath + ':/')`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocketServer, type WebSocket } from 'ws'

export type Frame = Record<string, unknown>

/** What an answer function returns: a result, or `{ error }` to answer with an error. */
export type Answer = { readonly result: unknown } | { readonly error: { code: number; message: string } }
export type AnswerFn = (params: unknown, conn: FakeEngineConnection) => Answer

export const FAKE_ENGINE_INITIALIZE_RESULT = {
  userAgent: 'codex_app_server/0.169.0 (fake engine)',
  codexHome: '/fake/codex-home',
  platformFamily: 'unix',
  platformOs: 'linux',
}

interface Waiter {
  readonly match: (frame: Frame, text: string) => boolean
  readonly resolve: (text: string) => void
}

export class FakeEngineConnection {
  /** Every text frame received, exactly as it arrived. */
  readonly frames: string[] = []
  private waiters: Waiter[] = []
  private nextId = 0
  private closedPromise: Promise<void>

  constructor(
    readonly socket: WebSocket,
    private readonly answers: ReadonlyMap<string, AnswerFn>,
  ) {
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('message', (data, isBinary) => {
      if (!isBinary) this.receive(data.toString())
    })
  }

  /** Resolves when the socket has closed (from either side). */
  closed(): Promise<void> {
    return this.closedPromise
  }

  /** The first frame received (already or later) that `match` accepts, as raw text. */
  waitFor(match: (frame: Frame, text: string) => boolean): Promise<string> {
    for (const text of this.frames) if (match(parse(text), text)) return Promise.resolve(text)
    return new Promise((resolve) => this.waiters.push({ match, resolve }))
  }

  /** The first request received for `method`, parsed. */
  async request(method: string): Promise<Frame> {
    return parse(await this.waitFor((f) => f.method === method && 'id' in f))
  }

  /** The first reply (result or error) received for `id`, parsed. */
  async reply(id: unknown): Promise<Frame> {
    return parse(await this.waitFor((f) => f.method === undefined && f.id === id && ('result' in f || 'error' in f)))
  }

  sendRaw(text: string): void {
    this.socket.send(text)
  }

  /**
   * Sends `text` `count` times as fast as the peer takes it, never more than `batch` frames
   * waiting in this side's buffer (the flood holds no unbounded queue of its own). Resolves
   * with how many were sent: all of them, or fewer once the socket closed.
   */
  async flood(text: string, count: number, batch = 256): Promise<number> {
    let sent = 0
    while (sent < count && this.socket.readyState === this.socket.OPEN) {
      const n = Math.min(batch, count - sent)
      for (let i = 1; i < n; i++) this.socket.send(text)
      await new Promise<void>((resolve) => this.socket.send(text, () => resolve()))
      sent += n
    }
    return sent
  }

  notify(method: string, params?: unknown): void {
    this.sendRaw(JSON.stringify(params === undefined ? { method } : { method, params }))
  }

  /** Sends a server→client request (with `id`, or the next of this connection's ids from 0); returns its id. */
  sendRequest(method: string, params: unknown, id: string | number = this.nextId++): string | number {
    this.sendRaw(JSON.stringify({ id, method, params }))
    return id
  }

  /** Sends a request and resolves with the reply the engine receives for it. */
  async ask(method: string, params: unknown, id?: string | number): Promise<Frame> {
    return this.reply(this.sendRequest(method, params, id))
  }

  /** The engine asks for fresh ChatGPT tokens, as codex does after a 401. */
  askTokenRefresh(params: unknown = { reason: 'unauthorized', previousAccountId: null }): Promise<Frame> {
    return this.ask('account/chatgptAuthTokens/refresh', params)
  }

  /** Answers a client request as written (`result` or `error`). */
  answer(id: unknown, answer: Answer): void {
    this.sendRaw('error' in answer ? JSON.stringify({ error: answer.error, id }) : JSON.stringify({ id, result: answer.result }))
  }

  private receive(text: string): void {
    this.frames.push(text)
    const frame = parse(text)
    const pending = this.waiters
    this.waiters = []
    for (const w of pending) {
      if (w.match(frame, text)) w.resolve(text)
      else this.waiters.push(w)
    }
    if (typeof frame.method !== 'string' || !('id' in frame)) return
    if (frame.method === 'initialize') this.answer(frame.id, { result: FAKE_ENGINE_INITIALIZE_RESULT })
    else {
      const fn = this.answers.get(frame.method)
      if (fn !== undefined) this.answer(frame.id, fn(frame.params, this))
    }
  }
}

export class FakeEngine {
  readonly connections: FakeEngineConnection[] = []
  private readonly answers = new Map<string, AnswerFn>()
  private connectionWaiters: ((c: FakeEngineConnection) => void)[] = []

  private constructor(
    readonly socketPath: string,
    private readonly dir: string,
    private readonly http: Server,
    private readonly wss: WebSocketServer,
  ) {
    // The credentials hand-off is answered as the real engine answers it, so a gateway that
    // waits for it before opening client upstreams works against a bare fake; tests override.
    this.answers.set('account/logout', () => ({ result: {} }))
    this.answers.set('account/login/start', (p) => ({ result: { type: (p as { type?: unknown } | null)?.type ?? 'apiKey' } }))
    this.answers.set('account/read', () => ({ result: { account: null, requiresOpenaiAuth: false } }))
    wss.on('connection', (socket) => {
      const conn = new FakeEngineConnection(socket, this.answers)
      this.connections.push(conn)
      const waiters = this.connectionWaiters
      this.connectionWaiters = []
      for (const w of waiters) w(conn)
    })
  }

  static async start(): Promise<FakeEngine> {
    const dir = mkdtempSync(join(tmpdir(), 'app-server-fake-engine-'))
    const socketPath = join(dir, 'engine.sock')
    const http = createServer()
    const wss = new WebSocketServer({ server: http })
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject)
      http.listen(socketPath, () => resolve())
    })
    return new FakeEngine(socketPath, dir, http, wss)
  }

  /** Answers every later request for `method` with `fn`. */
  on(method: string, fn: AnswerFn): void {
    this.answers.set(method, fn)
  }

  /** Leaves later requests for `method` unanswered (the test answers them with `answer`). */
  off(method: string): void {
    this.answers.delete(method)
  }

  /** Drops every connection without a close frame; unlike `crash`, it keeps listening (a restarted engine). */
  dropConnections(): void {
    for (const c of this.connections) c.socket.terminate()
  }

  /** The `n`-th connection (0-based), once it exists. */
  connection(n: number): Promise<FakeEngineConnection> {
    const existing = this.connections[n]
    if (existing !== undefined) return Promise.resolve(existing)
    return new Promise((resolve) => {
      const wait = (): void => {
        const c = this.connections[n]
        if (c !== undefined) resolve(c)
        else this.connectionWaiters.push(wait)
      }
      this.connectionWaiters.push(wait)
    })
  }

  /** The connection whose `initialize` named `clientName`, once it exists. */
  async connectionOf(clientName: string): Promise<FakeEngineConnection> {
    for (let n = 0; ; n++) {
      const conn = await this.connection(n)
      const init = parse(await conn.waitFor((f) => f.method === 'initialize'))
      const clientInfo = (init.params as { clientInfo?: { name?: unknown } } | undefined)?.clientInfo
      if (clientInfo?.name === clientName) return conn
    }
  }

  /** An abrupt engine death: every socket is dropped without a close frame, and nothing listens any more. */
  crash(): void {
    for (const c of this.connections) c.socket.terminate()
    this.wss.close()
    this.http.close()
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.socket.terminate()
    await new Promise<void>((resolve) => this.wss.close(() => resolve()))
    await new Promise<void>((resolve) => this.http.close(() => resolve()))
    rmSync(this.dir, { recursive: true, force: true })
  }
}

function parse(text: string): Frame {
  try {
    const v: unknown = JSON.parse(text)
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Frame) : {}
  } catch {
    return {}
  }
}
