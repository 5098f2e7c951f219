/**
 * Unit tests of the log scrubbing (src/log/scrub.ts) and the logger (src/log/logger.ts):
 * query values, bearer credentials and authorization headers never reach a log line.
 */
import t from 'tap'
import { Writable } from 'node:stream'
import { canary, holdsCanary, leakedCanaries } from './helpers/canary.js'
import { createLogger } from '../src/log/logger.js'
import { redactUrl, scrubText, shortReason } from '../src/log/scrub.js'
import { REDACTED } from '../src/util/redaction-markers.js'
import type { LogLevel } from '../src/config/types.js'
import { connect, httpGet } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

type Json = Record<string, unknown>

class Capture extends Writable {
  readonly chunks: string[] = []
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.chunks.push(chunk.toString('utf8'))
    done()
  }
  text(): string {
    return this.chunks.join('')
  }
  lines(): Json[] {
    return this.text()
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Json)
  }
  last(): Json {
    const all = this.lines()
    const l = all[all.length - 1]
    if (l === undefined) throw new Error('nothing logged')
    return l
  }
}

function logger(level: LogLevel = 'trace') {
  const capture = new Capture()
  return { log: createLogger(level, capture), capture }
}

t.test('scrubText', async (t) => {
  t.equal(REDACTED, '[redacted]')
  t.equal(scrubText('plain text without secrets'), 'plain text without secrets', 'text without = or bearer is untouched')
  t.equal(scrubText('a = b, x=1'), 'a = b, x=1', 'an = outside a query is untouched')

  const s = canary('scrub')
  t.equal(scrubText(`GET /x?token=${s} HTTP/1.1`), 'GET /x?token=[redacted] HTTP/1.1', 'query value in a request line')
  t.equal(
    scrubText(`Reply was already sent, did you forget to "return reply" in "/?token=${s}" (GET)?`),
    // A quote is legal inside a query value, so redaction runs on to the next space.
    'Reply was already sent, did you forget to "return reply" in "/?token=[redacted] (GET)?',
    'framework message quoting a URL',
  )
  const s2 = canary('scrub2')
  t.equal(scrubText(`/x?a=1&token=${s}&b=${s2}`), '/x?a=[redacted]&token=[redacted]&b=[redacted]', 'every value, keys kept')
  t.equal(scrubText(`/x?a=1&token=${s}#frag`), '/x?[redacted]', 'a fragment makes the query doubtful: none of it is written')
  t.equal(scrubText('see issue #3, then ask?'), 'see issue #3, then ask?', 'a # after a space and a lone ? are prose')
  t.same(leakedCanaries(scrubText(`/x?token=${s};b=${s2}`)), [], '; separated values are gone too')
  t.equal(scrubText(`ws://127.0.0.1:4500/?token=${s}`), 'ws://127.0.0.1:4500/?token=[redacted]', 'a full connection URL')
  t.equal(scrubText(`{"url":"/?token=${s}"}`), '{"url":"/?token=[redacted]', 'inside JSON text (runs to the end: a quote may be part of the value)')

  t.equal(scrubText(`Authorization: Bearer ${s}`), 'Authorization: Bearer [redacted]', 'bearer credential')
  t.equal(scrubText(`authorization: bearer ${s}`), 'authorization: bearer [redacted]', 'lower-case bearer')
  t.equal(scrubText(`BEARER ${s}, next`), 'BEARER [redacted], next', 'upper-case bearer, stops at a comma')
  t.equal(scrubText('Bearer xyz'), 'Bearer [redacted]')
  const jwtLike = `${canary('hdr')}.${canary('pl')}.${canary('sig')}`
  t.same(leakedCanaries(scrubText(`failed with Bearer ${jwtLike}`)), [], 'a whole JWT is removed')
  t.same(leakedCanaries(scrubText(`x ?token=${s} and Bearer ${s2}`)), [], 'both forms in one text')
})

t.test('shortReason: an error message fit for a client, scrubbed and cut short', async (t) => {
  const s = canary('reason')
  t.equal(shortReason(new Error(`refresh failed: Bearer ${s}`)), 'refresh failed: Bearer [redacted]', 'an Error: its message, scrubbed')
  t.equal(shortReason(`GET /x?token=${s}`), 'GET /x?token=[redacted]', 'a string: itself, scrubbed')
  t.equal(shortReason({ message: s }), 'unknown error', 'anything else is not read')
  t.equal(shortReason(undefined), 'unknown error')
  t.equal(shortReason(new Error('x'.repeat(1000))).length, 300, 'at most 300 characters')
})

t.test('redactUrl', async (t) => {
  const s = canary('url')
  t.equal(redactUrl(undefined), undefined)
  t.equal(redactUrl('/'), '/')
  t.equal(redactUrl('/healthz'), '/healthz')
  t.equal(redactUrl('/a=b/c'), '/a=b/c', 'the path is kept even with an =')
  t.equal(redactUrl(`/x?token=${s}`), '/x?token=[redacted]')
  t.equal(redactUrl(`/?token=${s}&token=${canary('url2')}`), '/?token=[redacted]&token=[redacted]', 'duplicate tokens')
  t.equal(redactUrl(`/%zz?token=${s}`), '/%zz?token=[redacted]', 'bad URL')
  t.equal(redactUrl(`/x?foo=1&bar&token=${s}`), '/x?foo=[redacted]&bar&token=[redacted]', 'keys kept, values gone')
  t.equal(redactUrl(`/x?token=${encodeURIComponent(s + '+/=')}`), '/x?token=[redacted]', 'encoded value')
  t.equal(redactUrl('/x?'), '/x?')
})

t.test('redactUrl drops the whole value whatever characters it holds', async (t) => {
  // Node's HTTP parser accepts these raw in a request target, so they reach the serializer.
  for (const ch of ['"', "'", '<', '>']) {
    const s = canary('odd')
    const out = redactUrl(`/?token=x${ch}${s}&next=1`) ?? ''
    t.same(leakedCanaries(out), [], `value containing ${JSON.stringify(ch)}: ${out}`)
  }
})

t.test('req serializer drops query values and headers', async (t) => {
  const { log, capture } = logger()
  const s = canary('req')
  const s2 = canary('req-auth')
  const req = {
    method: 'GET',
    url: `/x?token=${s}`,
    headers: { authorization: `Bearer ${s2}`, cookie: `session=${canary('cookie')}`, host: '127.0.0.1:4500' },
    ip: '127.0.0.1',
    host: '127.0.0.1:4500',
    socket: { remotePort: 54321 },
  }
  log.info({ req }, 'incoming request')
  const line = capture.last()
  t.same(
    line.req,
    { method: 'GET', url: '/x?token=[redacted]', host: '127.0.0.1:4500', remoteAddress: '127.0.0.1', remotePort: 54321 },
    'method, redacted url, host and remote only',
  )
  t.notOk('headers' in (line.req as Json), 'no headers are written')
  t.equal(line.msg, 'incoming request')
  t.same(leakedCanaries(capture.text()), [], 'no canary in the line')

  log.info({ req: { method: 'POST', url: '/plain', ip: '::1', socket: {} } }, 'no query')
  t.equal((capture.last().req as Json).url, '/plain', 'a URL without query is kept as is')
})

t.test('err serializer scrubs URLs and bearers in messages and stacks', async (t) => {
  const { log, capture } = logger()
  const s = canary('err')
  const s2 = canary('err-bearer')
  const err = new Error(`FST_ERR_BAD_URL: '/%zz?token=${s}' is not a valid url component (Bearer ${s2})`)
  t.ok(err.stack?.includes(s), 'the stack quotes the message')
  log.error({ err }, 'request failed')
  const line = capture.last()
  const e = line.err as Json
  t.equal(e.type, 'Error')
  t.match(e.message, /\/%zz\?token=\[redacted\]/, 'message scrubbed')
  t.match(e.message, /Bearer \[redacted\]/, 'bearer in the message scrubbed')
  t.type(e.stack, 'string')
  t.match(e.stack, /token=\[redacted\]/, 'stack scrubbed')
  t.same(leakedCanaries(capture.text()), [], 'no canary in the line')

  // An Error as the first argument goes through the same serializer.
  // The cause chain.
  const s4 = canary('err-cause')
  log.warn({ err: new Error('outer', { cause: new Error(`inner /?token=${s4}`) }) }, 'with cause')
  t.same(leakedCanaries(JSON.stringify(capture.last())), [], 'no canary from a cause')
})

t.test('an Error logged as the only argument is scrubbed, msg included', async (t) => {
  // `log.error(err)` is how @fastify/websocket and close-with-grace log; pino then copies
  // err.message into `msg`, which the serializer never sees.
  const { log, capture } = logger()
  const s = canary('err-direct')
  log.error(new Error(`connect to ws://127.0.0.1:1/?token=${s} failed`))
  const line = capture.last()
  t.match((line.err as Json).message, /token=\[redacted\]/, 'err.message scrubbed')
  t.same(leakedCanaries(JSON.stringify(line)), [], 'no canary anywhere in the line (msg included)')
})

t.test('err serializer does not write the raw request bytes of client errors', async (t) => {
  // Node's clientError carries `rawPacket` (the bytes of the request line and headers);
  // Fastify logs it at trace. Its bytes must not reach a log line in any form.
  const { log, capture } = logger()
  const s = canary('raw-packet')
  const err = Object.assign(new Error('Parse Error: Header overflow'), {
    code: 'HPE_HEADER_OVERFLOW',
    rawPacket: Buffer.from(`GET /?token=${s} HTTP/1.1\r\nAuthorization: Bearer ${s}\r\n`),
  })
  log.trace({ err }, 'client header_overflow')
  const e = capture.last().err as Json
  t.equal(e.code, 'HPE_HEADER_OVERFLOW', 'the error itself is logged')
  const raw = e.rawPacket as { data?: number[] } | string | undefined
  const bytes = typeof raw === 'string' ? raw : raw?.data ? Buffer.from(raw.data).toString('latin1') : ''
  t.same(leakedCanaries(capture.text() + '\n' + bytes), [], 'no canary, not even as serialized bytes')
})

t.test('string messages are scrubbed, whatever the call shape', async (t) => {
  const { log, capture } = logger()
  const s = canary('msg')
  log.info(`upgrade to /x?token=${s} refused`)
  t.equal(capture.last().msg, 'upgrade to /x?token=[redacted] refused', 'plain message')
  log.warn({ connectionId: 'c1' }, `Authorization: Bearer ${s}`)
  t.equal(capture.last().msg, 'Authorization: Bearer [redacted]', 'message after a bindings object')
  t.equal(capture.last().connectionId, 'c1')
  log.info('url %s then %s', `/a?token=${s}`, `Bearer ${s}`)
  t.equal(capture.last().msg, 'url /a?token=[redacted] then Bearer [redacted]', 'format arguments')
  log.debug('Bearer xyz')
  t.equal(capture.last().msg, 'Bearer [redacted]')
  const child = log.child({ connectionId: 'c2' })
  child.error(`late reply for ws://h/?token=${s}`)
  t.equal(capture.last().msg, 'late reply for ws://h/?token=[redacted]', 'child loggers scrub too')
  child.child({ nested: true }).fatal(`bearer ${s}`)
  t.equal(capture.last().msg, 'bearer [redacted]', 'grandchild loggers scrub too')
  t.same(leakedCanaries(capture.text()), [])
})

t.test('redact paths censor authorization keys and tokens', async (t) => {
  const { log, capture } = logger()
  const s = () => canary('redact')
  log.info({ authorization: `Bearer ${s()}` }, 'top-level authorization')
  t.equal(capture.last().authorization, REDACTED)
  log.info({ headers: { authorization: `Bearer ${s()}`, accept: '*/*' } }, 'headers')
  t.same(capture.last().headers, { authorization: REDACTED, accept: '*/*' }, 'headers.authorization censored, others kept')
  log.info({ upstream: { authorization: s() } }, 'one level down')
  t.same(capture.last().upstream, { authorization: REDACTED })
  log.info({ request: { headers: { authorization: s() } } }, 'nested headers')
  t.same(capture.last().request, { headers: { authorization: REDACTED } })
  log.info({ token: s() }, 'token')
  t.equal(capture.last().token, REDACTED)
  log.info({ auth: { token: s(), mode: 'queryToken' } }, 'nested token')
  t.same(capture.last().auth, { token: REDACTED, mode: 'queryToken' })
  const child = log.child({ connectionId: 'c3' })
  child.warn({ authorization: s() }, 'child')
  t.equal(capture.last().authorization, REDACTED, 'children redact too')
  t.same(leakedCanaries(capture.text()), [], 'no canary anywhere')
})

t.test('createLogger honours its level', async (t) => {
  const { log, capture } = logger('info')
  log.debug('hidden')
  log.trace('hidden too')
  t.equal(capture.text(), '', 'below the level nothing is written')
  log.info('shown')
  const line = capture.last()
  t.equal(line.level, 30)
  t.equal(line.msg, 'shown')
  const { log: silent, capture: none } = logger('silent')
  silent.fatal('never')
  t.equal(none.text(), '')
})

t.test('the malformed targets an attack found write no token', async (t) => {
  for (const shape of ['/?x#token=T', '/?token%3DT', '/?a"b=T', '/#token=T', '/%3Ftoken=T', '/%3ftoken=T', '/x%23token=T', '/?token=T#', "/?a'=T", '/?a=1&&token=T', '/?a<b=T']) {
    const s = canary('shape')
    const url = shape.replace('T', s)
    t.same(leakedCanaries(redactUrl(url) ?? ''), [], `redactUrl(${JSON.stringify(shape)}) = ${redactUrl(shape)}`)
    t.same(leakedCanaries(scrubText(`GET ${url} HTTP/1.1`)), [], `scrubText of a request line with ${JSON.stringify(shape)}`)
  }
})

t.test('property: a canary anywhere after a query or fragment separator never survives', async (t) => {
  // A seeded generator, so a failure names a URL that can be replayed.
  let seed = 0x2545f491
  const next = (n: number): number => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  const pieces = ['a', 'token', '=', '&', ';', '#', '?', '%3D', '%3F', '%23', '%26', '"', "'", '<', '>', '/', '%', '+', '.', '~', '-', '[', ']', '%zz', 'x=1']
  const separators = ['?', '#', '%3F', '%3f', '%23', '?a=1&', '?token=', '?x#', '?a"', '/?;']
  let checked = 0
  for (let i = 0; i < 2000; i++) {
    const s = canary('prop')
    const noise = (count: number): string => Array.from({ length: count }, () => pieces[next(pieces.length)]).join('')
    const url = `/${noise(next(3))}${separators[next(separators.length)]}${noise(next(4))}${s}${noise(next(4))}`
    const out = redactUrl(url) ?? ''
    const line = scrubText(`incoming ${url} done`)
    // Only this URL's canary can be in its output: the thousands made before it need no look.
    if (holdsCanary(out, s) || holdsCanary(line, s)) {
      t.fail(`leaked through ${JSON.stringify(url)}: ${out} / ${line}`)
      return
    }
    checked++
  }
  t.equal(checked, 2000, 'every generated URL was redacted')
})

t.test('operator lines: probes at DEBUG, one INFO line per closed connection, one DEBUG line per request', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const since = server.logs.lines.length
  await httpGet(`${server.httpBase}/healthz`)
  await httpGet(`${server.httpBase}/readyz`)
  const probeLines = server.logs.lines.slice(since)
  t.same(
    probeLines.map((l) => [l.level, l.msg]),
    [
      [20, 'probe answered'],
      [20, 'probe answered'],
    ],
    'one DEBUG line per probe, nothing at INFO',
  )

  const client = await connect(server.wsUrl)
  await client.initialize()
  const secret = canary('param')
  const reply = await client.request('account/read', { refreshToken: false, note: secret }, 'req-7')
  t.ok('result' in reply || 'error' in reply)
  const requestLines = server.logs.lines.filter((l) => l.msg === 'request answered')
  t.match(requestLines[0], { level: 20, method: 'initialize', id: 1, outcome: 'result', ms: Number }, 'initialize')
  t.match(requestLines[1], { level: 20, method: 'account/read', id: 'req-7', ms: Number }, 'a request: method, id, time, outcome')
  t.ok(requestLines[1]?.outcome === 'result' || typeof requestLines[1]?.outcome === 'number', 'the outcome is `result` or the error code')
  t.notOk('params' in (requestLines[1] ?? {}), 'never the params')

  await client.close()
  await until(() => server.logs.lines.some((l) => l.msg === 'websocket connection closed'), 'the closing line')
  const closed = server.logs.lines.filter((l) => l.msg === 'websocket connection closed')
  t.equal(closed.length, 1, 'exactly one line per closed connection')
  t.match(closed[0], { level: 30, code: 1005, durationMs: Number, messagesIn: 2, messagesOut: 2, principal: 'queryToken', connectionId: /^c\d+$/ })
  t.same(leakedCanaries(server.logs.text()), [], 'the params never reach the log')
})
