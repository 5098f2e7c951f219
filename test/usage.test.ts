/**
 * The usage payload mapping (`/wham/usage` → `account/rateLimits/read`) and the backend client
 * that fetches it (and the reader that shares concurrent reads), against a fake usage backend on
 * loopback. Every mapped result is checked against codex's own GetAccountRateLimitsResponse
 * schema.
 */
import t from 'tap'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { AddressInfo } from 'node:net'
import { Compile } from '../src/util/typebox.js'
import {
  BackendClient,
  BackendError,
  BackendHttpError,
  BackendNetworkError,
  BackendPayloadError,
  BODY_PREVIEW_CHARS,
} from '../src/account/backend-client.js'
import {
  GetAccountRateLimitsResult,
  RateLimitSnapshot,
  isUsagePayload,
  mapUsage,
  roundPercent,
  usagePayloadProblem,
  windowMinutes,
  type GetAccountRateLimitsResult as Result,
} from '../src/account/usage.js'
import { backendRateLimits } from '../src/account/rate-limits.js'
import { CredentialRejected } from '../src/account/errors.js'
import { canary, leakedCanaries, record } from './helpers/canary.js'
import { FakeUsageBackend } from './helpers/fake-usage-backend.js'
import { until } from './helpers/wait.js'
import { codexErrors } from './helpers/codex-schemas.js'

type Test = import('tap').Test

const CODEX_SCHEMA = 'v2/GetAccountRateLimitsResponse'
const ourResult = Compile(GetAccountRateLimitsResult)
const ourSnapshot = Compile(RateLimitSnapshot)
const SNAPSHOT_KEYS = ['credits', 'limitId', 'limitName', 'planType', 'primary', 'rateLimitReachedType', 'secondary']

/** Maps a payload that must validate, and checks the result against codex's schema and ours. */
function mapChecked(t: Test, payload: unknown, nowMs?: number): Result {
  t.equal(usagePayloadProblem(payload), null, 'payload passes the usage schema')
  if (!isUsagePayload(payload)) throw new Error('payload rejected')
  const result = mapUsage(payload, nowMs === undefined ? {} : { nowMs })
  t.equal(codexErrors(CODEX_SCHEMA, result), '', 'result matches codex GetAccountRateLimitsResponse')
  t.ok(ourResult.Check(result), 'result matches our GetAccountRateLimitsResult schema')
  for (const [key, snapshot] of Object.entries(result.rateLimitsByLimitId)) {
    t.ok(ourSnapshot.Check(snapshot), `snapshot ${key} matches our RateLimitSnapshot schema`)
    // Nullable members are sent as explicit nulls, never left out.
    t.same(Object.keys(snapshot).sort(), SNAPSHOT_KEYS, `snapshot ${key} has every member`)
    for (const w of [snapshot.primary, snapshot.secondary]) {
      if (w !== null) t.same(Object.keys(w).sort(), ['resetsAt', 'usedPercent', 'windowDurationMins'])
    }
    if (snapshot.credits !== null) t.same(Object.keys(snapshot.credits).sort(), ['balance', 'hasCredits', 'unlimited'])
  }
  t.equal(result.rateLimitsByLimitId.codex, result.rateLimits, 'rateLimitsByLimitId.codex is rateLimits')
  return result
}

const FULL_PAYLOAD = {
  plan_type: 'pro',
  rate_limit: {
    allowed: true,
    limit_reached: false,
    primary_window: { used_percent: 42, limit_window_seconds: 18000, reset_after_seconds: 3600, reset_at: 1767225600 },
    secondary_window: { used_percent: 33.6, limit_window_seconds: 604800, reset_after_seconds: 86400, reset_at: 1767744000 },
  },
  credits: { has_credits: true, unlimited: false, balance: '12.50', approx_local_messages: [10, 20] },
  additional_rate_limits: [
    {
      limit_name: 'GPT-5.3-Codex-Spark',
      metered_feature: 'codex_bengalfox',
      rate_limit: {
        allowed: true,
        limit_reached: false,
        primary_window: { used_percent: 7, limit_window_seconds: 18000, reset_after_seconds: 100, reset_at: 1767222100 },
        secondary_window: null,
      },
    },
    { limit_name: 'Code review', metered_feature: 'code_review', rate_limit: null },
  ],
  rate_limit_reached_type: { kind: 'workspace_member_credits_depleted' },
  promo: { something: 'new' },
}

t.test('mapping', async (t) => {
  t.test('full payload: both windows, credits, two additional limits, reached type', async (t) => {
    const result = mapChecked(t, FULL_PAYLOAD)
    const codex = {
      limitId: 'codex',
      limitName: null,
      primary: { usedPercent: 42, windowDurationMins: 300, resetsAt: 1767225600 },
      secondary: { usedPercent: 34, windowDurationMins: 10080, resetsAt: 1767744000 },
      credits: { hasCredits: true, unlimited: false, balance: '12.50' },
      planType: 'pro',
      rateLimitReachedType: 'workspace_member_credits_depleted',
    }
    t.strictSame(result, {
      rateLimits: codex,
      rateLimitsByLimitId: {
        codex,
        codex_bengalfox: {
          limitId: 'codex_bengalfox',
          limitName: 'GPT-5.3-Codex-Spark',
          primary: { usedPercent: 7, windowDurationMins: 300, resetsAt: 1767222100 },
          secondary: null,
          credits: null,
          planType: 'pro',
          rateLimitReachedType: null,
        },
        code_review: {
          limitId: 'code_review',
          limitName: 'Code review',
          primary: null,
          secondary: null,
          credits: null,
          planType: 'pro',
          rateLimitReachedType: null,
        },
      },
    })
    t.same(Object.keys(result.rateLimitsByLimitId), ['codex', 'codex_bengalfox', 'code_review'], 'backend order kept')
    // What goes on the wire: explicit nulls survive JSON.
    const wire = JSON.parse(JSON.stringify(result)) as Result
    t.equal(wire.rateLimits.limitName, null)
    t.equal(codexErrors(CODEX_SCHEMA, wire), '')
  })

  t.test('nulls everywhere', async (t) => {
    const allNull = { plan_type: null, rate_limit: null, credits: null, additional_rate_limits: null, rate_limit_reached_type: null }
    const empty = {
      limitId: 'codex',
      limitName: null,
      primary: null,
      secondary: null,
      credits: null,
      planType: null,
      rateLimitReachedType: null,
    }
    t.strictSame(mapChecked(t, allNull), { rateLimits: empty, rateLimitsByLimitId: { codex: empty } })

    const innerNulls = {
      plan_type: 'plus',
      rate_limit: { allowed: null, limit_reached: null, primary_window: null, secondary_window: null },
      credits: { has_credits: false, unlimited: false, balance: null },
      additional_rate_limits: [{ limit_name: null, metered_feature: 'extra', rate_limit: null }],
      rate_limit_reached_type: { kind: null },
    }
    const r = mapChecked(t, innerNulls)
    t.strictSame(r.rateLimits, { ...empty, credits: { hasCredits: false, unlimited: false, balance: null }, planType: 'plus' })
    t.strictSame(r.rateLimitsByLimitId.extra, { ...empty, limitId: 'extra', planType: 'plus' })

    const windowNulls = {
      plan_type: 'free',
      rate_limit: { primary_window: { used_percent: 0, limit_window_seconds: null, reset_after_seconds: null, reset_at: null } },
    }
    t.strictSame(mapChecked(t, windowNulls).rateLimits.primary, { usedPercent: 0, windowDurationMins: null, resetsAt: null })
  })

  t.test('missing keys', async (t) => {
    const empty = {
      limitId: 'codex',
      limitName: null,
      primary: null,
      secondary: null,
      credits: null,
      planType: null,
      rateLimitReachedType: null,
    }
    t.strictSame(mapChecked(t, {}), { rateLimits: empty, rateLimitsByLimitId: { codex: empty } })
    const sparse = {
      plan_type: 'team',
      rate_limit: { primary_window: { used_percent: 5 } },
      credits: { has_credits: true, unlimited: true },
      additional_rate_limits: [{ metered_feature: 'x' }],
      rate_limit_reached_type: {},
    }
    const r = mapChecked(t, sparse)
    t.strictSame(r.rateLimits.primary, { usedPercent: 5, windowDurationMins: null, resetsAt: null })
    t.strictSame(r.rateLimits.credits, { hasCredits: true, unlimited: true, balance: null })
    t.equal(r.rateLimits.rateLimitReachedType, null)
    t.strictSame(r.rateLimitsByLimitId.x, { ...empty, limitId: 'x', planType: 'team' })
    t.strictSame(mapChecked(t, { additional_rate_limits: [] }).rateLimitsByLimitId, { codex: empty })
  })

  t.test('used_percent is rounded to an integer as codex does (round half away from zero)', async (t) => {
    const cases: [number, number][] = [
      [33.6, 34],
      [33.5, 34],
      [33.4, 33],
      [0.5, 1],
      [0.4, 0],
      [99.99, 100],
      [100, 100],
      [150, 150],
      [0, 0],
      [-0.4, 0],
      [-2.5, -3],
      [1e12, 2147483647],
      [-1e12, -2147483648],
    ]
    for (const [input, expected] of cases) {
      t.equal(roundPercent(input), expected, `${input} → ${expected}`)
      t.ok(Object.is(roundPercent(input), expected), `${input}: not -0`)
    }
    const r = mapChecked(t, { plan_type: 'plus', rate_limit: { primary_window: { used_percent: 33.6, limit_window_seconds: 18000, reset_at: 1 } } })
    t.equal(r.rateLimits.primary?.usedPercent, 34)
  })

  t.test('limit_window_seconds → windowDurationMins = ceil(s / 60), none for 0 or less', async (t) => {
    const cases: [number | null | undefined, number | null][] = [
      [18000, 300],
      [604800, 10080],
      [61, 2],
      [60, 1],
      [59, 1],
      [1, 1],
      [90.5, 2],
      [0, null],
      [-60, null],
      [null, null],
      [undefined, null],
    ]
    for (const [input, expected] of cases) {
      t.equal(windowMinutes(input), expected, `${input} → ${expected}`)
      const window: Record<string, unknown> = { used_percent: 1, reset_at: 5 }
      if (input !== undefined) window.limit_window_seconds = input
      const r = mapChecked(t, { plan_type: 'plus', rate_limit: { secondary_window: window } })
      t.equal(r.rateLimits.secondary?.windowDurationMins, expected, `mapped ${input}`)
    }
  })

  t.test('resetsAt: reset_at in Unix seconds, else now + reset_after_seconds', async (t) => {
    const nowMs = 1_767_000_000_500
    const r = mapChecked(
      t,
      {
        plan_type: 'plus',
        rate_limit: {
          primary_window: { used_percent: 1, reset_at: 1767003600, reset_after_seconds: 99999 },
          secondary_window: { used_percent: 1, reset_after_seconds: 120 },
        },
      },
      nowMs,
    )
    t.equal(r.rateLimits.primary?.resetsAt, 1767003600, 'reset_at wins')
    t.equal(r.rateLimits.secondary?.resetsAt, 1767000120, 'from reset_after_seconds')
    t.equal(mapChecked(t, { rate_limit: { primary_window: { used_percent: 1, reset_at: 1767003600.9 } } }).rateLimits.primary?.resetsAt, 1767003600, 'an integer')
  })

  t.test('plan types: ours kept, everything else unknown', async (t) => {
    const cases: [string, string][] = [
      ['free', 'free'],
      ['go', 'go'],
      ['plus', 'plus'],
      ['pro', 'pro'],
      ['prolite', 'prolite'],
      ['team', 'team'],
      ['self_serve_business_usage_based', 'self_serve_business_usage_based'],
      ['business', 'business'],
      ['enterprise_cbp_usage_based', 'enterprise_cbp_usage_based'],
      ['enterprise', 'enterprise'],
      ['edu', 'edu'],
      ['education', 'edu'],
      ['unknown', 'unknown'],
      ['guest', 'unknown'],
      ['free_workspace', 'unknown'],
      ['k12', 'unknown'],
      ['promax', 'unknown'],
      ['ultra_galactic', 'unknown'],
      ['PRO', 'unknown'],
      ['', 'unknown'],
    ]
    for (const [input, expected] of cases) {
      const r = mapChecked(t, { plan_type: input, additional_rate_limits: [{ limit_name: 'n', metered_feature: 'f' }] })
      t.equal(r.rateLimits.planType, expected, `${JSON.stringify(input)} → ${expected}`)
      t.equal(r.rateLimitsByLimitId.f?.planType, expected, 'additional limits share the plan')
    }
  })

  t.test('rate limit reached type', async (t) => {
    const known = [
      'rate_limit_reached',
      'workspace_owner_credits_depleted',
      'workspace_member_credits_depleted',
      'workspace_owner_usage_limit_reached',
      'workspace_member_usage_limit_reached',
    ]
    for (const kind of known) {
      t.equal(mapChecked(t, { plan_type: 'team', rate_limit_reached_type: { kind } }).rateLimits.rateLimitReachedType, kind, `kind ${kind}`)
      // codex's backend model reads the member as `type`.
      t.equal(mapChecked(t, { plan_type: 'team', rate_limit_reached_type: { type: kind } }).rateLimits.rateLimitReachedType, kind, `type ${kind}`)
      t.equal(mapChecked(t, { plan_type: 'team', rate_limit_reached_type: kind }).rateLimits.rateLimitReachedType, kind, `bare ${kind}`)
    }
    const unknown: unknown[] = [{ kind: 'unknown' }, { kind: 'credits_on_fire' }, { type: 'credits_on_fire' }, { kind: 'RATE_LIMIT_REACHED' }, 'nope', {}, { kind: null }, null]
    for (const value of unknown) {
      const r = mapChecked(t, { plan_type: 'team', rate_limit_reached_type: value })
      t.equal(r.rateLimits.rateLimitReachedType, null, `${JSON.stringify(value)} → null`)
    }
    const r = mapChecked(t, { ...FULL_PAYLOAD, rate_limit_reached_type: { kind: 'rate_limit_reached' } })
    t.equal(r.rateLimitsByLimitId.codex_bengalfox?.rateLimitReachedType, null, 'only the codex snapshot carries it')
    t.equal(r.rateLimitsByLimitId.codex_bengalfox?.credits, null, 'only the codex snapshot carries credits')
  })

  t.test('credits balance', async (t) => {
    for (const [balance, expected] of [
      ['12.50', '12.50'],
      ['0', '0'],
      ['', ''],
      [12.5, '12.5'],
      [null, null],
    ] as const) {
      const r = mapChecked(t, { plan_type: 'plus', credits: { has_credits: true, unlimited: false, balance } })
      t.equal(r.rateLimits.credits?.balance, expected, `${JSON.stringify(balance)} → ${JSON.stringify(expected)}`)
    }
  })

  t.test('limit ids: the codex bucket is never replaced; odd keys stay plain keys', async (t) => {
    const r = mapChecked(t, {
      plan_type: 'plus',
      rate_limit: { primary_window: { used_percent: 10, limit_window_seconds: 60, reset_at: 1 } },
      additional_rate_limits: [
        { limit_name: 'impostor', metered_feature: 'codex', rate_limit: { primary_window: { used_percent: 99 } } },
        { limit_name: 'first', metered_feature: 'dup' },
        { limit_name: 'second', metered_feature: 'dup' },
        { limit_name: 'proto', metered_feature: '__proto__' },
      ],
    })
    t.equal(r.rateLimits.primary?.usedPercent, 10)
    t.equal(r.rateLimitsByLimitId.codex?.limitName, null)
    t.equal(r.rateLimitsByLimitId.dup?.limitName, 'first')
    t.ok(Object.hasOwn(r.rateLimitsByLimitId, '__proto__'), '__proto__ is an own key')
    t.equal(Object.getPrototypeOf(r.rateLimitsByLimitId), Object.prototype, 'prototype untouched')
    t.same(Object.keys(r.rateLimitsByLimitId), ['codex', 'dup', '__proto__'])
    t.match(JSON.stringify(r), /"__proto__":\{"limitId":"__proto__"/)
  })

  t.test('payloads the schema rejects', async (t) => {
    const bad: [string, unknown][] = [
      ['not an object', 'usage'],
      ['array', []],
      ['null', null],
      ['plan_type a number', { plan_type: 5 }],
      ['window without used_percent', { rate_limit: { primary_window: { limit_window_seconds: 60 } } }],
      ['used_percent a string', { rate_limit: { primary_window: { used_percent: '42' } } }],
      ['window a string', { rate_limit: { secondary_window: 'full' } }],
      ['credits without has_credits', { credits: { unlimited: false } }],
      ['credits balance an object', { credits: { has_credits: true, unlimited: false, balance: { v: 1 } } }],
      ['additional not an array', { additional_rate_limits: { a: 1 } }],
      ['additional without metered_feature', { additional_rate_limits: [{ limit_name: 'x' }] }],
      ['reached type a number', { rate_limit_reached_type: 3 }],
    ]
    for (const [name, payload] of bad) {
      const problem = usagePayloadProblem(payload)
      t.type(problem, 'string', name)
      t.match(problem ?? '', /^at \//, `${name}: says where (${problem})`)
      t.notOk(isUsagePayload(payload), name)
    }
    t.match(usagePayloadProblem({ rate_limit: { primary_window: { used_percent: '42' } } }), /at \/rate_limit\/primary_window\/used_percent/)
  })

  t.test('our result schema rejects what codex rejects', async (t) => {
    const good = mapUsage(FULL_PAYLOAD)
    const variants: unknown[] = [
      { ...good, rateLimits: { ...good.rateLimits, primary: { usedPercent: 4.5, windowDurationMins: 1, resetsAt: 1 } } },
      { ...good, rateLimits: { ...good.rateLimits, planType: 'platinum' } },
      { ...good, rateLimits: { ...good.rateLimits, rateLimitReachedType: 'unknown' } },
      { ...good, rateLimits: { ...good.rateLimits, credits: { hasCredits: true } } },
      { ...good, rateLimits: { ...good.rateLimits, credits: { hasCredits: true, unlimited: false, balance: 12.5 } } },
    ]
    for (const v of variants) {
      t.notOk(ourResult.Check(v), 'ours rejects')
      t.not(codexErrors(CODEX_SCHEMA, v), '', 'codex rejects')
    }
  })
})

// ---------------------------------------------------------------------------------------------
// The backend client against a fake usage backend.

interface Seen {
  url: string
  headers: Record<string, string | string[] | undefined>
}

type Handler = (req: FastifyRequest, reply: FastifyReply) => unknown

interface FakeBackend {
  readonly app: FastifyInstance
  readonly base: string
  readonly seen: Seen[]
  handle: Handler
}

async function startFakeBackend(t: Test): Promise<FakeBackend> {
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const fake: FakeBackend = {
    app,
    base: '',
    seen: [],
    handle: (_req, reply) => reply.code(500).send({ detail: 'no handler' }),
  }
  app.all('/*', async (req, reply) => {
    fake.seen.push({ url: req.url, headers: { ...req.headers } })
    return fake.handle(req, reply)
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  ;(fake as { base: string }).base = `http://127.0.0.1:${port}/backend-api`
  return fake
}

/** Runs `fn`, which must throw; records the message for the exit-time canary check. */
async function failure(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn()
  } catch (err) {
    if (!(err instanceof Error)) throw err
    record(err.message)
    record(String(err.stack))
    record(JSON.stringify(err))
    return err
  }
  throw new Error('expected a failure')
}

function assertNoSecret(t: Test, err: Error, token: string): void {
  t.notOk(err.message.includes(token), 'token not in the message')
  t.notOk(String(err.stack).includes(token), 'token not in the stack')
  t.notOk(JSON.stringify(err).includes(token), 'token not in the serialized error')
  t.same(leakedCanaries(`${err.message}\n${String(err.stack)}\n${JSON.stringify(err)}`), [], 'no canary in any form')
}

const UA = 'app-server/0.1.0 (Linux 6.1; x86_64) test'

t.test('backend client', async (t) => {
  const backend = await startFakeBackend(t)
  const token = canary('access-token')
  const client = new BackendClient({ baseUrl: backend.base, userAgent: UA })

  t.beforeEach(() => {
    backend.seen.length = 0
  })

  t.test('200: sends the headers and returns the parsed payload', async (t) => {
    backend.handle = (_req, reply) => reply.header('content-type', 'application/json').send(FULL_PAYLOAD)
    const payload = await client.fetchUsage({ accessToken: token, accountId: 'acct-123' })
    t.same(payload, FULL_PAYLOAD)
    t.equal(backend.seen.length, 1)
    const seen = backend.seen[0]!
    t.equal(seen.url, '/backend-api/wham/usage')
    t.equal(seen.headers.authorization, `Bearer ${token}`)
    t.equal(seen.headers['chatgpt-account-id'], 'acct-123')
    t.equal(seen.headers['user-agent'], UA)
    const mapped = mapUsage(payload)
    t.equal(codexErrors(CODEX_SCHEMA, mapped), '')
    t.equal(mapped.rateLimits.secondary?.usedPercent, 34)
  })

  t.test('no account id: no ChatGPT-Account-Id header', async (t) => {
    backend.handle = (_req, reply) => reply.send({ plan_type: 'plus' })
    const payload = await client.fetchUsage({ accessToken: token, accountId: null })
    t.same(payload, { plan_type: 'plus' })
    t.notOk('chatgpt-account-id' in backend.seen[0]!.headers)
    t.equal(backend.seen[0]!.headers.authorization, `Bearer ${token}`)
  })

  t.test('base URL forms join without double slashes', async (t) => {
    backend.handle = (_req, reply) => reply.send({})
    for (const base of [backend.base, `${backend.base}/`, `${backend.base}//`]) {
      const c = new BackendClient({ baseUrl: base, userAgent: UA })
      await c.fetchUsage({ accessToken: token, accountId: null })
    }
    t.same(
      backend.seen.map((s) => s.url),
      ['/backend-api/wham/usage', '/backend-api/wham/usage', '/backend-api/wham/usage'],
    )
    const root = backend.base.replace(/\/backend-api$/, '')
    await new BackendClient({ baseUrl: root, userAgent: UA }).fetchUsage({ accessToken: token, accountId: null })
    t.equal(backend.seen[3]?.url, '/wham/usage', 'a bare host is used as given')
    t.equal(new BackendClient({ baseUrl: 'https://chatgpt.com', userAgent: UA }).usageUrl, 'https://chatgpt.com/backend-api/wham/usage')
    t.equal(new BackendClient({ baseUrl: 'https://chatgpt.com/backend-api/', userAgent: UA }).usageUrl, 'https://chatgpt.com/backend-api/wham/usage')
    t.equal(new BackendClient({ baseUrl: 'http://localhost:8080/api/', userAgent: UA }).usageUrl, 'http://localhost:8080/api/wham/usage')
  })

  t.test('base URL validation', async (t) => {
    const secret = canary('url-password')
    for (const [baseUrl, why] of [
      ['', /not a valid URL/],
      ['chatgpt.com/backend-api', /not a valid URL/],
      ['ftp://example.com/backend-api', /http\(s\)/],
      ['file:///etc/passwd', /http\(s\)/],
      [`https://user:${secret}@example.com/api`, /credentials/],
      ['https://example.com/api?x=1', /query or fragment/],
      ['https://example.com/api#frag', /query or fragment/],
    ] as const) {
      const err = await failure(async () => new BackendClient({ baseUrl, userAgent: UA }))
      t.type(err, TypeError, baseUrl)
      t.match(err.message, why, baseUrl)
      t.notOk(err.message.includes(secret))
    }
  })

  t.test('401, 429, 500: BackendHttpError with status and request id', async (t) => {
    const cases = [
      { status: 401, header: 'x-request-id', id: 'req_401abc', body: { detail: 'Could not validate credentials' }, expect: /Could not validate credentials/ },
      { status: 429, header: 'x-oai-request-id', id: 'oai-429', body: { error: { message: 'Too many requests' } }, expect: /Too many requests/ },
      { status: 500, header: 'x-request-id', id: 'req-500', body: { error: 'boom' }, expect: /boom/ },
    ]
    for (const c of cases) {
      backend.handle = (_req, reply) => reply.code(c.status).header(c.header, c.id).send(c.body)
      const err = await failure(() => client.fetchUsage({ accessToken: token, accountId: 'acct-1' }))
      t.type(err, BackendHttpError, `${c.status}`)
      t.type(err, BackendError)
      const http = err as BackendHttpError
      t.equal(http.status, c.status)
      t.equal(http.requestId, c.id)
      t.match(http.message, new RegExp(`\\b${c.status}\\b`), 'message has the status')
      t.match(http.message, c.id, 'message has the request id')
      t.match(http.message, c.expect, 'message has the body preview')
      t.match(http.message, '/backend-api/wham/usage')
      assertNoSecret(t, err, token)
    }
    backend.handle = (_req, reply) => reply.code(503).send('')
    const err = (await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))) as BackendHttpError
    t.equal(err.status, 503)
    t.equal(err.requestId, null, 'no request id header → null')
    t.match(err.message, /body: \(empty\)/)
  })

  t.test('the backend echoing the token back is redacted in every form', async (t) => {
    backend.handle = (_req, reply) =>
      reply
        .code(401)
        .header('x-request-id', token)
        .send({
          detail: `invalid token ${token}`,
          encoded: encodeURIComponent(token),
          b64: Buffer.from(token).toString('base64'),
          header: `Bearer ${token}`,
        })
    const err = (await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))) as BackendHttpError
    t.equal(err.status, 401)
    t.match(err.message, /invalid token \[redacted\]/)
    t.notOk(String(err.requestId).includes(token))
    assertNoSecret(t, err, token)
  })

  t.test('HTML error body: a short one-line preview', async (t) => {
    const html = `<!DOCTYPE html>\n<html>\n  <head><title>502 Bad Gateway</title></head>\n  <body>\n    <h1>Bad   Gateway</h1>\n  </body>\n</html>\n`
    backend.handle = (_req, reply) => reply.code(502).header('content-type', 'text/html').header('x-request-id', 'cf-1').send(html)
    const err = (await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))) as BackendHttpError
    t.equal(err.status, 502)
    t.match(err.message, 'body: <!DOCTYPE html> <html> <head><title>502 Bad Gateway</title></head> <body> <h1>Bad Gateway</h1> </body> </html>')
    t.notOk(err.message.includes('\n'), 'one line')
    assertNoSecret(t, err, token)
  })

  t.test('huge error body: cut to the preview length', async (t) => {
    const huge = `${' \n'.repeat(10)}${'x'.repeat(2 * 1024 * 1024)}${token}`
    backend.handle = (_req, reply) => reply.code(500).header('x-request-id', 'big').send(huge)
    const err = (await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))) as BackendHttpError
    t.equal(err.status, 500)
    const preview = err.message.slice(err.message.indexOf('body: ') + 'body: '.length)
    t.ok(preview.length <= BODY_PREVIEW_CHARS, `preview is ${preview.length} chars`)
    t.match(preview, /^x+…$/, 'trimmed, cut, marked')
    t.ok(err.message.length < 1024, 'whole message stays short')
    assertNoSecret(t, err, token)

    // Exactly at the limit: not cut; one more: cut.
    backend.handle = (_req, reply) => reply.code(500).send('y'.repeat(BODY_PREVIEW_CHARS))
    const exact = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.ok(exact.message.endsWith(`body: ${'y'.repeat(BODY_PREVIEW_CHARS)}`))
    backend.handle = (_req, reply) => reply.code(500).send('z'.repeat(BODY_PREVIEW_CHARS + 1))
    const over = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.ok(over.message.endsWith(`body: ${'z'.repeat(BODY_PREVIEW_CHARS - 1)}…`))
    // A cut never splits a surrogate pair.
    backend.handle = (_req, reply) => reply.code(500).send('a' + '😀'.repeat(600))
    const emoji = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.notOk(/[\ud800-\udbff]…$/.test(emoji.message), 'no lone high surrogate')
  })

  t.test('malformed JSON: BackendPayloadError', async (t) => {
    backend.handle = (_req, reply) => reply.header('content-type', 'application/json').send(`{"plan_type": "plus", "token": "${token}", `)
    const err = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.type(err, BackendPayloadError)
    t.type(err, BackendError)
    t.match(err.message, /not JSON/)
    assertNoSecret(t, err, token)

    backend.handle = (_req, reply) => reply.header('content-type', 'text/html').send('<html>login</html>')
    const html = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.type(html, BackendPayloadError)
    t.match(html.message, /not JSON; body: <html>login<\/html>/)
  })

  t.test('JSON that is not a usage payload: BackendPayloadError naming the path', async (t) => {
    backend.handle = (_req, reply) => reply.send({ plan_type: 'plus', rate_limit: { primary_window: { used_percent: 'lots' } }, note: token })
    const err = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.type(err, BackendPayloadError)
    t.match(err.message, /\/rate_limit\/primary_window\/used_percent/)
    assertNoSecret(t, err, token)

    backend.handle = (_req, reply) => reply.send([1, 2, 3])
    t.type(await failure(() => client.fetchUsage({ accessToken: token, accountId: null })), BackendPayloadError)
  })

  t.test('an oversized 2xx body: BackendPayloadError', async (t) => {
    backend.handle = (_req, reply) => reply.header('content-type', 'application/json').send(`{"pad":"${'p'.repeat(2 * 1024 * 1024)}"}`)
    const err = await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))
    t.type(err, BackendPayloadError)
    t.match(err.message, /larger than/)
    t.ok(err.message.length < 300)
  })

  t.test('redirects are not followed (the token stays here)', async (t) => {
    backend.handle = (req, reply) => (req.url.endsWith('/wham/usage') ? reply.code(302).header('location', '/elsewhere').send() : reply.send({ plan_type: 'pro' }))
    const err = (await failure(() => client.fetchUsage({ accessToken: token, accountId: null }))) as BackendHttpError
    t.type(err, BackendHttpError)
    t.equal(err.status, 302)
    t.same(
      backend.seen.map((s) => s.url),
      ['/backend-api/wham/usage'],
      'the redirect target was never asked',
    )
  })

  t.test('connection refused: BackendNetworkError', async (t) => {
    const closed = Fastify({ logger: false })
    await closed.listen({ host: '127.0.0.1', port: 0 })
    const { port } = closed.server.address() as AddressInfo
    await closed.close()
    const c = new BackendClient({ baseUrl: `http://127.0.0.1:${port}/backend-api`, userAgent: UA })
    const err = await failure(() => c.fetchUsage({ accessToken: token, accountId: 'acct-1' }))
    t.type(err, BackendNetworkError)
    t.type(err, BackendError)
    t.match(err.message, /ECONNREFUSED/)
    t.match(err.message, `127.0.0.1:${port}/backend-api/wham/usage`)
    assertNoSecret(t, err, token)
  })

  t.test('timeout: BackendNetworkError', async (t) => {
    backend.handle = () => new Promise(() => {})
    const c = new BackendClient({ baseUrl: backend.base, userAgent: UA, timeoutMs: 150 })
    const started = Date.now()
    const err = await failure(() => c.fetchUsage({ accessToken: token, accountId: null }))
    t.type(err, BackendNetworkError)
    t.match(err.message, /timed out after 150 ms/)
    t.ok(Date.now() - started < 5000, 'gave up promptly')
    assertNoSecret(t, err, token)
  })

  t.test('a token that is not a header value is never sent nor quoted', async (t) => {
    const bad = `${canary('bad-token')}\r\nX-Injected: 1`
    const err = await failure(() => client.fetchUsage({ accessToken: bad, accountId: null }))
    t.type(err, BackendNetworkError)
    t.match(err.message, /not a valid HTTP header value/)
    t.notOk(err.message.includes(bad.slice(0, 20)))
    t.equal(backend.seen.length, 0, 'nothing sent')
    t.type(await failure(() => client.fetchUsage({ accessToken: token, accountId: 'a\nb' })), BackendNetworkError)
    t.throws(() => new BackendClient({ baseUrl: backend.base, userAgent: 'ua\r\nx: y' }), TypeError)
  })

  t.test('an injected fetch is used', async (t) => {
    const calls: [string, RequestInit | undefined][] = []
    const fakeFetch: typeof fetch = async (input, init) => {
      calls.push([input instanceof Request ? input.url : String(input), init])
      return new Response(JSON.stringify({ plan_type: 'go' }), { status: 200, headers: { 'content-type': 'application/json' } })
    }
    const c = new BackendClient({ baseUrl: 'https://chatgpt.com/backend-api', userAgent: UA, fetch: fakeFetch })
    t.same(await c.fetchUsage({ accessToken: token, accountId: 'acct-9' }), { plan_type: 'go' })
    t.equal(calls[0]?.[0], 'https://chatgpt.com/backend-api/wham/usage')
    const headers = calls[0]?.[1]?.headers as Record<string, string>
    t.equal(headers.Authorization, `Bearer ${token}`)
    t.equal(headers['ChatGPT-Account-Id'], 'acct-9')
    t.equal(headers['User-Agent'], UA)

    const throwing: typeof fetch = async () => {
      throw new TypeError(`Headers.append: "Bearer ${token}" is an invalid header value.`)
    }
    const err = await failure(() => new BackendClient({ baseUrl: 'https://chatgpt.com', userAgent: UA, fetch: throwing }).fetchUsage({ accessToken: token, accountId: null }))
    t.type(err, BackendNetworkError)
    t.equal(err.message, 'GET https://chatgpt.com/backend-api/wham/usage failed: network error', 'an unknown error is not quoted')
    assertNoSecret(t, err, token)
  })
})

t.test('rate-limits reader: concurrent reads share one backend request per credential', async (t) => {
  const backend = await FakeUsageBackend.start(FULL_PAYLOAD)
  t.teardown(() => backend.close())
  const answer = backend.hold()
  t.teardown(() => answer({ status: 500, body: {} }))
  const reader = backendRateLimits(new BackendClient({ baseUrl: backend.baseUrl, userAgent: UA }))
  const tokenA = canary('access-token')
  const tokenB = canary('access-token')

  const sameCredential = [1, 2, 3].map(() => reader.read({ accessToken: tokenA, accountId: 'acct-1' }))
  const otherAccount = reader.read({ accessToken: tokenA, accountId: 'acct-2' })
  const otherToken = [1, 2].map(() => reader.read({ accessToken: tokenB, accountId: 'acct-1' }))
  await until(() => backend.calls.length === 3, 'one request per credential')
  t.same(
    backend.calls.map((c) => [c.authorization === `Bearer ${tokenA}` ? 'A' : 'B', c.accountId]).sort(),
    [['A', 'acct-1'], ['A', 'acct-2'], ['B', 'acct-1']],
    'a token with another account id is another credential',
  )

  answer({ status: 200, body: FULL_PAYLOAD })
  const results = await Promise.all([...sameCredential, otherAccount, ...otherToken])
  for (const r of results) t.equal(codexErrors(CODEX_SCHEMA, r), '')
  t.equal(results[0], results[1], 'callers sharing a request get its result')
  t.equal(results[1], results[2])
  t.equal(backend.calls.length, 3, 'no more requests')

  backend.respond = () => ({ status: 401, body: { detail: 'expired' } })
  const rejected = await Promise.allSettled([1, 2].map(() => reader.read({ accessToken: tokenA, accountId: 'acct-1' })))
  t.same(rejected.map((r) => r.status), ['rejected', 'rejected'], 'a settled read is not reused: the next ones ask again')
  for (const r of rejected) if (r.status === 'rejected') t.type(r.reason, CredentialRejected, 'a 401 is CredentialRejected for every sharer')
  t.equal(backend.calls.length, 4, 'and share their request too')
})
