/**
 * `app-server login --with-api-key`, `logout`, `status`: what the commands do runs in-process
 * (helpers/cli.ts: the CLI's own `runCli`, no node start-up per command); the real binary is
 * run where the process itself is the point: a key piped into its real stdin, its exit status
 * and stdout. (A refusal's exit status from the real binary is config.test.ts's.)
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
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
})
