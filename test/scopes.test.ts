/**
 * Connection authority is not execution authority: the principal a connection earns at the upgrade
 * decides which methods it may call.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { canary } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { startServer, type LogLine, type TestServer } from './helpers/server.js'

type TestT = Parameters<Parameters<typeof t.test>[0]>[0]

const INIT_PARAMS = { clientInfo: { name: 'scope-test', title: null, version: '1.0.0' } }

async function start(t: TestT, argv: string[]): Promise<TestServer> {
  const server = await startServer({ argv })
  t.teardown(() => server.close())
  return server
}

/** Connects and returns the client with the single ws.auth line its upgrade produced. */
async function openLogged(t: TestT, server: TestServer, url: string, headers: Record<string, string> = {}): Promise<{ client: RpcClient; line: LogLine }> {
  const before = server.logs.authEvents().length
  const client = await connect(url, headers)
  t.teardown(() => {
    client.ws.close()
  })
  const events = server.logs.authEvents().slice(before)
  t.equal(events.length, 1, 'one ws.auth line for the upgrade')
  return { client, line: events[0] ?? { level: -1 } }
}

function loggedScopes(line: LogLine): unknown {
  return line.scopes
}

t.test('a degraded connection holds session and account:read', async (t) => {
  const server = await start(t, ['--no-token-check'])
  const { client, line } = await openLogged(t, server, server.wsBase)
  t.match(line, { level: 40, event: 'ws.auth', outcome: 'degraded', reason: 'missing generated websocket query token' })
  t.equal(line.principal, 'degraded', 'principal kind logged')
  t.same(loggedScopes(line), ['session', 'account:read'], 'scopes logged as ["session","account:read"]')

  const reply = await client.request('initialize', INIT_PARAMS)
  t.notOk('error' in reply, 'initialize (scope session) is allowed')
  t.match(reply.result, { userAgent: /scope-test/ })
  await client.close()
})

t.test('a query-token connection holds every scope', async (t) => {
  const server = await start(t, [])
  const { client, line } = await openLogged(t, server, server.wsUrl)
  t.match(line, { outcome: 'accepted', principal: 'queryToken' })
  t.same([...(line.scopes as string[])].sort(), ['account:read', 'account:write', 'config:read', 'config:write', 'exec', 'fs:read', 'fs:write', 'metrics:read', 'remote:write', 'session', 'thread:read', 'thread:write'])
  await client.initialize()
  await client.close()
})

t.test('signed bearer: the JWT scope claim limits the connection', async (t) => {
  const secret = canary('scopes-shared-secret-at-least-thirty-two-bytes')
  const dir = mkdtempSync(join(tmpdir(), 'app-server-scopes-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const secretFile = join(dir, 'secret.txt')
  writeFileSync(secretFile, secret, { mode: 0o600 })
  const server = await start(t, ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile])
  const bearer = (jwt: string) => ({ Authorization: `Bearer ${jwt}` })

  t.test('scope "session" can initialize', async (t) => {
    const jwt = await signJwt(secret, { sub: 'user-s', exp: nowSeconds() + 3600, scope: 'session' })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.match(line, { outcome: 'accepted', mode: 'signedBearerToken', principal: 'signedBearerToken' })
    t.same(loggedScopes(line), ['session'], 'only session logged')
    const reply = await client.request('initialize', INIT_PARAMS)
    t.notOk('error' in reply, 'initialize allowed')
    t.match(reply.result, { userAgent: /scope-test/ })
    await client.close()
  })

  t.test('scope "account:read" (no session) cannot initialize', async (t) => {
    const jwt = await signJwt(secret, { sub: 'user-r', exp: nowSeconds() + 3600, scope: 'account:read' })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.same(loggedScopes(line), ['account:read'])
    const reply = await client.request('initialize', INIT_PARAMS)
    t.strictSame(reply.error, { code: -32600, message: 'method initialize requires scope session' })
    t.notOk('result' in reply, 'no result')
    const again = await client.request('initialize', INIT_PARAMS)
    t.strictSame(again.error, { code: -32600, message: 'method initialize requires scope session' }, 'still refused, connection still open')
    await client.close()
  })

  t.test('engine scopes in the claim are granted exactly as named', async (t) => {
    const jwt = await signJwt(secret, { sub: 'user-e', exp: nowSeconds() + 3600, scope: 'session thread:read exec no:such' })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.same([...(line.scopes as string[])].sort(), ['exec', 'session', 'thread:read'], 'named engine scopes only; the unknown one ignored')
    await client.initialize()
    await client.close()
  })

  t.test('a non-string scope claim grants nothing', async (t) => {
    const jwt = await signJwt(secret, { exp: nowSeconds() + 3600, scope: ['session'] })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.same(loggedScopes(line), [], 'no scopes logged')
    const reply = await client.request('initialize', INIT_PARAMS)
    t.strictSame(reply.error, { code: -32600, message: 'method initialize requires scope session' })
    await client.close()
  })

  t.test('no scope claim: all scopes', async (t) => {
    const jwt = await signJwt(secret, { exp: nowSeconds() + 3600 })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.same([...(line.scopes as string[])].sort(), ['account:read', 'account:write', 'config:read', 'config:write', 'exec', 'fs:read', 'fs:write', 'metrics:read', 'remote:write', 'session', 'thread:read', 'thread:write'])
    await client.initialize()
    await client.close()
  })

  t.test('the credential is never logged with the principal', async (t) => {
    const jwt = await signJwt(secret, { sub: 'user-l', exp: nowSeconds() + 3600, scope: 'session' })
    const { client, line } = await openLogged(t, server, server.wsBase, bearer(jwt))
    t.notOk(JSON.stringify(line).includes(jwt), 'the JWT is not in the ws.auth line')
    t.notOk(server.logs.text().includes(jwt), 'nor anywhere in the logs')
    await client.close()
  })
})
