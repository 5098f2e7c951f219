/**
 * `$home/installation_id`: a UUID naming this installation to the backend (enroll and refresh
 * bodies, `x-codex-installation-id`). Created once; every process using the same home must
 * report the same id, or the backend would see one machine as several.
 *
 * The file appears with its whole content at once: the id is written to a private temp file
 * that is then `link()`ed to the final name. Link never overwrites, so of racing creators
 * exactly one wins and the others (EEXIST) read the winner's id; no reader ever sees the file
 * empty or half written.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { errorCode } from '../util/error-code.js'
import { removeIfUnchanged } from '../util/remove-if-unchanged.js'
import { isUuid } from '../util/uuid.js'

export const INSTALLATION_ID_FILE = 'installation_id'

/** Bounds the loop should the file keep changing under us (it never does in practice). */
const MAX_ROUNDS = 20

export interface InstallationIdOptions {
  /** Told when an existing file held no UUID and was replaced (by default a process warning). */
  readonly warn?: (message: string) => void
}

export class InstallationIdError extends Error {
  override name = 'InstallationIdError'
  constructor(
    message: string,
    /** The OS's error code, when there was one. */
    readonly code: string | undefined = undefined,
  ) {
    super(message)
  }
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
    throw new InstallationIdError(`cannot create directory ${dir}: ${errorCode(err) ?? 'unknown error'}`, errorCode(err))
  }

  for (let round = 0; round < MAX_ROUNDS; round++) {
    const content = await readIfPresent(path)
    if (content !== null) {
      const id = content.trim()
      if (isUuid(id)) {
        await tighten(path)
        return id.toLowerCase()
      }
      // Removed only if still the content judged, then created anew below, so the
      // replacement goes through the same link every racer agrees on.
      if (await removeInvalid(path, content)) warn(`${path} did not hold a UUID; replaced it with a new installation id`)
      continue
    }
    const id = randomUUID()
    if (await createWhole(path, `${id}\n`)) return id
    // EEXIST: another process created it first; the next round reads its id.
  }
  throw new InstallationIdError(`${path} kept changing while being read; cannot settle on an installation id`)
}

async function readIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null
    throw new InstallationIdError(`cannot read ${path}: ${errorCode(err) ?? 'unknown error'}`, errorCode(err))
  }
}

/** Creates `path` holding `content` if it does not exist yet; false when another process's file is there. */
async function createWhole(path: string, content: string): Promise<boolean> {
  const temp = `${path}.tmp-${randomBytes(6).toString('hex')}`
  try {
    await writeFile(temp, content, { mode: 0o600, flag: 'wx', flush: true })
    await link(temp, path)
    return true
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return false
    throw new InstallationIdError(`cannot create ${path}: ${errorCode(err) ?? 'unknown error'}`, errorCode(err))
  } finally {
    await unlink(temp).catch(() => undefined)
  }
}

async function removeInvalid(path: string, judged: string): Promise<boolean> {
  try {
    return await removeIfUnchanged(path, judged, 'invalid')
  } catch (err) {
    throw new InstallationIdError(`cannot replace ${path}: ${errorCode(err) ?? 'unknown error'}`, errorCode(err))
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
