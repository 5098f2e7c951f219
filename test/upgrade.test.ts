/**
 * The upgrade decision over real sockets: the three auth modes, the browser and DNS-rebinding
 * defences, the HTTP routes on the same listener, and the one `ws.auth` log line per decision
 * (which never carries a secret).
 */
import { request as httpRequest } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import t from 'tap'
import { base64url } from 'jose'
import { canary, record, registerCanary } from './helpers/canary.js'
import { connect, httpGet, refuse, tryUpgrade, type RpcClient } from './helpers/client.js'
import { nowSeconds, signJwt, unsignedJwt } from './helpers/jwt.js'
import { startServer, type LogLine, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]
type Mode = 'queryToken' | 'capabilityToken' | 'signedBearerToken'

const ALL_SCOPES = ['account:read', 'account:write', 'config:read', 'config:write', 'exec', 'fs:read', 'fs:write', 'metrics:read', 'remote:write', 'session', 'thread:read', 'thread:write']

async function start(t: TestT, argv: string[] = []): Promise<TestServer> {
  const server = await startServer({ argv })
  t.teardown(() => server.close())
  return server
}

/** A socket that is closed when the test ends, whatever happens in between. */
async function open(t: TestT, url: string, headers: Record<string, string> = {}): Promise<RpcClient> {
  const client = await connect(url, headers)
  t.teardown(() => {
    client.ws.close()
  })
  return client
}

/** A GET over node:http, so that the `Host` header can be chosen (fetch does not allow it). */
function rawGet(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        record(body)
        resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers['content-type'] ?? '') })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/** A hand-made upgrade request, to see the refusal's headers (the `ws` client hides them). */
function rawUpgrade(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path,
      method: 'GET',
      agent: false,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode ?? 0, body: '', contentType: '' })
    })
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        record(body)
        resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers['content-type'] ?? '') })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/** The ws.auth lines written since `before`; the decision must have written exactly one. */
function oneAuthEvent(t: TestT, server: TestServer, before: number, what: string): LogLine {
  const events = server.logs.authEvents().slice(before)
  t.equal(events.length, 1, `${what}: exactly one ws.auth line`)
  return events[0] ?? { level: -1 }
}

/** Refused with `status`/`body`, and logged as one rejected ws.auth line with `reason`. */
async function expectRefused(
  t: TestT,
  server: TestServer,
  mode: Mode,
  url: string,
  headers: Record<string, string>,
  expected: { status: number; body: string; reason?: string },
  what: string,
): Promise<void> {
  const before = server.logs.authEvents().length
  const r = await refuse(url, headers)
  t.strictSame(r, { status: expected.status, body: expected.body }, `${what}: ${expected.status} ${JSON.stringify(expected.body)}`)
  const line = oneAuthEvent(t, server, before, what)
  t.match(line, { event: 'ws.auth', outcome: 'rejected', mode, remote: '127.0.0.1' }, `${what}: rejected line`)
  if (expected.reason !== undefined) t.equal(line.reason, expected.reason, `${what}: logged reason`)
  else t.match(line.reason, /\S/, `${what}: a reason is logged`)
}

/** Accepted, and logged as one accepted ws.auth line (no reason) with the principal's scopes. */
async function expectAccepted(
  t: TestT,
  server: TestServer,
  mode: Mode,
  url: string,
  headers: Record<string, string>,
  what: string,
  scopes: string[] = ALL_SCOPES,
): Promise<RpcClient> {
  const before = server.logs.authEvents().length
  const client = await open(t, url, headers)
  const line = oneAuthEvent(t, server, before, what)
  t.match(line, { level: 30, event: 'ws.auth', outcome: 'accepted', mode, remote: '127.0.0.1', connectionId: /\S/ }, `${what}: accepted line`)
  t.notOk('reason' in line, `${what}: no reason on an accepted line`)
  t.same([...((line.scopes as string[] | undefined) ?? [])].sort(), scopes, `${what}: scopes logged`)
  return client
}

async function expectInitialize(t: TestT, client: RpcClient, what: string): Promise<void> {
  const reply = await client.request('initialize', { clientInfo: { name: 'upgrade-test', title: null, version: '1.0.0' } })
  t.notOk('error' in reply, `${what}: initialize has no error`)
  t.match(reply.result, { userAgent: /upgrade-test/, codexHome: /\S/, platformFamily: /\S/, platformOs: /\S/ }, `${what}: initialize result`)
}

async function expectHealth(t: TestT, server: TestServer, mode: Mode, enforced: boolean): Promise<void> {
  const h = await httpGet(`${server.httpBase}/healthz`)
  t.equal(h.status, 200, '/healthz is 200')
  t.match(h.headers.get('content-type'), /^application\/json/, '/healthz is JSON')
  t.strictSame(JSON.parse(h.body), { status: 'ok', auth: { mode, enforced }, engine: { state: 'off', version: null } }, `/healthz body (${mode}, enforced ${enforced})`)
  const r = await httpGet(`${server.httpBase}/readyz`)
  t.equal(r.status, 200, '/readyz is 200')
  t.match(r.headers.get('content-type'), /^application\/json/, '/readyz is JSON')
  t.strictSame(JSON.parse(r.body), { status: 'ready' }, '/readyz body')
  if (server.token !== null) {
    t.notOk(h.body.includes(server.token) || r.body.includes(server.token), 'no token in probe bodies')
  }
}

/** Percent-encodes the first character of a token (still the same token once form-decoded). */
function percentEncodeFirst(token: string): string {
  return `%${token.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}${token.slice(1)}`
}

// =============================================================================================
t.test('query token mode (default)', async (t) => {
  const server = await start(t)
  const token = server.token!
  t.match(token, /^[A-Za-z0-9_-]{43}$/, 'a generated 43-char base64url token')

  t.test('health bodies', async (t) => {
    await expectHealth(t, server, 'queryToken', true)
  })

  t.test('a valid token is accepted and can initialize', async (t) => {
    const client = await expectAccepted(t, server, 'queryToken', server.wsUrl, {}, 'valid token')
    await expectInitialize(t, client, 'valid token')
    await client.close()
  })

  t.test('the token is read on any path, with other keys, form-decoded', async (t) => {
    const a = await expectAccepted(t, server, 'queryToken', `${server.wsBase}some/path?token=${token}`, {}, '/some/path')
    await expectInitialize(t, a, '/some/path')
    await a.close()
    const b = await expectAccepted(t, server, 'queryToken', `${server.wsBase}x?a=1&token=${token}&b=2`, {}, 'other keys')
    await b.close()
    const c = await expectAccepted(t, server, 'queryToken', `${server.wsBase}?token=${percentEncodeFirst(token)}`, {}, 'percent-encoded')
    await c.close()
  })

  t.test('each 401 reason, with its exact body', async (t) => {
    const missing = 'missing generated websocket query token'
    const invalid = 'invalid generated websocket query token'
    const multiple = 'multiple websocket query tokens'
    await expectRefused(t, server, 'queryToken', server.wsBase, {}, { status: 401, body: missing, reason: missing }, 'no query')
    await expectRefused(t, server, 'queryToken', `${server.wsBase}?other=${token}`, {}, { status: 401, body: missing, reason: missing }, 'other key only')
    await expectRefused(t, server, 'queryToken', `${server.wsBase}?token=nope`, {}, { status: 401, body: invalid, reason: invalid }, 'wrong token')
    await expectRefused(t, server, 'queryToken', `${server.wsBase}?token=`, {}, { status: 401, body: invalid, reason: invalid }, 'empty token')
    await expectRefused(t, server, 'queryToken', `${server.wsBase}?token=${token.slice(0, -1)}`, {}, { status: 401, body: invalid, reason: invalid }, 'truncated token')
    await expectRefused(
      t,
      server,
      'queryToken',
      `${server.wsBase}?token=${token}&token=${token}`,
      {},
      { status: 401, body: multiple, reason: multiple },
      'duplicate token',
    )
    await expectRefused(
      t,
      server,
      'queryToken',
      `${server.wsBase}?token=${token}&token=nope`,
      {},
      { status: 401, body: multiple, reason: multiple },
      'valid plus wrong token',
    )
  })

  t.test('a refusal is plain text; an accepted hand-made upgrade gets its 101', async (t) => {
    const r = await rawUpgrade(server.port, '/?token=nope')
    t.equal(r.status, 401)
    t.match(r.contentType, /^text\/plain/, '401 is text/plain')
    t.equal(r.body, 'invalid generated websocket query token')
    const ok = await rawUpgrade(server.port, `/?token=${token}`)
    t.equal(ok.status, 101, 'the valid token switches protocols')
  })

  t.test('an Authorization header is ignored in query mode', async (t) => {
    const missing = 'missing generated websocket query token'
    await expectRefused(
      t,
      server,
      'queryToken',
      server.wsBase,
      { Authorization: `Bearer ${token}` },
      { status: 401, body: missing, reason: missing },
      'bearer header alone',
    )
    const client = await expectAccepted(t, server, 'queryToken', server.wsUrl, { Authorization: 'Bearer nonsense' }, 'query token plus junk bearer')
    await client.close()
  })

  t.test('a plain GET on the socket route is 400, not 200', async (t) => {
    const before = server.logs.authEvents().length
    const plain = await httpGet(`${server.httpBase}/`)
    t.equal(plain.status, 400, 'GET / without upgrade')
    const withToken = await httpGet(`${server.httpBase}/?token=${token}`)
    t.equal(withToken.status, 400, 'GET /?token=... without upgrade')
    t.notOk(withToken.body.includes(token), 'the body does not echo the token')
    const deep = await httpGet(`${server.httpBase}/some/path`)
    t.equal(deep.status, 400, 'GET /some/path without upgrade')
    t.equal(server.logs.authEvents().length, before, 'no upgrade, no ws.auth decision')
  })

  t.test('an upgrade aimed at a probe path is refused', async (t) => {
    for (const path of ['healthz', 'readyz']) {
      const r = await tryUpgrade(`${server.wsBase}${path}?token=${token}`)
      if ('ws' in r) {
        r.ws.close()
        t.fail(`upgrade on /${path} was accepted`)
        continue
      }
      t.not(r.refused.status, 101, `/${path}: no 101`)
      t.ok(r.refused.status >= 400 && r.refused.status < 500, `/${path}: a 4xx (${r.refused.status})`)
      t.notOk(r.refused.body.includes(token), `/${path}: body does not echo the token`)
    }
  })
})

// =============================================================================================
t.test('capability token mode', async (t) => {
  const capability = canary('capability')

  async function checkMode(t: TestT, server: TestServer): Promise<void> {
    t.equal(server.token, null, 'no query token in capability mode')
    await expectHealth(t, server, 'capabilityToken', true)

    const client = await expectAccepted(t, server, 'capabilityToken', server.wsBase, { Authorization: `Bearer ${capability}` }, 'valid bearer')
    await expectInitialize(t, client, 'valid bearer')
    await client.close()
    const lower = await expectAccepted(t, server, 'capabilityToken', `${server.wsBase}any/path`, { Authorization: `bearer ${capability}` }, 'lowercase scheme')
    await lower.close()

    const missing = 'missing websocket bearer token'
    const invalidBearer = 'invalid websocket bearer token'
    const invalidHeader = 'invalid authorization header'
    await expectRefused(t, server, 'capabilityToken', server.wsBase, {}, { status: 401, body: missing, reason: missing }, 'no header')
    await expectRefused(
      t,
      server,
      'capabilityToken',
      server.wsBase,
      { Authorization: `Bearer ${capability}x` },
      { status: 401, body: invalidBearer, reason: invalidBearer },
      'wrong bearer',
    )
    await expectRefused(
      t,
      server,
      'capabilityToken',
      server.wsBase,
      { Authorization: 'Basic dXNlcjpwYXNz' },
      { status: 401, body: invalidHeader, reason: invalidHeader },
      'Basic scheme',
    )
    await expectRefused(
      t,
      server,
      'capabilityToken',
      server.wsBase,
      { Authorization: 'Bearer ' },
      { status: 401, body: invalidHeader, reason: invalidHeader },
      'empty bearer',
    )
    await expectRefused(
      t,
      server,
      'capabilityToken',
      `${server.wsBase}?token=${encodeURIComponent(capability)}`,
      {},
      { status: 401, body: missing, reason: missing },
      'the right token in the query string (no fallback)',
    )
  }

  t.test('--ws-token-file', async (t) => {
    const dir = tempDir('upgrade', t)
    const file = join(dir, 'capability.txt')
    writeFileSync(file, `  ${capability}\n`, { mode: 0o600 })
    const server = await start(t, ['--ws-auth', 'capability-token', '--ws-token-file', file])
    await checkMode(t, server)
  })

  t.test('--ws-token-sha256', async (t) => {
    const hex = createHash('sha256').update(capability).digest('hex')
    const server = await start(t, ['--ws-auth', 'capability-token', '--ws-token-sha256', hex])
    await checkMode(t, server)
  })
})

// =============================================================================================
t.test('signed bearer mode', async (t) => {
  const secret = canary('signed-bearer-shared-secret-at-least-32-bytes')
  const dir = tempDir('upgrade', t)
  const secretFile = join(dir, 'secret.txt')
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 })
  const server = await start(t, [
    '--ws-auth',
    'signed-bearer-token',
    '--ws-shared-secret-file',
    secretFile,
    '--ws-issuer',
    'test-issuer',
    '--ws-audience',
    'test-audience',
  ])
  const good = () => ({ sub: 'user-1', iss: 'test-issuer', aud: 'test-audience', exp: nowSeconds() + 3600 })
  const bearer = (jwt: string) => ({ Authorization: `Bearer ${jwt}` })

  t.test('health bodies', async (t) => {
    t.equal(server.token, null, 'no query token in signed mode')
    await expectHealth(t, server, 'signedBearerToken', true)
  })

  t.test('a valid JWT is accepted and can initialize', async (t) => {
    const jwt = await signJwt(secret, good())
    const client = await expectAccepted(t, server, 'signedBearerToken', server.wsBase, bearer(jwt), 'valid jwt')
    await expectInitialize(t, client, 'valid jwt')
    await client.close()
    const arr = await signJwt(secret, { ...good(), aud: ['other', 'test-audience'] })
    const c2 = await expectAccepted(t, server, 'signedBearerToken', `${server.wsBase}p`, bearer(arr), 'array aud')
    await c2.close()
  })

  t.test('each 401 reason', async (t) => {
    const INVALID = 'invalid websocket jwt'
    const valid = await signJwt(secret, good())
    const [h, , s] = valid.split('.')
    const tampered = registerCanary(`${h}.${base64url.encode(JSON.stringify({ ...good(), sub: 'admin' }))}.${s}`)
    const cases: [string, string, string][] = [
      ['tampered payload', tampered, INVALID],
      ['wrong key', await signJwt(canary('another-shared-secret-of-32-bytes-or-more'), good()), INVALID],
      ['alg none', unsignedJwt(good()), INVALID],
      ['HS512', await signJwt(secret, good(), { alg: 'HS512' }), INVALID],
      ['missing exp', await signJwt(secret, { sub: 'user-1', iss: 'test-issuer', aud: 'test-audience' }), INVALID],
      ['expired', await signJwt(secret, { ...good(), exp: nowSeconds() - 3600 }), 'expired websocket jwt'],
      ['nbf in the future', await signJwt(secret, { ...good(), nbf: nowSeconds() + 3600 }), 'websocket jwt is not valid yet'],
      ['issuer mismatch', await signJwt(secret, { ...good(), iss: 'other-issuer' }), 'websocket jwt issuer mismatch'],
      ['audience mismatch', await signJwt(secret, { ...good(), aud: 'other-audience' }), 'websocket jwt audience mismatch'],
    ]
    for (const [what, jwt, reason] of cases) {
      await expectRefused(t, server, 'signedBearerToken', server.wsBase, bearer(jwt), { status: 401, body: reason, reason }, what)
    }
  })

  t.test('bearer header problems', async (t) => {
    const missing = 'missing websocket bearer token'
    const invalidHeader = 'invalid authorization header'
    const jwt = await signJwt(secret, good())
    await expectRefused(t, server, 'signedBearerToken', server.wsBase, {}, { status: 401, body: missing, reason: missing }, 'no header')
    await expectRefused(
      t,
      server,
      'signedBearerToken',
      `${server.wsBase}?token=${jwt}`,
      {},
      { status: 401, body: missing, reason: missing },
      'JWT in the query string (no fallback)',
    )
    await expectRefused(
      t,
      server,
      'signedBearerToken',
      server.wsBase,
      { Authorization: `Basic ${jwt}` },
      { status: 401, body: invalidHeader, reason: invalidHeader },
      'Basic scheme',
    )
  })

  t.test('blank --ws-issuer/--ws-audience are not checked', async (t) => {
    const s2 = await start(t, ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile, '--ws-issuer', '  ', '--ws-audience', ''])
    const jwt = await signJwt(secret, { ...good(), iss: 'anyone', aud: 'anything' })
    const client = await expectAccepted(t, s2, 'signedBearerToken', s2.wsBase, bearer(jwt), 'unchecked iss/aud')
    await client.close()
  })
})

// =============================================================================================
t.test('browser defences: Origin', async (t) => {
  t.test('any Origin gets an empty 403 on every path, whatever the token', async (t) => {
    const server = await start(t)
    const origin = { Origin: 'http://localhost:3000' }
    await expectRefused(t, server, 'queryToken', server.wsUrl, origin, { status: 403, body: '' }, 'ws path with a valid token')
    await expectRefused(t, server, 'queryToken', `${server.wsBase}?token=nope`, origin, { status: 403, body: '' }, 'ws path with a wrong token')
    await expectRefused(t, server, 'queryToken', server.wsBase, { Origin: 'null' }, { status: 403, body: '' }, 'opaque origin')
    for (const path of ['/healthz', '/readyz', `/?token=${server.token}`]) {
      const r = await httpGet(`${server.httpBase}${path}`, origin)
      t.equal(r.status, 403, `GET ${path.startsWith('/?') ? '/?token=…' : path} with Origin: 403`)
      t.equal(r.body, '', 'empty body')
    }
  })

  t.test('also in a bearer mode', async (t) => {
    const capability = canary('capability')
    const hex = createHash('sha256').update(capability).digest('hex')
    const server = await start(t, ['--ws-auth', 'capability-token', '--ws-token-sha256', hex])
    await expectRefused(
      t,
      server,
      'capabilityToken',
      server.wsBase,
      { Origin: 'http://localhost:3000', Authorization: `Bearer ${capability}` },
      { status: 403, body: '' },
      'valid bearer with Origin',
    )
    const r = await httpGet(`${server.httpBase}/healthz`, { Origin: 'https://example.com' })
    t.strictSame({ status: r.status, body: r.body }, { status: 403, body: '' }, '/healthz with Origin')
  })

  t.test('--allow-origin admits exactly that origin, and still needs the token', async (t) => {
    const server = await start(t, ['--allow-origin', 'http://localhost:3000'])
    const allowed = { Origin: 'http://localhost:3000' }
    const client = await expectAccepted(t, server, 'queryToken', server.wsUrl, allowed, 'allowed origin with token')
    await expectInitialize(t, client, 'allowed origin')
    await client.close()
    const missing = 'missing generated websocket query token'
    await expectRefused(t, server, 'queryToken', server.wsBase, allowed, { status: 401, body: missing, reason: missing }, 'allowed origin without token')
    await expectRefused(t, server, 'queryToken', server.wsUrl, { Origin: 'http://localhost:3001' }, { status: 403, body: '' }, 'other port')
    await expectRefused(t, server, 'queryToken', server.wsUrl, { Origin: 'https://localhost:3000' }, { status: 403, body: '' }, 'other scheme')
    const h = await httpGet(`${server.httpBase}/healthz`, allowed)
    t.equal(h.status, 200, '/healthz with the allowed origin')
    const h2 = await httpGet(`${server.httpBase}/healthz`, { Origin: 'http://localhost:3001' })
    t.strictSame({ status: h2.status, body: h2.body }, { status: 403, body: '' }, '/healthz with another origin')
  })
})

t.test('browser defences: Host on a loopback listener', async (t) => {
  const server = await start(t)
  const port = server.port

  for (const host of [`evil.example:${port}`, `127.0.0.1.nip.io:${port}`, `localhost.evil.com:${port}`]) {
    await expectRefused(t, server, 'queryToken', server.wsUrl, { Host: host }, { status: 403, body: '' }, `Host ${host}`)
    for (const path of ['/healthz', '/readyz']) {
      const r = await rawGet(port, path, { Host: host })
      t.strictSame({ status: r.status, body: r.body }, { status: 403, body: '' }, `GET ${path} with Host ${host}`)
    }
  }

  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
    const client = await expectAccepted(t, server, 'queryToken', server.wsUrl, { Host: host }, `Host ${host}`)
    await client.close()
    const r = await rawGet(port, '/healthz', { Host: host })
    t.equal(r.status, 200, `GET /healthz with Host ${host}`)
    t.match(r.contentType, /^application\/json/)
    t.strictSame(JSON.parse(r.body), { status: 'ok', auth: { mode: 'queryToken', enforced: true }, engine: { state: 'off', version: null } })
  }
})

// =============================================================================================
t.test('degraded mode (--no-token-check)', async (t) => {
  const server = await start(t, ['--no-token-check'])
  const token = server.token!

  t.test('health shows enforcement off', async (t) => {
    await expectHealth(t, server, 'queryToken', false)
  })

  const cases: [string, string, string][] = [
    ['no token', server.wsBase, 'missing generated websocket query token'],
    ['wrong token', `${server.wsBase}?token=nope`, 'invalid generated websocket query token'],
    ['duplicate token', `${server.wsBase}?token=${token}&token=${token}`, 'multiple websocket query tokens'],
  ]
  for (const [what, url, reason] of cases) {
    t.test(`${what}: admitted, degraded, with a WARN`, async (t) => {
      const before = server.logs.authEvents().length
      const client = await open(t, url)
      const line = oneAuthEvent(t, server, before, what)
      t.match(
        line,
        { level: 40, event: 'ws.auth', outcome: 'degraded', mode: 'queryToken', reason, remote: '127.0.0.1', connectionId: /\S/ },
        'WARN ws.auth line, outcome degraded, with the reason',
      )
      t.same([...((line.scopes as string[] | undefined) ?? [])].sort(), ['account:read', 'session'], 'degraded scopes logged')
      await expectInitialize(t, client, what)
      await client.close()
    })
  }

  t.test('a valid token is still plainly accepted', async (t) => {
    const client = await expectAccepted(t, server, 'queryToken', server.wsUrl, {}, 'valid token')
    await client.close()
  })

  t.test('the browser defence still holds', async (t) => {
    await expectRefused(t, server, 'queryToken', server.wsBase, { Origin: 'http://localhost:3000' }, { status: 403, body: '' }, 'Origin')
    await expectRefused(t, server, 'queryToken', server.wsBase, { Host: `evil.example:${server.port}` }, { status: 403, body: '' }, 'Host')
  })
})
