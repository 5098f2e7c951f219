/**
 * `app-server login` (browser) and `app-server login --device-auth`: start the ChatGPT login
 * through the account service, tell the person what to do, and wait for it to finish.
 *
 * What is shown: the browser login's URL on stderr (as before); the device login's URL and
 * one-time code on stdout — they are the command's answer, and go nowhere else (never a log).
 * Then how long the wait can last: on a terminal a line rewritten every second with the time
 * left, piped a single plain line (no carriage returns in a log file). Ctrl-C cancels the
 * login — the callback server closes, the polling stops — and exits 130.
 */
import { LOGIN_TIMEOUT_MS } from '../account/browser-login.js'
import { DEVICE_LOGIN_TIMEOUT_MS } from '../account/device-login.js'
import type { AccountService } from '../account/service.js'
import type { Clock } from '../clock.js'

export interface LoginWaitIo {
  readonly stdout: NodeJS.WriteStream
  readonly stderr: NodeJS.WriteStream
  readonly clock: Clock
  /** Where Ctrl-C arrives (the process). */
  readonly interrupts: Pick<NodeJS.EventEmitter, 'once' | 'off'>
}

export interface LoginEnded {
  readonly success: boolean
  readonly error: string | null
}

/** Exit code of a login the person interrupted, as a shell reports SIGINT. */
export const INTERRUPTED_EXIT = 130
const TICK_MS = 1000

/**
 * Runs one ChatGPT login to its end; returns the exit code. `ended` resolves with the
 * `account/login/completed` of the given login id.
 */
export async function runChatgptLogin(
  accounts: AccountService,
  kind: 'browser' | 'device',
  ended: (loginId: string) => Promise<LoginEnded>,
  io: LoginWaitIo,
): Promise<number> {
  let loginId: string
  let timeoutMs: number
  if (kind === 'device') {
    const started = await accounts.loginChatgptDeviceCode()
    loginId = started.loginId
    timeoutMs = DEVICE_LOGIN_TIMEOUT_MS
    io.stdout.write(
      [
        'To sign in with ChatGPT from any device:',
        '',
        '1. Open this link in a browser and sign in:',
        `   ${started.verificationUrl}`,
        '',
        `2. Enter this one-time code (expires in ${minutes(timeoutMs)}):`,
        `   ${started.userCode}`,
        '',
        'Device codes are a common phishing target. Never share this code.',
        '',
      ].join('\n'),
    )
  } else {
    const started = await accounts.loginChatgpt()
    loginId = started.loginId
    timeoutMs = LOGIN_TIMEOUT_MS
    io.stderr.write(`Open this URL in your browser to sign in to ChatGPT:\n\n  ${started.authUrl}\n\n`)
  }
  let interrupted = false
  const onInterrupt = () => {
    interrupted = true
    void accounts.cancelLogin(loginId)
  }
  // Listening before saying so: a Ctrl-C the moment the line is read must cancel, not kill.
  io.interrupts.once('SIGINT', onInterrupt)
  io.stderr.write(`Waiting up to ${minutes(timeoutMs)} for the sign-in to complete (Ctrl-C to cancel)...\n`)

  const countdown = io.stderr.isTTY ? new Countdown(io.stderr, io.clock, timeoutMs) : null
  // The login's own timers are unref'd (they never hold a server open) and a device login has
  // no socket open between polls: this is what keeps the command alive while it waits.
  const keepAlive = setInterval(() => {}, 2 ** 30)
  let end: LoginEnded
  try {
    end = await ended(loginId)
  } finally {
    clearInterval(keepAlive)
    io.interrupts.off('SIGINT', onInterrupt)
    countdown?.stop()
  }
  if (end.success) {
    io.stdout.write('Successfully logged in\n')
    return 0
  }
  if (interrupted) {
    io.stderr.write('Login cancelled\n')
    return INTERRUPTED_EXIT
  }
  io.stderr.write(`error: login failed: ${end.error ?? 'unknown error'}\n`)
  return 1
}

/** `Time left: 14:59`, rewritten in place once a second; `stop` clears the line. */
class Countdown {
  private readonly endsAt: number
  private timer: unknown = null

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly clock: Clock,
    timeoutMs: number,
  ) {
    this.endsAt = clock.monotonicMs() + timeoutMs
    this.draw()
  }

  stop(): void {
    this.clock.clearTimeout(this.timer)
    this.out.write('\r\x1b[K')
  }

  private draw(): void {
    const left = Math.max(0, this.endsAt - this.clock.monotonicMs())
    this.out.write(`\r\x1b[KTime left: ${clockFace(left)}`)
    // Next redraw on the second boundary of the time left, so the display never skips one.
    this.timer = this.clock.setTimeout(() => this.draw(), left % TICK_MS || TICK_MS)
  }
}

/** `m:ss`, rounded up: "0:01" until the last second is over. */
export function clockFace(ms: number): string {
  const s = Math.ceil(ms / 1000)
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`
}

function minutes(ms: number): string {
  const m = Math.round(ms / 60_000)
  return m === 1 ? '1 minute' : `${m} minutes`
}
