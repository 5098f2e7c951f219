/**
 * The process's soft limit on open files, read from `/proc/self/limits` (Node raises the soft
 * limit to the hard one at start-up, so this is what the process really has). Null where there
 * is no such file (not Linux) or it cannot be read.
 */
import { readFileSync } from 'node:fs'

export function openFileLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | null {
  let text: string
  try {
    text = read()
  } catch {
    return null
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'))
  const soft = line === undefined ? undefined : /^Max open files\s+(\d+|unlimited)\s/.exec(line)?.[1]
  if (soft === undefined) return null
  return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft)
}
