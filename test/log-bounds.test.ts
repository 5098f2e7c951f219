/**
 * Bounded logging: what one client can make the gateway write. Every inbound frame is charged
 * to the connection's rate limit, WARN lines about frames are bounded per connection (and what
 * was suppressed is counted), and a client-chosen value never reaches a log line or an error
 * message whole or unescaped. Units first, then over real sockets on a manual clock.
 */
import t from 'tap'
import { createLogger } from '../src/log/logger.js'
import { WARN_LINES_PER_WINDOW, WARN_WINDOW_MS, WarnBudget } from '../src/log/warn-budget.js'
import { OVERLOADED_MESSAGE } from '../src/rpc/errors.js'
import { FLOOD_FRAMES } from '../src/rpc/session.js'
import { boundedClientText, CLIENT_TEXT_MAX, loggableId } from '../src/util/client-text.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { connect, type RpcClient } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { LogCapture, startServer, type LogLine, type StartOptions, type TestServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test
type Json = Record<string, unknown>

const WARN = 40
const OVERLOADED = { code: -32001, message: OVERLOADED_MESSAGE }
const CLIENT_INFO = { name: 'log-bounds', title: null, version: '1.0.0' }
const FRAME_WARNS = new Set(['ignored binary WebSocket frame', 'dropped malformed JSON-RPC frame', 'dropped late or unknown reply to a server request', 'dropped late or unknown error reply to a server request'])

/** A server on `options` and one initialized client (one token of its bucket taken); both end with the test. */
async function initializedClient(t: Test, options: StartOptions): Promise<{ server: TestServer; client: RpcClient }> {
  const server = await startServer(options)
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  await client.initialize('log-bounds', '1.0.0')
  return { server, client }
}

/** A request that is answered in order after every frame sent before it (`Already initialized`, or -32001). */
function ping(client: RpcClient, id: string): Promise<Json> {
  return client.request('initialize', { clientInfo: CLIENT_INFO }, id)
}

function warnsSince(server: TestServer, from: number): LogLine[] {
  return server.logs.lines.slice(from).filter((l) => l.level === WARN)
}

t.test('boundedClientText: ordinary values unchanged; long ones capped with a marker; controls and backticks escaped', async (t) => {
  t.equal(boundedClientText('thread/start'), 'thread/start', 'an ordinary method is kept as it is')
  t.equal(boundedClientText('x'.repeat(CLIENT_TEXT_MAX)), 'x'.repeat(CLIENT_TEXT_MAX), 'exactly the cap: kept')
  t.equal(boundedClientText('x'.repeat(10_000)), `${'x'.repeat(CLIENT_TEXT_MAX)}…(+${10_000 - CLIENT_TEXT_MAX} chars)`, 'capped, with how much was cut')
  t.equal(boundedClientText('a\nb\x1b[31m`c`\u2028\x7f'), 'a\\x0ab\\x1b[31m\\x60c\\x60\\u2028\\x7f', 'controls, separators, DEL and backticks escaped')
  t.equal(boundedClientText('ok \u{1f600} é'), 'ok \u{1f600} é', 'a surrogate pair and non-ASCII letters are text, not escaped')
  t.equal(boundedClientText('a\ud800b'), 'a\\ud800b', 'a lone surrogate is escaped')
  const escapes = boundedClientText('\n'.repeat(100))
  t.equal(escapes, `${'\\x0a'.repeat(CLIENT_TEXT_MAX / 4)}…(+${100 - CLIENT_TEXT_MAX / 4} chars)`, 'the cap counts the escapes: no escape is cut in half')
  t.equal(boundedClientText('y'.repeat(CLIENT_TEXT_MAX - 1) + '\u{1f600}'), `${'y'.repeat(CLIENT_TEXT_MAX - 1)}…(+2 chars)`, 'a pair that does not fit is not split')
  t.equal(loggableId(7), 7)
  t.equal(loggableId('z'.repeat(200)), `${'z'.repeat(CLIENT_TEXT_MAX)}…(+136 chars)`)
  t.equal(loggableId({ a: 1 }), null)
})

t.test('WarnBudget: a bounded number of lines per window, the next one carries the suppressed count, flush reports the rest', async (t) => {
  const clock = new ManualClock({ monotonicMs: 1_000 })
  const logs = new LogCapture()
  const budget = new WarnBudget(createLogger('info', logs), clock.monotonicMs)
  for (let i = 0; i < 1000; i++) budget.warn({ i }, 'junk')
  t.equal(logs.lines.length, WARN_LINES_PER_WINDOW, 'only the window allowance is written')
  t.notOk(logs.lines.some((l) => 'suppressed' in l), 'nothing was suppressed before them')
  clock.advance(WARN_WINDOW_MS - 1)
  budget.warn({ i: 'late' }, 'junk')
  t.equal(logs.lines.length, WARN_LINES_PER_WINDOW, '1 ms before the window ends: still suppressed')
  clock.advance(1)
  budget.warn({ i: 'next' }, 'junk')
  t.match(logs.lines.at(-1), { level: WARN, msg: 'junk', i: 'next', suppressed: 1000 - WARN_LINES_PER_WINDOW + 1 }, 'the next window starts with the count')
  budget.warn({ i: 'again' }, 'junk')
  t.notOk('suppressed' in (logs.lines.at(-1) ?? {}), 'the count is reported once')
  for (let i = 0; i < 100; i++) budget.warn({}, 'junk')
  const before = logs.lines.length
  budget.flush()
  t.match(logs.lines.slice(before), [{ level: WARN, suppressed: 100 - (WARN_LINES_PER_WINDOW - 2) }], 'flush reports what is still uncounted')
  budget.flush()
  t.equal(logs.lines.length, before + 1, 'and only once')
})

t.test('a bucket of junk frames and more on one connection: bounded WARN lines, the suppressed count reported, every frame charged', async (t) => {
  const clock = new ManualClock({ monotonicMs: 9_000_000 })
  // The default bucket (1000/s, burst 2000): time stands still, so 2000 frames are within it.
  const { server, client } = await initializedClient(t, { timers: clock }) // one token
  const burst = server.config.limits.rpcBurst
  const mark = server.logs.lines.length
  // All that the bucket holds, then junk over it — short of the `FLOOD_FRAMES` in a row after
  // which the socket would not be read until the bucket refills (limits.test.ts tests that),
  // so the request after the junk is read, and refused.
  const kinds = [
    (): void => client.sendRaw(Buffer.from([0, 1, 2]), true),
    (): void => client.sendRaw('not json at all'),
    (): void => client.sendRaw(JSON.stringify({ id: 'nobody-asked', result: {} })),
    (): void => client.sendRaw(JSON.stringify({ id: 424242, error: { code: 1, message: 'nor this' } })),
  ]
  const total = burst - 1 + FLOOD_FRAMES - 2
  for (let i = 0; i < total; i++) kinds[i % kinds.length]!()
  const after = await ping(client, 'after-junk')
  t.same(after, { error: OVERLOADED, id: 'after-junk' }, 'the junk was charged to the rate limit: the request after it gets -32001')

  const warns = warnsSince(server, mark)
  const perFrame = warns.filter((l) => FRAME_WARNS.has(String(l.msg)))
  t.equal(perFrame.length, WARN_LINES_PER_WINDOW, `per-frame WARN lines: ${WARN_LINES_PER_WINDOW}, not ${total}`)
  t.equal(warns.filter((l) => l.msg === 'frame over the connection rate limit dropped').length, 1, 'the frames over the limit: one line (once a second at most)')
  t.ok(warns.length <= WARN_LINES_PER_WINDOW + 2, `WARN lines in all: ${warns.length}`)

  clock.advance(WARN_WINDOW_MS)
  const next = server.logs.lines.length
  client.sendRaw(Buffer.from([9]), true)
  const sync = await ping(client, 'sync')
  t.equal((sync.error as Json).message, 'Already initialized', 'a minute later the bucket has refilled')
  const withinRate = burst - 1
  t.match(warnsSince(server, next), [{ msg: 'ignored binary WebSocket frame', suppressed: withinRate - WARN_LINES_PER_WINDOW }], 'the next line carries how many were suppressed')

  // More junk, then the connection ends: the lines suppressed since are reported at the close.
  for (let i = 0; i < 100; i++) client.sendRaw('junk')
  await ping(client, 'sync-2')
  const closing = server.logs.lines.length
  await client.close()
  await until(() => server.logs.lines.slice(closing).some((l) => l.msg === 'WARN lines about this connection were suppressed'), 'the summary at close')
  t.match(server.logs.lines.slice(closing).find((l) => l.msg === 'WARN lines about this connection were suppressed'), { level: WARN, suppressed: 100 - (WARN_LINES_PER_WINDOW - 1) })
})

t.test('--rpc-rate 10 --rpc-burst 5: binary, non-JSON frames and unsolicited replies are charged; over the limit they are dropped', async (t) => {
  const clock = new ManualClock({ monotonicMs: 7_000_000 })
  const { server, client } = await initializedClient(t, { argv: ['--rpc-rate', '10', '--rpc-burst', '5'], timers: clock }) // 4 tokens left
  const mark = server.logs.lines.length
  client.sendRaw(Buffer.from([1]), true)
  client.sendRaw('{not json')
  client.sendRaw(JSON.stringify({ id: 'nobody-asked', result: {} }))
  client.sendRaw(JSON.stringify({ id: 31337, error: { code: 1, message: 'x' } }))
  t.same(await ping(client, 'over'), { error: OVERLOADED, id: 'over' }, 'four junk frames used the four tokens: the request gets -32001')
  t.same(
    warnsSince(server, mark).map((l) => l.msg).slice(0, 4),
    ['ignored binary WebSocket frame', 'dropped malformed JSON-RPC frame', 'dropped late or unknown reply to a server request', 'dropped late or unknown error reply to a server request'],
    'each within the limit was logged',
  )

  clock.advance(1000) // refills to the burst of 5
  const refilled = server.logs.lines.length
  for (let i = 0; i < 6; i++) client.sendRaw(Buffer.from([i]), true)
  client.sendRaw('more junk')
  client.sendRaw(JSON.stringify({ id: 'nobody', result: {} }))
  t.same(await ping(client, 'over-again'), { error: OVERLOADED, id: 'over-again' }, 'still over the limit')
  const warns = warnsSince(server, refilled)
  t.equal(warns.filter((l) => l.msg === 'ignored binary WebSocket frame').length, 5, 'five binary frames within the burst were logged')
  t.equal(warns.filter((l) => l.msg === 'frame over the connection rate limit dropped').length, 1, 'those over it were dropped, with one line')
  t.equal(warns.filter((l) => l.msg === 'dropped malformed JSON-RPC frame' || /late or unknown/.test(String(l.msg))).length, 0, 'junk over the limit is not logged frame by frame')
  t.equal(client.frames.length, 3, 'no junk was answered: the frames are the initialize and the two -32001')

  clock.advance(1000)
  const served = await ping(client, 'served')
  t.equal((served.error as Json).message, 'Already initialized', 'after a second the connection is served again')
  t.equal(client.ws.readyState, client.ws.OPEN, 'overload never closes the connection')
})

t.test('a 60 KB string id in an unsolicited reply: the WARN holds a bounded id, no log line is long', async (t) => {
  const { server, client } = await initializedClient(t, { argv: ['--log-level', 'debug'] })
  const secret = canary('id-tail')
  const longId = 'i'.repeat(60_000) + secret
  const mark = server.logs.lines.length
  const rawMark = server.logs.raw.length
  client.sendRaw(JSON.stringify({ id: longId, result: {} }))
  client.sendRaw(JSON.stringify({ id: longId, error: { code: 1, message: 'x' } }))
  // A 60 KB notification method is logged (at debug) bounded too.
  client.notify(`m\n${'n'.repeat(60_000)}`)
  await ping(client, 'sync')
  const warns = warnsSince(server, mark)
  const expectedId = `${'i'.repeat(CLIENT_TEXT_MAX)}…(+${longId.length - CLIENT_TEXT_MAX} chars)`
  t.match(warns, [
    { msg: 'dropped late or unknown reply to a server request', id: expectedId },
    { msg: 'dropped late or unknown error reply to a server request', id: expectedId },
  ])
  const notified = server.logs.lines.slice(mark).find((l) => l.msg === 'client notification')
  t.equal(notified?.method, `m\\x0a${'n'.repeat(CLIENT_TEXT_MAX - 5)}…(+${60_002 - (CLIENT_TEXT_MAX - 3)} chars)`, 'the method: escaped and capped')
  const longest = Math.max(...server.logs.raw.slice(rawMark).map((l) => l.length))
  t.ok(longest < 400, `the longest log line since is ${longest} chars`)
  t.same(leakedCanaries(server.logs.text()), [], 'the cut tail never reached the log')
})

t.test('a 10 KB method name: the unknown-variant message echoes it capped and escaped, keeping codex wording', async (t) => {
  const { client } = await initializedClient(t, {})
  const method = '`\n' + 'm'.repeat(10_000)
  const reply = await client.request(method, {}, 'long-method')
  const message = (reply.error as { code: number; message: string }).message
  t.equal((reply.error as Json).code, -32600)
  const echoed = `\\x60\\x0a${'m'.repeat(CLIENT_TEXT_MAX - 8)}…(+${method.length - (CLIENT_TEXT_MAX - 6)} chars)`
  t.ok(message.startsWith(`Invalid request: unknown variant \`${echoed}\`, expected one of \``), message.slice(0, 200))
  t.notOk(message.includes('\n'), 'no raw newline')
  t.ok(message.length < 2000, `the message is ${message.length} chars`)
  const short = await client.request('nope/never', {}, 'short')
  t.match((short.error as Json).message, /^Invalid request: unknown variant `nope\/never`, expected one of /, 'an ordinary name is echoed exactly')
})
