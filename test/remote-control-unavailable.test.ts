/**
 * Remote control that cannot be set up leaves the server running: `remoteControl/enable` says
 * why, `disable` and `status/read` answer `disabled`, and the failure is logged at WARN.
 */
import t from 'tap'
import { INTERNAL_ERROR } from '../src/rpc/errors.js'
import { connect } from './helpers/client.js'
import { startServer } from './helpers/server.js'

const DISABLED = { status: 'disabled', serverName: '', installationId: '', environmentId: null }

t.test('a base URL off the allow-list: the server starts with the stand-in', async (t) => {
  const server = await startServer({ env: { CHATGPT_BASE_URL: 'https://example.com/backend-api' } })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('rc-unavailable', '1')

  const enable = await client.request('remoteControl/enable', undefined, 'enable')
  t.equal((enable.error as { code: number }).code, INTERNAL_ERROR)
  t.match((enable.error as { message: string }).message, /^invalid remote control URL `https:\/\/example\.com\/backend-api`/, 'says why')
  t.same(await client.request('remoteControl/status/read', undefined, 'status'), { id: 'status', result: DISABLED })
  t.same(await client.request('remoteControl/disable', undefined, 'disable'), { id: 'disable', result: DISABLED })
  t.ok(server.logs.lines.some((l) => l.msg === 'remote control unavailable' && l.level === 40), 'logged at WARN')
})
