/**
 * A deferred server-token refresh writes one warning: the real enrollment client refreshing
 * against a backend on 127.0.0.1 that answers 503 (echoing the token fields), the real cache,
 * and a pino logger whose lines are kept. No secret may appear in the line.
 */
import t from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createLogger } from '../src/log/logger.js'
import { EnrollmentClient } from '../src/remote-control/enrollment-client.js'
import { logRefreshDeferrals } from '../src/remote-control/refresh-deferral-log.js'
import { ServerTokenCache } from '../src/remote-control/token-cache.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture } from './helpers/server.js'

type Test = import('tap').Test

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0)

async function backend(t: Test, status: number, body: string): Promise<string> {
  const server: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': 'req-deferred' }).end(body))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/backend-api`
}

t.test('a required refresh deferred by a 503 writes one warning with when and why, and no secret', async (t) => {
  const echoed = canary('rct-echoed')
  const accessToken = canary('chatgpt-access')
  const baseUrl = await backend(t, 503, JSON.stringify({ detail: 'busy', remote_control_token: echoed }))
  const client = new EnrollmentClient({ baseUrl })
  const logs = new LogCapture()
  const log = createLogger('debug', logs)
  const cache = new ServerTokenCache({
    clock: new ManualClock({ wallMs: T0 }),
    refresh: () => client.refresh({ accessToken, accountId: 'acct-1' }, { serverId: 'srv-1', environmentId: 'env-1', installationId: '4f8e0d1c-2b3a-4c5d-8e9f-0a1b2c3d4e5f' }),
    random: () => 0,
    onDeferred: logRefreshDeferrals(log),
  })

  await t.rejects(cache.get(), { name: 'RemoteControlHttpError' }, 'the required refresh fails')
  const written = logs.lines
  t.equal(written.length, 1, 'one line')
  const line = written[0]!
  t.equal(line.level, 40, 'a warning')
  t.equal(line.event, 'remote_control.refresh_deferred')
  t.equal(line.required, true)
  t.equal(line.retryAt, new Date(cache.nextRefreshAt!).toISOString(), 'when the refresh is tried again')
  t.ok(cache.nextRefreshAt! > T0, 'which is later than now')
  t.match(line.reason, /server refresh failed at .*HTTP 503 Service Unavailable, request-id: req-deferred/, 'why, with the request id')
  t.match(line.msg, /refresh deferred/)
  t.same(leakedCanaries(JSON.stringify(written)), [], 'neither the echoed token nor the access token')

  // While deferred, a required refresh sends nothing and logs nothing more.
  await t.rejects(cache.get(), { name: 'RemoteControlRefreshDeferredError' })
  t.equal(logs.lines.length, 1, 'still one line')
})
