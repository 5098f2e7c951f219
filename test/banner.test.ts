import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { canary, registerCanary } from './helpers/canary.js'
import { connect, httpGet, refuse } from './helpers/client.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { startCli, type RunningServer } from './helpers/process.js'

const tmp = mkdtempSync(join(tmpdir(), 'app-server-banner-test-'))
t.teardown(() => rmSync(tmp, { recursive: true, force: true }))

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

/** The query token of a `listening on:` URL, registered as a canary. */
function tokenOf(url: string): string {
  const token = new URL(url).searchParams.get('token') ?? ''
  registerCanary(token)
  return token
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

t.test('loopback banner, query token, real port', async (t) => {
  const server = await start(args('--listen', 'ws://127.0.0.1:0'))
  t.teardown(() => server.stop())
  t.ok(server.port > 0, 'a real port, not 0')

  const lines = bannerLines(t, server.banner)
  const m = /^ {2}listening on: ws:\/\/127\.0\.0\.1:(\d+)\/\?token=([^\s&]+)$/.exec(lines[1] ?? '')
  t.ok(m, `listening line: ${lines[1]}`)
  const token = registerCanary(m?.[2] ?? '')
  t.match(token, TOKEN_RE, '43 base64url characters')
  t.equal(Number(m?.[1]), server.port)
  t.same(lines, [
    'app-server (WebSockets)',
    `  listening on: ws://127.0.0.1:${server.port}/?token=${token}`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.equal(server.url, `ws://127.0.0.1:${server.port}/?token=${token}`)

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

t.test('IPv6 loopback banner', async (t) => {
  const server = await start(args('--listen', 'ws://[::1]:0'))
  t.teardown(() => server.stop())
  const token = tokenOf(server.url)
  t.match(token, TOKEN_RE)
  t.same(bannerLines(t, server.banner), [
    'app-server (WebSockets)',
    `  listening on: ws://[::1]:${server.port}/?token=${token}`,
    `  readyz: http://[::1]:${server.port}/readyz`,
    `  healthz: http://[::1]:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  const client = await connect(server.url)
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})

t.test('non-loopback banner: its own note, token still printed, new token per start', async (t) => {
  const first = await start(args('--listen', 'ws://127.0.0.1:0'))
  const firstToken = tokenOf(first.url)
  await first.stop()

  const server = await start(args('--listen', 'ws://0.0.0.0:0'))
  t.teardown(() => server.stop())
  const token = tokenOf(server.url)
  t.match(token, TOKEN_RE)
  t.not(token, firstToken, 'a new token at every start')
  const lines = bannerLines(t, server.banner)
  t.equal(lines.length, 6)
  t.same(lines.slice(0, 4), [
    'app-server (WebSockets)',
    `  listening on: ws://0.0.0.0:${server.port}/?token=${token}`,
    `  readyz: http://0.0.0.0:${server.port}/readyz`,
    `  healthz: http://0.0.0.0:${server.port}/healthz`,
  ])
  t.match(lines[4], /^ {2}note: \S/, 'a note line')
  t.not(lines[4], LOOPBACK_NOTE, 'not the loopback note')
  t.equal(lines[5], ENGINE_OFF)
  t.notOk(server.banner.includes(WARNING))

  const client = await connect(server.url)
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})

t.test('capability-token mode: URL without ?token=', async (t) => {
  const token = canary('captoken')
  const tokenFile = join(tmp, 'cap-token')
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 })
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--ws-auth', 'capability-token', '--ws-token-file', tokenFile))
  t.teardown(() => server.stop())
  t.same(bannerLines(t, server.banner), [
    'app-server (WebSockets)',
    `  listening on: ws://127.0.0.1:${server.port}/`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.notOk(server.banner.includes('token='), 'no query token in bearer mode')
  t.notOk(server.banner.includes(token), 'the capability token is not printed')

  const client = await connect(server.url, { authorization: `Bearer ${token}` })
  await client.initialize()
  await client.close()
  t.same(await refuse(server.url), { status: 401, body: 'missing websocket bearer token' })
  await stopAndCheck(t, server, [token])
  t.notOk(server.stderr().includes(token), 'nor anywhere on stderr')
})

t.test('signed-bearer-token mode: URL without ?token=', async (t) => {
  const secret = canary('hs256-secret') + canary('pad')
  t.ok(Buffer.byteLength(secret) >= 32)
  const secretFile = join(tmp, 'jwt-secret')
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 })
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile))
  t.teardown(() => server.stop())
  t.same(bannerLines(t, server.banner), [
    'app-server (WebSockets)',
    `  listening on: ws://127.0.0.1:${server.port}/`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.notOk(server.banner.includes(secret))

  const jwt = await signJwt(secret, { exp: nowSeconds() + 60 })
  const client = await connect(server.url, { authorization: `Bearer ${jwt}` })
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [secret, jwt])
  t.notOk(server.stderr().includes(secret) || server.stderr().includes(jwt), 'no secret on stderr')
})

t.test('--no-token-check adds the warning line', async (t) => {
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--no-token-check'))
  t.teardown(() => server.stop())
  const token = tokenOf(server.url)
  t.match(token, TOKEN_RE, 'the generated query token is still printed')
  t.same(bannerLines(t, server.banner), [
    'app-server (WebSockets)',
    `  listening on: ws://127.0.0.1:${server.port}/?token=${token}`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
    WARNING,
  ])
  const client = await connect(server.url)
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})

t.test('--url-file: the banner URL, mode 0600', async (t) => {
  const urlFile = join(tmp, 'new-url-file')
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--url-file', urlFile))
  t.teardown(() => server.stop())
  const token = tokenOf(server.url)
  t.match(token, TOKEN_RE)
  t.equal(readFileSync(urlFile, 'utf8'), server.url + '\n', 'same URL as the banner, newline-terminated')
  t.equal(statSync(urlFile).mode & 0o777, 0o600, 'mode 0600')
  const client = await connect(readFileSync(urlFile, 'utf8').trim())
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})

t.test('--url-file replaces a pre-existing 0644 file and tightens it to 0600', async (t) => {
  const urlFile = join(tmp, 'old-url-file')
  writeFileSync(urlFile, 'ws://127.0.0.1:1/?token=stale-and-much-longer-than-the-new-content-' + 'x'.repeat(200) + '\n')
  chmodSync(urlFile, 0o644)
  t.equal(statSync(urlFile).mode & 0o777, 0o644, 'precondition: 0644')
  const server = await start(args('--listen', 'ws://127.0.0.1:0', '--url-file', urlFile))
  t.teardown(() => server.stop())
  const token = tokenOf(server.url)
  t.equal(readFileSync(urlFile, 'utf8'), server.url + '\n', 'old content fully replaced')
  t.equal(statSync(urlFile).mode & 0o777, 0o600, 'mode 0600')
  const client = await connect(server.url)
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})

t.test('--url-file from the environment twin, in a bearer mode', async (t) => {
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
  t.equal(server.url, `ws://127.0.0.1:${server.port}/`)
  t.equal(readFileSync(urlFile, 'utf8'), `ws://127.0.0.1:${server.port}/\n`)
  t.equal(statSync(urlFile).mode & 0o777, 0o600)
  const client = await connect(server.url, { authorization: `Bearer ${token}` })
  await client.initialize()
  await client.close()
  await stopAndCheck(t, server, [token])
})
