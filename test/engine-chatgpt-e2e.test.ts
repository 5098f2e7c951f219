/**
 * ChatGPT tokens handed to the real codex engine, and the engine's refresh request answered by
 * the client that owns them, end to end over real sockets. The engine checks workspace routing
 * at `{chatgpt_base_url}/wham/accounts/check` and accepts only an HTTPS origin there, so the fake
 * ChatGPT backend serves HTTPS on loopback with a CA and server certificate this file makes with
 * the `openssl` CLI; the engine trusts that CA through `CODEX_CA_CERTIFICATE`.
 *
 * The chain: a client logs in with external tokens → the gateway hands them to the engine → the
 * engine calls the backend with them → a turn's model call is answered 401 for the old token →
 * the engine asks the gateway (`account/chatgptAuthTokens/refresh`) → the gateway asks the client
 * → the client answers with fresh tokens → the engine retries with them and the turn completes.
 * No token appears in any log line, health body or error text.
 *
 * Skips (saying why) only when the engine binary or `openssl` is absent; under CI it fails instead.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { canary, leakedCanaries, registerCanary } from './helpers/canary.js'
import { connect, httpGet, type RpcClient } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Json = Record<string, any>

const OPENSSL = '/usr/bin/openssl'
const AUTH_CLAIM = 'https://api.openai.com/auth'
const ACCOUNT_ID = 'ws-e2e-1'

// The engine inherits this process's environment: a throwaway HOME keeps it out of the
// developer's home, and the test CA is the only extra root it trusts.
process.env.HOME = tempDir('engine-chatgpt-user-home')
const pki = tempDir('engine-chatgpt-pki')
process.env.CODEX_CA_CERTIFICATE = join(pki, 'ca.pem')

const installed = resolveEngineBinary()
const absent = !installed.ok
  ? `the codex engine is not installed here (${installed.reason})`
  : existsSync(OPENSSL) ? null : `${OPENSSL} is not installed here`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

/** New keys are P-256: an RSA key takes openssl a quarter of a second of CPU or more to make, this a hundredth. */
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']

/** A CA and a server certificate for 127.0.0.1 (IP SAN) signed by it, in `dir`. */
function makeCertificates(dir: string): { key: Buffer; cert: Buffer } {
  const run = (...args: string[]) => execFileSync(OPENSSL, args, { cwd: dir, stdio: 'pipe' })
  run('req', '-x509', ...EC_KEY, '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=app-server test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  run('req', ...EC_KEY, '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext')
  return { key: readFileSync(join(dir, 'server.key')), cert: readFileSync(join(dir, 'server.pem')) }
}

interface BackendRequest {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

/** A fake ChatGPT backend on HTTPS: records every request; `/wham/accounts/check` says the workspace is fine. */
class FakeChatgptBackend {
  readonly requests: BackendRequest[] = []
  private waiters: (() => void)[] = []

  private constructor(private readonly server: Server, readonly port: number) {}

  static async start(tls: { key: Buffer; cert: Buffer }): Promise<FakeChatgptBackend> {
    const server = createServer(tls)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const backend = new FakeChatgptBackend(server, (server.address() as AddressInfo).port)
    server.on('request', (req, res) => {
      req.resume()
      backend.requests.push({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers })
      const waiters = backend.waiters
      backend.waiters = []
      for (const w of waiters) w()
      if ((req.url ?? '').startsWith('/backend-api/wham/accounts/check')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ accounts: [{ id: ACCOUNT_ID, structure: 'personal' }], account_ordering: [ACCOUNT_ID] }))
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"not found"}')
      }
    })
    return backend
  }

  get baseUrl(): string {
    return `https://127.0.0.1:${this.port}/backend-api/`
  }

  /** The first request (already made or still to come) that `match` accepts. */
  async waitFor(match: (r: BackendRequest) => boolean): Promise<BackendRequest> {
    for (;;) {
      const seen = this.requests.find(match)
      if (seen !== undefined) return seen
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

/** A JWT-shaped ChatGPT access token (the engine reads its claims), registered as a canary. */
function accessToken(label: string): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const claims = {
    email: 'dev@example.com',
    exp: Math.floor(Date.now() / 1000) + 3600,
    [AUTH_CLAIM]: { chatgpt_plan_type: 'plus', chatgpt_account_id: ACCOUNT_ID, chatgpt_user_id: 'user-e2e' },
    jti: canary(label),
  }
  return registerCanary(`${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.c2ln`)
}

/** Runs a turn on `thread` and resolves with the notifications of that turn, once it completed. */
async function turn(c: RpcClient, threadId: string, text: string): Promise<Json[]> {
  const before = c.frames.length
  const started = await c.request('turn/start', { threadId, input: [{ type: 'text', text, text_elements: [] }] })
  if (!('result' in started)) throw new Error(`turn/start failed: ${JSON.stringify(started)}`)
  await c.waitForFrame(() => c.frames.slice(before).some((f) => (JSON.parse(f) as Json).method === 'turn/completed'))
  return c.frames.slice(before).map((f) => JSON.parse(f) as Json).filter((m) => typeof m.method === 'string')
}

t.test('external ChatGPT tokens reach the real engine; its 401 refresh is answered by the client', { skip: absent ?? false }, async (t) => {
  const backend = await FakeChatgptBackend.start(makeCertificates(pki))
  t.teardown(() => backend.close())
  const model = await FakeModel.start({ defaultText: 'Answered with the fresh token.', defaultDeltas: 3 })
  t.teardown(() => model.close())
  const oldToken = accessToken('old-access')
  const freshToken = accessToken('fresh-access')
  const modelAuth: (string | undefined)[] = []
  model.authorize = (req) => {
    modelAuth.push(req.headers.authorization)
    return req.headers.authorization === `Bearer ${freshToken}`
  }

  const overrides = [
    `chatgpt_base_url="${backend.baseUrl}"`,
    'model_provider="chatgptmock"',
    'model="mock-model"',
    `model_providers.chatgptmock={name="chatgptmock",base_url="${model.baseUrl}",wire_api="responses",requires_openai_auth=true}`,
  ]
  const server = await startServer({
    argv: ['--engine', 'on', '--engine-home', tempDir('engine-chatgpt-codex-home', t), ...overrides.flatMap((o) => ['--engine-config', o])],
  })
  t.teardown(() => server.drainAndClose())
  t.equal((await server.app.engine.settled()).state, 'running', 'the engine is ready')

  const client = await connect(server.wsUrl)
  t.teardown(() => client.close())
  await client.initialize('chatgpt-ide')
  client.notify('initialized')
  const login = await client.request('account/login/start', { type: 'chatgptAuthTokens', accessToken: oldToken, chatgptAccountId: ACCOUNT_ID, chatgptPlanType: 'plus' })
  t.same(login.result, { type: 'chatgptAuthTokens' })

  // The engine holds the tokens: it checks the workspace with them, over HTTPS.
  const check = await backend.waitFor((r) => r.url.startsWith('/backend-api/wham/accounts/check'))
  t.equal(check.headers.authorization, `Bearer ${oldToken}`, 'the handed-off access token')
  t.equal(check.headers['chatgpt-account-id'], ACCOUNT_ID, 'the handed-off account id')
  const account = await client.request('account/read', {})
  t.match(account.result, { account: { type: 'chatgpt' }, requiresOpenaiAuth: true }, 'the engine reports the ChatGPT account')

  // The model answers 401 to the old token: the engine asks the gateway, the gateway asks the
  // client, which answers every such request with the fresh tokens.
  const refreshes: Json[] = []
  client.ws.on('message', (data) => {
    const msg = JSON.parse(data.toString()) as Json
    if (msg.method !== 'account/chatgptAuthTokens/refresh') return
    refreshes.push(msg)
    client.sendRaw(JSON.stringify({ id: msg.id as number | string, result: { accessToken: freshToken, chatgptAccountId: ACCOUNT_ID, chatgptPlanType: 'plus' } }))
  })
  const thread = await client.request('thread/start', { cwd: tempDir('engine-chatgpt-work', t) })
  const threadId = (thread.result as Json).thread.id as string
  const notes = await turn(client, threadId, 'say hello')
  t.match(refreshes[0]?.params, { reason: 'unauthorized', previousAccountId: ACCOUNT_ID }, 'the client was asked because of a 401')
  t.same(modelAuth, [`Bearer ${oldToken}`, `Bearer ${freshToken}`], 'refused with the old token, retried once with the fresh one')
  t.match(notes.find((n) => n.method === 'turn/completed')?.params, { turn: { status: 'completed' } })
  t.equal(notes.filter((n) => n.method === 'item/agentMessage/delta').map((d) => d.params.delta).join(''), 'Answered with the fresh token.')

  t.notOk(server.logs.lines.some((l) => l.event === 'engine.credentials_failed'), 'every hand-off was accepted by the engine')

  const health = await httpGet(`${server.httpBase}/healthz`)
  t.same(leakedCanaries(server.logs.text()), [], 'no token in any log line')
  t.same(leakedCanaries(health.body), [], 'nor in health')
  t.same(leakedCanaries(client.frames.filter((f) => f.includes('"error"')).join('\n')), [], 'nor in error text')
})
