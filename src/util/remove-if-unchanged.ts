/**
 * Removing a file judged bad (a stale lock, a corrupt id) while other processes may replace it
 * at any moment. Unlinking by path could remove the fresh file a racer just made, so the file
 * is renamed aside first and, if what moved is not the content judged, linked back (link never
 * overwrites, so a newer file at the path wins).
 */
import { randomBytes } from 'node:crypto'
import { link, readFile, rename, unlink } from 'node:fs/promises'
import { errorCode } from './error-code.js'

/**
 * True when the file holding `judged` was the one removed; false when the path was gone or
 * held something else. Errors other than a missing file are thrown (the caller words them).
 */
export async function removeIfUnchanged(path: string, judged: string, asideTag: string): Promise<boolean> {
  const aside = `${path}.${asideTag}-${randomBytes(6).toString('hex')}`
  try {
    await rename(path, aside)
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false // another process moved it first
    throw err
  }
  try {
    const moved = await readFile(aside, 'utf8')
    if (moved === judged) return true
    await link(aside, path).catch(() => undefined)
    return false
  } finally {
    await unlink(aside).catch(() => undefined)
  }
}
