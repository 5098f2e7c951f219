/**
 * A fake OpenAI Responses API on loopback, for running the real codex engine through whole
 * turns without a network. `POST /v1/responses` answers with server-sent events in the shapes
 * codex's Responses client parses (`response.created`, `response.output_item.added`,
 * `response.output_text.delta`…, `response.output_item.done`, `response.completed`).
 *
 * Each call takes the next scripted reply (`script(...)`), else the default: a message of
 * `defaultText` in `defaultDeltas` pieces. A reply can also be a function call (e.g.
 * `exec_command`), after which codex calls again with the tool's output.
 *
 * Point the engine at it with `engineConfigOverrides()` (a `mock` model provider that needs
 * no OpenAI auth). `authorize`, when set, answers 401 to the response calls it refuses (a stale
 * ChatGPT token). Any other path answers 404 (codex tolerates that for its optional calls).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export type ModelReply =
  | { readonly kind: 'text'; readonly text: string; readonly deltas?: number }
  | { readonly kind: 'function_call'; readonly name: string; readonly arguments: string; readonly callId?: string }

export interface RecordedModelRequest {
  readonly method: string
  readonly url: string
  readonly body: unknown
}

const MAX_BODY_BYTES = 16 * 1024 * 1024

export class FakeModel {
  readonly requests: RecordedModelRequest[] = []
  private readonly queue: ModelReply[] = []
  private responseSeq = 0
  /** When set, a `/v1/responses` call it refuses is answered 401 (a stale token, say). */
  authorize: ((req: IncomingMessage) => boolean) | null = null

  private constructor(
    private readonly server: Server,
    readonly port: number,
    public defaultText: string,
    public defaultDeltas: number,
  ) {}

  static async start(options: { defaultText?: string; defaultDeltas?: number } = {}): Promise<FakeModel> {
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const model = new FakeModel(server, (server.address() as AddressInfo).port, options.defaultText ?? 'Hello from the fake model.', options.defaultDeltas ?? 8)
    server.on('request', (req, res) => void model.handle(req, res))
    return model
  }

  /** `http://127.0.0.1:PORT/v1` */
  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}/v1`
  }

  /** The calls to `POST /v1/responses` so far. */
  get responseCalls(): RecordedModelRequest[] {
    return this.requests.filter((r) => r.method === 'POST' && r.url.startsWith('/v1/responses'))
  }

  /** Replies for the next calls, in order; the default applies once they are used up. */
  script(...replies: ModelReply[]): void {
    this.queue.push(...replies)
  }

  /** `-c` overrides that make the engine use this server as its only model provider. */
  engineConfigOverrides(): string[] {
    return [
      'model_provider="mock"',
      'model="mock-model"',
      `model_providers.mock={name="mock",base_url="${this.baseUrl}",wire_api="responses",requires_openai_auth=false}`,
    ]
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = await readBody(req)
    let body: unknown = text
    try {
      body = text === '' ? null : JSON.parse(text)
    } catch {
      // Recorded as text.
    }
    const url = req.url ?? '/'
    this.requests.push({ method: req.method ?? 'GET', url, body })
    if (req.method !== 'POST' || !url.startsWith('/v1/responses')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found"}}')
      return
    }
    if (this.authorize !== null && !this.authorize(req)) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"unauthorized","code":"token_expired"}}')
      return
    }
    const reply = this.queue.shift() ?? { kind: 'text', text: this.defaultText, deltas: this.defaultDeltas }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    for (const event of this.events(reply)) res.write(`event: ${String(event.type)}\ndata: ${JSON.stringify(event)}\n\n`)
    res.end()
  }

  private events(reply: ModelReply): Record<string, unknown>[] {
    const n = ++this.responseSeq
    const responseId = `resp_fake_${n}`
    const out: Record<string, unknown>[] = [{ type: 'response.created', response: { id: responseId, object: 'response', status: 'in_progress', output: [] } }]
    if (reply.kind === 'text') {
      const itemId = `msg_fake_${n}`
      const message = (status: string, content: unknown[]): Record<string, unknown> => ({ type: 'message', id: itemId, role: 'assistant', status, content })
      out.push({ type: 'response.output_item.added', output_index: 0, item: message('in_progress', []) })
      for (const delta of splitText(reply.text, reply.deltas ?? this.defaultDeltas)) {
        out.push({ type: 'response.output_text.delta', item_id: itemId, output_index: 0, content_index: 0, delta })
      }
      out.push({ type: 'response.output_item.done', output_index: 0, item: message('completed', [{ type: 'output_text', text: reply.text, annotations: [] }]) })
    } else {
      const item = { type: 'function_call', id: `fc_fake_${n}`, call_id: reply.callId ?? `call_fake_${n}`, name: reply.name, arguments: reply.arguments, status: 'completed' }
      out.push({ type: 'response.output_item.added', output_index: 0, item })
      out.push({ type: 'response.output_item.done', output_index: 0, item })
    }
    out.push({
      type: 'response.completed',
      response: { id: responseId, object: 'response', status: 'completed', output: [], usage: { input_tokens: 10, input_tokens_details: null, output_tokens: 5, output_tokens_details: null, total_tokens: 15 } },
    })
    return out
  }
}

/** `text` in `count` pieces (fewer when it is shorter), none empty, joined back exactly. */
export function splitText(text: string, count: number): string[] {
  const pieces = Math.max(1, Math.min(count, text.length))
  const size = Math.ceil(text.length / pieces)
  const out: string[] = []
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size))
  return out.length === 0 ? [''] : out
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) req.destroy(new Error('fake model: request body too large'))
      else chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}
