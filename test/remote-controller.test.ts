import t from 'tap'
import { Writable } from 'node:stream'
import { reconnectDelayMs } from '../src/remote-control/backoff.js'
import {
  API_KEY_REFUSAL,
  RemoteControlController,
  type BackendSocket,
  type ControllerOptions,
  type ServerTokens,
} from '../src/remote-control/controller.js'
import type { Enrollment, RemoteControlStatusView, ServerTokenGrant } from '../src/remote-control/types.js'
import { createLogger } from '../src/log/logger.js'
import { canary, record } from './helpers/canary.js'
import { ManualClock, settle } from './helpers/manual-clock.js'

const log = createLogger('debug', new Writable({ write: (c: Buffer, _e, done) => (record(c.toString()), done()) }))

class FakeSocket implements BackendSocket {
  sent: string[] = []
  pings = 0
  closed = false
  private closeFns: (() => void)[] = []
  private pongFns: (() => void)[] = []
  send(text: string): void {
    this.sent.push(text)
  }
  ping(): void {
    this.pings++
  }
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const f of this.closeFns) f()
  }
  onMessage(): void {}
  onPong(fn: () => void): void {
    this.pongFns.push(fn)
  }
  onClose(fn: () => void): void {
    this.closeFns.push(fn)
  }
  pong(): void {
    for (const f of this.pongFns) f()
  }
}

function setup(options: { kind?: 'none' | 'apiKey' | 'chatgpt'; openFails?: number } = {}) {
  const clock = new ManualClock()
  const sockets: FakeSocket[] = []
  const statuses: RemoteControlStatusView[] = []
  const opens: number[] = []
  const rows = new Map<string, Enrollment>()
  let failuresLeft = options.openFails ?? 0
  let grantCount = 0
  const grant = (): ServerTokenGrant => ({
    serverId: 'srv-1',
    environmentId: 'env-1',
    remoteControlToken: canary('rct'),
    expiresAt: new Date(clock.wallMs() + 3_600_000),
  })
  const kind = options.kind ?? 'chatgpt'
  const tokens = (refresh: () => Promise<ServerTokenGrant>): ServerTokens => {
    let cached: ServerTokenGrant | null = null
    return {
      async get() {
        cached ??= await refresh()
        grantCount++
        return cached
      },
      clear: () => (cached = null),
      clearIfSame: (token: string) => {
        if (cached?.remoteControlToken === token) cached = null
      },
    }
  }
  const o: ControllerOptions = {
    log,
    clock,
    random: () => 0.5, // no jitter
    websocketUrl: 'ws://127.0.0.1:1/backend-api/wham/remote/control/server',
    serverName: 'test-host',
    installationId: '00000000-0000-4000-8000-000000000001',
    clientName: 'app-server',
    version: '0.0.0',
    os: 'linux',
    arch: 'x86_64',
    accounts: {
      kind: () => kind,
      accountId: () => (kind === 'chatgpt' ? 'acct-1' : null),
      withChatgptAuth: (fn) => fn({ accessToken: canary('chatgpt'), accountId: 'acct-1' }),
      onChange: () => () => undefined,
    },
    api: { enroll: async () => grant(), refresh: async () => grant() },
    store: {
      get: (k) => rows.get(k.accountId) ?? null,
      upsert: (e) => void rows.set(e.accountId, e),
      delete: (k) => rows.delete(k.accountId),
    },
    tokens,
    opener: {
      async open() {
        opens.push(clock.monotonicMs())
        if (failuresLeft > 0) {
          failuresLeft--
          throw Object.assign(new Error('handshake refused: 503'), { status: 503, body: null })
        }
        const s = new FakeSocket()
        sockets.push(s)
        return s
      },
    },
    relay: { handleEnvelope: () => undefined, connected: () => undefined, disconnected: () => undefined, cursor: null, closeAll: () => undefined },
    onStatus: (v) => statuses.push(v),
  }
  const controller = new RemoteControlController(o)
  return { controller, clock, sockets, statuses, opens, rows, grants: () => grantCount }
}

t.test('reconnect delay: 200 ms doubling, capped at 30 s, ±10 % jitter', async (t) => {
  t.same([1, 2, 3, 4, 5].map((n) => reconnectDelayMs(n, () => 0.5)), [200, 400, 800, 1600, 3200])
  t.equal(reconnectDelayMs(20, () => 0.5), 30_000)
  t.equal(reconnectDelayMs(1, () => 0), 180, '-10 %')
  t.equal(reconnectDelayMs(1, () => 0.999999), 220, '+10 %')
  t.equal(reconnectDelayMs(30, () => 0.999999), 30_000, 'the cap holds with jitter')
})

t.test('handshake failures back off 200, 400, 800 ms; success resets the count', async (t) => {
  const { controller, clock, opens, sockets, statuses } = setup({ openFails: 3 })
  await controller.enable()
  await settle()
  t.equal(opens.length, 1)
  t.equal(controller.status().status, 'errored')
  await clock.advanceSettling(199)
  t.equal(opens.length, 1, 'not before 200 ms')
  await clock.advanceSettling(1)
  t.equal(opens.length, 2)
  await clock.advanceSettling(400)
  t.equal(opens.length, 3)
  await clock.advanceSettling(800)
  t.equal(opens.length, 4)
  t.equal(controller.status().status, 'connected')
  t.same(
    opens.map((x, i) => (i === 0 ? 0 : x - opens[i - 1]!)),
    [0, 200, 400, 800],
  )
  // A drop after success starts over at 200 ms.
  sockets[0]!.close()
  await settle()
  await clock.advanceSettling(200)
  t.equal(opens.length, 5, 'reset to the first delay after a success')
  t.ok(statuses.every((s, i) => i === 0 || JSON.stringify(s) !== JSON.stringify(statuses[i - 1])), 'status published only on change')
  await controller.close()
})

t.test('keepalive: a ping every 10 s; no pong for 60 s closes the socket', async (t) => {
  const { controller, clock, sockets, opens } = setup()
  await controller.enable()
  await settle()
  const s = sockets[0]!
  await clock.advanceSettling(10_000)
  t.equal(s.pings, 1)
  s.pong()
  await clock.advanceSettling(30_000)
  t.equal(s.pings, 4)
  t.notOk(s.closed, 'pongs keep it open')
  s.pong()
  // Silence from here on: 60 s after the last pong the socket is dropped.
  await clock.advanceSettling(59_000)
  t.notOk(s.closed)
  await clock.advanceSettling(11_000)
  t.ok(s.closed, 'no pong in 60 s')
  await clock.advanceSettling(200)
  t.equal(opens.length, 2, 'reconnected after backoff')
  await controller.close()
})

t.test('API keys are refused; no account waits quietly', async (t) => {
  const api = setup({ kind: 'apiKey' })
  await api.controller.enable()
  await settle()
  t.equal(api.controller.status().status, 'errored')
  t.equal(api.controller.error, API_KEY_REFUSAL)
  t.equal(api.opens.length, 0)
  await api.controller.close()

  const none = setup({ kind: 'none' })
  await none.controller.enable()
  await none.clock.advanceSettling(5_000)
  t.equal(none.controller.status().status, 'connecting')
  t.equal(none.controller.error, null)
  t.equal(none.opens.length, 0)
  await none.controller.close()
  t.equal(none.controller.status().status, 'disabled')
})

t.test('enrollment is persisted without its token and published', async (t) => {
  const { controller, rows, statuses } = setup()
  await controller.enable()
  await settle()
  const row = rows.get('acct-1')!
  t.match(row, { serverId: 'srv-1', environmentId: 'env-1', serverName: 'test-host' })
  t.notOk(Object.keys(row).some((k) => /token|expir|cursor/i.test(k)), 'no token, expiry or cursor in the row')
  t.equal(controller.status().environmentId, 'env-1')
  t.ok(statuses.some((s) => s.status === 'connected' && s.environmentId === 'env-1'))
  await controller.close()
})
