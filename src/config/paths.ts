/**
 * The directories a server needs, checked before it listens, so a mistake is one line and
 * exit 2 at start instead of a stack trace (or a failure) later: the home must be a directory
 * this user can write (created 0700 when missing), and the `--url-file` must have a directory
 * to go in.
 */
import { accessSync, constants, mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError, shown } from './errors.js'
import { errorCode } from '../util/error-code.js'

export function ensureHomeDirectory(home: string): void {
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 })
    if (!statSync(home).isDirectory()) throw new ConfigError(`--home ${shown(home)} is not a directory`)
    accessSync(home, constants.W_OK | constants.X_OK)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = errorCode(err)
    throw new ConfigError(`--home ${shown(home)} is not a usable directory: ${code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : (code ?? 'error')}`)
  }
}

export function checkUrlFileDirectory(urlFile: string | null): void {
  if (urlFile === null) return
  const dir = dirname(urlFile)
  let isDir = false
  try {
    isDir = statSync(dir).isDirectory()
  } catch {
    isDir = false
  }
  if (!isDir) throw new ConfigError(`--url-file directory ${shown(dir)} does not exist`)
}
