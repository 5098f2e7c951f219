/**
 * A test context for JSON-RPC suites: it opens servers and connections, remembers which
 * method each request id was, and when the test body is done checks every frame received
 * against codex's schemas and every server log for canaries.
 */
import t from 'tap'
import { leakedCanaries } from './canary.js'
import { connect, type RpcClient } from './client.js'
import { frameProblems, type FrameSchemas } from './codex-schemas.js'
import { startServer, type StartOptions, type TestServer } from './server.js'

export type TestT = Parameters<Parameters<typeof t.test>[0]>[0]
export type Json = Record<string, unknown>

export class Conn {
  private nextId = 1
  readonly methodsById = new Map<number, string>()
  constructor(
    readonly client: RpcClient,
    private readonly clientName: string,
  ) {}

  call(method: string, params?: unknown): Promise<Json> {
    const id = this.nextId++
    this.methodsById.set(id, method)
    return this.client.request(method, params, id)
  }

  async init(capabilities?: Json): Promise<void> {
    const reply = await this.call('initialize', {
      clientInfo: { name: this.clientName, title: null, version: '1.0.0' },
      ...(capabilities ? { capabilities } : {}),
    })
    if (!('result' in reply)) throw new Error(`initialize failed: ${JSON.stringify(reply)}`)
  }

  get notifications(): Json[] {
    return this.client.notifications
  }

  /** Resolves once `cond` holds (re-checked whenever a frame arrives). */
  async until(cond: () => boolean): Promise<void> {
    if (cond()) return
    await this.client.waitForFrame(() => cond())
  }

  /** The parsed frames, in arrival order. */
  frames(): Json[] {
    return this.client.frames.map((f) => JSON.parse(f) as Json)
  }

  /** Replies to a server→client request. */
  reply(id: unknown, body: { result: unknown } | { error: unknown }): void {
    this.client.sendRaw(JSON.stringify({ id, ...body }))
  }

  /** Waits for the `account/login/completed` of this login and returns its params. */
  async completed(loginId: string | null): Promise<Json> {
    const match = (n: Json) => n.method === 'account/login/completed' && (n.params as Json).loginId === loginId
    await this.until(() => this.notifications.some(match))
    return this.notifications.find(match)!.params as Json
  }

  /** Waits until `count` `account/updated` notifications arrived; returns them. */
  async updates(count: number): Promise<Json[]> {
    const list = () => this.notifications.filter((n) => n.method === 'account/updated').map((n) => n.params as Json)
    await this.until(() => list().length >= count)
    return list()
  }

  updatedCount(): number {
    return this.notifications.filter((n) => n.method === 'account/updated').length
  }
}

export class Ctx {
  readonly conns: Conn[] = []
  readonly servers: TestServer[] = []
  constructor(
    readonly t: TestT,
    private readonly schemas: FrameSchemas,
    private readonly clientName: string,
  ) {}

  async server(options: StartOptions = {}): Promise<TestServer> {
    const s = await startServer(options)
    this.servers.push(s)
    return s
  }

  async open(server: TestServer, url = server.wsUrl): Promise<Conn> {
    const c = new Conn(await connect(url), this.clientName)
    this.conns.push(c)
    return c
  }

  async initialized(server: TestServer, capabilities?: Json): Promise<Conn> {
    const c = await this.open(server)
    await c.init(capabilities)
    return c
  }

  /** Every received frame against codex's envelope schema and its payload schema. */
  verifyFrames(): void {
    let checked = 0
    const problems: string[] = []
    this.conns.forEach((conn, i) => {
      const frames = conn.frames()
      checked += frames.length
      const methodOf = (id: unknown) => (typeof id === 'number' ? conn.methodsById.get(id) : undefined)
      problems.push(...frameProblems(frames, methodOf, this.schemas, `connection ${i}`))
    })
    this.t.same(problems, [], `all ${checked} frames received match codex's schemas`)
  }

  /** No canary in any server log. */
  verifyLogs(): void {
    for (const s of this.servers) this.t.same(leakedCanaries(s.logs.text()), [], 'no secret in the server log')
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.client.ws.close()
    for (const s of this.servers) await s.close()
  }
}

/** `t.test` with a context whose frames and logs are checked when the body is done. */
export function contextTest(name: string, schemas: FrameSchemas, clientName: string, fn: (t: TestT, ctx: Ctx) => Promise<void>): void {
  t.test(name, async (t) => {
    const ctx = new Ctx(t, schemas, clientName)
    try {
      await fn(t, ctx)
      ctx.verifyFrames()
      ctx.verifyLogs()
    } finally {
      await ctx.close()
    }
  })
}
