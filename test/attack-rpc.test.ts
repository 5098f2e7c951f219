/**
 * A hostile client (and a hostile engine) at the JSON-RPC layer, over real sockets, with the
 * fake engine behind one shared gateway in signed-bearer mode. Each test is a finding of the
 * attack on issue #11 that was fixed:
 * - a request naming `method` twice was scope-checked on the last and forwarded with both;
 * - frames the engine cannot read (float ids, a bad `trace`, nesting past 127, lone
 *   surrogates) were forwarded and never answered, their in-flight slots held;
 * - client notifications of any name went to the engine unchecked;
 * - a client reply the engine cannot read left the engine's request waiting;
 * - an engine frame naming a member twice was routed on the last member.
 * What the engine receives is asserted by sending a marker after the frame under test: frames
 * on one socket arrive in order, so once the marker is in, anything forwarded before it is too.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { leakedCanaries } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { AttachedEngine } from './helpers/engine-kit.js'
import { FakeEngine, type FakeEngineConnection } from './helpers/fake-engine.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test
type Json = Record<string, any>

const SECRET = 'attack-rpc-test-shared-secret-0123456789abcd'
const READER_SCOPES = 'session thread:read'

const engine = await FakeEngine.start()
engine.on('thread/list', () => ({ result: { data: [], nextCursor: null } }))
engine.on('thread/loaded/list', () => ({ result: { data: [], nextCursor: null } }))
const secretFile = join(tempDir('attack-rpc', t), 'secret')
writeFileSync(secretFile, SECRET)
const server: TestServer = await startServer({
  argv: ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile],
  engine: { runner: new AttachedEngine(engine.socketPath) },
})
t.teardown(async () => {
  await server.close()
  await engine.close()
})

let clients = 0

/** An initialized client (all scopes, or `scope`) and its upstream at the fake engine. */
async function client(t: Test, scope?: string): Promise<{ c: RpcClient; up: FakeEngineConnection }> {
  const jwt = await signJwt(SECRET, { exp: nowSeconds() + 600, ...(scope === undefined ? {} : { scope }) })
  const c = await connect(server.wsBase, { Authorization: `Bearer ${jwt}` })
  t.teardown(() => c.close())
  const name = `attacker-${clients++}`
  await c.initialize(name)
  return { c, up: await engine.connectionOf(name) }
}

/** Sends `text` and resolves with the reply to its `id`. */
async function send(c: RpcClient, text: string, id: unknown): Promise<Json> {
  c.sendRaw(text)
  return c.waitForFrame((m) => m.id === id && ('result' in m || 'error' in m))
}

/** What the engine received on `up` after `from`, once a marker sent after it has arrived. */
async function receivedBefore(c: RpcClient, up: FakeEngineConnection, from: number): Promise<string[]> {
  const marker = `marker-${from}-${Math.random()}`
  const reply = await c.request('thread/loaded/list', {}, marker)
  if (!('result' in reply)) throw new Error(`marker refused: ${JSON.stringify(reply)}`)
  return up.frames.slice(from).filter((f) => !f.includes(marker))
}

const invalid = (what: string) => ({ code: -32600, message: `Invalid request: ${what}` })
const TWICE = invalid('a member is named twice')

t.test('a request naming a member twice is refused on either path; the engine never sees it', async (t) => {
  const { c: reader, up } = await client(t, READER_SCOPES)
  const from = up.frames.length
  // The gateway used to check the last `method` (readable) and forward the frame with both.
  t.same((await send(reader, '{"id":"d1","method":"command/exec","method":"thread/list","params":{"command":["id"]}}', 'd1')).error, TWICE)
  t.same((await send(reader, '{"id":"d2","method":"thread/list","method":"command/exec","params":{}}', 'd2')).error, TWICE)
  t.same((await send(reader, '{"id":"d3","method":"command/exec","\\u006dethod":"thread/list","params":{}}', 'd3')).error, TWICE, 'equal once unescaped')
  t.same((await send(reader, '{"id":"d4","method":"thread/list","params":{},"params":{}}', 'd4')).error, TWICE, 'params twice')
  t.same(await receivedBefore(reader, up, from), [], 'nothing reached the engine')

  // A gateway-owned method is refused the same way, not resolved by the last member.
  const { c: full } = await client(t)
  t.same((await send(full, '{"id":"g1","method":"account/logout","method":"account/read","params":{}}', 'g1')).error, TWICE)
  t.same((await full.request('account/read', {})).result, { account: null, requiresOpenaiAuth: false }, 'the connection still serves')
})

t.test('frames the engine could not read are refused with a clear error and hold no slot', async (t) => {
  const { c, up } = await client(t)
  const from = up.frames.length
  const cases: [string, string, Json][] = [
    ['{"id":7001.0,"method":"thread/list","params":{}}', 'id 7001.0', invalid('a numeric id must be written as an integer')],
    ['{"id":7e3,"method":"thread/list","params":{}}', 'id 7e3', invalid('a numeric id must be written as an integer')],
    ['{"id":"tr","method":"thread/list","params":{},"trace":5}', 'trace 5', invalid('trace must be null or an object of string traceparent and tracestate')],
    ['{"id":"tp","method":"thread/list","params":{},"trace":{"traceparent":1}}', 'traceparent 1', invalid('trace must be null or an object of string traceparent and tracestate')],
    ['{"id":"ls","method":"thread/list","params":{"cursor":"\\ud800"}}', 'lone high surrogate', invalid('a string holds a lone surrogate')],
    ['{"id":"lk","method":"thread/list","params":{"\\udc00":1}}', 'lone surrogate key', invalid('a string holds a lone surrogate')],
    ['{"id":"li\\udfff","method":"thread/list","params":{}}', 'lone surrogate id', invalid('a string holds a lone surrogate')],
    [`{"id":"deep","method":"thread/list","params":{"x":${'['.repeat(126)}${']'.repeat(126)}}}`, '128 levels', invalid('nesting deeper than 127 levels')],
    [`{"id":"deeper","method":"thread/list","params":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, '100k levels', invalid('nesting deeper than 127 levels')],
  ]
  for (const [text, what, error] of cases) {
    const id: unknown = (JSON.parse(text) as Json).id
    t.same((await send(c, text, id)).error, error, what)
  }
  t.same(await receivedBefore(c, up, from), [], 'none of them reached the engine')
  t.equal(server.app.inFlight.current, 0, 'no slot is held by a request the engine would never answer')

  // What the engine does read goes through: 127 levels, a surrogate pair, a null trace, id -0.
  const fine = [
    `{"id":"127","method":"thread/list","params":{"x":${'['.repeat(125)}${']'.repeat(125)}}}`,
    '{"id":"pair","method":"thread/list","params":{"cursor":"\\ud83d\\ude00"}}',
    '{"id":"nt","method":"thread/list","params":{},"trace":null}',
    '{"id":-0,"method":"thread/list","params":{}}',
  ]
  for (const text of fine) {
    const id: unknown = (JSON.parse(text) as Json).id
    t.ok('result' in (await send(c, text, id)), `forwarded and answered: ${text.slice(0, 40)}`)
  }
})

t.test('client notifications reach the engine only with the scope their name needs', async (t) => {
  const { c: reader, up } = await client(t, READER_SCOPES)
  const from = up.frames.length
  const mark = server.logs.lines.length
  reader.notify('initialized')
  reader.notify('command/exec', { command: ['id'] })
  reader.notify('future/notification', { x: 1 })
  reader.sendRaw('{"method":"initialized","method":"command/exec"}')
  t.same(await receivedBefore(reader, up, from), ['{"method":"initialized"}'], 'only `initialized` was forwarded')
  const warned = server.logs.lines.slice(mark).filter((l) => l.msg === 'client notification not forwarded to the engine')
  t.same(
    warned.map((l) => [l.method, l.problem]),
    [
      ['command/exec', 'needs scope exec'],
      ['future/notification', 'needs scope account:read'],
      // Named by the member `JSON.parse` kept (the last), as every other line about a frame.
      ['command/exec', 'a member is named twice'],
    ],
    'each refusal is logged with its reason',
  )

  // A connection holding every scope may send a name the table does not know (a newer engine's).
  const { c: full, up: fullUp } = await client(t)
  const fullFrom = fullUp.frames.length
  full.notify('future/notification', { x: 1 })
  t.same(await receivedBefore(full, fullUp, fullFrom), ['{"method":"future/notification","params":{"x":1}}'])
})

t.test('a client reply the engine could not read is answered to the engine with an error', async (t) => {
  const { c, up } = await client(t)
  for (const [what, reply] of [
    ['result twice', (id: number) => `{"id":${id},"result":{"decision":"decline"},"result":{"decision":"accept"}}`],
    ['lone surrogate', (id: number) => `{"id":${id},"result":{"decision":"accept","note":"\\ud800"}}`],
  ] as const) {
    const params = { threadId: 'th', turnId: 'tu', itemId: what, command: 'echo hi', cwd: '/tmp' }
    const engineId = `approval-${what}`
    const answered = up.ask('item/commandExecution/requestApproval', params, engineId)
    const seen = await c.waitForFrame((m) => m.method === 'item/commandExecution/requestApproval' && (m.params as Json).itemId === what)
    c.sendRaw(reply(seen.id as number))
    t.same(await answered, { error: { code: -32603, message: 'client reply could not be relayed' }, id: engineId }, what)
  }
})

t.test('an MCP elicitation that codex marks as an approval is declined for a client without exec', async (t) => {
  const { c: reader, up } = await client(t, 'session thread:read thread:write')
  const toolCall = { threadId: 'th', turnId: 'tu', serverName: 'files', mode: 'form', message: 'Allow the files MCP server to run tool "rm"?', requestedSchema: { type: 'object', properties: {} } }
  for (const kind of ['mcp_tool_call', 'tool_suggestion', 'a-kind-from-a-newer-codex']) {
    const declined = await up.ask('mcpServer/elicitation/request', { ...toolCall, _meta: { codex_approval_kind: kind } }, `elicit-${kind}`)
    t.same(declined, { id: `elicit-${kind}`, result: { action: 'decline', content: null } }, `${kind}: declined by the gateway`)
  }
  // An unmarked elicitation is an MCP server asking for input: the client sees it.
  const question = { ...toolCall, message: 'Which branch?', requestedSchema: { type: 'object', properties: { branch: { type: 'string' } } } }
  const answered = up.ask('mcpServer/elicitation/request', question, 'elicit-input')
  const seen = await reader.waitForFrame((m) => m.method === 'mcpServer/elicitation/request')
  t.equal((seen.params as Json).message, 'Which branch?', 'only the unmarked one reached the client')
  reader.sendRaw(JSON.stringify({ id: seen.id, result: { action: 'accept', content: { branch: 'main' } } }))
  t.same((await answered).result, { action: 'accept', content: { branch: 'main' } })

  // A client holding exec is asked.
  const { c: executor, up: execUp } = await client(t)
  const asked = execUp.ask('mcpServer/elicitation/request', { ...toolCall, _meta: { codex_approval_kind: 'mcp_tool_call' } }, 'elicit-exec')
  const approval = await executor.waitForFrame((m) => m.method === 'mcpServer/elicitation/request')
  executor.sendRaw(JSON.stringify({ id: approval.id, result: { action: 'accept', content: {} } }))
  t.same((await asked).result, { action: 'accept', content: {} }, 'the exec client approved it')
})

t.test('an engine frame naming a member twice is dropped, not routed on its last member', async (t) => {
  const { c, up } = await client(t)
  const mark = server.logs.lines.length
  // A client that reads the first `method` would take this for the gateway's own account news.
  up.sendRaw('{"method":"account/updated","method":"thread/started","params":{"authMode":"apikey"}}')
  up.sendRaw('{"id":"dup-request","method":"item/tool/requestUserInput","method":"x","params":{}}')
  up.notify('thread/status/changed', { threadId: 'after' })
  await c.waitForFrame((m) => m.method === 'thread/status/changed')
  t.same(c.notifications.map((n) => n.method), ['thread/status/changed'], 'only the well-formed frame reached the client')
  t.same(c.serverRequests, [])
  const dropped = server.logs.lines.slice(mark).filter((l) => l.msg === 'dropped malformed engine frame')
  t.same(dropped.map((l) => l.problem), ['a member is named twice', 'a member is named twice'])
})

t.test('initialize params the engine could not read are refused before any upstream opens', async (t) => {
  const jwt = await signJwt(SECRET, { exp: nowSeconds() + 600 })
  const c = await connect(server.wsBase, { Authorization: `Bearer ${jwt}` })
  t.teardown(() => c.close())
  const before = engine.connections.length
  const lone = '{"id":"i1","method":"initialize","params":{"clientInfo":{"name":"lone","title":"\\udbff","version":"1"}}}'
  t.same((await send(c, lone, 'i1')).error, invalid('a string holds a lone surrogate'))
  const deep = `{"id":"i2","method":"initialize","params":{"clientInfo":{"name":"deep","title":null,"version":"1","x":${'['.repeat(200)}${']'.repeat(200)}}}}`
  t.same((await send(c, deep, 'i2')).error, invalid('nesting deeper than 127 levels'))
  t.same((await send(c, '{"id":"i3","method":"initialize","params":{"clientInfo":{"name":"a","title":null,"version":"1"}},"params":{}}', 'i3')).error, TWICE)
  t.equal(engine.connections.length, before, 'no upstream was opened')
  await c.initialize('after-refusals')
  t.equal(engine.connections.length, before + 1, 'the same connection initializes once its params are readable')
})

t.test('client-chosen text echoed in an error is bounded: a long clientInfo.name, a long login id', async (t) => {
  const jwt = await signJwt(SECRET, { exp: nowSeconds() + 600 })
  const c = await connect(server.wsBase, { Authorization: `Bearer ${jwt}` })
  t.teardown(() => c.close())
  const name = await c.request('initialize', { clientInfo: { name: `\u0001${'n'.repeat(100_000)}`, title: null, version: '1' } })
  const nameMessage = (name.error as Json).message as string
  t.match(nameMessage, /^Invalid clientInfo\.name: '\\x01n+…\(\+\d+ chars\)'\. Must be a valid HTTP header value\.$/, "codex's wording, the name cut")
  t.ok(nameMessage.length < 200)
  await c.initialize('bounded-echo')
  const cancel = await c.request('account/login/cancel', { loginId: 'x'.repeat(100_000) })
  t.equal((cancel.error as Json).code, -32600)
  t.match((cancel.error as Json).message, /^invalid login id: x+…\(\+\d+ chars\)$/)
  t.ok(((cancel.error as Json).message as string).length < 200)
})

t.test('nothing any attack sent reached a log line as a secret', async (t) => {
  t.same(leakedCanaries(server.logs.text()), [])
})

