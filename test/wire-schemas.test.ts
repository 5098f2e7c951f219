import t from 'tap'
import { Compile } from '../src/util/typebox.js'
import { InitializeParams, InitializeResult } from '../src/rpc/methods/initialize.js'
import { connect } from './helpers/client.js'
import { codexErrors } from './helpers/codex-schemas.js'
import { startServer } from './helpers/server.js'

t.test('every frame the server sends is a codex JSON-RPC message', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  await client.request('nope/nope', {})
  await client.request('initialize', {})
  const init = await client.initialize('schema-check', '0.0.1')
  t.equal(codexErrors('v1/InitializeResponse', init), '', 'initialize result matches InitializeResponse')
  await client.request('initialize', { clientInfo: { name: 'x', title: 'X', version: '1' } })
  await client.request('initialize', { clientInfo: { name: 'x', version: '1' } }, 'string-id')
  t.ok(client.frames.length >= 5)
  for (const text of client.frames) {
    const frame = JSON.parse(text) as Record<string, unknown>
    const kind = 'error' in frame ? 'JSONRPCError' : 'result' in frame ? 'JSONRPCResponse' : 'JSONRPCNotification'
    t.equal(codexErrors(kind, frame), '', `${kind}: ${text.slice(0, 60)}`)
    t.notOk('jsonrpc' in frame, 'no jsonrpc member')
  }
  await client.close()
})

t.test('our TypeBox schemas agree with codex on initialize', async (t) => {
  const ours = Compile(InitializeParams)
  const samples: unknown[] = [
    { clientInfo: { name: 'a', version: '1' } },
    { clientInfo: { name: 'a', title: null, version: '1' } },
    { clientInfo: { name: 'a', title: 'A', version: '1' }, capabilities: null },
    { clientInfo: { name: 'a', version: '1' }, capabilities: { experimentalApi: true, optOutNotificationMethods: ['x'] } },
    { clientInfo: { name: 'a', version: '1' }, capabilities: { optOutNotificationMethods: null, somethingNew: 1 } },
    { clientInfo: { name: 'a', version: '1' }, extra: true },
    { clientInfo: { name: 'a' } },
    { clientInfo: { version: '1' } },
    { clientInfo: { name: 1, version: '1' } },
    { clientInfo: { name: 'a', version: '1', title: 5 } },
    { clientInfo: { name: 'a', version: '1' }, capabilities: { experimentalApi: 'yes' } },
    { clientInfo: { name: 'a', version: '1' }, capabilities: { optOutNotificationMethods: [1] } },
    {},
    { clientInfo: 'a' },
  ]
  for (const s of samples) {
    const codexOk = codexErrors('v1/InitializeParams', s) === ''
    t.equal(ours.Check(s), codexOk, `params agree on ${JSON.stringify(s)}`)
  }
  const result = Compile(InitializeResult)
  const good = { userAgent: 'u', codexHome: '/h', platformFamily: 'unix', platformOs: 'linux' }
  for (const r of [good, { ...good, userAgent: 1 }, { codexHome: '/h', platformFamily: 'unix', platformOs: 'linux' }]) {
    t.equal(result.Check(r), codexErrors('v1/InitializeResponse', r) === '', `result agrees on ${JSON.stringify(r)}`)
  }
})
