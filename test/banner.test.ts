/**
 * The start-up banner. Its strings are checked against the formatter directly (every shape:
 * IPv4/IPv6 loopback, beyond localhost, bearer modes, enforcement off), and the facts it is
 * given against in-process servers (the bearer modes read from the environment). One real CLI
 * start, shared by the subtests at the end, checks what only the process shows: the facts come
 * from the bound listener, the URL file and the runtime file are written 0600 (stale runtime
 * files pruned, `list` finds it), the token is printed once and enforced, the JSON logs on
 * stdout hold neither the token nor any canary the traffic carried, and SIGTERM ends it with
 * exit 0 and both files removed. A server start costs a node process loading the whole app, so
 * the CLI's other files (cli-habits, canary) leave their real-process checks to this one.
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { connectionUrl, formatBanner, type BannerFacts } from '../src/banner.js'
import type { RuntimeInfo } from '../src/cli/runtime-file.js'
import { loadConfig } from '../src/config/load.js'
import { VERSION } from '../src/version.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { connect, httpGet, refuse, tryUpgrade } from './helpers/client.js'
import { runProcess, startCli } from './helpers/process.js'
import { rawExchange } from './helpers/raw-http.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'
import { withTimeout } from './helpers/wait.js'

const tmp = tempDir('banner', t)

/** A subtest's `t`. */
type Subtest = Parameters<Parameters<typeof t.test>[0]>[0]

const LOOPBACK_NOTE = '  note: binds localhost only (use SSH port-forwarding for remote access)'
const WARNING = 'warning: token enforcement is disabled'
/** The CLI helper turns the engine off (APP_SERVER_ENGINE=off): the banner says so. */
const ENGINE_OFF = '  engine: off'
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/

/** Splits the banner into lines; the banner ends with a newline. */
function bannerLines(t: Subtest, banner: string): string[] {
  t.ok(banner.endsWith('\n'), 'banner ends with a newline')
  return banner.replace(/\n$/, '').split('\n')
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


t.test('capability-token mode from the environment, --url-file from its twin: the banner and URL carry no token', async (t) => {
  const urlFile = join(tmp, 'env-url-file')
  const token = canary('captoken')
  const tokenFile = join(tmp, 'cap-token-2')
  writeFileSync(tokenFile, token, { mode: 0o600 })
  const env = { APP_SERVER_URL_FILE: urlFile, APP_SERVER_WS_AUTH: 'capability-token', APP_SERVER_WS_TOKEN_FILE: tokenFile }
  t.equal(loadConfig([], { env, dotenvPath: null }).urlFile, urlFile, 'APP_SERVER_URL_FILE sets the url file')
  const server = await startServer({ env })
  t.teardown(() => server.close())
  // The facts the CLI hands the banner and writes to the url file (see the real start below).
  const served: BannerFacts = { host: '127.0.0.1', port: server.port, loopback: server.config.listen.loopback, queryToken: server.app.wsAuth.queryToken, enforced: server.app.wsAuth.enforced, engineLine: server.app.engine.bannerLine() }
  const banner = formatBanner(served)
  t.same(bannerLines(t, banner), [
    `app-server ${VERSION} (WebSockets)`,
    `  listening on: ws://127.0.0.1:${server.port}/`,
    `  readyz: http://127.0.0.1:${server.port}/readyz`,
    `  healthz: http://127.0.0.1:${server.port}/healthz`,
    LOOPBACK_NOTE,
    ENGINE_OFF,
  ])
  t.notOk(banner.includes(token), 'the capability token is not printed')
  t.equal(connectionUrl(served), `ws://127.0.0.1:${server.port}/`, 'the url file gets the URL without a token')
  const client = await connect(connectionUrl(served), { authorization: `Bearer ${token}` })
  await client.initialize()
  await client.close()
  t.same(await refuse(connectionUrl(served)), { status: 401, body: 'missing websocket bearer token' })
  t.notOk(server.logs.text().includes(token), 'the logs never hold the token')
  t.notOk(server.logs.text().includes(encodeURIComponent(token)), 'nor URL-encoded')
})

// ---------------------------------------------------------------------------------------------
// One real CLI start: debug logs on stdout, a URL file that existed 0644, a home whose run
// directory holds a stale runtime file. Its subtests run in order on the one process.

t.test('the real CLI', async (t) => {
  const home = join(tmp, 'home')
  mkdirSync(join(home, 'run'), { recursive: true })
  // A pid that ran and has ended: its leftover runtime file is stale.
  const ended = await runProcess('/bin/sh', ['-c', 'printf %s $$'])
  writeFileSync(join(home, 'run', `server-${ended.stdout}.json`), '{}')
  const urlFile = join(tmp, 'old-url-file')
  writeFileSync(urlFile, 'ws://127.0.0.1:1/?token=stale-and-much-longer-than-the-new-content-' + 'x'.repeat(200) + '\n')
  chmodSync(urlFile, 0o644)
  t.equal(statSync(urlFile).mode & 0o777, 0o644, 'precondition: 0644')

  // In an empty working directory (no stray `.env`).
  const server = await startCli(['--log-level', 'debug', '--home', home, '--listen', 'ws://127.0.0.1:0', '--url-file', urlFile], { cwd: tmp })
  t.teardown(() => server.stop('SIGKILL').then(() => undefined))
  const pid = server.child.pid!
  let token = ''

  await t.test('loopback banner, query token, real port; --url-file replaces a 0644 file with 0600', async (t) => {
    t.ok(server.port > 0, 'a real port, not 0')
    const lines = bannerLines(t, server.banner)
    const m = /^ {2}listening on: ws:\/\/127\.0\.0\.1:(\d+)\/\?token=([^\s&]+)$/.exec(lines[1] ?? '')
    t.ok(m, `listening line: ${lines[1]}`)
    token = registerCanary(m?.[2] ?? '')
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
  })

  await t.test('runtime file: written 0600 in a 0700 HOME/run while serving, listed, the stale one pruned', async (t) => {
    const path = join(home, 'run', `server-${pid}.json`)
    t.same(readdirSync(join(home, 'run')), [`server-${pid}.json`], 'the stale file is gone; this server’s is there')
    t.equal(statSync(join(home, 'run')).mode & 0o777, 0o700)
    t.equal(statSync(path).mode & 0o777, 0o600)
    const text = readFileSync(path, 'utf8')
    const info = JSON.parse(text) as RuntimeInfo
    t.same(info, {
      url: `ws://127.0.0.1:${server.port}/`,
      pid,
      version: VERSION,
      auth: 'query-token',
      credential: { how: 'the connection URL with its token is in the --url-file', path: urlFile },
    })
    t.notOk(text.includes(token), 'no token in the runtime file')
    const listed = await runCommand(['list', '--home', home])
    t.equal(listed.code, 0)
    t.same(JSON.parse(listed.stdout), [info], 'list prints JSON when piped')
  })

  await t.test('traffic carrying canaries: frames, params, a wrong token, a bad URL, a probe with the token', async (t) => {
    const client = await connect(server.url)
    await client.initialize('canary-cli', '1.0.0')
    client.sendRaw(`not json ${canary('cli-frame')}`)
    await client.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' }, token: canary('cli-param') })
    await client.close()
    const wrong = await tryUpgrade(`ws://127.0.0.1:${server.port}/?token=${canary('cli-wrong')}`)
    t.ok('refused' in wrong && wrong.refused.status === 401, 'wrong canary token refused with 401')
    if ('refused' in wrong) t.same(leakedCanaries(wrong.refused.body), [])
    const badUrl = await rawExchange(server.port, [`GET /%zz?token=${token} HTTP/1.1`, `Host: 127.0.0.1:${server.port}`, 'Connection: close'])
    t.equal(badUrl.status, 400, 'bad URL answers 400')
    t.same(leakedCanaries(badUrl.body), [])
    const hz = await httpGet(`http://127.0.0.1:${server.port}/healthz?token=${token}`)
    t.same(leakedCanaries(hz.body), [])
  })

  await t.test('SIGTERM: exit 0, both files removed, stdout JSON logs at debug hold no token and no canary', async (t) => {
    const exit = await withTimeout(server.stop('SIGTERM'), 30_000, 'exit after SIGTERM')
    t.same(exit, { code: 0, signal: null }, 'exited by itself with 0, not killed by the signal')
    t.same(readdirSync(join(home, 'run')), [], 'the runtime file is removed on exit')
    t.throws(() => statSync(urlFile), { code: 'ENOENT' }, 'the url file is removed on exit')
    t.same(JSON.parse((await runCommand(['list', '--home', home])).stdout), [], 'list shows nothing once it has stopped')

    const stdout = server.stdout()
    const lines = stdout.split('\n').filter((l) => l.trim() !== '')
    t.ok(lines.length > 0, 'the server wrote logs on stdout')
    const parsed = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>
      } catch {
        return null
      }
    })
    t.ok(parsed.every((l) => l !== null), 'stdout is JSON lines')
    t.ok(parsed.some((l) => l?.level === 20), 'debug lines reached stdout')
    t.ok(parsed.some((l) => l?.event === 'ws.auth' && l.outcome === 'accepted'), 'accepted ws.auth line')
    t.ok(parsed.some((l) => l?.event === 'ws.auth' && l.outcome === 'rejected' && l.reason === 'invalid generated websocket query token'), 'rejected ws.auth line')
    t.notOk(stdout.includes(token), 'the token never appears on stdout')
    t.notOk(stdout.includes(encodeURIComponent(token)), 'nor URL-encoded')
    t.same(leakedCanaries(stdout), [], 'stdout holds no canary')

    const stderr = server.stderr()
    t.equal(stderr.split(token).length - 1, 1, 'the token appears once on stderr, in the banner')
    t.same(
      leakedCanaries(stderr).filter((c) => c !== token),
      [],
      'stderr holds no other canary',
    )
  })
})
