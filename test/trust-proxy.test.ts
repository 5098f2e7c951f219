/**
 * `--trust-proxy`: the client address that limits, throttle keys and logs use comes from
 * X-Forwarded-For only through the proxies named; by default the header is ignored.
 */
import t from 'tap'
import { loadConfig } from '../src/config/load.js'
import { httpGet, refuse } from './helpers/client.js'
import { startServer } from './helpers/server.js'

const load = (...argv: string[]) => loadConfig(argv, { env: {}, dotenvPath: null })
const from = (address: string) => ({ 'x-forwarded-for': address })

t.test('values: off by default, true, a hop count, or addresses and CIDRs', async (t) => {
  t.equal(load().trustProxy, false)
  t.equal(load('--trust-proxy', 'true').trustProxy, true)
  t.equal(load('--trust-proxy', 'false').trustProxy, false)
  t.equal(load('--trust-proxy', '2').trustProxy, 2)
  t.same(load('--trust-proxy', '127.0.0.1, 10.0.0.0/8,::1,fd00::/8').trustProxy, ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8'])
  t.equal(loadConfig([], { env: { APP_SERVER_TRUST_PROXY: '1' }, dotenvPath: null }).trustProxy, 1, 'the environment twin')
  t.throws(() => load('--trust-proxy', '10.0.0.0/33'), /invalid --trust-proxy `10\.0\.0\.0\/33`/)
  t.throws(() => load('--trust-proxy', 'proxy.example'), /invalid --trust-proxy/)
  t.throws(() => load('--trust-proxy', '0'), /expected an integer from 1 to 100/)
})

t.test('by default X-Forwarded-For is ignored: one client, one HTTP budget', async (t) => {
  const server = await startServer({ argv: ['--http-rate-limit', '2'] })
  t.teardown(() => server.close())
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.1'))).status, 200)
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.2'))).status, 200)
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.3'))).status, 429, 'a forged header buys no new budget')
  await refuse(`${server.wsBase}?token=wrong`, from('203.0.113.4'))
  const line = server.logs.authEvents().at(-1)
  t.equal(line?.remote, '127.0.0.1', 'the log names the peer, not the header')
})

t.test('trusting the loopback proxy: limits and logs key on the forwarded client', async (t) => {
  const server = await startServer({ argv: ['--http-rate-limit', '2', '--trust-proxy', '127.0.0.1'] })
  t.teardown(() => server.close())
  for (let i = 0; i < 2; i++) t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.1'))).status, 200)
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.1'))).status, 429, 'the forwarded client spent its budget')
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.2'))).status, 200, 'another client behind the same proxy has its own')
  await refuse(`${server.wsBase}?token=wrong`, from('198.51.100.9'))
  t.equal(server.logs.authEvents().at(-1)?.remote, '198.51.100.9', 'the ws.auth line names the real client')
})

t.test('trusted by hop count, the failed-upgrade budget is per forwarded client', async (t) => {
  const server = await startServer({ argv: ['--failed-upgrade-limit', '2', '--trust-proxy', '1'] })
  t.teardown(() => server.close())
  t.equal((await refuse(`${server.wsBase}?token=wrong`, from('203.0.113.7'))).status, 401)
  t.equal((await refuse(`${server.wsBase}?token=wrong`, from('203.0.113.7'))).status, 401)
  t.equal((await refuse(`${server.wsBase}?token=wrong`, from('203.0.113.7'))).status, 429, 'that client is throttled')
  t.equal((await refuse(`${server.wsBase}?token=wrong`, from('203.0.113.8'))).status, 401, 'another one is not')
})

t.test('a proxy not in the list is not believed', async (t) => {
  const server = await startServer({ argv: ['--http-rate-limit', '1', '--trust-proxy', '10.0.0.0/8'] })
  t.teardown(() => server.close())
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.1'))).status, 200)
  t.equal((await httpGet(`${server.httpBase}/healthz`, from('203.0.113.2'))).status, 429, 'the loopback peer is not a trusted proxy')
})
