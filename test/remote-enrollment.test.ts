/**
 * Remote control enrollment and server tokens, over real sockets against a fake backend on
 * 127.0.0.1: the URL allow-list, the enroll and refresh requests (paths, bodies, headers), response
 * checks, HTTP failures and their redacted previews, and the memory-only token cache on a fake
 * clock (required vs proactive, Retry-After, the 24–36 s deferral, failing fast during a deferral,
 * clearIfSame).
 *
 * Every token the backend hands out and the ChatGPT access token are canaries; every error
 * message is recorded, and the file fails if any canary appears in one.
 */
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { remoteControlUrls } from '../src/remote-control/base-url.js'
import {
  EnrollmentClient,
  hostPlatform,
  isTransientRemoteControlError,
  parseRfc3339,
  RemoteControlNetworkError,
  RemoteControlResponseError,
  type RefreshRequest,
} from '../src/remote-control/enrollment-client.js'
import { redactedBodyPreview, describeHttpFailure, PREVIEW_MAX_BYTES, redactJson } from '../src/remote-control/preview.js'
import {
  DEFERRAL_MAX_SECONDS,
  DEFERRAL_MIN_SECONDS,
  parseRetryAfter,
  refreshDeferral,
  RemoteControlRefreshDeferredError,
  RemoteControlTokenCacheClearedError,
  ServerTokenCache,
} from '../src/remote-control/token-cache.js'
import { RemoteControlHttpError, type ChatgptAuth } from '../src/remote-control/types.js'
import { canary, leakedCanaries, record } from './helpers/canary.js'
import { ManualClock } from './helpers/manual-clock.js'
import { gate } from './helpers/wait.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]

const ENROLL_PATH = '/backend-api/wham/remote/control/server/enroll'
const REFRESH_PATH = '/backend-api/wham/remote/control/server/refresh'
const SERVER_ID = 'srv_e_test'
const ENVIRONMENT_ID = 'env_test'
const INSTALLATION_ID = '4f8e0d1c-2b3a-4c5d-8e9f-0a1b2c3d4e5f'
const ACCOUNT_ID = 'acct-remote-test'
const HOUR_MS = 3_600_000
// A whole second, so HTTP dates (second precision) line up with the fake clock exactly.
const T0 = Date.UTC(2030, 0, 1, 12, 0, 0)

// ---------------------------------------------------------------------------------------------
// The fake backend.

interface SeenRequest {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: unknown
}

interface Answer {
  readonly status: number
  readonly headers?: Record<string, string>
  /** An object is sent as JSON; a string or Buffer as is (text/plain). */
  readonly body?: unknown
  /** Answer only once this settles (for timeouts: the client gives up first). */
  readonly hold?: Promise<void>
}

type Script = (request: SeenRequest) => Answer

class FakeBackend {
  readonly requests: SeenRequest[] = []
  /** Answers for the next requests, in order; then `fallback`. */
  readonly queue: Script[] = []
  fallback: Script = () => ({ status: 500, body: { detail: 'no answer scripted' } })

  private constructor(
    private readonly app: FastifyInstance,
    readonly port: number,
  ) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}/backend-api`
  }

  static async start(): Promise<FakeBackend> {
    // forceCloseConnections: a test that times out leaves a request hanging; close anyway.
    const app = Fastify({ logger: false, forceCloseConnections: true })
    let self: FakeBackend | null = null
    const handle = async (path: string, headers: IncomingHttpHeaders, body: unknown) => {
      const backend = self as FakeBackend
      const seen = { path, headers, body }
      backend.requests.push(seen)
      return (backend.queue.shift() ?? backend.fallback)(seen)
    }
    for (const path of [ENROLL_PATH, REFRESH_PATH, '/backend-api/elsewhere']) {
      app.post(path, async (request, reply) => {
        const answer = await handle(path, request.headers, request.body)
        if (answer.hold !== undefined) await answer.hold
        reply.code(answer.status).headers(answer.headers ?? {})
        if (typeof answer.body === 'string' || Buffer.isBuffer(answer.body)) {
          reply.type(answer.headers?.['content-type'] ?? 'text/plain; charset=utf-8')
          return reply.send(answer.body)
        }
        if (answer.body === undefined) return reply.send('')
        reply.type('application/json')
        return reply.send(JSON.stringify(answer.body))
      })
    }
    await app.listen({ host: '127.0.0.1', port: 0 })
    self = new FakeBackend(app, (app.server.address() as AddressInfo).port)
    return self
  }

  /** How many requests reached `path`. */
  hits(path: string = REFRESH_PATH): number {
    return this.requests.filter((r) => r.path === path).length
  }

  close(): Promise<void> {
    return this.app.close()
  }
}

const backend = await FakeBackend.start()
t.teardown(() => backend.close())
t.beforeEach(() => {
  backend.requests.length = 0
  backend.queue.length = 0
  backend.fallback = () => ({ status: 500, body: { detail: 'no answer scripted' } })
})

/** A grant body the way the backend sends it, with a fresh canary token. */
function grantBody(expiresAt: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    server_id: SERVER_ID,
    environment_id: ENVIRONMENT_ID,
    remote_control_token: canary('rct'),
    expires_at: new Date(expiresAt).toISOString(),
    ...over,
  }
}

const auth: ChatgptAuth = { accessToken: canary('chatgpt-access'), accountId: ACCOUNT_ID }
const refreshRequest: RefreshRequest = { serverId: SERVER_ID, environmentId: ENVIRONMENT_ID, installationId: INSTALLATION_ID }
const enrollRequest = { name: 'test-host', os: 'linux', arch: 'x86_64', appServerVersion: '0.1.0', installationId: INSTALLATION_ID }

function client(timeoutMs?: number): EnrollmentClient {
  return new EnrollmentClient({ baseUrl: backend.baseUrl, ...(timeoutMs === undefined ? {} : { timeoutMs }) })
}

/** The error `p` rejects with, its message recorded and checked for canaries. */
async function failure(t: TestT, p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof Error)) throw err
    record(err.message)
    t.same(leakedCanaries(err.message), [], 'no secret in the error message')
    return err
  }
  throw new Error('expected a failure')
}


// ---------------------------------------------------------------------------------------------
// URLs.

t.test('URL allow-list and derived URLs', async (t) => {
  t.same(remoteControlUrls('https://chatgpt.com/backend-api'), {
    baseUrl: 'https://chatgpt.com/backend-api/',
    enrollUrl: 'https://chatgpt.com/backend-api/wham/remote/control/server/enroll',
    refreshUrl: 'https://chatgpt.com/backend-api/wham/remote/control/server/refresh',
    websocketUrl: 'wss://chatgpt.com/backend-api/wham/remote/control/server',
  })
  t.equal(remoteControlUrls('https://chatgpt.com/backend-api/').enrollUrl, 'https://chatgpt.com/backend-api/wham/remote/control/server/enroll', 'trailing slash')
  t.equal(remoteControlUrls('https://sub.chatgpt.com/backend-api').websocketUrl, 'wss://sub.chatgpt.com/backend-api/wham/remote/control/server')
  t.equal(remoteControlUrls('https://chatgpt-staging.com/backend-api').refreshUrl, 'https://chatgpt-staging.com/backend-api/wham/remote/control/server/refresh')
  t.equal(remoteControlUrls('https://api.chatgpt-staging.com/backend-api').websocketUrl, 'wss://api.chatgpt-staging.com/backend-api/wham/remote/control/server')
  t.same(remoteControlUrls('http://localhost:8080/backend-api'), {
    baseUrl: 'http://localhost:8080/backend-api/',
    enrollUrl: 'http://localhost:8080/backend-api/wham/remote/control/server/enroll',
    refreshUrl: 'http://localhost:8080/backend-api/wham/remote/control/server/refresh',
    websocketUrl: 'ws://localhost:8080/backend-api/wham/remote/control/server',
  })
  t.equal(remoteControlUrls('https://localhost:8443/backend-api').websocketUrl, 'wss://localhost:8443/backend-api/wham/remote/control/server')
  t.equal(remoteControlUrls('http://127.0.0.1:9/x').websocketUrl, 'ws://127.0.0.1:9/x/wham/remote/control/server')
  t.equal(remoteControlUrls('http://127.1.2.3/x').enrollUrl, 'http://127.1.2.3/x/wham/remote/control/server/enroll')
  t.equal(remoteControlUrls('http://[::1]:9/x').websocketUrl, 'ws://[::1]:9/x/wham/remote/control/server')
  t.equal(remoteControlUrls('https://chatgpt.com').enrollUrl, 'https://chatgpt.com/wham/remote/control/server/enroll', 'no path: joined at the root, as codex')

  for (const bad of [
    'http://chatgpt.com/backend-api',
    'http://sub.chatgpt.com/backend-api',
    'https://evilchatgpt.com/backend-api',
    'https://chatgpt.com.evil.io/backend-api',
    'https://chatgpt-staging.com.evil.io/backend-api',
    'https://example.com/backend-api',
    'https://chat.openai.com/backend-api',
    'https://foo.localhost/backend-api',
    'http://10.0.0.1/backend-api',
    'http://[::ffff:127.0.0.1]/backend-api',
    'ws://localhost/backend-api',
    'ftp://chatgpt.com/backend-api',
    'https://a..chatgpt.com/backend-api',
    'https://chatgpt.com./backend-api',
  ]) {
    t.throws(() => remoteControlUrls(bad), { message: /^invalid remote control URL `.*`; expected HTTPS URL for chatgpt\.com or chatgpt-staging\.com, or HTTP\/HTTPS URL for localhost$/ }, bad)
    t.throws(() => new EnrollmentClient({ baseUrl: bad }), /^invalid remote control URL/, `${bad} (client)`)
  }
  t.throws(() => remoteControlUrls('not a url'), { message: 'invalid remote control URL `not a url`: not a valid URL' })

  const secret = canary('url-password')
  const err = t.throws(() => remoteControlUrls(`https://user:${secret}@chatgpt.com/backend-api`)) as unknown as Error
  t.match(err.message, /^invalid remote control URL `https:\/\/chatgpt\.com\/backend-api`: credentials/)
  record(err.message)
  t.same(leakedCanaries(err.message), [])
})

// ---------------------------------------------------------------------------------------------
// Enroll and refresh requests.

t.test('enroll: path, JSON body, headers, grant', async (t) => {
  const body = grantBody(T0 + HOUR_MS)
  backend.queue.push(() => ({ status: 200, body }))
  const grant = await client().enroll(auth, enrollRequest)
  t.same(grant, { serverId: SERVER_ID, environmentId: ENVIRONMENT_ID, remoteControlToken: body.remote_control_token, expiresAt: new Date(T0 + HOUR_MS) })
  t.equal(backend.requests.length, 1)
  const seen = backend.requests[0]!
  t.equal(seen.path, ENROLL_PATH)
  t.same(seen.body, { name: 'test-host', os: 'linux', arch: 'x86_64', app_server_version: '0.1.0', installation_id: INSTALLATION_ID })
  t.equal(seen.headers.authorization, `Bearer ${auth.accessToken}`)
  t.equal(seen.headers['chatgpt-account-id'], ACCOUNT_ID)
  t.equal(seen.headers['x-codex-installation-id'], INSTALLATION_ID)
  t.match(seen.headers['content-type'], /^application\/json/)
})

t.test('refresh: path, JSON body, headers, grant', async (t) => {
  const body = grantBody(T0 + HOUR_MS)
  backend.queue.push(() => ({ status: 200, body }))
  const grant = await client().refresh(auth, refreshRequest)
  t.equal(grant.remoteControlToken, body.remote_control_token)
  const seen = backend.requests[0]!
  t.equal(seen.path, REFRESH_PATH)
  t.same(seen.body, { server_id: SERVER_ID, installation_id: INSTALLATION_ID })
  t.equal(seen.headers.authorization, `Bearer ${auth.accessToken}`)
  t.equal(seen.headers['chatgpt-account-id'], ACCOUNT_ID)
  t.equal(seen.headers['x-codex-installation-id'], INSTALLATION_ID)
  t.match(seen.headers['content-type'], /^application\/json/)
})

t.test('refresh answered for another server or environment is an error', async (t) => {
  backend.queue.push(() => ({ status: 200, body: grantBody(T0 + HOUR_MS, { server_id: 'srv_other' }) }))
  let err = await failure(t, client().refresh(auth, refreshRequest))
  t.type(err, RemoteControlResponseError)
  t.match(err.message, /mismatched enrollment: expected server_id="srv_e_test", environment_id="env_test"; got server_id="srv_other"/)
  backend.queue.push(() => ({ status: 200, body: grantBody(T0 + HOUR_MS, { environment_id: 'env_other' }) }))
  err = await failure(t, client().refresh(auth, refreshRequest))
  t.match(err.message, /got server_id="srv_e_test", environment_id="env_other"/)
  t.notOk(isTransientRemoteControlError(err))
})

t.test('a 2xx answer that is not a grant', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['no expires_at', { server_id: SERVER_ID, environment_id: ENVIRONMENT_ID, remote_control_token: canary('rct') }, /missing expires_at/],
    ['no token', { server_id: SERVER_ID, environment_id: ENVIRONMENT_ID, expires_at: new Date(T0).toISOString() }, /missing remote_control_token/],
    ['no ids', { remote_control_token: canary('rct'), expires_at: new Date(T0).toISOString() }, /missing server_id, missing environment_id/],
    ['bad expiry', grantBody(T0, { expires_at: 'tomorrow' }), /invalid expires_at \(expected an RFC 3339 timestamp\)/],
    ['impossible date', grantBody(T0, { expires_at: '2030-02-30T00:00:00Z' }), /invalid expires_at/],
    ['numeric token', grantBody(T0, { remote_control_token: 12345678 }), /invalid remote_control_token/],
    ['token with a newline', grantBody(T0, { remote_control_token: `${canary('rct')}\nx` }), /remote_control_token \(not a valid HTTP header value\)/],
    ['array', [grantBody(T0)], /is not a JSON object/],
    ['not JSON', `remote_control_token=${canary('rct')}`, /is not a JSON object/],
    ['empty', '', /is not a JSON object/],
  ]
  for (const [name, body, expected] of cases) {
    backend.queue.push(() => ({ status: 200, body, headers: { 'x-request-id': 'req-ok' } }))
    const err = await failure(t, client().enroll(auth, enrollRequest))
    t.type(err, RemoteControlResponseError, name)
    t.match(err.message, expected, name)
    t.match(err.message, /^remote control server enrollment response from `http:\/\/127\.0\.0\.1:\d+\/backend-api\/wham\/remote\/control\/server\/enroll` \(HTTP 200, request-id: req-ok, cf-ray: <none>\)/, name)
  }
})

t.test('RFC 3339 expiry parsing', async (t) => {
  t.equal(parseRfc3339('2030-01-01T12:00:00Z')?.getTime(), T0)
  t.equal(parseRfc3339('2030-01-01t12:00:00z')?.getTime(), T0)
  t.equal(parseRfc3339('2030-01-01T14:30:00+02:30')?.getTime(), T0)
  t.equal(parseRfc3339('2030-01-01T12:00:00.123456789Z')?.getTime(), T0 + 123)
  for (const bad of ['2030-01-01', '2030-01-01 12:00:00Z', '2030-01-01T12:00:00', '2030-13-01T00:00:00Z', '2030-02-29T00:00:00Z', 'Tue, 01 Jan 2030 12:00:00 GMT']) {
    t.equal(parseRfc3339(bad), null, bad)
  }
})

t.test('the host platform is reported as codex names it', async (t) => {
  const { os, arch } = hostPlatform()
  t.notOk(['darwin', 'win32'].includes(os))
  t.notOk(['x64', 'arm64'].includes(arch))
  t.ok(os.length > 0 && arch.length > 0)
})

// ---------------------------------------------------------------------------------------------
// HTTP failures and previews.

t.test('401/403/404/429/500 → RemoteControlHttpError with status, ids and redacted preview', async (t) => {
  for (const status of [401, 403, 404, 429, 500]) {
    const token = canary('rct')
    const code = canary('pair')
    const manual = canary('manual')
    const body = { detail: `failure ${status}`, remote_control_token: token, pairing_code: code, manual_pairing_code: manual }
    backend.queue.push(() => ({ status, body, headers: { 'x-request-id': `req-${status}`, 'cf-ray': `ray-${status}`, 'retry-after': '7' } }))
    const err = await failure(t, client().refresh(auth, refreshRequest))
    t.type(err, RemoteControlHttpError, `${status}`)
    const http = err as RemoteControlHttpError
    t.equal(http.status, status)
    t.equal(http.retryAfter, '7')
    t.same(http.body, { ...body, remote_control_token: '<redacted>', pairing_code: '<redacted>', manual_pairing_code: '<redacted>' }, 'the parsed body is kept, redacted')
    t.same(leakedCanaries(JSON.stringify(http)), [], 'nothing secret in the error as a logger would serialise it')
    const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 500: 'Internal Server Error' }[status]
    t.equal(
      err.message,
      `remote control server refresh failed at \`${backend.baseUrl}/wham/remote/control/server/refresh\`: HTTP ${status} ${reason}, request-id: req-${status}, cf-ray: ray-${status}, body: {"detail":"failure ${status}","remote_control_token":"<redacted>","pairing_code":"<redacted>","manual_pairing_code":"<redacted>"}`,
    )
    t.equal(isTransientRemoteControlError(err), status === 429 || status === 500, `${status} transient?`)
  }
})

t.test('404 with the backend detail is readable by the status table', async (t) => {
  backend.queue.push(() => ({ status: 404, body: { detail: 'Remote app server not found' } }))
  const err = (await failure(t, client().refresh(auth, refreshRequest))) as RemoteControlHttpError
  t.same(err.body, { detail: 'Remote app server not found' })
  t.equal(err.retryAfter, null)
  t.match(err.message, /HTTP 404 Not Found, request-id: <none>, cf-ray: <none>, body: \{"detail":"Remote app server not found"\}$/)
})

t.test('x-oai-request-id when there is no x-request-id', async (t) => {
  backend.queue.push(() => ({ status: 502, body: 'bad gateway', headers: { 'x-oai-request-id': 'oai-1' } }))
  const err = (await failure(t, client().enroll(auth, enrollRequest))) as RemoteControlHttpError
  t.match(err.message, /^remote control server enrollment failed at `.*\/enroll`: HTTP 502 Bad Gateway, request-id: oai-1, cf-ray: <none>, body: bad gateway$/)
  t.equal(err.body, null, 'not JSON')
  t.ok(isTransientRemoteControlError(err))
})

t.test('previews over the wire: 10 KB cut, empty, multibyte, lossy', async (t) => {
  const preview = async (body: string | Buffer): Promise<string> => {
    backend.queue.push(() => ({ status: 500, body, headers: { 'content-type': 'application/octet-stream' } }))
    const err = await failure(t, client().refresh(auth, refreshRequest))
    return err.message.slice(err.message.indexOf(', body: ') + ', body: '.length)
  }
  t.equal(await preview('x'.repeat(10 * 1024)), `${'x'.repeat(4096)}...`)
  t.equal(await preview(''), '<empty>')
  t.equal(await preview(' \n\t '), '<empty>')
  t.equal(await preview('  padded  \n'), 'padded')
  // '€' is 3 bytes: 4096 falls inside the 1366th, so the cut backs up to 1365 whole ones.
  const euros = await preview('€'.repeat(2000))
  t.equal(euros, `${'€'.repeat(1365)}...`)
  t.notOk(euros.includes('\uFFFD'))
  // 'a' + 4-byte emoji: 4096 = 1 + 4 × 1023 + 3, so 1023 emoji fit.
  t.equal(await preview(`a${'😀'.repeat(2000)}`), `a${'😀'.repeat(1023)}...`)
  t.equal(await preview(Buffer.from([0x66, 0xff, 0x6f])), 'f\uFFFDo')
})

t.test('redactedBodyPreview and describeHttpFailure', async (t) => {
  const token = canary('rct')
  t.equal(redactedBodyPreview(Buffer.alloc(0)), '<empty>')
  t.equal(redactedBodyPreview(`{"remote_control_token":"${token}","a":1}`), '{"remote_control_token":"<redacted>","a":1}')
  t.equal(redactedBodyPreview(`{"remote_control_token":{"nested":"${token}"}}`), '{"remote_control_token":"<redacted>"}', 'any value type at the top level')
  t.equal(redactedBodyPreview('{"remote_control_token": 5}'), '{"remote_control_token":"<redacted>"}')
  t.equal(redactedBodyPreview('{"a":1}'), '{"a":1}', 'nothing to redact: the text as sent')
  t.equal(redactedBodyPreview('{ "a": 1 }'), '{ "a": 1 }')
  t.equal(redactedBodyPreview('[1,2]'), '[1,2]')
  // Beyond codex: the fields are scrubbed wherever they appear.
  t.equal(redactedBodyPreview(`{"error":{"pairing_code":"${token}"}}`), '{"error":{"pairing_code":"<redacted>"}}')
  t.equal(redactedBodyPreview(`[{"manual_pairing_code": "${token}"}]`), '[{"manual_pairing_code": "<redacted>"}]')
  t.equal(redactedBodyPreview(`{"remote_control_token":"${token}`), '{"remote_control_token":"<redacted>"', 'JSON cut short')
  // A redacted body longer than the limit is cut after redaction.
  const long = redactedBodyPreview(JSON.stringify({ remote_control_token: token, pad: 'p'.repeat(9000) }))
  t.equal(Buffer.byteLength(long), PREVIEW_MAX_BYTES + 3)
  t.ok(long.startsWith('{"remote_control_token":"<redacted>","pad":"ppp'))
  for (const p of [long]) t.same(leakedCanaries(p), [])

  t.same(redactJson({ a: [{ pairing_code: token }], remote_control_token: token, b: 'x' }), { a: [{ pairing_code: '<redacted>' }], remote_control_token: '<redacted>', b: 'x' })
  t.equal(redactJson(null), null)

  t.equal(
    describeHttpFailure(503, new Headers({ 'x-request-id': 'r1', 'x-oai-request-id': 'r2', 'cf-ray': 'c1' }), 'down'),
    'HTTP 503 Service Unavailable, request-id: r1, cf-ray: c1, body: down',
  )
  t.equal(describeHttpFailure(404, { 'X-OAI-Request-Id': 'r2', 'cf-ray': ['c1', 'c2'] }, ''), 'HTTP 404 Not Found, request-id: r2, cf-ray: c1, body: <empty>')
  t.equal(describeHttpFailure(499, {}, 'x'), 'HTTP 499, request-id: <none>, cf-ray: <none>, body: x')
  t.equal(describeHttpFailure(500, { 'x-request-id': 'a\nb' }, 'x'), 'HTTP 500 Internal Server Error, request-id: a?b, cf-ray: <none>, body: x')
})

t.test('redirects are not followed (the ChatGPT token stays put)', async (t) => {
  backend.queue.push(() => ({ status: 302, headers: { location: `${backend.baseUrl}/elsewhere` } }))
  const err = (await failure(t, client().enroll(auth, enrollRequest))) as RemoteControlHttpError
  t.equal(err.status, 302)
  t.equal(backend.hits('/backend-api/elsewhere'), 0)
})

t.test('network failures are transient and say nothing secret', async (t) => {
  // The answer is held until the client has timed out, then released: no timer outlives the test.
  const held = gate()
  backend.queue.push(() => ({ status: 200, body: grantBody(T0), hold: held.opened }))
  let err = await failure(t, client(200).refresh(auth, refreshRequest))
  held.open()
  t.type(err, RemoteControlNetworkError)
  t.equal((err as RemoteControlNetworkError).timedOut, true)
  t.match(err.message, /^failed to refresh remote control server at `.*\/refresh`: timed out after 200 ms$/)
  t.ok(isTransientRemoteControlError(err))

  const closed = await FakeBackend.start()
  const port = closed.port
  await closed.close()
  err = await failure(t, new EnrollmentClient({ baseUrl: `http://127.0.0.1:${port}/backend-api` }).enroll(auth, enrollRequest))
  t.type(err, RemoteControlNetworkError)
  t.equal((err as RemoteControlNetworkError).timedOut, false)
  t.match(err.message, /^failed to enroll remote control server at `.*`: network error \(ECONNREFUSED\)$/)
  t.ok(isTransientRemoteControlError(err))
})

t.test('credentials that are not header values are refused before sending, unquoted', async (t) => {
  const bad = `${canary('chatgpt-access')}\r\nx-evil: 1`
  const err = await failure(t, client().enroll({ accessToken: bad, accountId: ACCOUNT_ID }, enrollRequest))
  t.equal(err.message, 'remote control server enrollment not sent: the ChatGPT access token is not a valid HTTP header value')
  t.equal(backend.requests.length, 0)
})

// ---------------------------------------------------------------------------------------------
// Retry-After and the deferral.

t.test('Retry-After parsing and the fallback deferral', async (t) => {
  t.equal(parseRetryAfter('120', T0), T0 + 120_000)
  t.equal(parseRetryAfter(' 5 ', T0), T0 + 5_000)
  t.equal(parseRetryAfter('2031', T0), T0 + 2_031_000, 'digits are always delay-seconds')
  t.equal(parseRetryAfter(new Date(T0 + 90_000).toUTCString(), T0), T0 + 90_000)
  t.equal(parseRetryAfter('Tuesday, 01-Jan-30 12:01:30 GMT', T0), T0 + 90_000, 'RFC 850 date')
  t.equal(parseRetryAfter('Tue Jan  1 12:01:30 2030', T0), T0 + 90_000, 'asctime date')
  for (const v of [null, '', '0', '-5', '1.5', 'soon', '2030-01-01T12:01:30Z', 'Jan 2031', 'Wed, 01 Jan 2031', new Date(T0 - 1000).toUTCString(), new Date(T0).toUTCString()]) {
    t.equal(parseRetryAfter(v, T0), null, String(v))
  }
  t.equal(refreshDeferral('30', T0, () => 0), T0 + 30_000)
  t.equal(refreshDeferral(null, T0, () => 0), T0 + DEFERRAL_MIN_SECONDS * 1000)
  t.equal(refreshDeferral(null, T0, () => 0.9999999), T0 + DEFERRAL_MAX_SECONDS * 1000)
  t.equal(refreshDeferral('garbage', T0, () => 0.5), T0 + 30_000)
  for (let i = 0; i < 200; i++) {
    const d = (refreshDeferral(null, T0) - T0) / 1000
    if (!(Number.isInteger(d) && d >= 24 && d <= 36)) t.fail(`deferral ${d} s`)
  }
})

// ---------------------------------------------------------------------------------------------
// The token cache.

interface CacheSetup {
  readonly clock: ManualClock
  readonly cache: ServerTokenCache
  readonly deferrals: Array<{ required: boolean; retryAt: number }>
}

/** A cache whose refresh is a real refresh against the fake backend. */
function cacheSetup(options: { random?: () => number; timeoutMs?: number } = {}): CacheSetup {
  const clock = new ManualClock({ wallMs: T0 })
  const c = client(options.timeoutMs)
  const deferrals: Array<{ required: boolean; retryAt: number }> = []
  const cache = new ServerTokenCache({
    clock,
    refresh: () => c.refresh(auth, refreshRequest),
    random: options.random ?? (() => 0),
    onDeferred: ({ required, retryAt, error }) => {
      record(error instanceof Error ? error.message : String(error))
      deferrals.push({ required, retryAt })
    },
  })
  return { clock, cache, deferrals }
}

/** The backend hands out a new grant expiring `ttlMs` after the fake clock's now. */
function grantsFor(clock: ManualClock, ttlMs = HOUR_MS): void {
  backend.fallback = () => ({ status: 200, body: grantBody(clock.wallMs() + ttlMs) })
}

t.test('cache: required when empty or expired, proactive within 300 s, otherwise cached', async (t) => {
  const { clock, cache } = cacheSetup()
  grantsFor(clock)
  t.equal(cache.requirement(), 'required')
  const first = await cache.get()
  t.equal(backend.hits(), 1)
  t.equal(first.expiresAt.getTime(), T0 + HOUR_MS)
  t.equal(cache.requirement(), 'not-needed')
  t.equal(await cache.get(), first, 'cached')
  t.equal(backend.hits(), 1)

  clock.advanceToWall(T0 + HOUR_MS - 300_001)
  t.equal(cache.requirement(), 'not-needed', 'just outside the window')
  t.equal(await cache.get(), first)
  t.equal(backend.hits(), 1)

  clock.advanceToWall(T0 + HOUR_MS - 300_000)
  t.equal(cache.requirement(), 'proactive', 'exactly 300 s before expiry')
  const second = await cache.get()
  t.equal(backend.hits(), 2)
  t.not(second.remoteControlToken, first.remoteControlToken)
  t.equal(cache.current, second)

  clock.advanceToWall(second.expiresAt.getTime())
  t.equal(cache.requirement(), 'required', 'expires_at <= now')
  const third = await cache.get()
  t.equal(backend.hits(), 3)
  t.not(third.remoteControlToken, second.remoteControlToken)
})

t.test('cache: a grant without a usable expiry is refreshed at once', async (t) => {
  const { cache } = cacheSetup()
  cache.set({ serverId: SERVER_ID, environmentId: ENVIRONMENT_ID, remoteControlToken: canary('rct'), expiresAt: new Date(Number.NaN) })
  t.equal(cache.requirement(), 'required')
})

t.test('cache: proactive failure keeps the token; Retry-After seconds defer the next try', async (t) => {
  const { clock, cache, deferrals } = cacheSetup()
  grantsFor(clock)
  const first = await cache.get()
  clock.advanceToWall(T0 + HOUR_MS - 200_000)
  backend.queue.push(() => ({ status: 503, body: 'busy', headers: { 'retry-after': '120' } }))
  t.equal(await cache.get(), first, 'still-valid token kept')
  t.equal(backend.hits(), 2)
  t.equal(cache.nextRefreshAt, clock.wallMs() + 120_000)
  t.same(deferrals, [{ required: false, retryAt: clock.wallMs() + 120_000 }])

  clock.advance(119_000)
  t.equal(cache.requirement(), 'not-needed', 'no proactive try during the deferral')
  t.equal(await cache.get(), first)
  t.equal(backend.hits(), 2, 'backend not hit during the deferral')

  clock.advance(1_000)
  const second = await cache.get()
  t.equal(backend.hits(), 3)
  t.not(second.remoteControlToken, first.remoteControlToken)
  t.equal(cache.nextRefreshAt, null, 'success clears the deferral')
})

t.test('cache: required failure fails fast until the deferral ends (24–36 s default)', async (t) => {
  const { clock, cache, deferrals } = cacheSetup({ random: () => 0.5 })
  backend.queue.push(() => ({ status: 500, body: { detail: 'down', remote_control_token: canary('rct') } }))
  let err = await failure(t, cache.get())
  t.type(err, RemoteControlHttpError)
  t.equal(backend.hits(), 1)
  t.equal(cache.nextRefreshAt, T0 + 30_000, 'random 0.5 → 30 s')
  t.same(deferrals, [{ required: true, retryAt: T0 + 30_000 }])

  clock.advance(29_999)
  err = await failure(t, cache.get())
  t.type(err, RemoteControlRefreshDeferredError)
  t.equal(err.message, `remote control server token refresh deferred until ${new Date(T0 + 30_000).toISOString()}`)
  t.equal((err as RemoteControlRefreshDeferredError).retryAt, T0 + 30_000)
  t.type((err as RemoteControlRefreshDeferredError).cause, RemoteControlHttpError)
  t.ok(isTransientRemoteControlError((err as RemoteControlRefreshDeferredError).cause))
  t.equal(backend.hits(), 1, 'backend NOT hit during the deferral')

  clock.advance(1)
  grantsFor(clock)
  const grant = await cache.get()
  t.equal(backend.hits(), 2)
  t.equal(cache.current, grant)
})

t.test('cache: an expired token fails fast too, and an HTTP-date Retry-After is honoured', async (t) => {
  const { clock, cache } = cacheSetup()
  grantsFor(clock, 60_000)
  await cache.get()
  clock.advanceToWall(T0 + 60_000)
  backend.queue.push(() => ({ status: 429, body: 'slow down', headers: { 'retry-after': new Date(clock.wallMs() + 90_000).toUTCString() } }))
  let err = await failure(t, cache.get())
  t.equal((err as RemoteControlHttpError).status, 429)
  t.equal(cache.nextRefreshAt, T0 + 60_000 + 90_000)
  clock.advance(45_000)
  err = await failure(t, cache.get())
  t.type(err, RemoteControlRefreshDeferredError)
  t.equal(backend.hits(), 2)
  clock.advance(45_000)
  grantsFor(clock)
  await cache.get()
  t.equal(backend.hits(), 3)
})

t.test('cache: a past HTTP date falls back to 24–36 s (default random)', async (t) => {
  const clock = new ManualClock({ wallMs: T0 })
  const c = client()
  const cache = new ServerTokenCache({ clock, refresh: () => c.refresh(auth, refreshRequest) })
  backend.queue.push(() => ({ status: 503, headers: { 'retry-after': new Date(T0 - 5_000).toUTCString() } }))
  await failure(t, cache.get())
  const seconds = ((cache.nextRefreshAt ?? 0) - T0) / 1000
  t.ok(Number.isInteger(seconds) && seconds >= 24 && seconds <= 36, `${seconds} s`)
})

t.test('cache: a timeout is transient: deferred; proactive keeps the token', async (t) => {
  const { clock, cache } = cacheSetup({ timeoutMs: 200 })
  grantsFor(clock)
  const first = await cache.get()
  clock.advanceToWall(T0 + HOUR_MS - 100_000)
  const held = gate()
  backend.queue.push(() => ({ status: 200, body: grantBody(T0 + 2 * HOUR_MS), hold: held.opened }))
  t.equal(await cache.get(), first)
  held.open()
  t.equal(cache.nextRefreshAt, clock.wallMs() + DEFERRAL_MIN_SECONDS * 1000)
})

t.test('cache: 401/403/404 clear the token, no deferral; 400 neither clears nor defers', async (t) => {
  for (const status of [401, 403, 404]) {
    const { clock, cache } = cacheSetup()
    grantsFor(clock)
    await cache.get()
    clock.advanceToWall(T0 + HOUR_MS - 100_000)
    backend.queue.push(() => ({ status, body: { detail: 'no' } }))
    const err = await failure(t, cache.get())
    t.equal((err as RemoteControlHttpError).status, status)
    t.equal(cache.current, null, `${status} cleared the token`)
    t.equal(cache.nextRefreshAt, null, `${status} is not deferred`)
    t.equal(cache.requirement(), 'required')
  }
  const { clock, cache } = cacheSetup()
  grantsFor(clock)
  const first = await cache.get()
  clock.advanceToWall(T0 + HOUR_MS - 100_000)
  backend.queue.push(() => ({ status: 400, body: { detail: 'bad' } }))
  const err = await failure(t, cache.get())
  t.equal((err as RemoteControlHttpError).status, 400)
  t.equal(cache.current, first, 'kept')
  t.equal(cache.nextRefreshAt, null, 'not deferred')
})

t.test('cache: a mismatched refresh is reported, not cached', async (t) => {
  const { clock, cache } = cacheSetup()
  backend.queue.push(() => ({ status: 200, body: grantBody(clock.wallMs() + HOUR_MS, { environment_id: 'env_other' }) }))
  const err = await failure(t, cache.get())
  t.type(err, RemoteControlResponseError)
  t.equal(cache.current, null)
  t.equal(cache.nextRefreshAt, null)
})

t.test('cache: clearIfSame clears only the token that was used', async (t) => {
  const { clock, cache } = cacheSetup()
  grantsFor(clock)
  const a = await cache.get()
  t.equal(cache.clearIfSame(canary('other')), false)
  t.equal(cache.current, a)
  t.equal(cache.clearIfSame(a.remoteControlToken), true)
  t.equal(cache.current, null)
  t.equal(cache.clearIfSame(a.remoteControlToken), false, 'already gone')

  const b = await cache.get()
  t.equal(backend.hits(), 2, 'refreshed before the next use')
  t.equal(cache.clearIfSame(a.remoteControlToken), false, 'a stale 401 does not clear the newer token')
  t.equal(cache.current, b)
})

t.test('cache: clearIfSame keeps a deferral; clear() forgets it', async (t) => {
  const { clock, cache } = cacheSetup()
  grantsFor(clock)
  const a = await cache.get()
  clock.advanceToWall(T0 + HOUR_MS - 100_000)
  backend.queue.push(() => ({ status: 503 }))
  t.equal(await cache.get(), a)
  t.ok(cache.clearIfSame(a.remoteControlToken))
  const err = await failure(t, cache.get())
  t.type(err, RemoteControlRefreshDeferredError, 'required during the deferral: fails fast')
  t.equal(backend.hits(), 2)
  cache.clear()
  t.equal(cache.nextRefreshAt, null)
  await cache.get()
  t.equal(backend.hits(), 3)
})

t.test('cache: concurrent callers share one refresh; clear() during a refresh discards it', async (t) => {
  const { clock, cache } = cacheSetup()
  // The answer waits until the request has arrived, so all three callers overlap one refresh in flight.
  const arrived = gate()
  const release = gate()
  backend.queue.push(() => {
    arrived.open()
    return { status: 200, body: grantBody(clock.wallMs() + HOUR_MS), hold: release.opened }
  })
  const all = Promise.all([cache.get(), cache.get(), cache.get()])
  await arrived.opened
  release.open()
  const [g1, g2, g3] = await all
  t.equal(backend.hits(), 1)
  t.equal(g1, g2)
  t.equal(g2, g3)

  clock.advanceToWall(T0 + HOUR_MS)
  const releaseCleared = gate()
  backend.queue.push(() => ({ status: 200, body: grantBody(clock.wallMs() + HOUR_MS), hold: releaseCleared.opened }))
  const pending = cache.get()
  cache.clear()
  releaseCleared.open()
  const err = await failure(t, pending)
  t.type(err, RemoteControlTokenCacheClearedError)
  t.equal(cache.current, null)
})
