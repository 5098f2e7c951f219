/**
 * Notices when another process changes the stored credential — a CLI `login` or `logout` in
 * the same home — and asks the account service to re-read it (`reload`, which compares, takes
 * what changed and tells clients and the engine; this file only decides *when* to look).
 *
 * - `file` (and the file half of `auto`): `fs.watch` on the home directory, reacting to events
 *   that name `auth.json` (a save renames a temp file onto it, a logout unlinks it; the lock and
 *   temp files are ignored). Some filesystems never report (network mounts, some container
 *   volumes), so a cheap `stat` of `auth.json` every `statEveryMs` (1 s) compares inode, size
 *   and mtime as a fallback; it also retries the watch while the home does not exist yet.
 * - `keyring` (and the keyring half of `auto`): the OS keyring sends no change events, so it is
 *   re-read every `keyringEveryMs` (15 s); `account/read {refreshToken:true}` re-reads at once.
 * - `ephemeral`: no other process can see it; nothing to watch.
 *
 * Re-reads never overlap: a trigger while one runs queues exactly one more. Timers come from the
 * injected clock, so tests drive the fallback without sleeping.
 */
import { watch, type FSWatcher } from 'node:fs'
import { stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Clock, TimerHandle } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import { withheldError } from '../log/logger.js'
import { AUTH_FILE } from './stores/file-store.js'
import type { CredentialsStoreMode } from './types.js'

export const STAT_EVERY_MS = 1_000
export const KEYRING_EVERY_MS = 15_000

export interface StoreWatchOptions {
  readonly mode: CredentialsStoreMode
  readonly home: string
  readonly clock: Clock
  /** The account service's re-read; called one at a time. */
  readonly reload: () => Promise<unknown>
  readonly log: AppLogger
  readonly statEveryMs?: number
  readonly keyringEveryMs?: number
}

export class StoreWatch {
  private readonly home: string
  private readonly file: string
  private readonly watchesFile: boolean
  private readonly watchesKeyring: boolean
  private watcher: FSWatcher | null = null
  private statTimer: TimerHandle = null
  private keyringTimer: TimerHandle = null
  /** inode:size:mtime of auth.json at the last look, 'none' when absent, null before the first. */
  private lastSeen: string | null = null
  private running: Promise<void> | null = null
  private again = false
  private closed = false

  constructor(private readonly o: StoreWatchOptions) {
    this.home = resolve(o.home)
    this.file = join(this.home, AUTH_FILE)
    this.watchesFile = o.mode === 'file' || o.mode === 'auto'
    this.watchesKeyring = o.mode === 'keyring' || o.mode === 'auto'
  }

  /** Starts watching; resolves once the first look at `auth.json` is taken, so a change after it is noticed. */
  async start(): Promise<void> {
    if (this.watchesFile) {
      this.openWatcher()
      this.lastSeen = await this.signature()
      this.scheduleStat()
    }
    if (this.watchesKeyring) this.scheduleKeyring()
  }

  /** Stops every watch and timer; resolves once a re-read under way has finished. */
  async close(): Promise<void> {
    this.closed = true
    this.watcher?.close()
    this.watcher = null
    if (this.statTimer !== null) this.o.clock.clearTimeout(this.statTimer)
    if (this.keyringTimer !== null) this.o.clock.clearTimeout(this.keyringTimer)
    await this.running
  }

  private openWatcher(): void {
    if (this.watcher !== null || this.closed) return
    try {
      this.watcher = watch(this.home, { persistent: false }, (_event, name) => {
        // No name: the platform could not say which file; looking costs one read.
        if (name === null || name === AUTH_FILE) this.trigger()
      })
    } catch {
      return // no home yet (created by the first save): the stat fallback retries
    }
    this.watcher.on('error', () => {
      // The home was removed or became unreadable: fall back to the stat until it is back.
      this.watcher?.close()
      this.watcher = null
    })
  }

  private scheduleStat(): void {
    if (this.closed) return
    this.statTimer = this.o.clock.setTimeout(() => void this.statTick(), this.o.statEveryMs ?? STAT_EVERY_MS)
  }

  private async statTick(): Promise<void> {
    this.statTimer = null
    this.openWatcher()
    const seen = await this.signature()
    if (seen !== this.lastSeen) {
      this.lastSeen = seen
      this.trigger()
    }
    this.scheduleStat()
  }

  private scheduleKeyring(): void {
    if (this.closed) return
    this.keyringTimer = this.o.clock.setTimeout(() => {
      this.keyringTimer = null
      this.trigger()
      this.scheduleKeyring()
    }, this.o.keyringEveryMs ?? KEYRING_EVERY_MS)
  }

  private async signature(): Promise<string> {
    try {
      const s = await stat(this.file, { bigint: true })
      return `${s.ino}:${s.size}:${s.mtimeNs}`
    } catch {
      return 'none'
    }
  }

  private trigger(): void {
    if (this.closed) return
    if (this.running !== null) {
      this.again = true
      return
    }
    this.running = this.reloadUntilSettled().finally(() => (this.running = null))
  }

  private async reloadUntilSettled(): Promise<void> {
    do {
      this.again = false
      try {
        await this.o.reload()
      } catch (err) {
        this.o.log.warn({ error: withheldError(err) }, 'could not re-read stored credentials')
      }
    } while (this.again && !this.closed)
  }
}
