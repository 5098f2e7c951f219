import { createAccountService } from '../account/create.js'
import type { AccountEvent } from '../account/service.js'
import type { RateLimitSnapshot, RateLimitWindow } from '../account/usage.js'
import type { Config } from '../config/types.js'
import type { AppLogger } from '../log/logger.js'
import type { CliIo } from './run.js'

/**
 * `app-server login [--with-api-key]`, `logout`, `status`: the same account service the
 * JSON-RPC methods use, built from the same config. Returns the exit code.
 */
export async function runAccountCommand(command: 'login' | 'logout' | 'status', options: { withApiKey: boolean }, config: Config, log: AppLogger, io: CliIo & { stdin: NodeJS.ReadableStream }): Promise<number> {
  const events: AccountEvent[] = []
  const waiters: (() => void)[] = []
  const { accounts, rateLimits } = await createAccountService(config, {
    log,
    onEvent(e) {
      events.push(e)
      for (const w of waiters.splice(0)) w()
    },
  })
  const say = (line: string) => io.stdout.write(line + '\n')
  const fail = (line: string) => {
    io.stderr.write(line + '\n')
    return 1
  }

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
      const { authUrl } = await accounts.loginChatgpt()
      io.stderr.write(`Open this URL in your browser to sign in to ChatGPT:\n\n  ${authUrl}\n\nWaiting for the login to complete...\n`)
      for (;;) {
        const done = events.find((e) => e.type === 'loginCompleted')
        if (done && done.type === 'loginCompleted') {
          if (done.success) {
            say('Successfully logged in')
            return 0
          }
          return fail(`error: login failed: ${done.error ?? 'unknown error'}`)
        }
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    }
    if (command === 'logout') {
      // An unreadable store is not nothing: logout keeps the file aside (see file-store.ts).
      const had = accounts.current !== null || accounts.storeProblem !== null
      await accounts.logout()
      say(had ? 'Successfully logged out' : 'Not logged in')
      return 0
    }
    // status
    const c = accounts.current
    const problem = accounts.storeProblem
    if (c === null && problem !== null) return fail(`error: stored credentials are unreadable: ${problem.message}`)
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
