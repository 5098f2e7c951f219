/**
 * The engine's pid file, `<gateway home>/engine/engine.pid`: what lets the next gateway find an
 * engine that a killed gateway (SIGKILL, a crash) could not stop. The file only says where to
 * look; whether that process really is our engine is for `orphan.ts` to decide.
 *
 * - Written after each spawn: the pid in decimal and a newline, into a fresh temp file (0600,
 *   never an existing one) in the same directory, renamed over the old file, so a reader sees
 *   the old content or the new, never half of it.
 * - Removed when the engine exits.
 * - Read, in this order: opened without following a link and without blocking (a FIFO planted
 *   there cannot hang the gateway); a regular file; owned by this user; at most
 *   `MAX_PID_FILE_BYTES`; a plain decimal pid from 2 to the largest Linux pid, not this
 *   process's. Anything else is `ignored` with a short reason: the caller removes the file and
 *   never acts on it.
 */
import { closeSync, constants, fstatSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import type { AppLogger } from '../log/logger.js'
import { errorCode, printableErrorCode } from '../util/error-code.js'

export const PID_FILE_NAME = 'engine.pid'
/** A pid file is a pid and a newline; anything longer is not one of ours. */
export const MAX_PID_FILE_BYTES = 32
/** Linux's upper bound for pid_max (PID_MAX_LIMIT). */
const MAX_PID = 4_194_304

export type PidFileContent =
  | { readonly kind: 'absent' }
  | { readonly kind: 'pid'; readonly pid: number }
  /** Not a pid file we could have written; `why` is fixed wording, never the content. */
  | { readonly kind: 'ignored'; readonly why: string }

export function readPidFile(path: string): PidFileContent {
  let fd: number
  try {
    // O_NOFOLLOW: a link is refused (ELOOP); O_NONBLOCK: a FIFO opens at once instead of waiting for a writer.
    fd = openSync(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0))
  } catch (err) {
    const code = errorCode(err)
    if (code === 'ENOENT') return { kind: 'absent' }
    if (code === 'ELOOP') return { kind: 'ignored', why: 'a symbolic link' }
    return { kind: 'ignored', why: `unreadable (${printableErrorCode(err) ?? 'error'})` }
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) return { kind: 'ignored', why: 'not a regular file' }
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) return { kind: 'ignored', why: 'not owned by this user' }
    if (st.size > MAX_PID_FILE_BYTES) return { kind: 'ignored', why: 'too large' }
    const buf = Buffer.alloc(MAX_PID_FILE_BYTES + 1)
    const n = readSync(fd, buf, 0, buf.length, 0)
    if (n > MAX_PID_FILE_BYTES) return { kind: 'ignored', why: 'too large' }
    return parsePid(buf.subarray(0, n).toString('latin1'))
  } catch (err) {
    return { kind: 'ignored', why: `unreadable (${printableErrorCode(err) ?? 'error'})` }
  } finally {
    closeSync(fd)
  }
}

function parsePid(text: string): PidFileContent {
  const m = /^([1-9][0-9]{0,6})\n?$/.exec(text)
  if (m === null) return { kind: 'ignored', why: 'not a pid' }
  const pid = Number(m[1])
  if (pid === 1 || pid > MAX_PID) return { kind: 'ignored', why: 'not a pid' }
  if (pid === process.pid) return { kind: 'ignored', why: "this gateway's own pid" }
  return { kind: 'pid', pid }
}

/** Atomically replaces the pid file with `pid`. Throws (with a code) when it cannot. */
export function writePidFile(path: string, pid: number): void {
  const tmp = join(dirname(path), `${basename(path)}.${randomBytes(8).toString('hex')}.tmp`)
  try {
    // `wx`: never write through something already at the temp name.
    writeFileSync(tmp, `${pid}\n`, { flag: 'wx', mode: 0o600 })
    renameSync(tmp, path)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}

/**
 * Removes whatever is at `path` (a planted directory included: it sits in our private
 * directory and would block the next write); a failure is logged, nothing more can be done.
 */
export function removePidFile(path: string, log: AppLogger): void {
  try {
    rmSync(path, { force: true, recursive: true })
  } catch (err) {
    const code = printableErrorCode(err) ?? 'error'
    log.warn({ event: 'engine.pid_file_remove_failed', code }, `could not remove the engine pid file (${code})`)
  }
}
