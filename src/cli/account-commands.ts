import { createAccountService } from '../account/create.js'
import type { AccountEvent, AccountService } from '../account/service.js'
import type { RateLimitsReader } from '../account/rate-limits.js'
import { KeyringUnavailable, StoreError } from '../account/types.js'
import type { RateLimitSnapshot, RateLimitWindow } from '../account/usage.js'
import { systemClock } from '../clock.js'
import type { Config } from '../config/types.js'
import type { AppLogger } from '../log/logger.js'
import { runChatgptLogin } from './login-wait.js'
import type { CliIo } from './run.js'

/** What the account commands exit with (README "Command line" lists them). */
export const EXIT = {
  ok: 0,
  /** Not logged in (`status`), a login that failed or was refused, any other failure. */
  failed: 1,
  /** Bad flags or settings (config/errors.ts). */
  usage: 2,
  /** `--credentials-store keyring`: no OS keyring reachable (no D-Bus session, no Secret Service). */
  keyringUnavailable: 3,
  /** `status`: the stored credentials cannot be read (auth.json unreadable or not a credentials document). */
  storeUnreadable: 4,
} as const

/**
 * `app-server login [--with-api-key | --device-auth]`, `logout`, `status [--json]`: the same account service
 * the JSON-RPC methods use, built from the same config. Returns the exit code (`EXIT`).
 *
 * Checks before anything is read: an `ephemeral` store refuses a login (nothing would outlive
 * the command), and `--with-api-key` refuses a terminal on stdin (a key typed there is echoed
 * and kept in the shell's scrollback; codex refuses it too). Then the store is loaded, and a
 * store that cannot be used is said as such (exit 3; exit 4 from `status` for a document that
 * cannot be read, which `login` replaces and `logout` removes), never as "Not logged in". Output is
 * for a person: lines on stdout, errors as one `error: …` line on stderr; `status --json`
 * prints one JSON object instead.
 */
export async function runAccountCommand(
  command: 'login' | 'logout' | 'status',
  options: { withApiKey: boolean; deviceAuth: boolean; json: boolean },
  config: Config,
  log: AppLogger,
  io: CliIo & { stdin: NodeJS.ReadableStream },
): Promise<number> {
  const fail = (line: string, code: number = EXIT.failed) => {
    io.stderr.write(line + '\n')
    return code
  }
  if (command === 'login' && config.accounts.credentialsStore === 'ephemeral') {
    return fail('error: --credentials-store ephemeral keeps credentials in memory only, so this login would be gone when the command exits; use file, keyring or auto')
  }
  if (command === 'login' && options.withApiKey && (io.stdin as { isTTY?: boolean }).isTTY === true) {
    return fail('error: --with-api-key reads the API key from standard input, not from a terminal; pipe it in, e.g. `printenv OPENAI_API_KEY | app-server login --with-api-key`')
  }

  const events: AccountEvent[] = []
  const waiters: (() => void)[] = []
  const clock = io.clock ?? systemClock
  const { accounts, rateLimits, loadError } = await createAccountService(config, {
    log,
    clock,
    quietLoad: true,
    onEvent(e) {
      events.push(e)
      for (const w of waiters.splice(0)) w()
    },
  })
  if (loadError instanceof KeyringUnavailable) {
    return fail(`error: the OS keyring cannot be reached (${loadError.message}); start a Secret Service (e.g. gnome-keyring) in this session, or use --credentials-store file`, EXIT.keyringUnavailable)
  }
  // An unreadable document is news to `status`; `login` replaces it and `logout` removes it.
  if (loadError !== null && command === 'status') {
    return fail(`error: the stored credentials cannot be read: ${loadError instanceof StoreError ? loadError.message : 'unexpected error'}`, EXIT.storeUnreadable)
  }
  const say = (line: string) => io.stdout.write(line + '\n')

  try {
    if (command === 'login' && options.withApiKey) {
      // From stdin, never argv: arguments are visible to every user on the machine.
      const key = (await readAll(io.stdin)).trim()
      if (key.length === 0) return fail('error: no API key on standard input (usage: printenv OPENAI_API_KEY | app-server login --with-api-key)')
      await accounts.loginApiKey(key)
      say('Successfully logged in')
      return 0
    }
    if (command === 'login') {
      const ended = async (loginId: string) => {
        for (;;) {
          const done = events.find((e) => e.type === 'loginCompleted' && e.loginId === loginId)
          if (done?.type === 'loginCompleted') return done
          await new Promise<void>((resolve) => waiters.push(resolve))
        }
      }
      return await runChatgptLogin(accounts, options.deviceAuth ? 'device' : 'browser', ended, { ...io, clock, interrupts: process })
    }
    if (command === 'logout') {
      // An unreadable store is not nothing: logout keeps the file aside (see file-store.ts).
      const had = accounts.current !== null || accounts.storeProblem !== null
      await accounts.logout()
      say(had ? 'Successfully logged out' : 'Not logged in')
      return 0
    }
    if (options.json) return await printStatusJson(accounts, rateLimits, say)
    // status
    const c = accounts.current
    if (c === null) {
      say('Not logged in')
      return 1
    }
    if (c.kind === 'apiKey') {
      say(`Logged in using an API key - ${maskKey(c.apiKey)}`)
      return 0
    }
    const view = accounts.view()
    const who = view?.type === 'chatgpt' ? `${view.email ?? 'unknown email'} (plan: ${view.planType})` : ''
    say(`Logged in using ChatGPT - ${who}`)
    try {
      const limits = await accounts.withChatgptAuth((auth) => rateLimits.read(auth))
      for (const line of describeLimits(limits.rateLimits)) say(line)
    } catch (err) {
      say(`Rate limits: unavailable (${err instanceof Error ? err.message : 'error'})`)
    }
    return 0
  } catch (err) {
    return fail(`error: ${err instanceof Error ? err.message : String(err)}`)
  }
}

/**
 * `status --json`: `{account, rateLimits, rateLimitsByLimitId, rateLimitsError}` — the account
 * as `account/read` gives it, the limits as `account/rateLimits/read` does (null, with the
 * reason in `rateLimitsError`, when they cannot be read). Exit 1 when not logged in, as `status`.
 */
async function printStatusJson(accounts: AccountService, rateLimits: RateLimitsReader, say: (line: string) => void): Promise<number> {
  const account = accounts.view()
  let limits: Awaited<ReturnType<RateLimitsReader['read']>> | null = null
  let rateLimitsError: string | null = null
  if (account?.type === 'chatgpt') {
    try {
      limits = await accounts.withChatgptAuth((auth) => rateLimits.read(auth))
    } catch (err) {
      rateLimitsError = err instanceof Error ? err.message : 'error'
    }
  }
  say(JSON.stringify({ account, rateLimits: limits?.rateLimits ?? null, rateLimitsByLimitId: limits?.rateLimitsByLimitId ?? null, rateLimitsError }))
  return account === null ? EXIT.failed : EXIT.ok
}

function describeLimits(s: RateLimitSnapshot): string[] {
  const lines = ['Rate limits:']
  const one = (label: string, w: RateLimitWindow | null) => {
    if (w === null) return
    const span = w.windowDurationMins === null ? '' : ` of ${w.windowDurationMins} min window`
    const reset = w.resetsAt === null ? '' : `, resets ${new Date(w.resetsAt * 1000).toISOString()}`
    lines.push(`  ${label}: ${w.usedPercent}% used${span}${reset}`)
  }
  one('primary', s.primary)
  one('secondary', s.secondary)
  if (lines.length === 1) lines.push('  none reported')
  return lines
}

/** Enough of the key to recognise it, never enough to use it. */
function maskKey(key: string): string {
  if (key.length <= 12) return '***'
  return `${key.slice(0, 6)}***${key.slice(-4)}`
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    size += b.length
    if (size > 64 * 1024) throw new Error('the API key on standard input is larger than 64 KiB')
    chunks.push(b)
  }
  return Buffer.concat(chunks).toString('utf8')
}
