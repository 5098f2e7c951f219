/**
 * Unit tests of the framework-free auth pieces: the three auth modes at the upgrade, the
 * browser and DNS-rebinding defences, and scopes. No sockets here; JWT
 * checks run against an injected clock.
 */
import t from 'tap'
import { createHmac } from 'node:crypto'
import { CompactSign, base64url } from 'jose'
import { parseBearer } from '../src/auth/bearer.js'
import { checkBrowserRequest, isLoopbackHostHeader, type BrowserGuardRules } from '../src/auth/browser-guard.js'
import { verifySignedBearer, type SignedBearerRules } from '../src/auth/jwt.js'
import { AuthPolicy } from '../src/auth/policy.js'
import { jwtPrincipal, SCOPES, type Principal } from '../src/auth/principal.js'
import { readQueryToken } from '../src/auth/query-token.js'
import { matchesDigest } from '../src/auth/token.js'
import { sha256 } from '../src/util/sha256.js'
import { canary, registerCanary } from './helpers/canary.js'
import { signJwt, unsignedJwt } from './helpers/jwt.js'

const enc = new TextEncoder()

/** A fixed instant for every JWT check in this file (2023-11-14T22:13:20Z). */
const NOW_MS = 1_700_000_000_000
const NOW = NOW_MS / 1000

/** At least 64 bytes, so that even HS512 signing with it is legitimate. */
function longSecret(label: string): string {
  return canary(`${label}-shared-secret-padding-to-sixty-four-bytes`)
}

function rules(secret: string, extra: Partial<SignedBearerRules> = {}): SignedBearerRules {
  return { sharedSecret: enc.encode(secret), issuer: null, audience: null, maxClockSkewSeconds: 30, maxTokenLifetimeSeconds: 0, ...extra }
}

function scopesOf(p: Principal): string[] {
  return [...p.scopes].sort()
}

const ALL_SCOPES = [...SCOPES].sort()

// ---------------------------------------------------------------------------------------------
t.test('readQueryToken', async (t) => {
  t.test('missing', async (t) => {
    t.same(readQueryToken('/'), { kind: 'missing' }, 'no query string')
    t.same(readQueryToken('/?'), { kind: 'missing' }, 'empty query string')
    t.same(readQueryToken('/?other=1&x=y'), { kind: 'missing' }, 'only other keys')
    t.same(readQueryToken('/?tokens=abc'), { kind: 'missing' }, 'a longer key is not `token`')
    t.same(readQueryToken('/?Token=abc'), { kind: 'missing' }, 'keys are case-sensitive')
    t.same(readQueryToken('/?xtoken=abc'), { kind: 'missing' }, 'no suffix matching on keys')
  })

  t.test('empty value is present (and so later invalid, not missing)', async (t) => {
    t.same(readQueryToken('/?token='), { kind: 'present', token: '' })
    t.same(readQueryToken('/?token'), { kind: 'present', token: '' }, 'a bare key is an empty value')
  })

  t.test('duplicate token keys', async (t) => {
    t.same(readQueryToken('/?token=a&token=b'), { kind: 'multiple' }, 'two different values')
    t.same(readQueryToken('/?token=a&token=a'), { kind: 'multiple' }, 'two equal values are still two')
    t.same(readQueryToken('/?token=a&x=1&token='), { kind: 'multiple' }, 'an empty second value counts')
    t.same(readQueryToken('/?token=a&%74oken=a'), { kind: 'multiple' }, 'a percent-encoded key is the same key')
  })

  t.test('form decoding', async (t) => {
    t.same(readQueryToken('/?token=a+b'), { kind: 'present', token: 'a b' }, '`+` is a space')
    t.same(readQueryToken('/?token=%41%62c'), { kind: 'present', token: 'Abc' }, '%XX escapes are decoded')
    t.same(readQueryToken('/?token=a%2Bb'), { kind: 'present', token: 'a+b' }, '%2B is a literal plus')
    t.same(readQueryToken('/?token=a%20b'), { kind: 'present', token: 'a b' })
    t.same(readQueryToken('/?token=%C3%A9'), { kind: 'present', token: 'é' }, 'UTF-8 escapes decode to text')
    t.same(readQueryToken('/?%74oken=xyz'), { kind: 'present', token: 'xyz' }, 'keys are form-decoded too')
  })

  t.test('other keys and the path are ignored', async (t) => {
    t.same(readQueryToken('/?x=1&token=abc&y=2'), { kind: 'present', token: 'abc' })
    t.same(readQueryToken('/some/deep/path?token=abc'), { kind: 'present', token: 'abc' })
    t.same(readQueryToken('/token/abc?a=token'), { kind: 'missing' }, 'a token in the path is not a query token')
  })

  t.test('fragment', async (t) => {
    t.same(readQueryToken('/?token=abc#frag'), { kind: 'present', token: 'abc' }, 'fragment is not part of the value')
    t.same(readQueryToken('/?token=abc#token=def'), { kind: 'present', token: 'abc' }, 'a token in the fragment is not a second token')
    t.same(readQueryToken('/?x=1#token=abc'), { kind: 'missing' }, 'a token only in the fragment is missing')
  })

  t.test('malformed escapes stay literal and never throw', async (t) => {
    t.same(readQueryToken('/?token=%zz'), { kind: 'present', token: '%zz' })
    t.same(readQueryToken('/?token=%'), { kind: 'present', token: '%' })
    t.same(readQueryToken('/?token=ab%4'), { kind: 'present', token: 'ab%4' })
    const r = readQueryToken('/?token=%FF')
    t.equal(r.kind, 'present', 'an invalid UTF-8 escape still yields a (non-matching) value')
  })
})

// ---------------------------------------------------------------------------------------------
t.test('parseBearer', async (t) => {
  const INVALID = { ok: false, reason: 'invalid authorization header' }
  t.same(parseBearer(undefined), { ok: false, reason: 'missing websocket bearer token' }, 'missing header')
  t.same(parseBearer('Bearer abc.def'), { ok: true, token: 'abc.def' })
  t.same(parseBearer('bearer abc'), { ok: true, token: 'abc' }, 'lowercase scheme accepted')
  t.same(parseBearer('BEARER abc'), { ok: true, token: 'abc' }, 'uppercase scheme accepted')
  t.same(parseBearer('BeArEr abc'), { ok: true, token: 'abc' }, 'mixed case scheme accepted')
  t.same(parseBearer('Bearer'), INVALID, 'no space')
  t.same(parseBearer('Bearerabc'), INVALID, 'no space, token glued on')
  t.same(parseBearer(''), INVALID, 'empty header')
  t.same(parseBearer('Basic x'), INVALID, 'Basic scheme')
  t.same(parseBearer('Basic dXNlcjpwYXNz'), INVALID, 'real Basic credentials')
  t.same(parseBearer('Token abc'), INVALID, 'other scheme')
  t.same(parseBearer('Bearer '), INVALID, 'empty token')
  t.same(parseBearer('Bearer    '), INVALID, 'whitespace-only token')
  t.same(parseBearer(' Bearer abc'), INVALID, 'leading space makes the scheme empty')
  t.same(parseBearer('Bearer a\x01b'), INVALID, 'control character')
  t.same(parseBearer('Bearer a\x00b'), INVALID, 'NUL')
  t.same(parseBearer('Bearer a\nb'), INVALID, 'newline')
  t.same(parseBearer('Bearer a\x7fb'), INVALID, 'DEL is not visible ASCII')
  t.same(parseBearer('Bearer tök'), INVALID, 'non-ASCII')
  t.same(parseBearer('Bearer \u{1F600}'), INVALID, 'non-BMP character')
  t.same(parseBearer('Bearer\tabc'), INVALID, 'tab is not the separator')
  t.same(parseBearer(['Bearer a', 'Bearer b']), INVALID, 'an array of headers is refused')
})

// ---------------------------------------------------------------------------------------------
t.test('verifySignedBearer', async (t) => {
  const secret = longSecret('hs')
  const base = { sub: 'user-1', exp: NOW + 3600 }
  const INVALID = { ok: false, reason: 'invalid websocket jwt' }

  t.test('a valid HS256 token is accepted with its claims', async (t) => {
    const jwt = await signJwt(secret, { ...base, scope: 'session' })
    const r = await verifySignedBearer(jwt, rules(secret), NOW_MS)
    t.ok(r.ok)
    if (r.ok) t.match(r.claims, { sub: 'user-1', exp: NOW + 3600, scope: 'session' })
  })

  t.test('invalid: bad signature (wrong key)', async (t) => {
    const jwt = await signJwt(longSecret('other'), base)
    t.same(await verifySignedBearer(jwt, rules(secret), NOW_MS), INVALID)
  })

  t.test('invalid: tampered payload under a valid signature', async (t) => {
    const jwt = await signJwt(secret, base)
    const [h, , s] = jwt.split('.')
    const forged = registerCanary(`${h}.${base64url.encode(JSON.stringify({ ...base, sub: 'admin' }))}.${s}`)
    t.same(await verifySignedBearer(forged, rules(secret), NOW_MS), INVALID)
  })

  t.test('invalid: garbage and bad format', async (t) => {
    for (const junk of ['', 'garbage', 'a.b', 'a.b.c', 'a.b.c.d', '...', '%%%.%%%.%%%']) {
      t.same(await verifySignedBearer(junk, rules(secret), NOW_MS), INVALID, JSON.stringify(junk))
    }
    const jwt = await signJwt(secret, base)
    t.same(await verifySignedBearer(`${jwt}.extra`, rules(secret), NOW_MS), INVALID, 'extra segment')
    t.same(await verifySignedBearer(jwt.slice(0, jwt.lastIndexOf('.')), rules(secret), NOW_MS), INVALID, 'signature dropped')
  })

  t.test('invalid: alg none', async (t) => {
    const jwt = unsignedJwt(base)
    t.same(await verifySignedBearer(jwt, rules(secret), NOW_MS), INVALID)
  })

  t.test('invalid: HS384 and HS512 signed with the right key', async (t) => {
    for (const alg of ['HS384', 'HS512']) {
      const jwt = await signJwt(secret, base, { alg })
      t.equal(JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()).alg, alg, `token really is ${alg}`)
      t.same(await verifySignedBearer(jwt, rules(secret), NOW_MS), INVALID, alg)
    }
  })

  t.test('invalid: missing exp', async (t) => {
    const jwt = await signJwt(secret, { sub: 'user-1' })
    t.same(await verifySignedBearer(jwt, rules(secret), NOW_MS), INVALID)
  })

  t.test('invalid: non-integer exp', async (t) => {
    const frac = await signJwt(secret, { exp: NOW + 3600.5 })
    t.same(await verifySignedBearer(frac, rules(secret), NOW_MS), INVALID, 'fractional exp far in the future')
    const tiny = await signJwt(secret, { exp: 1.5 })
    t.same(await verifySignedBearer(tiny, rules(secret), NOW_MS), INVALID, 'exp 1.5 is invalid, not expired')
    const str = await signJwt(secret, { exp: '123' })
    t.same(await verifySignedBearer(str, rules(secret), NOW_MS), INVALID, 'exp "123" is invalid, not expired')
    const strFuture = await signJwt(secret, { exp: String(NOW + 3600) })
    t.same(await verifySignedBearer(strFuture, rules(secret), NOW_MS), INVALID, 'a numeric string is not a number')
    const nul = await signJwt(secret, { exp: null })
    t.same(await verifySignedBearer(nul, rules(secret), NOW_MS), INVALID, 'exp null')
  })

  t.test('expired, and the skew', async (t) => {
    const expired = await signJwt(secret, { exp: NOW - 31 })
    t.same(await verifySignedBearer(expired, rules(secret), NOW_MS), { ok: false, reason: 'expired websocket jwt' }, 'past the skew')
    const longAgo = await signJwt(secret, { exp: NOW - 86_400 })
    t.same(await verifySignedBearer(longAgo, rules(secret), NOW_MS), { ok: false, reason: 'expired websocket jwt' })
    const withinSkew = await signJwt(secret, { exp: NOW - 10 })
    t.ok((await verifySignedBearer(withinSkew, rules(secret), NOW_MS)).ok, 'expired 10 s ago, skew 30 s: accepted')
    t.same(
      await verifySignedBearer(withinSkew, rules(secret, { maxClockSkewSeconds: 0 }), NOW_MS),
      { ok: false, reason: 'expired websocket jwt' },
      'the same token without skew is expired',
    )
    t.same(
      await verifySignedBearer(withinSkew, rules(secret), NOW_MS + 60_000),
      { ok: false, reason: 'expired websocket jwt' },
      'the injected clock decides',
    )
  })

  t.test('not valid yet, and the skew', async (t) => {
    const future = await signJwt(secret, { exp: NOW + 3600, nbf: NOW + 31 })
    t.same(await verifySignedBearer(future, rules(secret), NOW_MS), { ok: false, reason: 'websocket jwt is not valid yet' })
    const withinSkew = await signJwt(secret, { exp: NOW + 3600, nbf: NOW + 10 })
    t.ok((await verifySignedBearer(withinSkew, rules(secret), NOW_MS)).ok, 'nbf 10 s ahead, skew 30 s: accepted')
    t.same(
      await verifySignedBearer(withinSkew, rules(secret, { maxClockSkewSeconds: 0 }), NOW_MS),
      { ok: false, reason: 'websocket jwt is not valid yet' },
      'the same token without skew is not valid yet',
    )
    t.ok((await verifySignedBearer(future, rules(secret), NOW_MS + 60_000)).ok, 'valid once the clock has moved on')
    const past = await signJwt(secret, { exp: NOW + 3600, nbf: NOW - 3600 })
    t.ok((await verifySignedBearer(past, rules(secret), NOW_MS)).ok, 'nbf in the past is fine')
  })

  t.test('issuer', async (t) => {
    const r = rules(secret, { issuer: 'issuer-a' })
    const good = await signJwt(secret, { ...base, iss: 'issuer-a' })
    t.ok((await verifySignedBearer(good, r, NOW_MS)).ok, 'matching issuer')
    const bad = await signJwt(secret, { ...base, iss: 'issuer-b' })
    t.same(await verifySignedBearer(bad, r, NOW_MS), { ok: false, reason: 'websocket jwt issuer mismatch' })
    const none = await signJwt(secret, base)
    t.same(await verifySignedBearer(none, r, NOW_MS), { ok: false, reason: 'websocket jwt issuer mismatch' }, 'missing iss')
    t.ok((await verifySignedBearer(bad, rules(secret), NOW_MS)).ok, 'iss not checked when not configured')
  })

  t.test('audience', async (t) => {
    const r = rules(secret, { audience: 'aud-a' })
    const str = await signJwt(secret, { ...base, aud: 'aud-a' })
    t.ok((await verifySignedBearer(str, r, NOW_MS)).ok, 'string aud matches')
    const arr = await signJwt(secret, { ...base, aud: ['aud-x', 'aud-a'] })
    t.ok((await verifySignedBearer(arr, r, NOW_MS)).ok, 'array aud containing the audience')
    const MISMATCH = { ok: false, reason: 'websocket jwt audience mismatch' }
    const strBad = await signJwt(secret, { ...base, aud: 'aud-b' })
    t.same(await verifySignedBearer(strBad, r, NOW_MS), MISMATCH, 'string aud mismatch')
    const arrBad = await signJwt(secret, { ...base, aud: ['aud-b', 'aud-c'] })
    t.same(await verifySignedBearer(arrBad, r, NOW_MS), MISMATCH, 'array aud without the audience')
    const empty = await signJwt(secret, { ...base, aud: [] })
    t.same(await verifySignedBearer(empty, r, NOW_MS), MISMATCH, 'empty array aud')
    const prefix = await signJwt(secret, { ...base, aud: 'aud-a-plus' })
    t.same(await verifySignedBearer(prefix, r, NOW_MS), MISMATCH, 'no prefix matching')
    const missing = await signJwt(secret, base)
    t.same(await verifySignedBearer(missing, r, NOW_MS), MISMATCH, 'missing aud')
    t.ok((await verifySignedBearer(strBad, rules(secret), NOW_MS)).ok, 'aud not checked when not configured')
  })

  t.test("reasons come in codex's order", async (t) => {
    const r = rules(secret, { issuer: 'issuer-a', audience: 'aud-a' })
    const noExpBadIss = await signJwt(secret, { iss: 'wrong', aud: 'wrong' })
    t.same(await verifySignedBearer(noExpBadIss, r, NOW_MS), INVALID, 'invalid before issuer')
    const expiredBadIss = await signJwt(secret, { exp: NOW - 3600, iss: 'wrong', aud: 'wrong' })
    t.same(await verifySignedBearer(expiredBadIss, r, NOW_MS), { ok: false, reason: 'expired websocket jwt' }, 'expired AND bad issuer → expired')
    const expiredNotYet = await signJwt(secret, { exp: NOW - 3600, nbf: NOW + 3600 })
    t.same(await verifySignedBearer(expiredNotYet, r, NOW_MS), { ok: false, reason: 'expired websocket jwt' }, 'expired before not valid yet')
    const notYetBadIss = await signJwt(secret, { exp: NOW + 7200, nbf: NOW + 3600, iss: 'wrong', aud: 'wrong' })
    t.same(await verifySignedBearer(notYetBadIss, r, NOW_MS), { ok: false, reason: 'websocket jwt is not valid yet' }, 'not valid yet before issuer')
    const badIssBadAud = await signJwt(secret, { ...base, iss: 'wrong', aud: 'wrong' })
    t.same(await verifySignedBearer(badIssBadAud, r, NOW_MS), { ok: false, reason: 'websocket jwt issuer mismatch' }, 'issuer before audience')
    const wrongKeyExpired = await signJwt(longSecret('other'), { exp: NOW - 3600 })
    t.same(await verifySignedBearer(wrongKeyExpired, r, NOW_MS), INVALID, 'bad signature before expired')
  })

  t.test('payload that is not a JSON object', async (t) => {
    const key = enc.encode(secret)
    for (const payload of ['[1,2,3]', '"a string"', '42', 'null', 'true', 'not json at all', '']) {
      const jws = registerCanary(
        await new CompactSign(enc.encode(payload)).setProtectedHeader({ alg: 'HS256' }).sign(key),
      )
      t.same(await verifySignedBearer(jws, rules(secret), NOW_MS), INVALID, `payload ${JSON.stringify(payload)}`)
    }
  })

  /**
   * HS256 over header and payload texts exactly as given (duplicate names, parameters jose
   * would refuse to sign, raw segments), with the right key: only the verifier's strictness
   * can refuse these.
   */
  const signText = (headerText: string, payloadSegment: string): string => {
    const h = Buffer.from(headerText).toString('base64url')
    return registerCanary(`${h}.${payloadSegment}.${createHmac('sha256', enc.encode(secret)).update(`${h}.${payloadSegment}`).digest('base64url')}`)
  }
  const b64u = (text: string): string => Buffer.from(text).toString('base64url')
  const signRaw = async (header: Record<string, unknown>, payloadText: string): Promise<string> => signText(JSON.stringify(header), b64u(payloadText))

  t.test('strict header: only alg, typ and kid; b64:false and crit refused', async (t) => {
    const payload = JSON.stringify(base)
    t.ok((await verifySignedBearer(await signRaw({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, payload), rules(secret), NOW_MS)).ok, 'alg, typ, kid: accepted')
    // RFC 7797: with b64:false the payload travels as raw JSON, signed as it is; a verifier
    // that honours b64 (jose does, with crit) accepts it.
    const unencoded = signText(JSON.stringify({ alg: 'HS256', b64: false, crit: ['b64'] }), `{"sub":"user-1","exp":${NOW + 3600}}`)
    t.same(await verifySignedBearer(unencoded, rules(secret), NOW_MS), INVALID, 'b64:false with crit')
    for (const extra of [{ crit: ['exp'] }, { jku: 'https://example.com/k' }, { x5u: 'https://example.com/c' }, { cty: 'JWT' }, { zip: 'DEF' }]) {
      t.same(await verifySignedBearer(await signRaw({ alg: 'HS256', ...extra }, payload), rules(secret), NOW_MS), INVALID, `header ${JSON.stringify(extra)}`)
    }
  })

  t.test('strict encoding: canonical base64url only', async (t) => {
    const jwt = await signJwt(secret, base)
    t.ok((await verifySignedBearer(jwt, rules(secret), NOW_MS)).ok, 'the token as signed')
    const [h, p, sig] = jwt.split('.') as [string, string, string]
    const padded = (part: string) => part + '='.repeat((4 - (part.length % 4)) % 4 || 1)
    t.same(await verifySignedBearer(`${jwt}=`, rules(secret), NOW_MS), INVALID, '= appended to the signature')
    t.same(await verifySignedBearer(`${padded(h)}.${p}.${sig}`, rules(secret), NOW_MS), INVALID, 'padded header')
    t.same(await verifySignedBearer(`${h}.${padded(p)}.${sig}`, rules(secret), NOW_MS), INVALID, 'padded payload')
    const std = (part: string) => part.replace(/-/g, '+').replace(/_/g, '/')
    if (/[-_]/.test(jwt)) t.same(await verifySignedBearer(`${std(h)}.${std(p)}.${std(sig)}`, rules(secret), NOW_MS), INVALID, 'standard base64 alphabet')
    // A signature's last character carries spare bits: a different character that decodes to the same bytes.
    const last = sig[sig.length - 1]!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const twin = [...alphabet].find((c) => c !== last && Buffer.from(sig.slice(0, -1) + c, 'base64url').equals(Buffer.from(sig, 'base64url')))
    t.ok(twin, 'the signature has a non-canonical twin')
    t.same(await verifySignedBearer(`${h}.${p}.${sig.slice(0, -1)}${twin}`, rules(secret), NOW_MS), INVALID, 'stray bits in the last character')
    t.same(await verifySignedBearer(`${h}.${p}.${sig} `, rules(secret), NOW_MS), INVALID, 'trailing space')
  })

  t.test('duplicate names are refused, in claims and header', async (t) => {
    const ok = await signRaw({ alg: 'HS256' }, `{"sub":"a","exp":${NOW + 3600}}`)
    t.ok((await verifySignedBearer(ok, rules(secret), NOW_MS)).ok, 'no duplicate: accepted')
    for (const text of [
      `{"sub":"a","exp":${NOW + 3600},"exp":${NOW + 7200}}`,
      `{"exp":${NOW - 99999},"sub":"a","exp":${NOW + 3600}}`,
      `{"iss":"a","\\u0069ss":"b","exp":${NOW + 3600}}`,
    ]) {
      t.same(await verifySignedBearer(await signRaw({ alg: 'HS256' }, text), rules(secret), NOW_MS), INVALID, text)
    }
    const nested = await signRaw({ alg: 'HS256' }, `{"exp":${NOW + 3600},"a":{"x":1},"b":{"x":2},"c":[{"x":1},{"x":1}],"d":"\\"exp\\""}`)
    t.ok((await verifySignedBearer(nested, rules(secret), NOW_MS)).ok, 'equal names in nested objects and in strings are not duplicates')
    // The header is JSON too; jose refuses some duplicates itself, the shape check all of them.
    t.same(await verifySignedBearer(signText('{"alg":"HS256","alg":"HS256"}', b64u(JSON.stringify(base))), rules(secret), NOW_MS), INVALID, 'duplicate alg in the header')
  })

  t.test('--ws-max-token-lifetime-seconds', async (t) => {
    const limited = rules(secret, { maxTokenLifetimeSeconds: 3600 })
    t.ok((await verifySignedBearer(await signJwt(secret, { iat: NOW, exp: NOW + 3600 }), limited, NOW_MS)).ok, 'exactly the limit')
    t.same(await verifySignedBearer(await signJwt(secret, { iat: NOW, exp: NOW + 3601 }), limited, NOW_MS), { ok: false, reason: 'websocket jwt lifetime too long' }, 'exp − iat over the limit')
    t.same(await verifySignedBearer(await signJwt(secret, { exp: NOW + 7200 }), limited, NOW_MS), { ok: false, reason: 'websocket jwt lifetime too long' }, 'no iat: exp − now')
    t.ok((await verifySignedBearer(await signJwt(secret, { exp: NOW + 600 }), limited, NOW_MS)).ok, 'no iat, within the limit')
    t.same(await verifySignedBearer(await signJwt(secret, { iat: NOW + 86_400 * 364, exp: NOW + 86_400 * 365 }), limited, NOW_MS), { ok: false, reason: 'websocket jwt lifetime too long' }, 'a future iat does not shorten the lifetime: measured from now')
    t.same(await verifySignedBearer(await signJwt(secret, { iat: 'x', exp: NOW + 60 }), limited, NOW_MS), INVALID, 'iat not a number')
    t.ok((await verifySignedBearer(await signJwt(secret, { iat: NOW, exp: NOW + 10 * 365 * 86_400 }), rules(secret), NOW_MS)).ok, 'off by default: a ten-year token is accepted')
  })
})

// ---------------------------------------------------------------------------------------------
t.test('jwtPrincipal scopes', async (t) => {
  const all = jwtPrincipal(undefined, 'user-1')
  t.equal(all.kind, 'signedBearerToken')
  t.equal(all.subject, 'user-1')
  t.same(scopesOf(all), ALL_SCOPES, 'no scope claim → all scopes')

  const two = jwtPrincipal('account:read session', undefined)
  t.same(scopesOf(two), ['account:read', 'session'], 'exactly the listed scopes')
  t.equal(two.subject, null, 'no sub → null subject')
  t.notOk(two.scopes.has('account:write'))
  t.notOk(two.scopes.has('remote:write'))

  t.same(scopesOf(jwtPrincipal('session bogus:scope', null)), ['session'], 'unknown scopes ignored')
  t.same(scopesOf(jwtPrincipal('', null)), [], 'empty scope claim grants nothing')
  t.same(scopesOf(jwtPrincipal('SESSION', null)), [], 'scopes are case-sensitive')
  t.same(scopesOf(jwtPrincipal(42, null)), [], 'number scope claim grants nothing')
  t.same(scopesOf(jwtPrincipal(['session'], null)), [], 'array scope claim grants nothing')
  t.same(scopesOf(jwtPrincipal(null, null)), [], 'null scope claim grants nothing')
  t.same(scopesOf(jwtPrincipal({ session: true }, null)), [], 'object scope claim grants nothing')
  t.equal(jwtPrincipal(undefined, 7).subject, null, 'non-string sub is not a subject')
})

// ---------------------------------------------------------------------------------------------
t.test('AuthPolicy', async (t) => {
  t.test('query token mode, enforced', async (t) => {
    const token = canary('query')
    const policy = new AuthPolicy({ mode: 'queryToken', enforce: true }, { queryToken: token })
    t.equal(policy.mode, 'queryToken')
    t.equal(policy.enforced, true)
    t.equal(policy.queryToken, token)

    const ok = await policy.authorize({ url: `/?token=${token}`, headers: {} })
    t.ok(ok.ok)
    if (ok.ok) {
      t.equal(ok.principal.kind, 'queryToken')
      t.same(scopesOf(ok.principal), ALL_SCOPES, 'query token principal holds all scopes')
      t.equal(ok.degradedReason, null)
    }
    t.ok((await policy.authorize({ url: `/any/path?x=1&token=${encodeURIComponent(token)}`, headers: {} })).ok, 'any path, other keys')

    t.same(await policy.authorize({ url: '/', headers: {} }), { ok: false, reason: 'missing generated websocket query token' })
    t.same(await policy.authorize({ url: '/?token=', headers: {} }), { ok: false, reason: 'invalid generated websocket query token' }, 'empty')
    t.same(await policy.authorize({ url: '/?token=wrong', headers: {} }), { ok: false, reason: 'invalid generated websocket query token' })
    t.same(
      await policy.authorize({ url: `/?token=${token}x`, headers: {} }),
      { ok: false, reason: 'invalid generated websocket query token' },
      'a longer token with the right prefix',
    )
    t.same(
      await policy.authorize({ url: `/?token=${token}&token=${token}`, headers: {} }),
      { ok: false, reason: 'multiple websocket query tokens' },
    )
    t.same(
      await policy.authorize({ url: '/', headers: { authorization: `Bearer ${token}` } }),
      { ok: false, reason: 'missing generated websocket query token' },
      'Authorization header ignored in query mode',
    )
  })

  t.test('query token is generated per policy when not given', async (t) => {
    const a = new AuthPolicy({ mode: 'queryToken', enforce: true })
    const b = new AuthPolicy({ mode: 'queryToken', enforce: true })
    registerCanary(a.queryToken!)
    registerCanary(b.queryToken!)
    t.match(a.queryToken, /^[A-Za-z0-9_-]{43}$/, '32 bytes base64url without padding')
    t.not(a.queryToken, b.queryToken, 'new at every start')
    t.ok((await a.authorize({ url: `/?token=${a.queryToken}`, headers: {} })).ok)
    t.notOk((await a.authorize({ url: `/?token=${b.queryToken}`, headers: {} })).ok)
  })

  t.test('query token mode, degraded (--no-token-check)', async (t) => {
    const token = canary('query')
    const policy = new AuthPolicy({ mode: 'queryToken', enforce: false }, { queryToken: token })
    t.equal(policy.mode, 'queryToken')
    t.equal(policy.enforced, false)
    const cases: [string, string][] = [
      ['/', 'missing generated websocket query token'],
      ['/?token=wrong', 'invalid generated websocket query token'],
      [`/?token=${token}&token=${token}`, 'multiple websocket query tokens'],
    ]
    for (const [url, reason] of cases) {
      const d = await policy.authorize({ url, headers: {} })
      t.ok(d.ok, `admitted: ${reason}`)
      if (d.ok) {
        t.equal(d.principal.kind, 'degraded')
        t.same(scopesOf(d.principal), ['account:read', 'session'], 'degraded scopes')
        t.equal(d.degradedReason, reason)
      }
    }
    const valid = await policy.authorize({ url: `/?token=${token}`, headers: {} })
    t.ok(valid.ok)
    if (valid.ok) {
      t.equal(valid.principal.kind, 'queryToken', 'a valid token is not degraded')
      t.same(scopesOf(valid.principal), ALL_SCOPES)
      t.equal(valid.degradedReason, null)
    }
  })

  t.test('capability token mode', async (t) => {
    const token = canary('capability')
    const policy = new AuthPolicy({ mode: 'capabilityToken', tokenSha256: sha256(token) })
    t.equal(policy.mode, 'capabilityToken')
    t.equal(policy.enforced, true)
    t.equal(policy.queryToken, null, 'no query token in bearer modes')

    const ok = await policy.authorize({ url: '/', headers: { authorization: `Bearer ${token}` } })
    t.ok(ok.ok)
    if (ok.ok) {
      t.equal(ok.principal.kind, 'capabilityToken')
      t.same(scopesOf(ok.principal), ALL_SCOPES)
      t.equal(ok.degradedReason, null)
    }
    t.same(await policy.authorize({ url: '/', headers: {} }), { ok: false, reason: 'missing websocket bearer token' })
    t.same(
      await policy.authorize({ url: '/', headers: { authorization: `Bearer ${token}x` } }),
      { ok: false, reason: 'invalid websocket bearer token' },
    )
    t.same(
      await policy.authorize({ url: '/', headers: { authorization: 'Basic x' } }),
      { ok: false, reason: 'invalid authorization header' },
    )
    t.same(
      await policy.authorize({ url: `/?token=${token}`, headers: {} }),
      { ok: false, reason: 'missing websocket bearer token' },
      'no fallback to the query string',
    )
  })

  t.test('signed bearer mode uses the injected clock', async (t) => {
    const secret = longSecret('policy')
    let now = NOW_MS
    const policy = new AuthPolicy(
      { mode: 'signedBearerToken', sharedSecret: enc.encode(secret), issuer: 'iss-a', audience: 'aud-a', maxClockSkewSeconds: 30, maxTokenLifetimeSeconds: 0 },
      { now: () => now },
    )
    t.equal(policy.mode, 'signedBearerToken')
    t.equal(policy.enforced, true)
    t.equal(policy.queryToken, null)

    const jwt = await signJwt(secret, { sub: 'user-9', iss: 'iss-a', aud: 'aud-a', exp: NOW + 60, scope: 'session account:read' })
    const ok = await policy.authorize({ url: '/', headers: { authorization: `Bearer ${jwt}` } })
    t.ok(ok.ok)
    if (ok.ok) {
      t.equal(ok.principal.kind, 'signedBearerToken')
      t.equal(ok.principal.subject, 'user-9')
      t.same(scopesOf(ok.principal), ['account:read', 'session'])
      t.equal(ok.degradedReason, null)
    }
    now = NOW_MS + 3600_000
    t.same(
      await policy.authorize({ url: '/', headers: { authorization: `Bearer ${jwt}` } }),
      { ok: false, reason: 'expired websocket jwt' },
      'same token, later clock',
    )
    t.same(await policy.authorize({ url: `/?token=${jwt}`, headers: {} }), { ok: false, reason: 'missing websocket bearer token' })
    t.same(
      await policy.authorize({ url: '/', headers: { authorization: `Token ${jwt}` } }),
      { ok: false, reason: 'invalid authorization header' },
    )
  })
})

// ---------------------------------------------------------------------------------------------
t.test('isLoopbackHostHeader', async (t) => {
  const yes = ['localhost', 'LOCALHOST:1', 'LocalHost', 'localhost:4500', '127.0.0.1', '127.0.0.1:4500', '127.5.5.5', '127.255.255.254:65535', '[::1]', '[::1]:80']
  for (const h of yes) t.equal(isLoopbackHostHeader(h), true, `accepts ${h}`)
  const no: (string | undefined)[] = [
    undefined,
    '',
    '::1',
    '::1:80',
    'localhost.evil.com',
    'localhost.evil.com:4500',
    'evil-localhost',
    '127.0.0.1.nip.io',
    '127.0.0.1.nip.io:4500',
    'evil.com',
    'evil.com:4500',
    'localhost:abc',
    'localhost:',
    'localhost:80:80',
    'localhost:4500x',
    '127.0.0.1:',
    '127.0.0.1:+80',
    '[::2]',
    '[::2]:80',
    '[::1',
    '[::1]x',
    '[::1]:abc',
    '[127.0.0.1]',
    '10.0.0.1',
    '192.168.1.1:4500',
    '0.0.0.0',
    '128.0.0.1',
    '127.1',
    ' localhost',
    'localhost ',
  ]
  for (const h of no) t.equal(isLoopbackHostHeader(h), false, `refuses ${JSON.stringify(h)}`)
})

t.test('checkBrowserRequest', async (t) => {
  const loop: BrowserGuardRules = { allowOrigins: [], loopbackListener: true }
  const allow: BrowserGuardRules = { allowOrigins: ['http://localhost:3000'], loopbackListener: true }
  const ORIGIN = { ok: false, reason: 'origin not allowed' }
  const HOST = { ok: false, reason: 'host not allowed' }

  t.same(checkBrowserRequest({ host: 'localhost:4500' }, loop), { ok: true }, 'no Origin, loopback Host')
  t.same(checkBrowserRequest({ host: '127.0.0.1:4500' }, loop), { ok: true })
  t.same(checkBrowserRequest({ host: 'evil.com:4500' }, loop), HOST, 'rebinding Host')
  t.same(checkBrowserRequest({}, loop), HOST, 'missing Host on a loopback listener')
  t.same(checkBrowserRequest({ host: '' }, loop), HOST, 'empty Host')
  t.same(checkBrowserRequest({ host: 'evil.com' }, { allowOrigins: [], loopbackListener: false }), { ok: true }, 'Host not checked off loopback')

  t.same(checkBrowserRequest({ origin: 'http://localhost:4500', host: 'localhost:4500' }, loop), ORIGIN, 'any Origin refused by default')
  t.same(checkBrowserRequest({ origin: 'null', host: 'localhost' }, loop), ORIGIN, 'opaque origin refused')
  t.same(checkBrowserRequest({ origin: '', host: 'localhost' }, loop), ORIGIN, 'empty Origin header refused')
  t.same(
    checkBrowserRequest({ origin: 'http://evil.com', host: 'evil.com' }, { allowOrigins: [], loopbackListener: false }),
    ORIGIN,
    'Origin refused off loopback too',
  )

  t.same(checkBrowserRequest({ origin: 'http://localhost:3000', host: 'localhost:4500' }, allow), { ok: true }, 'allow-listed origin admitted')
  t.same(checkBrowserRequest({ origin: 'http://localhost:3001', host: 'localhost:4500' }, allow), ORIGIN, 'other port refused')
  t.same(checkBrowserRequest({ origin: 'https://localhost:3000', host: 'localhost:4500' }, allow), ORIGIN, 'other scheme refused')
  t.same(checkBrowserRequest({ origin: 'http://localhost:3000/', host: 'localhost:4500' }, allow), ORIGIN, 'trailing slash is not exact')
  t.same(checkBrowserRequest({ origin: 'HTTP://LOCALHOST:3000', host: 'localhost:4500' }, allow), ORIGIN, 'exact match only')
  t.same(checkBrowserRequest({ origin: 'http://localhost:30001', host: 'localhost:4500' }, allow), ORIGIN, 'no prefix match')
  t.same(checkBrowserRequest({ origin: ['http://localhost:3000'], host: 'localhost:4500' }, allow), ORIGIN, 'array origin refused')
  t.same(
    checkBrowserRequest({ origin: ['http://localhost:3000', 'http://localhost:3000'], host: 'localhost:4500' }, allow),
    ORIGIN,
    'repeated origin refused',
  )
  t.same(checkBrowserRequest({ origin: 'http://localhost:3000', host: 'evil.com' }, allow), HOST, 'allowed Origin still needs a loopback Host')
})

// ---------------------------------------------------------------------------------------------
t.test('matchesDigest', async (t) => {
  const secret = canary('digest')
  const digest = sha256(secret)
  t.equal(digest.length, 32)
  t.equal(
    sha256('abc').toString('hex'),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    'sha256 is SHA-256 (FIPS 180-2 test vector)',
  )
  t.equal(matchesDigest(secret, digest), true, 'the secret matches its digest')
  t.equal(matchesDigest(secret + 'x', digest), false, 'longer')
  t.equal(matchesDigest(secret.slice(0, -1), digest), false, 'shorter')
  t.equal(matchesDigest('', digest), false, 'empty')
  t.equal(matchesDigest(secret.toUpperCase(), digest), false, 'case matters')
  t.equal(matchesDigest('x'.repeat(100_000), digest), false, 'very long input is fine')
  t.equal(matchesDigest('', sha256('')), true, 'empty matches the empty digest')
  t.equal(matchesDigest('é', sha256(Buffer.from('é', 'utf8'))), true, 'strings are hashed as UTF-8')
  t.doesNotThrow(() => matchesDigest('a'.repeat(33), digest), 'length differences never throw')
})
