/**
 * The frame rules of src/engine/frame-check.ts against the real codex engine: each frame the
 * gateway refuses is one codex 0.169.0 drops without an answer (asked of the engine directly,
 * on its own socket), and the gateway answers it with -32600 instead; what codex does read —
 * 127 levels of nesting, a surrogate pair, a null or typed `trace`, an id written `-0` — goes
 * through the gateway and is answered by the engine. Should a newer codex read one of the
 * refused frames, the first test fails and the rule can be relaxed.
 *
 * Skips (saying why) only when the engine binary is not installed; under CI it fails instead.
 */
import { join } from 'node:path'
import t from 'tap'
import WebSocket from 'ws'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { RpcClient, connect } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Json = Record<string, any>

// The engine and the shells it runs inherit HOME: a throwaway one keeps them out of the developer's.
process.env.HOME = tempDir('attack-engine-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

const LIST = '"method":"thread/loaded/list","params":{}'
const nested = (levels: number): string => `{"id":"deep-${levels}",${LIST.replace('{}', `{"x":${'['.repeat(levels - 2)}${']'.repeat(levels - 2)}}`)}}`

/** Frames codex drops without an answer, each with the id it carries and the gateway's refusal. */
const REFUSED: readonly [string, string | number, string][] = [
  [`{"id":"d1","method":"command/exec",${LIST}}`, 'd1', 'a member is named twice'],
  [`{"id":"d2",${LIST},"params":{}}`, 'd2', 'a member is named twice'],
  [`{"id":7001.0,${LIST}}`, 7001, 'a numeric id must be written as an integer'],
  [`{"id":7e3,${LIST}}`, 7000, 'a numeric id must be written as an integer'],
  [`{"id":"tr",${LIST},"trace":5}`, 'tr', 'trace must be null or an object of string traceparent and tracestate'],
  [`{"id":"ls","method":"thread/loaded/list","params":{"x":"\\ud800"}}`, 'ls', 'a string holds a lone surrogate'],
  [nested(128), 'deep-128', 'nesting deeper than 127 levels'],
]

/** Frames codex reads and answers. */
const READ: readonly [string, string | number][] = [
  [nested(127), 'deep-127'],
  [`{"id":"pair","method":"thread/loaded/list","params":{"x":"\\ud83d\\ude00"}}`, 'pair'],
  [`{"id":"tn",${LIST},"trace":null}`, 'tn'],
  [`{"id":"ts",${LIST},"trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":null}}`, 'ts'],
  [`{"id":-0,${LIST}}`, 0],
]

async function send(c: RpcClient, text: string, id: unknown): Promise<Json> {
  c.sendRaw(text)
  return c.waitForFrame((m) => m.id === id && ('result' in m || 'error' in m))
}

t.test('the gateway refuses exactly the frames the real engine would drop unanswered', { skip: absent ?? false }, async (t) => {
  const model = await FakeModel.start({ defaultText: 'unused', defaultDeltas: 1 })
  t.teardown(() => model.close())
  const home = tempDir('attack-engine-home', t)
  const server: TestServer = await startServer({
    argv: ['--home', home, '--engine', 'on', '--engine-home', tempDir('attack-engine-codex-home', t), ...model.engineConfigOverrides().flatMap((o) => ['--engine-config', o])],
  })
  t.teardown(() => server.drainAndClose())
  t.equal((await server.app.engine.settled()).state, 'running', 'the engine is ready')

  // Directly on the engine's own socket: no answer to any refused frame, while a marker sent
  // after each is answered (the engine reads one socket's frames in order).
  const direct = await new Promise<RpcClient>((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${join(home, 'engine', 'codex.sock')}:/`, { perMessageDeflate: false })
    ws.once('open', () => resolve(new RpcClient(ws)))
    ws.once('error', reject)
  })
  t.teardown(() => direct.close())
  await direct.initialize('attack-direct')
  for (const [text, id] of REFUSED) {
    direct.sendRaw(text)
    t.ok('result' in (await direct.request('thread/loaded/list', {}, `marker-${String(id)}`)), `the marker after ${String(id)} is answered`)
  }
  const answered = direct.frames.map((f) => JSON.parse(f) as Json).filter((m) => REFUSED.some(([, id]) => m.id === id))
  t.same(answered, [], 'codex answered none of the frames the gateway refuses')

  // Through the gateway: each refused with a clear error; what codex reads is answered.
  const c = await connect(server.wsUrl)
  t.teardown(() => c.close())
  await c.initialize('attack-client')
  for (const [text, id, problem] of REFUSED) {
    t.same((await send(c, text, id)).error, { code: -32600, message: `Invalid request: ${problem}` }, problem)
  }
  for (const [text, id] of READ) t.ok('result' in (await send(c, text, id)), `the engine answers ${String(id)}`)
  t.equal(server.app.inFlight.current, 0, 'no request is left hanging')
})
