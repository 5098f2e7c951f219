/**
 * `app-server login --with-api-key`, `logout`, `status`: what the commands do runs in-process
 * (helpers/cli.ts: the CLI's own `runCli`, no node start-up per command); the real binary is
 * run where the process itself is the point: a key piped into its real stdin, its exit status
 * and stdout. (A refusal's exit status from the real binary is config.test.ts's.) Also the
 * honest refusals and errors: a terminal on stdin, an ephemeral store, an unreadable auth.json
 * (exit 4), an unreachable keyring (exit 3), and `status --json`.
 */
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import { canary, record, registerCanary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { runCli } from './helpers/process.js'

function home(): string {
  return mkdtempSync(join(tmpdir(), 'cli-account-'))
}

function unsignedJwt(claims: Record<string, unknown>): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  // Claims are read without verification, but a token needs three non-empty parts.
  return registerCanary(`${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ ...claims, jti: canary('jti') })}.c2ln`)
}

t.test('login --with-api-key reads stdin, status masks the key, logout clears it', async (t) => {
  const h = home()
  const env = { APP_SERVER_HOME: h }
  const key = canary('sk-proj')
  const login = await runCli(['login', '--with-api-key'], { env, input: key + '\n' })
  t.equal(login.code, 0, login.stderr)
  t.equal(login.stdout, 'Successfully logged in\n')
  const file = join(h, 'auth.json')
  t.same(JSON.parse(readFileSync(file, 'utf8')), { auth_mode: 'apikey', OPENAI_API_KEY: key })
  t.equal(statSync(file).mode & 0o777, 0o600)
  t.equal(statSync(h).mode & 0o777, 0o700)

  const status = await runCommand(['status'], { env })
  t.equal(status.code, 0)
  t.match(status.stdout, /^Logged in using an API key - sk-pro\*\*\*.{4}\n$/)
  t.notOk(status.stdout.includes(key), 'the key itself is never printed')
  record(status.stdout + status.stderr)

  const logout = await runCommand(['logout'], { env })
  t.equal(logout.code, 0)
  t.equal(logout.stdout, 'Successfully logged out\n')
  t.throws(() => statSync(file), 'auth.json removed')
  const after = await runCommand(['status'], { env })
  t.equal(after.code, 1)
  t.equal(after.stdout, 'Not logged in\n')
  const again = await runCommand(['logout'], { env })
  t.equal(again.stdout, 'Not logged in\n')
})

t.test('login --with-api-key refuses an empty stdin and never takes the key from argv', async (t) => {
  const env = { APP_SERVER_HOME: home() }
  const empty = await runCommand(['login', '--with-api-key'], { env, input: '' })
  t.equal(empty.code, 1)
  t.match(empty.stderr, /no API key on standard input/)
  const argv = await runCommand(['login', '--with-api-key', canary('sk')], { env, input: '' })
  t.equal(argv.code, 2, 'a stray argument is refused')
  t.equal(argv.stderr.split('\n').filter(Boolean).length, 1)
})

t.test('forced login method applies to the CLI too', async (t) => {
  const env = { APP_SERVER_HOME: home() }
  const r = await runCommand(['login', '--with-api-key', '--forced-login-method', 'chatgpt'], { env, input: canary('sk') })
  t.equal(r.code, 1)
  t.equal(r.stderr, 'error: API key login is disabled. Use ChatGPT login instead.\n')
})

t.test('status with stored ChatGPT tokens shows the account and its rate limits', async (t) => {
  const backend = Fastify()
  const seen: string[] = []
  backend.get('/backend-api/wham/usage', async (req) => {
    seen.push(String(req.headers.authorization))
    return {
      plan_type: 'pro',
      rate_limit: {
        allowed: true,
        limit_reached: false,
        primary_window: { used_percent: 42, limit_window_seconds: 18000, reset_after_seconds: 60, reset_at: 1_800_000_000 },
        secondary_window: null,
      },
      credits: { has_credits: false, unlimited: false, balance: null },
      additional_rate_limits: [],
    }
  })
  await backend.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => backend.close())
  const port = (backend.server.address() as { port: number }).port

  const h = home()
  const access = unsignedJwt({ exp: Math.floor(Date.now() / 1000) + 3600 })
  const id = unsignedJwt({ email: 'dev@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-9', chatgpt_plan_type: 'pro' } })
  writeFileSync(
    join(h, 'auth.json'),
    JSON.stringify({
      auth_mode: 'chatgpt',
      OPENAI_API_KEY: null,
      tokens: { id_token: id, access_token: access, refresh_token: canary('rt'), account_id: 'acct-9' },
      last_refresh: new Date().toISOString(),
    }),
    { mode: 0o600 },
  )
  const r = await runCommand(['status'], { env: { APP_SERVER_HOME: h, CHATGPT_BASE_URL: `http://127.0.0.1:${port}/backend-api` } })
  record(r.stdout + r.stderr)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^Logged in using ChatGPT - dev@example\.com \(plan: pro\)\n/)
  t.match(r.stdout, /primary: 42% used of 300 min window/)
  t.same(seen, [`Bearer ${access}`], 'the stored access token was used')

  const json = await runCommand(['status', '--json'], { env: { APP_SERVER_HOME: h, CHATGPT_BASE_URL: `http://127.0.0.1:${port}/backend-api` } })
  record(json.stdout + json.stderr)
  t.equal(json.code, 0, json.stderr)
  t.equal(json.stdout.split('\n').length, 2, 'one JSON line')
  const parsed = JSON.parse(json.stdout) as { account: unknown; rateLimits: { primary: unknown; planType: unknown } | null; rateLimitsByLimitId: Record<string, unknown>; rateLimitsError: unknown }
  t.same(parsed.account, { type: 'chatgpt', email: 'dev@example.com', planType: 'pro' }, 'the account as account/read gives it')
  t.match(parsed.rateLimits, { limitId: 'codex', planType: 'pro', primary: { usedPercent: 42, windowDurationMins: 300, resetsAt: 1_800_000_000 } }, 'the limits as account/rateLimits/read gives them')
  t.same(Object.keys(parsed.rateLimitsByLimitId), ['codex'])
  t.equal(parsed.rateLimitsError, null)
  t.notOk(json.stdout.includes(access), 'no token in the JSON')
})

t.test('status --json: not logged in (exit 1) and an API key (never the key)', async (t) => {
  const env = { APP_SERVER_HOME: home() }
  const none = await runCommand(['status', '--json'], { env })
  t.equal(none.code, 1)
  t.equal(none.stdout, JSON.stringify({ account: null, rateLimits: null, rateLimitsByLimitId: null, rateLimitsError: null }) + '\n')
  const key = canary('sk-proj')
  t.equal((await runCommand(['login', '--with-api-key'], { env, input: key })).code, 0)
  const apiKey = await runCommand(['status', '--json'], { env })
  t.equal(apiKey.code, 0)
  t.equal(apiKey.stdout, JSON.stringify({ account: { type: 'apiKey' }, rateLimits: null, rateLimitsByLimitId: null, rateLimitsError: null }) + '\n')
})

t.test('login --with-api-key refuses a terminal on stdin, and reads nothing from it', async (t) => {
  const h = home()
  const typed = canary('sk-typed')
  const r = await runCommand(['login', '--with-api-key'], { env: { APP_SERVER_HOME: h }, input: typed + '\n', stdinIsTTY: true })
  t.equal(r.code, 1)
  t.equal(r.stdout, '')
  t.equal(r.stderr, 'error: --with-api-key reads the API key from standard input, not from a terminal; pipe it in, e.g. `printenv OPENAI_API_KEY | app-server login --with-api-key`\n')
  t.notOk(existsSync(join(h, 'auth.json')), 'nothing stored')
})

t.test('login with --credentials-store ephemeral is refused: nothing would be kept', async (t) => {
  const h = home()
  const env = { APP_SERVER_HOME: h }
  const refusal = 'error: --credentials-store ephemeral keeps credentials in memory only, so this login would be gone when the command exits; use file, keyring or auto\n'
  const withKey = await runCommand(['login', '--with-api-key', '--credentials-store', 'ephemeral'], { env, input: canary('sk') })
  t.equal(withKey.code, 1)
  t.equal(withKey.stdout, '', 'no "Successfully logged in"')
  t.equal(withKey.stderr, refusal)
  const browser = await runCommand(['login', '--credentials-store', 'ephemeral'], { env })
  t.equal(browser.code, 1)
  t.equal(browser.stderr, refusal, 'the browser login is refused before it starts')
  t.notOk(existsSync(join(h, 'auth.json')), 'nothing stored')
})

t.test('an unreadable auth.json is said as such by status (exit 4), not as "Not logged in"; logout and login still work', async (t) => {
  const h = home()
  writeFileSync(join(h, 'auth.json'), 'not json', { mode: 0o600 })
  const r = await runCommand(['status'], { env: { APP_SERVER_HOME: h } })
  t.equal(r.code, 4)
  t.equal(r.stdout, '')
  t.equal(r.stderr, 'error: the stored credentials cannot be read: auth.json is not valid JSON\n', 'why, without a path')
  // The way out: logout removes it, and a login replaces it.
  const logout = await runCommand(['logout'], { env: { APP_SERVER_HOME: h } })
  t.equal(logout.code, 0, logout.stderr)
  t.notOk(existsSync(join(h, 'auth.json')), 'logout removed the unreadable file')
  writeFileSync(join(h, 'auth.json'), 'not json', { mode: 0o600 })
  const key = canary('sk-proj')
  const login = await runCommand(['login', '--with-api-key'], { env: { APP_SERVER_HOME: h }, input: key })
  t.equal(login.code, 0, login.stderr)
  t.same(JSON.parse(readFileSync(join(h, 'auth.json'), 'utf8')), { auth_mode: 'apikey', OPENAI_API_KEY: key }, 'login replaced it')
})

t.test(
  'keyring unreachable: its own message and exit code 3 for every command, no stack trace, not "Not logged in"',
  { skip: process.platform !== 'linux' && 'the Secret Service is Linux-only' },
  async (t) => {
    // No D-Bus session listens there: the Secret Service cannot be reached.
    const saved = process.env.DBUS_SESSION_BUS_ADDRESS
    process.env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${join(home(), 'no-such-bus-socket')}`
    t.teardown(() => {
      if (saved === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS
      else process.env.DBUS_SESSION_BUS_ADDRESS = saved
    })
    const env = { APP_SERVER_HOME: home() }
    for (const [args, input] of [
      [['status'], undefined],
      [['status', '--json'], undefined],
      [['logout'], undefined],
      [['login', '--with-api-key'], canary('sk')],
    ] as const) {
      const r = await runCommand([...args, '--credentials-store', 'keyring'], { env, ...(input ? { input } : {}) })
      t.equal(r.code, 3, `${args.join(' ')}: exit 3`)
      t.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`)
      t.match(r.stderr, /^error: the OS keyring cannot be reached \(keyring unavailable: [^\n]+\); start a Secret Service \(e\.g\. gnome-keyring\) in this session, or use --credentials-store file\n$/, `${args.join(' ')}: one line saying so`)
      t.notOk(/\bat \S+:\d+/.test(r.stderr), 'no stack frame')
    }
  },
)
