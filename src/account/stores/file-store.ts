/**
 * The `file` store: `$home/auth.json`, guarded by the cross-process lock of `file-lock.ts`.
 *
 * Whole-file writes are atomic (temp file in the same directory, fsync, rename), so a reader
 * never sees half a document however many processes write. The lock is for what atomic rename
 * cannot give: a read-modify-write (re-read before a token refresh) that no other process
 * interleaves with, and the housekeeping below.
 *
 * A save or clear, under the lock, in this order:
 * 1. removes temp files older than any save takes (`TEMP_MAX_AGE_MS`): they are what a writer
 *    killed mid-save left, and each holds a whole credential (also done at start);
 * 2. keeps an `auth.json` that is not a credential document aside as
 *    `auth.json.corrupt-<timestamp>` (0600): it may hold the user's key, so it is never
 *    silently replaced or deleted;
 * 3. writes (or removes) `auth.json`. A failed write removes its temp file.
 *
 * Errors are `StoreError`s whose message is the reason alone (`disk full`); paths and errno
 * codes go in their `detail`, for logs.
 */
import { randomBytes } from 'node:crypto'
import { chmod, link, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseAuthText } from '../auth-document.js'
import { CorruptStoreError, StoreError, type AuthDotJson, type CredentialStore, type StoreLog } from '../types.js'
import type { Clock } from '../../clock.js'
import { errorCode } from '../../util/error-code.js'
import { fsReason } from '../../util/fs-reason.js'
import { removeIfUnchanged } from '../../util/remove-if-unchanged.js'
import { withFileLock } from './file-lock.js'

export { LOCK_FILE, withFileLock, type FileLockOptions } from './file-lock.js'

export const AUTH_FILE = 'auth.json'

/** Far longer than a save takes (a small write and an fsync): an older temp file's writer is gone. */
export const TEMP_MAX_AGE_MS = 60_000

const TEMP_NAME = /^auth\.json\..+\.tmp$/

export interface FileStoreOptions {
  /** Judges temp files' age and stamps corrupt files kept aside; default the system clock. */
  readonly clock?: Pick<Clock, 'wallMs'>
  /** Where removed leftovers and files kept aside are reported. */
  readonly log?: StoreLog
}

export class FileStore implements CredentialStore {
  readonly mode = 'file' as const
  readonly home: string
  readonly path: string
  private readonly wallMs: () => number
  private readonly log: StoreLog | undefined

  constructor(home: string, options: FileStoreOptions = {}) {
    this.home = resolve(home)
    this.path = join(this.home, AUTH_FILE)
    const clock = options.clock
    this.wallMs = clock ? () => clock.wallMs() : Date.now
    this.log = options.log
  }

  /** No lock: every write is a rename, so a read sees one whole document or none. */
  async load(): Promise<AuthDotJson | null> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return null
      throw new StoreError(fsReason(err), `cannot read ${this.path}: ${errorCode(err) ?? 'unknown error'}`)
    }
    return parseAuthText(text, AUTH_FILE, this.path)
  }

  async save(auth: AuthDotJson): Promise<void> {
    const text = JSON.stringify(auth, null, 2) + '\n'
    await withFileLock(this.home, async () => {
      await this.removeLeftovers()
      await this.keepCorruptAside()
      await this.writeAtomically(text)
    })
  }

  async clear(): Promise<void> {
    await withFileLock(this.home, async () => {
      await this.keepCorruptAside()
      try {
        await unlink(this.path)
      } catch (err) {
        if (errorCode(err) !== 'ENOENT') throw new StoreError(fsReason(err), `cannot remove ${this.path}: ${errorCode(err) ?? 'unknown error'}`)
      }
    })
  }

  /** Removes temp files of saves that never finished (older than `TEMP_MAX_AGE_MS`). Never throws. */
  async removeLeftovers(): Promise<void> {
    let names: string[]
    try {
      names = await readdir(this.home)
    } catch {
      return // no home yet, or unreadable: the save that follows says why
    }
    const cutoff = this.wallMs() - TEMP_MAX_AGE_MS
    for (const name of names.filter((n) => TEMP_NAME.test(n))) {
      const path = join(this.home, name)
      try {
        if ((await stat(path)).mtimeMs >= cutoff) continue
        await unlink(path)
        this.log?.warn({ store: 'file', path }, 'removed a temp file left by a save that did not finish')
      } catch (err) {
        if (errorCode(err) !== 'ENOENT') this.log?.warn({ store: 'file', path, code: errorCode(err) }, 'could not remove a temp file left by a save that did not finish')
      }
    }
  }

  /** An `auth.json` that is not a credential document moves to `auth.json.corrupt-<timestamp>`. */
  private async keepCorruptAside(): Promise<void> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch {
      return // absent, or unreadable: the write or removal that follows says why
    }
    try {
      parseAuthText(text, AUTH_FILE, this.path)
      return
    } catch (err) {
      if (!(err instanceof CorruptStoreError)) throw err
      const aside = await this.linkAside()
      // Only the file judged corrupt is removed: one written meanwhile by a process that takes no
      // lock (a codex CLI sharing the home) stays, for the write or removal that follows to decide.
      const removed = await removeIfUnchanged(this.path, text, 'judged').catch((e: unknown) => {
        throw new StoreError(fsReason(e), `cannot remove ${this.path} after keeping it as ${aside}: ${errorCode(e) ?? 'unknown error'}`)
      })
      if (removed) this.log?.warn({ store: 'file', kept: aside, reason: err.message }, 'kept the unreadable auth.json aside before replacing it')
      else this.log?.warn({ store: 'file', kept: aside, reason: err.message }, 'kept the unreadable auth.json aside; it had already been replaced')
    }
  }

  /** A hard link never replaces an existing file, so two corrupt files kept in one millisecond both survive. */
  private async linkAside(): Promise<string> {
    const stamp = new Date(this.wallMs()).toISOString().replace(/[:.]/g, '-')
    for (let n = 0; ; n++) {
      const aside = join(this.home, `${AUTH_FILE}.corrupt-${stamp}${n === 0 ? '' : `-${n}`}`)
      try {
        await link(this.path, aside)
        await chmod(aside, 0o600)
        return aside
      } catch (err) {
        if (errorCode(err) !== 'EEXIST' || n >= 100) throw new StoreError(fsReason(err), `cannot keep ${this.path} aside as ${aside}: ${errorCode(err) ?? 'unknown error'}`)
      }
    }
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
      throw new StoreError(fsReason(err), `cannot write ${this.path} (${step}): ${errorCode(err) ?? 'unknown error'}`)
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
