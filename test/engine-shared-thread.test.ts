/**
 * Shared threads through the gateway, against the real codex engine (fake Responses API on
 * loopback): client A starts a thread and runs a first turn; client B, on its own socket and so
 * its own upstream, resumes that thread by id (`thread/resume`, which for a loaded thread makes
 * the engine add B's connection to the thread's subscribers). A turn then started by either
 * client streams to both: each receives the same `item/agentMessage/delta`s and its own
 * `turn/completed`. A third client that never resumed the thread receives no turn or item
 * notification: codex 0.169.0 sends those only to the thread's subscribers, while its
 * thread-lifecycle notifications (`thread/started`, `thread/status/changed`, …) go to every
 * initialized connection. The gateway preserves exactly that: the third client hears of the
 * thread what a fourth, connected straight to the engine's socket, hears.
 *
 * Skips (saying why) only when the engine binary is not installed; under CI it fails instead.
 */
import { join } from 'node:path'
import t from 'tap'
import WebSocket from 'ws'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { SOCKET_DIR_NAME, SOCKET_NAME } from '../src/engine/supervisor.js'
import { connect, RpcClient } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

type Json = Record<string, any>

// A throwaway HOME: the engine's shells read a login profile from it (the real one may hang them).
process.env.HOME = tempDir('engine-shared-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

/** Notifications about one turn, which the engine sends only to the thread's subscribers. */
const TURN_SCOPED = /^(turn|item)\//

function openUnix(socketPath: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${socketPath}:/`, { perMessageDeflate: false })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function parsed(c: RpcClient, from = 0): Json[] {
  return c.frames.slice(from).map((f) => JSON.parse(f) as Json)
}

/** The turn's notifications `c` received since frame `from`, once its `turn/completed` arrived. */
async function turnSeenBy(c: RpcClient, from: number, turnId: string): Promise<Json[]> {
  await c.waitForFrame(() => parsed(c, from).some((m) => m.method === 'turn/completed' && m.params?.turn?.id === turnId))
  return parsed(c, from).filter((m) => typeof m.method === 'string' && (m.params?.turnId === turnId || m.params?.turn?.id === turnId))
}

function deltaText(notes: readonly Json[]): string {
  return notes.filter((n) => n.method === 'item/agentMessage/delta').map((n) => n.params.delta as string).join('')
}

async function started(c: RpcClient, threadId: string, text: string): Promise<string> {
  const reply = await c.request('turn/start', { threadId, input: [{ type: 'text', text, text_elements: [] }] })
  if (!('result' in reply)) throw new Error(`turn/start failed: ${JSON.stringify(reply)}`)
  return (reply.result as Json).turn.id as string
}

t.test('two clients that resumed the same thread both stream its turns', { skip: absent ?? false }, async (t) => {
  const model = await FakeModel.start({ defaultText: 'Shared with every subscriber.', defaultDeltas: 5 })
  t.teardown(() => model.close())
  const home = tempDir('engine-shared-home', t)
  const server = await startServer({
    argv: ['--home', home, '--engine', 'on', '--engine-home', tempDir('engine-shared-codex-home', t), ...model.engineConfigOverrides().flatMap((o) => ['--engine-config', o])],
  })
  t.teardown(() => server.drainAndClose())
  t.equal((await server.app.engine.settled()).state, 'running', 'the engine is ready')

  const clients: RpcClient[] = []
  const open = async (name: string): Promise<RpcClient> => {
    const c = await connect(server.wsUrl)
    clients.push(c)
    await c.initialize(name)
    c.notify('initialized')
    return c
  }
  t.teardown(() => Promise.all(clients.map((c) => c.close())))
  const a = await open('shared-a')
  const b = await open('shared-b')
  const bystander = await open('shared-bystander')
  // The same bystander straight on the engine's socket, bypassing the gateway.
  const direct = new RpcClient(await openUnix(join(home, SOCKET_DIR_NAME, SOCKET_NAME)))
  clients.push(direct)
  await direct.initialize('shared-direct')
  direct.notify('initialized')

  const thread = await a.request('thread/start', { cwd: tempDir('engine-shared-work', t) })
  const threadId = (thread.result as Json).thread.id as string
  t.type(threadId, 'string')
  const firstTurn = await started(a, threadId, 'first')
  t.equal(deltaText(await turnSeenBy(a, 0, firstTurn)), 'Shared with every subscriber.', 'A ran a first turn on its thread')
  t.notOk(parsed(b).some((m) => TURN_SCOPED.test(String(m.method))), 'before resuming, B hears none of its turn')

  const resumed = await b.request('thread/resume', { threadId })
  t.equal((resumed.result as Json | undefined)?.thread?.id, threadId, `B resumed the thread: ${JSON.stringify(resumed.error ?? null)}`)

  /** `starter` runs a turn answered with `text`; what each of A and B then heard of it. */
  const sharedTurn = async (starter: RpcClient, text: string): Promise<{ turnId: string; heard: Map<RpcClient, Json[]> }> => {
    model.defaultText = text
    const from = new Map([a, b].map((c) => [c, c.frames.length]))
    const turnId = await started(starter, threadId, text)
    const seen = await Promise.all([a, b].map((c) => turnSeenBy(c, from.get(c)!, turnId)))
    return { turnId, heard: new Map([[a, seen[0]!], [b, seen[1]!]]) }
  }
  const names = new Map([[a, 'A'], [b, 'B']])

  // A starts the second turn, then B the third: both clients stream both, whoever started it.
  for (const [starter, text] of [[a, 'Second turn, from A.'], [b, 'Third turn, from B.']] as const) {
    const bFrom = b.frames.length
    const { turnId, heard } = await sharedTurn(starter, text)
    for (const [c, saw] of heard) {
      const role = c === starter ? 'which started it' : 'which did not'
      t.equal(deltaText(saw), text, `${names.get(c)}, ${role}, got the deltas of ${names.get(starter)}'s turn`)
      t.match(saw.find((n) => n.method === 'turn/completed')?.params, { threadId, turn: { id: turnId, status: 'completed' } }, `and its turn/completed`)
    }
    if (starter === a) t.notOk(parsed(b, bFrom).some((m) => m.id !== undefined && 'result' in m), "B never saw A's turn/start reply (replies stay on their upstream)")
  }

  // What a connection that never resumed the thread hears of it is the engine's choice (its
  // thread-lifecycle broadcasts, no turn): the same through the gateway as directly.
  const heard = (c: RpcClient): string[] => parsed(c).filter((m) => m.params?.threadId === threadId || m.params?.thread?.id === threadId).map((m) => m.method as string)
  await until(() => heard(direct).length > 0 && heard(direct).join() === heard(bystander).join(), 'the bystanders to hear the same', 10_000)
  t.same(heard(bystander), heard(direct), 'a bystander through the gateway hears of the thread exactly what one on the engine socket does')
  t.ok(heard(bystander).includes('thread/status/changed'), "the engine's thread-status broadcasts reach it")
  t.same(heard(bystander).filter((m) => TURN_SCOPED.test(m)), [], 'but no turn or item notification')
})
