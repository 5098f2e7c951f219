/**
 * Remote control that cannot be set up leaves the server running: `remoteControl/enable` says
 * why, `disable` and `status/read` answer `disabled`, and the failure is logged at WARN.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ENROLLMENT_DB_FILE } from '../src/remote-control/enrollment-store.js'
import { INTERNAL_ERROR } from '../src/rpc/errors.js'
import { connect } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

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

t.test('an unusable enrollment store: enable says why without a path; the log keeps the path', async (t) => {
  const home = tempDir('rc-home')
  // A directory where the SQLite file belongs: opening it fails (EISDIR) however the process runs.
  mkdirSync(join(home, ENROLLMENT_DB_FILE), { recursive: true })
  const server = await startServer({ argv: ['--home', home] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('rc-unavailable', '1')

  const enable = await client.request('remoteControl/enable', undefined, 'enable')
  const message = (enable.error as { message: string }).message
  t.equal((enable.error as { code: number }).code, INTERNAL_ERROR)
  t.equal(message, 'remote control unavailable: its enrollment store cannot be used: a directory is in the way')
  t.notOk(message.includes(home), 'no path reaches the client')
  const warn = server.logs.lines.find((l) => l.msg === 'remote control unavailable')
  t.ok(warn && typeof warn.detail === 'string' && warn.detail.includes(home), 'the log names the file')
})
