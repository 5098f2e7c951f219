/**
 * THE canary test. Every secret is a canary; the whole upgrade matrix runs in all three auth
 * modes with debug logs captured, and nothing the server writes (logs, probe bodies, refusal
 * bodies, JSON-RPC errors) may contain any of them. The same checks against a real CLI process
 * (its stdout logs at debug, its stderr banner) run in banner.test.ts, with its one server start.
 */
import t from 'tap'
import net, { type Socket } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config/load.js'
import { createLogger } from '../src/log/logger.js'
import { canary, leakedCanaries, record, registerCanary } from './helpers/canary.js'
import { connect, httpGet, tryUpgrade, type UpgradeRefusal } from './helpers/client.js'
import { nowSeconds, signJwt, unsignedJwt } from './helpers/jwt.js'
import { LogCapture, startServer, type StartOptions, type TestServer } from './helpers/server.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a socket: for requests `fetch` and `ws` will not send (bad URLs, Host
// rebinding, HEAD/POST upgrades, header overflow, malformed headers).

const UPGRADE_HEADERS = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']

interface RawOptions {
  readonly method?: string
  readonly target: string
  readonly headers?: readonly string[]
  /** Send the WebSocket upgrade headers (else `Connection: close`). */
  readonly upgrade?: boolean
  readonly body?: string
  /** Replace the `Host` header. */
  readonly host?: string
  /** After the response, wait this long for the server to end the connection. */
  readonly waitForServerCloseMs?: number
}

interface RawResponse {
  status: number
  head: string
  body: string
  /** Whether the server ended the connection (within `waitForServerCloseMs`). */
  serverClosed: boolean
}

function rawRequest(port: number, opts: RawOptions): Promise<RawResponse> {
  const method = opts.method ?? 'GET'
  const lines = [`${method} ${opts.target} HTTP/1.1`, `Host: ${opts.host ?? `127.0.0.1:${port}`}`, ...(opts.headers ?? [])]
  if (opts.upgrade) lines.push(...UPGRADE_HEADERS)
  else lines.push('Connection: close')
  if (opts.body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(opts.body)}`)
  const text = lines.join('\r\n') + '\r\n\r\n' + (opts.body ?? '')

  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text))
    let buf = Buffer.alloc(0)
    let response: Omit<RawResponse, 'serverClosed'> | null = null
    let serverClosed = false
    let settled = false
    const finish = () => {
      if (settled) return
      settled = true
      clearTimeout(overall)
      clearTimeout(closeWait)
      socket.destroy()
      if (response === null) return reject(new Error(`no complete response to ${method} ${opts.target.slice(0, 60)}`))
      resolve({ ...response, serverClosed })
    }
    const overall = setTimeout(finish, 5000)
    let closeWait: NodeJS.Timeout | undefined
    const tryParse = () => {
      if (response !== null) return
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = buf.subarray(0, end).toString('latin1')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
      const bodyLength = method === 'HEAD' || status === 101 ? 0 : length
      if (buf.length < end + 4 + bodyLength) return
      const body = buf.subarray(end + 4, end + 4 + bodyLength).toString('utf8')
      record(head)
      record(body)
      response = { status, head, body }
      if (opts.waitForServerCloseMs !== undefined && !serverClosed) closeWait = setTimeout(finish, opts.waitForServerCloseMs)
      else if (opts.waitForServerCloseMs === undefined) finish()
    }
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      tryParse()
    })
    socket.on('end', () => {
      serverClosed = true
      if (response !== null) finish()
    })
    socket.on('close', () => {
      serverClosed = true
      tryParse()
      finish()
    })
    socket.on('error', () => {
      /* the server may reset; 'close' follows */
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Servers whose teardown cannot hang the file: sockets the server failed to end are destroyed.

function trackSockets(server: import('node:http').Server): Set<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return sockets
}

async function closeOrForce(close: () => Promise<void>, sockets: Set<Socket>, graceMs = 300): Promise<boolean> {
  const closing = close()
  const closedInTime = await withTimeout(closing, graceMs, 'a graceful close').then(
    () => true,
    () => false,
  )
  if (closedInTime) return true
  for (const s of sockets) s.destroy()
  await closing
  return false
}

async function start(t: Test, options: StartOptions = {}): Promise<TestServer> {
  const server = await startServer(options)
  const sockets = trackSockets(server.app.server)
  t.teardown(() => closeOrForce(() => server.close(), sockets).then(() => undefined))
  return server
}

// ---------------------------------------------------------------------------------------------
// Upgrade helpers that keep every body.

async function expectAccepted(t: Test, url: string, headers: Record<string, string>, what: string): Promise<void> {
  const r = await tryUpgrade(url, { headers })
  if ('refused' in r) {
    t.fail(`${what}: expected 101, got ${r.refused.status} ${r.refused.body}`)
    return
  }
  t.pass(`${what}: accepted`)
  await new Promise<void>((resolve) => {
    r.ws.once('close', () => resolve())
    r.ws.close()
  })
}

async function expectRefused(
  t: Test,
  url: string,
  headers: Record<string, string>,
  expected: UpgradeRefusal,
  what: string,
  bodies: string[],
): Promise<void> {
  const r = await tryUpgrade(url, { headers })
  if ('ws' in r) {
    r.ws.close()
    t.fail(`${what}: expected ${expected.status}, got 101`)
    return
  }
  bodies.push(r.refused.body)
  t.same(r.refused, expected, `${what}: ${expected.status} ${JSON.stringify(expected.body)}`)
  t.same(leakedCanaries(r.refused.body), [], `${what}: refusal body holds no canary`)
}

async function expectRaw(t: Test, port: number, opts: RawOptions, expected: { status: number; body?: string }, what: string, bodies: string[]): Promise<RawResponse> {
  const r = await rawRequest(port, opts)
  bodies.push(r.head, r.body)
  t.equal(r.status, expected.status, `${what}: status ${expected.status}`)
  if (expected.body !== undefined) t.equal(r.body, expected.body, `${what}: body`)
  t.same(leakedCanaries(r.head + '\n' + r.body), [], `${what}: response holds no canary`)
  return r
}

async function checkProbes(t: Test, server: TestServer, mode: string, secretQuery: string, bodies: string[]): Promise<void> {
  for (const path of ['/healthz', `/healthz?token=${secretQuery}`]) {
    const h = await httpGet(server.httpBase + path)
    bodies.push(h.body)
    t.equal(h.status, 200, `${path.slice(0, 8)} answers 200`)
    t.same(JSON.parse(h.body), { status: 'ok', auth: { mode, enforced: true }, engine: { state: 'off', version: null } }, 'healthz names the mode (and engine state) only')
    t.same(leakedCanaries(h.body), [], 'healthz body holds no canary')
  }
  for (const path of ['/readyz', `/readyz?token=${secretQuery}`]) {
    const r = await httpGet(server.httpBase + path)
    bodies.push(r.body)
    t.equal(r.status, 200)
    t.same(JSON.parse(r.body), { status: 'ready' })
    t.same(leakedCanaries(r.body), [], 'readyz body holds no canary')
  }
}

/** The checks every mode ends with: no canary in the log, the log was at debug, and ws.auth lines explain every decision. */
async function checkLog(t: Test, server: TestServer, mode: string, expectedReasons: readonly string[], acceptedAtLeast: number): Promise<void> {
  // Every accepted socket was closed; wait for the server side's closing line (INFO).
  await until(() => server.logs.lines.some((l) => l.level === 30 && l.msg === 'websocket connection closed'), 'the server to log a closed connection')
  const text = server.logs.text()
  t.ok(text.length > 0, 'logs were captured')
  t.same(leakedCanaries(text), [], `${mode}: no canary appears anywhere in the debug log`)
  t.ok(server.logs.lines.some((l) => l.level === 20), 'at least one level-20 (debug) line was captured')

  const auth = server.logs.authEvents()
  t.ok(auth.length > 0, 'ws.auth lines were written')
  for (const l of auth) {
    if (l.mode !== mode || typeof l.remote !== 'string' || !['accepted', 'degraded', 'rejected'].includes(l.outcome as string)) {
      t.fail(`malformed ws.auth line: ${JSON.stringify(l)}`)
    }
    if (l.outcome === 'rejected' && typeof l.reason !== 'string') t.fail(`rejected ws.auth line without a reason: ${JSON.stringify(l)}`)
    if (l.outcome === 'accepted' && typeof l.connectionId !== 'string') t.fail(`accepted ws.auth line without a connectionId: ${JSON.stringify(l)}`)
  }
  const accepted = auth.filter((l) => l.outcome === 'accepted')
  t.ok(accepted.length >= acceptedAtLeast, `${accepted.length} accepted ws.auth lines (>= ${acceptedAtLeast})`)
  for (const reason of expectedReasons) {
    t.ok(
      auth.some((l) => l.outcome === 'rejected' && l.reason === reason),
      `a rejected ws.auth line with reason "${reason}"`,
    )
  }
}

const BAD_HEADER = 'Bad Header Without Colon'

// ---------------------------------------------------------------------------------------------

t.test('query-token mode: the whole upgrade matrix leaks nothing', async (t) => {
  const server = await start(t)
  const token = server.token
  if (token === null) throw new Error('query mode has a token')
  const port = server.port
  const base = server.wsBase
  const bodies: string[] = []
  const c = () => canary('qtok')

  // Accepted.
  await expectAccepted(t, `${base}?token=${token}`, {}, 'valid token')
  await expectAccepted(t, `${base}some/odd/path?token=${token}`, {}, 'valid token on an odd path (path ignored)')
  await expectAccepted(t, `${base}?foo=${c()}&token=${token}&bar=${c()}`, {}, 'valid token among other keys')
  await expectAccepted(t, `${base}?token=${token}`, { Authorization: `Bearer ${c()}` }, 'valid token plus an ignored canary bearer header')

  // Refused at the upgrade.
  const invalid = { status: 401, body: 'invalid generated websocket query token' }
  const missing = { status: 401, body: 'missing generated websocket query token' }
  const multiple = { status: 401, body: 'multiple websocket query tokens' }
  await expectRefused(t, `${base}?token=${c()}`, {}, invalid, 'wrong token', bodies)
  await expectRefused(t, `${base}deep/odd/path?x=1&token=${c()}`, {}, invalid, 'wrong token on an odd path', bodies)
  await expectRefused(t, `${base}?token=${token}x`, {}, invalid, 'real token with a suffix', bodies)
  await expectRefused(t, `${base}?token=${token.slice(0, 20)}`, {}, invalid, 'real token truncated', bodies)
  await expectRefused(t, `${base}?pad=${'A'.repeat(6000)}&token=${c()}`, {}, invalid, 'very long query with a wrong token', bodies)
  await expectRefused(t, base, {}, missing, 'no query at all', bodies)
  await expectRefused(t, `${base}some/path?tokens=${c()}&Token=${c()}`, {}, missing, 'no token key (near misses)', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${c()}` }, missing, 'canary bearer header in query mode', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${token}` }, missing, 'real token as a bearer header in query mode', bodies)
  await expectRefused(t, `${base}?token=${token}&token=${token}`, {}, multiple, 'duplicate real token', bodies)
  await expectRefused(t, `${base}?token=${c()}&token=${c()}`, {}, multiple, '?token=SECRET&token=SECRET2', bodies)
  await expectRefused(t, `${base}?token=${token}&token=${c()}`, {}, multiple, 'real token plus a canary token', bodies)
  await expectRefused(
    t,
    `${base}healthz?token=${token}`,
    {},
    { status: 400, body: 'websocket upgrades are served on other paths' },
    'upgrade to /healthz?token=SECRET',
    bodies,
  )
  await expectRefused(
    t,
    `${base}readyz?token=${c()}`,
    {},
    { status: 400, body: 'websocket upgrades are served on other paths' },
    'upgrade to /readyz?token=CANARY',
    bodies,
  )
  await expectRefused(t, `${base}?token=${token}`, { Origin: 'http://evil.example' }, { status: 403, body: '' }, 'Origin header with the real token', bodies)
  await expectRefused(t, `${base}?token=${c()}`, { Origin: 'null' }, { status: 403, body: '' }, 'Origin: null with a canary token', bodies)

  // Requests ws/fetch will not make.
  await expectRaw(t, port, { target: `/?token=${token}`, upgrade: true, host: `evil.example:${port}` }, { status: 403, body: '' }, 'Host rebinding with the real token', bodies)
  await expectRaw(t, port, { target: `/?token=${c()}`, upgrade: true, host: `127.0.0.1.evil.example` }, { status: 403, body: '' }, 'Host prefix trick with a canary token', bodies)
  await expectRaw(t, port, { target: `/%zz?token=${token}` }, { status: 400, body: 'bad request' }, 'GET /%zz?token=SECRET (bad URL)', bodies)
  await expectRaw(t, port, { target: `/%zz?token=${c()}`, upgrade: true }, { status: 400, body: 'bad request' }, 'upgrade to /%zz?token=SECRET (bad URL)', bodies)
  await expectRaw(t, port, { method: 'PUT', target: `/%zz/x?token=${c()}`, body: '' }, { status: 400, body: 'bad request' }, 'PUT to a bad URL', bodies)
  await expectRaw(t, port, { target: `/?token=${c()}${'A'.repeat(20_000)}`, upgrade: true }, { status: 431 }, 'query over the header limit', bodies)
  await expectRaw(t, port, { target: `/?token=${token}`, headers: [BAD_HEADER] }, { status: 400 }, 'malformed header after the real token', bodies)
  await expectRaw(t, port, { method: 'POST', target: `/?token=${token}`, upgrade: true }, { status: 404, body: 'not found' }, 'POST upgrade with the real token', bodies)
  await expectRaw(
    t,
    port,
    { method: 'POST', target: `/?token=${c()}`, headers: ['Content-Type: application/json'], body: JSON.stringify({ token: c() }) },
    { status: 404, body: 'not found' },
    'POST with a token in the query and the body',
    bodies,
  )
  await expectRaw(t, port, { method: 'POST', target: `/api/unknown?token=${token}`, headers: ['Content-Type: text/plain'], body: c() }, { status: 404, body: 'not found' }, 'POST to an unknown path', bodies)
  await expectRaw(t, port, { method: 'DELETE', target: `/v1/x?token=${c()}` }, { status: 404, body: 'not found' }, 'DELETE with a token', bodies)
  await expectRaw(t, port, { method: 'OPTIONS', target: `/?token=${token}` }, { status: 404, body: 'not found' }, 'OPTIONS with the real token', bodies)
  await expectRaw(t, port, { method: 'HEAD', target: `/?token=${token}` }, { status: 400 }, 'HEAD with the real token', bodies)
  await expectRaw(t, port, { method: 'HEAD', target: `/?token=${c()}`, upgrade: true }, { status: 401 }, 'HEAD upgrade with a canary token', bodies)
  await expectRaw(t, port, { method: 'HEAD', target: `/healthz?token=${token}` }, { status: 200 }, 'HEAD /healthz with the real token', bodies)
  await expectRaw(
    t,
    port,
    { target: `/?token=${token}`, headers: [`Authorization: Bearer ${c()}`] },
    { status: 400, body: "Connection header did not include 'upgrade'" },
    'plain GET (no upgrade) with the real token and a canary bearer',
    bodies,
  )
  await expectRaw(t, port, { target: `/elsewhere?token=${c()}` }, { status: 400 }, 'plain GET on another path', bodies)

  await checkProbes(t, server, 'queryToken', token, bodies)

  for (const b of bodies) {
    if (leakedCanaries(b).length > 0) t.fail(`a response body carries a canary: ${b.slice(0, 80)}`)
  }
  await checkLog(
    t,
    server,
    'queryToken',
    ['invalid generated websocket query token', 'missing generated websocket query token', 'multiple websocket query tokens', 'origin not allowed', 'host not allowed'],
    4,
  )
})

t.test('capability-token mode (token file): the whole upgrade matrix leaks nothing', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'canary-cap-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const cap = canary('capability')
  const file = join(dir, 'token')
  await writeFile(file, `  ${cap}\n`, { mode: 0o600 })
  const server = await start(t, { argv: ['--ws-auth', 'capability-token', '--ws-token-file', file] })
  t.equal(server.token, null, 'no query token in bearer modes')
  const base = server.wsBase
  const port = server.port
  const bodies: string[] = []
  const c = () => canary('cap')

  await expectAccepted(t, base, { Authorization: `Bearer ${cap}` }, 'valid capability token')
  await expectAccepted(t, `${base}odd/path`, { Authorization: `bearer ${cap}` }, 'lower-case scheme on an odd path')
  await expectAccepted(t, `${base}?token=${c()}`, { Authorization: `Bearer ${cap}` }, 'valid bearer, canary query token ignored')

  const missing = { status: 401, body: 'missing websocket bearer token' }
  const badHeader = { status: 401, body: 'invalid authorization header' }
  const invalid = { status: 401, body: 'invalid websocket bearer token' }
  await expectRefused(t, base, {}, missing, 'no Authorization header', bodies)
  await expectRefused(t, `${base}?token=${cap}`, {}, missing, 'capability token in the query only (no fallback)', bodies)
  await expectRefused(t, `${base}?token=${cap}&token=${c()}`, {}, missing, 'duplicate query tokens, no header', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${c()}` }, invalid, 'wrong capability token', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${cap}x` }, invalid, 'capability token with a suffix', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${cap} ${c()}` }, invalid, 'two tokens in one header', bodies)
  await expectRefused(t, base, { Authorization: `Basic ${Buffer.from(`user:${cap}`).toString('base64')}` }, badHeader, 'Basic scheme', bodies)
  await expectRefused(t, base, { Authorization: `Token ${cap}` }, badHeader, 'wrong scheme', bodies)
  await expectRefused(t, base, { Authorization: `Bearer${cap}` }, badHeader, 'no space after the scheme', bodies)
  await expectRefused(t, base, { Authorization: cap }, badHeader, 'bare token', bodies)
  await expectRefused(t, `${base}healthz`, { Authorization: `Bearer ${cap}` }, { status: 400, body: 'websocket upgrades are served on other paths' }, 'upgrade to /healthz', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${cap}`, Origin: 'https://evil.example' }, { status: 403, body: '' }, 'Origin with the valid token', bodies)

  await expectRaw(t, port, { target: '/', upgrade: true, headers: [`Authorization: Bearer \u00e9${c()}`] }, badHeader, 'non-ASCII bearer', bodies)
  await expectRaw(t, port, { target: '/', upgrade: true, host: 'attacker.example', headers: [`Authorization: Bearer ${cap}`] }, { status: 403, body: '' }, 'Host rebinding with the valid token', bodies)
  await expectRaw(t, port, { target: `/%zz?token=${c()}`, headers: [`Authorization: Bearer ${cap}`] }, { status: 400, body: 'bad request' }, 'bad URL with the valid token', bodies)
  await expectRaw(t, port, { method: 'POST', target: `/?token=${c()}`, upgrade: true, headers: [`Authorization: Bearer ${cap}`] }, { status: 404, body: 'not found' }, 'POST upgrade with the valid token', bodies)
  await expectRaw(t, port, { method: 'HEAD', target: '/', headers: [`Authorization: Bearer ${cap}`] }, { status: 400 }, 'HEAD with the valid token', bodies)
  await expectRaw(t, port, { target: '/', headers: [`Authorization: Bearer ${c()}`, BAD_HEADER] }, { status: 400 }, 'malformed header after a bearer', bodies)
  await expectRaw(t, port, { target: `/?q=${'B'.repeat(20_000)}`, upgrade: true, headers: [`Authorization: Bearer ${c()}`] }, { status: 431 }, 'header overflow with a bearer', bodies)

  await checkProbes(t, server, 'capabilityToken', cap, bodies)
  for (const b of bodies) {
    if (leakedCanaries(b).length > 0) t.fail(`a response body carries a canary: ${b.slice(0, 80)}`)
  }
  await checkLog(
    t,
    server,
    'capabilityToken',
    ['missing websocket bearer token', 'invalid websocket bearer token', 'invalid authorization header', 'origin not allowed', 'host not allowed'],
    3,
  )
})

t.test('signed-bearer mode (secret file): the whole upgrade matrix leaks nothing', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'canary-jwt-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const secret = canary('hs256-shared-secret')
  t.ok(Buffer.byteLength(secret) >= 32, 'secret is long enough')
  const file = join(dir, 'secret')
  await writeFile(file, `${secret}\n`, { mode: 0o600 })
  const server = await start(t, { argv: ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', file] })
  const base = server.wsBase
  const port = server.port
  const bodies: string[] = []
  const now = nowSeconds()
  const c = () => canary('jwt')

  const valid = await signJwt(secret, { exp: now + 600, sub: 'tester' })
  const scoped = await signJwt(secret, { exp: now + 600, iat: now, scope: 'session account:read' })
  await expectAccepted(t, base, { Authorization: `Bearer ${valid}` }, 'valid JWT')
  await expectAccepted(t, `${base}odd/path?token=${c()}`, { Authorization: `bearer ${scoped}` }, 'scoped JWT, odd path, canary query token')

  const [h, p, s] = valid.split('.') as [string, string, string]
  const laterPayload = Buffer.from(JSON.stringify({ exp: now + 99_999, sub: 'tester' })).toString('base64url')
  const tamperedPayload = registerCanary(`${h}.${laterPayload}.${s}`)
  const mid = Math.floor(s.length / 2)
  const flipped = s[mid] === 'A' ? 'B' : 'A'
  const tamperedSignature = registerCanary(`${h}.${p}.${s.slice(0, mid)}${flipped}${s.slice(mid + 1)}`)
  const none = unsignedJwt({ exp: now + 600, sub: 'tester' })
  const noneWithSig = registerCanary(`${none}${s}`)
  const expired = await signJwt(secret, { exp: now - 3600 })
  const notYet = await signJwt(secret, { exp: now + 7200, nbf: now + 3600 })
  const noExp = await signJwt(secret, { sub: 'tester' })
  const fractionalExp = await signJwt(secret, { exp: now + 600.5 })
  const wrongKey = await signJwt(canary('another-hs256-secret-key'), { exp: now + 600 })
  const hs384 = await signJwt(secret, { exp: now + 600 }, { alg: 'HS384' })

  const invalidJwt = { status: 401, body: 'invalid websocket jwt' }
  const cases: [string, string, UpgradeRefusal][] = [
    ['tampered payload', tamperedPayload, invalidJwt],
    ['tampered signature', tamperedSignature, invalidJwt],
    ['alg none', none, invalidJwt],
    ['alg none with a signature', noneWithSig, invalidJwt],
    ['alg HS384', hs384, invalidJwt],
    ['signed with another key', wrongKey, invalidJwt],
    ['no exp', noExp, invalidJwt],
    ['fractional exp', fractionalExp, invalidJwt],
    ['garbage bearer', c(), invalidJwt],
    ['expired', expired, { status: 401, body: 'expired websocket jwt' }],
    ['not valid yet', notYet, { status: 401, body: 'websocket jwt is not valid yet' }],
  ]
  for (const [what, jwt, expected] of cases) await expectRefused(t, base, { Authorization: `Bearer ${jwt}` }, expected, what, bodies)
  await expectRefused(t, `${base}?token=${valid}`, {}, { status: 401, body: 'missing websocket bearer token' }, 'valid JWT in the query only', bodies)
  await expectRefused(t, base, { Authorization: `JWT ${valid}` }, { status: 401, body: 'invalid authorization header' }, 'JWT scheme', bodies)
  await expectRefused(t, base, { Authorization: `Bearer ${valid}`, Origin: 'http://localhost:3000' }, { status: 403, body: '' }, 'Origin with a valid JWT', bodies)
  await expectRefused(t, `${base}healthz?token=${c()}`, { Authorization: `Bearer ${valid}` }, { status: 400, body: 'websocket upgrades are served on other paths' }, 'upgrade to /healthz', bodies)

  await expectRaw(t, port, { target: '/', upgrade: true, host: 'rebind.example:80', headers: [`Authorization: Bearer ${valid}`] }, { status: 403, body: '' }, 'Host rebinding with a valid JWT', bodies)
  await expectRaw(t, port, { target: `/%zz?token=${valid}` }, { status: 400, body: 'bad request' }, 'bad URL with a JWT in the query', bodies)
  await expectRaw(t, port, { method: 'POST', target: `/?token=${c()}`, headers: [`Authorization: Bearer ${valid}`, 'Content-Type: application/json'], body: '{}' }, { status: 404, body: 'not found' }, 'POST with a JWT', bodies)
  await expectRaw(t, port, { method: 'HEAD', target: `/?token=${c()}`, headers: [`Authorization: Bearer ${expired}`] }, { status: 400 }, 'HEAD with an expired JWT', bodies)
  await expectRaw(t, port, { target: '/', upgrade: true, headers: [`Authorization: Bearer ${tamperedPayload}`, BAD_HEADER] }, { status: 400 }, 'malformed header after a JWT', bodies)

  await checkProbes(t, server, 'signedBearerToken', valid, bodies)
  for (const b of bodies) {
    if (leakedCanaries(b).length > 0) t.fail(`a response body carries a canary: ${b.slice(0, 80)}`)
  }
  await checkLog(
    t,
    server,
    'signedBearerToken',
    ['invalid websocket jwt', 'expired websocket jwt', 'websocket jwt is not valid yet', 'missing websocket bearer token', 'invalid authorization header', 'origin not allowed', 'host not allowed'],
    2,
  )
})

t.test('--no-token-check: degraded admissions log the reason, never the token', async (t) => {
  const server = await start(t, { argv: ['--no-token-check'] })
  const token = server.token
  if (token === null) throw new Error('query mode has a token')
  const base = server.wsBase
  await expectAccepted(t, `${base}?token=${canary('degraded')}`, {}, 'wrong token admitted (degraded)')
  await expectAccepted(t, `${base}?token=${canary('d1')}&token=${token}`, {}, 'duplicate tokens admitted (degraded)')
  await expectAccepted(t, `${base}?token=${token}`, {}, 'valid token admitted')
  const h = await httpGet(`${server.httpBase}/healthz?token=${token}`)
  t.same(JSON.parse(h.body), { status: 'ok', auth: { mode: 'queryToken', enforced: false }, engine: { state: 'off', version: null } })
  const degraded = server.logs.authEvents().filter((l) => l.outcome === 'degraded')
  t.same(
    degraded.map((l) => [l.level, l.reason]),
    [
      [40, 'invalid generated websocket query token'],
      [40, 'multiple websocket query tokens'],
    ],
    'one WARN ws.auth line per degraded admission, naming the reason',
  )
  await until(() => server.logs.lines.some((l) => l.level === 20), 'a debug line in the log')
  t.same(leakedCanaries(server.logs.text()), [], 'no canary in the debug log')
})

t.test('JSON-RPC errors and dropped frames never quote a canary', async (t) => {
  const server = await start(t)
  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  const secret = () => canary('rpc-secret')

  // Before initialize: bad params with a canary in an unknown field.
  const badType = await client.request('initialize', { clientInfo: { name: 'c', title: null, version: 7 }, apiKey: secret() })
  const badTypeError = badType.error as { code: number; message: string }
  t.equal(badTypeError.code, -32600)
  t.match(badTypeError.message, /^Invalid request: /)
  const badShape = await client.request('initialize', { clientInfo: secret(), token: secret() })
  t.equal((badShape.error as { code: number }).code, -32600)
  const unknown = await client.request('account/read', { token: secret(), refreshToken: secret() })
  t.equal((unknown.error as { code: number }).code, -32600)

  // Frames that are no message: dropped with a WARN that does not quote them.
  const notJson = `{"id":99,"method":"initialize","params":{"token":"${secret()}"`
  client.sendRaw(notJson)
  client.sendRaw(JSON.stringify({ secret: secret() }))
  client.sendRaw(JSON.stringify([{ id: 1, method: 'initialize', params: { token: secret() } }]))
  client.sendRaw(Buffer.from(JSON.stringify({ id: 5, method: 'initialize', token: secret() })), true)

  // Initialize with canaries in unknown fields: accepted; the reply and the log hold none.
  const ok = await client.request('initialize', {
    clientInfo: { name: 'canary-client', title: null, version: '1.0.0', apiKey: secret() },
    capabilities: { experimentalApi: false, token: secret() },
    authorization: `Bearer ${secret()}`,
    token: secret(),
  })
  t.ok('result' in ok, 'initialize with unknown members succeeds')
  client.notify('initialized', { token: secret() })
  const again = await client.request('initialize', { clientInfo: { name: 'c', title: null, version: '1' }, token: secret() })
  t.same(again.error, { code: -32600, message: 'Already initialized' })

  for (const f of client.frames) t.same(leakedCanaries(f), [], `reply frame holds no canary: ${f.slice(0, 60)}`)

  const warns = server.logs.lines.filter((l) => l.level === 40)
  t.ok(warns.some((l) => l.msg === 'dropped malformed JSON-RPC frame' && l.problem === 'not json'), 'non-JSON frame WARN')
  t.ok(warns.some((l) => l.msg === 'dropped malformed JSON-RPC frame' && l.problem === 'not a message'), 'non-message WARN')
  t.ok(warns.some((l) => l.msg === 'ignored binary WebSocket frame'), 'binary frame WARN')
  for (const l of warns) t.same(leakedCanaries(JSON.stringify(l)), [], `WARN line holds no canary: ${l.msg}`)
  t.notOk(server.logs.text().includes(notJson.slice(0, 20)), 'the WARN does not quote the frame text')
  t.same(leakedCanaries(server.logs.text()), [], 'no canary anywhere in the debug log')
  t.ok(server.logs.lines.some((l) => l.level === 20), 'debug lines were captured')
})

t.test('query values are redacted whole, whatever characters they hold', async (t) => {
  const server = await start(t)
  const bodies: string[] = []
  // Node accepts these characters raw in a request target; the redaction must not stop at them.
  for (const sep of ['"', "'", '<', '>']) {
    const secret = canary('odd-chars')
    await expectRaw(t, server.port, { target: `/?token=x${sep}${secret}`, upgrade: true }, { status: 401, body: 'invalid generated websocket query token' }, `token value with ${sep}`, bodies)
  }
  t.same(leakedCanaries(server.logs.text()), [], 'no part of a query value is logged')
})

t.test('a refused bad-URL upgrade is ended by the server and does not hold up shutdown', async (t) => {
  const server = await startServer()
  const sockets = trackSockets(server.app.server)
  let closedCleanly = false
  t.teardown(async () => {
    if (!closedCleanly) await closeOrForce(() => server.close(), sockets, 0)
  })
  const r = await rawRequest(server.port, { target: `/%zz?token=${canary('bad-url')}`, upgrade: true, waitForServerCloseMs: 500 })
  t.equal(r.status, 400)
  t.equal(r.body, 'bad request')
  t.ok(r.serverClosed, 'the server ends the refused upgrade connection (as it does for 401s)')
  // The client is gone now; a graceful stop must not wait for the dead upgrade socket.
  closedCleanly = await closeOrForce(() => server.close(), sockets, 1000)
  t.ok(closedCleanly, 'app.close() completes after a bad-URL upgrade attempt')
  t.same(leakedCanaries(server.logs.text()), [])
})

t.test('every refused upgrade is explained by one ws.auth line', async (t) => {
  for (const [what, opts] of [
    ['upgrade to /healthz', { target: `/healthz?token=${canary('hz')}`, upgrade: true }],
    ['upgrade to a bad URL', { target: `/%zz?token=${canary('bu')}`, upgrade: true }],
  ] as const) {
    const server = await start(t)
    const r = await rawRequest(server.port, opts)
    t.ok(r.status >= 400, `${what}: refused (${r.status})`)
    const auth = server.logs.authEvents()
    t.equal(auth.length, 1, `${what}: one ws.auth line`)
    t.equal(auth[0]?.outcome, 'rejected', `${what}: outcome rejected`)
    t.type(auth[0]?.reason, 'string', `${what}: with a reason`)
  }
})

t.test('client errors logged at trace level carry no raw request bytes', async (t) => {
  // startServer logs at debug; Fastify logs HTTP parser errors at trace, with `rawPacket`.
  const config = loadConfig(['--listen', 'ws://127.0.0.1:0'], { env: {}, dotenvPath: null })
  const logs = new LogCapture()
  const app = await buildApp(config, { logger: createLogger('trace', logs) })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const sockets = trackSockets(app.server)
  t.teardown(() => closeOrForce(() => app.close(), sockets).then(() => undefined))
  const port = (app.server.address() as AddressInfo).port
  const token = registerCanary(app.wsAuth.queryToken as string)

  await rawRequest(port, { target: `/?token=${token}${'C'.repeat(20_000)}`, upgrade: true })
  await rawRequest(port, { target: `/?token=${canary('trace')}`, headers: [BAD_HEADER] })
  t.ok(logs.lines.some((l) => l.level === 10), 'trace lines were captured')

  // Decode any serialized Buffer ({type:'Buffer', data:[...]}) so bytes count as text too.
  const decoded: string[] = []
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object') return
    const o = v as Record<string, unknown>
    if (o.type === 'Buffer' && Array.isArray(o.data)) decoded.push(Buffer.from(o.data as number[]).toString('latin1'))
    for (const k of Object.keys(o)) walk(o[k])
  }
  for (const l of logs.lines) walk(l)
  t.same(leakedCanaries(logs.text() + '\n' + decoded.join('\n')), [], 'no canary in trace logs, not even as serialized bytes')
})

t.test('malformed query shapes carrying the real token leave no token in any log line', async (t) => {
  // The shapes an outside attack found on stdout: each is refused, and the log must not depend
  // on the query parsing as a well-behaved client writes it.
  const server = await start(t)
  const token = server.token!
  const refused = [`/?x#token=${token}`, `/?token%3D${token}`, `/?a"b=${token}`, `/#token=${token}`, `/%3Ftoken=${token}`, `/?token=${token}#`]
  // Odd but valid: the token parses, so this connects; its log lines must be as clean.
  const accepted = [`/?a=1&&token=${token}`]
  for (const target of [...refused, ...accepted]) {
    for (const upgrade of [true, false]) {
      const r = await rawRequest(server.port, { target, upgrade })
      const expected = upgrade && accepted.includes(target) ? 101 : r.status >= 400 ? r.status : 'a refusal'
      t.equal(r.status, expected, `${upgrade ? 'upgrade' : 'GET'} ${target.replace(token, 'T')}: ${r.status}`)
      record(r.head + r.body)
    }
  }
  t.ok(server.logs.lines.some((l) => typeof (l.req as { url?: unknown } | undefined)?.url === 'string'), 'request lines were logged')
  t.same(leakedCanaries(server.logs.text()), [], 'no token in the logs')
})

t.test('an offered subprotocol is never echoed, even a token', async (t) => {
  const server = await start(t)
  const token = server.token!
  const offered = canary('subprotocol')
  const r = await rawRequest(server.port, { target: `/?token=${token}`, upgrade: true, headers: [`Sec-WebSocket-Protocol: ${offered}, ${token}`] })
  t.equal(r.status, 101, 'the connection is accepted (the query token is valid)')
  t.notMatch(r.head, /sec-websocket-protocol/i, 'no subprotocol is selected')
  record(r.head)
  t.same(leakedCanaries(r.head), [])
})

t.test('ambiguous requests are refused, not resolved by "first one wins"', async (t) => {
  const server = await start(t)
  const token = server.token!
  const host = `127.0.0.1:${server.port}`
  const cases: [string, RawOptions, number][] = [
    ['a valid Host then an invalid one', { target: `/?token=${token}`, upgrade: true, headers: ['Host: evil.example'] }, 400],
    ['two Authorization headers, valid first', { target: '/', upgrade: true, headers: [`Authorization: Bearer ${token}`, 'Authorization: Bearer nope'] }, 400],
    ['an asterisk-form target', { target: `*?token=${token}`, upgrade: true }, 400],
    ['a fragment before the query', { target: `/#?token=${token}`, upgrade: true }, 400],
    ['a fragment after a valid query', { target: `/?token=${token}#x`, upgrade: true }, 400],
    ['an absolute-form target naming another authority', { target: `http://evil.example/?token=${token}`, upgrade: true }, 400],
    ['an absolute-form target with userinfo', { target: `http://x@${host}/?token=${token}`, upgrade: true }, 400],
    ['a plain GET with two Host headers', { target: '/healthz', headers: ['Host: evil.example'] }, 400],
    ['an IPv6 zone id in Host', { target: `/?token=${token}`, upgrade: true, host: `[::1%lo]:${server.port}` }, 403],
    ['an absolute-form target naming this server', { target: `http://${host}/?token=${token}`, upgrade: true }, 101],
  ]
  for (const [what, opts, status] of cases) {
    const r = await rawRequest(server.port, opts)
    t.equal(r.status, status, `${what}: ${status}`)
    record(r.head + r.body)
  }
  const refusals = server.logs.authEvents().filter((l) => l.outcome === 'rejected').map((l) => l.reason)
  t.ok(refusals.includes('duplicate host header') && refusals.includes('fragment in target'), 'each upgrade refusal is explained by its ws.auth line')
  t.same(leakedCanaries(server.logs.text()), [])
})
