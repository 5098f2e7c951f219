/**
 * An engine left running by a gateway that was killed before it could stop it (SIGKILL, a
 * crash), found and stopped before this gateway starts its own on the same socket.
 *
 * In this order:
 * 1. the pid file (`pid-file.ts`): absent → nothing to do; anything but a plain pid →
 *    removed and logged, never acted on;
 * 2. without `/proc` (not Linux) a pid cannot be checked, so nothing is signalled: the file is
 *    removed and that is logged;
 * 3. `/proc/<pid>/cmdline` must show our engine: `app-server` and `--listen unix://<socket>`
 *    with this gateway's socket. The socket lives in the gateway home, so neither an
 *    unrelated process that got the pid recycled nor the engine of another gateway home
 *    matches: the file is stale, removed, and the process left alone;
 * 4. a match is sent SIGTERM, then SIGKILL after `graceMs` (the supervisor's stop grace) if it
 *    still is our engine. It is gone once its command line stops matching (exited, a zombie
 *    has none, or the pid was reused), checked every `POLL_MS` on the injected clock. One more
 *    grace after SIGKILL and it is given up on (logged): the new engine starts regardless.
 *
 * Log lines carry the pid and fixed wording, never a path or the process's arguments.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Clock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import { printableErrorCode } from '../util/error-code.js'
import { readPidFile, removePidFile } from './pid-file.js'

export interface OrphanCheckOptions {
  readonly pidFile: string
  /** This gateway's engine socket: what the orphan's `--listen` names. */
  readonly socketPath: string
  readonly log: AppLogger
  readonly timers: Clock
  readonly graceMs: number
  /** Where process information lives (`/proc`); another directory only in tests. */
  readonly procDir?: string
}

export const POLL_MS = 50

/**
 * Stops an orphaned engine named by the pid file. Null when there was nothing to wait for
 * (the common case: the caller carries on at once); otherwise resolves once the orphan has
 * gone or been given up on. Never rejects.
 */
export function stopOrphanEngine(options: OrphanCheckOptions): Promise<void> | null {
  const { pidFile, log } = options
  const content = readPidFile(pidFile)
  if (content.kind === 'absent') return null
  if (content.kind === 'ignored') {
    log.warn({ event: 'engine.pid_file_ignored', why: content.why }, `engine pid file ignored and removed: ${content.why}`)
    removePidFile(pidFile, log)
    return null
  }
  const { pid } = content
  const procDir = options.procDir ?? '/proc'
  if (!existsSync(join(procDir, 'self'))) {
    log.warn({ event: 'engine.orphan_unchecked', pid }, 'no /proc here: an engine left by an earlier gateway cannot be checked, so none is stopped')
    removePidFile(pidFile, log)
    return null
  }
  if (!isOurEngine(procDir, pid, options.socketPath)) {
    log.info({ event: 'engine.pid_file_stale', pid }, 'engine pid file was stale (no such engine); removed')
    removePidFile(pidFile, log)
    return null
  }
  log.warn({ event: 'engine.orphan', pid }, 'an engine left by an earlier gateway is still running; stopping it')
  if (!signal(pid, 'SIGTERM', log)) {
    removePidFile(pidFile, log)
    return null
  }
  return awaitGone(options, procDir, pid).then(() => {
    removePidFile(pidFile, log)
  })
}

/** Polls until `pid` no longer is our engine; SIGKILL after the grace, given up one grace later. */
function awaitGone(options: OrphanCheckOptions, procDir: string, pid: number): Promise<void> {
  const { timers, log, graceMs, socketPath } = options
  const started = timers.monotonicMs()
  let killed = false
  return new Promise((resolve) => {
    const check = (): void => {
      if (!isOurEngine(procDir, pid, socketPath)) {
        log.info({ event: 'engine.orphan_stopped', pid, killed }, 'stopped the engine left by an earlier gateway')
        return resolve()
      }
      const waited = timers.monotonicMs() - started
      if (!killed && waited >= graceMs) {
        killed = true
        log.warn({ event: 'engine.orphan_kill', pid, graceMs }, 'the earlier engine did not exit after SIGTERM; sending SIGKILL')
        if (!signal(pid, 'SIGKILL', log)) return resolve()
      } else if (killed && waited >= 2 * graceMs) {
        log.error({ event: 'engine.orphan_not_stopped', pid }, 'the earlier engine did not exit after SIGKILL; starting a new one regardless')
        return resolve()
      }
      timers.setTimeout(check, POLL_MS)
    }
    timers.setTimeout(check, POLL_MS)
  })
}

/** Whether `pid`'s command line is `… app-server … --listen unix://<socketPath> …`. */
export function isOurEngine(procDir: string, pid: number, socketPath: string): boolean {
  let cmdline: string
  try {
    cmdline = readFileSync(join(procDir, String(pid), 'cmdline'), 'utf8')
  } catch {
    return false // gone, or not ours to read
  }
  const argv = cmdline.split('\0')
  const listen = `unix://${socketPath}`
  return argv.includes('app-server') && argv.some((arg, i) => arg === '--listen' && argv[i + 1] === listen)
}

/** Sends `sig`; false (logged) when it could not be sent to a process that is still there. */
function signal(pid: number, sig: NodeJS.Signals, log: AppLogger): boolean {
  try {
    process.kill(pid, sig)
    return true
  } catch (err) {
    const code = printableErrorCode(err) ?? 'error'
    if (code === 'ESRCH') return true // exited meanwhile: the poll sees it gone
    log.error({ event: 'engine.orphan_not_stopped', pid, code }, `could not signal the engine left by an earlier gateway (${code})`)
    return false
  }
}
