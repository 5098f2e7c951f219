/**
 * The `file` store: `$home/auth.json`, plus the cross-process lock that guards it.
 *
 * Whole-file writes are atomic (temp file in the same directory, fsync, rename), so a reader
 * never sees half a document however many processes write. The lock (`auth.json.lock`) is for
 * what atomic rename cannot give: a read-modify-write (re-read before a token refresh) that no
 * other process interleaves with.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseAuthText } from '../auth-document.js'
import { StoreError, type AuthDotJson, type CredentialStore } from '../types.js'
import { errorCode } from '../../util/error-code.js'
import { removeIfUnchanged } from '../../util/remove-if-unchanged.js'

export const AUTH_FILE = 'auth.json'
export const LOCK_FILE = 'auth.json.lock'

export interface FileLockOptions {
  /** How long to wait for another holder before giving up (ms). */
  readonly timeoutMs?: number
  /** A lock untouched for this long belongs to a crashed process and is broken (ms). */
  readonly staleMs?: number
}

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_STALE_MS = 30_000

/** Lock paths the current async call chain holds: a nested `withFileLock` must not wait for itself. */
const held = new AsyncLocalStorage<ReadonlySet<string>>()

/**
 * Runs `fn` while holding `$home/auth.json.lock`, created with O_EXCL so exactly one process
 * (or one async chain in this process) holds it. Re-entrant within one async call chain, so
 * `withFileLock(home, async () => { await store.load(); await store.save(x) })` works.
 */
export async function withFileLock<T>(home: string, fn: () => Promise<T>, options: FileLockOptions = {}): Promise<T> {
  const dir = resolve(home)
  const lockPath = join(dir, LOCK_FILE)
  const current = held.getStore()
  if (current?.has(lockPath)) return fn()

  await ensureDir(dir)
  const token = await acquire(lockPath, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, options.staleMs ?? DEFAULT_STALE_MS)
  // Keep the lock's mtime fresh while held, so a slow holder (a refresh waiting on the
  // network) is not mistaken for a crashed one after `staleMs`.
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS
  const heartbeat = setInterval(() => {
    const now = new Date()
    utimes(lockPath, now, now).catch(() => undefined)
  }, Math.max(50, Math.floor(staleMs / 3)))
  heartbeat.unref()
  try {
    return await held.run(new Set([...(current ?? []), lockPath]), fn)
  } finally {
    clearInterval(heartbeat)
    await release(lockPath, token)
  }
}

async function acquire(lockPath: string, timeoutMs: number, staleMs: number): Promise<string> {
  const token = randomBytes(12).toString('hex')
  const body = JSON.stringify({ pid: process.pid, createdAt: Date.now(), token })
  const deadline = Date.now() + timeoutMs
  let delay = 5
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600)
      try {
        await handle.writeFile(body)
      } finally {
        await handle.close()
      }
      return token
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw new StoreError(`cannot create lock ${lockPath}: ${errorCode(err) ?? 'unknown error'}`)
    }
    await breakIfStale(lockPath, staleMs)
    if (Date.now() >= deadline) throw new StoreError(`timed out after ${timeoutMs} ms waiting for lock ${lockPath}`)
    // Jittered exponential backoff: two waiters do not retry in lockstep.
    await sleep(delay + Math.floor(Math.random() * delay))
    delay = Math.min(delay * 2, 100)
  }
}

/**
 * Breaks a lock left by a crashed holder, unless another waiter took a fresh one in between
 * (`removeIfUnchanged`).
 */
async function breakIfStale(lockPath: string, staleMs: number): Promise<void> {
  let judged: string
  try {
    const info = await stat(lockPath)
    if (Date.now() - info.mtimeMs <= staleMs) return
    judged = await readFile(lockPath, 'utf8')
  } catch {
    return // gone already: the next attempt will take it
  }
  // A failure means another waiter broke it first, or cannot be fixed here: the next attempt retries.
  await removeIfUnchanged(lockPath, judged, 'stale').catch(() => false)
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
    throw new StoreError(`cannot create directory ${dir}: ${errorCode(err) ?? 'unknown error'}`)
  }
}

export class FileStore implements CredentialStore {
  readonly mode = 'file' as const
  readonly home: string
  readonly path: string

  constructor(home: string) {
    this.home = resolve(home)
    this.path = join(this.home, AUTH_FILE)
  }

  /** No lock: every write is a rename, so a read sees one whole document or none. */
  async load(): Promise<AuthDotJson | null> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return null
      throw new StoreError(`cannot read ${this.path}: ${errorCode(err) ?? 'unknown error'}`)
    }
    return parseAuthText(text, this.path)
  }

  async save(auth: AuthDotJson): Promise<void> {
    const text = JSON.stringify(auth, null, 2) + '\n'
    await withFileLock(this.home, () => this.writeAtomically(text))
  }

  async clear(): Promise<void> {
    await withFileLock(this.home, async () => {
      try {
        await unlink(this.path)
      } catch (err) {
        if (errorCode(err) !== 'ENOENT') throw new StoreError(`cannot remove ${this.path}: ${errorCode(err) ?? 'unknown error'}`)
      }
    })
  }

  private async writeAtomically(text: string): Promise<void> {
    // Same directory as the target: rename is only atomic within one filesystem.
    const tmp = join(this.home, `${AUTH_FILE}.${randomBytes(8).toString('hex')}.tmp`)
    let step = 'create'
    try {
      const handle = await open(tmp, 'wx', 0o600)
      try {
        // The umask can only remove bits from 0600, but be explicit about the result.
        step = 'chmod'
        await handle.chmod(0o600)
        step = 'write'
        await handle.writeFile(text, 'utf8')
        // Data on disk before the rename makes it visible: a crash leaves the old or the new file.
        step = 'fsync'
        await handle.sync()
      } finally {
        await handle.close()
      }
      step = 'rename'
      await rename(tmp, this.path)
    } catch (err) {
      await unlink(tmp).catch(() => undefined)
      throw new StoreError(`cannot write ${this.path} (${step}): ${errorCode(err) ?? 'unknown error'}`)
    }
    await syncDir(this.home)
  }
}

/** Makes the rename itself durable. Not every platform can fsync a directory; that is fine. */
async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  } catch {
    // Best effort (e.g. Windows cannot open a directory).
  }
}
