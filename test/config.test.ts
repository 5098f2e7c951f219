import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ENV_ONLY, envName, FLAGS } from '../src/config/flags.js'
import { ConfigError, loadConfig } from '../src/config/load.js'
import type { Config, LogLevel } from '../src/config/types.js'
import { canary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { runCli } from './helpers/process.js'

// ---------------------------------------------------------------------------------------------
// Helpers

type Env = Record<string, string | undefined>

/** A subtest's `t`. */
type Asserts = Parameters<Parameters<typeof t.test>[0]>[0]

function load(argv: readonly string[], env: Env = {}): Config {
  return loadConfig(argv, { env, dotenvPath: null })
}

/** Runs loadConfig and returns the ConfigError it must throw (fails the test otherwise). */
function refusal(t: Asserts, argv: readonly string[], env: Env = {}): ConfigError {
  try {
    const config = load(argv, env)
    t.fail(`expected a refusal for ${JSON.stringify(argv)}, got ${JSON.stringify(config.auth.mode)}`)
  } catch (err) {
    if (err instanceof ConfigError) {
      t.equal(err.exitCode, 2, 'a refusal exits with code 2')
      t.notOk(err.message.includes('\n'), 'a refusal is one line')
      return err
    }
    t.fail(`expected a ConfigError, got ${String(err)}`)
  }
  return new ConfigError('(no refusal)')
}

/** Asserts the exact refusal message. */
function refuses(t: Asserts, argv: readonly string[], message: string, env: Env = {}): void {
  const err = refusal(t, argv, env)
  t.equal(err.message, message, `${JSON.stringify(argv).slice(0, 120)} -> ${message.slice(0, 80)}`)
}

const tmp = mkdtempSync(join(tmpdir(), 'app-server-config-test-'))
t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
let fileCounter = 0

/** Writes a file in the temp dir and returns its absolute path. */
function tmpFile(content: string | Buffer, name = `f${++fileCounter}`): string {
  const path = join(tmp, name)
  writeFileSync(path, content, { mode: 0o600 })
  return path
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(Buffer.from(text, 'utf8')).digest('hex')
}

/** A 32+ byte HS256 secret, registered as a canary. */
function secretValue(): string {
  const s = canary('secret')
  // canary('secret') is "secret-" + 24 base64url chars = 31 bytes; pad it to be safe.
  return s.length >= 40 ? s : s + canary('pad')
}

// The refusal messages, word for word as codex words them.
/** How a refusal echoes a value: control characters escaped (one line, no forged lines), cut at 200 chars. */
function echoed(value: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }
  let out = ''
  for (const ch of value) {
    const code = ch.charCodeAt(0)
    out += code < 0x20 || code === 0x7f ? (named[ch] ?? `\\x${code.toString(16).padStart(2, '0')}`) : ch
  }
  return out.length > 200 ? out.slice(0, 200) + '...' : out
}

const MSG = {
  jwtFlagsNeedSigned:
    '`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`',
  tokenSourcesExclusive: '`--ws-token-file` and `--ws-token-sha256` are mutually exclusive',
  tokenSourceRequired: '`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set',
  tokenFlagsNeedCapability: '`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`',
  secretRequired: '`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set',
  modeRequired: 'websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`',
  badDigest: '--ws-token-sha256 must be a 64-character hex SHA-256 digest',
  noTokenCheckWithMode: '`--no-token-check` cannot be combined with an explicit `--ws-auth` mode',
  noTokenCheckLoopback: '--no-token-check is only allowed on loopback listeners',
  absolute: (flag: string) => `--${flag} must be an absolute path`,
  badListen: (x: string) => `invalid websocket --listen URL \`${echoed(x)}\`; expected \`ws://IP:PORT\``,
  unreadable: (path: string) => `failed to read websocket auth secret ${echoed(path)}: `,
  empty: (path: string) => `websocket auth secret ${echoed(path)} must not be empty`,
  short: (path: string) => `signed websocket bearer secret ${echoed(path)} must be at least 32 bytes`,
}

const CAP = ['--ws-auth', 'capability-token']
const SIGNED = ['--ws-auth', 'signed-bearer-token']
const DIGEST = 'a'.repeat(64)

// ---------------------------------------------------------------------------------------------
// Defaults and --listen

t.test('defaults: 127.0.0.1:4500, generated query token enforced', async (t) => {
  const c = load([])
  t.same(c.listen, { host: '127.0.0.1', port: 4500, loopback: true })
  t.same(c.auth, { mode: 'queryToken', enforce: true })
  t.same(c.allowOrigins, [])
  t.equal(c.urlFile, null)
  t.equal(c.logLevel, 'info')
})

t.test('--listen accepts literal IPs, IPv6 in brackets, and port 0', async (t) => {
  t.same(load(['--listen', 'ws://[::1]:0']).listen, { host: '::1', port: 0, loopback: true })
  t.same(load(['--listen', 'ws://[::1]:4500']).listen, { host: '::1', port: 4500, loopback: true })
  t.same(load(['--listen', 'ws://127.0.0.1:0']).listen, { host: '127.0.0.1', port: 0, loopback: true })
  t.same(load(['--listen=ws://127.0.0.2:65535']).listen, { host: '127.0.0.2', port: 65535, loopback: true })
  t.same(load(['--listen', 'ws://0.0.0.0:0']).listen, { host: '0.0.0.0', port: 0, loopback: false })
  t.same(load(['--listen', 'ws://192.168.1.10:8080']).listen, { host: '192.168.1.10', port: 8080, loopback: false })
  t.same(load(['--listen', 'ws://[::]:0']).listen, { host: '::', port: 0, loopback: false })
})

t.test('--listen refuses anything but ws://IP:PORT', async (t) => {
  const bad = [
    'ws://localhost:4500',
    'ws://example.com:4500',
    'ws://127.0.0.1',
    'ws://127.0.0.1:',
    'ws://[::1]',
    'ws://127.0.0.1:70000',
    'ws://127.0.0.1:65536',
    'ws://[::1]:70000',
    'wss://127.0.0.1:4500',
    'http://127.0.0.1:4500',
    'ws://127.0.0.1:4500/path',
    'ws://127.0.0.1:4500/?token=x',
    'ws://127.0.0.1:4500#frag',
    'ws://::1:4500',
    'ws://[127.0.0.1]:4500',
    'ws://[localhost]:4500',
    'ws://127.1:4500',
    'ws://256.0.0.1:4500',
    'ws://user@127.0.0.1:4500',
    'ws://127.0.0.1:-1',
    'ws://127.0.0.1:45a0',
    '127.0.0.1:4500',
    ' ws://127.0.0.1:4500',
    'ws://127.0.0.1:4500 ',
    'garbage',
    '',
  ]
  for (const x of bad) refuses(t, ['--listen', x], MSG.badListen(x))
})

t.test('--no-token-check: query mode not enforced on loopback only', async (t) => {
  t.same(load(['--no-token-check']).auth, { mode: 'queryToken', enforce: false })
  t.same(load(['--no-token-check', '--listen', 'ws://[::1]:0']).auth, { mode: 'queryToken', enforce: false })
  refuses(t, ['--no-token-check', '--listen', 'ws://0.0.0.0:4500'], MSG.noTokenCheckLoopback)
  refuses(t, ['--no-token-check', '--listen', 'ws://10.0.0.1:4500'], MSG.noTokenCheckLoopback)
  refuses(t, ['--no-token-check', '--listen', 'ws://[::]:0'], MSG.noTokenCheckLoopback)
  refuses(t, ['--no-token-check', ...CAP, '--ws-token-sha256', DIGEST], MSG.noTokenCheckWithMode)
  refuses(t, ['--no-token-check', ...SIGNED, '--ws-shared-secret-file', tmpFile(secretValue())], MSG.noTokenCheckWithMode)
})

// ---------------------------------------------------------------------------------------------
// Auth flag combinations

t.test('capability mode plus any JWT flag is refused', async (t) => {
  const secret = tmpFile(secretValue())
  refuses(t, [...CAP, '--ws-token-sha256', DIGEST, '--ws-shared-secret-file', secret], MSG.jwtFlagsNeedSigned)
  refuses(t, [...CAP, '--ws-token-sha256', DIGEST, '--ws-issuer', 'iss'], MSG.jwtFlagsNeedSigned)
  refuses(t, [...CAP, '--ws-token-sha256', DIGEST, '--ws-audience', 'aud'], MSG.jwtFlagsNeedSigned)
  refuses(t, [...CAP, '--ws-token-sha256', DIGEST, '--ws-max-clock-skew-seconds', '30'], MSG.jwtFlagsNeedSigned)
  // Even without a token source, the JWT flag is the reported problem.
  refuses(t, [...CAP, '--ws-issuer', 'iss'], MSG.jwtFlagsNeedSigned)
})

t.test('capability mode token sources', async (t) => {
  const tokenFile = tmpFile(canary('token'))
  refuses(t, [...CAP, '--ws-token-file', tokenFile, '--ws-token-sha256', DIGEST], MSG.tokenSourcesExclusive)
  refuses(t, CAP, MSG.tokenSourceRequired)
  refuses(t, ['--ws-auth=capability-token'], MSG.tokenSourceRequired)
})

t.test('signed mode refusals', async (t) => {
  const secret = tmpFile(secretValue())
  refuses(t, [...SIGNED, '--ws-shared-secret-file', secret, '--ws-token-sha256', DIGEST], MSG.tokenFlagsNeedCapability)
  refuses(t, [...SIGNED, '--ws-shared-secret-file', secret, '--ws-token-file', tmpFile(canary('token'))], MSG.tokenFlagsNeedCapability)
  refuses(t, SIGNED, MSG.secretRequired)
  refuses(t, [...SIGNED, '--ws-issuer', 'iss', '--ws-audience', 'aud'], MSG.secretRequired)
})

t.test('a mode flag without --ws-auth is refused', async (t) => {
  const secret = tmpFile(secretValue())
  const cases: string[][] = [
    ['--ws-token-file', tmpFile(canary('token'))],
    ['--ws-token-file', 'relative/token'],
    ['--ws-token-sha256', DIGEST],
    ['--ws-token-sha256', 'not-hex'],
    ['--ws-shared-secret-file', secret],
    ['--ws-issuer', 'iss'],
    ['--ws-audience', 'aud'],
    ['--ws-max-clock-skew-seconds', '30'],
  ]
  for (const argv of cases) refuses(t, argv, MSG.modeRequired)
})

t.test('an unknown --ws-auth mode is refused', async (t) => {
  for (const mode of ['bearer', 'CAPABILITY-TOKEN', '', 'capability-token ', 'capability-token\u200b']) {
    const err = refusal(t, ['--ws-auth', mode, '--ws-token-sha256', DIGEST])
    t.match(err.message, /ws-auth/, `mode ${JSON.stringify(mode)} refused`)
  }
})

t.test('relative paths are refused for every path flag', async (t) => {
  refuses(t, [...CAP, '--ws-token-file', 'token.txt'], MSG.absolute('ws-token-file'))
  refuses(t, [...CAP, '--ws-token-file', './token.txt'], MSG.absolute('ws-token-file'))
  refuses(t, [...SIGNED, '--ws-shared-secret-file', 'secret.txt'], MSG.absolute('ws-shared-secret-file'))
  refuses(t, [...SIGNED, '--ws-shared-secret-file', '../secret.txt'], MSG.absolute('ws-shared-secret-file'))
  refuses(t, ['--url-file', 'url.txt'], MSG.absolute('url-file'))
  refuses(t, ['--url-file', '~/url.txt'], MSG.absolute('url-file'))
  t.equal(load(['--url-file', '/tmp/app-server-url']).urlFile, '/tmp/app-server-url', 'absolute --url-file kept')
})

t.test('--ws-token-sha256 must be 64 hex chars', async (t) => {
  const bad = ['a'.repeat(63), 'a'.repeat(65), 'g'.repeat(64), 'z' + 'a'.repeat(63), '', ' '.repeat(64), `${'a'.repeat(62)}  `, '0x' + 'a'.repeat(62), 'a'.repeat(63) + '\u0000', 'ａ'.repeat(64)]
  for (const d of bad) refuses(t, [...CAP, '--ws-token-sha256', d], MSG.badDigest)
})

t.test('--ws-token-sha256 is accepted in upper and lower case', async (t) => {
  const token = canary('token')
  const hex = sha256Hex(token)
  for (const d of [hex, hex.toUpperCase()]) {
    const c = load([...CAP, '--ws-token-sha256', d])
    t.equal(c.auth.mode, 'capabilityToken')
    if (c.auth.mode !== 'capabilityToken') continue
    t.ok(Buffer.isBuffer(c.auth.tokenSha256))
    t.equal(c.auth.tokenSha256.toString('hex'), hex, 'digest stored as bytes')
  }
})

t.test('capability token file: trimmed content, only its SHA-256 kept', async (t) => {
  const token = canary('token')
  const path = tmpFile(`\n  \t${token}  \r\n\n`)
  const c = load([...CAP, '--ws-token-file', path])
  t.equal(c.auth.mode, 'capabilityToken')
  if (c.auth.mode !== 'capabilityToken') return
  t.equal(c.auth.tokenSha256.toString('hex'), sha256Hex(token), 'SHA-256 of the trimmed token')
  const json = JSON.stringify(c)
  t.notOk(json.includes(token), 'the token is nowhere in the config')
  t.notOk(json.includes(Buffer.from(token).toString('base64')), 'nor its base64 form')
  t.notOk(JSON.stringify(Object.values(c.auth)).includes(token))

  // A unicode token is hashed as UTF-8.
  const uni = `${canary('token')}-ключ-🔑`
  const c2 = load([...CAP, '--ws-token-file', tmpFile(uni + '\n')])
  if (c2.auth.mode === 'capabilityToken') t.equal(c2.auth.tokenSha256.toString('hex'), sha256Hex(uni))
  else t.fail('capability mode expected')
})

t.test('unreadable and empty secret files', async (t) => {
  const missing = join(tmp, 'does-not-exist')
  for (const argv of [
    [...CAP, '--ws-token-file', missing],
    [...SIGNED, '--ws-shared-secret-file', missing],
  ]) {
    const err = refusal(t, argv)
    t.ok(err.message.startsWith(MSG.unreadable(missing)), err.message)
    t.ok(err.message.length > MSG.unreadable(missing).length, 'the OS error follows')
  }
  const dir = refusal(t, [...SIGNED, '--ws-shared-secret-file', tmp])
  t.ok(dir.message.startsWith(MSG.unreadable(tmp)), dir.message)

  for (const content of ['', '   ', '\n\n\t \r\n']) {
    const path = tmpFile(content)
    refuses(t, [...CAP, '--ws-token-file', path], MSG.empty(path))
    refuses(t, [...SIGNED, '--ws-shared-secret-file', path], MSG.empty(path))
  }
})

t.test('signed secret: at least 32 bytes after trimming', async (t) => {
  const s31 = tmpFile('x'.repeat(31))
  refuses(t, [...SIGNED, '--ws-shared-secret-file', s31], MSG.short(s31))
  const s31padded = tmpFile(`   ${'y'.repeat(31)}   \n`)
  refuses(t, [...SIGNED, '--ws-shared-secret-file', s31padded], MSG.short(s31padded))
  const s1 = tmpFile('z')
  refuses(t, [...SIGNED, '--ws-shared-secret-file', s1], MSG.short(s1))

  const c32 = load([...SIGNED, '--ws-shared-secret-file', tmpFile('k'.repeat(32))])
  t.equal(c32.auth.mode, 'signedBearerToken', '32 bytes is enough')

  // Bytes count, not characters: 16 characters but 32 UTF-8 bytes is enough,
  // 31 ASCII characters plus nothing is not (above), and 11 chars of 3 bytes is enough.
  const e16 = 'é'.repeat(16)
  const ce = load([...SIGNED, '--ws-shared-secret-file', tmpFile(e16)])
  t.equal(ce.auth.mode, 'signedBearerToken', '16 two-byte characters = 32 bytes is enough')
  const multibyte = '€'.repeat(11)
  const cu = load([...SIGNED, '--ws-shared-secret-file', tmpFile(multibyte)])
  if (cu.auth.mode === 'signedBearerToken') t.same(Buffer.from(cu.auth.sharedSecret), Buffer.from(multibyte, 'utf8'))
  else t.fail('signed mode expected')
})

t.test('signed mode: secret trimmed, issuer/audience, skew default', async (t) => {
  const secret = secretValue()
  const path = tmpFile(`\n ${secret} \n`)
  const c = load([...SIGNED, '--ws-shared-secret-file', path])
  t.equal(c.auth.mode, 'signedBearerToken')
  if (c.auth.mode !== 'signedBearerToken') return
  t.same(Buffer.from(c.auth.sharedSecret), Buffer.from(secret, 'utf8'), 'trimmed secret bytes')
  t.equal(c.auth.issuer, null, 'no issuer: not checked')
  t.equal(c.auth.audience, null, 'no audience: not checked')
  t.equal(c.auth.maxClockSkewSeconds, 30, 'skew defaults to 30')
  t.equal(c.auth.maxTokenLifetimeSeconds, 0, 'token lifetime: not checked by default')
  const limited = load([...SIGNED, '--ws-shared-secret-file', path, '--ws-max-token-lifetime-seconds', '900'])
  if (limited.auth.mode !== 'signedBearerToken') return t.fail('signed mode expected')
  t.equal(limited.auth.maxTokenLifetimeSeconds, 900)
  t.throws(() => load([...SIGNED, '--ws-shared-secret-file', path, '--ws-max-token-lifetime-seconds', '-1']), 'negative lifetime refused')
  t.throws(() => load([...SIGNED, '--ws-shared-secret-file', path, '--ws-max-token-lifetime-seconds', 'soon']), 'non-numeric lifetime refused')
  t.throws(() => load(['--ws-max-token-lifetime-seconds', '900']), /websocket auth flags require/, 'the lifetime flag needs JWT mode')
  t.throws(() => load(['--ws-auth', 'capability-token', '--ws-token-sha256', 'a'.repeat(64), '--ws-max-token-lifetime-seconds', '900']), /`--ws-max-token-lifetime-seconds` requires `--ws-auth signed-bearer-token`/, 'not with a capability token')

  const c2 = load([...SIGNED, '--ws-shared-secret-file', path, '--ws-issuer', '  https://issuer.example  ', '--ws-audience', ' app ', '--ws-max-clock-skew-seconds', '5'])
  if (c2.auth.mode !== 'signedBearerToken') return t.fail('signed mode expected')
  t.equal(c2.auth.issuer, 'https://issuer.example', 'issuer trimmed')
  t.equal(c2.auth.audience, 'app', 'audience trimmed')
  t.equal(c2.auth.maxClockSkewSeconds, 5)

  const c3 = load([...SIGNED, '--ws-shared-secret-file', path, '--ws-issuer', '   ', '--ws-audience', ''])
  if (c3.auth.mode !== 'signedBearerToken') return t.fail('signed mode expected')
  t.equal(c3.auth.issuer, null, 'blank issuer -> null')
  t.equal(c3.auth.audience, null, 'empty audience -> null')

  const c4 = load([...SIGNED, '--ws-shared-secret-file', path, '--ws-max-clock-skew-seconds', '0', '--ws-issuer', 'émetteur-発行者'])
  if (c4.auth.mode !== 'signedBearerToken') return t.fail('signed mode expected')
  t.equal(c4.auth.maxClockSkewSeconds, 0)
  t.equal(c4.auth.issuer, 'émetteur-発行者', 'unicode issuer kept')

  for (const bad of ['-1', 'abc', '1.5', '', '٣٠', '1e3', '99999999999999999999']) {
    const err = refusal(t, [...SIGNED, '--ws-shared-secret-file', path, '--ws-max-clock-skew-seconds', bad])
    t.match(err.message, /--ws-max-clock-skew-seconds/, `skew ${JSON.stringify(bad)} refused`)
    t.notOk(err.message.includes(secret))
  }
  t.notOk(JSON.stringify({ ...c, auth: { ...c.auth, sharedSecret: undefined } }).includes(secret))
})

// ---------------------------------------------------------------------------------------------
// Environment twins, .env, precedence

t.test('every flag has an APP_SERVER_ environment twin', async (t) => {
  t.equal(envName('listen'), 'APP_SERVER_LISTEN')
  t.equal(envName('ws-auth'), 'APP_SERVER_WS_AUTH')
  t.equal(envName('log-level'), 'APP_SERVER_LOG_LEVEL')
  t.equal(envName('ws-max-clock-skew-seconds'), 'APP_SERVER_WS_MAX_CLOCK_SKEW_SECONDS')
  t.equal(envName('no-token-check'), 'APP_SERVER_NO_TOKEN_CHECK')
  for (const f of FLAGS) t.match(envName(f.name), /^APP_SERVER_[A-Z0-9_]+$/)
})

t.test('environment twins are read', async (t) => {
  t.same(load([], { APP_SERVER_LISTEN: 'ws://[::1]:0' }).listen, { host: '::1', port: 0, loopback: true })
  t.equal(load([], { APP_SERVER_LOG_LEVEL: 'debug' }).logLevel, 'debug')
  t.equal(load([], { APP_SERVER_URL_FILE: '/tmp/u' }).urlFile, '/tmp/u')
  t.same(load([], { APP_SERVER_NO_TOKEN_CHECK: 'true' }).auth, { mode: 'queryToken', enforce: false })
  t.same(load([], { APP_SERVER_NO_TOKEN_CHECK: 'false' }).auth, { mode: 'queryToken', enforce: true })
  t.same(load([], { APP_SERVER_ALLOW_ORIGIN: 'http://localhost:3000, https://ide.example' }).allowOrigins, [
    'http://localhost:3000',
    'https://ide.example',
  ])

  const token = canary('token')
  const c = load([], { APP_SERVER_WS_AUTH: 'capability-token', APP_SERVER_WS_TOKEN_FILE: tmpFile(token) })
  if (c.auth.mode === 'capabilityToken') t.equal(c.auth.tokenSha256.toString('hex'), sha256Hex(token))
  else t.fail('capability mode from the environment')

  const secret = secretValue()
  const s = load([], {
    APP_SERVER_WS_AUTH: 'signed-bearer-token',
    APP_SERVER_WS_SHARED_SECRET_FILE: tmpFile(secret),
    APP_SERVER_WS_ISSUER: 'iss',
    APP_SERVER_WS_AUDIENCE: 'aud',
    APP_SERVER_WS_MAX_CLOCK_SKEW_SECONDS: '7',
  })
  if (s.auth.mode === 'signedBearerToken') {
    t.same(Buffer.from(s.auth.sharedSecret), Buffer.from(secret))
    t.equal(s.auth.issuer, 'iss')
    t.equal(s.auth.audience, 'aud')
    t.equal(s.auth.maxClockSkewSeconds, 7)
  } else t.fail('signed mode from the environment')

  // The same refusals apply to values from the environment.
  refuses(t, [], MSG.badListen('ws://localhost:4500'), { APP_SERVER_LISTEN: 'ws://localhost:4500' })
  refuses(t, [], MSG.modeRequired, { APP_SERVER_WS_ISSUER: 'iss' })
  refuses(t, [], MSG.tokenSourceRequired, { APP_SERVER_WS_AUTH: 'capability-token' })
  refuses(t, [], MSG.noTokenCheckLoopback, { APP_SERVER_NO_TOKEN_CHECK: '1', APP_SERVER_LISTEN: 'ws://0.0.0.0:0' })
  refuses(t, [], MSG.absolute('url-file'), { APP_SERVER_URL_FILE: 'rel/url' })
})

t.test('flags win over the environment', async (t) => {
  const env = {
    APP_SERVER_LISTEN: 'ws://localhost:1',
    APP_SERVER_LOG_LEVEL: 'not-a-level',
    APP_SERVER_URL_FILE: 'relative',
    APP_SERVER_ALLOW_ORIGIN: 'bogus origin',
  }
  const c = load(
    ['--listen', 'ws://127.0.0.1:4601', '--log-level', 'warn', '--url-file', '/tmp/x', '--allow-origin', 'https://a.example'],
    env,
  )
  t.same(c.listen, { host: '127.0.0.1', port: 4601, loopback: true })
  t.equal(c.logLevel, 'warn')
  t.equal(c.urlFile, '/tmp/x')
  t.same(c.allowOrigins, ['https://a.example'])

  const flagToken = canary('token')
  const envToken = canary('token')
  const c2 = load([...CAP, '--ws-token-file', tmpFile(flagToken)], {
    APP_SERVER_WS_AUTH: 'signed-bearer-token',
    APP_SERVER_WS_TOKEN_FILE: tmpFile(envToken),
  })
  if (c2.auth.mode === 'capabilityToken') t.equal(c2.auth.tokenSha256.toString('hex'), sha256Hex(flagToken), 'flag token file wins')
  else t.fail('flag --ws-auth wins over APP_SERVER_WS_AUTH')
})

t.test('.env is read below the environment and the flags', async (t) => {
  const dir = mkdtempSync(join(tmp, 'dotenv-'))
  const token = canary('token')
  const tokenPath = tmpFile(token)
  const dotenvPath = join(dir, '.env')
  writeFileSync(
    dotenvPath,
    [
      'APP_SERVER_LISTEN=ws://127.0.0.1:4700',
      'APP_SERVER_LOG_LEVEL=debug',
      'APP_SERVER_URL_FILE=/tmp/from-dotenv',
      'APP_SERVER_WS_AUTH=capability-token',
      `APP_SERVER_WS_TOKEN_FILE=${tokenPath}`,
      '',
    ].join('\n'),
  )
  const fromFile = loadConfig([], { env: {}, dotenvPath })
  t.same(fromFile.listen, { host: '127.0.0.1', port: 4700, loopback: true }, 'listen from .env')
  t.equal(fromFile.logLevel, 'debug', 'log level from .env')
  t.equal(fromFile.urlFile, '/tmp/from-dotenv')
  if (fromFile.auth.mode === 'capabilityToken') t.equal(fromFile.auth.tokenSha256.toString('hex'), sha256Hex(token))
  else t.fail('capability mode from .env')

  const envWins = loadConfig([], { env: { APP_SERVER_LOG_LEVEL: 'error', APP_SERVER_LISTEN: 'ws://[::1]:0' }, dotenvPath })
  t.equal(envWins.logLevel, 'error', 'environment wins over .env')
  t.same(envWins.listen, { host: '::1', port: 0, loopback: true })
  t.equal(envWins.urlFile, '/tmp/from-dotenv', '.env still fills the rest')

  const flagWins = loadConfig(['--log-level', 'trace'], { env: { APP_SERVER_LOG_LEVEL: 'error' }, dotenvPath })
  t.equal(flagWins.logLevel, 'trace', 'flag wins over environment and .env')

  const none = loadConfig([], { env: {}, dotenvPath: null })
  t.same(none.listen, { host: '127.0.0.1', port: 4500, loopback: true }, 'dotenvPath null reads no .env')

  const missing = loadConfig([], { env: {}, dotenvPath: join(dir, 'absent.env') })
  t.same(missing.listen, { host: '127.0.0.1', port: 4500, loopback: true }, 'a missing .env is not an error')
})

t.test('the config records where each setting came from: flag, env, .env or default', async (t) => {
  const dir = mkdtempSync(join(tmp, 'sources-'))
  const dotenvPath = join(dir, '.env')
  writeFileSync(dotenvPath, ['APP_SERVER_LOG_LEVEL=debug', 'APP_SERVER_RPC_RATE=5', 'APP_SERVER_HOME=/tmp/from-dotenv', 'AUTH_ISSUER=https://issuer.example', ''].join('\n'))
  const c = loadConfig(['--rpc-rate', '7', '--allow-origin', 'https://a.example', '--no-token-check'], {
    env: { APP_SERVER_HOME: '/tmp/from-env', APP_SERVER_RPC_BURST: '9', CHATGPT_BASE_URL: 'https://backend.example' },
    dotenvPath,
  })
  t.equal(c.sources.rpcRate, 'flag', 'a flag wins over .env')
  t.equal(c.limits.rpcRatePerSecond, 7)
  t.equal(c.sources.allowOrigin, 'flag', 'a repeatable flag')
  t.equal(c.sources.noTokenCheck, 'flag', 'a switch')
  t.equal(c.sources.home, 'env', 'the environment wins over .env')
  t.equal(c.home, '/tmp/from-env')
  t.equal(c.sources.rpcBurst, 'env')
  t.equal(c.sources.logLevel, '.env', '.env fills what flags and environment leave')
  t.equal(c.logLevel, 'debug')
  t.equal(c.sources.CHATGPT_BASE_URL, 'env', 'environment-only settings too')
  t.equal(c.sources.AUTH_ISSUER, '.env')
  t.equal(c.authIssuer, 'https://issuer.example')
  t.equal(c.sources.maxPayload, 'default')
  t.equal(c.sources.listen, 'default')

  const bare = load([])
  for (const f of FLAGS) t.equal(bare.sources[f.key], 'default', `${f.name}: default when nothing sets it`)
  for (const e of ENV_ONLY) t.equal(bare.sources[e.name], 'default', `${e.name}: default when nothing sets it`)

  // A value a user gave counts as theirs even when it equals the default; a blank environment
  // value is no value (`.env.example` spells every setting `NAME=`).
  t.equal(load(['--log-level', 'info']).sources.logLevel, 'flag')
  t.equal(load([], { APP_SERVER_NO_TOKEN_CHECK: 'false' }).sources.noTokenCheck, 'env')
  t.equal(load([], { APP_SERVER_ALLOW_ORIGIN: '' }).sources.allowOrigin, 'default')
})

t.test('every flag default is a value its own parser accepts, within its bounds', async (t) => {
  const c = load([])
  for (const f of FLAGS) {
    if (f.defaultText !== undefined) t.same(f.parse(f.defaultText), f.defaultValue(), `--${f.name}: the default parses to the default value`)
    if (f.bounds) {
      const n = f.defaultValue() as number
      t.ok(n >= f.bounds.min && n <= f.bounds.max, `--${f.name}: default ${n} within ${f.bounds.min}..${f.bounds.max}`)
      t.equal(f.kind, 'integer')
    }
  }
  t.same(c.limits, { httpPerMinute: 600, failedUpgradesPerMinute: 30, rpcRatePerSecond: 1000, rpcBurst: 2000, maxInFlight: 4096, maxInFlightPerConnection: 128, maxOutboundBufferBytes: 16 * 1024 * 1024, maxConnections: 0, maxPendingPerClient: 32, headerTimeoutMs: 10_000 })
  t.equal(c.maxPayloadBytes, 16 * 1024 * 1024)
  t.equal(c.pingIntervalMs, 0)
  t.equal(c.remoteControlWaitMs, 30_000)
  t.equal(loadConfig(['--remote-control-wait-seconds', '1'], { env: {}, dotenvPath: null }).remoteControlWaitMs, 1_000, '--remote-control-wait-seconds is read in seconds')
  t.equal(loadConfig([], { env: { APP_SERVER_REMOTE_CONTROL_WAIT_SECONDS: '7' }, dotenvPath: null }).remoteControlWaitMs, 7_000, 'and so is its environment twin')
  t.equal(c.remoteControlMaxConnections, 128)
  t.equal(loadConfig(['--remote-control-max-connections', '2'], { env: {}, dotenvPath: null }).remoteControlMaxConnections, 2, '--remote-control-max-connections')
  t.equal(loadConfig([], { env: { APP_SERVER_REMOTE_CONTROL_MAX_CONNECTIONS: '9' }, dotenvPath: null }).remoteControlMaxConnections, 9, 'and its environment twin')
  for (const bad of ['0', '-1', '100001', 'many', '1.5', ''])
    t.throws(() => loadConfig(['--remote-control-max-connections', bad], { env: {}, dotenvPath: null }), /remote-control-max-connections/, `--remote-control-max-connections ${JSON.stringify(bad)} is refused, naming the flag`)
  t.same(c.accounts, { credentialsStore: 'file', forcedLoginMethod: null, forcedWorkspaceIds: null, loginCallbackPort: 1455, loginClientId: 'app_EMoamEEZ73f0CkXaXp7hrann' })
  t.equal(c.logLevel, 'info')
  t.equal(c.chatgptBaseUrl, 'https://chatgpt.com/backend-api')
  t.equal(c.authIssuer, 'https://auth.openai.com')
})

// ---------------------------------------------------------------------------------------------
// Other flags

t.test('--allow-origin takes exact origins only', async (t) => {
  const good = ['http://localhost:3000', 'https://ide.example', 'http://127.0.0.1:8080', 'http://[::1]:3000', 'https://ide.example:8443']
  t.same(load(good.flatMap((o) => ['--allow-origin', o])).allowOrigins, good, 'repeatable, kept verbatim')
  const bad = [
    'http://localhost:3000/',
    'https://ide.example/path',
    'https://ide.example?x=1',
    'HTTPS://IDE.EXAMPLE',
    'http://a.example:80',
    'ftp://a.example',
    'ws://localhost:3000',
    'null',
    '*',
    'localhost:3000',
    '',
    'http://user@a.example',
    'https://ide.example ',
  ]
  for (const o of bad) {
    const err = refusal(t, ['--allow-origin', o])
    t.match(err.message, /--allow-origin/, `origin ${JSON.stringify(o)} refused`)
  }
})

t.test('--log-level validation', async (t) => {
  const levels: LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
  for (const l of levels) t.equal(load(['--log-level', l]).logLevel, l)
  for (const bad of ['verbose', '', 'info debug', '10', 'inf\u0000o', 'ｉｎｆｏ']) {
    const err = refusal(t, ['--log-level', bad])
    t.match(err.message, /--log-level/, `level ${JSON.stringify(bad)} refused`)
  }
})

t.test('unknown flags, positionals and malformed flags are refused', async (t) => {
  t.match(refusal(t, ['--bogus']).message, /--bogus/)
  t.match(refusal(t, ['--listen-on', 'ws://127.0.0.1:0']).message, /--listen-on/)
  t.match(refusal(t, ['serve']).message, /serve/)
  refusal(t, ['--listen'])
  refusal(t, ['--no-token-check=yes'])
  // A mistyped flag carrying a secret inline must not echo the secret.
  const secret = canary('token')
  const err = refusal(t, [`--ws-token=${secret}`])
  t.notOk(err.message.includes(secret), 'the inline value is not echoed')
})

t.test('hostile inputs', async (t) => {
  const long = 'ws://' + '1'.repeat(200_000) + ':4500'
  const started = Date.now()
  refuses(t, ['--listen', long], MSG.badListen(long))
  refuses(t, ['--listen', 'ws://[' + ':'.repeat(100_000) + ']:1'], MSG.badListen('ws://[' + ':'.repeat(100_000) + ']:1'))
  refuses(t, [...CAP, '--ws-token-sha256', 'a'.repeat(1_000_000)], MSG.badDigest)
  refusal(t, ['--log-level', 'x'.repeat(100_000)])
  refusal(t, ['--allow-origin', 'http://' + 'a'.repeat(100_000) + '/'])
  t.ok(Date.now() - started < 3000, 'long values are refused quickly (no catastrophic backtracking)')

  // NUL bytes.
  refuses(t, ['--listen', 'ws://127.0.0.1:4500\u0000'], MSG.badListen('ws://127.0.0.1:4500\u0000'))
  refuses(t, ['--listen', 'ws://127.0.0.1\u0000:4500'], MSG.badListen('ws://127.0.0.1\u0000:4500'))
  refuses(t, [...CAP, '--ws-token-sha256', `${'a'.repeat(32)}\u0000${'a'.repeat(31)}`], MSG.badDigest)
  refuses(t, ['--url-file', 'rel\u0000/abs'], MSG.absolute('url-file'))
  const nulPath = `${tmp}/a\u0000b`
  const nul = refusal(t, [...SIGNED, '--ws-shared-secret-file', nulPath])
  t.ok(nul.message.startsWith(MSG.unreadable(nulPath)), 'a NUL in a path is an unreadable secret')

  // Unicode look-alikes.
  for (const x of ['ws://１２７.０.０.１:4500', 'ws://127.0.0.1:４５００', 'ｗｓ://127.0.0.1:4500', 'ws://127.0.0.1:4500\u200b', 'ws://[::１]:4500']) {
    refuses(t, ['--listen', x], MSG.badListen(x))
  }
  const token = `${canary('token')}-日本語-🔐`
  const c = load([...CAP, '--ws-token-file', tmpFile(token)])
  t.notOk(JSON.stringify(c).includes(token), 'unicode token not kept')

  // A very long capability token is fine (only its hash is kept).
  const longToken = canary('token') + 'x'.repeat(100_000)
  const cl = load([...CAP, '--ws-token-file', tmpFile(longToken)])
  if (cl.auth.mode === 'capabilityToken') t.equal(cl.auth.tokenSha256.length, 32)
  else t.fail('capability mode expected')
})

t.test('refusals never echo secrets', async (t) => {
  const token = canary('token')
  const tokenPath = tmpFile(token)
  const secret = secretValue()
  const secretPath = tmpFile(secret)
  const cases: string[][] = [
    [...CAP, '--ws-token-file', tokenPath, '--ws-token-sha256', DIGEST],
    [...CAP, '--ws-token-file', tokenPath, '--ws-issuer', 'i'],
    [...SIGNED, '--ws-shared-secret-file', secretPath, '--ws-token-file', tokenPath],
    ['--no-token-check', ...CAP, '--ws-token-file', tokenPath],
    [...SIGNED, '--ws-shared-secret-file', secretPath, '--ws-max-clock-skew-seconds', 'x'],
    [...CAP, '--ws-token-file', tokenPath, '--url-file', 'relative'],
  ]
  for (const argv of cases) {
    const err = refusal(t, argv)
    t.notOk(err.message.includes(token) || err.message.includes(secret), err.message)
  }
  const short = canary('s')
  const shortPath = tmpFile(short)
  const err = refusal(t, [...SIGNED, '--ws-shared-secret-file', shortPath])
  t.equal(err.message, MSG.short(shortPath))
  t.notOk(err.message.includes(short), 'a short secret is not echoed')
})

// ---------------------------------------------------------------------------------------------
// The real CLI

t.test('CLI refusal: exit 2, exactly one line on stderr, nothing else', async (t) => {
  // The process boundary once: the real binary's exit status, signal and streams.
  const cwd = mkdtempSync(join(tmp, 'cwd-'))
  const r = await runCli(['--listen', 'ws://localhost:4500'], { cwd })
  t.equal(r.code, 2, 'the process exits 2')
  t.equal(r.signal, null)
  t.equal(r.stderr, MSG.badListen('ws://localhost:4500') + '\n', 'exactly the message on stderr')
  t.equal(r.stdout, '', 'nothing on stdout')

  // The other refusals in process: the same runCli main.js calls, the same exit code and streams.
  const cases: { args: string[]; message: string; env?: Record<string, string> }[] = [
    { args: ['--no-token-check', '--listen', 'ws://0.0.0.0:0'], message: MSG.noTokenCheckLoopback },
    { args: [], env: { APP_SERVER_WS_AUTH: 'signed-bearer-token' }, message: MSG.secretRequired },
  ]
  for (const { args, message, env } of cases) {
    const c = await runCommand(args, { refused: true, ...(env ? { env } : {}) })
    t.equal(c.code, 2, `exit code 2 for ${message}`)
    t.equal(c.stderr, message + '\n', 'exactly the message on stderr')
    t.equal(c.stdout, '', 'nothing on stdout')
  }
})

t.test('CLI refusal stays one line even for a value with a newline', async (t) => {
  const r = await runCommand(['--listen', 'ws://127.0.0.1:1\nINJECTED line'], { refused: true })
  t.equal(r.code, 2)
  t.equal(r.stdout, '')
  t.ok(r.stderr.startsWith('invalid websocket --listen URL `'), r.stderr)
  t.equal(r.stderr.split('\n').length, 2, 'one line on stderr')
})

t.test('CLI refusal from a .env in the working directory', async (t) => {
  const cwd = mkdtempSync(join(tmp, 'cwd-'))
  writeFileSync(join(cwd, '.env'), 'APP_SERVER_LISTEN=ws://example.com:1\n')
  const r = await runCli([], { cwd })
  t.equal(r.code, 2)
  t.equal(r.stderr, MSG.badListen('ws://example.com:1') + '\n')
})

t.test('--help lists every flag with its environment name and default', async (t) => {
  const r = await runCommand(['--help'])
  t.equal(r.code, 0)
  const text = r.stdout
  t.ok(text.length > 0, 'help printed on stdout')
  for (const f of FLAGS) {
    const start = text.indexOf(`--${f.name}`)
    t.ok(start >= 0, `--${f.name} listed`)
    // The flag's own block: up to the next line that starts another option.
    const rest = text.slice(start)
    const next = rest.slice(1).search(/\n\s*(?:-h, )?--[a-z]/)
    const block = next < 0 ? rest : rest.slice(0, next + 1)
    t.ok(block.includes(envName(f.name)), `--${f.name} shows ${envName(f.name)}`)
    if (f.defaultText !== undefined) t.ok(block.includes(f.defaultText), `--${f.name} shows its default ${f.defaultText}`)
  }
  t.ok(text.includes('--help'), '--help itself listed')
})
