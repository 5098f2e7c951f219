/**
 * `--metrics`: Prometheus text at /metrics behind the WebSocket's own credential, scraped over
 * HTTP after real traffic. One server per credential mode.
 */
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, httpGet, refuse } from './helpers/client.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

/** The value of one series (`name{labels}`) in the exposition text, or null when absent. */
function series(text: string, nameAndLabels: string): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith(nameAndLabels + ' ')) return Number(line.slice(nameAndLabels.length + 1))
  }
  return null
}

const scrape = (server: TestServer, headers: Record<string, string> = {}) => httpGet(`${server.httpBase}/metrics?token=${server.token ?? ''}`, headers)

t.test('off by default: /metrics is not served', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const res = await httpGet(`${server.httpBase}/metrics?token=${server.token}`)
  t.not(res.status, 200)
  t.notMatch(res.body, /app_server_/)
})

t.test('query-token mode: the token is asked for, and the counts follow real traffic', async (t) => {
  const server = await startServer({ argv: ['--metrics', '--failed-upgrade-limit', '100', '--trust-proxy', '127.0.0.1', '--http-rate-limit', '50'] })
  t.teardown(() => server.close())

  t.equal((await httpGet(`${server.httpBase}/metrics`)).status, 401, 'no token')
  t.equal((await httpGet(`${server.httpBase}/metrics?token=wrong`)).status, 401, 'a wrong token')
  t.equal((await refuse(`${server.wsBase}metrics?token=${server.token}`)).status, 400, 'no WebSocket on the metrics path')

  // Traffic: a refused upgrade, a connection that initializes and asks for a method nobody defines.
  await refuse(`${server.wsBase}?token=wrong`)
  // Echoed back in the error (as codex does), so not a canary: it must only stay out of the labels.
  const clientChosen = 'made-up/method-7f3a'
  const client = await connect(server.wsUrl)
  await client.initialize()
  const unknown = await client.request(clientChosen, {})
  t.ok('error' in unknown, 'the unknown method is answered with an error')
  // One forwarded client's HTTP budget spent, to see the refusal counted.
  for (let i = 0; i < 51; i++) await httpGet(`${server.httpBase}/healthz`, { 'x-forwarded-for': '203.0.113.5' })

  const open = await scrape(server)
  t.equal(open.status, 200)
  t.match(open.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = open.body
  const expected: Record<string, number> = {
    app_server_websocket_connections_open: 1,
    app_server_sessions_open: 1,
    'app_server_upgrades_total{outcome="accepted",reason="ok"}': 1,
    'app_server_upgrades_total{outcome="rejected",reason="invalid generated websocket query token"}': 1,
    'app_server_upgrades_total{outcome="rejected",reason="not a websocket path"}': 1,
    'app_server_rpc_requests_total{method="initialize",outcome="result"}': 1,
    // A method outside the table counts as `other`.
    'app_server_rpc_requests_total{method="other",outcome="-32600"}': 1,
    'app_server_rpc_request_duration_seconds_count{method="initialize"}': 1,
    'app_server_rate_limited_total{limit="http"}': 1,
    'app_server_engine_state{state="off"}': 1,
    'app_server_engine_state{state="running"}': 0,
    app_server_engine_restarts_total: 0,
    'app_server_remote_control_status{status="disabled"}': 1,
    app_server_slow_consumer_closes_total: 0,
  }
  for (const [name, value] of Object.entries(expected)) t.equal(series(text, name), value, name)
  t.ok((series(text, 'app_server_http_request_duration_seconds_count{route="/healthz",status="200"}') ?? 0) >= 50, 'HTTP latency by route pattern')
  t.ok(series(text, 'process_cpu_user_seconds_total') !== null, 'process metrics')
  t.notOk(text.includes(server.token!), 'no token in any label')
  t.notOk(text.includes(clientChosen), 'no client-chosen method name in any label')
  t.same(leakedCanaries(text), [], 'no secret in the metrics')

  await client.close()
  await until(() => server.app.sessions.size === 0, 'the session to end')
  const after = (await scrape(server)).body
  t.equal(series(after, 'app_server_websocket_connections_open'), 0)
})

t.test('signed bearer tokens: scope metrics:read is required', async (t) => {
  const secret = canary('jwt-secret').padEnd(40, 'x')
  const secretFile = join(tempDir('metrics-jwt'), 'secret')
  await writeFile(secretFile, secret, { mode: 0o600 })
  const server = await startServer({ argv: ['--metrics', '--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile, '--failed-upgrade-limit', '3'] })
  t.teardown(() => server.close())
  const bearer = async (scope?: string) => ({ authorization: `Bearer ${await signJwt(secret, { exp: nowSeconds() + 60, ...(scope ? { scope } : {}) })}` })

  t.equal((await httpGet(`${server.httpBase}/metrics`, await bearer('metrics:read'))).status, 200, 'a JWT granting metrics:read')
  t.equal((await httpGet(`${server.httpBase}/metrics`, await bearer())).status, 200, 'a JWT without a scope claim holds every scope')
  const narrow = await httpGet(`${server.httpBase}/metrics`, await bearer('session thread:read'))
  t.equal(narrow.status, 403, 'a JWT without metrics:read')
  t.equal((await httpGet(`${server.httpBase}/metrics`)).status, 401, 'no bearer')
  t.equal((await httpGet(`${server.httpBase}/metrics`, { authorization: 'Bearer nope' })).status, 401, 'a bad bearer')
  t.equal((await httpGet(`${server.httpBase}/metrics`, await bearer('metrics:read'))).status, 429, 'failures spend the failed-upgrade budget: no side door for guessing')
  t.same(leakedCanaries(server.logs.text()), [], 'no secret in the log')
})
