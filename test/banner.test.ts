/**
 * The start-up banner. Its strings are checked against the formatter directly (every shape:
 * IPv4/IPv6 loopback, beyond localhost, bearer modes, enforcement off); two real CLI starts
 * check the wiring around it: the facts come from the bound listener, the URL file, the token
 * printed once and enforced, JSON logs without secrets, a clean exit on SIGTERM.
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { connectionUrl, formatBanner, type BannerFacts } from '../src/banner.js'
import { VERSION } from '../src/version.js'
import { canary, registerCanary } from './helpers/canary.js'
import { connect, httpGet, refuse } from './helpers/client.js'
import { startCli, type RunningServer } from './helpers/process.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

const tmp = tempDir('banner', t)

/** A subtest's `t`. */
type Subtest = Parameters<Parameters<typeof t.test>[0]>[0]

const LOOPBACK_NOTE = '  note: binds localhost only (use SSH port-forwarding for remote access)'
const WARNING = 'warning: token enforcement is disabled'
/** The CLI helper turns the engine off (APP_SERVER_ENGINE=off): the banner says so. */
const ENGINE_OFF = '  engine: off'
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/

/** Common flags: debug logs (the most talkative level) and a throw-away home. */
function args(...extra: string[]): string[] {
  return ['--log-level', 'debug', '--home', join(tmp, 'home'), ...extra]
}

/** Starts the CLI in an empty working directory (no stray `.env`). */
function start(argv: string[], env: Record<string, string> = {}): Promise<RunningServer> {
  return startCli(argv, { cwd: tmp, env })
}

/** Splits the banner into lines; the banner ends with a newline. */
function bannerLines(t: Subtest, banner: string): string[] {
  t.ok(banner.endsWith('\n'), 'banner ends with a newline')
  return banner.replace(/\n$/, '').split('\n')
}

/** Stops the server, asserts a clean exit, and checks stdout (JSON logs) for the secrets. */
async function stopAndCheck(t: Subtest, server: RunningServer, secrets: string[]): Promise<void> {
  const exit = await server.stop()
  t.equal(exit.code, 0, 'exit code 0 after SIGTERM')
  t.equal(exit.signal, null, 'exited by itself, not killed by the signal')
  const stdout = server.stdout()
  t.ok(stdout.length > 0, 'the server wrote logs on stdout')
  t.ok(stdout.includes('"event":"ws.auth"'), 'the upgrade decision was logged')
  const lines = stdout.split('\n').filter((l) => l.trim() !== '')
  t.ok(
    lines.every((l) => {
      try {
        JSON.parse(l)
        return true
      } catch {
        return false
      }
    }),
    'stdout is JSON lines',
  )
  for (const s of secrets) {
    t.notOk(stdout.includes(s), 'the secret never appears on stdout')
    t.notOk(stdout.includes(encodeURIComponent(s)), 'nor URL-encoded')
  }
}

// ---------------------------------------------------------------------------------------------
// The formatter: every banner shape, without a process.

const TOKEN = 'A'.repeat(43)
const facts = (over: Partial<BannerFacts> = {}): BannerFacts => ({ host: '127.0.0.1', port: 4500, loopback: true, queryToken: TOKEN, enforced: true, ...over })

t.test('formatter: loopback, query token', async (t) => {
  const banner = formatBanner(facts())
  t.same(bannerLines(t, banner), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://127.0.0.1:4500/?token=${TOKEN}`,
    '  readyz: http://127.0.0.1:4500/readyz',
    '  healthz: http://127.0.0.1:4500/healthz',
    LOOPBACK_NOTE,
  ])
  t.equal(connectionUrl(facts()), `ws://127.0.0.1:4500/?token=${TOKEN}`)
  t.equal(banner.split(TOKEN).length - 1, 1, 'the token appears once, in the listening line')
})

t.test('formatter: IPv6 loopback is bracketed', async (t) => {
  t.same(bannerLines(t, formatBanner(facts({ host: '::1' }))), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://[::1]:4500/?token=${TOKEN}`,
    '  readyz: http://[::1]:4500/readyz',
    '  healthz: http://[::1]:4500/healthz',
    LOOPBACK_NOTE,
  ])
  t.equal(connectionUrl(facts({ host: '::1' })), `ws://[::1]:4500/?token=${TOKEN}`)
})

t.test('formatter: beyond localhost, its own note, token still printed', async (t) => {
  const banner = formatBanner(facts({ host: '0.0.0.0', loopback: false }))
  const lines = bannerLines(t, banner)
  t.equal(lines.length, 5)
  t.same(lines.slice(0, 4), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://0.0.0.0:4500/?token=${TOKEN}`,
    '  readyz: http://0.0.0.0:4500/readyz',
    '  healthz: http://0.0.0.0:4500/healthz',
  ])
  t.match(lines[4], /^ {2}note: \S/, 'a note line')
  t.not(lines[4], LOOPBACK_NOTE, 'not the loopback note')
  t.notOk(banner.includes(WARNING))
})

t.test('formatter: bearer modes print a URL without ?token=', async (t) => {
  const banner = formatBanner(facts({ queryToken: null }))
  t.same(bannerLines(t, banner), [
    `app-server ${VERSION} (WebSockets)`,
    '  listening on: ws://127.0.0.1:4500/',
    '  readyz: http://127.0.0.1:4500/readyz',
    '  healthz: http://127.0.0.1:4500/healthz',
    LOOPBACK_NOTE,
  ])
  t.notOk(banner.includes('token='), 'no query token in bearer mode')
  t.equal(connectionUrl(facts({ queryToken: null })), 'ws://127.0.0.1:4500/')
})

t.test('formatter: enforcement off adds the warning line', async (t) => {
  t.same(bannerLines(t, formatBanner(facts({ enforced: false }))), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://127.0.0.1:4500/?token=${TOKEN}`,
    '  readyz: http://127.0.0.1:4500/readyz',
    '  healthz: http://127.0.0.1:4500/healthz',
    LOOPBACK_NOTE,
    WARNING,
  ])
})

t.test('a new generated query token at every start, 43 base64url characters', async (t) => {
  const first = await startServer()
  const second = await startServer()
  t.teardown(() => Promise.all([first.close(), second.close()]))
  t.match(first.token, TOKEN_RE)
  t.match(second.token, TOKEN_RE)
  t.not(second.token, first.token, 'a new token at every start')
})

t.test('IPv6 loopback: the printed URL opens a session', async (t) => {
  const server = await startServer({ argv: ['--listen', 'ws://[::1]:0'] })
  t.teardown(() => server.close())
  t.equal(server.wsUrl, connectionUrl({ host: '::1', port: server.port, loopback: true, queryToken: server.token, enforced: true }))
  const client = await connect(server.wsUrl)
  await client.initialize()
  await client.close()
})

// ---------------------------------------------------------------------------------------------
// Two real CLI starts.

t.test('CLI: loopback banner, query token, real port; --url-file replaces a 0644 file with 0600', async (t) => {
  const urlFile = join(tmp, 'old-url-file')
  writeFileSync(urlFile, 'ws://127.0.0.1:1/?token=stale-and-much-longer-than-the-new-content-' + 'x'.repeat(200) + '\n')
  chmodSync(urlFile, 0o644)
  t.equal(statSync(urlFile).mode & 0o777, 0o644, 'precondition: 0644')
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--url-file', urlFile))
  t.teardown(() => server.stop())
  t.ok(server.port > 0, 'a real port, not 0')

  const lines = bannerLines(t, server.banner)
  const m = /^ {2}listening on: ws:\/\/127\.0\.0\.1:(\d+)\/\?token=([^\s&]+)$/.exec(lines[1] ?? '')
  t.ok(m, `listening line: ${lines[1]}`)
  const token = registerCanary(m?.[2] ?? '')
  t.match(token, TOKEN_RE, '43 base64url characters')
  t.equal(Number(m?.[1]), server.port)
  t.same(lines, [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://127.0.0.1:${server.port}/?token=${token}`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.equal(server.url, `ws://127.0.0.1:${server.port}/?token=${token}`)
  t.equal(readFileSync(urlFile, 'utf8'), server.url + '\n', 'the URL file holds the banner URL, old content fully replaced')
  t.equal(statSync(urlFile).mode & 0o777, 0o600, 'mode 0600')

  const ready = await httpGet(`http://127.0.0.1:${server.port}/readyz`)
  t.equal(ready.status, 200, 'the printed port is the bound one')
  t.same(JSON.parse(ready.body), { status: 'ready' })
  const health = await httpGet(`http://127.0.0.1:${server.port}/healthz`)
  t.same(JSON.parse(health.body), { status: 'ok', auth: { mode: 'queryToken', enforced: true }, engine: { state: 'off', version: null } })

  const client = await connect(server.url)
  const result = await client.initialize()
  t.type(result.userAgent, 'string', 'the printed token opens a session')
  await client.close()
  t.same(await refuse(`ws://127.0.0.1:${server.port}/`), { status: 401, body: 'missing generated websocket query token' }, 'the token is enforced')

  await stopAndCheck(t, server, [token])
  t.equal(server.stderr().split(token).length - 1, 1, 'the token appears once on stderr, in the banner')
})

t.test('CLI: capability-token mode from the environment, --url-file from its twin', async (t) => {
  const urlFile = join(tmp, 'env-url-file')
  const token = canary('captoken')
  const tokenFile = join(tmp, 'cap-token-2')
  writeFileSync(tokenFile, token, { mode: 0o600 })
  const server = await start(args('--listen', 'ws://127.0.0.1:0'), {
    APP_SERVER_URL_FILE: urlFile,
    APP_SERVER_WS_AUTH: 'capability-token',
    APP_SERVER_WS_TOKEN_FILE: tokenFile,
  })
  t.teardown(() => server.stop())
  t.same(bannerLines(t, server.banner), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://127.0.0.1:${server.port}/`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.notOk(server.banner.includes(token), 'the capability token is not printed')
  t.equal(server.url, `ws://127.0.0.1:${server.port}/`)
  t.equal(readFileSync(urlFile, 'utf8'), `ws://127.0.0.1:${server.port}/\n`)
  t.equal(statSync(urlFile).mode & 0o777, 0o600)
  const client = await connect(server.url, { authorization: `Bearer ${token}` })
  await client.initialize()
  await client.close()
  t.same(await refuse(server.url), { status: 401, body: 'missing websocket bearer token' })
  await stopAndCheck(t, server, [token])
  t.notOk(server.stderr().includes(token), 'nor anywhere on stderr')
})
