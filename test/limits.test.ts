/**
 * Rate limits and load shedding: the limiter units on a manual clock, then over real sockets the
 * failed-upgrade throttle, the per-address HTTP limit, the per-connection token bucket, and the
 * per-connection and process-wide in-flight bounds.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import { clientKey } from '../src/auth/client-key.js'
import { connectionCap } from '../src/auth/socket-guard.js'
import { openFileLimit } from '../src/util/fd-limit.js'
import { FailedUpgradeThrottle } from '../src/auth/upgrade-throttle.js'
import { OVERLOADED_MESSAGE } from '../src/rpc/errors.js'
import { InFlightLimit } from '../src/rpc/in-flight.js'
import { defineMethod, type MethodDefinition } from '../src/rpc/method.js'
import { TokenBucket } from '../src/rpc/token-bucket.js'
import type { AppServices } from '../src/services.js'
import { sha256 } from '../src/util/sha256.js'
import { canary } from './helpers/canary.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { tempDir } from './helpers/temp-dir.js'
import { connect, httpGet, refuse, tryUpgrade, type RpcClient } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startServer, type LogLine, type StartOptions, type TestServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test

const OVERLOADED = { code: -32001, message: OVERLOADED_MESSAGE }
/** The exact frame codex sends for an overloaded request (`error` first, no `jsonrpc`). */
const overloadedFrame = (id: number | string): string => JSON.stringify({ error: OVERLOADED, id })

const WARN = 40

/** A method that answers at once; does not touch the handshake. */
const echo: MethodDefinition<AppServices, null> = defineMethod<AppServices, null>({
  name: 'test/echo',
  scope: 'session',
  params: null,
  handler: () => ({ ok: true }),
})

/** `test/slow`: answers `{done: true}` once `release` is called; `entered` counts calls that reached it. */
function gatedSlowMethod(): { slow: MethodDefinition<AppServices, null>; release: () => void; entered: () => number } {
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  let entered = 0
  const slow = defineMethod<AppServices, null>({
    name: 'test/slow',
    scope: 'session',
    params: null,
    handler: async () => {
      entered++
      await gate
      return { done: true }
    },
  })
  return { slow, release, entered: () => entered }
}

async function start(t: Test, options: StartOptions): Promise<TestServer> {
  const server = await startServer(options)
  t.teardown(() => server.close())
  return server
}

async function open(t: Test, server: TestServer, url = server.wsUrl): Promise<RpcClient> {
  const client = await connect(url)
  t.teardown(() => client.ws.terminate())
  return client
}

function warns(server: TestServer, from: number, msg: string): LogLine[] {
  return server.logs.lines.slice(from).filter((l) => l.level === WARN && l.msg === msg)
}

// ---------------------------------------------------------------------------------------------
// (a) units
// ---------------------------------------------------------------------------------------------

t.test('TokenBucket: burst, refill rate, never above burst', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const bucket = new TokenBucket(10, 5, clock.monotonicMs)
  const takes = (n: number): boolean[] => Array.from({ length: n }, () => bucket.take())

  t.same(takes(6), [true, true, true, true, true, false], 'a full bucket allows `burst` at once, then refuses')
  t.notOk(bucket.take(), 'still empty without time passing')

  clock.advance(50)
  t.notOk(bucket.take(), 'half a token (50 ms at 10/s) is not enough')
  clock.advance(50)
  t.ok(bucket.take(), '100 ms at 10/s refills one token')
  t.notOk(bucket.take(), 'and only one')

  clock.advance(300)
  t.same(takes(4), [true, true, true, false], '300 ms refill three')

  clock.advance(60_000)
  t.same(takes(6), [true, true, true, true, true, false], 'a long idle refills to burst, never above it')

  clock.advance(1000)
  t.same(takes(6), [true, true, true, true, true, false], 'one second at 10/s is capped at burst 5')

  // A reading that jumps back (not something the manual clock, or a monotonic one, ever does).
  let reading = 10_000
  const b2 = new TokenBucket(1, 1, () => reading)
  t.ok(b2.take())
  reading -= 5000
  t.notOk(b2.take(), 'a clock going backwards grants nothing')
})

t.test('FailedUpgradeThrottle: a budget per client, refilled continuously', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const throttle = new FailedUpgradeThrottle(3, clock.monotonicMs)
  t.ok(throttle.enabled)
  for (let i = 0; i < 3; i++) t.ok(throttle.reserve('10.0.0.1').ok, `failure ${i + 1} of 3 is evaluated`)
  const refused = throttle.reserve('10.0.0.1')
  t.same(refused, { ok: false, retryAfterSeconds: 20 }, 'budget spent: refused, one token back in 60 s / 3')
  t.ok(throttle.reserve('10.0.0.2').ok, 'other addresses are not affected')

  clock.advance(19_999)
  t.notOk(throttle.reserve('10.0.0.1').ok, 'not a whole token yet')
  clock.advance(1)
  t.ok(throttle.reserve('10.0.0.1').ok, 'one token after a third of the minute, not a whole window')
  t.notOk(throttle.reserve('10.0.0.1').ok, 'and only one')
  clock.advance(60_000)
  for (let i = 0; i < 3; i++) t.ok(throttle.reserve('10.0.0.1').ok, `refilled to the burst (${i + 1})`)
  t.notOk(throttle.reserve('10.0.0.1').ok, 'never past the burst')
})

t.test('FailedUpgradeThrottle: reservations are taken before evaluation and admitted ones are given back', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const throttle = new FailedUpgradeThrottle(5, clock.monotonicMs)
  // 50 attempts in flight at once: only the budget is ever evaluated.
  const held = Array.from({ length: 50 }, () => throttle.reserve('10.0.0.9'))
  t.equal(held.filter((r) => r.ok).length, 5, 'five reservations granted among fifty concurrent attempts')
  for (const r of held) throttle.refund(r)
  t.equal(throttle.size, 0, 'all admitted: the bucket is full again and forgotten')
  const a = throttle.reserve('10.0.0.9')
  throttle.refund(a)
  throttle.refund(a)
  for (let i = 0; i < 5; i++) t.ok(throttle.reserve('10.0.0.9').ok)
  t.notOk(throttle.reserve('10.0.0.9').ok, 'refunds never raise the budget past its burst')
})

t.test('FailedUpgradeThrottle: loopback is one client, IPv6 counts per /64', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const throttle = new FailedUpgradeThrottle(2, clock.monotonicMs)
  t.ok(throttle.reserve('127.0.0.1').ok && throttle.reserve('127.0.0.2').ok)
  for (const other of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.5', '0:0:0:0:0:0:0:1']) {
    t.notOk(throttle.reserve(other).ok, `${other} shares the loopback budget`)
  }
  t.ok(throttle.reserve('2001:db8::1').ok && throttle.reserve('2001:db8:0:0:ffff::2').ok)
  t.notOk(throttle.reserve('2001:0db8:0000:0000::3').ok, 'the same /64, written differently')
  t.ok(throttle.reserve('2001:db8:0:1::1').ok, 'the next /64 is another client')
  t.ok(throttle.reserve('::ffff:10.1.2.3').ok && throttle.reserve('10.1.2.3').ok)
  t.notOk(throttle.reserve('10.1.2.3').ok, 'an IPv4-mapped address is its IPv4 address')
})

t.test('clientKey', async (t) => {
  t.equal(clientKey('127.0.0.1'), 'loopback')
  t.equal(clientKey('127.255.255.254'), 'loopback')
  t.equal(clientKey('::1'), 'loopback')
  t.equal(clientKey('::ffff:127.0.0.1'), 'loopback')
  t.equal(clientKey('10.0.0.1'), '10.0.0.1')
  t.equal(clientKey('::ffff:10.0.0.1'), '10.0.0.1')
  t.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(clientKey('2001:DB8:0:0:1:2:3:4'), '2001:db8:0:0::/64')
  t.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'a zone id is not part of the prefix')
  t.equal(clientKey('::'), '0:0:0:0::/64')
  t.equal(clientKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64', 'an embedded IPv4 tail')
  t.equal(clientKey('not-an-ip'), 'not-an-ip', 'anything else is its own key')
})

t.test('FailedUpgradeThrottle: 0 disables it', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const throttle = new FailedUpgradeThrottle(0, clock.monotonicMs)
  t.notOk(throttle.enabled)
  for (let i = 0; i < 1000; i++) t.ok(throttle.reserve('10.0.0.1').ok || t.fail('refused'))
  t.equal(throttle.size, 0, 'nothing tracked')
})

t.test('FailedUpgradeThrottle: the table is bounded and evicts the oldest client', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000_000 })
  const throttle = new FailedUpgradeThrottle(1, clock.monotonicMs, 3)
  for (const r of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) throttle.reserve(r)
  t.ok(['10.0.0.1', '10.0.0.2', '10.0.0.3'].every((r) => !throttle.reserve(r).ok), 'three clients fit, each spent')
  throttle.reserve('10.0.0.4')
  t.equal(throttle.size, 3)
  t.ok(throttle.reserve('10.0.0.1').ok, 'the oldest entry was dropped past maxClients (a fresh budget)')

  // A flood of addresses never grows the table past its bound.
  const big = new FailedUpgradeThrottle(1, clock.monotonicMs, 100)
  for (let i = 0; i < 10_000; i++) big.reserve(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
  t.ok(big.size <= 100, `table holds ${big.size} entries (bound 100)`)
  t.notOk(big.reserve('10.0.39.15').ok, 'the most recent address is still tracked')
})

t.test('InFlightLimit', async (t) => {
  const limit = new InFlightLimit(2)
  t.equal(limit.current, 0)
  t.notOk(limit.saturated)
  t.ok(limit.tryAcquire())
  t.notOk(limit.saturated)
  t.ok(limit.tryAcquire())
  t.ok(limit.saturated, 'saturated at the bound')
  t.equal(limit.current, 2)
  t.notOk(limit.tryAcquire(), 'past the bound: refused')
  t.equal(limit.current, 2, 'a refused acquire does not count')
  limit.release()
  t.notOk(limit.saturated)
  t.ok(limit.tryAcquire(), 'a released slot can be taken again')
  limit.release()
  limit.release()
  limit.release()
  t.equal(limit.current, 0, 'never below zero')
  t.ok(limit.tryAcquire() && limit.tryAcquire() && !limit.tryAcquire(), 'extra releases do not raise the bound')
})

// ---------------------------------------------------------------------------------------------
// (b) HTTP limits over real sockets
// ---------------------------------------------------------------------------------------------

t.test('a token-guessing loop is throttled: 401 x5, then 429 even for the right token', async (t) => {
  const clock = new ManualClock({ wallMs: Date.now() })
  const server = await start(t, { argv: ['--failed-upgrade-limit', '5'], now: clock.wallMs })
  t.equal(server.config.limits.failedUpgradesPerMinute, 5)

  for (let i = 0; i < 5; i++) {
    const r = await refuse(`${server.wsBase}?token=${canary('guess')}`)
    t.same(r, { status: 401, body: 'invalid generated websocket query token' }, `wrong token #${i + 1}: 401`)
  }
  for (let i = 0; i < 3; i++) {
    const r = await refuse(`${server.wsBase}?token=${canary('guess')}`)
    t.equal(r.status, 429, `wrong token #${6 + i}: 429`)
  }
  const right = await tryUpgrade(server.wsUrl)
  if ('ws' in right) right.ws.terminate()
  t.ok('refused' in right, 'the right token gets no socket while the address is blocked')
  if ('refused' in right) {
    t.equal(right.refused.status, 429, 'the right token gets 429 too: a blocked address learns nothing')
    t.not(right.refused.body, 'invalid generated websocket query token', 'the body says nothing about the token')
  }
  const missing = await refuse(server.wsBase)
  t.equal(missing.status, 429, 'no token at all: 429 as well')

  const rejected = server.logs.authEvents().filter((l) => l.outcome === 'rejected')
  const throttled = rejected.filter((l) => l.reason === 'too many failed upgrades')
  t.equal(throttled.length, 5, 'each throttled attempt writes one ws.auth rejected line')
  t.equal(rejected.length - throttled.length, 5, 'the five guesses were logged with their own reason')
  t.ok(throttled.every((l) => l.mode === 'queryToken' && typeof l.remote === 'string'), 'with mode and remote')
  t.equal(server.logs.authEvents().filter((l) => l.outcome === 'accepted').length, 0, 'nothing accepted')

  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 200, 'health probes are not blocked by the upgrade throttle')

  clock.advance(61_000)
  const client = await open(t, server)
  const init = await client.initialize('after-window', '1.0.0')
  t.type(init.userAgent, 'string', 'after the window the right token works again')
  const again = await refuse(`${server.wsBase}?token=${canary('guess')}`)
  t.equal(again.status, 401, 'and a wrong token is counted afresh (401)')
})

t.test('--http-rate-limit 3: the 4th health probe in a minute gets 429; upgrades count too', async (t) => {
  const server = await start(t, { argv: ['--http-rate-limit', '3'] })
  t.equal(server.config.limits.httpPerMinute, 3)
  for (let i = 0; i < 3; i++) {
    const r = await httpGet(`${server.httpBase}/healthz`)
    t.equal(r.status, 200, `probe #${i + 1}: 200`)
  }
  const fourth = await httpGet(`${server.httpBase}/healthz`)
  t.equal(fourth.status, 429, 'probe #4: 429')
  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.equal(ready.status, 429, '/readyz shares the budget of the address')
  const up = await tryUpgrade(server.wsUrl)
  if ('ws' in up) up.ws.terminate()
  t.ok('refused' in up && up.refused.status === 429, 'an upgrade with the right token: 429 instead of 101')
  // Every upgrade decision logs one ws.auth line, this refusal included.
  const decisions = server.logs.authEvents()
  t.equal(decisions.length, 1, 'the rate-limited upgrade wrote one ws.auth line')
  t.match(decisions[0] ?? {}, { event: 'ws.auth', outcome: 'rejected', mode: 'queryToken', reason: String, remote: String }, 'rejected, with mode, reason and remote')
})

t.test('--http-rate-limit 3: upgrade attempts are counted by themselves', async (t) => {
  const server = await start(t, { argv: ['--http-rate-limit', '3'] })
  const first = await open(t, server)
  t.type((await first.initialize()).userAgent, 'string', 'upgrade #1 accepted')
  const wrong = await refuse(`${server.wsBase}?token=${canary('guess')}`)
  t.equal(wrong.status, 401, 'upgrade #2 (wrong token) is counted and answered 401')
  const third = await open(t, server)
  t.type((await third.initialize()).userAgent, 'string', 'upgrade #3 accepted')
  const fourth = await tryUpgrade(server.wsUrl)
  if ('ws' in fourth) fourth.ws.terminate()
  t.ok('refused' in fourth && fourth.refused.status === 429, 'upgrade #4: 429 instead of 101')
  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 429, 'and health probes share the spent budget')
  t.same(
    server.logs.authEvents().map((l) => l.outcome),
    ['accepted', 'rejected', 'accepted', 'rejected'],
    'one ws.auth line per upgrade decision, the rate-limited one included',
  )
  // Open sockets are not affected by the HTTP limit.
  const echoBack = await first.request('initialize', { clientInfo: { name: 'x', title: null, version: '1' } })
  t.same(echoBack.error, { code: -32600, message: 'Already initialized' }, 'established connections keep working')
})

t.test('default limits never throttle a normal IDE', async (t) => {
  // Passing the product default explicitly (the helper turns the throttle off otherwise).
  const server = await start(t, { argv: ['--failed-upgrade-limit', '30'], extraMethods: [echo] })
  t.same(
    server.config.limits,
    {
      httpPerMinute: 600,
      failedUpgradesPerMinute: 30,
      rpcRatePerSecond: 1000,
      rpcBurst: 2000,
      maxInFlight: 4096,
      maxInFlightPerConnection: 128,
      maxOutboundBufferBytes: 16 * 1024 * 1024,
      maxConnections: 0,
      maxPendingPerClient: 32,
      headerTimeoutMs: 10_000,
    },
    'product defaults',
  )

  const probes = await Promise.all(
    Array.from({ length: 50 }, (_, i) => httpGet(`${server.httpBase}/${i % 2 === 0 ? 'healthz' : 'readyz'}`)),
  )
  t.same(
    probes.map((p) => p.status),
    Array.from({ length: 50 }, () => 200),
    '50 health probes: all 200',
  )

  // An IDE retrying with a stale token a few times is not locked out.
  for (let i = 0; i < 3; i++) t.equal((await refuse(`${server.wsBase}?token=${canary('stale')}`)).status, 401)

  const clients = await Promise.all(Array.from({ length: 20 }, () => open(t, server)))
  await Promise.all(clients.map((c, i) => c.initialize(`ide-${i}`, '1.0.0')))
  const replies = await Promise.all(
    clients.map((c) => Promise.all(Array.from({ length: 100 }, () => c.request('test/echo')))),
  )
  const all = replies.flat()
  t.equal(all.length, 2000)
  const failed = all.filter((r) => !('result' in r))
  t.same(failed.slice(0, 3), [], '20 connections x 100 requests: every one answered with a result')
  t.equal(server.logs.lines.filter((l) => l.level === WARN && /over the/.test(String(l.msg))).length, 0, 'no shedding WARN')
})

// ---------------------------------------------------------------------------------------------
// (c) per-connection token bucket
// ---------------------------------------------------------------------------------------------

t.test('a flooding connection is not read until its bucket refills: its own send buffer fills, others are served, then it is read again', async (t) => {
  const clock = new ManualClock({ monotonicMs: 9_000_000 })
  const server = await start(t, { argv: ['--rpc-rate', '10', '--rpc-burst', '10'], timers: clock, extraMethods: [echo] })
  const flooder = await open(t, server)
  await flooder.initialize('flooder', '1.0.0') // 9 tokens left
  const other = await open(t, server)
  await other.initialize('other', '1.0.0')
  const results = (): number => flooder.frames.filter((f) => f.includes('"result":{"ok":true}')).length

  // ~1 KiB requests as fast as the socket takes them, until this side's own buffer holds 1 MiB:
  // the kernel's buffers on both sides are full, so the server has stopped reading.
  const frame = JSON.stringify({ id: 'flood', method: 'test/echo', params: { pad: 'p'.repeat(1000) } })
  let sent = 0
  while (flooder.ws.bufferedAmount < 1024 * 1024 && sent < 200_000) {
    for (let i = 0; i < 500; i++) flooder.sendRaw(frame)
    sent += 500
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  t.ok(flooder.ws.bufferedAmount >= 1024 * 1024, `the server stopped reading the flooder: ${flooder.ws.bufferedAmount} bytes wait in its own buffer after ${sent} frames`)
  t.ok(clock.pendingDelays().includes(1000), 'for the time its bucket takes to refill (10 at 10/s: 1 s)')
  const echoed = await other.request('test/echo', undefined, 'other-1')
  t.same(echoed, { id: 'other-1', result: { ok: true } }, 'another connection is served meanwhile')
  t.equal(results(), 9, 'the flooder got what its bucket held')
  const answered = flooder.frames.length - 1 // the initialize answer aside
  t.ok(flooder.frames.slice(1).every((f) => f.includes('"result":{"ok":true}') || f.includes('-32001')), 'and -32001 for the rest of what was read')
  t.ok(answered < sent / 4, `${answered} of ${sent} frames were read and answered, not every one sent`)

  clock.advance(1000)
  // Frames that waited in TCP are read: the refilled bucket's ten are served.
  await until(() => results() >= 19, 'the flooder to be read and served again after the refill')
  t.equal(flooder.ws.readyState, flooder.ws.OPEN, 'flooding never closes the connection')
  flooder.ws.terminate()
})

t.test('a connection flooding junk over its rate is not read either (junk has no answer to refuse, but costs a read)', async (t) => {
  const clock = new ManualClock({ monotonicMs: 9_500_000 })
  const server = await start(t, { argv: ['--rpc-rate', '10', '--rpc-burst', '10'], timers: clock, extraMethods: [echo] })
  const flooder = await open(t, server)
  await flooder.initialize('junk', '1.0.0')
  const junk = `not json ${'j'.repeat(1000)}`
  let sent = 0
  while (flooder.ws.bufferedAmount < 1024 * 1024 && sent < 200_000) {
    for (let i = 0; i < 500; i++) flooder.sendRaw(junk)
    sent += 500
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  t.ok(flooder.ws.bufferedAmount >= 1024 * 1024, `the server stopped reading the junk: ${flooder.ws.bufferedAmount} bytes wait in the flooder's own buffer after ${sent} frames`)
  t.ok(clock.pendingDelays().includes(1000), 'until its bucket has refilled')
  // Behind the junk, one request: each refill lets a bucket's worth and `FLOOD_FRAMES` more be
  // read, so it is reached after the junk ahead of it, refill after refill, and answered.
  flooder.sendRaw(JSON.stringify({ id: 'after-junk', method: 'test/echo' }))
  const answered = () => flooder.frames.some((f) => f.includes('"after-junk"'))
  let refills = 0
  while (!answered() && refills < 1_000) {
    clock.advance(1000)
    refills++
    await until(() => answered() || clock.pendingDelays().includes(1000), 'the next pause or the answer')
  }
  t.ok(answered(), `the request behind the junk was answered after ${refills} refills`)
  t.ok(refills > 1, 'the junk was read a bucket at a time, not all at once')
  t.equal(flooder.ws.readyState, flooder.ws.OPEN, 'junk over the rate never closes the connection')
  flooder.ws.terminate()
})

t.test('--rpc-rate 10 --rpc-burst 5: requests over the bucket get -32001, notifications are dropped', async (t) => {
  const clock = new ManualClock({ monotonicMs: 5_000_000 })
  const server = await start(t, { argv: ['--rpc-rate', '10', '--rpc-burst', '5'], timers: clock, extraMethods: [echo] })
  t.equal(server.config.limits.rpcRatePerSecond, 10)
  t.equal(server.config.limits.rpcBurst, 5)
  const client = await open(t, server)
  await client.initialize('bucket', '1.0.0') // takes one of the five tokens

  // 8 at once: 4 tokens left.
  const mark = server.logs.lines.length
  const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => client.request('test/echo', undefined, 100 + i)))
  t.same(
    burst.slice(0, 4).map((r) => r.result),
    [{ ok: true }, { ok: true }, { ok: true }, { ok: true }],
    'burst minus the initialize: 4 answered normally',
  )
  for (let i = 4; i < 8; i++) {
    t.same(burst[i], { error: OVERLOADED, id: 100 + i }, `request ${100 + i}: -32001`)
    t.ok(client.frames.includes(overloadedFrame(100 + i)), `request ${100 + i}: exact codex frame`)
  }
  t.ok(warns(server, mark, 'request over the connection rate limit answered with -32001').length >= 1, 'shedding logged at WARN')

  // Without time passing the bucket stays empty.
  const still = await client.request('test/echo', undefined, 'still-empty')
  t.same(still, { error: OVERLOADED, id: 'still-empty' }, 'no refill without time')

  // One second at 10/s refills, capped at the burst of 5.
  clock.advance(1000)
  const refill = await Promise.all(Array.from({ length: 6 }, (_, i) => client.request('test/echo', undefined, 200 + i)))
  t.same(
    refill.slice(0, 5).map((r) => r.result),
    Array.from({ length: 5 }, () => ({ ok: true })),
    'after 1 s requests succeed again (5 = burst)',
  )
  t.same(refill[5], { error: OVERLOADED, id: 205 }, 'the sixth is over the burst')

  // Notifications: the bucket is full again after another second; 8 notifications use 5
  // tokens, the other 3 are dropped without a reply and with a WARN.
  clock.advance(1000)
  const nmark = server.logs.lines.length
  const framesBefore = client.frames.length
  for (let i = 0; i < 8; i++) client.notify('initialized')
  // Frames are handled in order: this reply proves all eight were handled (and the bucket is empty).
  const sync = await client.request('test/echo', undefined, 'sync')
  t.same(sync, { error: OVERLOADED, id: 'sync' }, 'the notifications used up the bucket')
  clock.advance(1000)
  const marker = await client.request('test/echo', undefined, 'marker')
  t.same(marker, { id: 'marker', result: { ok: true } }, 'the connection is still served')
  t.equal(client.frames.length, framesBefore + 2, 'no reply to any notification, dropped or not')
  const handled = server.logs.lines.slice(nmark).filter((l) => l.msg === 'client notification')
  t.equal(handled.length, 5, 'five notifications were within the bucket')
  t.ok(warns(server, nmark, 'notification over the connection rate limit dropped').length >= 1, 'the dropped ones: WARN')

  // The limit is per connection: another client has its own full bucket.
  const other = await open(t, server)
  await other.initialize('bucket-2', '1.0.0')
  const otherReplies = await Promise.all(Array.from({ length: 4 }, () => other.request('test/echo')))
  t.ok(otherReplies.every((r) => 'result' in r), 'a second connection is not affected')
  t.equal(client.ws.readyState, client.ws.OPEN, 'overload never closes the connection')
})

// ---------------------------------------------------------------------------------------------
// (d) process-wide in-flight bound
// ---------------------------------------------------------------------------------------------

t.test('--max-in-flight 2: a third request from another connection gets -32001; /readyz 503 while saturated', async (t) => {
  const { slow, release, entered } = gatedSlowMethod()
  const server = await start(t, { argv: ['--max-in-flight', '2'], extraMethods: [slow, echo] })
  t.teardown(() => release())
  t.equal(server.config.limits.maxInFlight, 2)

  const a = await open(t, server)
  const b = await open(t, server)
  await a.initialize('holder', '1.0.0')
  await b.initialize('bystander', '1.0.0')
  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.same([ready.status, JSON.parse(ready.body)], [200, { status: 'ready' }], 'ready before load')

  const s1 = a.request('test/slow', undefined, 's1')
  const s2 = a.request('test/slow', undefined, 's2')
  await until(() => entered() === 2, 'both slow calls to enter their handler')
  t.equal(server.app.inFlight.current, 2, 'two requests in flight')
  t.ok(server.app.inFlight.saturated)

  const mark = server.logs.lines.length
  const shed = await b.request('test/echo', undefined, 'shed')
  t.same(shed, { error: OVERLOADED, id: 'shed' }, 'a request from another connection: -32001')
  t.ok(b.frames.includes(overloadedFrame('shed')), 'exact codex frame')
  t.ok(warns(server, mark, 'request over the process in-flight bound answered with -32001').length >= 1, 'logged at WARN')
  const third = await a.request('test/echo', undefined, 'own')
  t.same(third, { error: OVERLOADED, id: 'own' }, 'and from the same connection')

  const overloaded = await httpGet(`${server.httpBase}/readyz`)
  t.equal(overloaded.status, 503, '/readyz: 503 while saturated')
  t.same(JSON.parse(overloaded.body), { status: 'overloaded' }, 'saturated is overloaded, not draining')
  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 200, '/healthz stays 200 (the process is alive)')

  release()
  t.same(await s1, { id: 's1', result: { done: true } }, 'slow call 1 completes normally')
  t.same(await s2, { id: 's2', result: { done: true } }, 'slow call 2 completes normally')
  t.equal(server.app.inFlight.current, 0, 'bound released')
  const readyAgain = await httpGet(`${server.httpBase}/readyz`)
  t.same([readyAgain.status, JSON.parse(readyAgain.body)], [200, { status: 'ready' }], '/readyz: 200 once released')
  const after = await b.request('test/echo', undefined, 'after')
  t.same(after, { id: 'after', result: { ok: true } }, 'requests are served again')
})

t.test('--max-in-flight-per-connection 2: a third request from that connection gets -32001, other connections are served', async (t) => {
  const { slow, release, entered } = gatedSlowMethod()
  const server = await start(t, { argv: ['--max-in-flight-per-connection', '2'], extraMethods: [slow, echo] })
  t.teardown(() => release())
  t.equal(server.config.limits.maxInFlightPerConnection, 2)

  const a = await open(t, server)
  const b = await open(t, server)
  await a.initialize('holder', '1.0.0')
  await b.initialize('bystander', '1.0.0')

  const s1 = a.request('test/slow', undefined, 's1')
  const s2 = a.request('test/slow', undefined, 's2')
  await until(() => entered() === 2, 'both slow calls to enter their handler')
  const mark = server.logs.lines.length
  const shed = await a.request('test/echo', undefined, 'shed')
  t.same(shed, { error: OVERLOADED, id: 'shed' }, 'a third request from the same connection: -32001')
  t.ok(a.frames.includes(overloadedFrame('shed')), 'exact codex frame')
  t.ok(warns(server, mark, 'request over the connection in-flight bound answered with -32001').length >= 1, 'logged at WARN')
  t.equal(server.app.inFlight.current, 2, 'the refused request took no process-wide slot')

  const other = await Promise.all([b.request('test/echo', undefined, 'b1'), b.request('test/echo', undefined, 'b2')])
  t.same(other, ['b1', 'b2'].map((id) => ({ id, result: { ok: true } })), 'another connection is served up to its own bound')
  const ready = await httpGet(`${server.httpBase}/readyz`)
  t.same([ready.status, JSON.parse(ready.body)], [200, { status: 'ready' }], 'one full connection does not make the process unready')

  release()
  t.same(await s1, { id: 's1', result: { done: true } }, 'slow call 1 completes normally')
  t.same(await s2, { id: 's2', result: { done: true } }, 'slow call 2 completes normally')
  t.equal(server.app.inFlight.current, 0, 'slots released')
  const after = await a.request('test/echo', undefined, 'after')
  t.same(after, { id: 'after', result: { ok: true } }, 'the connection is served again once its requests were answered')
  t.equal(a.ws.readyState, a.ws.OPEN, 'the bound never closes the connection')
})

/** One raw upgrade attempt (optionally from another local address): its status and headers; a 101 is closed at once. */
function rawUpgrade(port: number, path: string, headers: Record<string, string> = {}, localAddress?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path,
      // A fresh socket each: the server ends refused upgrades, a pooled socket would be stale.
      agent: false,
      ...(localAddress ? { localAddress } : {}),
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64'), ...headers },
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
    })
    req.on('response', (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('the failed-upgrade budget holds under concurrency, in every mode, and cannot be dodged from another loopback address', async (t) => {
  const dir = tempDir('throttle', t)
  const secret = canary('throttle-shared-secret-padding-to-thirty-two-bytes')
  const secretFile = join(dir, 'secret')
  await writeFile(secretFile, secret, { mode: 0o600 })
  const capability = canary('capability')
  const modes: { name: string; argv: string[]; bad: () => Promise<[string, Record<string, string>]>; good: (server: TestServer) => Promise<[string, Record<string, string>]> }[] = [
    { name: 'query token', argv: [], bad: async () => [`/?token=${canary('bad')}`, {}], good: async (s) => [`/?token=${s.token}`, {}] },
    {
      name: 'capability token',
      argv: ['--ws-auth', 'capability-token', '--ws-token-sha256', sha256(Buffer.from(capability)).toString('hex')],
      bad: async () => ['/', { Authorization: `Bearer ${canary('bad')}` }],
      good: async () => ['/', { Authorization: `Bearer ${capability}` }],
    },
    {
      name: 'signed bearer',
      argv: ['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile],
      // Well-formed tokens with a wrong key: each one costs a real HMAC verification.
      bad: async () => ['/', { Authorization: `Bearer ${await signJwt(canary('wrong-key-padding-to-thirty-two-bytes'), { exp: nowSeconds() + 600 })}` }],
      good: async () => ['/', { Authorization: `Bearer ${await signJwt(secret, { exp: nowSeconds() + 600 })}` }],
    },
  ]
  for (const mode of modes) {
    const clock = new ManualClock({ wallMs: Date.now() })
    const server = await start(t, { argv: ['--failed-upgrade-limit', '5', ...mode.argv], now: clock.wallMs })
    const attempts = await Promise.all(Array.from({ length: 200 }, () => mode.bad()))
    const results = await Promise.all(attempts.map(([path, headers]) => rawUpgrade(server.port, path, headers)))
    const evaluated = results.filter((r) => r.status === 401).length
    t.equal(evaluated, 5, `${mode.name}: 200 concurrent bad credentials, exactly the budget of 5 evaluated`)
    t.equal(results.filter((r) => r.status === 429).length, 195, `${mode.name}: the rest refused before evaluation`)

    const [goodPath, goodHeaders] = await mode.good(server)
    const blocked = await rawUpgrade(server.port, goodPath, goodHeaders)
    t.equal(blocked.status, 429, `${mode.name}: the right credential waits too`)
    t.equal(blocked.headers['retry-after'], '12', `${mode.name}: Retry-After is the wait for one token (60 s / 5)`)
    t.equal(blocked.headers['x-ratelimit-limit'], '5', `${mode.name}: the rate-limit headers describe the limit that fired`)
    t.equal(blocked.headers['x-ratelimit-remaining'], '0')
    const dodge = await rawUpgrade(server.port, goodPath, goodHeaders, '127.0.0.2')
    t.equal(dodge.status, 429, `${mode.name}: another loopback address shares the budget`)

    clock.advance(12_000)
    const back = await rawUpgrade(server.port, goodPath, goodHeaders, '127.0.0.3')
    t.equal(back.status, 101, `${mode.name}: 12 s later the right credential connects (not a minute)`)
    const again = await rawUpgrade(server.port, goodPath, goodHeaders)
    t.equal(again.status, 101, `${mode.name}: an admitted upgrade gives its token back`)
  }
})

/** A socket that connects from `localAddress` and sends part of a request head, never the rest. */
function stalledSocket(t: Test, port: number, localAddress = '127.0.0.1'): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port, localAddress }, () => {
      socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n')
      resolve({ socket, closed })
    })
    const closed = new Promise<void>((done) => socket.once('close', () => done()))
    // Read what the server answers (a 408 at the header timeout), so its end is seen.
    socket.resume()
    socket.on('error', () => undefined)
    socket.once('error', reject)
    t.teardown(() => socket.destroy())
  })
}

t.test('pre-auth resources are bounded: stalled sockets, the connection cap, health kept reachable', async (t) => {
  // A header timeout far beyond the test: every socket the guard leaves open stays open until
  // this side closes it (the timeout itself is the next test's).
  const server = await start(t, { argv: ['--max-connections', '5', '--max-pending-per-client', '10', '--header-timeout-ms', '120000'] })
  t.equal(server.app.connectionCap, 5)
  // 300 sockets that never finish their request headers, from one (loopback) client.
  const stalled = await Promise.all(Array.from({ length: 300 }, (_, i) => stalledSocket(t, server.port, `127.0.0.${1 + (i % 3)}`)))
  // The server accepts from its backlog after the clients see their connects: wait for all 300.
  await until(() => server.app.socketGuard.closedCount + server.app.socketGuard.size >= 300, 'the server to accept every socket', 30_000)
  t.ok(server.app.socketGuard.pendingCount <= 10, `one client holds at most 10 pending sockets (${server.app.socketGuard.pendingCount}), whichever loopback address it uses`)
  t.ok(server.app.socketGuard.closedCount >= 290, `the oldest were closed (${server.app.socketGuard.closedCount})`)
  const health = await httpGet(`${server.httpBase}/healthz`)
  t.equal(health.status, 200, 'a health probe from the same client still gets through')

  // The cap: five WebSocket connections, the sixth upgrade is refused; health still answers.
  const clients = await Promise.all(Array.from({ length: 5 }, () => open(t, server)))
  await Promise.all(clients.map((c) => c.initialize('cap', '1.0.0')))
  const sixth = await tryUpgrade(server.wsUrl)
  if ('ws' in sixth) sixth.ws.terminate()
  t.ok('refused' in sixth && sixth.refused.status === 503 && sixth.refused.body === 'too many connections', 'past the cap: 503 too many connections')
  t.equal((await httpGet(`${server.httpBase}/healthz`)).status, 200, 'the headroom is kept for health probes')
  clients[0]!.ws.close()
  await until(() => server.app.websocketServer.clients.size < 5, 'the closed connection to go')
  const again = await tryUpgrade(server.wsUrl)
  t.ok('ws' in again, 'a freed slot is used again')
  if ('ws' in again) again.ws.terminate()

  // The guard's survivors are still pending: this side ends them, so the server can close.
  t.ok(server.app.socketGuard.pendingCount > 0, 'the stalled sockets the guard kept are still waiting')
  for (const s of stalled) s.socket.destroy()
  await Promise.all(stalled.map((s) => s.closed))
  await until(() => server.app.socketGuard.pendingCount === 0, 'the server to see them go')
})

t.test('the header timeout closes stalled sockets without anyone sending anything', async (t) => {
  const server = await start(t, { argv: ['--max-pending-per-client', '10', '--header-timeout-ms', '100'] })
  const stalled = await Promise.all(Array.from({ length: 5 }, () => stalledSocket(t, server.port)))
  await Promise.all(stalled.map((s) => s.closed))
  t.equal(server.app.socketGuard.pendingCount, 0, 'every stalled socket was closed by the header timeout')
  t.equal(server.app.socketGuard.closedCount, 0, 'by the timeout, not by the guard')
})

t.test('connectionCap and openFileLimit', async (t) => {
  t.equal(connectionCap(0, 20_000, 1), 20_000 - 320, 'auto: the open-file limit less the headroom')
  t.equal(connectionCap(0, 20_000, 2), Math.floor((20_000 - 320) / 2), 'two files a connection with an engine')
  t.equal(connectionCap(100, 20_000, 2), 100, 'a configured cap below the limit')
  t.equal(connectionCap(50_000, 1024, 1), 1024 - 320, 'a configured cap above the limit is lowered')
  t.equal(connectionCap(0, null, 1), 10_000, 'no limit known: a fixed default')
  t.equal(connectionCap(0, 100, 2), 1, 'never below one')
  const limits = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n'
  t.equal(openFileLimit(() => limits), 1024, 'the soft limit')
  t.equal(openFileLimit(() => limits.replace('1024 ', 'unlimited ').replace('1024', 'unlimited')), Number.MAX_SAFE_INTEGER)
  t.equal(openFileLimit(() => 'garbage'), null)
  t.equal(openFileLimit(() => { throw new Error('ENOENT') }), null)
  t.type(openFileLimit(), 'number', 'this machine has /proc')
})
