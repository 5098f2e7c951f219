import { systemClock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import type { RemoteControlApi } from '../remote-control/methods.js'
import type { RemoteControlStatusView } from '../remote-control/types.js'

const POLL_MS = 100

/**
 * `app-server remote-control [--json]`: the server runs in the foreground with remote control
 * enabled; once connected (or after `waitMs`, `--remote-control-wait-seconds`) one line says so.
 */
export async function announceRemoteControl(
  rc: RemoteControlApi,
  options: { json: boolean; stdout: NodeJS.WritableStream; log: AppLogger; waitMs: number },
): Promise<void> {
  let view: RemoteControlStatusView
  try {
    view = await rc.enable()
  } catch (err) {
    options.log.error({ problem: err instanceof Error ? err.message : 'error' }, 'remote control could not be enabled')
    if (options.json) options.stdout.write(JSON.stringify({ mode: 'foreground', status: 'connecting', serverName: '', environmentId: null, timedOut: true }) + '\n')
    return
  }
  const deadline = systemClock.monotonicMs() + options.waitMs
  while (view.status !== 'connected' && systemClock.monotonicMs() < deadline) {
    await new Promise<void>((resolve) => systemClock.setTimeout(resolve, POLL_MS))
    view = rc.status()
  }
  const connected = view.status === 'connected'
  if (options.json) {
    options.stdout.write(
      JSON.stringify({ mode: 'foreground', status: connected ? 'connected' : 'connecting', serverName: view.serverName, environmentId: view.environmentId, timedOut: !connected }) +
        '\n',
    )
  } else if (connected) {
    options.stdout.write(`This machine is available for remote control as ${view.serverName}.\n`)
  } else {
    options.stdout.write(`Remote control is still connecting as ${view.serverName}; this machine will be available once it connects.\n`)
  }
}
