/**
 * The engine rpc client over a real WebSocket on a real unix socket, against a scripted peer
 * standing in for the engine: codex framing both ways, calls settled by response, error,
 * timeout (injected timers) or close; engine→gateway requests answered by the handler;
 * malformed frames dropped with a WARN that never quotes them.
 */
import { createServer, type Server } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { WebSocketServer, type WebSocket } from 'ws'
import { EngineRpcClient, EngineRpcError, EngineRpcUnanswered } from '../src/engine/rpc-client.js'
import { createLogger } from '../src/log/logger.js'
import { RpcError } from '../src/rpc/errors.js'
import { systemClock, type Clock } from '../src/clock.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { WaitableLogs } from './helpers/engine-kit.js'
import { ManualClock } from './helpers/manual-clock.js'

type Test = import('tap').Test
type Json = Record<string, any>

const WARN = 40
const ERROR = 50

/** The engine's side: one connection at a time, every frame it receives kept in order. */
class Peer {
  readonly received: Json[] = []
  private waiters: (() => void)[] = []
  socket: WebSocket | null = null

  constructor(
    readonly socketPath: string,
    private readonly http: Server,
    private readonly wss: WebSocketServer,
  ) {
    wss.on('connection', (ws) => {
      this.socket = ws
      ws.on('message', (data) => {
        this.received.push(JSON.parse(String(data)) as Json)
        for (const w of this.waiters.splice(0)) w()
      })
    })
  }

  /** Resolves once `n` frames have been received. */
  async frames(n: number): Promise<Json[]> {
    while (this.received.length < n) await new Promise<void>((resolve) => this.waiters.push(resolve))
    return this.received.slice(0, n)
  }

  send(frame: string | Buffer): void {
    this.socket!.send(frame)
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate()
    this.wss.close()
    await new Promise<void>((resolve) => this.http.close(() => resolve()))
  }
}

async function startPeer(t: Test): Promise<Peer> {
  const dir = mkdtempSync(join(tmpdir(), 'engine-rpc-'))
  const socketPath = join(dir, 'peer.sock')
  const http = createServer()
  const wss = new WebSocketServer({ server: http })
  await new Promise<void>((resolve) => http.listen(socketPath, resolve))
  const peer = new Peer(socketPath, http, wss)
  t.teardown(async () => {
    await peer.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return peer
}

async function connected(t: Test, peer: Peer, timers: Clock = systemClock): Promise<{ client: EngineRpcClient; logs: WaitableLogs }> {
  const logs = new WaitableLogs()
  const client = await EngineRpcClient.connect(peer.socketPath, { log: createLogger('debug', logs), timers })
  t.teardown(() => client.close())
  return { client, logs }
}

t.test('calls, errors and notifications in codex framing', async (t) => {
  const peer = await startPeer(t)
  const { client } = await connected(t, peer)
  const notes: [string, unknown][] = []
  client.onNotification((method, params) => notes.push([method, params]))

  const first = client.call('thread/loaded/list', {}, 5_000)
  const second = client.call('config/read', { includeLayers: false }, 5_000)
  const [a, b] = await peer.frames(2)
  t.same(a, { id: 1, method: 'thread/loaded/list', params: {} }, 'no jsonrpc member, own ids')
  t.same(b, { id: 2, method: 'config/read', params: { includeLayers: false } })
  // Answered out of order, the second with an error.
  peer.send(JSON.stringify({ error: { code: -32600, message: 'bad config read', data: { x: 1 } }, id: 2 }))
  peer.send(JSON.stringify({ method: 'thread/started', params: { thread: { id: 't1' } } }))
  peer.send(JSON.stringify({ id: 1, result: { data: ['t1'] } }))
  t.same(await first, { data: ['t1'] })
  const err = await second.catch((e: unknown) => e)
  t.ok(err instanceof EngineRpcError)
  t.same((err as EngineRpcError).body, { code: -32600, message: 'bad config read', data: { x: 1 } })
  t.same(notes, [['thread/started', { thread: { id: 't1' } }]])

  client.notify('initialized')
  t.same((await peer.frames(3))[2], { method: 'initialized' })
})

t.test('requests from the engine are answered by the handler; its failures never leak', async (t) => {
  const peer = await startPeer(t)
  const { client, logs } = await connected(t, peer)
  const secret = canary('handler-error')

  peer.send(JSON.stringify({ id: 0, method: 'item/tool/requestUserInput', params: {} }))
  t.same((await peer.frames(1))[0], { error: { code: -32601, message: 'method not found: item/tool/requestUserInput' }, id: 0 }, 'no handler: -32601')

  client.onRequest((method, params) => {
    if (method === 'item/commandExecution/requestApproval') return { decision: 'accept', echo: params }
    if (method === 'account/chatgptAuthTokens/refresh') throw new RpcError(-32603, 'token refresh failed')
    return Promise.reject(new Error(`boom with ${secret}`))
  })
  peer.send(JSON.stringify({ id: 1, method: 'item/commandExecution/requestApproval', params: { itemId: 'i1' } }))
  peer.send(JSON.stringify({ id: 'r-2', method: 'account/chatgptAuthTokens/refresh', params: { reason: 'unauthorized' } }))
  peer.send(JSON.stringify({ id: 3, method: 'mcpServer/elicitation/request', params: {} }))
  const replies = (await peer.frames(4)).slice(1)
  const byId = new Map(replies.map((r) => [r.id, r]))
  t.same(byId.get(1), { id: 1, result: { decision: 'accept', echo: { itemId: 'i1' } } })
  t.same(byId.get('r-2'), { error: { code: -32603, message: 'token refresh failed' }, id: 'r-2' }, 'an RpcError is the answer')
  t.same(byId.get(3), { error: { code: -32603, message: 'internal error' }, id: 3 }, 'anything else is a bare internal error')
  const logged = await logs.waitFor((l) => l.event === 'engine.rpc.handler_failed')
  t.match(logged, { level: ERROR, method: 'mcpServer/elicitation/request', err: { type: 'Error' } })
  t.same(leakedCanaries(JSON.stringify(replies) + logs.text()), [], 'the handler text is neither sent nor logged')
})

t.test('malformed frames are dropped with a WARN that does not quote them', async (t) => {
  const peer = await startPeer(t)
  const { client, logs } = await connected(t, peer)
  const secret = canary('frame')
  const notes: string[] = []
  const alive = new Promise<void>((resolve) =>
    client.onNotification((method) => {
      notes.push(method)
      if (method === 'still/alive') resolve()
    }),
  )

  peer.send(`not json ${secret}`)
  peer.send(JSON.stringify({ jsonrpc: '2.0', secret }))
  peer.send(Buffer.from(JSON.stringify({ method: 'x', params: { secret } })))
  peer.send(JSON.stringify({ method: 'still/alive' }))
  await alive
  t.same(notes, ['still/alive'], 'the connection survives; good frames still arrive')
  const warnings = logs.lines.filter((l) => l.event === 'engine.rpc.malformed_frame')
  t.match(warnings, [
    { level: WARN, why: 'not json', bytes: `not json ${secret}`.length },
    { level: WARN, why: 'not a message' },
    { level: WARN, why: 'binary frame' },
  ])
  t.equal(warnings.length, 3)
  t.same(leakedCanaries(logs.text()), [], 'no frame text in the log')
})

t.test('a call gives up at its timeout (injected timers); a late answer is dropped', async (t) => {
  const peer = await startPeer(t)
  const timers = new ManualClock()
  const { client, logs } = await connected(t, peer, timers)
  const call = client.call('model/list', {}, 2_000)
  const [frame] = await peer.frames(1)
  timers.advance(1_999)
  timers.advance(1)
  const err = await call.catch((e: unknown) => e)
  t.ok(err instanceof EngineRpcUnanswered)
  t.equal((err as EngineRpcUnanswered).why, 'timeout')
  t.equal((err as Error).message, 'engine did not answer model/list in time')
  peer.send(JSON.stringify({ id: frame!.id as unknown, result: {} }))
  await logs.waitFor((l) => l.event === 'engine.rpc.unmatched_response')
  t.same(timers.pendingDelays(), [], 'no timer left behind')
})

t.test('the connection ending rejects waiting calls and tells onClose; later calls fail at once', async (t) => {
  const peer = await startPeer(t)
  const { client } = await connected(t, peer)
  let closes = 0
  client.onClose(() => closes++)
  const call = client.call('thread/list', {}, 60_000)
  await peer.frames(1)
  peer.socket!.close(1012, 'engine restarted')
  const err = await call.catch((e: unknown) => e)
  t.ok(err instanceof EngineRpcUnanswered)
  t.equal((err as EngineRpcUnanswered).why, 'closed')
  t.equal(closes, 1)
  t.ok(client.isClosed)
  const later = await client.call('thread/list', {}, 1_000).catch((e: unknown) => e)
  t.equal((later as EngineRpcUnanswered).why, 'closed')
  client.close()
  t.equal(closes, 1, 'onClose once')
})

t.test('connecting to a socket nobody listens on rejects', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'engine-rpc-none-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const err = await EngineRpcClient.connect(join(dir, 'nothing.sock'), { log: createLogger('debug', new WaitableLogs()), timers: systemClock }).catch((e: unknown) => e)
  t.match(err, { code: 'ENOENT' })
})
