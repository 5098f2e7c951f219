/**
 * CPU time of processes the benchmark started, read from `/proc` (Linux): user + system, all
 * threads. Elsewhere every reading is null and the CPU columns are left out.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

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

/** CPU seconds `pid` has used so far, or null (gone, or no `/proc`). */
export function cpuSecondsOf(pid: number): number | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
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

/** `pid`'s children, from `/proc/PID/task/*\/children` (empty without `/proc`). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}
