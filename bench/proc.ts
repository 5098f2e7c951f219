/**
 * What the benchmark reads of the processes it started, from `/proc` (Linux): their CPU time
 * (user + system, all threads) and their children. Elsewhere every reading is null or empty and
 * what depends on it is left out.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

let ticksPerSecond: number | undefined

/** The kernel's clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

/**
 * The fields of `/proc/PID/stat` after the command name, from field 3 (state) on; null when the
 * process is gone or there is no `/proc`. The name (field 2) may hold spaces and parentheses,
 * so fields are counted after its last `)`.
 */
function statFields(pid: number | string): string[] | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** CPU seconds `pid` has used so far, or null (gone, or no `/proc`). */
export function cpuSecondsOf(pid: number): number | null {
  const fields = statFields(pid)
  if (fields === null) return null
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / clockTicks() : null
}

/** CPU seconds of all of `pids`, or null when any cannot be read. */
export function cpuSeconds(pids: readonly number[]): number | null {
  let total = 0
  for (const pid of pids) {
    const s = cpuSecondsOf(pid)
    if (s === null) return null
    total += s
  }
  return total
}

/** Processes whose parent is `pid` (empty without `/proc`). */
export function childrenOf(pid: number): number[] {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return []
  }
  const children: number[] = []
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    // Field 4, the parent; a process that exited while we looked reads as null.
    if (Number(statFields(entry)?.[1]) === pid) children.push(Number(entry))
  }
  return children
}
