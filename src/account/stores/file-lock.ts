/**
 * The cross-process lock that guards `$home/auth.json`: `auth.json.lock`, created with O_EXCL
 * so exactly one process (or one async chain in this process) holds it.
 *
 * The lock body names its holder (pid, the pid's start time, the boot id: see
 * `lock-holder.ts`). A waiter that finds the lock taken judges it in this order:
 *
 * 1. the holder is dead (gone, or its pid recycled) → the lock is broken at once;
 * 2. otherwise, a lock untouched for `staleMs` is broken: the last resort, for holders that
 *    cannot be judged (unreadable body, another host) and for a lock its live holder leaked
 *    (a holder keeps its lock's mtime fresh while it holds it);
 * 3. otherwise the holder is alive, or may be: wait.
 *
 * A lock is broken only if it still holds the body judged (`removeIfUnchanged`), so a fresh
 * lock another waiter took in between survives. Waiting ends after `timeoutMs` with
 * `store locked by another process`. A lock whose body could not be written (disk full) is
 * removed before the error is thrown: left behind, it would block every later writer.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, stat, unlink, utimes } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { systemClock, type Clock } from '../../clock.js'
import { StoreError } from '../types.js'
import { errorCode } from '../../util/error-code.js'
import { fsReason } from '../../util/fs-reason.js'
import { tryParseJson } from '../../util/json.js'
import { removeIfUnchanged } from '../../util/remove-if-unchanged.js'
import { currentHolder, holderState } from './lock-holder.js'

export const LOCK_FILE = 'auth.json.lock'

/** What a waiter's error says when the holder stays alive past the timeout. */
export const LOCKED_REASON = 'store locked by another process'

export interface FileLockOptions {
  /** How long to wait for another holder before giving up (ms). */
  readonly timeoutMs?: number
  /** A lock whose holder cannot be judged and untouched for this long is broken (ms). */
  readonly staleMs?: number
  /** Reads the time (the wait's deadline, a lock's age) and schedules the retries and the heartbeat; default the system clock. */
  readonly clock?: Clock
}

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_STALE_MS = 30_000

/** Lock paths the current async call chain holds: a nested `withFileLock` must not wait for itself. */
const held = new AsyncLocalStorage<ReadonlySet<string>>()

/**
 * Runs `fn` while holding `$home/auth.json.lock`. Re-entrant within one async call chain, so
 * `withFileLock(home, async () => { await store.load(); await store.save(x) })` works.
 */
export async function withFileLock<T>(home: string, fn: () => Promise<T>, options: FileLockOptions = {}): Promise<T> {
  const dir = resolve(home)
  const lockPath = join(dir, LOCK_FILE)
  const current = held.getStore()
  if (current?.has(lockPath)) return fn()

  await ensureDir(dir)
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS
  const clock = options.clock ?? systemClock
  const token = await acquire(lockPath, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, staleMs, clock)
  // Keep the lock's mtime fresh while held, so a slow holder (a refresh waiting on the
  // network) is not mistaken for a crashed one by a waiter that can only judge its age.
  const beatMs = Math.max(50, Math.floor(staleMs / 3))
  let heartbeat = clock.setTimeout(function beat() {
    const now = new Date(clock.wallMs())
    utimes(lockPath, now, now).catch(() => undefined)
    heartbeat = clock.setTimeout(beat, beatMs)
  }, beatMs)
  try {
    return await held.run(new Set([...(current ?? []), lockPath]), fn)
  } finally {
    clock.clearTimeout(heartbeat)
    await release(lockPath, token)
  }
}

async function acquire(lockPath: string, timeoutMs: number, staleMs: number, clock: Clock): Promise<string> {
  const token = randomBytes(12).toString('hex')
  const body = JSON.stringify({ ...(await currentHolder()), createdAt: clock.wallMs(), token })
  const deadline = clock.monotonicMs() + timeoutMs
  let delay = 5
  // The clock's timers do not keep the process alive, and waiting may be all a process (a CLI
  // login behind a server's refresh) is doing: this handle does, while it waits.
  let keepAlive: NodeJS.Timeout | undefined
  try {
    for (;;) {
      if (await tryCreate(lockPath, body)) return token
      // Broken: try again at once, before any deadline, so a dead holder never costs a wait.
      if (await breakIfAbandoned(lockPath, staleMs, clock)) continue
      if (clock.monotonicMs() >= deadline) throw new StoreError(LOCKED_REASON, `timed out after ${timeoutMs} ms waiting for lock ${lockPath}`)
      keepAlive ??= setInterval(() => {}, 2 ** 30)
      // Jittered exponential backoff: two waiters do not retry in lockstep.
      const ms = delay + Math.floor(Math.random() * delay)
      await new Promise<void>((wake) => clock.setTimeout(wake, ms))
      delay = Math.min(delay * 2, 100)
    }
  } finally {
    clearInterval(keepAlive)
  }
}

/** Creates the lock with `body`; false when someone holds it. */
async function tryCreate(lockPath: string, body: string): Promise<boolean> {
  let handle
  try {
    handle = await open(lockPath, 'wx', 0o600)
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return false
    throw new StoreError(fsReason(err), `cannot create lock ${lockPath}: ${errorCode(err) ?? 'unknown error'}`)
  }
  try {
    await handle.writeFile(body)
    await handle.close()
  } catch (err) {
    await handle.close().catch(() => undefined)
    // Ours and unusable: nobody could tell it from a live holder's until it is stale.
    await unlink(lockPath).catch(() => undefined)
    throw new StoreError(fsReason(err), `cannot write lock ${lockPath}: ${errorCode(err) ?? 'unknown error'}`)
  }
  return true
}

/**
 * Breaks the lock when its holder is dead, or when it cannot be judged and is older than
 * `staleMs`. True when the lock is gone (broken here or released meanwhile): worth a retry now.
 */
async function breakIfAbandoned(lockPath: string, staleMs: number, clock: Clock): Promise<boolean> {
  let judged: string
  let mtimeMs: number
  try {
    mtimeMs = (await stat(lockPath)).mtimeMs
    judged = await readFile(lockPath, 'utf8')
  } catch (err) {
    return errorCode(err) === 'ENOENT'
  }
  const dead = (await holderState(tryParseJson(judged))) === 'dead'
  if (!dead && clock.wallMs() - mtimeMs <= staleMs) return false
  // A failure means another waiter broke it first, or cannot be fixed here: the next attempt retries.
  return removeIfUnchanged(lockPath, judged, 'stale').catch(() => false)
}

async function release(lockPath: string, token: string): Promise<void> {
  try {
    const content = await readFile(lockPath, 'utf8')
    // Only our own lock: had ours been broken as stale, the file is someone else's now.
    if ((JSON.parse(content) as { token?: unknown }).token === token) await unlink(lockPath)
  } catch {
    // Already gone or unreadable: nothing of ours to remove.
  }
}

async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new StoreError(fsReason(err), `cannot create directory ${dir}: ${errorCode(err) ?? 'unknown error'}`)
  }
}
