/**
 * The runtime file (Jupyter's `jpserver-<pid>.json` habit): while a server runs, `HOME/run/
 * server-<pid>.json` says where it listens, so an IDE finds a running server without being
 * told its URL. `app-server list` reads these files.
 *
 * Policy:
 * - The directory is 0700 and each file 0600 (created so, then chmod-ed in case either existed
 *   looser): only the user who runs the server reads it.
 * - It never holds a token. The URL is the bare listener; `credential` says where a client
 *   gets what to present (the `--url-file`, the token file, the JWT secret file), or that the
 *   query token was printed in the banner only.
 * - A file is removed when its server exits; files of servers that died without removing
 *   theirs (the pid no longer runs) are removed when a server starts and skipped by `list`.
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { WsAuthConfig } from '../config/types.js'
import { errorCode } from '../util/error-code.js'

export type AuthMode = 'query-token' | 'none' | 'capability-token' | 'signed-bearer-token'

export interface RuntimeInfo {
  /** The listener's URL, without a token. */
  readonly url: string
  readonly pid: number
  readonly version: string
  readonly auth: AuthMode
  /** Where a client gets its credential, in words and (when there is one) a path. */
  readonly credential: { readonly how: string; readonly path?: string }
}

const FILE = /^server-(\d+)\.json$/

export function runtimeDir(home: string): string {
  return join(home, 'run')
}

/** The auth mode and where its credential is, as the runtime file says them. */
export function authSummary(auth: WsAuthConfig, urlFile: string | null): Pick<RuntimeInfo, 'auth' | 'credential'> {
  switch (auth.mode) {
    case 'queryToken':
      if (!auth.enforce) return { auth: 'none', credential: { how: 'none: token enforcement is disabled' } }
      return urlFile === null
        ? { auth: 'query-token', credential: { how: 'the connection URL with its token was printed in the banner only (start with --url-file to have it in a file)' } }
        : { auth: 'query-token', credential: { how: 'the connection URL with its token is in the --url-file', path: urlFile } }
    case 'capabilityToken':
      return auth.credentialFile === undefined
        ? { auth: 'capability-token', credential: { how: 'send the capability token (given as its SHA-256) as a bearer token' } }
        : { auth: 'capability-token', credential: { how: 'send the token in this file as a bearer token', path: auth.credentialFile } }
    case 'signedBearerToken':
      return {
        auth: 'signed-bearer-token',
        credential: { how: 'send an HS256 JWT signed with the secret in this file as a bearer token', ...(auth.credentialFile === undefined ? {} : { path: auth.credentialFile }) },
      }
  }
}

/** Writes this server's file; returns its path. */
export function writeRuntimeFile(home: string, info: RuntimeInfo): string {
  const dir = runtimeDir(home)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
  const path = join(dir, `server-${info.pid}.json`)
  writeFileSync(path, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 })
  chmodSync(path, 0o600)
  return path
}

/** The files of servers still running; with `prune`, the others are removed. */
export function readRuntimeFiles(home: string, options: { prune: boolean }): RuntimeInfo[] {
  let names: string[]
  try {
    names = readdirSync(runtimeDir(home))
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return []
    throw err
  }
  const running: RuntimeInfo[] = []
  for (const name of names.sort()) {
    const pid = Number(FILE.exec(name)?.[1])
    if (!Number.isSafeInteger(pid)) continue
    const path = join(runtimeDir(home), name)
    if (!isRunning(pid)) {
      if (options.prune) rmSync(path, { force: true })
      continue
    }
    try {
      running.push(JSON.parse(readFileSync(path, 'utf8')) as RuntimeInfo)
    } catch {
      // Being written, or not ours: not a server to list.
    }
  }
  return running
}

function isRunning(pid: number): boolean {
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it runs, as another user.
    return errorCode(err) === 'EPERM'
  }
}
