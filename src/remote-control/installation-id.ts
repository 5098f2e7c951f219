/**
 * `$home/installation_id`: a UUID naming this installation to the backend (enroll and refresh
 * bodies, `x-codex-installation-id`). Created once; every process using the same home must
 * report the same id, or the backend would see one machine as several.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { chmod, link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export const INSTALLATION_ID_FILE = 'installation_id'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * A creator makes the file (O_EXCL) and then writes it, so a racing reader can see it empty
 * for a moment. Empty content is only judged invalid once it has stayed empty this long.
 */
const EMPTY_GRACE_MS = 500
const EMPTY_POLL_MS = 10
/** Bounds the loop should the file keep changing under us (it never does in practice). */
const MAX_ROUNDS = 20

export interface InstallationIdOptions {
  /** Told when an existing file held no UUID and was replaced (by default a process warning). */
  readonly warn?: (message: string) => void
}

export class InstallationIdError extends Error {
  override name = 'InstallationIdError'
}

export function isUuid(value: string): boolean {
  return UUID_RE.test(value)
}

/**
 * Returns the id in `$home/installation_id`, creating it (0600, home 0700) if absent. A file
 * that does not hold a UUID is replaced with a new one, and `warn` says so (without the old
 * content, which could be anything).
 */
export async function loadOrCreateInstallationId(home: string, options: InstallationIdOptions = {}): Promise<string> {
  const dir = resolve(home)
  const path = join(dir, INSTALLATION_ID_FILE)
  const warn = options.warn ?? ((message: string) => process.emitWarning(message, 'InstallationIdWarning'))
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new InstallationIdError(`cannot create directory ${dir}: ${codeOf(err) ?? 'unknown error'}`)
  }

  for (let round = 0; round < MAX_ROUNDS; round++) {
    const content = await readSettled(path)
    if (content !== null) {
      const id = content.trim()
      if (isUuid(id)) {
        await tighten(path)
        return id.toLowerCase()
      }
      // Replace by moving the bad file aside and creating anew below, so the replacement goes
      // through the same O_EXCL create every racer agrees on.
      if (await moveAsideIfStill(path, content)) warn(`${path} did not hold a UUID; replaced it with a new installation id`)
      continue
    }
    const id = randomUUID()
    if (await createExclusive(path, `${id}\n`)) return id
    // EEXIST: another process created it first; the next round reads its id.
  }
  throw new InstallationIdError(`${path} kept changing while being read; cannot settle on an installation id`)
}

/**
 * The file's content, or null when there is none. Empty content is re-read for a grace period:
 * it is usually a racing creator between its O_EXCL create and its write.
 */
async function readSettled(path: string): Promise<string | null> {
  const deadline = Date.now() + EMPTY_GRACE_MS
  for (;;) {
    let content: string
    try {
      content = await readFile(path, 'utf8')
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return null
      throw new InstallationIdError(`cannot read ${path}: ${codeOf(err) ?? 'unknown error'}`)
    }
    if (content.length > 0 || Date.now() >= deadline) return content
    await sleep(EMPTY_POLL_MS)
  }
}

/**
 * Creates `path` holding `content`, only if it does not exist: of processes racing here exactly
 * one succeeds (O_EXCL), and the others read the winner's id. False when it already existed.
 */
async function createExclusive(path: string, content: string): Promise<boolean> {
  let handle
  try {
    handle = await open(path, 'wx', 0o600)
  } catch (err) {
    if (codeOf(err) === 'EEXIST') return false
    throw new InstallationIdError(`cannot create ${path}: ${codeOf(err) ?? 'unknown error'}`)
  }
  try {
    // One small write: readers see the file empty or whole, never a partial id.
    await handle.writeFile(content)
    await handle.sync()
  } catch (err) {
    throw new InstallationIdError(`cannot write ${path}: ${codeOf(err) ?? 'unknown error'}`)
  } finally {
    await handle.close()
  }
  return true
}

/**
 * Removes an invalid file, unless another process replaced it in the meantime. Unlinking by
 * path could remove a valid id that a racer just created, so the file is renamed aside first
 * and, if what moved is not the content judged invalid, linked back (link never overwrites).
 * True when the invalid file was the one removed.
 */
async function moveAsideIfStill(path: string, judged: string): Promise<boolean> {
  const aside = `${path}.invalid-${randomBytes(6).toString('hex')}`
  try {
    await rename(path, aside)
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return false // another process moved it first
    throw new InstallationIdError(`cannot replace ${path}: ${codeOf(err) ?? 'unknown error'}`)
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

/** An id file someone made group/world-accessible goes back to 0600 (best effort: the id still works). */
async function tighten(path: string): Promise<void> {
  try {
    const { mode } = await stat(path)
    if ((mode & 0o077) !== 0) await chmod(path, 0o600)
  } catch {
    // Not ours to fix (another owner, a read-only mount): the id is not a secret.
  }
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}
