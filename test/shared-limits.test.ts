/**
 * Replicas sharing their limits through a real redis-server: two separate gateway apps, one
 * Redis, one budget. Time is fixed (no refill) so the counts are exact.
 */
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, httpGet, refuse } from './helpers/client.js'
import { redisOrSkip } from './helpers/redis.js'
import { startServer, type TestServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

const password = canary('redis-password')
const redis = await redisOrSkip(t, { password })

if (redis !== null) {
  const now = () => 1_700_000_000_000
  const replica = (limits: string[]) => startServer({ argv: ['--redis-url', redis.url, ...limits], now })
  const admin = new Redis(redis.url, { lazyConnect: true })
  admin.on('error', () => {})
  await admin.connect()
  t.teardown(async () => {
    admin.disconnect()
    await redis.stop()
  })
  const flush = () => admin.flushall()
  /** Two separate gateway apps on the one Redis, with the same limits, closed when the test ends. */
  const replicas = async (t: Test, limits: string[]): Promise<[TestServer, TestServer]> => {
    const pair = await Promise.all([replica(limits), replica(limits)])
    t.teardown(async () => {
      for (const server of pair) await server.close()
    })
    return pair
  }
  const badGuess = (server: TestServer) => refuse(`${server.wsBase}?token=wrong-guess`)

  t.test('30 failed upgrades spread over two replicas exhaust the one budget', async (t) => {
    await flush()
    const [a, b] = await replicas(t, ['--failed-upgrade-limit', '30', '--http-rate-limit', '1000'])
    for (let i = 0; i < 30; i++) {
      const refusal = await badGuess(i % 2 === 0 ? a : b)
      t.equal(refusal.status, 401, `guess ${i + 1} is evaluated`)
    }
    t.equal((await badGuess(a)).status, 429, 'the next guess on one replica is throttled')
    t.equal((await badGuess(b)).status, 429, 'and on the other')
    const refused = await refuse(a.wsUrl)
    t.equal(refused.status, 429, 'even the right token waits: the budget is spent before the token is looked at')
  })

  t.test('an admitted upgrade gives its token back to the shared budget', async (t) => {
    await flush()
    const [a, b] = await replicas(t, ['--failed-upgrade-limit', '2', '--http-rate-limit', '1000'])
    for (let i = 0; i < 5; i++) {
      const client = await connect((i % 2 === 0 ? a : b).wsUrl)
      await client.close()
    }
    t.equal((await badGuess(a)).status, 401)
    t.equal((await badGuess(b)).status, 401)
    t.equal((await badGuess(b)).status, 429, 'two failures spend a budget of two, whichever replica saw them')
  })

  t.test('the HTTP rate limit is shared too', async (t) => {
    await flush()
    const [a, b] = await replicas(t, ['--http-rate-limit', '5'])
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push((await httpGet(`${(i % 2 === 0 ? a : b).httpBase}/healthz`)).status)
    t.same(statuses, [200, 200, 200, 200, 200])
    t.equal((await httpGet(`${b.httpBase}/healthz`)).status, 429, 'the sixth request in the window, on either replica, is refused')
  })

  t.test('Redis gone: the HTTP limit fails open with a WARN, the upgrade budget falls back to the local one', async (t) => {
    await flush()
    const a = await replica(['--failed-upgrade-limit', '3', '--http-rate-limit', '2'])
    t.teardown(() => a.close())
    await redis.stop()
    await until(() => a.logs.lines.some((l) => l.event === 'redis' && l.level === 40), 'the WARN that Redis is gone')
    for (let i = 0; i < 4; i++) t.equal((await httpGet(`${a.httpBase}/healthz`)).status, 200, 'probes pass while the shared limit is unreachable')
    for (let i = 0; i < 3; i++) t.equal((await badGuess(a)).status, 401, `local guess ${i + 1}`)
    t.equal((await badGuess(a)).status, 429, 'the local budget still holds: never unlimited')
    t.same(leakedCanaries(a.logs.text()), [], 'the Redis password never reaches the log')
  })
}
