/**
 * Why a file operation failed, in words a user can act on (`read-only file system`,
 * `disk full`), from the error's errno code. The one place these words live, so the CLI, the
 * JSON-RPC errors and the logs say the same thing.
 *
 * The words never name a path: they go to clients, who must not learn where the server keeps
 * its files. Callers that log put the path and the raw code beside them.
 */
import { printableErrorCode } from './error-code.js'

const REASONS: Readonly<Record<string, string>> = {
  EROFS: 'read-only file system',
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'a directory is in the way',
  ENOTDIR: 'a file is in the way of a directory',
  ENOENT: 'no such file or directory',
  EEXIST: 'file already exists',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files',
  EIO: 'input/output error',
  EBUSY: 'resource busy',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many symbolic links',
  EXDEV: 'cross-device rename',
}

/** The reason for a failed file operation; an unknown code is shown as itself, anything else as `unknown error`. */
export function fsReason(err: unknown): string {
  const code = printableErrorCode(err)
  if (code === undefined) return 'unknown error'
  return REASONS[code] ?? `error ${code}`
}
