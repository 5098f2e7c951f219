/**
 * Remote control into the real codex engine, end to end over real sockets: the gateway runs the
 * engine (fake Responses API on loopback) and remote control against the fake ChatGPT backend
 * (helpers/fake-remote-backend.ts). Remote clients speak through the backend's relay socket:
 *
 * - a remote `initialize` opens the virtual connection's own upstream, exactly as a local
 *   socket's does: the engine answers it (its `userAgent` names the engine and that remote
 *   client), and the engine gains one connection on its socket per virtual connection;
 * - `thread/start` and `turn/start` run in the engine; the turn's `item/agentMessage/delta`s
 *   and `turn/completed` come back as `server_message` envelopes whose `seq_id`s count 1, 2, 3…
 *   on the virtual connection;
 * - acks are honoured: with nothing acked, output stops at the relay's window of 128
 *   envelopes even though the engine has finished the turn, and each ack lets more through,
 *   until every delta has arrived in order;
 * - two virtual connections sending the same request ids each get only their own replies;
 * - `client_closed` closes that virtual connection's upstream (the engine loses exactly one
 *   connection), and the other keeps working.
 *
 * Skips (saying why) only when the engine binary is not installed; under CI it fails instead.
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { leakedCanaries, registerCanary } from './helpers/canary.js'
import { connect } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { FakeRemoteBackend, type BackendConnection, type Json } from './helpers/fake-remote-backend.js'
import { engineConnections } from './helpers/proc-sockets.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

// A throwaway HOME: the engine's shells read a login profile from it (the real one may hang them).
process.env.HOME = tempDir('engine-rc-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

const ACCOUNT_ID = 'acct-rc-engine'
const AUTH_CLAIM = 'https://api.openai.com/auth'
/** codex's (and the relay's) bound on unacked envelopes per virtual connection. */
const RELAY_WINDOW = 128
/** Model deltas in the streamed turn: well over the window's worth of notifications. */
const DELTAS = 300
const WAIT_MS = 20_000

/** A JWT-shaped ChatGPT access token (the engine reads its claims; nobody checks the signature), a canary. */
function chatgptToken(): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const claims = {
    email: 'rc-engine@example.com',
    exp: Math.floor(Date.now() / 1000) + 3600,
    [AUTH_CLAIM]: { chatgpt_plan_type: 'plus', chatgpt_account_id: ACCOUNT_ID },
    jti: randomBytes(8).toString('hex'),
  }
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.${randomBytes(16).toString('base64url')}`)
}

/** One remote client behind the relay: its ids, its next inbound seq_id, what reached it. */
class Remote {
  private seq = 0
  private nextId = 1
  /** The ids of the requests sent, in order. */
  readonly sentIds: (number | string)[] = []
  /** The highest seq_id acked so far. */
  acked = 0

  constructor(
    private readonly conn: BackendConnection,
    readonly clientId: string,
    readonly streamId: string,
  ) {}

  /** Its `server_message` envelopes, in arrival order. */
  envelopes(): Json[] {
    return this.conn.serverMessages(this.clientId, this.streamId)
  }

  /** Envelopes received past the last ack: what counts against the relay's window. */
  unacked(): number {
    return this.envelopes().filter((e) => (e.seq_id as number) > this.acked).length
  }

  messages(): Json[] {
    return this.envelopes().map((e) => e.message as Json)
  }

  send(message: Json): void {
    this.conn.sendClientMessage({ clientId: this.clientId, streamId: this.streamId, seqId: ++this.seq }, message)
  }

  /** Sends a request; resolves with its reply's message (waiting for it: replies queued behind the window too). */
  async request(method: string, params: unknown, id: number | string = this.nextId++): Promise<Json> {
    this.sentIds.push(id)
    this.send({ id, method, params })
    return (await this.conn.waitForReply(this.clientId, id, WAIT_MS)).message as Json
  }

  ack(seqId: number): void {
    this.acked = seqId
    this.conn.sendAck(this.clientId, this.streamId, seqId)
  }

  /** Acks everything received so far. */
  ackAll(): void {
    const last = this.envelopes().at(-1)?.seq_id as number | undefined
    if (last !== undefined && last > this.acked) this.ack(last)
  }
}

t.test('remote clients reach the real engine through the relay, each on its own upstream', { skip: absent ?? false }, async (t) => {
  const backend = await FakeRemoteBackend.start()
  t.teardown(() => backend.close())
  const words = Array.from({ length: DELTAS }, (_, i) => `w${i} `).join('')
  const model = await FakeModel.start({ defaultText: words, defaultDeltas: DELTAS })
  t.teardown(() => model.close())
  // The engine gets the ChatGPT tokens too: its ChatGPT calls stay on loopback (the fake
  // backend, which answers what it does not serve with 404); turns use the mock provider.
  const overrides = [...model.engineConfigOverrides(), `chatgpt_base_url="${backend.baseUrl}/"`]
  const server = await startServer({
    argv: ['--engine', 'on', '--engine-home', tempDir('engine-rc-codex-home', t), ...overrides.flatMap((o) => ['--engine-config', o])],
    env: { CHATGPT_BASE_URL: backend.baseUrl },
    remoteControl: { serverName: 'rc-engine-host' },
  })
  t.teardown(() => server.drainAndClose())
  t.equal((await server.app.engine.settled()).state, 'running', 'the engine is ready')
  const pid = server.app.engine.pid as number

  // Remote control needs a ChatGPT account: a local client logs in with external tokens and enables it.
  const local = await connect(server.wsUrl)
  t.teardown(() => local.close())
  await local.initialize('rc-engine-local')
  local.notify('initialized')
  const token = chatgptToken()
  t.same((await local.request('account/login/start', { type: 'chatgptAuthTokens', accessToken: token, chatgptAccountId: ACCOUNT_ID })).result, { type: 'chatgptAuthTokens' }, 'logged in with ChatGPT tokens')
  t.ok('result' in (await local.request('remoteControl/enable')), 'remote control enabled')
  const conn = await backend.waitForConnection(1, WAIT_MS)
  await local.waitForFrame((m) => m.method === 'remoteControl/status/changed' && (m.params as Json).status === 'connected')
  const baseline = engineConnections(pid)
  t.ok(baseline >= 2, `the engine has the gateway's control connection and the local client's upstream (${baseline})`)

  // Two remote clients: each initialize is the engine's own answer, over an upstream of its own.
  const a = new Remote(conn, 'phone-a', 'stream-a')
  const b = new Remote(conn, 'phone-b', 'stream-b')
  for (const [remote, name] of [[a, 'remote-a'], [b, 'remote-b']] as const) {
    const init = await remote.request('initialize', { clientInfo: { name, title: null, version: '2.0.0' } }, 'init')
    t.match(init.result, { userAgent: new RegExp(`/0\\.169\\.0 .*\\(${name}; 2\\.0\\.0\\)$`) }, `${name}: the engine answered its initialize`)
    remote.send({ method: 'initialized' })
  }
  await until(() => engineConnections(pid) === baseline + 2, 'one engine connection per remote client', WAIT_MS)
  t.equal(engineConnections(pid), baseline + 2, 'each virtual connection has its own upstream')

  // The same request id on both: each gets its own thread, and only its own reply.
  const cwd = tempDir('engine-rc-work', t)
  const [threadA, threadB] = await Promise.all([a.request('thread/start', { cwd }, 7), b.request('thread/start', { cwd }, 7)])
  const threadIdA = (threadA.result as Json | undefined)?.thread?.id as string
  const threadIdB = (threadB.result as Json | undefined)?.thread?.id as string
  t.type(threadIdA, 'string', `the engine started A's thread: ${JSON.stringify(threadA.error ?? null)}`)
  t.type(threadIdB, 'string', "and B's")
  t.not(threadIdA, threadIdB, 'two threads, one per remote client')
  for (const remote of [a, b]) {
    t.equal(remote.messages().filter((m) => m.id === 7).length, 1, `${remote.clientId} got exactly one reply to its request 7`)
  }
  a.ackAll()
  b.ackAll()

  // A's turn, with nothing acked: the relay's window fills and output stops there, though the
  // engine has finished (B, on its own upstream, reads the thread back idle meanwhile).
  const from = a.envelopes().length
  a.sentIds.push(8)
  a.send({ id: 8, method: 'turn/start', params: { threadId: threadIdA, input: [{ type: 'text', text: 'stream a lot', text_elements: [] }] } })
  await until(() => a.unacked() >= RELAY_WINDOW, 'the window of unacked envelopes to fill', WAIT_MS)
  await until(() => model.responseCalls.length > 0, 'the model call', WAIT_MS)
  const idleBy = Date.now() + WAIT_MS
  for (let id = 100; ; id++) {
    const read = await b.request('thread/read', { threadId: threadIdA }, id)
    b.ackAll()
    if ((read.result as Json | undefined)?.thread?.status?.type === 'idle') break
    if (Date.now() > idleBy) throw new Error(`A's thread still not idle: ${JSON.stringify(read)}`)
  }
  t.equal(a.unacked(), RELAY_WINDOW, `with nothing acked, exactly ${RELAY_WINDOW} envelopes went out`)
  t.notOk(a.messages().some((m) => m.method === 'turn/completed'), 'turn/completed waits behind them')

  // Acks let the rest through, window by window.
  let acks = 0
  while (!a.messages().some((m) => m.method === 'turn/completed')) {
    const seen = a.envelopes().length
    a.ackAll()
    acks++
    await until(() => a.envelopes().length > seen, 'more envelopes after an ack', WAIT_MS)
  }
  a.ackAll()
  t.ok(acks >= 2, `${acks} acks released the rest`)
  const seqs = a.envelopes().map((e) => e.seq_id as number)
  t.same(seqs, seqs.map((_, i) => i + 1), `seq_ids count 1..${seqs.length} on the virtual connection, none lost or repeated`)
  const turnMessages = a.messages().slice(from)
  t.match(turnMessages.find((m) => m.id === 8)?.result, { turn: { status: 'inProgress' } }, 'turn/start answered by the engine')
  const deltas = turnMessages.filter((m) => m.method === 'item/agentMessage/delta')
  // The engine may merge model deltas that arrive together; their text is what must be whole.
  t.ok(deltas.length > 0, `${deltas.length} agent message deltas`)
  t.equal(deltas.map((d) => (d.params as Json).delta).join(''), words, 'carrying the whole text, in order')
  t.match(turnMessages.find((m) => m.method === 'turn/completed')?.params, { threadId: threadIdA, turn: { status: 'completed' } })
  t.notOk(b.messages().some((m) => m.method === 'item/agentMessage/delta' || m.method === 'turn/completed'), "none of A's turn reached B")
  for (const remote of [a, b]) {
    const replies = remote.messages().filter((m) => 'id' in m && !('method' in m)).map((m) => m.id as number | string)
    t.same(replies, [...remote.sentIds], `${remote.clientId} got one reply per request it sent, and nothing else`)
  }

  // client_closed closes that virtual connection's upstream, and only that one.
  conn.sendClientClosed(b.clientId, b.streamId)
  await until(() => engineConnections(pid) === baseline + 1, "B's upstream to close", WAIT_MS)
  t.equal(engineConnections(pid), baseline + 1, "B's upstream closed with it")
  model.defaultText = 'still here'
  model.defaultDeltas = 2
  const again = await a.request('turn/start', { threadId: threadIdA, input: [{ type: 'text', text: 'again', text_elements: [] }] })
  a.ackAll()
  t.ok('result' in again, 'A still reaches the engine')
  await until(() => {
    a.ackAll()
    return a.messages().filter((m) => m.method === 'turn/completed').length === 2
  }, "A's second turn", WAIT_MS)
  conn.sendClientClosed(a.clientId, a.streamId)
  await until(() => engineConnections(pid) === baseline, "A's upstream to close", WAIT_MS)
  t.equal(engineConnections(pid), baseline, 'every remote upstream closed with its virtual connection')

  t.same(leakedCanaries(server.logs.text()), [], 'no token in any log line')
  t.notOk(server.logs.text().includes(token), 'not the ChatGPT access token either')
})
