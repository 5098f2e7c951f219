import t from 'tap'
import { connect, refuse } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

t.test('initialize handshake over a real socket', async (t) => {
  const home = tempDir('handshake-home', t)
  const server = await startServer({ argv: ['--home', home] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)

  const early = await client.request('account/read', {})
  t.equal((early.error as { code: number }).code, -32600, 'a known method before initialize is -32600 (not initialized)')

  const result = await client.initialize('probe', '1.2.3')
  t.match(result.userAgent, /^probe\/\d+\.\d+\.\d+ \(.+; .+\) .+ \(probe; 1\.2\.3\)$/)
  t.equal(result.codexHome, home)
  t.equal(result.platformFamily, 'unix')
  t.equal(result.platformOs, 'linux')

  const again = await client.request('initialize', { clientInfo: { name: 'probe', title: null, version: '1' } })
  t.same(again.error, { code: -32600, message: 'Already initialized' })
  t.notOk(client.frames.some((f) => f.includes('"jsonrpc"')), 'no jsonrpc member is ever sent')
  await client.close()
})

t.test('a wrong token never gets a socket', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const r = await refuse(`${server.wsBase}?token=nope`)
  t.same(r, { status: 401, body: 'invalid generated websocket query token' })
})
