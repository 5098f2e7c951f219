/**
 * Graceful shutdown: `/readyz` turns 503, new upgrades get 503, open sockets get 1001 `server
 * shutting down` after in-flight requests are answered, then the process exits 0.
 */
import t from 'tap'
import type WebSocket from 'ws'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, httpGet, tryUpgrade } from './helpers/client.js'
import { startCli } from './helpers/process.js'
import { startServer } from './helpers/server.js'
import { withTimeout } from './helpers/wait.js'

const SHUTDOWN = { code: 1001, reason: 'server shutting down' }

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`subprocess: ${signal} closes sockets with 1001 and exits 0`, async (t) => {
    const srv = await startCli(['--listen', 'ws://127.0.0.1:0'])
    t.teardown(() => srv.stop('SIGKILL').then(() => undefined))
    const client = await connect(srv.url)
    t.teardown(() => client.ws.terminate())
    const init = await client.initialize('shutdown-probe', '1.0.0')
    t.type(init.userAgent, 'string', 'initialized')

    const exited = srv.stop(signal)
    const closed = await withTimeout(client.closed, 8000, 'close frame after the signal')
    t.same(closed, SHUTDOWN, `client sees 1001 "server shutting down" after ${signal}`)
    const exit = await withTimeout(exited, 8000, 'process exit')
    t.same(exit, { code: 0, signal: null }, `process exits with code 0 after ${signal}`)
    t.same(leakedCanaries(srv.stdout()), [])
  })
}

t.test('subprocess: SIGTERM with no client connected exits 0 promptly', async (t) => {
  const srv = await startCli(['--listen', 'ws://127.0.0.1:0'])
  t.teardown(() => srv.stop('SIGKILL').then(() => undefined))
  const hz = await httpGet(`http://127.0.0.1:${srv.port}/healthz`)
  t.equal(hz.status, 200)
  const started = Date.now()
  const exit = await withTimeout(srv.stop('SIGTERM'), 8000, 'process exit')
  t.same(exit, { code: 0, signal: null })
  t.ok(Date.now() - started < 5000, 'does not wait for the close-with-grace timeout')
})

t.test('in-process: drainAndClose sends 1001 to a connected client', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const a = await connect(server.wsUrl)
  const b = await connect(server.wsUrl)
  t.teardown(() => {
    a.ws.terminate()
    b.ws.terminate()
  })
  await a.initialize('drain-a', '1')
  // b never initializes: it is closed all the same.
  await withTimeout(server.drainAndClose(), 5000, 'drainAndClose')
  t.same(await withTimeout(a.closed, 2000, 'a closed'), SHUTDOWN, 'initialized client gets 1001')
  t.same(await withTimeout(b.closed, 2000, 'b closed'), SHUTDOWN, 'uninitialized client gets 1001')
  t.ok(server.logs.lines.some((l) => l.msg === 'websocket connection closed'), 'close logged')
})

t.test('in-process: while draining, /readyz is 503, /healthz 200, new upgrades 503', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const before = await httpGet(`${server.httpBase}/readyz`)
  t.equal(before.status, 200)
  t.same(JSON.parse(before.body), { status: 'ready' })

  const open = await connect(server.wsUrl)
  t.teardown(() => open.ws.terminate())
  await open.initialize('already-open', '1')

  server.app.lifecycle.beginDrain()
  t.ok(server.app.lifecycle.draining, 'lifecycle reports draining')

  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.equal(ready.status, 503, '/readyz answers 503')
  t.same(JSON.parse(ready.body), { status: 'draining' }, '/readyz body')
  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 200, '/healthz still 200')
  t.same(JSON.parse(health.body), { status: 'ok', auth: { mode: 'queryToken', enforced: true }, engine: { state: 'off', version: null } })

  const upgrade = await tryUpgrade(server.wsUrl)
  if ('ws' in upgrade) {
    upgrade.ws.terminate()
    t.fail('a new upgrade with a valid token was accepted (101) while draining')
  } else {
    t.equal(upgrade.refused.status, 503, 'a new upgrade with a valid token gets 503')
    t.same(leakedCanaries(upgrade.refused.body), [])
  }
  const wrong = await tryUpgrade(`${server.wsBase}?token=${canary('drain-wrong')}`)
  t.ok('refused' in wrong, 'a wrong token is refused too')
  if ('ws' in wrong) wrong.ws.terminate()

  const line = server.logs.authEvents().find((l) => l.outcome === 'rejected' && l.reason === 'server draining')
  t.ok(line, 'the 503 is explained by a ws.auth line')
  t.equal(line?.mode, 'queryToken')
  t.same(leakedCanaries(server.logs.text()), [])
})

t.test('in-process: a request in flight when draining begins is answered before the 1001', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())

  // Frame order as the client sees it.
  const events: string[] = []
  client.ws.on('message', (data: WebSocket.RawData) => events.push(`frame ${data.toString()}`))
  client.ws.on('close', (code: number, reason: Buffer) => events.push(`close ${code} ${reason.toString()}`))

  // Begin draining on the server the moment the request frame has been handed to the session
  // (the product's listener runs first and starts the request; ours runs after it).
  const [serverSocket] = [...server.app.websocketServer.clients]
  if (serverSocket === undefined) throw new Error('no server-side socket')
  let drained: Promise<void> | null = null
  let repliedBeforeDrain = false
  serverSocket.once('message', () => {
    // The reply is sent asynchronously, so at this point it cannot have gone out yet.
    repliedBeforeDrain = events.some((e) => e.includes('"inflight-1"'))
    drained = server.drainAndClose()
  })

  const reply = client.request('initialize', { clientInfo: { name: 'in-flight', title: null, version: '1' } }, 'inflight-1')
  const closed = await withTimeout(client.closed, 5000, 'close after drain')
  t.same(closed, SHUTDOWN)
  t.ok(drained !== null, 'draining began while the request was being handled')
  t.notOk(repliedBeforeDrain, 'the request was still unanswered when draining began')
  await withTimeout(drained ?? Promise.resolve(), 5000, 'drainAndClose')

  const replyIndex = events.findIndex((e) => e.startsWith('frame ') && e.includes('"inflight-1"'))
  const closeIndex = events.findIndex((e) => e.startsWith('close '))
  t.ok(replyIndex >= 0, 'the in-flight request was answered')
  t.ok(closeIndex > replyIndex, 'its reply arrived before the close frame')
  t.equal(events[closeIndex], 'close 1001 server shutting down')
  const r = await withTimeout(reply, 1000, 'reply promise')
  t.ok('result' in r, 'the reply is a result')
})
