import type { Credential } from '../account/types.js'
import { systemClock, type Clock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import { API_KEY_REFUSAL } from '../remote-control/controller.js'
import type { RemoteControlApi } from '../remote-control/methods.js'
import type { RemoteControlStatusView } from '../remote-control/types.js'

const POLL_MS = 100

/** The account kind remote control depends on: only a ChatGPT login can enroll. */
export type AccountKind = 'none' | 'apiKey' | 'chatgpt'

export function accountKindOf(accounts: { readonly current: Credential | null }): AccountKind {
  const c = accounts.current
  return c === null ? 'none' : c.kind === 'apiKey' ? 'apiKey' : 'chatgpt'
}

/** What `--json` prints: one object per line, keys in this order. */
interface Announcement {
  mode: 'foreground'
  status: 'connected' | 'connecting' | 'waitingForLogin' | 'errored'
  serverName: string
  environmentId: string | null
  timedOut: boolean
  error?: string
}

/**
 * `app-server remote-control` with an API key: remote control can never connect, so the
 * command refuses before serving (exit 1) instead of announcing a connection that will not
 * come. The refusal is on stderr; `--json` also prints it as the announcement object.
 */
export function refuseApiKey(rc: RemoteControlApi, options: { json: boolean; stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): number {
  options.stderr.write(`error: ${API_KEY_REFUSAL}\n`)
  if (options.json) options.stdout.write(line({ status: 'errored', serverName: rc.status().serverName, environmentId: null, timedOut: false, error: API_KEY_REFUSAL }))
  return 1
}

/**
 * `app-server remote-control [--json]`: the server runs in the foreground with remote control
 * enabled. Not logged in: one line says it is waiting for a ChatGPT login (a login from a client
 * or a CLI `login` in the same home ends the wait). Then, once connected (or after `waitMs`,
 * `--remote-control-wait-seconds`) one line says so. A login that turns out to be an API key
 * is said as the refusal, and nothing more is announced. The waits run on `clock` (the process's
 * unless a test drives them).
 */
export async function announceRemoteControl(
  rc: RemoteControlApi,
  options: { json: boolean; stdout: NodeJS.WritableStream; log: AppLogger; waitMs: number; accountKind: () => AccountKind; clock?: Clock },
): Promise<void> {
  const clock = options.clock ?? systemClock
  let view: RemoteControlStatusView
  try {
    view = await rc.enable()
  } catch (err) {
    options.log.error({ problem: err instanceof Error ? err.message : 'error' }, 'remote control could not be enabled')
    if (options.json) options.stdout.write(line({ status: 'connecting', serverName: '', environmentId: null, timedOut: true }))
    return
  }
  if (options.accountKind() === 'none') {
    if (options.json) options.stdout.write(line({ status: 'waitingForLogin', serverName: view.serverName, environmentId: null, timedOut: false }))
    else options.stdout.write(`Remote control is waiting for ChatGPT login; sign in (\`app-server login\` in the same home, or from a client) to make this machine available as ${view.serverName}.\n`)
    while (options.accountKind() === 'none') await pause(clock)
  }
  if (options.accountKind() === 'apiKey') {
    if (options.json) options.stdout.write(line({ status: 'errored', serverName: view.serverName, environmentId: null, timedOut: false, error: API_KEY_REFUSAL }))
    else options.stdout.write(`Remote control is not available: ${API_KEY_REFUSAL}.\n`)
    return
  }
  const deadline = clock.monotonicMs() + options.waitMs
  view = rc.status()
  while (view.status !== 'connected' && clock.monotonicMs() < deadline) {
    await pause(clock)
    view = rc.status()
  }
  const connected = view.status === 'connected'
  if (options.json) {
    options.stdout.write(line({ status: connected ? 'connected' : 'connecting', serverName: view.serverName, environmentId: view.environmentId, timedOut: !connected }))
  } else if (connected) {
    options.stdout.write(`This machine is available for remote control as ${view.serverName}.\n`)
  } else {
    options.stdout.write(`Remote control is still connecting as ${view.serverName}; this machine will be available once it connects.\n`)
  }
}

function line(a: Omit<Announcement, 'mode'>): string {
  const out: Announcement = { mode: 'foreground', ...a }
  return JSON.stringify(out) + '\n'
}

function pause(clock: Clock): Promise<void> {
  return new Promise<void>((resolve) => clock.setTimeout(resolve, POLL_MS))
}
