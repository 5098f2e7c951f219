/**
 * A fake ChatGPT usage backend (`GET /backend-api/wham/usage`) on a loopback port of its own.
 * It records what each call carried (the bearer token, the account header, the User-Agent) and
 * answers as the test scripts it: an object body is sent as JSON, a string body as it is (so a
 * test can send a truncated document), with `application/json` unless the reply names a type.
 * A reply may be a promise: the call is held (and counted in `calls`) until it settles.
 */
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'

export interface BackendCall {
  readonly authorization: string | undefined
  readonly accountId: string | undefined
  readonly userAgent: string | undefined
}

export interface BackendReply {
  readonly status: number
  readonly body: unknown
  readonly contentType?: string
}

export class FakeUsageBackend {
  readonly calls: BackendCall[] = []
  /** Scripted per test; sees each call and how many came before it. Until then: 200 with `usage`. */
  respond: (call: BackendCall, index: number) => BackendReply | Promise<BackendReply>

  private constructor(
    private readonly app: FastifyInstance,
    readonly baseUrl: string,
    usage: unknown,
  ) {
    this.respond = () => ({ status: 200, body: usage })
  }

  /** Listens on a free port; `usage` is the payload every call gets until `respond` is set. */
  static async start(usage: unknown): Promise<FakeUsageBackend> {
    const app = Fastify({ logger: false })
    let self: FakeUsageBackend | null = null
    app.get('/backend-api/wham/usage', async (request, reply) => {
      const h = request.headers
      const str = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(',') : v)
      const call: BackendCall = { authorization: str(h.authorization), accountId: str(h['chatgpt-account-id']), userAgent: str(h['user-agent']) }
      const backend = self as FakeUsageBackend
      const index = backend.calls.length
      backend.calls.push(call)
      const r = await backend.respond(call, index)
      reply.code(r.status).type(r.contentType ?? 'application/json')
      return typeof r.body === 'string' ? r.body : JSON.stringify(r.body)
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    self = new FakeUsageBackend(app, `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/backend-api`, usage)
    return self
  }

  /** Holds every call from now on until the returned function answers them all with `reply`. */
  hold(): (reply: BackendReply) => void {
    let answer!: (reply: BackendReply) => void
    const held = new Promise<BackendReply>((resolve) => (answer = resolve))
    this.respond = () => held
    return answer
  }

  close(): Promise<void> {
    return this.app.close()
  }
}
