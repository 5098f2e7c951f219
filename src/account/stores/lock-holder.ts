/**
 * Who holds a lock file, recorded well enough that a waiter can tell when the holder is gone.
 *
 * A pid alone is not enough: pids are recycled, so the pid of a holder that died long ago may
 * now be a live stranger. The holder also records when the kernel started that pid
 * (`/proc/<pid>/stat` field 22, clock ticks since boot) and the boot id
 * (`/proc/sys/kernel/random/boot_id`). A waiter on the same boot judges, in this order:
 *
 * 1. no such pid, or a zombie → `dead`;
 * 2. that pid started at another time (recycled) → `dead`;
 * 3. the same pid and start time → `alive`.
 *
 * Anything it cannot judge is `unknown` and the caller falls back to the lock's age: a body it
 * cannot read, a holder from another boot id (another host sharing the directory, or a lock
 * left from before a reboot), or no `/proc` (not Linux).
 */
import { readFile } from 'node:fs/promises'

export interface LockHolder {
  readonly pid: number
  /** `/proc/<pid>/stat` field 22; null where there is no `/proc`. */
  readonly startTime: string | null
  readonly bootId: string | null
}

export type HolderState = 'alive' | 'dead' | 'unknown'

let self: Promise<LockHolder> | null = null

/** This process, as a lock body records it (read once). */
export function currentHolder(): Promise<LockHolder> {
  self ??= (async () => ({ pid: process.pid, startTime: (await readStat(process.pid))?.startTime ?? null, bootId: await readBootId() }))()
  return self
}

/** Whether the holder a lock body names is still running (see the header for the order). */
export async function holderState(body: unknown): Promise<HolderState> {
  const holder = asHolder(body)
  if (holder === null || holder.startTime === null || holder.bootId === null) return 'unknown'
  const bootId = await readBootId()
  if (bootId === null || bootId !== holder.bootId) return 'unknown'
  const stat = await readStat(holder.pid)
  if (stat === null || stat.state === 'Z' || stat.state === 'X') return 'dead'
  return stat.startTime === holder.startTime ? 'alive' : 'dead'
}

function asHolder(body: unknown): LockHolder | null {
  if (typeof body !== 'object' || body === null) return null
  const { pid, startTime, bootId } = body as Record<string, unknown>
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null
  return { pid, startTime: typeof startTime === 'string' ? startTime : null, bootId: typeof bootId === 'string' ? bootId : null }
}

async function readBootId(): Promise<string | null> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim() || null
  } catch {
    return null
  }
}

/** The state (field 3) and start time (field 22) of a pid; null when it does not exist. */
async function readStat(pid: number): Promise<{ state: string; startTime: string } | null> {
  let text: string
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // Field 2 is the command name in parentheses and may itself hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const state = fields[0]
  const startTime = fields[19]
  return state === undefined || startTime === undefined ? null : { state, startTime }
}
