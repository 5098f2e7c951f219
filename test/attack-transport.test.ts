/**
 * Regressions for what an outside attack on the transport found beyond the first list: each
 * over real sockets against a real server, one shared server per auth mode.
 * - A request that is no WebSocket handshake this server completes (HTTP/1.0, HEAD, an
 *   `Upgrade` naming more than websocket, draft version 8, a bad key, a body) is refused with
 *   a 400 before it is admitted: never a 101, never an `accepted` line.
 * - A token a client put in the path (it dropped the `?`) never reaches the log.
 * - A JWT whose header or claims carry a byte-order mark is refused.
 * - A `Host` port beyond 65535 is not a loopback name.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { HANDSHAKE_HEADERS, rawExchange } from './helpers/raw-http.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test

const dir = tempDir('attack')
const capability = canary('capability')
const secret = canary('hs256-shared-secret-attack')
writeFileSync(join(dir, 'token'), capability, { mode: 0o600 })
writeFileSync(join(dir, 'secret'), secret, { mode: 0o600 })

const servers: TestServer[] = []
t.teardown(() => Promise.all(servers.map((s) => s.close())).then(() => undefined))
async function start(argv: string[]): Promise<TestServer> {
  const server = await startServer({ argv })
  servers.push(server)
  return server
}

interface Mode {
  readonly name: string
  readonly server: TestServer
  /** The target and extra header lines of an upgrade whose credential is good. */
  readonly credential: { target: string; headers: string[] }
  readonly outcome: 'accepted' | 'degraded'
}

/** The four servers, started once for the whole file. */
const modes = once(async (): Promise<Mode[]> => {
  const query = await start([])
  const degraded = await start(['--no-token-check'])
  const cap = await start(['--ws-auth', 'capability-token', '--ws-token-file', join(dir, 'token')])
  const jwt = await start(['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', join(dir, 'secret')])
  const signed = await signJwt(secret, { exp: nowSeconds() + 600 })
  return [
    { name: 'query token', server: query, credential: { target: `/?token=${query.token}`, headers: [] }, outcome: 'accepted' },
    { name: '--no-token-check', server: degraded, credential: { target: `/?token=${canary('wrong')}`, headers: [] }, outcome: 'degraded' },
    { name: 'capability token', server: cap, credential: { target: '/', headers: [`Authorization: Bearer ${capability}`] }, outcome: 'accepted' },
    { name: 'HS256 JWT', server: jwt, credential: { target: '/', headers: [`Authorization: Bearer ${signed}`] }, outcome: 'accepted' },
  ]
})

function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | null = null
  return () => (made ??= make())
}

async function serverFor(name: 'query token' | 'capability token' | 'HS256 JWT'): Promise<TestServer> {
  return (await modes()).find((m) => m.name === name)!.server
}

const host = (server: TestServer): string => `Host: 127.0.0.1:${server.port}`
const without = (name: string): string[] => HANDSHAKE_HEADERS.filter((h) => !h.toLowerCase().startsWith(name))

/** [what, request line (TARGET is replaced), handshake header lines, body, reason]. */
const NOT_A_HANDSHAKE: readonly [string, string, readonly string[], string, string][] = [
  ['an HTTP/1.0 upgrade', 'GET TARGET HTTP/1.0', HANDSHAKE_HEADERS, '', 'websocket upgrade needs HTTP/1.1'],
  ['a HEAD upgrade', 'HEAD TARGET HTTP/1.1', HANDSHAKE_HEADERS, '', 'websocket upgrade must be a GET'],
  ['Upgrade: websocket, h2c', 'GET TARGET HTTP/1.1', [...without('upgrade:'), 'Upgrade: websocket, h2c'], '', 'upgrade header is not websocket'],
  ['Upgrade: h2c', 'GET TARGET HTTP/1.1', [...without('upgrade:'), 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA'], '', 'upgrade header is not websocket'],
  ['two Upgrade headers', 'GET TARGET HTTP/1.1', [...HANDSHAKE_HEADERS, 'Upgrade: websocket'], '', 'upgrade header is not websocket'],
  ['draft version 8 with Sec-WebSocket-Origin', 'GET TARGET HTTP/1.1', [...without('sec-websocket-version'), 'Sec-WebSocket-Version: 8', 'Sec-WebSocket-Origin: http://evil.example'], '', 'unsupported websocket version'],
  ['no Sec-WebSocket-Version', 'GET TARGET HTTP/1.1', without('sec-websocket-version'), '', 'unsupported websocket version'],
  ['no Sec-WebSocket-Key', 'GET TARGET HTTP/1.1', without('sec-websocket-key'), '', 'invalid websocket key'],
  ['a short Sec-WebSocket-Key', 'GET TARGET HTTP/1.1', [...without('sec-websocket-key'), 'Sec-WebSocket-Key: c2hvcnQ='], '', 'invalid websocket key'],
  ['two Sec-WebSocket-Key headers', 'GET TARGET HTTP/1.1', [...HANDSHAKE_HEADERS, 'Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=='], '', 'invalid websocket key'],
  ['a Content-Length body', 'GET TARGET HTTP/1.1', [...HANDSHAKE_HEADERS, 'Content-Length: 6'], '\x81\x80abcd', 'websocket upgrade with a body'],
  ['a chunked body', 'GET TARGET HTTP/1.1', [...HANDSHAKE_HEADERS, 'Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\n\r\n', 'websocket upgrade with a body'],
]

t.test('a request that is no websocket handshake is refused before it is admitted, in every mode', async (t) => {
  for (const mode of await modes()) {
    await t.test(mode.name, async (t: Test) => {
      const { server, credential } = mode
      const mark = server.logs.lines.length
      for (const [what, requestLine, handshake, body, reason] of NOT_A_HANDSHAKE) {
        const r = await rawExchange(server.port, [requestLine.replace('TARGET', credential.target), host(server), ...credential.headers, ...handshake], body)
        t.equal(r.status, 400, `${what}: 400`)
        if (!requestLine.startsWith('HEAD')) t.equal(r.body, reason, `${what}: the reason, quoting nothing`)
        if (reason === 'unsupported websocket version') t.equal(r.headers['sec-websocket-version'], '13', `${what}: names the version spoken`)
      }
      const auth = server.logs.lines.slice(mark).filter((l) => l.event === 'ws.auth')
      t.same(
        auth.map((l) => [l.outcome, l.reason]),
        NOT_A_HANDSHAKE.map(([, , , , reason]) => ['rejected', reason]),
        'one rejected ws.auth line each, naming why; none accepted',
      )
      t.equal(server.app.websocketServer.clients.size, 0, 'no socket was opened')

      const ok = await rawExchange(server.port, [`GET ${credential.target} HTTP/1.1`, host(server), ...credential.headers, ...HANDSHAKE_HEADERS])
      t.equal(ok.status, 101, 'the same credential with a well-formed handshake still gets its 101')
      t.equal(server.logs.authEvents().at(-1)?.outcome, mode.outcome)
      t.same(leakedCanaries(server.logs.text()), [], 'no credential in the log')
    })
  }
})

t.test('a bad credential keeps its 401 whatever else the handshake gets wrong', async (t) => {
  const cap = await serverFor('capability token')
  for (const [what, requestLine, handshake, body] of NOT_A_HANDSHAKE) {
    const r = await rawExchange(cap.port, [requestLine.replace('TARGET', '/'), host(cap), `Authorization: Bearer ${canary('wrong')}`, ...handshake], body)
    t.equal(r.status, 401, `${what} with a wrong bearer: 401`)
  }
})

t.test('a token put in the path (the ? dropped) never reaches the log', async (t) => {
  const server = await serverFor('query token')
  const mark = server.logs.lines.length
  const token = server.token!
  const jwt = await signJwt(canary('path-secret'), { exp: nowSeconds() + 60 })
  const targets = [`/${token}`, `/token=${token}`, `/ws/${token}/x`, `/${jwt}`, `/%3F${token}`]
  for (const target of targets) {
    const upgrade = await rawExchange(server.port, [`GET ${target} HTTP/1.1`, host(server), ...HANDSHAKE_HEADERS])
    t.equal(upgrade.status, 401, `upgrade to ${target.replace(token, 'T').slice(0, 30)}: 401`)
    const plain = await rawExchange(server.port, [`GET ${target} HTTP/1.1`, host(server), 'Connection: close'])
    t.equal(plain.status, 400, `plain GET ${target.replace(token, 'T').slice(0, 30)}: 400`)
  }
  const urls = server.logs.lines.slice(mark).map((l) => (l.req as { url?: unknown } | undefined)?.url).filter((u) => typeof u === 'string')
  t.ok(urls.includes('/ws/[redacted]/x'), 'the request lines were written, short segments kept')
  t.same(leakedCanaries(server.logs.text()), [], 'no token in any log line')
})

t.test('a JWT whose header or claims start with a byte-order mark is refused', async (t) => {
  const server = await serverFor('HS256 JWT')
  const { createHmac } = await import('node:crypto')
  const part = (text: string): string => Buffer.from(text).toString('base64url')
  const sign = (header: string, claims: string): string => {
    const input = `${part(header)}.${part(claims)}`
    return registerCanary(`${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`)
  }
  const claims = JSON.stringify({ exp: nowSeconds() + 600 })
  const header = JSON.stringify({ alg: 'HS256', typ: 'JWT' })
  for (const [what, jwt, status] of [
    ['the same token without a mark', sign(header, claims), 101],
    ['a BOM before the header', sign(`\ufeff${header}`, claims), 401],
    ['a BOM before the claims', sign(header, `\ufeff${claims}`), 401],
  ] as const) {
    const r = await rawExchange(server.port, ['GET / HTTP/1.1', host(server), `Authorization: Bearer ${jwt}`, ...HANDSHAKE_HEADERS])
    t.equal(r.status, status, `${what}: ${status}`)
    if (status === 401) t.equal(r.body, 'invalid websocket jwt')
  }
})

t.test('a Host port beyond 65535 is not a loopback name', async (t) => {
  const server = await serverFor('query token')
  for (const [port, status] of [
    ['65535', 101],
    ['65536', 403],
    ['99999', 403],
  ] as const) {
    const r = await rawExchange(server.port, [`GET /?token=${server.token} HTTP/1.1`, `Host: localhost:${port}`, ...HANDSHAKE_HEADERS])
    t.equal(r.status, status, `Host: localhost:${port}: ${status}`)
  }
})

t.test('a request with more header fields than are kept is refused, not read in part', async (t) => {
  // Node used to keep about the first 1000 fields and drop the rest silently: an Origin, a
  // second Host or a second Authorization after the filler passed every check unseen.
  const query = await serverFor('query token')
  const cap = await serverFor('capability token')
  const mark = query.logs.lines.length
  const filler = (n: number): string[] => Array.from({ length: n }, (_, i) => `x-filler-${i % 10}: 1`)
  const upgrade = [`GET /?token=${query.token} HTTP/1.1`, host(query), ...HANDSHAKE_HEADERS]
  for (const [what, server, lines, status] of [
    ['an Origin after 1000 fields', query, [...upgrade, ...filler(1000), 'Origin: http://evil.example'], 431],
    ['a second Host after 1000 fields', query, [...upgrade, ...filler(1000), 'Host: evil.example'], 431],
    ['a second Authorization after 1000 fields', cap, ['GET / HTTP/1.1', host(cap), `Authorization: Bearer ${capability}`, ...HANDSHAKE_HEADERS, ...filler(1000), `Authorization: Bearer ${canary('second')}`], 431],
    ['1000 fields and nothing else', query, [...upgrade, ...filler(1000)], 431],
    ['a probe with 1000 fields', query, ['GET /healthz HTTP/1.1', host(query), ...filler(1000)], 431],
    ['an Origin after 150 fields', query, [...upgrade, ...filler(150), 'Origin: http://evil.example'], 403],
    ['150 fields', query, [...upgrade, ...filler(150)], 101],
  ] as const) {
    const r = await rawExchange(server.port, lines)
    t.equal(r.status, status, `${what}: ${status}`)
    if (status === 431) t.equal(r.body, 'too many header fields')
  }
  const reasons = query.logs.lines.slice(mark).filter((l) => l.event === 'ws.auth' && l.outcome === 'rejected').map((l) => l.reason)
  t.equal(reasons.filter((r) => r === 'too many header fields').length, 3, 'each refused upgrade has its ws.auth line')
})
