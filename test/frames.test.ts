/**
 * Framing, the handshake and frame limits over real sockets: what is dropped, what is answered and
 * how, and what the server survives.
 */
import t from 'tap'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { startServer, type LogLine, type TestServer } from './helpers/server.js'

type Test = import('tap').Test
type Json = Record<string, unknown>

const CLIENT_INFO = { name: 'frames-test', title: null, version: '1.0.0' }

async function setup(t: Test, argv: readonly string[] = []): Promise<{ server: TestServer; client: RpcClient }> {
  const server = await startServer({ argv })
  t.teardown(() => server.close())
  const client = await open(t, server)
  return { server, client }
}

async function open(t: Test, server: TestServer): Promise<RpcClient> {
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  return client
}

/**
 * A request that proves the connection is still usable and that every earlier frame has been
 * handled (frames are handled in order, and log lines are written synchronously).
 */
async function ping(client: RpcClient): Promise<Json> {
  return client.request('initialize', { clientInfo: CLIENT_INFO })
}

function warnsSince(server: TestServer, from: number): LogLine[] {
  return server.logs.lines.slice(from).filter((l) => l.level === 40)
}

function errorOf(reply: Json): { code: number; message: string } {
  return reply.error as { code: number; message: string }
}

t.test('a non-JSON text frame is dropped with a WARN that does not quote it', async (t) => {
  const { server, client } = await setup(t)
  const secret = canary('frame-text')
  const text = `this is not json ${secret}`
  const mark = server.logs.lines.length
  client.sendRaw(text)
  const after = await ping(client)
  t.ok('result' in after, 'initialize afterwards works: the connection stayed usable')
  const warns = warnsSince(server, mark)
  t.equal(warns.length, 1, 'exactly one WARN (level 40) line')
  t.equal(warns[0]?.msg, 'dropped malformed JSON-RPC frame')
  t.notOk(JSON.stringify(warns[0]).includes('this is not json'), 'the WARN does not contain the frame text')
  t.same(leakedCanaries(server.logs.text()), [], 'nor the canary it held')
  t.equal(client.frames.length, 1, 'no reply to the dropped frame')
})

t.test('JSON that is not a message is dropped; the connection survives', async (t) => {
  const { server, client } = await setup(t)
  const mark = server.logs.lines.length
  const junk = ['42', 'null', '[]', '{"foo":1}', '{"id":1.5,"method":"x"}', '"a string"', 'true', '{"id":{},"method":"x"}', '{"id":[1],"method":"x"}', '{"method":7}']
  for (const j of junk) client.sendRaw(j)
  const after = await ping(client)
  t.ok('result' in after, 'initialize afterwards works')
  t.equal(client.frames.length, 1, 'no frame was answered except the initialize')
  const warns = warnsSince(server, mark)
  t.equal(warns.length, junk.length, 'one WARN per dropped frame')
  t.ok(warns.every((w) => w.msg === 'dropped malformed JSON-RPC frame'), 'each names the drop')
  t.ok(client.ws.readyState === client.ws.OPEN, 'socket still open')
})

t.test('a binary frame is ignored with a WARN; the connection survives', async (t) => {
  const { server, client } = await setup(t)
  const mark = server.logs.lines.length
  client.sendRaw(Buffer.from(JSON.stringify({ id: 1, method: 'initialize', params: { clientInfo: CLIENT_INFO } })), true)
  client.sendRaw(Buffer.from([0, 1, 2, 255]), true)
  const after = await ping(client)
  t.ok('result' in after, 'initialize afterwards works (the binary initialize was not handled)')
  t.equal(client.frames.length, 1, 'binary frames got no reply')
  const warns = warnsSince(server, mark)
  t.equal(warns.length, 2, 'one WARN per binary frame')
  t.ok(warns.every((w) => w.msg === 'ignored binary WebSocket frame'))
})

t.test('"jsonrpc":"2.0" is accepted and never sent; string ids are echoed as strings', async (t) => {
  const { client } = await setup(t)
  client.sendRaw(JSON.stringify({ jsonrpc: '2.0', id: 'init-a', method: 'initialize', params: { clientInfo: CLIENT_INFO } }))
  const reply = await client.waitForFrame((m) => m.id === 'init-a')
  t.ok('result' in reply, 'request with jsonrpc member accepted')
  t.notOk('jsonrpc' in reply, 'reply has no jsonrpc member')

  const numericString = await client.request('initialize', { clientInfo: CLIENT_INFO }, '7')
  t.equal(numericString.id, '7', 'string id "7" echoed as a string')
  t.equal(typeof numericString.id, 'string')
  const numeric = await client.request('initialize', { clientInfo: CLIENT_INFO }, 8)
  t.equal(numeric.id, 8, 'integer id echoed as an integer')
  const zero = await client.request('initialize', { clientInfo: CLIENT_INFO }, 0)
  t.equal(zero.id, 0, 'id 0 is a valid id')
  const empty = await client.request('initialize', { clientInfo: CLIENT_INFO }, '')
  t.equal(empty.id, '', 'empty string id echoed')
  t.notOk(client.frames.some((f) => f.includes('"jsonrpc"')), 'no frame carries jsonrpc')
})

t.test('requests before initialize, and initialize errors', async (t) => {
  const { client } = await setup(t)

  const unknown = await client.request('x', {})
  t.equal(errorOf(unknown).code, -32600, 'unknown method: -32600')
  t.match(errorOf(unknown).message, /^Invalid request: unknown variant `x`, expected one of /, 'unknown-variant wording')
  t.equal(unknown.id, 1)
  t.same(Object.keys(unknown).sort(), ['error', 'id'], 'error reply has only error and id')
  // An engine method is no unknown variant: before initialize it is refused as such.
  const engineMethod = await client.request('thread/start')
  t.same(engineMethod.error, { code: -32600, message: 'Not initialized' })

  const noParams = await client.request('initialize')
  t.same(noParams.error, { code: -32600, message: 'Invalid request: missing field `params`' })
  const nullParams = await client.request('initialize', null)
  t.equal(errorOf(nullParams).code, -32600, 'null params: -32600')

  const stringClientInfo = await client.request('initialize', { clientInfo: 'probe' })
  t.equal(errorOf(stringClientInfo).code, -32600)
  t.match(errorOf(stringClientInfo).message, /^Invalid request: /, 'clientInfo a string')
  const numberVersion = await client.request('initialize', { clientInfo: { name: 'probe', title: null, version: 1 } })
  t.equal(errorOf(numberVersion).code, -32600)
  t.match(errorOf(numberVersion).message, /^Invalid request: /, 'version a number')
  const missingName = await client.request('initialize', { clientInfo: { title: null, version: '1' } })
  t.match(errorOf(missingName).message, /^Invalid request: /, 'name missing')
  const badCaps = await client.request('initialize', { clientInfo: CLIENT_INFO, capabilities: { experimentalApi: 'yes' } })
  t.match(errorOf(badCaps).message, /^Invalid request: /, 'capabilities.experimentalApi a string')

  const newline = await client.request('initialize', { clientInfo: { name: 'a\nb', title: null, version: '1' } })
  t.same(newline.error, { code: -32600, message: "Invalid clientInfo.name: 'a\nb'. Must be a valid HTTP header value." }, 'newline in name: exact message')
  const del = await client.request('initialize', { clientInfo: { name: 'a\u007fb', title: null, version: '1' } })
  t.equal(errorOf(del).code, -32600, 'DEL in name refused')

  // None of the failures initialized the connection.
  const firstOk = await client.request('initialize', { clientInfo: { name: 'klient-ünïcødé-名前', title: 'Tïtle', version: '1.0.0' } })
  t.ok('result' in firstOk, 'non-ASCII name accepted')
  const result = firstOk.result as Json
  t.type(result.userAgent, 'string')
  t.type(result.codexHome, 'string')
  t.type(result.platformFamily, 'string')
  t.type(result.platformOs, 'string')

  const second = await client.request('initialize', { clientInfo: CLIENT_INFO })
  t.same(second.error, { code: -32600, message: 'Already initialized' })

  const afterInitUnknown = await client.request('x', {})
  t.match(errorOf(afterInitUnknown).message, /^Invalid request: unknown variant `x`/, 'unknown method after initialize too')

  // The `initialized` notification gets no reply.
  const before = client.frames.length
  client.notify('initialized')
  client.notify('initialized', {})
  const marker = await client.request('x', {}, 'marker')
  t.equal(marker.id, 'marker')
  t.equal(client.frames.length, before + 1, 'only the marker was answered: notifications get no reply')

  const errors = client.frames.map((f) => JSON.parse(f) as Json).filter((m) => 'error' in m)
  t.ok(errors.length >= 10, `${errors.length} error replies seen`)
  t.same(
    errors.filter((m) => 'data' in (m.error as Json) || 'jsonrpc' in m).map((m) => JSON.stringify(m)),
    [],
    'no error object has a data member (and no reply a jsonrpc member)',
  )
})

t.test('client responses to no pending request are dropped, connection survives', async (t) => {
  const { client } = await setup(t)
  client.sendRaw(JSON.stringify({ id: 99, result: {} }))
  client.sendRaw(JSON.stringify({ id: 98, error: { code: 1, message: 'no' } }))
  const after = await ping(client)
  t.ok('result' in after)
  t.equal(client.frames.length, 1)
})

t.test('--max-payload 1024: a 2000-byte frame closes the socket with 1009', async (t) => {
  const { server, client } = await setup(t, ['--max-payload', '1024'])
  t.equal(server.config.maxPayloadBytes, 1024)
  const ok = await ping(client)
  t.ok('result' in ok, 'small frames work')
  client.sendRaw(JSON.stringify({ id: 2, method: 'x', params: { pad: 'p'.repeat(2000) } }))
  const closed = await client.closed
  t.equal(closed.code, 1009, 'closed with 1009')
  const other = await open(t, server)
  t.ok('result' in (await ping(other)), 'the server still accepts and serves new clients')
})

t.test('many concurrent requests are all answered', async (t) => {
  const { client } = await setup(t)
  await ping(client)
  const n = 300
  const replies = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      i % 2 === 0 ? client.request('initialize', { clientInfo: CLIENT_INFO }, `c-${i}`) : client.request('nope', {}, 10_000 + i),
    ),
  )
  t.equal(replies.length, n)
  let wrong = 0
  replies.forEach((r, i) => {
    const id = i % 2 === 0 ? `c-${i}` : 10_000 + i
    if (r.id !== id || !('error' in r)) wrong++
    const e = errorOf(r)
    const expected = i % 2 === 0 ? e.message === 'Already initialized' : e.message.startsWith('Invalid request: unknown variant `nope`')
    if (!expected && !(e.code === -32001 && e.message === 'Server overloaded; retry later.')) wrong++
  })
  t.equal(wrong, 0, 'every request got its own, correct reply')
})

t.test('hostile frames do not crash the server', async (t) => {
  const { server, client } = await setup(t, ['--max-payload', String(8 * 1024 * 1024)])
  await ping(client)
  const mark = server.logs.lines.length

  // 1 MB of nested arrays.
  const depth = 512 * 1024
  client.sendRaw('['.repeat(depth) + ']'.repeat(depth))
  // The same depth of nested objects, unbalanced (not JSON).
  client.sendRaw('{"a":'.repeat(200_000))
  // Nesting inside a request for an unknown method, and inside an initialize param.
  client.sendRaw(`{"id":"deep","method":"nope","params":${'['.repeat(100_000)}${']'.repeat(100_000)}}`)
  client.sendRaw(`{"id":"deep-init","method":"initialize","params":{"clientInfo":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`)
  // A 5 MB JSON string, and 5 MB that is not JSON.
  const five = 5 * 1024 * 1024
  client.sendRaw(JSON.stringify('s'.repeat(five)))
  client.sendRaw('x'.repeat(five))

  const deep = await client.waitForFrame((m) => m.id === 'deep')
  t.equal(errorOf(deep).code, -32600, 'deeply nested params to an unknown method: -32600')
  const deepInit = await client.waitForFrame((m) => m.id === 'deep-init')
  t.equal(errorOf(deepInit).code, -32600, 'deeply nested clientInfo: -32600')
  const after = await ping(client)
  t.ok('error' in after && errorOf(after).message === 'Already initialized', 'the same connection still answers')
  t.equal(warnsSince(server, mark).filter((l) => l.msg === 'dropped malformed JSON-RPC frame').length, 4, 'four frames dropped with a WARN')

  const second = await open(t, server)
  const init = await ping(second)
  t.ok('result' in init, 'a second client can still connect and initialize')
  t.ok(server.logs.text().length < 1024 * 1024, 'no hostile frame was copied into the log')
})
