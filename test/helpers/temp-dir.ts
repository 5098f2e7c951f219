/**
 * Fresh temporary directories, always removed: with the test that asked for one when a test is
 * given, otherwise when the test file's process exits. No test shares a fixed path (another
 * file running in parallel could be using it) and none leaves a directory behind.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Anything with tap's `teardown` (a test, or the root `t`). */
export interface Owner {
  teardown(fn: () => void | Promise<void>): void
}

const leftForExit = new Set<string>()
process.once('exit', () => {
  for (const dir of leftForExit) rmSync(dir, { recursive: true, force: true })
})

export function tempDir(label: string, owner?: Owner): string {
  const dir = mkdtempSync(join(tmpdir(), `app-server-${label}-`))
  if (owner) owner.teardown(() => rmSync(dir, { recursive: true, force: true }))
  else leftForExit.add(dir)
  return dir
}
